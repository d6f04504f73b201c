//! Replays the committed `cargo fuzz` corpus (`fuzz/corpus/<target>/`) through the same
//! target bodies the fuzzer runs (`fuzz/src/bodies.rs`), so a regression on any seed or
//! on any crash input added there fails the ordinary `cargo test` on stable, without
//! the fuzzer. The alert router's target is replayed in `functions/alert-router/tests/`.

// `alert_message` is replayed by the alert router's tests, so unused here.
#[allow(dead_code)]
#[path = "../../../fuzz/src/bodies.rs"]
mod bodies;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()).unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no corpus", dir.display());
    files
}

/// Runs `body` on every corpus file of `target`, naming the file that fails.
fn replay(target: &str, body: fn(&[u8])) {
    let files = corpus(target);
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = std::panic::catch_unwind(|| body(&data)) {
            let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()));
            panic!("{target}: {} fails: {}", path.display(), why.unwrap_or_default());
        }
    }
    println!("{target}: {} corpus inputs replayed", files.len());
}

#[test]
fn failover_event_corpus() {
    replay("failover_event", bodies::failover_event);
}

#[test]
fn backup_event_corpus() {
    replay("backup_event", bodies::backup_event);
}

#[test]
fn s3_key_corpus() {
    replay("s3_key", bodies::s3_key);
}

#[test]
fn timestamp_corpus() {
    replay("timestamp", bodies::timestamp);
}

#[test]
fn guardrails_corpus() {
    replay("guardrails", bodies::guardrails);
}

#[test]
fn policy_decision_corpus() {
    replay("policy_decision", bodies::policy_decision);
}

/// The guardrail property can fail: verdicts the guardrails must never return (every
/// weight 0, traffic onto an unhealthy target, an "apply" that changes nothing) are caught.
#[test]
fn the_guardrail_property_rejects_an_unsafe_verdict() {
    use kbha_core::guardrails::{GuardrailSettings, GuardrailVerdict, Move};
    use kbha_core::{FailoverAction, FailoverDecision, FailoverInput, FailoverTrigger, Health, Target, Weight};
    let target = |id: &str, weight, health| Target {
        set_identifier: id.into(),
        region: "r".into(),
        primary: id == "a",
        weight,
        health,
        alarm_state: kbha_core::AlarmState::Ok,
        alarm_state_since_ms: None,
        up_since_ms: Some(0),
        last_down_at_ms: None,
        replication_age_ms: None,
    };
    let input = FailoverInput {
        now_ms: 0,
        event_id: "e".into(),
        trigger: FailoverTrigger::Schedule,
        record_name: "r.".into(),
        targets: vec![target("a", 100, Health::Healthy), target("b", 0, Health::Unhealthy)],
        last_change: None,
        config: Default::default(),
    };
    let decision =
        FailoverDecision { action: FailoverAction::ShiftWeights { weights: vec![], force: false }, reason: String::new(), alerts: vec![] };
    let settings = GuardrailSettings { cooldown_ms: 0, min_interval_ms: 0, hysteresis_ms: 0, manual_failback: false, break_glass: false };
    let weights = |a, b| vec![Weight { set_identifier: "a".into(), weight: a }, Weight { set_identifier: "b".into(), weight: b }];
    for unsafe_verdict in [
        GuardrailVerdict::Apply { weights: weights(0, 0), forced: false, kind: Move::Rebalance },
        GuardrailVerdict::Apply { weights: weights(0, 100), forced: false, kind: Move::Rebalance },
        GuardrailVerdict::Apply { weights: weights(100, 0), forced: false, kind: Move::Rebalance },
    ] {
        assert!(bodies::check_guardrail_verdict(&input, &decision, settings, &unsafe_verdict).is_err(), "{unsafe_verdict:?} passed");
    }
}
