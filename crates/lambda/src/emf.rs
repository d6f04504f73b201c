//! CloudWatch metrics as Embedded Metric Format (EMF) log lines: one per invocation,
//! turned into metrics by CloudWatch Logs, so no API call (and no permission) is needed.
//!
//! Namespace `kbha`, dimension `Function`, all `Count`:
//! - `Decisions`: decision records with a policy decision;
//! - `PolicyFaults`: decisions where the configured policy faulted;
//! - `Fallbacks`: decisions not made by the configured policy (fallback or hold);
//! - `ShadowDisagreements`: decisions the shadow policy would have made differently;
//! - `Records`: every decision record, a policy asked or not (a paused controller's and a
//!   skipped duplicate's too): the failover's dead-man alarm, since its minute tick always
//!   writes one.

use serde_json::{Value, json};

/// The CloudWatch namespace of kbha's metrics.
pub const NAMESPACE: &str = "kbha";

/// Metric names, in the order they appear in the line.
pub const METRICS: [&str; 5] = ["Decisions", "PolicyFaults", "Fallbacks", "ShadowDisagreements", "Records"];

/// The EMF line for one invocation of `function` whose handler returned `output` (its
/// decision records: an array of them, or one). Records without a `policy` (e.g. a
/// duplicate skipped before deciding) count only in `Records`.
pub fn metrics_line(function: &str, output: &Value, now_ms: i64) -> Value {
    let records: Vec<&Value> = match output {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut counts = [0u64; 5];
    counts[4] = records.iter().filter(|r| r.is_object()).count() as u64;
    for policy in records.iter().filter_map(|r| r.get("policy")).filter(|p| p.is_object()) {
        counts[0] += 1;
        let faulted = policy["faults"].as_array().is_some_and(|f| !f.is_empty());
        counts[1] += u64::from(faulted);
        counts[2] += u64::from(policy["decided_by"] != policy["policy_source"]);
        counts[3] += u64::from(policy["shadow_agrees"] == Value::Bool(false));
    }
    let mut line = json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": METRICS.iter().map(|m| json!({"Name": m, "Unit": "Count"})).collect::<Vec<_>>(),
            }],
        },
        "record": "kbha.metrics",
        "Function": function,
    });
    for (name, count) in METRICS.iter().zip(counts) {
        line[*name] = json!(count);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(decided_by: &str, faults: usize, shadow_agrees: Option<bool>) -> Value {
        let mut p = json!({
            "decision": {},
            "decided_by": decided_by,
            "policy_source": "s3://policies/failover.wasm",
            "faults": (0..faults).map(|_| json!({"kind": "trap", "message": "unreachable"})).collect::<Vec<_>>(),
        });
        if let Some(a) = shadow_agrees {
            p["shadow_agrees"] = json!(a);
        }
        p
    }

    #[test]
    fn counts_decisions_faults_fallbacks_and_shadow_disagreements() {
        let output = json!([
            {"action": "applied", "policy": policy("s3://policies/failover.wasm", 0, Some(true))},
            {"action": "applied", "policy": policy("builtin", 1, Some(false))},
            {"action": "no_change", "policy": policy("hold", 2, None)},
            {"action": "skipped_duplicate", "policy": null},
            {"action": "skipped_duplicate"},
        ]);
        let line = metrics_line("failover", &output, 1_700_000_000_000);
        let got: Vec<u64> = METRICS.iter().map(|m| line[*m].as_u64().expect("count")).collect();
        assert_eq!(got, [3, 2, 2, 1, 5]);
        assert_eq!(line["Function"], "failover");
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000_i64);
    }

    #[test]
    fn the_line_is_valid_emf_every_declared_metric_has_a_value() {
        let line = metrics_line("alert-router", &json!({"policy": policy("s3://policies/failover.wasm", 0, None)}), 1);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        for dims in directive["Dimensions"].as_array().expect("dimension sets") {
            for d in dims.as_array().expect("dimension names") {
                assert!(line[d.as_str().expect("name")].is_string(), "dimension {d} has no value");
            }
        }
        for m in directive["Metrics"].as_array().expect("metrics") {
            assert!(line[m["Name"].as_str().expect("name")].is_u64(), "metric {m} has no value");
        }
        assert_eq!(line["Decisions"], 1);
    }
}
