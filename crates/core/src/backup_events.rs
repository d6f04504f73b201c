//! Normalising the event shapes AWS delivers to the replication verifier.
//!
//! Accepted, auto-detected:
//! - an S3 event notification (`Records[].s3`, `eventName` `ObjectCreated:*`), several
//!   records per invocation;
//! - the same notification wrapped in SNS (`Records[].Sns.Message` is the S3 event JSON);
//!   S3's `s3:TestEvent` sent when a notification is configured is recognised and ignored;
//! - an EventBridge `Object Created` event from `aws.s3`;
//! - an EventBridge `Scheduled Event` (the dead-man check).
//!
//! S3 URL-encodes object keys in notifications (`red flower.tar.gz` arrives as
//! `red+flower.tar.gz`, `:` as `%3A`, UTF-8 bytes as `%XX`); [`decode_key`] undoes it.
//! EventBridge keys are decoded the same way. Anything else is an [`EventError`].
//!
//! Read by hand, not as `aws_lambda_events::s3::S3EventRecord`: that requires
//! `userIdentity` and `requestParameters` (hand-made replays omit them) and types `eventTime`
//! as a chrono date that refuses offset-less times (see [`crate::events`]).

use serde_json::Value;

use crate::TimestampMs;
use crate::events::EventError;
use crate::time::parse_timestamp;

/// Which of AWS's shapes a backup notification arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupEventShape {
    /// S3 event notification delivered to Lambda directly.
    S3,
    /// S3 event notification inside an SNS message.
    Sns,
    /// EventBridge `Object Created`.
    EventBridge,
}

/// One object that was created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectCreated {
    /// Id to deduplicate deliveries: bucket, decoded key and sequencer (S3 gives no
    /// event id; the sequencer orders writes to one key).
    pub event_id: String,
    /// Bucket.
    pub bucket: String,
    /// The key, URL-decoded.
    pub key: String,
    /// Size from the event.
    pub size: Option<u64>,
    /// ETag from the event (no quotes).
    pub etag: Option<String>,
    /// Version id, when the bucket is versioned.
    pub version_id: Option<String>,
    /// Region of the bucket, from the event.
    pub region: Option<String>,
    /// When S3 finished the write.
    pub at_ms: TimestampMs,
    /// The shape it came in.
    pub shape: BackupEventShape,
}

/// What a replication-verifier invocation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupEvent {
    /// Objects created (possibly none: test events and other event names are skipped and
    /// listed in `skipped`).
    Objects {
        /// The created objects, in delivery order.
        created: Vec<ObjectCreated>,
        /// Records that are not object creations, one line each (logged, not errors).
        skipped: Vec<String>,
    },
    /// The scheduled dead-man check.
    Schedule {
        /// EventBridge event id.
        event_id: String,
        /// The event's time.
        at_ms: TimestampMs,
    },
    /// A restore test (`{"kbha": "restore-test"}`): from its own schedule (the template's
    /// rule fills in `id` and `time` from the scheduled event) or on demand
    /// (`kbha restore-test`).
    RestoreTest {
        /// Id of the run: the restore test's record is created once per id and source, so a
        /// redelivered event does not test again.
        event_id: String,
        /// The source to test; `None`: every configured source.
        source: Option<String>,
    },
}

fn malformed(shape: &'static str, problem: impl Into<String>) -> EventError {
    EventError::Malformed { shape, problem: problem.into() }
}

