//! The host's conversions between the WIT-generated types and `kbha-core`'s
//! domain types (inputs core -> WIT, decisions WIT -> core), expanded from the
//! one `kbha_core::wit_conversions!` body the guest SDK's tests use too. Also
//! measures decisions for the output-size cap.

use kbha_core as core;

use crate::bindings::types as w;

// Every conversion between the generated types and the domain types.
kbha_core::wit_conversions!();

// ---------------------------------------------------------------- output size

/// Bytes a decision occupies: string bytes plus a small fixed cost per list
/// entry, so a flood of empty entries counts too. `pub` because
/// [`PolicyWorld::Decision`](crate::PolicyWorld::Decision) is bound by it; this
/// module is private, so no other crate can name it.
pub trait OutputSize {
    /// The measured size.
    fn output_bytes(&self) -> usize;
}

const ENTRY_COST: usize = 8;

fn alerts_bytes(alerts: &[core::Alert]) -> usize {
    alerts.iter().map(|a| ENTRY_COST + a.summary.len() + a.detail.len()).sum()
}

impl OutputSize for core::FailoverDecision {
    fn output_bytes(&self) -> usize {
        let action = match &self.action {
            core::FailoverAction::Hold => 0,
            core::FailoverAction::ShiftWeights { weights, .. } => weights.iter().map(|w| ENTRY_COST + w.set_identifier.len()).sum(),
            core::FailoverAction::ShiftInSteps { weights, steps } => {
                weights.iter().map(|w| ENTRY_COST + w.set_identifier.len()).sum::<usize>() + steps.len() * ENTRY_COST
            }
        };
        action + self.reason.len() + alerts_bytes(&self.alerts)
    }
}

impl OutputSize for core::ReplicationDecision {
    fn output_bytes(&self) -> usize {
        self.reason.len() + alerts_bytes(&self.alerts)
    }
}

impl OutputSize for core::AlertDecision {
    fn output_bytes(&self) -> usize {
        let suppress = match &self.suppress {
            None => 0,
            Some(core::Suppression::MaintenanceWindow(n) | core::Suppression::Silence(n) | core::Suppression::InhibitedBy(n)) => n.len(),
        };
        self.destinations.iter().map(|d| ENTRY_COST + d.len()).sum::<usize>()
            + self.dedup_key.len()
            + self.group_key.len()
            + suppress
            + self.reason.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_input_converts_field_by_field() {
        let json = r#"{
            "now_ms": 5, "event_id": "e", "record_name": "api.example.com",
            "trigger": {"kind": "alarm", "name": "a", "region": "us-east-1", "state": "insufficient_data",
                        "state_changed_at_ms": 4, "tags": {"k": "v"}},
            "targets": [{"set_identifier": "p", "region": "us-east-1", "primary": true, "weight": 100,
                         "health": "unknown", "alarm_state": "alarm", "alarm_state_since_ms": 3,
                         "up_since_ms": 1, "last_down_at_ms": 2}],
            "last_change": {"at_ms": 2, "weights": [{"set_identifier": "p", "weight": 7}]},
            "config": {"a": "1", "b": "2"}
        }"#;
        let c: core::FailoverInput = serde_json::from_str(json).expect("parse");
        let i: w::FailoverInput = c.into();
        assert_eq!((i.now, i.event_id.as_str()), (5, "e"));
        let t = &i.targets[0];
        assert_eq!((t.health, t.alarm_state, t.alarm_state_since), (w::Health::Unknown, w::AlarmState::Alarm, Some(3)));
        assert_eq!(t.replication_age_ms, None);
        assert_eq!((t.up_since, t.last_down_at), (Some(1), Some(2)));
        assert_eq!(i.last_change.as_ref().map(|l| (l.at, l.weights[0].weight)), Some((2, 7)));
        assert_eq!(i.config.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        match i.trigger {
            w::FailoverTrigger::Alarm(a) => {
                assert_eq!(a.state, w::AlarmState::InsufficientData);
                assert_eq!(a.tags, [("k".to_string(), "v".to_string())]);
            }
            w::FailoverTrigger::Schedule => panic!("expected alarm trigger"),
        }
    }

    #[test]
    fn decisions_convert_back_and_are_measured() {
        let d = w::FailoverDecision {
            action: w::FailoverAction::ShiftWeights(w::Shift {
                weights: vec![w::Weight { set_identifier: "abc".into(), weight: 1 }],
                force: true,
            }),
            reason: "12345".into(),
            alerts: vec![w::Alert { severity: w::Severity::Warning, summary: "s".into(), detail: "dd".into() }],
        };
        let c: core::FailoverDecision = d.into();
        assert_eq!(
            c.action,
            core::FailoverAction::ShiftWeights { weights: vec![core::Weight { set_identifier: "abc".into(), weight: 1 }], force: true }
        );
        assert_eq!(c.alerts[0].severity, core::Severity::Warning);
        assert_eq!(c.output_bytes(), (ENTRY_COST + 3) + 5 + (ENTRY_COST + 1 + 2));
    }

    #[test]
    fn refusals_keep_their_case() {
        let r: core::PolicyRefusal = w::PolicyError::InvalidConfig("`k`".into()).into();
        assert_eq!(r, core::PolicyRefusal::InvalidConfig("`k`".into()));
    }
}
