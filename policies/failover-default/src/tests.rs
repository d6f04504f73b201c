//! One test per branch of [`decide`](super::decide).

use super::*;
use kbha_policy_sdk::types::{ConfigEntry, FailoverTrigger, Severity};

const NOW: i64 = 1_700_000_000_000;

fn target(id: &str, primary: bool, weight: u32, health: Health, alarm: AlarmState) -> Target {
    Target {
        set_identifier: id.into(),
        region: if primary { "us-east-1".into() } else { "us-west-2".into() },
        primary,
        weight,
        health,
        alarm_state: alarm,
        alarm_state_since: Some(NOW - 60_000),
        // Up for an hour when up, as the host would report after steady observations.
        up_since: (health != Health::Unhealthy && alarm == AlarmState::Ok).then_some(NOW - 3_600_000),
        last_down_at: None,
        replication_age_ms: Some(60_000),
    }
}

fn input(targets: Vec<Target>, config: &[(&str, &str)]) -> FailoverInput {
    FailoverInput {
        now: NOW,
        event_id: "evt-1".into(),
        trigger: FailoverTrigger::Schedule,
        record_name: "api.example.com".into(),
        targets,
        last_change: None,
        config: config.iter().map(|(k, v)| ConfigEntry { key: (*k).into(), value: (*v).into() }).collect(),
    }
}

fn primary_down() -> Target {
    target("primary", true, 100, Health::Unhealthy, AlarmState::Alarm)
}

fn secondary_ok() -> Target {
    target("secondary", false, 0, Health::Healthy, AlarmState::Ok)
}

fn weights(d: &FailoverDecision) -> Vec<(String, u32)> {
    match &d.action {
        FailoverAction::ShiftWeights(s) => s.weights.iter().map(|w| (w.set_identifier.clone(), w.weight)).collect(),
        // A stepped shift: where it ends.
        FailoverAction::ShiftInSteps(p) => p.weights.iter().map(|w| (w.set_identifier.clone(), w.weight)).collect(),
        FailoverAction::Hold => panic!("expected a shift, got hold: {}", d.reason),
    }
}

/// The steps of a stepped shift as (percent, bake ms); empty for a shift at once.
fn steps(d: &FailoverDecision) -> Vec<(u8, u64)> {
    match &d.action {
        FailoverAction::ShiftInSteps(p) => p.steps.iter().map(|s| (s.percent, s.bake_ms)).collect(),
        _ => vec![],
    }
}

fn assert_hold(d: &FailoverDecision) {
    assert!(matches!(d.action, FailoverAction::Hold), "expected hold, got {:?}", d.action);
}

fn severities(d: &FailoverDecision) -> Vec<Severity> {
    d.alerts.iter().map(|a| a.severity).collect()
}

fn ok(i: &FailoverInput) -> FailoverDecision {
    decide(i).expect("policy decides")
}

#[test]
fn primary_alarm_shifts_everything_to_the_healthy_secondary() {
    let d = ok(&input(vec![primary_down(), secondary_ok()], &[]));
    assert_eq!(weights(&d), vec![("primary".into(), 0), ("secondary".into(), 100)]);
    assert!(d.alerts.is_empty());
}

#[test]
fn primary_alarm_alone_is_down_even_when_health_check_passes() {
    let p = target("primary", true, 100, Health::Healthy, AlarmState::Alarm);
    let d = ok(&input(vec![p, secondary_ok()], &[("active_weight", "200")]));
    assert_eq!(weights(&d), vec![("primary".into(), 0), ("secondary".into(), 200)]);
}

#[test]
fn unhealthy_primary_with_ok_alarm_is_down() {
    let p = target("primary", true, 100, Health::Unhealthy, AlarmState::Ok);
    assert_eq!(weights(&ok(&input(vec![p, secondary_ok()], &[])))[1], ("secondary".into(), 100));
}

#[test]
fn shift_skips_unhealthy_secondaries_and_zeroes_the_others() {
    let bad = target("west", false, 0, Health::Unhealthy, AlarmState::Ok);
    let alarmed = target("central", false, 0, Health::Healthy, AlarmState::Alarm);
    let good = target("east2", false, 0, Health::Unknown, AlarmState::Ok);
    let d = ok(&input(vec![primary_down(), bad, alarmed, good], &[]));
    assert_eq!(weights(&d), vec![("primary".into(), 0), ("west".into(), 0), ("central".into(), 0), ("east2".into(), 100)]);
}

