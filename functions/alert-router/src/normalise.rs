//! Normalising whatever arrives into [`IncomingAlert`]s. Pure, and total: every input
//! becomes at least one alert, so nothing is ever dropped for its shape.
//!
//! - An SNS event (`Records[].Sns`): one alert per record, from its `Message`:
//!   - a CloudWatch alarm notification (`AlarmName` + `NewStateValue`): `ALARM` and
//!     `INSUFFICIENT_DATA` fire, `OK` resolves; region from a `region=` word of the
//!     description, else the alarm ARN (where the alarm lives); labels
//!     `state`, `account`, `namespace`, `metric`, plus `key=value` words of the alarm
//!     description (`severity=critical service=chromadb`), `severity` being the hint;
//!   - a kbha notice (`"kind": "kbha.notice"`, or a `source` message attribute
//!     starting with `kbha.`): name `kbha.<function>.<type>`, severity, summary and
//!     region from the notice and its attributes; `type`/`status` `ok`, `resolved` or
//!     `recovered` resolve; a notice naming a backup `source` (the replication verifier)
//!     gets labels `service` and `dedup_key` = `kbha/<function>/<source>/<region>`, so its
//!     verdicts on one source are one alert;
//!   - any other JSON object: name from `name`/`alertname`/`title`, summary from
//!     `summary`/`message`/`description`, severity from `severity`/`level`, status
//!     from `status`/`state`, region from `region`, string `labels`;
//!   - anything else (plain text, broken JSON): a generic alert named after the SNS
//!     Subject or the first line, the raw text kept as the body.
//! - Any other event: one generic alert whose body is the event's JSON text.

use std::collections::BTreeMap;

use kbha_core::events::region_from_arn;
use kbha_core::time::parse_timestamp;
use kbha_core::{AlertSource, AlertStatus, IncomingAlert, Severity, TimestampMs};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Longest name or summary kept (characters); longer ones are cut with `...`.
pub const MAX_TEXT_CHARS: usize = 200;

/// One alert taken out of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// The SNS MessageId, or `sha256:<hex>` of a non-SNS event.
    pub event_id: String,
    /// The alert.
    pub alert: IncomingAlert,
    /// Topic it came through, when known.
    pub topic_arn: Option<String>,
}

/// Splits `event` into alerts, received at `now_ms` (the time of alerts whose sender
/// gave none).
pub fn normalise_event(event: &Value, now_ms: TimestampMs) -> Vec<IncomingMessage> {
    let records = event.get("Records").and_then(Value::as_array).filter(|r| !r.is_empty());
    if let Some(records) = records
        && records.iter().all(|r| r.get("Sns").is_some_and(Value::is_object))
    {
        return records.iter().map(|r| sns_record(&r["Sns"], now_ms)).collect();
    }
    let text = event.to_string();
    let event_id = format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())));
    let alert = match event {
        Value::Object(obj) => generic_json(obj, &text, None, &BTreeMap::new(), now_ms),
        Value::String(s) => generic_text(s, None, now_ms),
        _ => generic_text(&text, None, now_ms),
    };
    vec![IncomingMessage { event_id, alert, topic_arn: None }]
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// `s` on one line, at most [`MAX_TEXT_CHARS`] characters.
pub fn one_line(s: &str) -> String {
    let line = s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_owned();
    if line.chars().count() > MAX_TEXT_CHARS { line.chars().take(MAX_TEXT_CHARS - 3).collect::<String>() + "..." } else { line }
}

fn severity(s: &str) -> Option<Severity> {
    match s.trim().to_ascii_lowercase().as_str() {
        "critical" | "crit" | "fatal" | "page" | "high" | "error" => Some(Severity::Critical),
        "warning" | "warn" | "medium" => Some(Severity::Warning),
        "info" | "informational" | "low" | "notice" => Some(Severity::Info),
        _ => None,
    }
}

fn resolves(word: &str) -> bool {
    matches!(word.trim().to_ascii_lowercase().as_str(), "ok" | "resolved" | "recovered")
}

