//! Stepped shifts: a policy's `shift-in-steps` (a canary return) or an operator's planned
//! switchover, taken one step per evaluation. Pure: the failover function keeps the
//! [`ActivePlan`] in its state object and asks [`progress`] on every event and tick.
//!
//! Level-triggered like the rest of the controller: the step in place is read off the
//! weights Route 53 holds now (not only remembered), so a copy of a tick that already took
//! a step, or a step whose record was lost, never takes it twice; weights that match no
//! step mean someone else moved traffic, and the plan ends.
//!
//! | observed | outcome |
//! |---|---|
//! | a raised target (one whose share the plan raises) down now, or seen down since the plan started | roll back to the weights before the plan, at once |
//! | the weights match no step of the plan | the plan ends (superseded) |
//! | the last step has baked | the plan is done |
//! | a raised target not up (insufficient data), or any other target down | wait |
//! | the step has held for its bake time, raised targets up throughout | take the next step |

use serde::{Deserialize, Serialize};

use crate::guardrails::share_changes;
use crate::{Condition, PlanStep, Target, TimestampMs, Weight};

/// Why a stepped shift is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No steps at all.
    #[error("a stepped shift needs at least one step")]
    NoSteps,
    /// A step's percent is outside 1..=100.
    #[error("step {index} is {percent} %; every step must be between 1 and 100 %")]
    OutOfRange {
        /// 1-based step.
        index: usize,
        /// Its percent.
        percent: u8,
    },
    /// A step does not go further than the one before it.
    #[error("step {index} ({percent} %) does not go further than the step before it; steps must rise")]
    NotRising {
        /// 1-based step.
        index: usize,
        /// Its percent.
        percent: u8,
    },
    /// The last step stops short.
    #[error("the last step is {percent} %; it must be 100 % so the plan ends at its weights")]
    ShortOfTheEnd {
        /// Its percent.
        percent: u8,
    },
}

/// Checks a list of steps: 1..=100 %, rising, ending at 100 %.
pub fn validate_steps(steps: &[PlanStep]) -> Result<(), PlanError> {
    let mut before = 0u8;
    for (i, s) in steps.iter().enumerate() {
        if s.percent == 0 || s.percent > 100 {
            return Err(PlanError::OutOfRange { index: i + 1, percent: s.percent });
        }
        if s.percent <= before {
            return Err(PlanError::NotRising { index: i + 1, percent: s.percent });
        }
        before = s.percent;
    }
    match steps.last() {
        None => Err(PlanError::NoSteps),
        Some(s) if s.percent != 100 => Err(PlanError::ShortOfTheEnd { percent: s.percent }),
        Some(_) => Ok(()),
    }
}

