//! Metrics: collectors and the time-series store the forecaster and planner read.
//!
//! * [`collect`]: collectors sampling depth, arrival, lag, write latency and pool capacity; Cassandra history.
//! * [`series`]: series types and the loader that regularises messy CSV exports and event logs.
//! * [`prometheus`]: the Prometheus text exposition of everything trimtab measures.
//! * [`store`]: bounded in-memory windows of recent samples over a durable [`store::SampleHistory`].

pub mod collect;
pub mod prometheus;
pub mod series;
pub mod store;
