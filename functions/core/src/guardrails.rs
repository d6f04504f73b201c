//! Guardrails: checks the host applies to every failover decision. No policy can
//! override them. Modelled on Route 53 ARC safety rules (ATLEAST 1), orchestrator's
//! anti-flapping cooldown, and "never onto a failing target" unless break-glass.

use serde::Serialize;

use crate::{FailoverAction, FailoverDecision, FailoverInput, Health, TimestampMs, Weight};

/// Route 53's largest weight.
pub const MAX_WEIGHT: u32 = 255;

/// Host settings the guardrails need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardrailSettings {
    /// Minimum time between two automatic changes of one record set.
    pub cooldown_ms: i64,
    /// Whether a policy's `force` may move traffic onto a failing target.
    pub break_glass: bool,
}

/// One reason a decision was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// The decision names a target that is not in the record set.
    UnknownTarget {
        /// The unknown SetIdentifier.
        set_identifier: String,
    },
    /// The decision names a target twice.
    DuplicateTarget {
        /// The repeated SetIdentifier.
        set_identifier: String,
    },
    /// A weight outside 0..=255.
    WeightOutOfRange {
        /// Target.
        set_identifier: String,
        /// The weight asked for.
        weight: u32,
    },
    /// Every weight would be 0: traffic would be black-holed.
    NoTrafficLeft,
    /// Traffic would move onto a target whose health check fails.
    OntoUnhealthyTarget {
        /// Target.
        set_identifier: String,
    },
    /// The policy asked for `force` but break-glass is not enabled.
    ForceNotAllowed,
    /// Another automatic change happened within the cooldown.
    Cooldown {
        /// When the last change was applied.
        last_change_at_ms: TimestampMs,
        /// When the next change is allowed.
        allowed_from_ms: TimestampMs,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownTarget { set_identifier } => write!(f, "target `{set_identifier}` is not in the record set"),
            Refusal::DuplicateTarget { set_identifier } => write!(f, "target `{set_identifier}` is named twice"),
            Refusal::WeightOutOfRange { set_identifier, weight } => {
                write!(f, "weight {weight} for `{set_identifier}` is outside 0..={MAX_WEIGHT}")
            }
            Refusal::NoTrafficLeft => write!(f, "every weight would be 0, leaving no target to serve traffic"),
            Refusal::OntoUnhealthyTarget { set_identifier } => {
                write!(f, "traffic would move onto `{set_identifier}` whose health check is failing")
            }
            Refusal::ForceNotAllowed => write!(f, "the policy asked for force but break-glass is not enabled"),
            Refusal::Cooldown { allowed_from_ms, .. } => write!(
                f,
                "another automatic change happened within the cooldown; next change allowed at {}",
                crate::time::format_timestamp(*allowed_from_ms)
            ),
        }
    }
}

/// What the guardrails make of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum GuardrailVerdict {
    /// The policy held, or asked for the weights already in place.
    NoChange,
    /// Apply these weights (one per target, in record-set order).
    Apply {
        /// The complete new weights.
        weights: Vec<Weight>,
        /// Traffic moves onto a failing target under break-glass.
        forced: bool,
    },
    /// Refused; the weights stay.
    Refused {
        /// Every reason, so an operator sees them all at once.
        refusals: Vec<Refusal>,
    },
}

