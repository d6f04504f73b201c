//! Stepped shifts in the failover function: the plan the state object keeps, what one
//! evaluation does to it, and how that reaches the ledger and the decision record. The
//! step logic itself is pure, in [`kbha_core::plan`].

use kbha_core::TimestampMs;
use kbha_core::guardrails::GuardrailSettings;
use kbha_core::plan::{ActivePlan, PlanKind, PlanOutcome};
use serde::{Deserialize, Serialize};

use crate::journal::StoredState;
use crate::ledger::OperatorAction;

/// What an evaluation (or an operator command) does to the stored plan. A change's update
/// rides on its journal entry and is applied when the change is recorded, so a step is
/// never recorded without its change or the other way round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "update", rename_all = "snake_case")]
pub enum PlanUpdate {
    /// Store this plan (a new one, or a step taken).
    Set {
        /// The plan as it is now.
        plan: ActivePlan,
    },
    /// The plan ended.
    End {
        /// Its id.
        id: String,
        /// How.
        outcome: PlanOutcome,
        /// In words.
        reason: String,
        /// Who ended it: `kbha` or an operator.
        by: String,
    },
}

/// The plan part of a decision record and of its notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanNote {
    /// Plan id.
    pub id: String,
    /// `stepped return to primary`, `planned switchover to secondary`.
    pub title: String,
    /// Return or switchover.
    pub kind: PlanKind,
    /// The step in place after this evaluation.
    pub step: usize,
    /// Steps in all.
    pub of: usize,
    /// How it ended, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<PlanOutcome>,
    /// What happened, in words.
    pub reason: String,
}

impl PlanNote {
    /// A note on `plan` at `step`.
    pub fn new(plan: &ActivePlan, step: usize, outcome: Option<PlanOutcome>, reason: String) -> Self {
        PlanNote { id: plan.id.clone(), title: plan.title(), kind: plan.kind, step, of: plan.steps.len(), outcome, reason }
    }
}

/// Guardrails for a plan's later steps, its rollback and an operator's switchover: the
/// plan's bake paces the steps instead of the cooldown, the return was proven (and, with
/// manual failback, approved) when the plan started, and a rollback restores weights the
/// guardrails accepted before. Never onto a down target, and the minimum interval stays.
pub fn plan_guardrails(mut g: GuardrailSettings) -> GuardrailSettings {
    g.cooldown_ms = 0;
    g.hysteresis_ms = 0;
    g.manual_failback = false;
    g.break_glass = false;
    g
}

/// Applies `u` to the state object (idempotent, and never takes a plan back to an earlier
/// step: two copies of one evaluation write the same update, in either order). An ended
/// plan is noted in the recent actions and the open incident.
pub(crate) fn apply(s: &mut StoredState, u: &PlanUpdate, now_ms: TimestampMs) {
    match u {
        PlanUpdate::Set { plan } => match s.plan.as_mut() {
            Some(mine) if mine.id == plan.id => {
                if plan.step > mine.step {
                    *mine = plan.clone();
                }
            }
            // A plan that ended meanwhile is not brought back by a late copy.
            _ if s.ended_plans.contains(&plan.id) => {}
            _ => s.plan = Some(plan.clone()),
        },
        PlanUpdate::End { id, outcome, reason, by } => {
            if s.plan.as_ref().is_some_and(|p| &p.id == id) {
                s.plan = None;
            }
            if !s.ended_plans.contains(id) {
                s.ended_plans.push(id.clone());
                let excess = s.ended_plans.len().saturating_sub(8);
                s.ended_plans.drain(..excess);
                let a = OperatorAction {
                    at_ms: now_ms,
                    by: by.clone(),
                    command: format!(
                        "plan {}",
                        serde_json::to_value(outcome).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
                    ),
                    detail: reason.clone(),
                };
                crate::ops::record_action(s, &a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbha_core::Weight;

    fn plan(step: usize) -> ActivePlan {
        ActivePlan {
            id: "plan-x".into(),
            kind: PlanKind::Return,
            by: "kbha".into(),
            reason: "r".into(),
            from: vec![Weight { set_identifier: "p".into(), weight: 0 }],
            to: vec![Weight { set_identifier: "p".into(), weight: 100 }],
            steps: vec![],
            started_at_ms: 0,
            step,
            step_at_ms: Some(step as i64),
        }
    }

    #[test]
    fn updates_never_go_back_a_step_nor_revive_an_ended_plan() {
        let mut s = StoredState::default();
        apply(&mut s, &PlanUpdate::Set { plan: plan(2) }, 0);
        apply(&mut s, &PlanUpdate::Set { plan: plan(1) }, 0);
        assert_eq!(s.plan.as_ref().map(|p| p.step), Some(2));
        let end = PlanUpdate::End { id: "plan-x".into(), outcome: PlanOutcome::RolledBack, reason: "down".into(), by: "kbha".into() };
        apply(&mut s, &end, 5);
        apply(&mut s, &end, 6);
        assert_eq!(s.actions.len(), 1, "ended once");
        assert_eq!(s.actions[0].command, "plan rolled_back");
        apply(&mut s, &PlanUpdate::Set { plan: plan(3) }, 7);
        assert_eq!(s.plan, None, "a late copy of a step does not bring it back");
    }
}
