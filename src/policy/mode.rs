//! Operating modes: recommend (never apply) and autonomous, and the automatic drop to recommend.

use serde::{Deserialize, Serialize};

use crate::planner::{ForecastTrust, Limits};

/// How trimtab acts on a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Propose and record; never apply.
    Recommend,
    /// Apply what policy allows, queue what needs approval, record what is denied.
    Autonomous,
}

/// The mode in force and, when it differs from the configured one, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeDecision {
    /// The mode trimtab acts in this step.
    pub mode: Mode,
    /// The mode the operator configured.
    pub configured: Mode,
    /// Why autonomous was dropped to recommend, if it was.
    pub why: Option<String>,
    /// Whether the drop holds back only changes that rest on a forecast: true when the forecast is inaccurate
    /// or not scored yet on enough history, so that changes made on measurements alone go on. A drop for thin
    /// data (the agent has just started) holds back more: everything but a change that only sheds load
    /// ([`ModeDecision::for_change`]).
    #[serde(default)]
    pub forecast_changes_only: bool,
}

impl ModeDecision {
    /// The mode one change runs in: a drop for an inaccurate (or not yet scored) forecast holds back only changes
    /// that rest on a forecast, so a change made on measurements alone goes through the gate in the configured
    /// mode. A drop for thin data holds back everything but a change that only sheds load from the node
    /// (`sheds_load`: fewer writes in flight, nothing raised) made on measurements alone: thin data means a short
    /// forecast history, while the write path is measured over hundreds of batches within seconds, and such a
    /// change is verified and rolled back like any other. An operator's recommend mode holds back everything.
    pub fn for_change(&self, uses_forecast: bool, sheds_load: bool) -> ModeDecision {
        let dropped = self.mode == Mode::Recommend && self.configured == Mode::Autonomous;
        let thin_data = !self.forecast_changes_only;
        if dropped && !uses_forecast && (!thin_data || sheds_load) {
            ModeDecision {
                mode: Mode::Autonomous,
                configured: self.configured,
                why: None,
                forecast_changes_only: false,
            }
        } else {
            self.clone()
        }
    }
}

/// Drops autonomous to recommend when the forecasts stopped being accurate or the data is too thin.
pub fn effective_mode(configured: Mode, trust: &ForecastTrust, limits: &Limits) -> ModeDecision {
    let why = match configured {
        Mode::Recommend => None,
        Mode::Autonomous if trust.history_points < limits.min_history_points => Some(format!(
            "dropped to recommend: {} observations of history, fewer than {}",
            trust.history_points, limits.min_history_points
        )),
        Mode::Autonomous => match trust.rolling_mase {
            None => Some("dropped to recommend: forecast accuracy not measured yet".to_string()),
            Some(m) if m.is_nan() || m >= limits.max_mase => Some(format!(
                "dropped to recommend: rolling MASE {m:.2} is at or above {:.2}, no better than seasonal naive",
                limits.max_mase
            )),
            Some(_) => None,
        },
    };
    let mode = if why.is_some() {
        Mode::Recommend
    } else {
        configured
    };
    let forecast_changes_only = why.is_some() && trust.history_points >= limits.min_history_points;
    ModeDecision {
        mode,
        configured,
        why,
        forecast_changes_only,
    }
}

/// Counts the plan steps in a row whose forecast was judged inaccurate, so that autonomy is dropped only once the
/// forecast has stayed inaccurate for [`Limits::mase_grace_steps`] steps (see there for why).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccuracyGrace {
    inaccurate_steps: u32,
}

