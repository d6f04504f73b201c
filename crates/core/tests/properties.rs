//! Property tests (proptest; the `cargo fuzz` targets in `fuzz/` cover the same ground
//! with coverage guidance, see scripts/fuzz.sh): hostile inputs to the pure core never
//! panic, and the guardrails keep their promises for every decision a policy could return.
//!
//! Each property prints how many inputs it ran, for RELIABILITY.md. The seed corpus is
//! the real payloads in `samples/events/`, mutated node by node; a failure prints the
//! shrunk input, to be added there as a fixture.

use kbha_core::backup_events::{decode_key, encode_key, normalise_backup_event};
use kbha_core::events::normalise_failover_event;
use kbha_core::guardrails::{GuardrailSettings, check_failover};

#[path = "../../../fuzz/src/bodies.rs"]
#[allow(dead_code)]
mod bodies;
use kbha_core::{AlarmState, FailoverAction, FailoverDecision, FailoverInput, FailoverTrigger, Health, LastChange, Target, Weight};
use proptest::prelude::*;
use serde_json::Value;

const CASES: u32 = 20_000;

use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Runs `test` on `CASES` inputs from `strategy`; panics with the shrunk failing input.
fn check<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    println!("{name}: {CASES} generated inputs, all passed");
}

/// Arbitrary JSON, a few levels deep, biased towards the keys AWS events use so the
/// normalisers get past their first checks.
fn json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("Records".to_owned()),
        Just("Sns".to_owned()),
        Just("Message".to_owned()),
        Just("s3".to_owned()),
        Just("detail-type".to_owned()),
        Just("detail".to_owned()),
        Just("alarmData".to_owned()),
        Just("eventName".to_owned()),
        Just("eventTime".to_owned()),
        Just("time".to_owned()),
        Just("id".to_owned()),
        Just("key".to_owned()),
        "[a-zA-Z]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("ObjectCreated:Put".to_owned()),
            Just("Scheduled Event".to_owned()),
            Just("Object Created".to_owned()),
            Just("CloudWatch Alarm State Change".to_owned()),
            Just("2026-11-26T10:00:00Z".to_owned()),
            Just("ALARM".to_owned()),
            ".{0,24}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../samples/events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Replaces the `n`-th node (pre-order) of `v` with `with`.
fn replace_nth(v: &mut Value, n: &mut usize, with: &Value) -> bool {
    if *n == 0 {
        *v = with.clone();
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(items) => items.iter_mut().any(|i| replace_nth(i, n, with)),
        Value::Object(map) => map.values_mut().any(|i| replace_nth(i, n, with)),
        _ => false,
    }
}

#[test]
fn normalisers_never_panic_on_arbitrary_json() {
    check("arbitrary JSON events", json(), |event| {
        let _ = normalise_failover_event(&event);
        let _ = normalise_backup_event(&event);
        Ok(())
    });
}

/// Real payloads with one node replaced by arbitrary JSON: still no panic.
#[test]
fn mutated_real_payloads_never_panic() {
    let names = [
        "cloudwatch-alarm-sns.json",
        "cloudwatch-alarm-eventbridge.json",
        "cloudwatch-alarm-action-metric.json",
        "cloudwatch-alarm-action-composite.json",
        "eventbridge-scheduled.json",
        "s3-object-created.json",
        "s3-object-created-sns.json",
        "s3-object-created-eventbridge.json",
    ];
    let seeds: Vec<Value> = names.iter().map(|n| fixture(n)).collect();
    check("mutated real payloads", (0..seeds.len(), 0usize..64, json()), |(which, at, with)| {
        let mut event = seeds[which].clone();
        let mut n = at;
        replace_nth(&mut event, &mut n, &with);
        let _ = normalise_failover_event(&event);
        let _ = normalise_backup_event(&event);
        Ok(())
    });
}

/// Keys: encoding then decoding gives the key back; decoding anything never panics.
#[test]
fn key_encoding_round_trips_and_decoding_never_panics() {
    check("S3 keys", (".{0,40}", "[%+a-fA-F0-9 ./\\PC]{0,40}"), |(key, raw)| {
        prop_assert_eq!(decode_key(&encode_key(&key)), Ok(key));
        let _ = decode_key(&raw);
        Ok(())
    });
}

/// No verdict breaks a guardrail promise (`fuzz/src/bodies.rs`'s checker, shared with the
/// fuzz target): no all-zero weights, nothing over 255, no share raised onto a down target
/// without break-glass force, the minimum interval always and the cooldown unless it is
/// an evacuation, returns only onto targets up for the hysteresis.
#[test]
fn guardrails_never_apply_an_unsafe_change() {
    let strategy = (
        // Current weights come from Route 53, which keeps them in 0..=255; then health,
        // alarm state and how long the target has been up.
        prop::collection::vec((0u32..=255, 0u8..3, 0u8..4, prop::option::of(0i64..2_000_000)), 1..5),
        prop::collection::vec((0usize..6, 0u32..300), 0..6),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (0i64..1_000_000, 0i64..10_000, 0i64..1_000_000),
        prop::option::of(0i64..2_000_000),
    );
    check(
        "guardrail decisions",
        strategy,
        |(targets, asked, (force, break_glass, manual_failback), (cooldown_ms, min_interval_ms, hysteresis_ms), last_change_ago)| {
            let now_ms = 10_000_000;
            let health = |h: u8| match h {
                0 => Health::Healthy,
                1 => Health::Unhealthy,
                _ => Health::Unknown,
            };
            let alarm = |a: u8| match a {
                0 => AlarmState::Alarm,
                1 => AlarmState::InsufficientData,
                _ => AlarmState::Ok,
            };
            let input = FailoverInput {
                now_ms,
                event_id: "e".into(),
                trigger: FailoverTrigger::Schedule,
                record_name: "api.example.com.".into(),
                targets: targets
                    .iter()
                    .enumerate()
                    .map(|(i, (w, h, a, up_for))| Target {
                        set_identifier: format!("t{i}"),
                        region: format!("r{i}"),
                        primary: i == 0,
                        weight: *w,
                        health: health(*h),
                        alarm_state: alarm(*a),
                        alarm_state_since_ms: None,
                        up_since_ms: up_for.map(|ago| now_ms - ago),
                        last_down_at_ms: None,
                        replication_age_ms: None,
                    })
                    .collect(),
                last_change: last_change_ago.map(|ago| LastChange { at_ms: now_ms - ago, weights: vec![], reason: String::new() }),
                config: Default::default(),
            };
            let decision = FailoverDecision {
                action: FailoverAction::ShiftWeights {
                    weights: asked.iter().map(|(i, w)| Weight { set_identifier: format!("t{i}"), weight: *w }).collect(),
                    force,
                },
                reason: "property".into(),
                alerts: vec![],
            };
            let settings = GuardrailSettings { cooldown_ms, min_interval_ms, hysteresis_ms, manual_failback, break_glass };
            let verdict = check_failover(&input, &decision, settings);
            if let Err(broken) = bodies::check_guardrail_verdict(&input, &decision, settings, &verdict) {
                return Err(TestCaseError::fail(format!("{broken}: {verdict:?}")));
            }
            Ok(())
        },
    );
}
