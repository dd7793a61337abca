//! The tuning strategies a replay compares: fixed knobs, an HPA-like reactive controller, and trimtab's own
//! control loop in autonomous or recommend mode.
//!
//! The reactive controller is a baseline to compare against, not part of the product: like a Kubernetes HPA it
//! scales one dimension (write concurrency, the pipeline's "replicas") by the ratio of a measured metric to its
//! target, `desired = ceil(current × lag / target)`, with a tolerance band, a cap on how fast it scales up, and a
//! scale-down stabilisation window (it takes the highest recommendation of the window, so a short lull does not
//! scale down). It knows nothing of the future and sets the replayed pipeline's knobs directly, as an HPA would.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cassandra::ObservationWindow;
use crate::pipeline::{Knobs, LiveKnobs};
use crate::servicebus::lag::LagTracker;

/// A strategy as named on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum StrategySpec {
    /// `static`: the default knobs, and the best setting a short sweep finds.
    Static,
    /// `static:ROWSxCONCURRENCY`: fixed batch rows and write concurrency, other knobs at their defaults.
    StaticAt {
        /// Rows per batch.
        batch_rows: u32,
        /// Write concurrency.
        concurrency: u32,
    },
    /// `reactive`: HPA-like on measured lag.
    Reactive,
    /// `trimtab` or `trimtab:ROWSxCONCURRENCY`: the agent in autonomous mode, from the default knobs or from the
    /// given ones (an operator's setting in production).
    Trimtab {
        /// The batch rows and write concurrency it starts from; `None` is the defaults.
        start: Option<(u32, u32)>,
    },
    /// `recommend` or `recommend:ROWSxCONCURRENCY`: the agent in recommend mode (must change nothing).
    Recommend {
        /// As for `Trimtab`.
        start: Option<(u32, u32)>,
    },
}

impl StrategySpec {
    /// Whether the agent runs (its policy must load).
    pub fn runs_agent(&self) -> bool {
        matches!(
            self,
            StrategySpec::Trimtab { .. } | StrategySpec::Recommend { .. }
        )
    }
}

/// A strategy name that is not one of the known ones.
#[derive(Debug, thiserror::Error)]
#[error("strategy {given:?} is unknown: expected static, static:ROWSxCONCURRENCY (such as static:64x4), reactive, trimtab, recommend, or trimtab or recommend with :ROWSxCONCURRENCY to start from")]
pub struct UnknownStrategy {
    /// What was given.
    pub given: String,
}

impl std::str::FromStr for StrategySpec {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownStrategy { given: s.into() };
        let setting = |setting: &str| -> Result<(u32, u32), UnknownStrategy> {
            let (rows, conc) = setting.split_once('x').ok_or_else(unknown)?;
            let batch_rows: u32 = rows.parse().map_err(|_| unknown())?;
            let concurrency: u32 = conc.parse().map_err(|_| unknown())?;
            let knobs = Knobs {
                batch_rows,
                write_concurrency: concurrency,
                ..Knobs::default()
            };
            knobs.validate().map_err(|_| unknown())?;
            Ok((batch_rows, concurrency))
        };
        let (name, at) = match s.trim().split_once(':') {
            Some((name, at)) => (name, Some(setting(at)?)),
            None => (s.trim(), None),
        };
        match (name, at) {
            ("static", None) => Ok(StrategySpec::Static),
            ("static", Some((batch_rows, concurrency))) => Ok(StrategySpec::StaticAt {
                batch_rows,
                concurrency,
            }),
            ("reactive", None) => Ok(StrategySpec::Reactive),
            ("trimtab", start) => Ok(StrategySpec::Trimtab { start }),
            ("recommend", start) => Ok(StrategySpec::Recommend { start }),
            _ => Err(unknown()),
        }
    }
}

