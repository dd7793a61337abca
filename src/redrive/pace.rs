//! The re-drive's rate limit: spaces sends evenly so a re-drive cannot swamp the write path.

use std::time::Duration;

use tokio::time::Instant;

/// Hands out send slots at a fixed rate.
#[derive(Debug)]
pub struct Pacer {
    gap: Duration,
    next: Option<Instant>,
}

impl Pacer {
    /// At most `per_second` slots per second (0 is treated as 1).
    pub fn new(per_second: u32) -> Self {
        Pacer {
            gap: Duration::from_secs_f64(1.0 / f64::from(per_second.max(1))),
            next: None,
        }
    }

    /// Waits for the next slot.
    pub async fn wait(&mut self) {
        let now = Instant::now();
        let slot = self.next.map_or(now, |n| n.max(now));
        tokio::time::sleep_until(slot).await;
        self.next = Some(slot + self.gap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_spaced_by_the_rate() {
        let mut pacer = Pacer::new(100);
        let start = Instant::now();
        for _ in 0..11 {
            pacer.wait().await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(100),
            "11 slots at 100/s took {took:?}"
        );
        assert!(
            took < Duration::from_secs(2),
            "11 slots at 100/s took {took:?}"
        );
    }
}
