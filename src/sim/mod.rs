//! The stand-ins for the three outside systems, for tests, `trimtab demo` and `trimtab sim`.
//!
//! Each speaks the real wire protocol, so the product reaches it only through its real clients:
//! `servicebus` (AMQP 1.0 with `$cbs`, `$management` and the management HTTP endpoint),
//! `cql` (the CQL native protocol v4) and `linstor` (the controller's REST API).

pub mod cluster;
pub mod cql;
pub mod linstor;
pub mod servicebus;
