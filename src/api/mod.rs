//! The HTTP API: health, state snapshots, proposals and chat (routes are added by the modules that own them).
