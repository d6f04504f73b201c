//! Conversions between `kbha-core`'s JSON types and the generated WIT types,
//! so native tests and golden cases can be written in the documented JSON
//! formats. Inputs go core -> WIT, decisions come back WIT -> core (the same
//! directions the host uses).
//!
//! Native only: it exists for tests, never inside a component.

use crate::types as w;

kbha_core::wit_conversions!();

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
        assert_eq!(
            w_in.config,
            vec![w::ConfigEntry {
                key: "rpo_s".into(),
                value: "60".into()
            }]
        );
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
                weights: vec![w::Weight {
                    set_identifier: "s".into(),
                    weight: 100,
                }],
                force: false,
            }),
            reason: "r".into(),
            alerts: vec![crate::critical("c", "d")],
        };
        let c: core::FailoverDecision = d.into();
        assert_eq!(
            c.action,
            core::FailoverAction::ShiftWeights {
                weights: vec![core::Weight {
                    set_identifier: "s".into(),
                    weight: 100
                }],
                force: false
            }
        );
        assert_eq!(c.alerts[0].severity, core::Severity::Critical);
    }
}
