//! Bodies of the `cargo fuzz` targets, one function per target, each taking the raw
//! fuzz input and panicking when a property fails. Shared by the libFuzzer binaries in
//! `fuzz/fuzz_targets/` and by `crates/core/tests/fuzz_corpus.rs` (and the alert
//! router's), which replay the committed corpus in the ordinary `cargo test` on stable.
//! Depends on `kbha-core` and `serde_json` only, so both can include it by path.

use kbha_core::backup_events::{BackupEvent, decode_key, encode_key, normalise_backup_event};
use kbha_core::events::{FailoverEvent, normalise_failover_event};
use kbha_core::guardrails::{GuardrailSettings, GuardrailVerdict, MAX_WEIGHT, Move, check_failover, classify, share_changes};
use kbha_core::time::{format_timestamp, parse_timestamp};
use kbha_core::{
    AlarmState, AlertDecision, Condition, FailoverAction, FailoverDecision, FailoverInput, FailoverTrigger, Health, IncomingAlert,
    LastChange, ReplicationDecision, Target, TimestampMs, Weight,
};
use serde_json::Value;

/// Milliseconds of 9999-12-31T23:59:59.999Z: the last instant a 4-digit year can name.
const LAST_FORMATTABLE_MS: TimestampMs = 253_402_300_799_999;

/// A timestamp the parser accepted formats back to the same instant (for the years
/// `format_timestamp` can write with four digits).
fn assert_timestamp_round_trips(ms: TimestampMs) {
    if (0..=LAST_FORMATTABLE_MS).contains(&ms) {
        let text = format_timestamp(ms);
        assert_eq!(parse_timestamp(&text), Ok(ms), "{ms} formats as `{text}`, which does not parse back");
    }
}

