//! The decision record: one JSON line per decision on stdout, with the same leading
//! fields in all three functions, so one Logs Insights query, the EMF metrics and
//! `kbha drill` read any of them. Each function adds its own fields after these.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Fields every decision record has, in every function (`null` where a function has
/// nothing to say: `guardrail` outside failover, `input_digest` and `policy` when no
/// policy was asked, e.g. a duplicate).
///
/// - `record`: always `kbha.decision`;
/// - `function`: `failover`, `replication` or `alert-router`;
/// - `event_id`: the delivery's id (SNS message id, EventBridge id, ...);
/// - `now`: decision time, ISO 8601;
/// - `subject`: what was decided about (the record set, `s3://bucket/key`, `source:name`,
///   the alert's source and name);
/// - `input_digest`: `sha256:<hex>` of the policy input JSON (replays it);
/// - `policy`: the decision, who decided (`decided_by`), the configured policy's source
///   and digest, faults, `shadow_digest` / `shadow_agrees` when a shadow policy runs;
/// - `guardrail`: the guardrails' verdict (failover);
/// - `action`: what was done (each function's own vocabulary, snake_case);
/// - `durations`: milliseconds in `gather_ms`, `decide_ms`, `act_ms`.
pub const COMMON_FIELDS: [&str; 10] =
    ["record", "function", "event_id", "now", "subject", "input_digest", "policy", "guardrail", "action", "durations"];

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
            "input_digest" => v.is_null() || v.as_str().is_some_and(|s| s.starts_with("sha256:")),
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
            "record": "kbha.decision", "function": "failover", "event_id": "e", "now": "2026-11-26T10:00:00Z",
            "subject": "app.example.com. A", "input_digest": "sha256:00", "policy": null, "guardrail": null,
            "action": "no_change", "durations": Durations::default(),
        });
        assert_eq!(shape_problems(&good), Vec::<String>::new());
        let mut bad = good.clone();
        bad.as_object_mut().map(|o| o.remove("subject"));
        bad["action"] = serde_json::json!(3);
        assert_eq!(shape_problems(&bad), ["no `subject`", "`action` is 3"]);
    }
}
