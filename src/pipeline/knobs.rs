//! The live knobs: batch size, write concurrency, prefetch and in-flight bound, changed at run time without a restart.
//!
//! The executor is the only writer (after the policy gate); the pipeline's tasks read the current value before
//! each receive or batch, and can wait for a change.

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// One consistent set of knob values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// Rows per Cassandra partition batch.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: u32,
    /// Byte cap per Cassandra batch.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u32,
    /// Cassandra requests in flight.
    #[serde(default = "default_write_concurrency")]
    pub write_concurrency: u32,
    /// Messages requested from Service Bus per receive call (and the link's prefetch).
    #[serde(default = "default_prefetch")]
    pub prefetch: u32,
    /// Messages received and not yet settled, across all entities: the back-pressure bound.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

/// The largest prefetch the pipeline accepts: a link credit of 2048 or more never delivered a message through
/// `azservicebus` here, and 1024 works. The planner's default limit follows it.
pub const MAX_PREFETCH: u32 = 1_024;

const fn default_batch_rows() -> u32 {
    32
}
const fn default_batch_bytes() -> u32 {
    // Rows of one partition are exempt from Cassandra's batch size checks, but big batches still cost
    // coordinator memory; 48 KiB keeps every batch under the 50 KiB fail threshold even if misrouted.
    48 * 1024
}
const fn default_write_concurrency() -> u32 {
    32
}
const fn default_prefetch() -> u32 {
    256
}
const fn default_max_in_flight() -> u32 {
    2048
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            batch_rows: default_batch_rows(),
            batch_bytes: default_batch_bytes(),
            write_concurrency: default_write_concurrency(),
            prefetch: default_prefetch(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

/// A knob value outside what the pipeline can run with.
#[derive(Debug, thiserror::Error)]
#[error("knob {name} = {value} is out of range: expected {expected}")]
pub struct KnobError {
    /// The knob's name.
    pub name: &'static str,
    /// The refused value.
    pub value: u64,
    /// What was expected.
    pub expected: &'static str,
}

impl Knobs {
    /// Checks every knob against the range the pipeline can run with.
    pub fn validate(&self) -> Result<(), KnobError> {
        let check = |name, value: u32, lo: u32, hi: u32, expected| {
            if value < lo || value > hi {
                Err(KnobError {
                    name,
                    value: u64::from(value),
                    expected,
                })
            } else {
                Ok(())
            }
        };
        check("batch_rows", self.batch_rows, 1, 10_000, "1..=10000")?;
        check(
            "batch_bytes",
            self.batch_bytes,
            1024,
            16 * 1024 * 1024,
            "1 KiB..=16 MiB",
        )?;
        check(
            "write_concurrency",
            self.write_concurrency,
            1,
            4096,
            "1..=4096",
        )?;
        check("prefetch", self.prefetch, 1, MAX_PREFETCH, "1..=1024")?;
        check(
            "max_in_flight",
            self.max_in_flight,
            1,
            1_000_000,
            "1..=1000000",
        )?;
        Ok(())
    }
}

/// The shared, live knob values.
#[derive(Clone)]
pub struct LiveKnobs {
    tx: watch::Sender<Knobs>,
}

impl LiveKnobs {
    /// Starts from validated values.
    pub fn new(initial: Knobs) -> Result<Self, KnobError> {
        initial.validate()?;
        Ok(LiveKnobs {
            tx: watch::Sender::new(initial),
        })
    }

    /// The current values.
    pub fn get(&self) -> Knobs {
        *self.tx.borrow()
    }

    /// Replaces the values after validating them; readers see the change on their next read.
    pub fn set(&self, knobs: Knobs) -> Result<Knobs, KnobError> {
        knobs.validate()?;
        let previous = self.tx.send_replace(knobs);
        if previous != knobs {
            tracing::info!(?previous, current = ?knobs, "pipeline knobs changed");
        }
        Ok(previous)
    }

    /// Applies a change to the current values (validated as a whole).
    pub fn update(&self, change: impl FnOnce(&mut Knobs)) -> Result<Knobs, KnobError> {
        let mut next = self.get();
        change(&mut next);
        self.set(next)
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<Knobs> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_seen_by_readers_and_bad_values_are_refused() {
        let knobs = LiveKnobs::new(Knobs::default()).unwrap();
        let mut rx = knobs.subscribe();
        knobs.update(|k| k.batch_rows = 64).unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().batch_rows, 64);
        let err = knobs.update(|k| k.write_concurrency = 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "knob write_concurrency = 0 is out of range: expected 1..=4096"
        );
        assert_eq!(
            knobs.get().write_concurrency,
            Knobs::default().write_concurrency
        );
    }
}