/// Detects the shape of `event` and normalises it.
pub fn normalise_backup_event(event: &Value) -> Result<BackupEvent, EventError> {
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        let mut created = Vec::new();
        let mut skipped = Vec::new();
        for (i, record) in records.iter().enumerate() {
            if let Some(sns) = record.get("Sns") {
                let message = sns
                    .get("Message")
                    .and_then(Value::as_str)
                    .ok_or_else(|| malformed("SNS", format!("record {i} has no `Sns.Message`")))?;
                let inner: Value = serde_json::from_str(message)
                    .map_err(|e| malformed("SNS", format!("record {i}: the message is not an S3 event notification: {e}")))?;
                if inner.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
                    skipped.push(format!("record {i}: s3:TestEvent"));
                    continue;
                }
                let inner_records = inner
                    .get("Records")
                    .and_then(Value::as_array)
                    .ok_or_else(|| malformed("SNS", format!("record {i}: the message has no S3 `Records`")))?;
                for (j, r) in inner_records.iter().enumerate() {
                    s3_record(r, BackupEventShape::Sns, &format!("record {i}.{j}"), &mut created, &mut skipped)?;
                }
            } else if record.get("s3").is_some() {
                s3_record(record, BackupEventShape::S3, &format!("record {i}"), &mut created, &mut skipped)?;
            } else {
                return Err(EventError::Unrecognised(format!("record {i} is neither an S3 notification nor an SNS message")));
            }
        }
        return Ok(BackupEvent::Objects { created, skipped });
    }
    if let Some(kind) = event.get("kbha") {
        return restore_test(event, kind);
    }
    if event.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(BackupEvent::Objects { created: vec![], skipped: vec!["s3:TestEvent".into()] });
    }
    match event.get("detail-type").and_then(Value::as_str) {
        Some("Object Created") => eventbridge_object(event),
        Some("Scheduled Event") => {
            let event_id = event.get("id").and_then(Value::as_str).ok_or_else(|| malformed("EventBridge scheduled", "no `id`"))?;
            let time = event.get("time").and_then(Value::as_str).ok_or_else(|| malformed("EventBridge scheduled", "no `time`"))?;
            let at_ms = parse_timestamp(time).map_err(|e| malformed("EventBridge scheduled", e.to_string()))?;
            Ok(BackupEvent::Schedule { event_id: event_id.to_owned(), at_ms })
        }
        Some(other) => Err(EventError::Unrecognised(format!("an EventBridge event of detail-type `{other}`"))),
        None => Err(EventError::Unrecognised(
            "expected an S3 event notification (direct or in SNS), an EventBridge `Object Created` or `Scheduled Event`".into(),
        )),
    }
}

/// `{"kbha": "restore-test", "id": "...", "source": "..."}`: `id` is required (the
/// template's input transformer passes the scheduled event's id; `kbha restore-test` makes
/// one), `source` is optional.
fn restore_test(event: &Value, kind: &Value) -> Result<BackupEvent, EventError> {
    const SHAPE: &str = "kbha restore-test";
    if kind.as_str() != Some("restore-test") {
        return Err(EventError::Unrecognised(format!("a kbha event of kind {kind}; the verifier knows only `restore-test`")));
    }
    let event_id = match event.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(other) => return Err(malformed(SHAPE, format!("`id` must be a non-empty string, not {other}"))),
        None => return Err(malformed(SHAPE, "no `id`: give the run an id (the restore test is recorded once per id and source)")),
    };
    let source = match event.get("source") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => return Err(malformed(SHAPE, format!("`source` must be a source name, not {other}"))),
    };
    Ok(BackupEvent::RestoreTest { event_id, source })
}

fn s3_record(
    r: &Value,
    shape: BackupEventShape,
    at: &str,
    created: &mut Vec<ObjectCreated>,
    skipped: &mut Vec<String>,
) -> Result<(), EventError> {
    let shape_name = match shape {
        BackupEventShape::Sns => "SNS-wrapped S3",
        _ => "S3",
    };
    let name = r.get("eventName").and_then(Value::as_str).unwrap_or_default();
    // Direct deliveries say `ObjectCreated:Put`; some tools prefix `s3:`.
    if !name.trim_start_matches("s3:").starts_with("ObjectCreated:") {
        skipped.push(format!("{at}: event `{name}` is not an object creation"));
        return Ok(());
    }
    let s3 = r.get("s3").ok_or_else(|| malformed(shape_name, format!("{at} has no `s3`")))?;
    let bucket =
        s3.pointer("/bucket/name").and_then(Value::as_str).ok_or_else(|| malformed(shape_name, format!("{at} has no `s3.bucket.name`")))?;
    let raw_key =
        s3.pointer("/object/key").and_then(Value::as_str).ok_or_else(|| malformed(shape_name, format!("{at} has no `s3.object.key`")))?;
    let key = decode_key(raw_key).map_err(|e| malformed(shape_name, format!("{at}: key `{raw_key}`: {e}")))?;
    let time = r.get("eventTime").and_then(Value::as_str).ok_or_else(|| malformed(shape_name, format!("{at} has no `eventTime`")))?;
    let at_ms = parse_timestamp(time).map_err(|e| malformed(shape_name, format!("{at}: {e}")))?;
    let sequencer = s3.pointer("/object/sequencer").and_then(Value::as_str).unwrap_or(time);
    created.push(ObjectCreated {
        event_id: format!("s3://{bucket}/{key}@{sequencer}"),
        bucket: bucket.to_owned(),
        size: s3.pointer("/object/size").and_then(Value::as_u64),
        etag: s3.pointer("/object/eTag").and_then(Value::as_str).map(|e| e.trim_matches('"').to_owned()),
        version_id: s3.pointer("/object/versionId").and_then(Value::as_str).map(str::to_owned),
        region: r.get("awsRegion").and_then(Value::as_str).map(str::to_owned),
        key,
        at_ms,
        shape,
    });
    Ok(())
}