#[test]
fn both_unhealthy_holds_with_critical_alert() {
    let s = target("secondary", false, 0, Health::Unhealthy, AlarmState::Alarm);
    let d = ok(&input(vec![primary_down(), s], &[]));
    assert_hold(&d);
    assert_eq!(severities(&d), vec![Severity::Critical]);
    assert!(d.alerts[0].summary.contains("every target") && d.alerts[0].summary.contains("is down"), "{}", d.alerts[0].summary);
}

#[test]
fn insufficient_data_holds_with_warning() {
    let p = target("primary", true, 100, Health::Healthy, AlarmState::InsufficientData);
    let d = ok(&input(vec![p, secondary_ok()], &[]));
    assert_hold(&d);
    assert_eq!(severities(&d), vec![Severity::Warning]);
}

#[test]
fn rpo_gate_holds_with_critical_alert() {
    let mut s = secondary_ok();
    s.replication_age_ms = Some(3_600_001);
    let d = ok(&input(vec![primary_down(), s], &[]));
    assert_hold(&d);
    assert_eq!(severities(&d), vec![Severity::Critical]);
    assert!(d.reason.contains("RPO"), "{}", d.reason);
}

#[test]
fn replication_age_exactly_at_rpo_still_shifts() {
    let mut s = secondary_ok();
    s.replication_age_ms = Some(60_000);
    let d = ok(&input(vec![primary_down(), s], &[("rpo_s", "60")]));
    assert_eq!(weights(&d)[1], ("secondary".into(), 100));
}

#[test]
fn allow_data_loss_shifts_past_rpo_with_warning() {
    let mut s = secondary_ok();
    s.replication_age_ms = Some(7_200_000);
    let d = ok(&input(vec![primary_down(), s], &[("allow_data_loss", "true")]));
    assert_eq!(weights(&d)[1], ("secondary".into(), 100));
    assert_eq!(severities(&d), vec![Severity::Warning]);
}

#[test]
fn unknown_replication_age_shifts_with_warning() {
    let mut s = secondary_ok();
    s.replication_age_ms = None;
    let d = ok(&input(vec![primary_down(), s], &[]));
    assert_eq!(weights(&d)[1], ("secondary".into(), 100));
    assert_eq!(severities(&d), vec![Severity::Warning]);
    assert!(d.alerts[0].summary.contains("unknown"), "{}", d.alerts[0].summary);
}

#[test]
fn primary_down_without_traffic_holds_quietly() {
    let mut p = primary_down();
    p.weight = 0;
    let mut s = secondary_ok();
    s.weight = 100;
    let d = ok(&input(vec![p, s], &[]));
    assert_hold(&d);
    assert!(d.alerts.is_empty());
}

fn recovered_primary(since_ms_ago: Option<i64>) -> Vec<Target> {
    let mut p = target("primary", true, 0, Health::Healthy, AlarmState::Ok);
    p.up_since = since_ms_ago.map(|ago| NOW - ago);
    let mut s = secondary_ok();
    s.weight = 100;
    vec![p, s]
}

#[test]
fn failback_after_hysteresis() {
    let d = ok(&input(recovered_primary(Some(600_000)), &[]));
    assert_eq!(weights(&d), vec![("primary".into(), 100), ("secondary".into(), 0)]);
}

#[test]
fn failback_goes_in_the_guide_steps_by_default_and_at_once_with_return_steps_100() {
    let d = ok(&input(recovered_primary(Some(600_000)), &[]));
    assert_eq!(steps(&d), [10, 25, 50, 75, 100].map(|p| (p, 300_000)).to_vec());
    assert!(d.reason.contains("in steps of 10/25/50/75/100 % (5m 0s each)"), "{}", d.reason);
    let d = ok(&input(recovered_primary(Some(600_000)), &[("return_steps", "20,100"), ("return_bake_s", "60")]));
    assert_eq!(steps(&d), vec![(20, 60_000), (100, 60_000)]);
    let d = ok(&input(recovered_primary(Some(600_000)), &[("return_steps", "100")]));
    assert!(matches!(d.action, FailoverAction::ShiftWeights(_)), "{:?}", d.action);
    assert_eq!(weights(&d)[0], ("primary".into(), 100));
}

