//! Normalising the event shapes AWS delivers to the failover function.
//!
//! Accepted, auto-detected:
//! - an SNS event whose records carry CloudWatch alarm notifications (one or more records);
//! - an EventBridge `CloudWatch Alarm State Change` event (the alarm is in `detail`);
//! - the direct CloudWatch alarm Lambda action (`alarmData`), metric or composite;
//! - an EventBridge `Scheduled Event` (re-evaluation tick).
//!
//! Anything else is an [`EventError`]; detection never guesses.
//!
//! The shapes are read by hand rather than through `aws_lambda_events`' types (measured:
//! using them where they fit refused 614 variants of the samples with one field missing,
//! e.g. an SNS record without its signature fields, and its alarm-data type reads a missing
//! state as OK, i.e. a broken event as a recovery; it also added chrono, serde_with and
//! darling to the core and to the wasm policies that use it). Tolerant reading, with errors
//! that name the missing field, is what an HA tool's edge needs.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::time::parse_timestamp;
use crate::{Alarm, AlarmState, TimestampMs};

/// Which of AWS's shapes an alarm arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventShape {
    /// SNS notification whose message is the alarm JSON.
    Sns,
    /// EventBridge `CloudWatch Alarm State Change`.
    EventBridge,
    /// Direct CloudWatch alarm action with `alarmData`.
    AlarmAction,
}

/// One alarm transition taken out of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmEvent {
    /// Id to deduplicate deliveries: the SNS message id, the EventBridge id, or for the
    /// alarm action (which has none) the alarm ARN plus the state timestamp.
    pub event_id: String,
    /// The alarm, with `target` still unset (configuration maps it).
    pub alarm: Alarm,
    /// The alarm's ARN, when the shape carries it.
    pub arn: Option<String>,
    /// The shape it came in.
    pub shape: EventShape,
}

/// What a failover invocation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverEvent {
    /// One or more alarm transitions.
    Alarms(Vec<AlarmEvent>),
    /// A scheduled re-evaluation.
    Schedule {
        /// EventBridge event id.
        event_id: String,
        /// The event's time.
        at_ms: TimestampMs,
    },
}

/// An event the failover function cannot use. Never retryable: the same bytes fail again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The payload matches none of the accepted shapes.
    #[error(
        "unrecognised event: expected an SNS event carrying CloudWatch alarm notifications, an EventBridge \
         `CloudWatch Alarm State Change` or `Scheduled Event`, or a CloudWatch alarm action with `alarmData`; got {0}"
    )]
    Unrecognised(String),
    /// The shape was recognised but a field is missing or malformed.
    #[error("malformed {shape} event: {problem}")]
    Malformed {
        /// Which shape.
        shape: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// Detects the shape of `event` and normalises it.
pub fn normalise_failover_event(event: &Value) -> Result<FailoverEvent, EventError> {
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        return sns_alarms(records).map(FailoverEvent::Alarms);
    }
    if let Some(detail_type) = event.get("detail-type").and_then(Value::as_str) {
        return match detail_type {
            "CloudWatch Alarm State Change" => eventbridge_alarm(event).map(|a| FailoverEvent::Alarms(vec![a])),
            "Scheduled Event" => {
                let malformed = |p: &str| EventError::Malformed { shape: "EventBridge scheduled", problem: p.into() };
                let event_id = event.get("id").and_then(Value::as_str).ok_or_else(|| malformed("no `id`"))?;
                let time = event.get("time").and_then(Value::as_str).ok_or_else(|| malformed("no `time`"))?;
                let at_ms = parse_timestamp(time).map_err(|e| malformed(&e.to_string()))?;
                Ok(FailoverEvent::Schedule { event_id: event_id.to_owned(), at_ms })
            }
            other => Err(EventError::Unrecognised(format!("an EventBridge event of detail-type `{other}`"))),
        };
    }
    if event.get("alarmData").is_some() {
        return alarm_action(event).map(|a| FailoverEvent::Alarms(vec![a]));
    }
    Err(EventError::Unrecognised(describe(event)))
}

fn describe(event: &Value) -> String {
    match event {
        Value::Object(map) => {
            let keys: Vec<&str> = map.keys().map(String::as_str).take(8).collect();
            format!("an object with keys [{}]", keys.join(", "))
        }
        Value::Array(_) => "an array".into(),
        Value::String(_) => "a string".into(),
        other => format!("`{other}`"),
    }
}

