//! Guardrails: checks the host applies to every failover decision. No policy can
//! override them. Modelled on Route 53 ARC safety rules (ATLEAST 1, a wait period between
//! changes), orchestrator's anti-flapping, and "never onto a failing target" unless
//! break-glass.
//!
//! They reason in traffic *shares*, not absolute weights (at 100/100, zeroing the healthy
//! side moves everything onto the sick one), and tell two moves apart:
//!
//! | move | what it is | held by |
//! |---|---|---|
//! | evacuation | lowers the share of a down target, raises only targets that are not down | the minimum interval only |
//! | return | raises the share of a target not proven up (observed up for the hysteresis) | the minimum interval, the hysteresis, the cooldown, manual failback |
//! | rebalance | anything else (moves among proven targets) | the minimum interval, the cooldown |

use serde::{Deserialize, Serialize};

use crate::{Condition, FailoverAction, FailoverDecision, FailoverInput, Target, TimestampMs, Weight};

/// Route 53's largest weight.
pub const MAX_WEIGHT: u32 = 255;

/// Host settings the guardrails need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardrailSettings {
    /// Minimum time between a change and a return or rebalance that follows it.
    pub cooldown_ms: i64,
    /// Minimum time between any two changes, evacuations included (ARC's wait period):
    /// it stops thrashing, never a needed evacuation for long.
    pub min_interval_ms: i64,
    /// How long a target must have been observed up before traffic returns to it.
    pub hysteresis_ms: i64,
    /// Returns wait for an operator.
    pub manual_failback: bool,
    /// Whether a policy's `force` may move traffic onto a failing target.
    pub break_glass: bool,
}

/// Which kind of move a change is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Move {
    /// Traffic leaves a down target for targets that are not down.
    Evacuation,
    /// Traffic goes to a target not yet proven up.
    Return,
    /// Traffic moves among proven targets.
    Rebalance,
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
    /// The share of traffic of a target that is down would rise.
    OntoUnhealthyTarget {
        /// Target.
        set_identifier: String,
    },
    /// The policy asked for `force` but break-glass is not enabled.
    ForceNotAllowed,
    /// A return or rebalance within the cooldown after the last change.
    Cooldown {
        /// When the last change was applied.
        last_change_at_ms: TimestampMs,
        /// When the next change is allowed.
        allowed_from_ms: TimestampMs,
    },
    /// Any change within the minimum interval after the last change.
    TooSoon {
        /// When the last change was applied.
        last_change_at_ms: TimestampMs,
        /// When the next change is allowed.
        allowed_from_ms: TimestampMs,
    },
    /// Traffic would return to a target not observed up for the hysteresis.
    NotProvenUp {
        /// Target.
        set_identifier: String,
        /// Since when it has been observed up (`None`: it is not up now).
        up_since_ms: Option<TimestampMs>,
    },
    /// Traffic would return to a target while failback is manual.
    ManualFailback {
        /// Target.
        set_identifier: String,
    },
    /// The share of a target an operator drained would rise (`kbha ops drain`): a drained
    /// target gets traffic only from an operator (`kbha ops undrain` or `shift`).
    Drained {
        /// Target.
        set_identifier: String,
    },
    /// A stepped shift whose steps are not valid ([`crate::plan::validate_steps`]).
    InvalidPlan {
        /// What is wrong.
        problem: String,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::time::format_timestamp as ts;
        match self {
            Refusal::UnknownTarget { set_identifier } => write!(f, "target `{set_identifier}` is not in the record set"),
            Refusal::DuplicateTarget { set_identifier } => write!(f, "target `{set_identifier}` is named twice"),
            Refusal::WeightOutOfRange { set_identifier, weight } => {
                write!(f, "weight {weight} for `{set_identifier}` is outside 0..={MAX_WEIGHT}")
            }
            Refusal::NoTrafficLeft => write!(f, "every weight would be 0, leaving no target to serve traffic"),
            Refusal::OntoUnhealthyTarget { set_identifier } => {
                write!(f, "the traffic share of `{set_identifier}` would rise although it is down (health check failing or alarm in ALARM)")
            }
            Refusal::ForceNotAllowed => write!(f, "the policy asked for force but break-glass is not enabled"),
            Refusal::Cooldown { allowed_from_ms, .. } => {
                write!(f, "a return or rebalance within the cooldown after the last change; next one allowed at {}", ts(*allowed_from_ms))
            }
            Refusal::TooSoon { allowed_from_ms, .. } => {
                write!(f, "within the minimum interval after the last change; next change allowed at {}", ts(*allowed_from_ms))
            }
            Refusal::NotProvenUp { set_identifier, up_since_ms: Some(since) } => {
                write!(f, "traffic would return to `{set_identifier}`, up only since {}, before the hysteresis has passed", ts(*since))
            }
            Refusal::NotProvenUp { set_identifier, up_since_ms: None } => {
                write!(f, "traffic would return to `{set_identifier}`, which is not observed up")
            }
            Refusal::ManualFailback { set_identifier } => {
                write!(
                    f,
                    "traffic would return to `{set_identifier}` but failback is manual (KBHA_FAILBACK=manual); `kbha ops approve-failback` lets it return"
                )
            }
            Refusal::InvalidPlan { problem } => write!(f, "the stepped shift is not valid: {problem}"),
            Refusal::Drained { set_identifier } => {
                write!(
                    f,
                    "the traffic share of `{set_identifier}` would rise but an operator drained it; `kbha ops undrain {set_identifier}` gives it back"
                )
            }
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
        /// Which kind of move it is.
        #[serde(rename = "move")]
        kind: Move,
    },
    /// Refused; the weights stay.
    Refused {
        /// Every reason, so an operator sees them all at once.
        refusals: Vec<Refusal>,
    },
}