// Hand-read, not aws_lambda_events' SnsMessage (nor its MessageAttribute): the router is total,
// and those require `Type`, `TopicArn`, the signature fields and a chrono `Timestamp`.
fn sns_record(sns: &Value, now_ms: TimestampMs) -> IncomingMessage {
    let message = sns.get("Message").and_then(Value::as_str).unwrap_or_default();
    let subject = str_field(sns, "Subject");
    let topic_arn = str_field(sns, "TopicArn").map(str::to_owned);
    let event_id = str_field(sns, "MessageId")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(sns.to_string().as_bytes()))));
    let sent_ms = str_field(sns, "Timestamp").and_then(|t| parse_timestamp(t).ok()).unwrap_or(now_ms);
    // String-valued message attributes (`{"severity": {"Type": "String", "Value": "critical"}}`).
    let attributes: BTreeMap<String, String> = sns
        .get("MessageAttributes")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.get("Value").and_then(Value::as_str)?.to_owned()))).collect())
        .unwrap_or_default();
    let alert = match serde_json::from_str::<Value>(message) {
        Ok(Value::Object(obj)) if obj.contains_key("AlarmName") && obj.contains_key("NewStateValue") => {
            cloudwatch(&obj, message, topic_arn.as_deref(), sent_ms)
        }
        Ok(Value::Object(obj))
            if obj.get("kind").and_then(Value::as_str) == Some("kbha.notice")
                || attributes.get("source").is_some_and(|s| s.starts_with("kbha.")) =>
        {
            kbha_notice(&obj, message, &attributes, sent_ms)
        }
        Ok(Value::Object(obj)) => generic_json(&obj, message, subject, &attributes, sent_ms),
        _ => {
            let mut a = generic_text(message, subject, sent_ms);
            merge_attributes(&mut a, &attributes);
            a
        }
    };
    IncomingMessage { event_id, alert, topic_arn }
}

fn merge_attributes(a: &mut IncomingAlert, attributes: &BTreeMap<String, String>) {
    for (k, v) in attributes {
        a.labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if a.severity_hint.is_none() {
        a.severity_hint = attributes.get("severity").and_then(|s| severity(s));
    }
    if a.region.is_none() {
        a.region = attributes.get("region").filter(|r| !r.is_empty()).cloned();
    }
}

// Hand-read, not CloudWatchAlarmPayload: that requires a description, `Region`, `OldStateValue`
// and a metric `Trigger`, which composite alarms (`AlarmRule`) and hand-made messages lack.
fn cloudwatch(obj: &Map<String, Value>, raw: &str, topic_arn: Option<&str>, sent_ms: TimestampMs) -> IncomingAlert {
    let v = Value::Object(obj.clone());
    let name = one_line(str_field(&v, "AlarmName").unwrap_or("unnamed-alarm"));
    let state = str_field(&v, "NewStateValue").unwrap_or("ALARM").to_owned();
    let region = str_field(&v, "AlarmArn").and_then(region_from_arn).or_else(|| topic_arn.and_then(region_from_arn));
    let mut labels = BTreeMap::from([("state".to_owned(), state.clone())]);
    if let Some(a) = str_field(&v, "AWSAccountId") {
        labels.insert("account".into(), a.to_owned());
    }
    if let Some(trigger) = v.get("Trigger") {
        if let Some(ns) = str_field(trigger, "Namespace") {
            labels.insert("namespace".into(), ns.to_owned());
        }
        if let Some(m) = str_field(trigger, "MetricName") {
            labels.insert("metric".into(), m.to_owned());
        }
    }
    // CloudWatch puts no tags in the notification; `key=value` words of the description
    // are how an alarm carries labels such as `severity=critical service=chromadb`.
    for word in str_field(&v, "AlarmDescription").unwrap_or("").split_whitespace() {
        if let Some((k, val)) = word.split_once('=')
            && !k.is_empty()
            && !val.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            labels.insert(k.to_owned(), val.trim_matches(|c: char| c == ',' || c == ';').to_owned());
        }
    }
    // The ARN says where the alarm lives, not what it watches: every Route 53 health-check
    // alarm lives in us-east-1 whatever region it probes. A `region=` label in the
    // description (the template's health-check alarms carry one) says what it is about.
    let region = labels.get("region").filter(|r| !r.is_empty()).cloned().or(region);
    let status = if state == "OK" { AlertStatus::Resolved } else { AlertStatus::Firing };
    let where_ = region.as_deref().map(|r| format!(" in {r}")).unwrap_or_default();
    IncomingAlert {
        source: AlertSource::Cloudwatch,
        severity_hint: labels.get("severity").and_then(|s| severity(s)),
        summary: one_line(&format!("{state}: {name}{where_}")),
        name,
        status,
        region,
        body: raw.to_owned(),
        labels,
        at_ms: str_field(&v, "StateChangeTime").and_then(|t| parse_timestamp(t).ok()).unwrap_or(sent_ms),
    }
}