/// Region code from an ARN (`arn:aws:cloudwatch:us-east-1:...`).
pub fn region_from_arn(arn: &str) -> Option<String> {
    let region = arn.split(':').nth(3)?.trim();
    (!region.is_empty()).then(|| region.to_owned())
}

fn state(shape: &'static str, s: &str) -> Result<AlarmState, EventError> {
    AlarmState::from_cloudwatch(s)
        .ok_or_else(|| EventError::Malformed { shape, problem: format!("alarm state `{s}` is not OK, ALARM or INSUFFICIENT_DATA") })
}

fn time(shape: &'static str, s: &str) -> Result<TimestampMs, EventError> {
    parse_timestamp(s).map_err(|e| EventError::Malformed { shape, problem: e.to_string() })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsRecord {
    // SNS spells it `EventSource`, S3 and SQS `eventSource`: accept both to name what came.
    #[serde(alias = "eventSource")]
    event_source: Option<String>,
    sns: Option<SnsBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsBody {
    message_id: String,
    message: String,
}

/// The JSON message CloudWatch publishes to SNS.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsAlarmMessage {
    alarm_name: String,
    #[serde(default)]
    alarm_description: Option<String>,
    #[serde(rename = "AWSAccountId", default)]
    account: Option<String>,
    new_state_value: String,
    #[serde(default)]
    new_state_reason: String,
    state_change_time: String,
    #[serde(default)]
    old_state_value: Option<String>,
    #[serde(default)]
    alarm_arn: Option<String>,
    /// A display name such as `US East (N. Virginia)`; the ARN has the code.
    #[serde(default)]
    region: Option<String>,
}

fn sns_alarms(records: &[Value]) -> Result<Vec<AlarmEvent>, EventError> {
    const SHAPE: &str = "SNS";
    if records.is_empty() {
        return Err(EventError::Malformed { shape: SHAPE, problem: "`Records` is empty".into() });
    }
    let mut out = Vec::with_capacity(records.len());
    for (i, raw) in records.iter().enumerate() {
        let rec: SnsRecord =
            serde_json::from_value(raw.clone()).map_err(|e| EventError::Unrecognised(format!("record {i} is not an SNS record ({e})")))?;
        let body = match (rec.event_source.as_deref(), rec.sns) {
            (Some("aws:sns"), Some(body)) => body,
            (source, _) => {
                return Err(EventError::Unrecognised(format!("record {i} has event source `{}`, not `aws:sns`", source.unwrap_or("none"))));
            }
        };
        let msg: SnsAlarmMessage = serde_json::from_str(&body.message).map_err(|e| {
            EventError::Unrecognised(format!("SNS message `{}` is not a CloudWatch alarm notification ({e})", body.message_id))
        })?;
        let region = msg
            .alarm_arn
            .as_deref()
            .and_then(region_from_arn)
            .or(msg.region)
            .ok_or_else(|| EventError::Malformed { shape: SHAPE, problem: format!("alarm `{}` has no region", msg.alarm_name) })?;
        let mut tags = BTreeMap::new();
        if let Some(d) = msg.alarm_description.filter(|d| !d.is_empty()) {
            tags.insert("description".into(), d);
        }
        if let Some(a) = msg.account {
            tags.insert("account".into(), a);
        }
        out.push(AlarmEvent {
            event_id: body.message_id,
            alarm: Alarm {
                name: msg.alarm_name,
                region,
                state: state(SHAPE, &msg.new_state_value)?,
                previous_state: msg.old_state_value.as_deref().map(|s| state(SHAPE, s)).transpose()?,
                reason: msg.new_state_reason,
                state_changed_at_ms: time(SHAPE, &msg.state_change_time)?,
                target: None,
                tags,
            },
            arn: msg.alarm_arn,
            shape: EventShape::Sns,
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct AlarmStateJson {
    value: String,
    #[serde(default)]
    reason: String,
    timestamp: String,
}

/// `detail` of EventBridge and `alarmData` of the alarm action share this shape.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlarmDataJson {
    alarm_name: String,
    state: AlarmStateJson,
    #[serde(default)]
    previous_state: Option<AlarmStateJson>,
    #[serde(default)]
    configuration: Option<Value>,
}

fn alarm_from_data(shape: &'static str, data: AlarmDataJson, region: String) -> Result<Alarm, EventError> {
    let mut tags = BTreeMap::new();
    if let Some(cfg) = &data.configuration {
        if let Some(d) = cfg.get("description").and_then(Value::as_str).filter(|d| !d.is_empty()) {
            tags.insert("description".into(), d.to_owned());
        }
        // A composite alarm carries its rule; policies may want to know which kind fired.
        if let Some(rule) = cfg.get("alarmRule").and_then(Value::as_str) {
            tags.insert("alarm_rule".into(), rule.to_owned());
        }
    }
    Ok(Alarm {
        name: data.alarm_name,
        region,
        state: state(shape, &data.state.value)?,
        previous_state: data.previous_state.as_ref().map(|p| state(shape, &p.value)).transpose()?,
        reason: data.state.reason,
        state_changed_at_ms: time(shape, &data.state.timestamp)?,
        target: None,
        tags,
    })
}

/// The alarm of an EventBridge event or alarm action: region from the envelope (or the
/// ARN), account from `account_key`.
fn enveloped_alarm(
    shape: &'static str,
    event: &Value,
    data: AlarmDataJson,
    arn: Option<&str>,
    account_key: &str,
) -> Result<Alarm, EventError> {
    let region = event
        .get("region")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| arn.and_then(region_from_arn))
        .ok_or_else(|| EventError::Malformed { shape, problem: "no `region`".into() })?;
    let mut alarm = alarm_from_data(shape, data, region)?;
    if let Some(account) = event.get(account_key).and_then(Value::as_str) {
        alarm.tags.insert("account".into(), account.to_owned());
    }
    Ok(alarm)
}

fn eventbridge_alarm(event: &Value) -> Result<AlarmEvent, EventError> {
    const SHAPE: &str = "EventBridge alarm";
    let malformed = |p: String| EventError::Malformed { shape: SHAPE, problem: p };
    let id = event.get("id").and_then(Value::as_str).ok_or_else(|| malformed("no `id`".into()))?;
    let detail = event.get("detail").cloned().ok_or_else(|| malformed("no `detail`".into()))?;
    let data: AlarmDataJson = serde_json::from_value(detail).map_err(|e| malformed(format!("`detail`: {e}")))?;
    let arn = event.get("resources").and_then(Value::as_array).and_then(|r| r.first()).and_then(Value::as_str).map(str::to_owned);
    let alarm = enveloped_alarm(SHAPE, event, data, arn.as_deref(), "account")?;
    Ok(AlarmEvent { event_id: id.to_owned(), alarm, arn, shape: EventShape::EventBridge })
}

fn alarm_action(event: &Value) -> Result<AlarmEvent, EventError> {
    const SHAPE: &str = "CloudWatch alarm action";
    let malformed = |p: String| EventError::Malformed { shape: SHAPE, problem: p };
    let data: AlarmDataJson = serde_json::from_value(event["alarmData"].clone()).map_err(|e| malformed(format!("`alarmData`: {e}")))?;
    let arn = event.get("alarmArn").and_then(Value::as_str).map(|s| s.replace(' ', ""));
    let alarm = enveloped_alarm(SHAPE, event, data, arn.as_deref(), "accountId")?;
    // The action payload has no id; ARN plus transition time names the transition, so
    // redeliveries of the same transition deduplicate.
    let event_id = format!("{}@{}", arn.as_deref().unwrap_or(&alarm.name), alarm.state_changed_at_ms);
    Ok(AlarmEvent { event_id, alarm, arn, shape: EventShape::AlarmAction })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../../samples/events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
    }

    fn single(name: &str) -> AlarmEvent {
        match normalise_failover_event(&fixture(name)).expect(name) {
            FailoverEvent::Alarms(mut a) if a.len() == 1 => a.remove(0),
            other => panic!("{name}: expected one alarm, got {other:?}"),
        }
    }

    #[test]
    fn the_three_shapes_of_one_transition_normalise_to_the_same_alarm() {
        let sns = single("cloudwatch-alarm-sns.json");
        let eb = single("cloudwatch-alarm-eventbridge.json");
        let action = single("cloudwatch-alarm-action-metric.json");
        assert_eq!(sns.shape, EventShape::Sns);
        assert_eq!(eb.shape, EventShape::EventBridge);
        assert_eq!(action.shape, EventShape::AlarmAction);
        for a in [&sns, &eb, &action] {
            assert_eq!(a.alarm.name, "kbha-api-primary-unhealthy");
            assert_eq!(a.alarm.region, "us-east-1", "region comes from the ARN, not SNS's display name");
            assert_eq!(a.alarm.state, AlarmState::Alarm);
            assert_eq!(a.alarm.previous_state, Some(AlarmState::Ok));
            assert_eq!(a.alarm.state_changed_at_ms, parse_timestamp("2026-11-26T10:00:00Z").expect("ts"));
            assert!(a.alarm.reason.starts_with("Threshold Crossed"));
            assert_eq!(a.alarm.tags.get("account").map(String::as_str), Some("111122223333"));
        }
        assert_eq!(sns.event_id, "8f1e6a52-4a0c-5e1b-9b8e-3f2d1c0b9a87");
        assert_eq!(eb.event_id, "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92");
        assert!(action.event_id.starts_with("arn:aws:cloudwatch:us-east-1:111122223333:alarm:kbha-api-primary-unhealthy@"));
    }

    #[test]
    fn sns_event_with_several_records_yields_each_alarm_in_order() {
        let FailoverEvent::Alarms(alarms) =
            normalise_failover_event(&fixture("cloudwatch-alarm-sns-two-records.json")).expect("two records")
        else {
            panic!("expected alarms");
        };
        let names: Vec<_> = alarms.iter().map(|a| (a.alarm.name.as_str(), a.alarm.region.as_str(), a.alarm.state)).collect();
        assert_eq!(
            names,
            [("kbha-api-secondary-unhealthy", "us-west-2", AlarmState::Ok), ("kbha-api-primary-unhealthy", "us-east-1", AlarmState::Alarm)]
        );
    }

    #[test]
    fn composite_alarm_action_keeps_its_rule() {
        let a = single("cloudwatch-alarm-action-composite.json");
        assert_eq!(a.alarm.name, "kbha-primary-region-down");
        assert_eq!(a.alarm.state, AlarmState::Alarm);
        assert!(a.alarm.tags["alarm_rule"].contains("ALARM(kbha-api-primary-unhealthy)"));
    }

    #[test]
    fn scheduled_event_is_a_tick() {
        let e = normalise_failover_event(&fixture("eventbridge-scheduled.json")).expect("schedule");
        assert_eq!(
            e,
            FailoverEvent::Schedule {
                event_id: "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa".into(),
                at_ms: parse_timestamp("2026-11-26T10:15:00Z").expect("ts"),
            }
        );
    }

    #[test]
    fn other_events_are_refused_with_a_message_naming_what_came() {
        let e = normalise_failover_event(&fixture("s3-object-created.json")).expect_err("s3 is not an alarm");
        assert!(e.to_string().contains("event source `aws:s3`"), "{e}");
        let e = normalise_failover_event(&serde_json::json!({"hello": 1})).expect_err("junk");
        assert!(e.to_string().contains("keys [hello]"), "{e}");
        let e = normalise_failover_event(&serde_json::json!({"detail-type": "EC2 Instance State-change Notification"}))
            .expect_err("other eventbridge");
        assert!(e.to_string().contains("EC2 Instance"), "{e}");
    }

    #[test]
    fn sns_message_that_is_not_an_alarm_is_unrecognised() {
        let mut ev = fixture("cloudwatch-alarm-sns.json");
        ev["Records"][0]["Sns"]["Message"] = Value::String("disk full on host-1".into());
        let e = normalise_failover_event(&ev).expect_err("plain text");
        assert!(matches!(e, EventError::Unrecognised(_)));
        assert!(e.to_string().contains("8f1e6a52"), "names the message id: {e}");
    }

    #[test]
    fn bad_state_value_is_malformed() {
        let mut ev = fixture("cloudwatch-alarm-eventbridge.json");
        ev["detail"]["state"]["value"] = Value::String("ON_FIRE".into());
        let e = normalise_failover_event(&ev).expect_err("bad state");
        assert!(matches!(e, EventError::Malformed { .. }));
        assert!(e.to_string().contains("`ON_FIRE`"), "{e}");
    }
}