#[test]
fn return_steps_that_do_not_rise_to_100_are_refused_naming_the_key() {
    for bad in ["50,25,100", "10,50", "0,100", "ten,100", ""] {
        let e = decide(&input(recovered_primary(Some(600_000)), &[("return_steps", bad)])).expect_err(bad);
        assert!(matches!(&e, PolicyError::InvalidConfig(m) if m.contains("`return_steps`")), "{bad}: {e:?}");
    }
}

#[test]
fn failback_waits_for_hysteresis_and_says_how_long() {
    let d = ok(&input(recovered_primary(Some(30_000)), &[]));
    assert_hold(&d);
    assert!(d.reason.contains("waiting for hysteresis"), "{}", d.reason);
    assert!(d.reason.contains("9m 30s"), "{}", d.reason);
}

#[test]
fn failback_with_unknown_since_waits() {
    let d = ok(&input(recovered_primary(None), &[]));
    assert_hold(&d);
    assert!(d.reason.contains("waiting for hysteresis"), "{}", d.reason);
}

#[test]
fn manual_failback_holds_with_info() {
    let d = ok(&input(recovered_primary(Some(86_400_000)), &[("failback", "manual")]));
    assert_hold(&d);
    assert_eq!(severities(&d), vec![Severity::Info]);
}

#[test]
fn custom_hysteresis_is_honoured() {
    let d = ok(&input(recovered_primary(Some(30_000)), &[("hysteresis_s", "30")]));
    assert_eq!(weights(&d)[0], ("primary".into(), 100));
}

#[test]
fn healthy_primary_carrying_traffic_holds() {
    let p = target("primary", true, 100, Health::Healthy, AlarmState::Ok);
    let d = ok(&input(vec![p, secondary_ok()], &[]));
    assert_hold(&d);
    assert!(d.alerts.is_empty());
}

#[test]
fn no_primary_is_invalid_input() {
    let r = decide(&input(vec![secondary_ok()], &[]));
    assert!(matches!(r, Err(PolicyError::InvalidInput(m)) if m.contains("no target")));
}

#[test]
fn two_primaries_is_invalid_input() {
    let mut other = primary_down();
    other.set_identifier = "primary-2".into();
    let r = decide(&input(vec![primary_down(), other, secondary_ok()], &[]));
    assert!(matches!(r, Err(PolicyError::InvalidInput(m)) if m.contains("more than one")));
}

#[test]
fn malformed_config_is_refused_naming_the_key() {
    for (k, v) in [("rpo_s", "1h"), ("failback", "sometimes"), ("allow_data_loss", "perhaps"), ("active_weight", "300")] {
        let r = decide(&input(vec![primary_down(), secondary_ok()], &[(k, v)]));
        assert!(matches!(&r, Err(PolicyError::InvalidConfig(m)) if m.contains(&format!("`{k}`"))), "{k}={v}: {r:?}");
    }
}

// ------------------------------------------------ incident sequences (issue 15)

/// Sequence 1: the primary fails again two minutes after a failback. The policy
/// evacuates at once (the host's guardrails do not hold an evacuation by the cooldown).
#[test]
fn a_primary_that_fails_again_soon_after_failback_is_evacuated_at_once() {
    let mut p = primary_down();
    p.last_down_at = Some(NOW);
    let mut i = input(vec![p, secondary_ok()], &[]);
    i.last_change = Some(kbha_policy_sdk::types::LastChange { at: NOW - 120_000, weights: vec![], reason: "failback".into() });
    assert_eq!(weights(&ok(&i)), vec![("primary".into(), 0), ("secondary".into(), 100)]);
}

/// Sequence 2: the secondary carries everything and fails while the primary recovered
/// only two minutes ago: evacuate to the primary now, hysteresis and manual failback
/// notwithstanding.
#[test]
fn a_failing_secondary_is_evacuated_onto_a_freshly_recovered_primary_even_with_manual_failback() {
    let mut p = target("primary", true, 0, Health::Healthy, AlarmState::Ok);
    p.up_since = Some(NOW - 120_000);
    let s = target("secondary", false, 100, Health::Unhealthy, AlarmState::Alarm);
    for config in [&[][..], &[("failback", "manual")][..]] {
        let d = ok(&input(vec![p.clone(), s.clone()], config));
        assert_eq!(weights(&d), vec![("primary".into(), 100), ("secondary".into(), 0)], "{config:?}");
        assert!(d.reason.contains("evacuating"), "{}", d.reason);
    }
}

