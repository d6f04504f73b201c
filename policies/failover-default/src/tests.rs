//! One test per branch of [`decide`](super::decide).

use super::*;
use kbha_policy_sdk::types::{ConfigEntry, FailoverTrigger, Severity};

const NOW: i64 = 1_700_000_000_000;

fn target(id: &str, primary: bool, weight: u32, health: Health, alarm: AlarmState) -> Target {
    Target {
        set_identifier: id.into(),
        region: if primary {
            "us-east-1".into()
        } else {
            "us-west-2".into()
        },
        primary,
        weight,
        health,
        alarm_state: alarm,
        alarm_state_since: Some(NOW - 60_000),
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
        config: config
            .iter()
            .map(|(k, v)| ConfigEntry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
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
        FailoverAction::ShiftWeights(s) => s
            .weights
            .iter()
            .map(|w| (w.set_identifier.clone(), w.weight))
            .collect(),
        FailoverAction::Hold => panic!("expected a shift, got hold: {}", d.reason),
    }
}

fn assert_hold(d: &FailoverDecision) {
    assert!(
        matches!(d.action, FailoverAction::Hold),
        "expected hold, got {:?}",
        d.action
    );
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
    assert_eq!(
        weights(&d),
        vec![("primary".into(), 0), ("secondary".into(), 100)]
    );
    assert!(d.alerts.is_empty());
}

#[test]
fn primary_alarm_alone_is_down_even_when_health_check_passes() {
    let p = target("primary", true, 100, Health::Healthy, AlarmState::Alarm);
    let d = ok(&input(vec![p, secondary_ok()], &[("active_weight", "200")]));
    assert_eq!(
        weights(&d),
        vec![("primary".into(), 0), ("secondary".into(), 200)]
    );
}

#[test]
fn unhealthy_primary_with_ok_alarm_is_down() {
    let p = target("primary", true, 100, Health::Unhealthy, AlarmState::Ok);
    assert_eq!(
        weights(&ok(&input(vec![p, secondary_ok()], &[])))[1],
        ("secondary".into(), 100)
    );
}

#[test]
fn shift_skips_unhealthy_secondaries_and_zeroes_the_others() {
    let bad = target("west", false, 0, Health::Unhealthy, AlarmState::Ok);
    let alarmed = target("central", false, 0, Health::Healthy, AlarmState::Alarm);
    let good = target("east2", false, 0, Health::Unknown, AlarmState::Ok);
    let d = ok(&input(vec![primary_down(), bad, alarmed, good], &[]));
    assert_eq!(
        weights(&d),
        vec![
            ("primary".into(), 0),
            ("west".into(), 0),
            ("central".into(), 0),
            ("east2".into(), 100)
        ]
    );
}

#[test]
fn both_unhealthy_holds_with_critical_alert() {
    let s = target("secondary", false, 0, Health::Unhealthy, AlarmState::Alarm);
    let d = ok(&input(vec![primary_down(), s], &[]));
    assert_hold(&d);
    assert_eq!(severities(&d), vec![Severity::Critical]);
    assert!(
        d.alerts[0].summary.contains("both regions unhealthy"),
        "{}",
        d.alerts[0].summary
    );
}

#[test]
fn insufficient_data_holds_with_warning() {
    let p = target(
        "primary",
        true,
        100,
        Health::Healthy,
        AlarmState::InsufficientData,
    );
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
    let d = ok(&input(
        vec![primary_down(), s],
        &[("allow_data_loss", "true")],
    ));
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
    assert!(
        d.alerts[0].summary.contains("unknown"),
        "{}",
        d.alerts[0].summary
    );
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
    p.alarm_state_since = since_ms_ago.map(|ago| NOW - ago);
    let mut s = secondary_ok();
    s.weight = 100;
    vec![p, s]
}

#[test]
fn failback_after_hysteresis() {
    let d = ok(&input(recovered_primary(Some(600_000)), &[]));
    assert_eq!(
        weights(&d),
        vec![("primary".into(), 100), ("secondary".into(), 0)]
    );
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
    let d = ok(&input(
        recovered_primary(Some(86_400_000)),
        &[("failback", "manual")],
    ));
    assert_hold(&d);
    assert_eq!(severities(&d), vec![Severity::Info]);
}

#[test]
fn custom_hysteresis_is_honoured() {
    let d = ok(&input(
        recovered_primary(Some(30_000)),
        &[("hysteresis_s", "30")],
    ));
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
    for (k, v) in [
        ("rpo_s", "1h"),
        ("failback", "sometimes"),
        ("allow_data_loss", "perhaps"),
        ("active_weight", "300"),
    ] {
        let r = decide(&input(vec![primary_down(), secondary_ok()], &[(k, v)]));
        assert!(
            matches!(&r, Err(PolicyError::InvalidConfig(m)) if m.contains(&format!("`{k}`"))),
            "{k}={v}: {r:?}"
        );
    }
}

#[test]
fn durations_read_naturally() {
    assert_eq!(fmt_secs(45), "45s");
    assert_eq!(fmt_secs(570), "9m 30s");
    assert_eq!(fmt_secs(7260), "2h 1m");
}