/// How each target's share of traffic changes from `old` to `new` weights: -1, 0 or +1.
/// Route 53 spreads traffic evenly when every weight is 0, so all-zero counts as equal.
pub fn share_changes(old: &[u32], new: &[u32]) -> Vec<std::cmp::Ordering> {
    let even = |w: &[u32]| -> Vec<u64> {
        if w.iter().all(|x| *x == 0) { w.iter().map(|_| 1).collect() } else { w.iter().map(|x| u64::from(*x)).collect() }
    };
    let (o, n) = (even(old), even(new));
    let (so, sn) = (o.iter().sum::<u64>(), n.iter().sum::<u64>());
    // share_new = n/sn against share_old = o/so, without division.
    o.iter().zip(&n).map(|(o, n)| (n * so).cmp(&(o * sn))).collect()
}

/// Which move takes traffic from `targets` (current weights) to `new`.
pub fn classify(targets: &[Target], new: &[Weight], hysteresis_ms: i64, now_ms: TimestampMs) -> Move {
    let old: Vec<u32> = targets.iter().map(|t| t.weight).collect();
    let neu: Vec<u32> = new.iter().map(|w| w.weight).collect();
    let changes = share_changes(&old, &neu);
    let moves = || targets.iter().zip(&changes);
    let sheds_down = moves().any(|(t, c)| c.is_lt() && t.condition() == Condition::Down);
    let rises_onto_down = moves().any(|(t, c)| c.is_gt() && t.condition() == Condition::Down);
    if sheds_down && !rises_onto_down {
        return Move::Evacuation;
    }
    if moves().any(|(t, c)| c.is_gt() && !t.up_for(hysteresis_ms, now_ms)) { Move::Return } else { Move::Rebalance }
}

