//! The decision record: one JSON line per decision on stdout, with the same leading
//! fields in all three functions, so one Logs Insights query, the EMF metrics and
//! `kbha drill` read any of them. Each function adds its own fields after these.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Fields every decision record has, in every function (`null` where a function has
/// nothing to say: `guardrail` outside failover, `input_digest` and `policy` when no
/// policy was asked, e.g. a duplicate, `request_id` outside Lambda).
///
/// - `record`: always `kbha.decision`;
/// - `function`: `failover`, `replication` or `alert-router`;
/// - `event_id`: the delivery's id (SNS message id, EventBridge id, ...);
/// - `request_id`: the Lambda request id of the invocation that decided (`context.request_id`,
///   the `RequestId` of the invocation's `START`/`END`/`REPORT` lines); `null` outside Lambda
///   (`kbha replay`, `kbha drill`, tests). See [`Invocation`];
/// - `now`: decision time, ISO 8601;
/// - `subject`: what was decided about (the record set, `s3://bucket/key`, `source:name`,
///   the alert's source and name);
/// - `input_digest`: `sha256:<hex>` of the policy input JSON;
/// - `input`: the policy input itself, so `kbha policy backtest` can ask another policy the
///   same question; `null` with `"input_truncated": true` when its JSON passes
///   [`INPUT_LIMIT_BYTES`] (see [`RecordedInput`]);
/// - `policy`: the decision, who decided (`decided_by`), the configured policy's source
///   and digest, faults, `shadow_digest` / `shadow_agrees` when a shadow policy runs;
/// - `guardrail`: the guardrails' verdict (failover);
/// - `action`: what was done (each function's own vocabulary, snake_case);
/// - `durations`: milliseconds in `gather_ms`, `decide_ms`, `act_ms`.
pub const COMMON_FIELDS: [&str; 12] = [
    "record",
    "function",
    "event_id",
    "request_id",
    "now",
    "subject",
    "input_digest",
    "input",
    "policy",
    "guardrail",
    "action",
    "durations",
];

/// The fields every decision record starts with ([`COMMON_FIELDS`]): each function's
/// record flattens one ahead of its own fields (`#[serde(flatten)] header`), so the shared
/// shape is the type's, not a convention kept by hand. `P` is the function's policy answer
/// (`Option<Decided<..>>` where a decision may be made without asking the policy), `A` its
/// action vocabulary.
#[derive(Debug, Clone, Serialize)]
pub struct RecordHeader<P, A> {
    /// Always `kbha.decision`.
    pub record: &'static str,
    /// `failover`, `replication` or `alert-router`.
    pub function: &'static str,
    /// The delivery's id (SNS message id, EventBridge id, ...).
    pub event_id: String,
    /// Lambda request id of the invocation; `None` outside Lambda.
    pub request_id: Option<String>,
    /// Decision time, ISO 8601.
    pub now: String,
    /// What was decided about.
    pub subject: String,
    /// `input_digest` and `input`: the policy input, so the decision can be replayed and
    /// backtested.
    #[serde(flatten)]
    pub input: RecordedInput,
    /// The policy's answer and who gave it.
    pub policy: P,
    /// The guardrails' verdict (failover; `null` elsewhere).
    pub guardrail: Option<kbha_core::guardrails::GuardrailVerdict>,
    /// What was done.
    pub action: A,
    /// Step durations.
    pub durations: Durations,
}

impl<P, A> RecordHeader<P, A> {
    /// A header for a decision of `function` about `subject` in `inv`, before the policy is
    /// asked: no input, no guardrail verdict, zero durations.
    pub fn new(function: &'static str, event_id: &str, inv: &Invocation, subject: String, policy: P, action: A) -> Self {
        RecordHeader {
            record: "kbha.decision",
            function,
            event_id: event_id.to_owned(),
            request_id: inv.request_id.clone(),
            now: kbha_core::time::format_timestamp(inv.now_ms),
            subject,
            input: RecordedInput::default(),
            policy,
            guardrail: None,
            action,
            durations: Durations::default(),
        }
    }
}