fn kbha_notice(obj: &Map<String, Value>, raw: &str, attributes: &BTreeMap<String, String>, sent_ms: TimestampMs) -> IncomingAlert {
    let v = Value::Object(obj.clone());
    let function = str_field(&v, "function")
        .map(str::to_owned)
        .or_else(|| attributes.get("source").and_then(|s| s.strip_prefix("kbha.")).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    let kind = str_field(&v, "type").or_else(|| attributes.get("kind").map(String::as_str)).unwrap_or("notice").to_owned();
    let resolved = resolves(&kind) || str_field(&v, "status").is_some_and(resolves);
    let region =
        str_field(&v, "region").map(str::to_owned).or_else(|| v.get("alarm").and_then(|a| str_field(a, "region")).map(str::to_owned));
    let mut labels = BTreeMap::from([("function".to_owned(), function.clone()), ("type".to_owned(), kind.clone())]);
    for key in ["record_name", "dedup_key", "bucket", "key"] {
        if let Some(s) = str_field(&v, key) {
            labels.insert(key.to_owned(), s.to_owned());
        }
    }
    // The replication verifier names the backup source (`chromadb`, `redis`, ...): that is
    // the service, and one alert per source and region, so a `breach` and the `ok` after it
    // share a dedup key and the `ok` resolves it.
    if let Some(backup) = str_field(&v, "source") {
        labels.entry("service".into()).or_insert_with(|| backup.to_owned());
        let region = region.as_deref().unwrap_or("-");
        labels.entry("dedup_key".into()).or_insert_with(|| format!("kbha/{function}/{backup}/{region}"));
    }
    let mut a = IncomingAlert {
        source: AlertSource::Kbha,
        name: one_line(&format!("kbha.{function}.{kind}")),
        status: if resolved { AlertStatus::Resolved } else { AlertStatus::Firing },
        region,
        severity_hint: str_field(&v, "severity").and_then(severity),
        summary: one_line(str_field(&v, "summary").unwrap_or(&kind)),
        body: raw.to_owned(),
        labels,
        at_ms: str_field(&v, "at").and_then(|t| parse_timestamp(t).ok()).unwrap_or(sent_ms),
    };
    merge_attributes(&mut a, attributes);
    a
}

fn generic_json(
    obj: &Map<String, Value>,
    raw: &str,
    subject: Option<&str>,
    attributes: &BTreeMap<String, String>,
    sent_ms: TimestampMs,
) -> IncomingAlert {
    let v = Value::Object(obj.clone());
    let first = |keys: &[&str]| keys.iter().find_map(|k| str_field(&v, k)).map(str::to_owned);
    let summary =
        first(&["summary", "message", "description", "title"]).or_else(|| subject.map(str::to_owned)).unwrap_or_else(|| raw.to_owned());
    let name = first(&["name", "alertname", "alert", "title"]).or_else(|| subject.map(str::to_owned)).unwrap_or_else(|| summary.clone());
    let mut labels: BTreeMap<String, String> = v
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, x)| Some((k.clone(), x.as_str()?.to_owned()))).collect())
        .unwrap_or_default();
    if let Some(k) = first(&["dedup_key", "fingerprint"]) {
        labels.insert("dedup_key".into(), k);
    }
    let mut a = IncomingAlert {
        source: AlertSource::Generic,
        name: one_line(&name),
        status: if first(&["status", "state"]).is_some_and(|s| resolves(&s)) { AlertStatus::Resolved } else { AlertStatus::Firing },
        region: first(&["region"]),
        severity_hint: first(&["severity", "level", "priority"]).and_then(|s| severity(&s)),
        summary: one_line(&summary),
        body: raw.to_owned(),
        labels,
        at_ms: first(&["at", "time", "timestamp"]).and_then(|t| parse_timestamp(&t).ok()).unwrap_or(sent_ms),
    };
    merge_attributes(&mut a, attributes);
    a
}