fn eventbridge_object(event: &Value) -> Result<BackupEvent, EventError> {
    const SHAPE: &str = "EventBridge Object Created";
    let detail = event.get("detail").ok_or_else(|| malformed(SHAPE, "no `detail`"))?;
    let bucket = detail.pointer("/bucket/name").and_then(Value::as_str).ok_or_else(|| malformed(SHAPE, "no `detail.bucket.name`"))?;
    let raw_key = detail.pointer("/object/key").and_then(Value::as_str).ok_or_else(|| malformed(SHAPE, "no `detail.object.key`"))?;
    let key = decode_key(raw_key).map_err(|e| malformed(SHAPE, format!("key `{raw_key}`: {e}")))?;
    let time = event.get("time").and_then(Value::as_str).ok_or_else(|| malformed(SHAPE, "no `time`"))?;
    let at_ms = parse_timestamp(time).map_err(|e| malformed(SHAPE, e.to_string()))?;
    let sequencer = detail.pointer("/object/sequencer").and_then(Value::as_str).unwrap_or(time);
    Ok(BackupEvent::Objects {
        created: vec![ObjectCreated {
            event_id: format!("s3://{bucket}/{key}@{sequencer}"),
            bucket: bucket.to_owned(),
            size: detail.pointer("/object/size").and_then(Value::as_u64),
            etag: detail.pointer("/object/etag").and_then(Value::as_str).map(|e| e.trim_matches('"').to_owned()),
            version_id: detail.pointer("/object/version-id").and_then(Value::as_str).map(str::to_owned),
            region: event.get("region").and_then(Value::as_str).map(str::to_owned),
            key,
            at_ms,
            shape: BackupEventShape::EventBridge,
        }],
        skipped: vec![],
    })
}

/// A key that is not valid URL-encoding of UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// `%` not followed by two hex digits.
    #[error("`%` at byte {0} is not followed by two hex digits")]
    BadEscape(usize),
    /// The decoded bytes are not UTF-8 (S3 keys always are).
    #[error("decodes to bytes that are not UTF-8")]
    NotUtf8,
}

/// Decodes an S3 notification key: `+` is a space, `%XX` a byte; the bytes are UTF-8.
pub fn decode_key(raw: &str) -> Result<String, KeyError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(KeyError::BadEscape(i))?;
                let s = std::str::from_utf8(hex).map_err(|_| KeyError::BadEscape(i))?;
                out.push(u8::from_str_radix(s, 16).map_err(|_| KeyError::BadEscape(i))?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| KeyError::NotUtf8)
}

