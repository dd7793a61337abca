//! Builds the running pipeline from a configuration: real clients, adapters, live knobs, lag and lock renewal.
