//! Conversions between `kbha-core`'s JSON types and the generated WIT types,
//! so native tests and golden cases can be written in the documented JSON
//! formats. Inputs go core -> WIT, decisions come back WIT -> core (the same
//! directions the host uses).
//!
//! Native only: it exists for tests, never inside a component.

use crate::types as w;

kbha_core::wit_conversions!();

/// Golden cases: a folder per case with `input.json` (the policy input in kbha-core's
/// JSON format) and `expected.json` (the decision, or the refusal). The same files are
/// run natively by the policy crate's tests and as a component by the host's tests.
pub mod golden {
    use std::fmt::Debug;
    use std::path::Path;

    use kbha_core::PolicyRefusal;
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize};

    /// What a case expects: a decision or a refusal.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Expected<D> {
        /// The policy decides this.
        Decision(D),
        /// The policy refuses with this.
        Refused(PolicyRefusal),
    }

    /// Runs every case in `dir` through `run` and compares with `expected.json`, or, with
    /// `KBHA_BLESS=1`, rewrites `expected.json` (review the diff). Every name in
    /// `required` must exist, so deleting a case the issue asked for fails. Panics with
    /// the case name on the first difference; returns the case names.
    pub fn check<I, D>(dir: &Path, required: &[&str], run: impl Fn(I) -> Expected<D>) -> Vec<String>
    where
        I: DeserializeOwned,
        D: DeserializeOwned + Serialize + PartialEq + Debug,
    {
        let bless = std::env::var_os("KBHA_BLESS").is_some();
        let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let mut names = Vec::new();
        let mut dirs: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for case in dirs {
            let name = case.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            let input: I =
                serde_json::from_slice(&read(&case.join("input.json"))).unwrap_or_else(|e| panic!("case `{name}`: input.json: {e}"));
            let got = run(input);
            let expected_path = case.join("expected.json");
            if bless {
                let text = serde_json::to_string_pretty(&got).unwrap_or_default() + "\n";
                std::fs::write(&expected_path, text).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
            } else {
                let expected: Expected<D> =
                    serde_json::from_slice(&read(&expected_path)).unwrap_or_else(|e| panic!("case `{name}`: expected.json: {e}"));
                assert_eq!(got, expected, "case `{name}`");
            }
            names.push(name);
        }
        for r in required {
            assert!(names.iter().any(|n| n == r), "missing golden case `{r}` in {}", dir.display());
        }
        assert!(names.len() >= 2, "no golden cases in {}", dir.display());
        names
    }
}

#[cfg(test)]
mod tests {
    use kbha_core as core;

    use super::*;

    #[test]
    fn failover_input_converts_field_by_field() {
        let json = r#"{
            "now_ms": 5, "event_id": "e", "record_name": "api.example.com",
            "trigger": {"kind": "alarm", "name": "a", "region": "us-east-1", "state": "alarm",
                        "state_changed_at_ms": 4, "tags": {"k": "v"}},
            "targets": [{"set_identifier": "p", "region": "us-east-1", "primary": true, "weight": 100,
                         "health": "unhealthy", "alarm_state": "alarm", "replication_age_ms": 7}],
            "config": {"rpo_s": "60"}
        }"#;
        let core_in: core::FailoverInput = serde_json::from_str(json).expect("parse");
        let w_in: w::FailoverInput = core_in.into();
        assert_eq!(w_in.now, 5);
        assert_eq!(w_in.targets[0].health, w::Health::Unhealthy);
        assert_eq!(w_in.targets[0].replication_age_ms, Some(7));
        assert_eq!(w_in.config, vec![w::ConfigEntry { key: "rpo_s".into(), value: "60".into() }]);
        match w_in.trigger {
            w::FailoverTrigger::Alarm(a) => {
                assert_eq!(a.state, w::AlarmState::Alarm);
                assert_eq!(a.tags, vec![("k".to_string(), "v".to_string())]);
            }
            w::FailoverTrigger::Schedule => panic!("expected an alarm trigger"),
        }
    }

    #[test]
    fn failover_decision_converts_back() {
        let d = w::FailoverDecision {
            action: w::FailoverAction::ShiftWeights(w::Shift {
                weights: vec![w::Weight { set_identifier: "s".into(), weight: 100 }],
                force: false,
            }),
            reason: "r".into(),
            alerts: vec![crate::critical("c", "d")],
        };
        let c: core::FailoverDecision = d.into();
        assert_eq!(
            c.action,
            core::FailoverAction::ShiftWeights { weights: vec![core::Weight { set_identifier: "s".into(), weight: 100 }], force: false }
        );
        assert_eq!(c.alerts[0].severity, core::Severity::Critical);
    }
}
