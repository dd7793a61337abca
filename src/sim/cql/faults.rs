//! Fault switches for the CQL server: a cloneable handle that tests flip while the server runs.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// A cloneable handle on the server's fault switches. Every switch applies to writes (INSERT and
/// BATCH) only, so drivers can still connect and read their metadata while writes fail.
#[derive(Debug, Clone, Default)]
pub struct FaultHandle {
    inner: Arc<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    write_timeouts: AtomicU64,
    write_timeout_ppm: AtomicU32,
    overloaded: AtomicU64,
    overloaded_ppm: AtomicU32,
    unavailable: AtomicU64,
    refuse_connections: AtomicBool,
    seed: AtomicU64,
}

/// What the server should answer a write with instead of applying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    WriteTimeout,
    Overloaded,
    Unavailable,
}

impl FaultHandle {
    /// Answers the next `n` writes with WriteTimeout.
    pub fn fail_writes_with_timeout(&self, n: u64) {
        self.inner.write_timeouts.store(n, Ordering::SeqCst);
    }

    /// Answers this fraction (0.0 to 1.0) of writes with WriteTimeout until set back to 0.
    pub fn set_write_timeout_fraction(&self, fraction: f64) {
        self.inner
            .write_timeout_ppm
            .store(to_ppm(fraction), Ordering::SeqCst);
    }

    /// Answers the next `n` writes with Overloaded (0x1001).
    pub fn overload_writes(&self, n: u64) {
        self.inner.overloaded.store(n, Ordering::SeqCst);
    }

    /// Answers this fraction (0.0 to 1.0) of writes with Overloaded until set back to 0.
    pub fn set_overloaded_fraction(&self, fraction: f64) {
        self.inner
            .overloaded_ppm
            .store(to_ppm(fraction), Ordering::SeqCst);
    }

    /// Answers the next `n` writes with Unavailable.
    pub fn fail_writes_unavailable(&self, n: u64) {
        self.inner.unavailable.store(n, Ordering::SeqCst);
    }

    /// While set, new connections are closed as soon as they are accepted.
    pub fn set_refuse_connections(&self, refuse: bool) {
        self.inner
            .refuse_connections
            .store(refuse, Ordering::SeqCst);
    }

    /// Turns every switch off.
    pub fn clear(&self) {
        self.fail_writes_with_timeout(0);
        self.set_write_timeout_fraction(0.0);
        self.overload_writes(0);
        self.set_overloaded_fraction(0.0);
        self.fail_writes_unavailable(0);
        self.set_refuse_connections(false);
    }

    pub(crate) fn refuses_connections(&self) -> bool {
        self.inner.refuse_connections.load(Ordering::SeqCst)
    }

    /// Decides the fate of one write.
    pub(crate) fn next_write(&self) -> Option<WriteFault> {
        let s = &self.inner;
        if take_one(&s.write_timeouts) {
            return Some(WriteFault::WriteTimeout);
        }
        if take_one(&s.overloaded) {
            return Some(WriteFault::Overloaded);
        }
        if take_one(&s.unavailable) {
            return Some(WriteFault::Unavailable);
        }
        let (timeout_ppm, overload_ppm) = (
            s.write_timeout_ppm.load(Ordering::Relaxed),
            s.overloaded_ppm.load(Ordering::Relaxed),
        );
        if timeout_ppm == 0 && overload_ppm == 0 {
            return None;
        }
        let roll = self.roll();
        if roll < timeout_ppm {
            Some(WriteFault::WriteTimeout)
        } else if roll < timeout_ppm.saturating_add(overload_ppm) {
            Some(WriteFault::Overloaded)
        } else {
            None
        }
    }

    /// A uniform number below one million (splitmix64 over a shared counter).
    fn roll(&self) -> u32 {
        let mut z = self
            .inner
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % 1_000_000) as u32
    }
}

fn to_ppm(fraction: f64) -> u32 {
    (fraction.clamp(0.0, 1.0) * 1_000_000.0).round() as u32
}

fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_run_out() {
        let f = FaultHandle::default();
        f.fail_writes_with_timeout(2);
        assert_eq!(f.next_write(), Some(WriteFault::WriteTimeout));
        assert_eq!(f.next_write(), Some(WriteFault::WriteTimeout));
        assert_eq!(f.next_write(), None);
    }

    #[test]
    fn fractions_hit_about_that_often() {
        let f = FaultHandle::default();
        f.set_overloaded_fraction(0.25);
        let hits = (0..10_000).filter(|_| f.next_write().is_some()).count();
        assert!((2_000..3_000).contains(&hits), "{hits}");
        f.clear();
        assert_eq!(f.next_write(), None);
    }
}