/// One strategy to run, resolved (a sweep has picked the best static setting).
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Fixed knobs for the whole replay.
    Static {
        /// The row label, such as `static (defaults)`.
        label: String,
        /// The knobs.
        knobs: Knobs,
    },
    /// The HPA-like controller.
    Reactive(ReactiveConfig),
    /// The agent; `autonomous` false is recommend mode.
    Agent {
        /// Autonomous (applies what policy allows) or recommend (applies nothing).
        autonomous: bool,
        /// The knobs it starts from; `None` is the defaults.
        start: Option<Knobs>,
    },
}

impl Strategy {
    /// The row label in the report.
    pub fn label(&self) -> String {
        match self {
            Strategy::Static { label, .. } => label.clone(),
            Strategy::Reactive(_) => "reactive".into(),
            Strategy::Agent { autonomous, start } => {
                let name = if *autonomous { "trimtab" } else { "recommend" };
                match start {
                    None => name.into(),
                    Some(k) => format!("{name} from {}x{}", k.batch_rows, k.write_concurrency),
                }
            }
        }
    }

    /// The knobs the pipeline starts with.
    pub fn initial_knobs(&self) -> Knobs {
        match self {
            Strategy::Static { knobs, .. }
            | Strategy::Agent {
                start: Some(knobs), ..
            } => *knobs,
            _ => Knobs::default(),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// A static setting's label: rows per batch × concurrency.
pub fn static_label(knobs: &Knobs, what: &str) -> String {
    format!(
        "static {}x{} ({what})",
        knobs.batch_rows, knobs.write_concurrency
    )
}

/// How the reactive controller scales.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReactiveConfig {
    /// How often it measures and decides.
    pub period: Duration,
    /// The lag it aims for (oldest unsettled message), milliseconds.
    pub target_lag_ms: f64,
    /// Ratios within this band of 1 change nothing (HPA's tolerance, 0.1).
    pub tolerance: f64,
    /// Most it may multiply concurrency by in one period.
    pub max_scale_up: f64,
    /// Scale-down stabilisation: it scales down only to the highest recommendation of this window.
    pub down_window: Duration,
    /// Fewest and most concurrent writes.
    pub min_concurrency: u32,
    /// Most concurrent writes.
    pub max_concurrency: u32,
}

impl ReactiveConfig {
    /// HPA's defaults (tolerance 10 %, scale up at most ×2 per period, 300 s scale-down window) with the window
    /// compressed by the replay's speed-up, aiming at half the lag objective.
    pub fn for_replay(lag_objective: Duration, speedup: f64) -> ReactiveConfig {
        ReactiveConfig {
            period: Duration::from_secs(1),
            target_lag_ms: lag_objective.as_secs_f64() * 1e3 / 2.0,
            tolerance: 0.1,
            max_scale_up: 2.0,
            down_window: Duration::from_secs_f64((300.0 / speedup.max(1.0)).max(2.0)),
            min_concurrency: 1,
            max_concurrency: 64,
        }
    }

    /// One decision: the concurrency wanted for `lag_ms` measured at `current`, before stabilisation.
    pub fn recommend(&self, current: u32, lag_ms: f64) -> u32 {
        let ratio = lag_ms / self.target_lag_ms.max(1.0);
        if (ratio - 1.0).abs() <= self.tolerance {
            return current;
        }
        let ratio = ratio.min(self.max_scale_up);
        let desired = (f64::from(current) * ratio).ceil() as u32;
        desired.clamp(self.min_concurrency, self.max_concurrency)
    }
}

/// The reactive controller's memory: recent recommendations for the scale-down window.
#[derive(Debug, Default)]
pub struct Stabiliser {
    recent: VecDeque<(Duration, u32)>,
}

impl Stabiliser {
    /// Takes a recommendation made at `at` and returns the concurrency to set: up at once, down only to the
    /// highest recommendation within the window.
    pub fn decide(
        &mut self,
        config: &ReactiveConfig,
        at: Duration,
        current: u32,
        recommended: u32,
    ) -> u32 {
        self.recent.push_back((at, recommended));
        while self
            .recent
            .front()
            .is_some_and(|&(t, _)| at.saturating_sub(t) > config.down_window)
        {
            self.recent.pop_front();
        }
        if recommended >= current {
            return recommended;
        }
        let highest = self
            .recent
            .iter()
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(recommended);
        highest.min(current)
    }
}

/// Runs the reactive controller until `stop`; returns how many times it changed the knobs.
pub async fn run_reactive(
    config: ReactiveConfig,
    knobs: LiveKnobs,
    lag: Arc<LagTracker>,
    writes: Arc<ObservationWindow>,
    stop: CancellationToken,
) -> u64 {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(config.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stabiliser = Stabiliser::default();
    let mut changes = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return changes,
            _ = tick.tick() => {}
        }
        let lag_ms = lag.snapshot().overall.oldest_age_ms as f64;
        let current = knobs.get();
        let recommended = config.recommend(current.write_concurrency, lag_ms);
        let wanted = stabiliser.decide(
            &config,
            started.elapsed(),
            current.write_concurrency,
            recommended,
        );
        if wanted != current.write_concurrency {
            match knobs.update(|k| k.write_concurrency = wanted) {
                Ok(_) => {
                    changes += 1;
                    tracing::info!(
                        from = current.write_concurrency,
                        to = wanted,
                        lag_ms,
                        write_p99_ms = writes.snapshot().p99_ms,
                        "reactive: concurrency changed"
                    );
                }
                Err(error) => tracing::warn!(%error, "reactive: knob refused"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ReactiveConfig {
        ReactiveConfig::for_replay(Duration::from_secs(2), 60.0)
    }

    #[test]
    fn parses_every_strategy_and_names_the_expected_forms() {
        assert_eq!(
            "static".parse::<StrategySpec>().unwrap(),
            StrategySpec::Static
        );
        assert_eq!(
            "static:64x4".parse::<StrategySpec>().unwrap(),
            StrategySpec::StaticAt {
                batch_rows: 64,
                concurrency: 4
            }
        );
        assert_eq!(
            "trimtab".parse::<StrategySpec>().unwrap(),
            StrategySpec::Trimtab { start: None }
        );
        assert_eq!(
            "recommend:32x4".parse::<StrategySpec>().unwrap(),
            StrategySpec::Recommend {
                start: Some((32, 4))
            }
        );
        assert!("reactive:32x4".parse::<StrategySpec>().is_err());
        assert!("trimtab:32".parse::<StrategySpec>().is_err());
        let err = "static:0x4"
            .parse::<StrategySpec>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("static:ROWSxCONCURRENCY"), "{err}");
        assert!("hpa".parse::<StrategySpec>().is_err());
    }

    #[test]
    fn scales_by_the_ratio_within_tolerance_and_caps() {
        let c = config();
        // Target is 1000 ms (half of 2 s).
        assert_eq!(c.recommend(8, 1_050.0), 8, "inside the 10 % band");
        assert_eq!(c.recommend(8, 1_500.0), 12);
        assert_eq!(c.recommend(8, 10_000.0), 16, "at most doubles per period");
        assert_eq!(c.recommend(8, 0.0), 1, "idle goes to the minimum");
        assert_eq!(c.recommend(50, 10_000.0), 64, "capped");
    }

    #[test]
    fn scales_up_at_once_and_down_only_after_the_window() {
        let c = config();
        assert_eq!(c.down_window, Duration::from_secs(5));
        let mut s = Stabiliser::default();
        let at = Duration::from_secs;
        assert_eq!(s.decide(&c, at(0), 8, 16), 16);
        assert_eq!(s.decide(&c, at(1), 16, 2), 16, "16 was recommended 1 s ago");
        assert_eq!(s.decide(&c, at(4), 16, 2), 16);
        assert_eq!(s.decide(&c, at(7), 16, 2), 2, "the 16 left the window");
    }
}
