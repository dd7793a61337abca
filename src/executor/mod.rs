//! executor (being written)
