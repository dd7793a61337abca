//! Fault switches for the Service Bus stand-in: a cloneable handle that tests flip at runtime.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// How long a throttle lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    Off,
    Operations(u32),
    UntilCleared,
}

impl Budget {
    fn from_count(operations: Option<u32>) -> Self {
        match operations {
            Some(0) => Budget::Off,
            Some(n) => Budget::Operations(n),
            None => Budget::UntilCleared,
        }
    }

    /// Spends one operation; true when this operation is throttled.
    fn take(&mut self) -> bool {
        match *self {
            Budget::Off => false,
            Budget::UntilCleared => true,
            Budget::Operations(n) => {
                *self = if n <= 1 {
                    Budget::Off
                } else {
                    Budget::Operations(n - 1)
                };
                true
            }
        }
    }

    fn active(self) -> bool {
        self != Budget::Off
    }
}

#[derive(Debug)]
struct Switches {
    busy_sends: Budget,
    busy_receives: Budget,
    lose_settlements: u32,
    slow_settlement: Option<Duration>,
    detach_generation: u64,
    expire_generation: u64,
}

/// Runtime fault switches, shared by every connection of one stand-in.
///
/// Cloning is cheap; every clone flips the same switches. Each switch takes effect on the next operation
/// it applies to, and connections are woken so that link-level faults (detaches) happen promptly.
#[derive(Debug, Clone)]
pub struct Faults {
    switches: Arc<Mutex<Switches>>,
    wake: watch::Sender<u64>,
}

impl Faults {
    pub(crate) fn new(wake: watch::Sender<u64>) -> Self {
        Faults {
            switches: Arc::new(Mutex::new(Switches {
                busy_sends: Budget::Off,
                busy_receives: Budget::Off,
                lose_settlements: 0,
                slow_settlement: None,
                detach_generation: 0,
                expire_generation: 0,
            })),
            wake,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Switches> {
        // A panic while holding this lock cannot leave the switches half-written: every update is one assignment.
        self.switches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn poke(&self) {
        self.wake.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Rejects incoming messages with `com.microsoft:server-busy`: the next `operations` transfers, or every
    /// transfer until [`Faults::clear_throttling`] when `None`.
    pub fn throttle_sends(&self, operations: Option<u32>) {
        self.lock().busy_sends = Budget::from_count(operations);
    }

    /// Detaches receive links with `com.microsoft:server-busy`: the next `operations` receive links (open ones
    /// first, then new attaches), or every one until [`Faults::clear_throttling`] when `None`.
    pub fn throttle_receives(&self, operations: Option<u32>) {
        self.lock().busy_receives = Budget::from_count(operations);
        self.poke();
    }

    /// Turns both kinds of throttling off.
    pub fn clear_throttling(&self) {
        let mut s = self.lock();
        s.busy_sends = Budget::Off;
        s.busy_receives = Budget::Off;
    }

    /// Expires every lock held right now: the messages are requeued (delivery count +1) and settling them fails
    /// with `com.microsoft:message-lock-lost`.
    pub fn expire_locks_now(&self) {
        self.lock().expire_generation += 1;
        self.poke();
    }

    /// Answers the next `settlements` settlements with `com.microsoft:message-lock-lost` (their locks are dropped
    /// and the messages requeued, as when a lock expires).
    pub fn lose_next_settlements(&self, settlements: u32) {
        self.lock().lose_settlements = settlements;
    }

    /// Detaches every open entity and management link with `amqp:link:detach-forced` (the `$cbs` links stay).
    pub fn detach_all_links(&self) {
        self.lock().detach_generation += 1;
        self.poke();
    }

    /// Delays every settlement reply (disposition) by `delay`; `None` turns the delay off.
    pub fn slow_settlement(&self, delay: Option<Duration>) {
        self.lock().slow_settlement = delay;
    }

    /// True when this send is throttled; spends one operation of the budget.
    pub(crate) fn take_busy_send(&self) -> bool {
        self.lock().busy_sends.take()
    }

    /// True when receive links are being throttled now, without spending the budget.
    pub(crate) fn receives_throttled(&self) -> bool {
        self.lock().busy_receives.active()
    }

    /// True when this receive link is to be detached as busy; spends one operation of the budget.
    pub(crate) fn take_busy_receive(&self) -> bool {
        self.lock().busy_receives.take()
    }

    /// True when this settlement is to be answered with lock-lost; spends one.
    pub(crate) fn take_lost_settlement(&self) -> bool {
        let mut s = self.lock();
        if s.lose_settlements > 0 {
            s.lose_settlements -= 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn settlement_delay(&self) -> Option<Duration> {
        self.lock().slow_settlement
    }

    pub(crate) fn detach_generation(&self) -> u64 {
        self.lock().detach_generation
    }

    pub(crate) fn expire_generation(&self) -> u64 {
        self.lock().expire_generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_throttle_runs_out_and_an_open_one_does_not() {
        let (tx, _rx) = watch::channel(0);
        let faults = Faults::new(tx);
        faults.throttle_sends(Some(2));
        assert_eq!(
            [
                faults.take_busy_send(),
                faults.take_busy_send(),
                faults.take_busy_send()
            ],
            [true, true, false]
        );
        faults.throttle_sends(None);
        assert!((0..50).all(|_| faults.take_busy_send()));
        faults.clear_throttling();
        assert!(!faults.take_busy_send());
    }
}
