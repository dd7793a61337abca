//! When a control step runs: after its interval, on the next sample that finishes, so each step plans from the newest data.

/// Decides when the loop starts a control step.
///
/// The plan interval only makes a step due. A due step starts when the next sample finishes, so it plans from that
/// sample and not from the one before it: the plan and sample ticks fall together, and a step started at the tick
/// would read a sample one interval old (up to two intervals of measurements behind what it acts on).
///
/// A sample still running when the next sample tick comes is late. Then a due step starts at once on the latest
/// finished sample, so a slow source delays planning by at most one sample interval. A step still running keeps the
/// next one due; steps never overlap.
#[derive(Debug, Default)]
pub(crate) struct PlanCadence {
    due: bool,
}

impl PlanCadence {
    /// The plan interval has passed: a step is due.
    pub(crate) fn interval_passed(&mut self) {
        self.due = true;
    }

    /// A sample finished: whether to start a step now, on it.
    pub(crate) fn sample_finished(&mut self, step_running: bool) -> bool {
        self.start_if_due(step_running)
    }

    /// A sample tick found the previous sample still running: whether to start a step now, on the latest finished
    /// sample.
    pub(crate) fn sample_late(&mut self, step_running: bool) -> bool {
        self.start_if_due(step_running)
    }

    fn start_if_due(&mut self, step_running: bool) -> bool {
        if self.due && !step_running {
            self.due = false;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::PlanCadence;

    /// What the loop sees, in order.
    #[derive(Clone, Copy, Debug)]
    enum Seen {
        PlanTick,
        SampleDone,
        SampleLate,
        SampleDoneWhileStepping,
    }

    /// Feeds the events and returns the indexes of those that started a step.
    fn starts(events: &[Seen]) -> Vec<usize> {
        let mut cadence = PlanCadence::default();
        let mut started = Vec::new();
        for (i, seen) in events.iter().enumerate() {
            let start = match seen {
                Seen::PlanTick => {
                    cadence.interval_passed();
                    false
                }
                Seen::SampleDone => cadence.sample_finished(false),
                Seen::SampleLate => cadence.sample_late(false),
                Seen::SampleDoneWhileStepping => cadence.sample_finished(true),
            };
            if start {
                started.push(i);
            }
        }
        started
    }

    use Seen::*;

    #[test]
    fn a_plan_tick_waits_for_the_sample_that_finishes_after_it() {
        assert_eq!(starts(&[PlanTick]), Vec::<usize>::new());
        assert_eq!(starts(&[PlanTick, SampleDone]), vec![1]);
    }

    #[test]
    fn a_sample_that_finished_before_the_tick_does_not_start_a_step() {
        assert_eq!(starts(&[SampleDone, PlanTick]), Vec::<usize>::new());
        assert_eq!(starts(&[SampleDone, PlanTick, SampleDone]), vec![2]);
    }

    #[test]
    fn one_step_per_plan_interval_however_many_samples_finish() {
        // Sampling every 10 s and planning every 60 s (the defaults): one step, on the sample after the tick.
        let mut events = vec![SampleDone; 5];
        events.extend([PlanTick, SampleDone, SampleDone, SampleDone]);
        assert_eq!(starts(&events), vec![6]);
    }

    #[test]
    fn a_late_sample_lets_a_due_step_run_on_the_latest_one() {
        assert_eq!(starts(&[PlanTick, SampleLate]), vec![1]);
        assert_eq!(starts(&[SampleLate]), Vec::<usize>::new());
        // The late sample, once it finishes, does not start a second step.
        assert_eq!(starts(&[PlanTick, SampleLate, SampleDone]), vec![1]);
    }

    #[test]
    fn a_running_step_keeps_the_next_one_due_for_the_following_sample() {
        assert_eq!(
            starts(&[PlanTick, SampleDoneWhileStepping, SampleDone]),
            vec![2]
        );
    }
}