impl AccuracyGrace {
    /// The mode for this step: [`effective_mode`], except that a drop caused by the rolling MASE alone (enough
    /// history, accuracy measured) waits until it has held for the grace steps. Call once per plan step.
    pub fn mode(
        &mut self,
        configured: Mode,
        trust: &ForecastTrust,
        limits: &Limits,
    ) -> ModeDecision {
        let decision = effective_mode(configured, trust, limits);
        let inaccurate_only = decision.mode != configured
            && trust.history_points >= limits.min_history_points
            && trust
                .rolling_mase
                .is_some_and(|m| m.is_nan() || m >= limits.max_mase);
        if !inaccurate_only {
            self.inaccurate_steps = 0;
            return decision;
        }
        self.inaccurate_steps = self.inaccurate_steps.saturating_add(1);
        if self.inaccurate_steps < limits.mase_grace_steps {
            tracing::info!(
                steps = self.inaccurate_steps,
                grace = limits.mase_grace_steps,
                why = ?decision.why,
                "forecast inaccurate; staying autonomous within the grace steps"
            );
            return ModeDecision {
                mode: configured,
                configured,
                why: None,
                forecast_changes_only: false,
            };
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(configured: Mode, points: u32, mase: Option<f64>, expected: Mode, why_contains: &str) {
        let d = effective_mode(
            configured,
            &ForecastTrust {
                history_points: points,
                rolling_mase: mase,
            },
            &Limits::default(),
        );
        assert_eq!(d.mode, expected, "{d:?}");
        assert!(
            d.why.clone().unwrap_or_default().contains(why_contains),
            "{d:?}"
        );
    }

    #[test]
    fn autonomous_holds_only_while_forecasts_beat_naive_on_enough_data() {
        check(Mode::Autonomous, 500, Some(0.7), Mode::Autonomous, "");
        check(
            Mode::Autonomous,
            500,
            Some(1.0),
            Mode::Recommend,
            "MASE 1.00",
        );
        check(
            Mode::Autonomous,
            500,
            Some(1.4),
            Mode::Recommend,
            "no better than seasonal naive",
        );
        check(
            Mode::Autonomous,
            10,
            Some(0.5),
            Mode::Recommend,
            "10 observations",
        );
        check(Mode::Autonomous, 500, None, Mode::Recommend, "not measured");
        check(Mode::Recommend, 500, Some(0.5), Mode::Recommend, "");
    }

    #[test]
    fn an_inaccurate_forecast_holds_back_forecast_changes_only_but_thin_data_holds_back_more() {
        let limits = Limits::default();
        let drop = |points, mase| {
            effective_mode(
                Mode::Autonomous,
                &ForecastTrust {
                    history_points: points,
                    rolling_mase: mase,
                },
                &limits,
            )
        };
        assert!(drop(500, Some(1.4)).forecast_changes_only);
        assert!(drop(500, None).forecast_changes_only);
        assert!(!drop(3, Some(0.5)).forecast_changes_only);
        assert!(
            !drop(500, Some(0.5)).forecast_changes_only,
            "no drop at all"
        );
    }

    #[test]
    fn thin_data_lets_through_only_a_change_that_sheds_load_on_measurements_alone() {
        let limits = Limits::default();
        let mode = |configured, points| {
            effective_mode(
                configured,
                &ForecastTrust {
                    history_points: points,
                    rolling_mase: Some(0.5),
                },
                &limits,
            )
        };
        let from = crate::planner::Settings {
            batch_rows: 32,
            batch_bytes: 48 * 1024,
            concurrency: 32,
            prefetch: 256,
        };
        let set = |to| crate::planner::Action::SetKnobs { from, to };
        let cut = set(crate::planner::Settings {
            concurrency: 8,
            ..from
        });
        let cut_and_raise = set(crate::planner::Settings {
            concurrency: 8,
            prefetch: 1024,
            ..from
        });
        let raise = set(crate::planner::Settings {
            concurrency: 64,
            ..from
        });
        assert!(cut.sheds_load());
        assert!(!cut_and_raise.sheds_load());
        assert!(!raise.sheds_load());

        let thin = mode(Mode::Autonomous, 3);
        let of = |action: &crate::planner::Action, uses_forecast| {
            thin.for_change(uses_forecast, action.sheds_load()).mode
        };
        assert_eq!(of(&cut, false), Mode::Autonomous);
        assert_eq!(of(&cut, true), Mode::Recommend, "rests on a forecast");
        assert_eq!(of(&cut_and_raise, false), Mode::Recommend);
        assert_eq!(of(&raise, false), Mode::Recommend);
        // An operator's recommend mode holds back everything.
        let operator = mode(Mode::Recommend, 3);
        assert_eq!(operator.for_change(false, true).mode, Mode::Recommend);
        // A forecast that is not scored yet holds back only what rests on it.
        let unscored = effective_mode(
            Mode::Autonomous,
            &ForecastTrust {
                history_points: 500,
                rolling_mase: None,
            },
            &limits,
        );
        assert_eq!(unscored.for_change(false, false).mode, Mode::Autonomous);
        assert_eq!(unscored.for_change(true, true).mode, Mode::Recommend);
    }

    #[test]
    fn a_single_bad_score_does_not_drop_autonomy_but_a_lasting_one_does() {
        let limits = Limits::default();
        let trust = |points, mase| ForecastTrust {
            history_points: points,
            rolling_mase: mase,
        };
        let mut grace = AccuracyGrace::default();
        let modes: Vec<Mode> = [
            Some(0.5),
            Some(4.0),
            Some(4.0),
            Some(4.0),
            Some(4.0),
            Some(0.5),
            Some(4.0),
        ]
        .into_iter()
        .map(|m| grace.mode(Mode::Autonomous, &trust(500, m), &limits).mode)
        .collect();
        use Mode::{Autonomous as A, Recommend as R};
        assert_eq!(
            modes,
            vec![A, A, A, R, R, A, A],
            "grace of {} steps",
            limits.mase_grace_steps
        );
        // Thin data drops at once, whatever the grace.
        let thin = grace.mode(Mode::Autonomous, &trust(3, Some(0.5)), &limits);
        assert_eq!(thin.mode, Mode::Recommend);
        // Recommend stays recommend.
        let mut grace = AccuracyGrace::default();
        assert_eq!(
            grace
                .mode(Mode::Recommend, &trust(500, Some(4.0)), &limits)
                .mode,
            R
        );
    }
}