/// Parses `10,25,50,100` (percent) into steps that each bake `bake_ms`.
pub fn parse_steps(text: &str, bake_ms: u64) -> Result<Vec<PlanStep>, String> {
    let steps = text
        .split(',')
        .map(|p| {
            let p = p.trim().trim_end_matches('%').trim();
            p.parse::<u8>().map(|percent| PlanStep { percent, bake_ms }).map_err(|_| {
                format!("`{p}` is not a percentage; write the steps as rising percentages ending at 100, e.g. `10,25,50,75,100`")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    validate_steps(&steps).map_err(|e| e.to_string())?;
    Ok(steps)
}

/// The weights `percent` of the way from `from` to `to` (both complete, same order):
/// each weight moves that far, rounded to the nearest whole weight.
pub fn step_weights(from: &[Weight], to: &[Weight], percent: u8) -> Vec<Weight> {
    from.iter()
        .zip(to)
        .map(|(f, t)| Weight { set_identifier: t.set_identifier.clone(), weight: step_value(f.weight, t.weight, percent) })
        .collect()
}

/// One weight `percent` of the way from `from` to `to`, rounded half up (so it stays
/// within both ends).
pub fn step_value(from: u32, to: u32, percent: u8) -> u32 {
    let p = u64::from(percent.min(100));
    let w = (u64::from(from) * (100 - p) + u64::from(to) * p + 50) / 100;
    u32::try_from(w).unwrap_or(u32::MAX)
}

/// `asked` applied over the current weights of `targets`: one weight per target, in
/// record-set order (targets not named keep theirs). Unknown names are left out; the
/// guardrails refuse them.
pub fn complete(targets: &[Target], asked: &[Weight]) -> Vec<Weight> {
    targets
        .iter()
        .map(|t| Weight {
            set_identifier: t.set_identifier.clone(),
            weight: asked.iter().find(|w| w.set_identifier == t.set_identifier).map_or(t.weight, |w| w.weight),
        })
        .collect()
}

/// Who asked for a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// The policy's stepped return (`shift-in-steps`).
    Return,
    /// An operator's planned switchover (`kbha ops switchover`): a planned event, not an
    /// incident; waits for the RPO gate before its first step.
    Switchover,
}

/// A stepped shift under way, as the state object keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivePlan {
    /// `plan-<started, UTC>-<destination>`.
    pub id: String,
    /// Policy return or operator switchover.
    pub kind: PlanKind,
    /// `kbha` or the operator's identity.
    pub by: String,
    /// Why (the policy's reason, or the operator's).
    pub reason: String,
    /// Weights when the plan started, one per target: where a rollback goes.
    pub from: Vec<Weight>,
    /// Weights at the end, one per target.
    pub to: Vec<Weight>,
    /// The steps.
    pub steps: Vec<PlanStep>,
    /// When it was started.
    pub started_at_ms: TimestampMs,
    /// Steps taken so far (0: none yet).
    pub step: usize,
    /// When the step in place was taken.
    #[serde(default)]
    pub step_at_ms: Option<TimestampMs>,
}

impl ActivePlan {
    /// A plan from the current weights of `targets` to `to` (complete).
    pub fn new(
        kind: PlanKind,
        by: &str,
        reason: &str,
        targets: &[Target],
        to: Vec<Weight>,
        steps: Vec<PlanStep>,
        now_ms: TimestampMs,
    ) -> Self {
        let from = complete(targets, &[]);
        let dest = to
            .iter()
            .zip(share_changes(&from.iter().map(|w| w.weight).collect::<Vec<_>>(), &to.iter().map(|w| w.weight).collect::<Vec<_>>()))
            .filter(|(_, c)| c.is_gt())
            .map(|(w, _)| w.set_identifier.as_str())
            .collect::<Vec<_>>()
            .join("+");
        ActivePlan {
            id: format!("plan-{}-{dest}", crate::time::format_timestamp(now_ms).replace(':', "")),
            kind,
            by: by.to_owned(),
            reason: reason.to_owned(),
            from,
            to,
            steps,
            started_at_ms: now_ms,
            step: 0,
            step_at_ms: None,
        }
    }

    /// The weights of step `k` (1-based; 0 is `from`).
    pub fn weights_at(&self, k: usize) -> Vec<Weight> {
        match k.checked_sub(1).and_then(|i| self.steps.get(i)) {
            None => self.from.clone(),
            Some(s) => step_weights(&self.from, &self.to, s.percent),
        }
    }

    /// Targets whose share the plan raises (the returning ones).
    pub fn raised(&self) -> Vec<&str> {
        let f: Vec<u32> = self.from.iter().map(|w| w.weight).collect();
        let t: Vec<u32> = self.to.iter().map(|w| w.weight).collect();
        self.to.iter().zip(share_changes(&f, &t)).filter(|(_, c)| c.is_gt()).map(|(w, _)| w.set_identifier.as_str()).collect()
    }

    /// `step k of n (p %)`.
    pub fn describe_step(&self, k: usize) -> String {
        let p = k.checked_sub(1).and_then(|i| self.steps.get(i)).map_or(0, |s| s.percent);
        format!("step {k} of {} ({p} %)", self.steps.len())
    }

    /// What the plan is, in a few words: `return to primary` / `switchover to secondary`.
    pub fn title(&self) -> String {
        let what = match self.kind {
            PlanKind::Return => "stepped return",
            PlanKind::Switchover => "planned switchover",
        };
        format!("{what} to `{}`", self.raised().join("`, `"))
    }
}

/// What to do about a plan on one observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Take step `step` (1-based): set `weights`.
    Advance {
        /// The step.
        step: usize,
        /// Its weights.
        weights: Vec<Weight>,
    },
    /// Keep the weights; `reason` says for what.
    Wait {
        /// The step in place (possibly taken by another invocation, read off Route 53).
        step: usize,
        /// Since when it is in place.
        step_at_ms: Option<TimestampMs>,
        /// Why not yet.
        reason: String,
    },
    /// A raised target failed: set the weights from before the plan.
    Rollback {
        /// The weights before the plan.
        weights: Vec<Weight>,
        /// Which target failed, and when.
        reason: String,
    },
    /// The plan ends without a change (done, or overtaken).
    End {
        /// How it ended.
        outcome: PlanOutcome,
        /// In words.
        reason: String,
    },
}

/// How a plan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanOutcome {
    /// Every step taken and baked.
    Completed,
    /// A raised target failed; the weights went back.
    RolledBack,
    /// Someone (the policy's evacuation, an operator) moved traffic outside the plan.
    Superseded,
    /// An operator stopped it (`kbha ops abort`).
    Aborted,
    /// A raised target failed before the first step; nothing to roll back.
    Abandoned,
}