/// Sequence 3 is the host's (a lost OK event no longer matters once it reads CloudWatch);
/// for the policy it is a recovered primary whose alarm has been OK for hours: it fails
/// back when `up_since` allows, whatever the trigger.
#[test]
fn a_primary_up_for_hours_fails_back_on_a_tick() {
    let d = ok(&input(recovered_primary(Some(4 * 3_600_000)), &[]));
    assert_eq!(weights(&d)[0], ("primary".into(), 100));
}

/// Sequence 4: a health flap that never tripped the alarm. The alarm has been OK for
/// days, but `up_since` restarted at the flap: no failback until the hysteresis from it.
#[test]
fn a_health_flap_restarts_the_hysteresis_although_the_alarm_stayed_ok() {
    let mut ps = recovered_primary(Some(60_000));
    ps[0].alarm_state_since = Some(NOW - 5 * 86_400_000);
    ps[0].last_down_at = Some(NOW - 90_000);
    let d = ok(&input(ps, &[]));
    assert_hold(&d);
    assert!(d.reason.contains("9m 0s remaining"), "{}", d.reason);
}

/// Sequence 5: INSUFFICIENT_DATA on the alarm does not hide a failing health check.
#[test]
fn insufficient_data_with_a_failing_health_check_is_down() {
    let p = target("primary", true, 100, Health::Unhealthy, AlarmState::InsufficientData);
    assert_eq!(weights(&ok(&input(vec![p, secondary_ok()], &[]))), vec![("primary".into(), 0), ("secondary".into(), 100)]);
}

/// Sequence 6: the regions fail one after the other; the second failure is as critical
/// as both failing at once.
#[test]
fn the_second_region_failing_after_the_first_is_critical() {
    let mut p = target("primary", true, 0, Health::Unhealthy, AlarmState::Alarm);
    p.last_down_at = Some(NOW);
    let s = target("secondary", false, 100, Health::Unhealthy, AlarmState::Alarm);
    let d = ok(&input(vec![p, s], &[]));
    assert_hold(&d);
    assert_eq!(severities(&d), vec![Severity::Critical]);
}

/// Sequence 7 (the policy's side): at 100/100 with the primary down, the policy moves
/// everything off it rather than touching the healthy side.
#[test]
fn at_even_weights_a_down_primary_is_drained() {
    let mut s = secondary_ok();
    s.weight = 100;
    assert_eq!(weights(&ok(&input(vec![primary_down(), s], &[]))), vec![("primary".into(), 0), ("secondary".into(), 100)]);
}

/// More than two targets: the best healthy target within the RPO wins, not the first.
#[test]
fn with_three_targets_the_best_candidate_within_the_rpo_wins() {
    let mut stale = target("west", false, 0, Health::Healthy, AlarmState::Ok);
    stale.replication_age_ms = Some(7_200_000);
    let mut fresh_but_new = target("central", false, 0, Health::Healthy, AlarmState::Ok);
    fresh_but_new.up_since = Some(NOW - 60_000);
    let steady = target("east2", false, 0, Health::Healthy, AlarmState::Ok);
    let d = ok(&input(vec![primary_down(), stale, fresh_but_new, steady], &[]));
    assert_eq!(weights(&d)[3], ("east2".into(), 100), "{}", d.reason);
    // Unproven targets come after up ones, but before nothing.
    let mut unproven = target("west", false, 0, Health::Healthy, AlarmState::InsufficientData);
    unproven.up_since = None;
    let d = ok(&input(vec![primary_down(), unproven], &[]));
    assert_eq!(weights(&d)[1], ("west".into(), 100));
    assert!(severities(&d).contains(&Severity::Warning), "{:?}", d.alerts);
}

/// A secondary carrying traffic with insufficient data and a healthy check holds.
#[test]
fn an_unproven_carrier_holds_with_a_warning() {
    let p = target("primary", true, 0, Health::Healthy, AlarmState::Ok);
    let s = target("secondary", false, 100, Health::Healthy, AlarmState::InsufficientData);
    let d = ok(&input(vec![p, s], &[]));
    assert_hold(&d);
    assert_eq!(severities(&d), vec![Severity::Warning]);
}

#[test]
fn durations_read_naturally() {
    assert_eq!(fmt_secs(45), "45s");
    assert_eq!(fmt_secs(570), "9m 30s");
    assert_eq!(fmt_secs(7260), "2h 1m");
}