/// Gives a function's decision record its header's fields as its own (`record.action`,
/// `record.durations`), as they are in the JSON: the header is the record's first part.
#[macro_export]
macro_rules! record_header {
    ($record:ty, $policy:ty, $action:ty) => {
        impl std::ops::Deref for $record {
            type Target = $crate::record::RecordHeader<$policy, $action>;
            fn deref(&self) -> &Self::Target {
                &self.header
            }
        }
        impl std::ops::DerefMut for $record {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.header
            }
        }
    };
}

/// The invocation a decision is made in, as each function's handler gets it: the decision
/// time, and the Lambda request id when Lambda invoked it. [`crate::lambda::serve`] builds it
/// from the runtime's context; `kbha replay`, `kbha drill`, `kbha ops` and the tests use
/// [`Invocation::at`]. Every decision record copies `request_id` from here, so a record
/// leads to the rest of its invocation's log lines (`START`/`END`/`REPORT`, the X-Ray trace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// Decision time, milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// Lambda's request id; `None` outside Lambda (`null` in the record).
    pub request_id: Option<String>,
}

impl Invocation {
    /// An invocation outside Lambda, decided at `now_ms`: no request id.
    pub fn at(now_ms: i64) -> Invocation {
        Invocation { now_ms, request_id: None }
    }

    /// An invocation by Lambda under `request_id`, decided at `now_ms` (an empty id, which
    /// Lambda never gives, is none).
    pub fn lambda(now_ms: i64, request_id: impl Into<String>) -> Invocation {
        Invocation { now_ms, request_id: Some(request_id.into()).filter(|id| !id.is_empty()) }
    }
}

/// The largest policy input a decision record carries, in bytes of JSON. Inputs are small
/// (measured over the drills' records: failover 1.0 KiB median, 1.4 KiB at most with two
/// targets; replication 0.6 KiB; alert router 3 to 4.5 KiB, growing with the alerts
/// firing); the cap keeps one record well inside a CloudWatch Logs event (256 KiB)
/// whatever a configuration holds.
pub const INPUT_LIMIT_BYTES: usize = 32 * 1024;

/// The policy input as a decision record carries it (flattened into the record):
/// `input_digest` and `input`, plus `input_truncated` when the input was too large to keep.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecordedInput {
    /// `sha256:<hex>` of the input's JSON; `None` when no policy was asked.
    pub input_digest: Option<String>,
    /// The input's JSON, exactly the bytes the digest covers; `None` when no policy was
    /// asked or the input was cut.
    pub input: Option<Box<serde_json::value::RawValue>>,
    /// The input passed [`INPUT_LIMIT_BYTES`] and is not in the record.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub input_truncated: bool,
}

impl RecordedInput {
    /// Records `input`: its digest always, the input itself up to [`INPUT_LIMIT_BYTES`].
    pub fn of<T: Serialize>(input: &T) -> Self {
        let json = serde_json::to_string(input).unwrap_or_default();
        let input_digest = Some(digest_str(&json));
        if json.len() > INPUT_LIMIT_BYTES {
            return RecordedInput { input_digest, input: None, input_truncated: true };
        }
        let input = serde_json::value::RawValue::from_string(json).ok();
        RecordedInput { input_digest, input, input_truncated: false }
    }
}

/// `sha256:<hex>` of a value's JSON: the `input_digest` of a record.
pub fn input_digest<T: Serialize>(value: &T) -> String {
    digest_str(&serde_json::to_string(value).unwrap_or_default())
}

fn digest_str(json: &str) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(json.as_bytes())))
}

/// Milliseconds spent per step of one decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Durations {
    /// Reading what the decision rests on (state, facts, the backup stream).
    pub gather_ms: f64,
    /// Policy evaluation (and the shadow's).
    pub decide_ms: f64,
    /// Acting on it: Route 53 change, state and record writes, publishes.
    pub act_ms: f64,
}