/// Encodes a key the way S3 notifications do (for fixtures and tests): unreserved
/// characters and `/` stay, a space becomes `+`, every other byte `%XX`.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Value {
        let path = format!("{}/../../samples/events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn objects(event: &Value) -> (Vec<ObjectCreated>, Vec<String>) {
        match normalise_backup_event(event) {
            Ok(BackupEvent::Objects { created, skipped }) => (created, skipped),
            other => panic!("expected objects, got {other:?}"),
        }
    }

    #[test]
    fn restore_test_events() {
        let e = serde_json::json!({"kbha": "restore-test", "id": "e1", "time": "2026-12-04T03:00:00Z"});
        assert_eq!(normalise_backup_event(&e), Ok(BackupEvent::RestoreTest { event_id: "e1".into(), source: None }));
        assert_eq!(
            normalise_backup_event(&sample("kbha-restore-test-scheduler.json")),
            Ok(BackupEvent::RestoreTest { event_id: "8f0a3c1e-5b7d-4e2a-9c6f-1d2e3f4a5b6c".into(), source: None })
        );
        let e = serde_json::json!({"kbha": "restore-test", "id": "e2", "source": "redis"});
        assert_eq!(normalise_backup_event(&e), Ok(BackupEvent::RestoreTest { event_id: "e2".into(), source: Some("redis".into()) }));
        for (bad, expect) in [
            (serde_json::json!({"kbha": "restore-test"}), "no `id`"),
            (serde_json::json!({"kbha": "restore-test", "id": 3}), "non-empty string"),
            (serde_json::json!({"kbha": "restore-test", "id": "x", "source": ""}), "source name"),
            (serde_json::json!({"kbha": "backup-now", "id": "x"}), "only `restore-test`"),
        ] {
            let e = normalise_backup_event(&bad).expect_err("must be rejected");
            assert!(e.to_string().contains(expect), "{bad}: {e}");
        }
    }

    #[test]
    fn keys_decode_plus_percent_and_utf8() {
        assert_eq!(decode_key("chroma+backup+10%3A00.tar.gz").as_deref(), Ok("chroma backup 10:00.tar.gz"));
        assert_eq!(decode_key("r%C3%A9gion/sauvegarde%E2%80%941.tgz").as_deref(), Ok("région/sauvegarde—1.tgz"));
        assert_eq!(decode_key("a%2Bb").as_deref(), Ok("a+b"));
        assert_eq!(decode_key("plain/key.tar"), Ok("plain/key.tar".into()));
        assert_eq!(decode_key("bad%2"), Err(KeyError::BadEscape(3)));
        assert_eq!(decode_key("bad%zz"), Err(KeyError::BadEscape(3)));
        assert_eq!(decode_key("%FF"), Err(KeyError::NotUtf8));
    }

    #[test]
    fn encode_then_decode_is_identity() {
        for key in ["chromadb/2026/11/26/chroma backup 10:00.tar.gz", "x+y=z&w", "日本/バックアップ.tgz", "~a_b-c.d"] {
            assert_eq!(decode_key(&encode_key(key)).as_deref(), Ok(key));
        }
        assert_eq!(encode_key("a b:c"), "a+b%3Ac");
    }

    #[test]
    fn direct_s3_notification() {
        let (created, skipped) = objects(&sample("s3-object-created.json"));
        assert!(skipped.is_empty());
        assert_eq!(created.len(), 1);
        let o = &created[0];
        assert_eq!(o.key, "chromadb/2026/11/26/chroma backup 10:00.tar.gz");
        assert_eq!(o.shape, BackupEventShape::S3);
        assert_eq!(o.region.as_deref(), Some("us-east-1"));
        assert!(o.event_id.starts_with(&format!("s3://{}/{}@", o.bucket, o.key)), "{}", o.event_id);
        assert!(o.size.is_some() && o.etag.as_deref().is_some_and(|e| !e.contains('"')));
    }

    #[test]
    fn sns_wrapped_notification_with_several_records_and_a_test_event() {
        let (created, skipped) = objects(&sample("s3-object-created-sns.json"));
        assert_eq!(created.len(), 2, "{created:?}");
        assert!(created.iter().all(|o| o.shape == BackupEventShape::Sns));
        assert_ne!(created[0].key, created[1].key);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
    }

    #[test]
    fn eventbridge_object_created() {
        let (created, _) = objects(&sample("s3-object-created-eventbridge.json"));
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].shape, BackupEventShape::EventBridge);
        assert_eq!(created[0].key, "chromadb/2026/11/26/chroma backup 11:00.tar.gz");
        assert!(created[0].version_id.is_some());
    }

    #[test]
    fn schedule_is_the_dead_man_check() {
        assert!(matches!(normalise_backup_event(&sample("eventbridge-scheduled.json")), Ok(BackupEvent::Schedule { .. })));
    }

    #[test]
    fn removals_are_skipped_and_alarms_rejected() {
        let mut ev = sample("s3-object-created.json");
        ev["Records"][0]["eventName"] = "ObjectRemoved:Delete".into();
        let (created, skipped) = objects(&ev);
        assert!(created.is_empty());
        assert_eq!(skipped.len(), 1);
        assert!(matches!(normalise_backup_event(&sample("cloudwatch-alarm-eventbridge.json")), Err(EventError::Unrecognised(_))));
        assert!(matches!(normalise_backup_event(&sample("cloudwatch-alarm-sns.json")), Err(EventError::Malformed { .. })));
    }

    #[test]
    fn a_bad_key_escape_is_malformed() {
        let mut ev = sample("s3-object-created.json");
        ev["Records"][0]["s3"]["object"]["key"] = "bad%zzkey".into();
        let e = normalise_backup_event(&ev).expect_err("must be rejected");
        assert!(e.to_string().contains("bad%zzkey"), "{e}");
    }
}