/// The plan's next move given what is observed now: `targets` with their current weights
/// and history, `rpo_gate_ms` the largest replication age a switchover's destination may
/// have before its first step (`None`: no gate).
pub fn progress(plan: &ActivePlan, targets: &[Target], rpo_gate_ms: Option<u64>, now_ms: TimestampMs) -> Progress {
    let current = complete(targets, &[]);
    let n = plan.steps.len();
    // The step in place, read off Route 53: the furthest step whose weights are there.
    let Some(matched) = (0..=n).rev().find(|k| plan.weights_at(*k) == current) else {
        return Progress::End {
            outcome: PlanOutcome::Superseded,
            reason: format!("{} ended: the weights were changed outside it", plan.title()),
        };
    };
    if matched < plan.step {
        return Progress::End {
            outcome: PlanOutcome::Superseded,
            reason: format!("{} ended: the weights went back to an earlier step outside it", plan.title()),
        };
    }
    // A step another invocation took and has not recorded yet counts from now.
    let step_at = if matched == plan.step { plan.step_at_ms } else { Some(now_ms) };
    let raised: Vec<&Target> = plan.raised().iter().filter_map(|id| targets.iter().find(|t| t.set_identifier == *id)).collect();
    let failed = raised.iter().find(|t| t.condition() == Condition::Down || t.last_down_at_ms.is_some_and(|d| d >= plan.started_at_ms));
    if let Some(t) = failed {
        let id = &t.set_identifier;
        let when = if t.condition() == Condition::Down {
            "is down".to_owned()
        } else {
            format!("was seen down at {}", crate::time::format_timestamp(t.last_down_at_ms.unwrap_or(now_ms)))
        };
        if matched == 0 {
            return Progress::End {
                outcome: PlanOutcome::Abandoned,
                reason: format!("{} abandoned before its first step: `{id}` {when}", plan.title()),
            };
        }
        return Progress::Rollback {
            weights: plan.from.clone(),
            reason: format!(
                "{} rolled back at {}: `{id}` {when}; back to the weights before the plan",
                plan.title(),
                plan.describe_step(matched)
            ),
        };
    }
    let wait = |reason: String| Progress::Wait { step: matched, step_at_ms: step_at, reason };
    if let Some(t) = raised.iter().find(|t| t.condition() != Condition::Up) {
        return wait(format!("{}: `{}` has insufficient alarm data; waiting", plan.title(), t.set_identifier));
    }
    if let Some(t) = targets.iter().find(|t| t.condition() == Condition::Down) {
        return wait(format!("{}: `{}` is down; waiting (the policy decides the evacuation)", plan.title(), t.set_identifier));
    }
    if matched == 0 {
        if let Some(gate) = rpo_gate_ms {
            for t in &raised {
                if let Some(age) = t.replication_age_ms.filter(|a| *a > gate) {
                    return wait(format!(
                        "{}: waiting for the RPO gate: `{}` replication is {} s old, over the RPO of {} s",
                        plan.title(),
                        t.set_identifier,
                        age / 1000,
                        gate / 1000
                    ));
                }
            }
        }
        return Progress::Advance { step: 1, weights: plan.weights_at(1) };
    }
    // The bake counts from the step, or from when the raised targets were last seen
    // coming up (an insufficient-data spell restarts it).
    let up_from = raised.iter().filter_map(|t| t.up_since_ms).max();
    let baked_from = step_at.unwrap_or(now_ms).max(up_from.unwrap_or(i64::MIN));
    let bake = i64::try_from(plan.steps[matched - 1].bake_ms).unwrap_or(i64::MAX);
    let ready_at = baked_from.saturating_add(bake);
    if now_ms < ready_at {
        return wait(format!("{} in place, baking until {}", plan.describe_step(matched), crate::time::format_timestamp(ready_at)));
    }
    if matched == n {
        return Progress::End {
            outcome: PlanOutcome::Completed,
            reason: format!("{} completed: every step taken and baked", plan.title()),
        };
    }
    Progress::Advance { step: matched + 1, weights: plan.weights_at(matched + 1) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AlarmState, Health};

    const MIN: i64 = 60_000;
    const T0: i64 = 1_000 * MIN;

    fn target(id: &str, weight: u32, primary: bool) -> Target {
        Target {
            set_identifier: id.into(),
            region: format!("region-{id}"),
            primary,
            weight,
            health: Health::Healthy,
            alarm_state: AlarmState::Ok,
            alarm_state_since_ms: None,
            up_since_ms: Some(T0 - 60 * MIN),
            last_down_at_ms: Some(T0 - 60 * MIN),
            replication_age_ms: Some(60_000),
        }
    }

    fn w(p: u32, s: u32) -> Vec<Weight> {
        vec![Weight { set_identifier: "primary".into(), weight: p }, Weight { set_identifier: "secondary".into(), weight: s }]
    }

    fn targets(p: u32, s: u32) -> Vec<Target> {
        vec![target("primary", p, true), target("secondary", s, false)]
    }

    fn guide_steps() -> Vec<PlanStep> {
        parse_steps("10,25,50,75,100", 5 * 60_000).expect("steps")
    }

    fn plan() -> ActivePlan {
        ActivePlan::new(PlanKind::Return, "kbha", "primary recovered", &targets(0, 100), w(100, 0), guide_steps(), T0)
    }

    #[test]
    fn steps_must_rise_to_100_and_parse_with_clear_errors() {
        assert!(parse_steps("10, 25%,100", 0).is_ok());
        assert_eq!(validate_steps(&[]), Err(PlanError::NoSteps));
        let s = |p: &[u8]| p.iter().map(|p| PlanStep { percent: *p, bake_ms: 0 }).collect::<Vec<_>>();
        assert_eq!(validate_steps(&s(&[50, 50, 100])), Err(PlanError::NotRising { index: 2, percent: 50 }));
        assert_eq!(validate_steps(&s(&[0, 100])), Err(PlanError::OutOfRange { index: 1, percent: 0 }));
        assert_eq!(validate_steps(&s(&[10, 90])), Err(PlanError::ShortOfTheEnd { percent: 90 }));
        assert!(parse_steps("10,ten,100", 0).expect_err("not a number").contains("`ten` is not a percentage"));
    }

    #[test]
    fn step_weights_are_the_guide_shares_and_end_exactly_at_the_target() {
        let p = plan();
        let shares: Vec<Vec<Weight>> = (0..=5).map(|k| p.weights_at(k)).collect();
        assert_eq!(shares, vec![w(0, 100), w(10, 90), w(25, 75), w(50, 50), w(75, 25), w(100, 0)]);
        assert_eq!(p.raised(), vec!["primary"]);
        assert_eq!(p.id, format!("plan-{}-primary", crate::time::format_timestamp(T0).replace(':', "")));
        // Rounding: 1/3 of the way from 0/200 to 200/0.
        assert_eq!(step_weights(&w(0, 200), &w(200, 0), 33), w(66, 134));
    }

    #[test]
    fn a_plan_advances_one_step_per_bake_and_completes_after_the_last_bake() {
        let mut p = plan();
        assert_eq!(progress(&p, &targets(0, 100), None, T0), Progress::Advance { step: 1, weights: w(10, 90) });
        p.step = 1;
        p.step_at_ms = Some(T0);
        assert!(matches!(progress(&p, &targets(10, 90), None, T0 + 4 * MIN), Progress::Wait { step: 1, .. }));
        assert_eq!(progress(&p, &targets(10, 90), None, T0 + 5 * MIN), Progress::Advance { step: 2, weights: w(25, 75) });
        p.step = 5;
        p.step_at_ms = Some(T0 + 20 * MIN);
        assert!(matches!(progress(&p, &targets(100, 0), None, T0 + 24 * MIN), Progress::Wait { step: 5, .. }));
        assert!(matches!(progress(&p, &targets(100, 0), None, T0 + 25 * MIN), Progress::End { outcome: PlanOutcome::Completed, .. }));
    }

    #[test]
    fn a_step_already_in_route_53_is_never_taken_twice() {
        // Another copy of the tick took step 2 and has not recorded it.
        let mut p = plan();
        p.step = 1;
        p.step_at_ms = Some(T0);
        let now = T0 + 6 * MIN;
        assert_eq!(
            progress(&p, &targets(25, 75), None, now),
            Progress::Wait {
                step: 2,
                step_at_ms: Some(now),
                reason: format!("step 2 of 5 (25 %) in place, baking until {}", crate::time::format_timestamp(now + 5 * MIN))
            }
        );
    }

    #[test]
    fn a_failure_of_the_returning_target_rolls_back_at_once_even_between_ticks() {
        let mut p = plan();
        p.step = 3;
        p.step_at_ms = Some(T0 + 10 * MIN);
        let mut t = targets(50, 50);
        t[0].health = Health::Unhealthy;
        t[0].up_since_ms = None;
        let Progress::Rollback { weights, reason } = progress(&p, &t, None, T0 + 11 * MIN) else { panic!("no rollback") };
        assert_eq!(weights, w(0, 100));
        assert!(reason.contains("step 3 of 5 (50 %)") && reason.contains("`primary` is down"), "{reason}");
        // Up again now, but an alarm period ended after the plan started.
        let mut t = targets(50, 50);
        t[0].last_down_at_ms = Some(T0 + 10 * MIN + 30_000);
        t[0].up_since_ms = Some(T0 + 10 * MIN + 30_000);
        assert!(matches!(progress(&p, &t, None, T0 + 11 * MIN), Progress::Rollback { .. }));
    }

    #[test]
    fn the_other_side_failing_or_unproven_data_waits_and_a_spell_restarts_the_bake() {
        let mut p = plan();
        p.step = 2;
        p.step_at_ms = Some(T0);
        let mut t = targets(25, 75);
        t[1].health = Health::Unhealthy;
        assert!(matches!(progress(&p, &t, None, T0 + 10 * MIN), Progress::Wait { .. }), "secondary down: the policy evacuates");
        let mut t = targets(25, 75);
        t[0].alarm_state = AlarmState::InsufficientData;
        t[0].up_since_ms = None;
        assert!(matches!(progress(&p, &t, None, T0 + 10 * MIN), Progress::Wait { .. }));
        // Up again since T0+8: the bake counts from there.
        let mut t = targets(25, 75);
        t[0].up_since_ms = Some(T0 + 8 * MIN);
        assert!(matches!(progress(&p, &t, None, T0 + 12 * MIN), Progress::Wait { .. }));
        assert!(matches!(progress(&p, &t, None, T0 + 13 * MIN), Progress::Advance { step: 3, .. }));
    }

    #[test]
    fn weights_moved_outside_the_plan_end_it_and_a_switchover_waits_for_the_rpo_gate() {
        let mut p = plan();
        p.step = 2;
        p.step_at_ms = Some(T0);
        assert!(matches!(progress(&p, &targets(0, 100), None, T0), Progress::End { outcome: PlanOutcome::Superseded, .. }));
        assert!(matches!(progress(&p, &targets(60, 40), None, T0), Progress::End { outcome: PlanOutcome::Superseded, .. }));
        let mut s = ActivePlan::new(PlanKind::Switchover, "arn:op", "game day", &targets(100, 0), w(0, 100), guide_steps(), T0);
        let mut t = targets(100, 0);
        t[1].replication_age_ms = Some(2 * 3_600_000);
        let Progress::Wait { reason, .. } = progress(&s, &t, Some(3_600_000), T0) else { panic!("gate not held") };
        assert!(reason.contains("RPO gate"), "{reason}");
        t[1].replication_age_ms = Some(60_000);
        assert_eq!(progress(&s, &t, Some(3_600_000), T0), Progress::Advance { step: 1, weights: w(90, 10) });
        // Its destination failing before the first step abandons it.
        t[1].health = Health::Unhealthy;
        s.started_at_ms = T0;
        assert!(matches!(progress(&s, &t, None, T0), Progress::End { outcome: PlanOutcome::Abandoned, .. }));
    }
}