fn generic_text(text: &str, subject: Option<&str>, sent_ms: TimestampMs) -> IncomingAlert {
    let first_line = one_line(text);
    let summary = subject.map(one_line).filter(|s| !s.is_empty()).unwrap_or_else(|| first_line.clone());
    let summary = if summary.is_empty() { "empty message".to_owned() } else { summary };
    IncomingAlert {
        source: AlertSource::Generic,
        name: summary.clone(),
        status: AlertStatus::Firing,
        region: None,
        severity_hint: None,
        summary,
        body: text.to_owned(),
        labels: BTreeMap::new(),
        at_ms: sent_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../../samples/events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
    }

    fn only(event: &Value) -> IncomingMessage {
        let mut v = normalise_event(event, 7);
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    #[test]
    fn cloudwatch_alarm_via_sns() {
        let m = only(&fixture("cloudwatch-alarm-sns.json"));
        assert_eq!(m.event_id, "8f1e6a52-4a0c-5e1b-9b8e-3f2d1c0b9a87");
        let a = m.alert;
        assert_eq!(a.source, AlertSource::Cloudwatch);
        assert_eq!(a.name, "kbha-api-primary-unhealthy");
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.summary, "ALARM: kbha-api-primary-unhealthy in us-east-1");
        assert_eq!(a.labels["namespace"], "AWS/Route53");
        assert_eq!(a.labels["state"], "ALARM");
        assert_eq!(a.at_ms, parse_timestamp("2026-11-26T10:00:00Z").expect("ts"));
        assert!(a.body.contains("Threshold Crossed"));
    }

    #[test]
    fn cloudwatch_ok_resolves_and_description_words_are_labels() {
        let m = only(&fixture("cloudwatch-alarm-sns-ok.json"));
        assert_eq!(m.alert.status, AlertStatus::Resolved);
        assert_eq!(m.alert.severity_hint, Some(Severity::Critical));
        assert_eq!(m.alert.labels["service"], "api");
        let two = normalise_event(&fixture("cloudwatch-alarm-sns-two-records.json"), 0);
        assert_eq!(two.iter().map(|m| m.alert.status).collect::<Vec<_>>(), [AlertStatus::Resolved, AlertStatus::Firing]);
    }

    /// The template's own health-check alarm, as CloudWatch sends it: the alarm lives in
    /// us-east-1 (Route 53's metrics are only there) but watches the region in its
    /// description, which is the alert's region (silences, maintenance windows and the
    /// region-down inhibition are keyed by it).
    #[test]
    fn a_health_check_alarm_is_about_the_region_it_probes_not_where_it_lives() {
        let path = format!("{}/../../infra/template.yaml", env!("CARGO_MANIFEST_DIR"));
        let template = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        for (which, region) in [("Primary", "eu-west-1"), ("Secondary", "ap-southeast-2")] {
            let at = template.find(&format!("  {which}UnhealthyAlarm:")).expect("the alarm in the template");
            let line = template[at..].lines().find(|l| l.trim_start().starts_with("AlarmDescription:")).expect("its description");
            let description = line
                .split_once("!Sub \"")
                .and_then(|(_, rest)| rest.strip_suffix('"'))
                .expect("a !Sub string")
                .replace(&format!("${{{which}Region}}"), region)
                .replace(&format!("${{{which}SetIdentifier}}"), &which.to_lowercase());
            let message = serde_json::json!({
                "AlarmName": format!("kbha-api-{}-unhealthy", which.to_lowercase()),
                "AlarmDescription": description,
                "AlarmArn": format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:kbha-api-{}-unhealthy", which.to_lowercase()),
                "NewStateValue": "ALARM",
                "StateChangeTime": "2026-11-26T10:00:00.000+0000",
                "Trigger": {"Namespace": "AWS/Route53", "MetricName": "HealthCheckStatus"},
            });
            let event = serde_json::json!({"Records": [{"EventSource": "aws:sns", "Sns": {
                "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:123456789012:kbha-alarms",
                "Subject": "ALARM", "Message": message.to_string(), "Timestamp": "2026-11-26T10:00:01.000Z"}}]});
            let a = only(&event).alert;
            assert_eq!(a.region.as_deref(), Some(region), "{which}: {description}");
            assert!(a.summary.ends_with(&format!(" in {region}")), "{}", a.summary);
            assert_eq!((a.labels["severity"].as_str(), a.labels["service"].as_str()), ("critical", "api"));
        }
    }

    #[test]
    fn kbha_notice_from_the_failover_function() {
        let a = only(&fixture("kbha-notice-sns.json")).alert;
        assert_eq!(a.source, AlertSource::Kbha);
        assert_eq!(a.name, "kbha.failover.applied");
        assert_eq!(a.severity_hint, Some(Severity::Warning));
        assert_eq!(a.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.summary, "traffic shifted: primary=0, secondary=100");
        assert_eq!(a.labels["record_name"], "api.example.com.");
        assert_eq!(a.labels["dry_run"], "false", "message attributes become labels");
        assert_eq!(a.status, AlertStatus::Firing);
    }

    #[test]
    fn replication_verdicts_on_one_source_share_a_dedup_key() {
        let mut ev = fixture("kbha-notice-sns.json");
        let notice = |verdict: &str, severity: &str| {
            serde_json::json!({"kind": "kbha.notice", "function": "replication", "type": verdict, "severity": severity,
                               "summary": format!("chromadb backup {verdict}"), "source": "chromadb", "region": "us-west-2",
                               "key": "chromadb/2026-11-26.tar.gz", "at": "2026-11-26T10:00:00Z"})
            .to_string()
        };
        ev["Records"][0]["Sns"]["MessageAttributes"] = serde_json::json!({"source": {"Type": "String", "Value": "kbha.replication"}});
        ev["Records"][0]["Sns"]["Message"] = Value::String(notice("breach", "critical"));
        let breach = only(&ev).alert;
        ev["Records"][0]["Sns"]["Message"] = Value::String(notice("ok", "info"));
        let ok = only(&ev).alert;
        assert_eq!((breach.status, ok.status), (AlertStatus::Firing, AlertStatus::Resolved));
        assert_eq!(breach.labels["dedup_key"], "kbha/replication/chromadb/us-west-2");
        assert_eq!(breach.labels["dedup_key"], ok.labels["dedup_key"]);
        assert_eq!((breach.labels["service"].as_str(), breach.name.as_str()), ("chromadb", "kbha.replication.breach"));
        assert_eq!(breach.severity_hint, Some(Severity::Critical));
    }

    #[test]
    fn plain_text_is_a_generic_alert_keeping_the_raw_text() {
        let m = only(&fixture("generic-text-sns.json"));
        let a = m.alert;
        assert_eq!(a.source, AlertSource::Generic);
        assert_eq!(a.name, "Disk almost full on kb-worker-3");
        assert!(a.body.starts_with("/var/lib/chroma is at 97%"), "{}", a.body);
        assert_eq!(a.status, AlertStatus::Firing);
    }

    #[test]
    fn broken_json_and_other_events_are_never_dropped() {
        let mut ev = fixture("cloudwatch-alarm-sns.json");
        ev["Records"][0]["Sns"]["Message"] = Value::String("{\"AlarmName\": \"half".into());
        ev["Records"][0]["Sns"]["Subject"] = Value::Null;
        let a = only(&ev).alert;
        assert_eq!(
            (a.source, a.name.as_str(), a.body.as_str()),
            (AlertSource::Generic, "{\"AlarmName\": \"half", "{\"AlarmName\": \"half")
        );
        let m = only(&serde_json::json!({"detail-type": "Something Else", "detail": {"x": 1}}));
        assert!(m.event_id.starts_with("sha256:"));
        assert_eq!(m.alert.source, AlertSource::Generic);
        assert!(m.alert.body.contains("Something Else"));
        let m = only(&serde_json::json!({"Records": [{"eventSource": "aws:s3"}]}));
        assert!(m.alert.body.contains("aws:s3"), "an S3 event is carried whole");
        let e = only(&Value::String(String::new())).alert;
        assert_eq!(e.name, "empty message");
    }

    #[test]
    fn generic_json_fields_are_understood() {
        let mut ev = fixture("generic-text-sns.json");
        ev["Records"][0]["Sns"]["Message"] = Value::String(
            serde_json::json!({"alertname": "QueueBacklog", "status": "resolved", "severity": "critical",
                               "summary": "backlog cleared", "region": "eu-west-1", "labels": {"service": "ingest"}})
            .to_string(),
        );
        let a = only(&ev).alert;
        assert_eq!((a.name.as_str(), a.status, a.severity_hint), ("QueueBacklog", AlertStatus::Resolved, Some(Severity::Critical)));
        assert_eq!((a.region.as_deref(), a.labels["service"].as_str()), (Some("eu-west-1"), "ingest"));
    }

    #[test]
    fn long_lines_are_cut() {
        let s = one_line(&format!("{}\nsecond", "x".repeat(500)));
        assert_eq!(s.chars().count(), MAX_TEXT_CHARS);
        assert!(s.ends_with("..."));
    }
}