/// Milliseconds since `since`, for [`Durations`].
pub fn ms(since: std::time::Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// The common fields `record` lacks, or that do not have their documented type; empty
/// when it has the shared shape. Used by the functions' tests.
pub fn shape_problems(record: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for field in COMMON_FIELDS {
        let Some(v) = record.get(field) else {
            problems.push(format!("no `{field}`"));
            continue;
        };
        let ok = match field {
            "record" => v == "kbha.decision",
            "function" | "event_id" | "now" | "subject" | "action" => v.is_string(),
            "request_id" => v.is_null() || v.as_str().is_some_and(|s| !s.is_empty()),
            "input_digest" => v.is_null() || v.as_str().is_some_and(|s| s.starts_with("sha256:")),
            "input" => v.is_null() || v.is_object(),
            "policy" => v.is_null() || (v.get("decision").is_some() && v.get("policy_digest").is_some()),
            "guardrail" => v.is_null() || v.is_object(),
            "durations" => ["gather_ms", "decide_ms", "act_ms"].iter().all(|k| v.get(k).is_some_and(Value::is_number)),
            _ => true,
        };
        if !ok {
            problems.push(format!("`{field}` is {v}"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_the_common_fields_has_the_shape_and_one_without_says_what_is_missing() {
        let good = serde_json::json!({
            "record": "kbha.decision", "function": "failover", "event_id": "e", "request_id": null, "now": "2026-11-26T10:00:00Z",
            "subject": "app.example.com. A", "input_digest": "sha256:00", "input": {}, "policy": null, "guardrail": null,
            "action": "no_change", "durations": Durations::default(),
        });
        assert_eq!(shape_problems(&good), Vec::<String>::new());
        let mut from_lambda = good.clone();
        from_lambda["request_id"] = serde_json::json!("8f5e2c1a-0d3b-4c7e-9a61-2b4f7d9e0c13");
        assert_eq!(shape_problems(&from_lambda), Vec::<String>::new());
        let mut bad = good.clone();
        bad.as_object_mut().map(|o| o.remove("subject"));
        bad["action"] = serde_json::json!(3);
        bad["request_id"] = serde_json::json!("");
        assert_eq!(shape_problems(&bad), ["`request_id` is \"\"", "no `subject`", "`action` is 3"]);
        let mut without = good.clone();
        without.as_object_mut().map(|o| o.remove("request_id"));
        assert_eq!(shape_problems(&without), ["no `request_id`"], "absent is not null");
    }

    #[test]
    fn a_header_serialises_to_exactly_the_common_fields() {
        let h: RecordHeader<Option<()>, &str> =
            RecordHeader::new("failover", "e1", &Invocation::lambda(0, "r1"), "s".into(), None, "no_change");
        let v = serde_json::to_value(&h).unwrap_or_default();
        assert_eq!(shape_problems(&v), Vec::<String>::new(), "{v}");
        let mut keys: Vec<&str> = v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        keys.sort_unstable();
        let mut common = COMMON_FIELDS.to_vec();
        common.sort_unstable();
        assert_eq!(keys, common);
    }

    #[test]
    fn a_recorded_input_is_the_json_its_digest_covers_and_a_large_one_is_cut_and_flagged() {
        let small = serde_json::json!({"b": 1, "a": [1, 2]});
        let r = RecordedInput::of(&small);
        let kept = r.input.as_ref().map(|raw| raw.get().to_owned()).unwrap_or_default();
        assert_eq!(r.input_digest.as_deref(), Some(digest_str(&kept).as_str()));
        assert_eq!(serde_json::from_str::<Value>(&kept).ok(), Some(small.clone()));
        assert_eq!(r.input_digest, Some(input_digest(&small)));
        let rec = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(rec["input"], small);
        assert!(rec.get("input_truncated").is_none(), "{rec}");

        let big = serde_json::json!({"blob": "x".repeat(INPUT_LIMIT_BYTES)});
        let r = RecordedInput::of(&big);
        assert!(r.input.is_none() && r.input_truncated);
        assert_eq!(r.input_digest, Some(input_digest(&big)), "the digest still covers the whole input");
        let rec = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!((rec["input"].clone(), rec["input_truncated"].clone()), (Value::Null, Value::Bool(true)));
    }
}
