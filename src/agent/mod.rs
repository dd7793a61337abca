//! The control loop: samples metrics, forecasts, plans, gates and applies changes, and serves state snapshots.
