//! linstor (being written)