/// Checks `decision` against the guardrails for the record set described by `input`.
pub fn check_failover(input: &FailoverInput, decision: &FailoverDecision, settings: GuardrailSettings) -> GuardrailVerdict {
    let mut refusals = Vec::new();
    let stepped: Vec<Weight>;
    let (asked, force): (&[Weight], bool) = match &decision.action {
        FailoverAction::Hold => return GuardrailVerdict::NoChange,
        FailoverAction::ShiftWeights { weights, force } => (weights, *force),
        // A stepped shift is checked as its first step; the failover function checks each
        // later one as it comes ([`crate::plan`]).
        FailoverAction::ShiftInSteps { weights, steps } => {
            if let Err(e) = crate::plan::validate_steps(steps) {
                refusals.push(Refusal::InvalidPlan { problem: e.to_string() });
            }
            let percent = steps.first().map_or(100, |s| s.percent.clamp(1, 100));
            stepped = weights
                .iter()
                .map(|w| {
                    let from = input.targets.iter().find(|t| t.set_identifier == w.set_identifier).map_or(0, |t| t.weight);
                    let weight = if w.weight > MAX_WEIGHT { w.weight } else { crate::plan::step_value(from, w.weight, percent) };
                    Weight { set_identifier: w.set_identifier.clone(), weight }
                })
                .collect();
            (&stepped, false)
        }
    };
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
    let unchanged = input.targets.iter().zip(&new).all(|(t, w)| t.weight == w.weight);
    if refusals.is_empty() && unchanged {
        return GuardrailVerdict::NoChange;
    }
    let old: Vec<u32> = input.targets.iter().map(|t| t.weight).collect();
    let changes = share_changes(&old, &new.iter().map(|w| w.weight).collect::<Vec<_>>());
    let mut forced = false;
    for (target, change) in input.targets.iter().zip(&changes) {
        if change.is_gt() && target.condition() == Condition::Down {
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
    let kind = classify(&input.targets, &new, settings.hysteresis_ms, input.now_ms);
    if let Some(last) = &input.last_change {
        let allowed_from_ms = last.at_ms.saturating_add(settings.min_interval_ms);
        if input.now_ms < allowed_from_ms {
            refusals.push(Refusal::TooSoon { last_change_at_ms: last.at_ms, allowed_from_ms });
        }
    }
    if kind == Move::Return {
        for (target, change) in input.targets.iter().zip(&changes) {
            if !change.is_gt() {
                continue;
            }
            // A down target is refused above, or let through by break-glass, which
            // overrides health, not the operator's failback mode.
            if target.condition() != Condition::Down && !target.up_for(settings.hysteresis_ms, input.now_ms) {
                refusals.push(Refusal::NotProvenUp {
                    set_identifier: target.set_identifier.clone(),
                    up_since_ms: target.up_since_ms.filter(|_| target.condition() == Condition::Up),
                });
            }
            if settings.manual_failback {
                refusals.push(Refusal::ManualFailback { set_identifier: target.set_identifier.clone() });
            }
        }
    }
    if kind != Move::Evacuation
        && let Some(last) = &input.last_change
    {
        let allowed_from_ms = last.at_ms.saturating_add(settings.cooldown_ms);
        if input.now_ms < allowed_from_ms {
            refusals.push(Refusal::Cooldown { last_change_at_ms: last.at_ms, allowed_from_ms });
        }
    }
    if refusals.is_empty() { GuardrailVerdict::Apply { weights: new, forced, kind } } else { GuardrailVerdict::Refused { refusals } }
}

/// Refuses a verdict that raises the share of a drained target (an operator's maintenance
/// mark): drained targets get traffic only from an operator. Everything else passes.
pub fn refuse_onto_drained(targets: &[Target], verdict: GuardrailVerdict, drained: &[&str]) -> GuardrailVerdict {
    let GuardrailVerdict::Apply { weights, .. } = &verdict else { return verdict };
    let old: Vec<u32> = targets.iter().map(|t| t.weight).collect();
    let new: Vec<u32> = weights.iter().map(|w| w.weight).collect();
    let refusals: Vec<Refusal> = targets
        .iter()
        .zip(share_changes(&old, &new))
        .filter(|(t, c)| c.is_gt() && drained.contains(&t.set_identifier.as_str()))
        .map(|(t, _)| Refusal::Drained { set_identifier: t.set_identifier.clone() })
        .collect();
    if refusals.is_empty() { verdict } else { GuardrailVerdict::Refused { refusals } }
}

/// Everything besides the input and the decision that the guardrails check a policy's
/// decision with: the settings (after the operators' marks) and the drained targets. The
/// failover decision record carries it, so a backtest checks another policy's decision
/// exactly as the function would have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardrailContext {
    /// The settings in force for this decision.
    pub settings: GuardrailSettings,
    /// Targets an operator drained.
    pub drained: Vec<String>,
}

impl GuardrailContext {
    /// [`check_failover`], then [`refuse_onto_drained`].
    pub fn check(&self, input: &FailoverInput, decision: &FailoverDecision) -> GuardrailVerdict {
        let drained: Vec<&str> = self.drained.iter().map(String::as_str).collect();
        refuse_onto_drained(&input.targets, check_failover(input, decision, self.settings), &drained)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AlarmState, FailoverTrigger, Health, LastChange, Target};

    const MIN: i64 = 60_000;
    const NOW: i64 = 1000 * MIN;

    /// A target up (healthy) since `up_for_ms` before now, or down/unproven per `health`.
    fn target(id: &str, weight: u32, health: Health, up_for_ms: i64) -> Target {
        let mut t = Target {
            set_identifier: id.into(),
            region: format!("region-{id}"),
            primary: id == "primary",
            weight,
            health,
            alarm_state: AlarmState::Ok,
            alarm_state_since_ms: None,
            up_since_ms: None,
            last_down_at_ms: None,
            replication_age_ms: None,
        };
        if t.condition() == Condition::Up {
            t.up_since_ms = Some(NOW - up_for_ms);
        }
        t
    }

    fn input(primary: Target, secondary: Target, last_change_ago_ms: Option<i64>) -> FailoverInput {
        FailoverInput {
            now_ms: NOW,
            event_id: "e".into(),
            trigger: FailoverTrigger::Schedule,
            record_name: "api.example.com.".into(),
            targets: vec![primary, secondary],
            last_change: last_change_ago_ms.map(|ago| LastChange { at_ms: NOW - ago, weights: vec![], reason: "r".into() }),
            config: Default::default(),
        }
    }

    fn healthy(id: &str, w: u32) -> Target {
        target(id, w, Health::Healthy, 60 * MIN)
    }

    fn sick(id: &str, w: u32) -> Target {
        target(id, w, Health::Unhealthy, 0)
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

    const SETTINGS: GuardrailSettings = GuardrailSettings {
        cooldown_ms: 10 * MIN,
        min_interval_ms: 5_000,
        hysteresis_ms: 10 * MIN,
        manual_failback: false,
        break_glass: false,
    };

    fn refusals(v: GuardrailVerdict) -> Vec<Refusal> {
        match v {
            GuardrailVerdict::Refused { refusals } => refusals,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn applied_move(v: GuardrailVerdict) -> Move {
        match v {
            GuardrailVerdict::Apply { kind, .. } => kind,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn a_healthy_failover_is_an_evacuation_applied_with_complete_weights() {
        let i = input(sick("primary", 100), healthy("secondary", 0), None);
        let v = check_failover(&i, &shift(&[("primary", 0), ("secondary", 100)], false), SETTINGS);
        assert_eq!(
            v,
            GuardrailVerdict::Apply {
                weights: vec![
                    Weight { set_identifier: "primary".into(), weight: 0 },
                    Weight { set_identifier: "secondary".into(), weight: 100 }
                ],
                forced: false,
                kind: Move::Evacuation,
            }
        );
    }

    #[test]
    fn hold_and_same_weights_are_no_change() {
        let i = input(healthy("primary", 100), healthy("secondary", 0), None);
        let hold = FailoverDecision { action: FailoverAction::Hold, reason: "r".into(), alerts: vec![] };
        assert_eq!(check_failover(&i, &hold, SETTINGS), GuardrailVerdict::NoChange);
        assert_eq!(check_failover(&i, &shift(&[("primary", 100)], false), SETTINGS), GuardrailVerdict::NoChange);
    }

    #[test]
    fn all_zero_is_refused() {
        let i = input(healthy("primary", 100), healthy("secondary", 0), None);
        assert_eq!(refusals(check_failover(&i, &shift(&[("primary", 0)], false), SETTINGS)), vec![Refusal::NoTrafficLeft]);
    }

    #[test]
    fn weights_over_255_are_refused() {
        let i = input(healthy("primary", 100), healthy("secondary", 0), None);
        let r = refusals(check_failover(&i, &shift(&[("secondary", 256)], false), SETTINGS));
        assert_eq!(r, vec![Refusal::WeightOutOfRange { set_identifier: "secondary".into(), weight: 256 }]);
    }

    #[test]
    fn unknown_and_duplicate_targets_are_refused() {
        let i = input(healthy("primary", 100), healthy("secondary", 0), None);
        let r = refusals(check_failover(&i, &shift(&[("tertiary", 5), ("secondary", 1), ("secondary", 2)], false), SETTINGS));
        assert!(r.contains(&Refusal::UnknownTarget { set_identifier: "tertiary".into() }));
        assert!(r.contains(&Refusal::DuplicateTarget { set_identifier: "secondary".into() }));
    }

    #[test]
    fn shares_not_weights_decide_what_moves_onto_a_sick_target() {
        // At 100/100 with the primary sick, zeroing the healthy secondary raises the
        // primary's share from half to all, although its weight stays 100.
        let i = input(sick("primary", 100), healthy("secondary", 100), None);
        assert_eq!(
            refusals(check_failover(&i, &shift(&[("secondary", 0)], false), SETTINGS)),
            vec![Refusal::OntoUnhealthyTarget { set_identifier: "primary".into() }]
        );
        // Raising both weights in proportion moves nothing.
        let v = check_failover(&i, &shift(&[("primary", 200), ("secondary", 200)], false), SETTINGS);
        assert_eq!(applied_move(v), Move::Rebalance);
        // All-zero weights spread traffic evenly in Route 53: 0/0 -> 0/10 sheds the sick primary.
        let i = input(sick("primary", 0), healthy("secondary", 0), None);
        assert_eq!(applied_move(check_failover(&i, &shift(&[("secondary", 10)], false), SETTINGS)), Move::Evacuation);
    }

    #[test]
    fn never_onto_a_down_target_without_break_glass() {
        let i = input(sick("primary", 100), sick("secondary", 0), None);
        let d = shift(&[("primary", 0), ("secondary", 100)], false);
        assert_eq!(refusals(check_failover(&i, &d, SETTINGS)), vec![Refusal::OntoUnhealthyTarget { set_identifier: "secondary".into() }]);
        let forced = shift(&[("primary", 0), ("secondary", 100)], true);
        let r = refusals(check_failover(&i, &forced, SETTINGS));
        assert!(r.contains(&Refusal::ForceNotAllowed), "{r:?}");
        let glass = GuardrailSettings { break_glass: true, ..SETTINGS };
        assert!(matches!(check_failover(&i, &forced, glass), GuardrailVerdict::Apply { forced: true, .. }));
        // break-glass alone does not let an unforced decision through
        assert!(matches!(check_failover(&i, &d, glass), GuardrailVerdict::Refused { .. }));
        // An alarm in ALARM makes a target down as a failing health check does.
        let mut alarmed = healthy("secondary", 0);
        alarmed.alarm_state = AlarmState::Alarm;
        let i = input(sick("primary", 100), alarmed, None);
        assert!(matches!(check_failover(&i, &d, SETTINGS), GuardrailVerdict::Refused { .. }));
    }

    #[test]
    fn an_evacuation_is_not_held_by_the_cooldown_only_by_the_minimum_interval() {
        // Sequence 1: failed back 2 minutes ago, the primary fails again.
        let i = input(sick("primary", 100), healthy("secondary", 0), Some(2 * MIN));
        let d = shift(&[("primary", 0), ("secondary", 100)], false);
        assert_eq!(applied_move(check_failover(&i, &d, SETTINGS)), Move::Evacuation);
        let i = input(sick("primary", 100), healthy("secondary", 0), Some(2_000));
        assert_eq!(
            refusals(check_failover(&i, &d, SETTINGS)),
            vec![Refusal::TooSoon { last_change_at_ms: NOW - 2_000, allowed_from_ms: NOW + 3_000 }]
        );
    }

    #[test]
    fn evacuating_a_sick_carrier_onto_a_target_that_just_recovered_is_allowed_even_with_manual_failback() {
        // Sequence 2: the secondary carries everything and fails; the primary has been up 2 minutes.
        let i = input(target("primary", 0, Health::Healthy, 2 * MIN), sick("secondary", 100), Some(3 * MIN));
        let d = shift(&[("primary", 100), ("secondary", 0)], false);
        let manual = GuardrailSettings { manual_failback: true, ..SETTINGS };
        assert_eq!(applied_move(check_failover(&i, &d, manual)), Move::Evacuation);
    }

    #[test]
    fn a_return_needs_the_hysteresis_the_cooldown_and_auto_failback() {
        let d = shift(&[("primary", 100), ("secondary", 0)], false);
        // Up for 4 minutes only (a health flap 4 minutes ago), last change long ago.
        let i = input(target("primary", 0, Health::Healthy, 4 * MIN), healthy("secondary", 100), Some(60 * MIN));
        assert_eq!(
            refusals(check_failover(&i, &d, SETTINGS)),
            vec![Refusal::NotProvenUp { set_identifier: "primary".into(), up_since_ms: Some(NOW - 4 * MIN) }]
        );
        // Proven up, but the last change was 3 minutes ago.
        let i = input(healthy("primary", 0), healthy("secondary", 100), Some(3 * MIN));
        let r = refusals(check_failover(&i, &d, SETTINGS));
        assert!(matches!(r.as_slice(), [Refusal::Cooldown { .. }]), "{r:?}");
        // Proven up, no recent change: a rebalance among proven targets goes through...
        let i = input(healthy("primary", 0), healthy("secondary", 100), Some(60 * MIN));
        assert_eq!(applied_move(check_failover(&i, &d, SETTINGS)), Move::Rebalance);
        // ...and a return with manual failback does not.
        let i = input(target("primary", 0, Health::Healthy, 4 * MIN), healthy("secondary", 100), Some(60 * MIN));
        let manual = GuardrailSettings { manual_failback: true, ..SETTINGS };
        let r = refusals(check_failover(&i, &d, manual));
        assert!(r.contains(&Refusal::ManualFailback { set_identifier: "primary".into() }), "{r:?}");
    }

    #[test]
    fn an_unproven_target_gets_no_traffic_back() {
        let mut unproven = healthy("primary", 0);
        unproven.alarm_state = AlarmState::InsufficientData;
        unproven.up_since_ms = None;
        let i = input(unproven, healthy("secondary", 100), None);
        let r = refusals(check_failover(&i, &shift(&[("primary", 100), ("secondary", 0)], false), SETTINGS));
        assert_eq!(r, vec![Refusal::NotProvenUp { set_identifier: "primary".into(), up_since_ms: None }]);
    }

    #[test]
    fn share_changes_compare_fractions_exactly() {
        use std::cmp::Ordering::*;
        assert_eq!(share_changes(&[100, 100], &[100, 0]), vec![Greater, Less]);
        assert_eq!(share_changes(&[1, 3], &[2, 6]), vec![Equal, Equal]);
        assert_eq!(share_changes(&[0, 0], &[0, 5]), vec![Less, Greater]);
        assert_eq!(share_changes(&[255, 0, 0], &[0, 0, 0]), vec![Less, Greater, Greater]);
    }

    #[test]
    fn a_drained_target_gets_no_traffic_from_automation_but_may_lose_it() {
        let inp = input(healthy("primary", 0), sick("secondary", 100), Some(60 * MIN));
        let onto_primary = check_failover(&inp, &shift(&[("primary", 100), ("secondary", 0)], false), SETTINGS);
        assert_eq!(applied_move(onto_primary.clone()), Move::Evacuation);
        let v = refuse_onto_drained(&inp.targets, onto_primary, &["primary"]);
        assert_eq!(refusals(v), vec![Refusal::Drained { set_identifier: "primary".into() }]);
        // Shedding a drained target's traffic is what draining asks for.
        let inp = input(healthy("primary", 100), healthy("secondary", 0), Some(60 * MIN));
        let off_primary = check_failover(&inp, &shift(&[("primary", 0), ("secondary", 100)], false), SETTINGS);
        assert!(matches!(refuse_onto_drained(&inp.targets, off_primary, &["primary"]), GuardrailVerdict::Apply { .. }));
    }

    #[test]
    fn a_stepped_shift_is_checked_as_its_first_step_and_bad_steps_are_refused() {
        let steps = |p: &[u8]| p.iter().map(|p| crate::PlanStep { percent: *p, bake_ms: 0 }).collect::<Vec<_>>();
        let stepped = |s: Vec<crate::PlanStep>| FailoverDecision {
            action: FailoverAction::ShiftInSteps {
                weights: vec![
                    Weight { set_identifier: "primary".into(), weight: 100 },
                    Weight { set_identifier: "secondary".into(), weight: 0 },
                ],
                steps: s,
            },
            reason: "return".into(),
            alerts: vec![],
        };
        let i = input(healthy("primary", 0), healthy("secondary", 100), Some(60 * MIN));
        let GuardrailVerdict::Apply { weights, kind, .. } = check_failover(&i, &stepped(steps(&[10, 50, 100])), SETTINGS) else {
            panic!("a proven return's first step applies")
        };
        assert_eq!(weights.iter().map(|w| w.weight).collect::<Vec<_>>(), vec![10, 90]);
        assert_eq!(kind, Move::Rebalance);
        let r = refusals(check_failover(&i, &stepped(steps(&[50, 10])), SETTINGS));
        assert!(matches!(&r[..], [Refusal::InvalidPlan { problem }] if problem.contains("must rise")), "{r:?}");
        // Its first step onto an unproven target is a return like any other.
        let mut fresh = healthy("primary", 0);
        fresh.up_since_ms = Some(NOW - MIN);
        let i = input(fresh, healthy("secondary", 100), Some(60 * MIN));
        let r = refusals(check_failover(&i, &stepped(steps(&[10, 100])), SETTINGS));
        assert!(matches!(&r[..], [Refusal::NotProvenUp { .. }]), "{r:?}");
    }
}
