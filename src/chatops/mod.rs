//! chatops (being written)