/// Failover events in every accepted shape (SNS, EventBridge alarm, alarm action,
/// schedule): normalising never panics, is deterministic, and what it accepts is usable
/// (at least one alarm, timestamps that format back to themselves).
pub fn failover_event(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Value>(data) else { return };
    let result = normalise_failover_event(&event);
    assert_eq!(result, normalise_failover_event(&event), "normalising twice gave two answers");
    match result {
        Ok(FailoverEvent::Alarms(alarms)) => {
            assert!(!alarms.is_empty(), "an accepted alarm event carries no alarm");
            for a in &alarms {
                assert!(a.alarm.target.is_none(), "the normaliser set a target; configuration maps it");
                assert_timestamp_round_trips(a.alarm.state_changed_at_ms);
            }
        }
        Ok(FailoverEvent::Schedule { at_ms, .. }) => assert_timestamp_round_trips(at_ms),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Backup events (S3 direct, SNS-wrapped, EventBridge, schedule, restore test): never panics, is
/// deterministic, and every accepted object has a decoded key that re-encodes to the
/// same key and an event id naming bucket and key.
pub fn backup_event(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Value>(data) else { return };
    let result = normalise_backup_event(&event);
    assert_eq!(result, normalise_backup_event(&event), "normalising twice gave two answers");
    match result {
        Ok(BackupEvent::Objects { created, .. }) => {
            for o in &created {
                assert_eq!(decode_key(&encode_key(&o.key)).as_deref(), Ok(o.key.as_str()));
                let prefix = format!("s3://{}/{}@", o.bucket, o.key);
                assert!(o.event_id.starts_with(&prefix), "event id `{}` does not start with `{prefix}`", o.event_id);
                assert!(o.etag.as_deref().is_none_or(|e| !e.starts_with('"') && !e.ends_with('"')), "quoted etag {:?}", o.etag);
                assert_timestamp_round_trips(o.at_ms);
            }
        }
        Ok(BackupEvent::Schedule { at_ms, .. }) => assert_timestamp_round_trips(at_ms),
        // The id names the run's record: never empty, nor the source.
        Ok(BackupEvent::RestoreTest { event_id, source }) => assert!(!event_id.is_empty() && source.is_none_or(|s| !s.is_empty())),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// S3 key decoding: never panics; encoding any key gives only the characters S3 uses
/// and decodes back to the key; a decoded key re-encodes and decodes to itself.
pub fn s3_key(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(key) = decode_key(&text) {
        assert_eq!(decode_key(&encode_key(&key)).as_deref(), Ok(key.as_str()));
    }
    let encoded = encode_key(&text);
    assert!(
        encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~/+%".contains(&b)),
        "`{encoded}` has a character S3 would have escaped"
    );
    assert_eq!(decode_key(&encoded).as_deref(), Ok(&*text));
}

/// Timestamps as AWS writes them in every event shape: parsing never panics, an
/// accepted timestamp formats back to the same instant, and a UTC timestamp without a
/// leap second names the same calendar date and time it was written with (an impossible
/// date such as 2026-02-31 is refused, not moved to another day).
pub fn timestamp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(ms) = parse_timestamp(text) else { return };
    assert_timestamp_round_trips(ms);
    let utc = text.len() == 20 && text.ends_with(['Z', 'z']);
    if utc && text.get(17..19) != Some("60") {
        let formatted = format_timestamp(ms);
        assert_eq!(formatted.get(..19), text.get(..19).map(|t| t.replacen(' ', "T", 1)).as_deref(), "`{text}` parsed as {ms}");
    }
}

/// Reads fuzz bytes as a stream of small numbers; zeros once exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    fn health(&mut self) -> Health {
        match self.u8() % 3 {
            0 => Health::Healthy,
            1 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }
}

/// A record set of 1..=4 targets `t0..t3` with weights Route 53 can hold (0..=255).
fn record_set(b: &mut Bytes<'_>) -> FailoverInput {
    let now_ms = 10_000_000_000;
    let n = usize::from(b.u8() % 4) + 1;
    let targets = (0..n)
        .map(|i| Target {
            set_identifier: format!("t{i}"),
            region: format!("r{i}"),
            primary: i == 0,
            weight: u32::from(b.u8()),
            health: b.health(),
            alarm_state: match b.u8() % 4 {
                0 => AlarmState::Alarm,
                1 => AlarmState::InsufficientData,
                _ => AlarmState::Ok,
            },
            alarm_state_since_ms: None,
            up_since_ms: b.bool().then(|| now_ms - i64::from(b.u32())),
            last_down_at_ms: None,
            replication_age_ms: None,
        })
        .collect();
    let last_change = b.bool().then(|| LastChange { at_ms: now_ms - i64::from(b.u32()), weights: vec![], reason: String::new() });
    FailoverInput {
        now_ms,
        event_id: "fuzz".into(),
        trigger: FailoverTrigger::Schedule,
        record_name: "api.example.com.".into(),
        targets,
        last_change,
        config: Default::default(),
    }
}

/// Fails with the broken promise unless `cond`.
fn ensure(cond: bool, broken: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(broken()) }
}

/// The guardrails' promises for one verdict: an applied change names every target once,
/// keeps some traffic, stays within 0..=255, raises the share of no down target unless
/// forced under break-glass, changes something, respects the minimum interval, and unless
/// it is an evacuation the cooldown, and unless forced returns only onto targets up for
/// the hysteresis (never with manual failback); a refusal says why; "no change" really
/// changes nothing. `Err` names the broken promise.
pub fn check_guardrail_verdict(
    input: &FailoverInput,
    decision: &FailoverDecision,
    settings: GuardrailSettings,
    verdict: &GuardrailVerdict,
) -> Result<(), String> {
    match verdict {
        GuardrailVerdict::Apply { weights, forced, kind } => {
            ensure(weights.len() == input.targets.len(), || format!("not one weight per target: {weights:?}"))?;
            ensure(weights.iter().any(|w| w.weight > 0), || format!("every weight is 0: {weights:?}"))?;
            ensure(weights.iter().all(|w| w.weight <= MAX_WEIGHT), || format!("weight out of range: {weights:?}"))?;
            let force = matches!(decision.action, FailoverAction::ShiftWeights { force: true, .. });
            let old: Vec<u32> = input.targets.iter().map(|t| t.weight).collect();
            let changes = share_changes(&old, &weights.iter().map(|w| w.weight).collect::<Vec<_>>());
            for ((t, w), change) in input.targets.iter().zip(weights).zip(&changes) {
                ensure(t.set_identifier == w.set_identifier, || format!("weights out of record-set order: {weights:?}"))?;
                if change.is_gt() && t.condition() == Condition::Down {
                    ensure(*forced && force && settings.break_glass, || format!("traffic share raised onto down `{}`", t.set_identifier))?;
                }
                if change.is_gt() && *kind != Move::Evacuation {
                    ensure(!settings.manual_failback || t.up_for(settings.hysteresis_ms, input.now_ms), || {
                        "returned with manual failback".into()
                    })?;
                    ensure(*forced || t.up_for(settings.hysteresis_ms, input.now_ms), || {
                        format!("returned onto unproven `{}`", t.set_identifier)
                    })?;
                }
            }
            ensure(*kind == classify(&input.targets, weights, settings.hysteresis_ms, input.now_ms), || "move misclassified".into())?;
            ensure(input.targets.iter().zip(weights).any(|(t, w)| t.weight != w.weight), || {
                "applied a change that changes nothing".into()
            })?;
            if let Some(last) = &input.last_change {
                ensure(input.now_ms >= last.at_ms.saturating_add(settings.min_interval_ms), || {
                    "applied inside the minimum interval".into()
                })?;
                if *kind != Move::Evacuation {
                    ensure(input.now_ms >= last.at_ms.saturating_add(settings.cooldown_ms), || "applied inside the cooldown".into())?;
                }
            }
        }
        GuardrailVerdict::Refused { refusals } => ensure(!refusals.is_empty(), || "refused without a reason".into())?,
        GuardrailVerdict::NoChange => {
            if let FailoverAction::ShiftInSteps { weights, steps } = &decision.action {
                let p = steps.first().map_or(100, |s| s.percent.clamp(1, 100));
                for w in weights {
                    let current = input.targets.iter().find(|t| t.set_identifier == w.set_identifier).map(|t| t.weight);
                    let first = current.map(|c| kbha_core::plan::step_value(c, w.weight, p));
                    ensure(current == first, || format!("`no change` for a stepped shift whose first step asks for {w:?}"))?;
                }
            }
            if let FailoverAction::ShiftWeights { weights, .. } = &decision.action {
                for w in weights {
                    let current = input.targets.iter().find(|t| t.set_identifier == w.set_identifier).map(|t| t.weight);
                    ensure(current == Some(w.weight), || format!("`no change` for a decision that asks for {w:?}"))?;
                }
            }
        }
    }
    Ok(())
}

/// Guardrail settings from fuzz bytes.
fn settings(b: &mut Bytes<'_>) -> GuardrailSettings {
    GuardrailSettings {
        cooldown_ms: i64::from(b.u32()),
        min_interval_ms: i64::from(b.u16()),
        hysteresis_ms: i64::from(b.u32()),
        manual_failback: b.bool(),
        break_glass: b.bool(),
    }
}

/// Runs the guardrails on `decision` and panics if the verdict breaks a promise.
fn assert_guardrails_hold(input: &FailoverInput, decision: &FailoverDecision, settings: GuardrailSettings) {
    let verdict = check_failover(input, decision, settings);
    if let Err(broken) = check_guardrail_verdict(input, decision, settings, &verdict) {
        panic!("guardrails: {broken}\ninput: {input:?}\ndecision: {decision:?}\nsettings: {settings:?}\nverdict: {verdict:?}");
    }
}

/// Guardrails on any decision a policy could return for a fuzzed record set: the
/// decision names known and unknown targets (`t0..t5`), any weight (mostly near the
/// 0..=255 range, sometimes any u32), with or without force and break-glass, sometimes as a
/// stepped shift.
pub fn guardrails(data: &[u8]) {
    let mut b = Bytes(data);
    let input = record_set(&mut b);
    let settings = settings(&mut b);
    let force = b.bool();
    let hold = b.u8() == 0xff;
    let asked = usize::from(b.u8() % 7);
    let weights = (0..asked)
        .map(|_| {
            let id = b.u8() % 6;
            let weight = if b.u8() == 0xff { b.u32() } else { u32::from(b.u16() % 300) };
            Weight { set_identifier: format!("t{id}"), weight }
        })
        .collect();
    // A stepped shift (any steps, valid or not) is held to the same promises as its first step.
    let stepped = force && b.u8() < 0x40;
    let action = if hold {
        FailoverAction::Hold
    } else if stepped {
        let steps = (0..usize::from(b.u8() % 5)).map(|_| kbha_core::PlanStep { percent: b.u8(), bake_ms: u64::from(b.u16()) }).collect();
        FailoverAction::ShiftInSteps { weights, steps }
    } else {
        FailoverAction::ShiftWeights { weights, force }
    };
    let decision = FailoverDecision { action, reason: "fuzz".into(), alerts: vec![] };
    assert_guardrails_hold(&input, &decision, settings);
}

/// Policy output in its JSON form (golden cases' `expected.json`, decision records):
/// decoding never panics, a decoded decision serialises back to the same decision, and a
/// decoded failover decision is held to the guardrails against a record set taken from
/// the input's bytes.
pub fn policy_decision(data: &[u8]) {
    if let Ok(d) = serde_json::from_slice::<FailoverDecision>(data) {
        let text = serde_json::to_string(&d).expect("a decision serialises");
        assert_eq!(serde_json::from_str::<FailoverDecision>(&text).ok().as_ref(), Some(&d), "{text}");
        let mut b = Bytes(data);
        let input = record_set(&mut b);
        let settings = settings(&mut b);
        for break_glass in [false, true] {
            assert_guardrails_hold(&input, &d, GuardrailSettings { break_glass, ..settings });
        }
    }
    if let Ok(d) = serde_json::from_slice::<ReplicationDecision>(data) {
        let text = serde_json::to_string(&d).expect("a decision serialises");
        assert_eq!(serde_json::from_str::<ReplicationDecision>(&text).ok().as_ref(), Some(&d), "{text}");
    }
    if let Ok(d) = serde_json::from_slice::<AlertDecision>(data) {
        let text = serde_json::to_string(&d).expect("a decision serialises");
        assert_eq!(serde_json::from_str::<AlertDecision>(&text).ok().as_ref(), Some(&d), "{text}");
    }
}

/// The alert router's message parsing, `normalise` being its `normalise_event` mapped
/// to `(event id, alert)`: total (at least one alert for any JSON, one per SNS record),
/// ids never empty, names and summaries one line of at most `max_chars` characters.
pub fn alert_message(data: &[u8], max_chars: usize, normalise: impl Fn(&Value, TimestampMs) -> Vec<(String, IncomingAlert)>) {
    let Ok(event) = serde_json::from_slice::<Value>(data) else { return };
    let alerts = normalise(&event, 1_764_151_200_000);
    assert!(!alerts.is_empty(), "an event was dropped");
    if let Some(records) = event.get("Records").and_then(Value::as_array).filter(|r| !r.is_empty())
        && records.iter().all(|r| r.get("Sns").is_some_and(Value::is_object))
    {
        assert_eq!(alerts.len(), records.len(), "not one alert per SNS record");
    }
    for (id, a) in &alerts {
        assert!(!id.is_empty(), "empty event id for {a:?}");
        for text in [&a.name, &a.summary] {
            assert!(!text.contains('\n'), "not one line: {text:?}");
            assert!(text.chars().count() <= max_chars, "longer than {max_chars} characters: {text:?}");
        }
    }
    assert_eq!(alerts, normalise(&event, 1_764_151_200_000), "normalising twice gave two answers");
}
