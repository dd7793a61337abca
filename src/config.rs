//! The TOML configuration: one typed section per component, validated without IO, then built.
