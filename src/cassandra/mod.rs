//! cassandra (being written)