/// Checks `decision` against the guardrails for the record set described by `input`.
pub fn check_failover(input: &FailoverInput, decision: &FailoverDecision, settings: GuardrailSettings) -> GuardrailVerdict {
    let (asked, force) = match &decision.action {
        FailoverAction::Hold => return GuardrailVerdict::NoChange,
        FailoverAction::ShiftWeights { weights, force } => (weights, *force),
    };
    let mut refusals = Vec::new();
    let mut new: Vec<Weight> =
        input.targets.iter().map(|t| Weight { set_identifier: t.set_identifier.clone(), weight: t.weight }).collect();
    let mut seen = std::collections::BTreeSet::new();
    for w in asked {
        if !seen.insert(w.set_identifier.as_str()) {
            refusals.push(Refusal::DuplicateTarget { set_identifier: w.set_identifier.clone() });
            continue;
        }
        if w.weight > MAX_WEIGHT {
            refusals.push(Refusal::WeightOutOfRange { set_identifier: w.set_identifier.clone(), weight: w.weight });
        }
        match new.iter_mut().find(|n| n.set_identifier == w.set_identifier) {
            Some(slot) => slot.weight = w.weight,
            None => refusals.push(Refusal::UnknownTarget { set_identifier: w.set_identifier.clone() }),
        }
    }
    if new.iter().all(|w| w.weight == 0) {
        refusals.push(Refusal::NoTrafficLeft);
    }
    let mut forced = false;
    for (target, w) in input.targets.iter().zip(&new) {
        if w.weight > target.weight && target.health == Health::Unhealthy {
            if force && settings.break_glass {
                forced = true;
            } else {
                refusals.push(Refusal::OntoUnhealthyTarget { set_identifier: target.set_identifier.clone() });
            }
        }
    }
    if force && !settings.break_glass && refusals.iter().any(|r| matches!(r, Refusal::OntoUnhealthyTarget { .. })) {
        refusals.push(Refusal::ForceNotAllowed);
    }
    let unchanged = input.targets.iter().zip(&new).all(|(t, w)| t.weight == w.weight);
    if refusals.is_empty() && unchanged {
        return GuardrailVerdict::NoChange;
    }
    if let Some(last) = input.last_change.as_ref().filter(|_| !unchanged) {
        let allowed_from_ms = last.at_ms.saturating_add(settings.cooldown_ms);
        if input.now_ms < allowed_from_ms {
            refusals.push(Refusal::Cooldown { last_change_at_ms: last.at_ms, allowed_from_ms });
        }
    }
    if refusals.is_empty() {
        GuardrailVerdict::Apply { weights: new, forced }
    } else {
        GuardrailVerdict::Refused { refusals }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AlarmState, FailoverTrigger, LastChange, Target};

    const MIN: i64 = 60_000;

    fn target(id: &str, weight: u32, health: Health) -> Target {
        Target {
            set_identifier: id.into(),
            region: format!("region-{id}"),
            primary: id == "primary",
            weight,
            health,
            alarm_state: AlarmState::Ok,
            alarm_state_since_ms: None,
            replication_age_ms: None,
        }
    }

    fn input(primary: (u32, Health), secondary: (u32, Health)) -> FailoverInput {
        FailoverInput {
            now_ms: 100 * MIN,
            event_id: "e".into(),
            trigger: FailoverTrigger::Schedule,
            record_name: "api.example.com.".into(),
            targets: vec![target("primary", primary.0, primary.1), target("secondary", secondary.0, secondary.1)],
            last_change: None,
            config: Default::default(),
        }
    }

    fn shift(weights: &[(&str, u32)], force: bool) -> FailoverDecision {
        FailoverDecision {
            action: FailoverAction::ShiftWeights {
                weights: weights.iter().map(|(s, w)| Weight { set_identifier: (*s).into(), weight: *w }).collect(),
                force,
            },
            reason: "test".into(),
            alerts: vec![],
        }
    }

    const SETTINGS: GuardrailSettings = GuardrailSettings { cooldown_ms: 10 * MIN, break_glass: false };

    fn refusals(v: GuardrailVerdict) -> Vec<Refusal> {
        match v {
            GuardrailVerdict::Refused { refusals } => refusals,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_healthy_failover_is_applied_with_complete_weights() {
        let i = input((100, Health::Unhealthy), (0, Health::Healthy));
        let v = check_failover(&i, &shift(&[("primary", 0), ("secondary", 100)], false), SETTINGS);
        assert_eq!(
            v,
            GuardrailVerdict::Apply {
                weights: vec![
                    Weight { set_identifier: "primary".into(), weight: 0 },
                    Weight { set_identifier: "secondary".into(), weight: 100 }
                ],
                forced: false
            }
        );
    }

    #[test]
    fn hold_and_same_weights_are_no_change() {
        let i = input((100, Health::Healthy), (0, Health::Healthy));
        let hold = FailoverDecision { action: FailoverAction::Hold, reason: "r".into(), alerts: vec![] };
        assert_eq!(check_failover(&i, &hold, SETTINGS), GuardrailVerdict::NoChange);
        assert_eq!(check_failover(&i, &shift(&[("primary", 100)], false), SETTINGS), GuardrailVerdict::NoChange);
    }

    #[test]
    fn all_zero_is_refused() {
        let i = input((100, Health::Healthy), (0, Health::Healthy));
        assert_eq!(refusals(check_failover(&i, &shift(&[("primary", 0)], false), SETTINGS)), vec![Refusal::NoTrafficLeft]);
    }

    #[test]
    fn weights_over_255_are_refused() {
        let i = input((100, Health::Healthy), (0, Health::Healthy));
        let r = refusals(check_failover(&i, &shift(&[("secondary", 256)], false), SETTINGS));
        assert_eq!(r, vec![Refusal::WeightOutOfRange { set_identifier: "secondary".into(), weight: 256 }]);
    }

    #[test]
    fn unknown_and_duplicate_targets_are_refused() {
        let i = input((100, Health::Healthy), (0, Health::Healthy));
        let r = refusals(check_failover(&i, &shift(&[("tertiary", 5), ("secondary", 1), ("secondary", 2)], false), SETTINGS));
        assert!(r.contains(&Refusal::UnknownTarget { set_identifier: "tertiary".into() }));
        assert!(r.contains(&Refusal::DuplicateTarget { set_identifier: "secondary".into() }));
    }

    #[test]
    fn never_onto_an_unhealthy_target_without_break_glass() {
        let i = input((100, Health::Unhealthy), (0, Health::Unhealthy));
        let d = shift(&[("primary", 0), ("secondary", 100)], false);
        assert_eq!(
            refusals(check_failover(&i, &d, SETTINGS)),
            vec![Refusal::OntoUnhealthyTarget { set_identifier: "secondary".into() }]
        );
        let forced = shift(&[("primary", 0), ("secondary", 100)], true);
        let r = refusals(check_failover(&i, &forced, SETTINGS));
        assert!(r.contains(&Refusal::ForceNotAllowed), "{r:?}");
        let glass = GuardrailSettings { break_glass: true, ..SETTINGS };
        assert!(matches!(check_failover(&i, &forced, glass), GuardrailVerdict::Apply { forced: true, .. }));
        // break-glass alone does not let an unforced decision through
        assert!(matches!(check_failover(&i, &d, glass), GuardrailVerdict::Refused { .. }));
    }

    #[test]
    fn a_second_change_within_the_cooldown_is_held() {
        let mut i = input((0, Health::Healthy), (100, Health::Healthy));
        i.last_change = Some(LastChange { at_ms: i.now_ms - 3 * MIN, weights: vec![], reason: "failover".into() });
        let d = shift(&[("primary", 100), ("secondary", 0)], false);
        assert_eq!(
            refusals(check_failover(&i, &d, SETTINGS)),
            vec![Refusal::Cooldown { last_change_at_ms: i.now_ms - 3 * MIN, allowed_from_ms: i.now_ms + 7 * MIN }]
        );
        i.last_change = Some(LastChange { at_ms: i.now_ms - 10 * MIN, weights: vec![], reason: "failover".into() });
        assert!(matches!(check_failover(&i, &d, SETTINGS), GuardrailVerdict::Apply { .. }));
    }
}
