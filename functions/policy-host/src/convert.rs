//! The one place that converts between the WIT-generated types and
//! `kbha-core`'s domain types: inputs go core -> WIT, decisions come back
//! WIT -> core. Also measures decisions for the output-size cap.

use kbha_core as core;

use crate::bindings::types as w;

fn config(c: core::PolicyConfig) -> Vec<w::ConfigEntry> {
    c.into_iter()
        .map(|(key, value)| w::ConfigEntry { key, value })
        .collect()
}

fn pairs(m: std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    m.into_iter().collect()
}

impl From<core::Level> for w::Level {
    fn from(l: core::Level) -> Self {
        match l {
            core::Level::Debug => w::Level::Debug,
            core::Level::Info => w::Level::Info,
            core::Level::Warn => w::Level::Warn,
            core::Level::Error => w::Level::Error,
        }
    }
}

impl From<w::Level> for core::Level {
    fn from(l: w::Level) -> Self {
        match l {
            w::Level::Debug => core::Level::Debug,
            w::Level::Info => core::Level::Info,
            w::Level::Warn => core::Level::Warn,
            w::Level::Error => core::Level::Error,
        }
    }
}

impl From<core::Severity> for w::Severity {
    fn from(s: core::Severity) -> Self {
        match s {
            core::Severity::Info => w::Severity::Info,
            core::Severity::Warning => w::Severity::Warning,
            core::Severity::Critical => w::Severity::Critical,
        }
    }
}

impl From<w::Severity> for core::Severity {
    fn from(s: w::Severity) -> Self {
        match s {
            w::Severity::Info => core::Severity::Info,
            w::Severity::Warning => core::Severity::Warning,
            w::Severity::Critical => core::Severity::Critical,
        }
    }
}

impl From<w::Alert> for core::Alert {
    fn from(a: w::Alert) -> Self {
        core::Alert {
            severity: a.severity.into(),
            summary: a.summary,
            detail: a.detail,
        }
    }
}

impl From<w::PolicyError> for core::PolicyRefusal {
    fn from(e: w::PolicyError) -> Self {
        match e {
            w::PolicyError::InvalidConfig(m) => core::PolicyRefusal::InvalidConfig(m),
            w::PolicyError::InvalidInput(m) => core::PolicyRefusal::InvalidInput(m),
            w::PolicyError::Internal(m) => core::PolicyRefusal::Internal(m),
        }
    }
}

// ------------------------------------------------------------------- failover

impl From<core::AlarmState> for w::AlarmState {
    fn from(s: core::AlarmState) -> Self {
        match s {
            core::AlarmState::Ok => w::AlarmState::Ok,
            core::AlarmState::Alarm => w::AlarmState::Alarm,
            core::AlarmState::InsufficientData => w::AlarmState::InsufficientData,
        }
    }
}

impl From<core::Health> for w::Health {
    fn from(h: core::Health) -> Self {
        match h {
            core::Health::Healthy => w::Health::Healthy,
            core::Health::Unhealthy => w::Health::Unhealthy,
            core::Health::Unknown => w::Health::Unknown,
        }
    }
}

impl From<core::Alarm> for w::Alarm {
    fn from(a: core::Alarm) -> Self {
        w::Alarm {
            name: a.name,
            region: a.region,
            state: a.state.into(),
            previous_state: a.previous_state.map(Into::into),
            reason: a.reason,
            state_changed_at: a.state_changed_at_ms,
            target: a.target,
            tags: pairs(a.tags),
        }
    }
}

impl From<core::Target> for w::Target {
    fn from(t: core::Target) -> Self {
        w::Target {
            set_identifier: t.set_identifier,
            region: t.region,
            primary: t.primary,
            weight: t.weight,
            health: t.health.into(),
            alarm_state: t.alarm_state.into(),
            alarm_state_since: t.alarm_state_since_ms,
            replication_age_ms: t.replication_age_ms,
        }
    }
}

impl From<core::Weight> for w::Weight {
    fn from(x: core::Weight) -> Self {
        w::Weight {
            set_identifier: x.set_identifier,
            weight: x.weight,
        }
    }
}

impl From<w::Weight> for core::Weight {
    fn from(x: w::Weight) -> Self {
        core::Weight {
            set_identifier: x.set_identifier,
            weight: x.weight,
        }
    }
}

impl From<core::FailoverInput> for w::FailoverInput {
    fn from(i: core::FailoverInput) -> Self {
        w::FailoverInput {
            now: i.now_ms,
            event_id: i.event_id,
            trigger: match i.trigger {
                core::FailoverTrigger::Alarm(a) => w::FailoverTrigger::Alarm(a.into()),
                core::FailoverTrigger::Schedule => w::FailoverTrigger::Schedule,
            },
            record_name: i.record_name,
            targets: i.targets.into_iter().map(Into::into).collect(),
            last_change: i.last_change.map(|c| w::LastChange {
                at: c.at_ms,
                weights: c.weights.into_iter().map(Into::into).collect(),
                reason: c.reason,
            }),
            config: config(i.config),
        }
    }
}

impl From<w::FailoverDecision> for core::FailoverDecision {
    fn from(d: w::FailoverDecision) -> Self {
        core::FailoverDecision {
            action: match d.action {
                w::FailoverAction::Hold => core::FailoverAction::Hold,
                w::FailoverAction::ShiftWeights(s) => core::FailoverAction::ShiftWeights {
                    weights: s.weights.into_iter().map(Into::into).collect(),
                    force: s.force,
                },
            },
            reason: d.reason,
            alerts: d.alerts.into_iter().map(Into::into).collect(),
        }
    }
}

// ---------------------------------------------------------------- replication

impl From<core::ReplicationInput> for w::ReplicationInput {
    fn from(i: core::ReplicationInput) -> Self {
        w::ReplicationInput {
            now: i.now_ms,
            event_id: i.event_id,
            subject: match i.subject {
                core::ReplicationSubject::Backup(b) => {
                    w::ReplicationSubject::Backup(w::BackupFacts {
                        bucket: b.bucket,
                        key: b.key,
                        source: b.source,
                        size_bytes: b.size_bytes,
                        created_at: b.created_at_ms,
                        previous_size_bytes: b.previous_size_bytes,
                        previous_created_at: b.previous_created_at_ms,
                        checksum: match b.checksum {
                            core::ChecksumCheck::Matched { sha256 } => {
                                w::ChecksumCheck::Matched(sha256)
                            }
                            core::ChecksumCheck::Mismatched { expected, actual } => {
                                w::ChecksumCheck::Mismatched(w::ChecksumMismatch {
                                    expected,
                                    actual,
                                })
                            }
                            core::ChecksumCheck::Unverified { sha256 } => {
                                w::ChecksumCheck::Unverified(sha256)
                            }
                        },
                        archive: match b.archive {
                            core::ArchiveCheck::Valid { entries } => {
                                w::ArchiveCheck::Valid(entries)
                            }
                            core::ArchiveCheck::Invalid { problem } => {
                                w::ArchiveCheck::Invalid(problem)
                            }
                            core::ArchiveCheck::NotArchive => w::ArchiveCheck::NotArchive,
                        },
                        manifest: match b.manifest {
                            core::ManifestCheck::Absent => w::ManifestCheck::Absent,
                            core::ManifestCheck::Valid { files } => w::ManifestCheck::Valid(files),
                            core::ManifestCheck::Invalid { problems } => {
                                w::ManifestCheck::Invalid(problems)
                            }
                        },
                        cross_region_copy: match b.cross_region_copy {
                            core::CopyCheck::NotConfigured => w::CopyCheck::NotConfigured,
                            core::CopyCheck::Present => w::CopyCheck::Present,
                            core::CopyCheck::Missing => w::CopyCheck::Missing,
                        },
                    })
                }
                core::ReplicationSubject::DeadMan(s) => {
                    w::ReplicationSubject::DeadMan(w::SourceStatus {
                        source: s.source,
                        newest_key: s.newest_key,
                        newest_at: s.newest_at_ms,
                    })
                }
            },
            config: config(i.config),
        }
    }
}

impl From<w::ReplicationDecision> for core::ReplicationDecision {
    fn from(d: w::ReplicationDecision) -> Self {
        core::ReplicationDecision {
            verdict: match d.verdict {
                w::Verdict::Ok => core::Verdict::Ok,
                w::Verdict::Warning => core::Verdict::Warning,
                w::Verdict::Breach => core::Verdict::Breach,
                w::Verdict::Corrupt => core::Verdict::Corrupt,
            },
            reason: d.reason,
            alerts: d.alerts.into_iter().map(Into::into).collect(),
        }
    }
}

// --------------------------------------------------------------------- alerts

impl From<core::AlertInput> for w::AlertInput {
    fn from(i: core::AlertInput) -> Self {
        let a = i.alert;
        w::AlertInput {
            now: i.now_ms,
            event_id: i.event_id,
            alert: w::IncomingAlert {
                source: match a.source {
                    core::AlertSource::Cloudwatch => w::AlertSource::Cloudwatch,
                    core::AlertSource::Kbha => w::AlertSource::Kbha,
                    core::AlertSource::Generic => w::AlertSource::Generic,
                },
                name: a.name,
                status: match a.status {
                    core::AlertStatus::Firing => w::AlertStatus::Firing,
                    core::AlertStatus::Resolved => w::AlertStatus::Resolved,
                },
                region: a.region,
                severity_hint: a.severity_hint.map(Into::into),
                summary: a.summary,
                body: a.body,
                labels: pairs(a.labels),
                at: a.at_ms,
            },
            active: i
                .active
                .into_iter()
                .map(|x| w::ActiveAlert {
                    dedup_key: x.dedup_key,
                    name: x.name,
                    region: x.region,
                    severity: x.severity.into(),
                    labels: pairs(x.labels),
                    since: x.since_ms,
                })
                .collect(),
            config: config(i.config),
        }
    }
}

impl From<w::AlertDecision> for core::AlertDecision {
    fn from(d: w::AlertDecision) -> Self {
        core::AlertDecision {
            severity: d.severity.into(),
            destinations: d.destinations,
            dedup_key: d.dedup_key,
            group_key: d.group_key,
            suppress: d.suppress.map(|s| match s {
                w::Suppression::MaintenanceWindow(n) => core::Suppression::MaintenanceWindow(n),
                w::Suppression::Silence(n) => core::Suppression::Silence(n),
                w::Suppression::InhibitedBy(n) => core::Suppression::InhibitedBy(n),
            }),
            reason: d.reason,
        }
    }
}

// ---------------------------------------------------------------- output size

/// Bytes a decision occupies: string bytes plus a small fixed cost per list
/// entry, so a flood of empty entries counts too.
pub(crate) trait OutputSize {
    /// The measured size.
    fn output_bytes(&self) -> usize;
}

const ENTRY_COST: usize = 8;

fn alerts_bytes(alerts: &[core::Alert]) -> usize {
    alerts
        .iter()
        .map(|a| ENTRY_COST + a.summary.len() + a.detail.len())
        .sum()
}

impl OutputSize for core::FailoverDecision {
    fn output_bytes(&self) -> usize {
        let action = match &self.action {
            core::FailoverAction::Hold => 0,
            core::FailoverAction::ShiftWeights { weights, .. } => weights
                .iter()
                .map(|w| ENTRY_COST + w.set_identifier.len())
                .sum(),
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
            Some(
                core::Suppression::MaintenanceWindow(n)
                | core::Suppression::Silence(n)
                | core::Suppression::InhibitedBy(n),
            ) => n.len(),
        };
        self.destinations
            .iter()
            .map(|d| ENTRY_COST + d.len())
            .sum::<usize>()
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
                         "health": "unknown", "alarm_state": "alarm", "alarm_state_since_ms": 3}],
            "last_change": {"at_ms": 2, "weights": [{"set_identifier": "p", "weight": 7}]},
            "config": {"a": "1", "b": "2"}
        }"#;
        let c: core::FailoverInput = serde_json::from_str(json).expect("parse");
        let i: w::FailoverInput = c.into();
        assert_eq!((i.now, i.event_id.as_str()), (5, "e"));
        let t = &i.targets[0];
        assert_eq!(
            (t.health, t.alarm_state, t.alarm_state_since),
            (w::Health::Unknown, w::AlarmState::Alarm, Some(3))
        );
        assert_eq!(t.replication_age_ms, None);
        assert_eq!(
            i.last_change.as_ref().map(|l| (l.at, l.weights[0].weight)),
            Some((2, 7))
        );
        assert_eq!(
            i.config.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
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
                weights: vec![w::Weight {
                    set_identifier: "abc".into(),
                    weight: 1,
                }],
                force: true,
            }),
            reason: "12345".into(),
            alerts: vec![w::Alert {
                severity: w::Severity::Warning,
                summary: "s".into(),
                detail: "dd".into(),
            }],
        };
        let c: core::FailoverDecision = d.into();
        assert_eq!(
            c.action,
            core::FailoverAction::ShiftWeights {
                weights: vec![core::Weight {
                    set_identifier: "abc".into(),
                    weight: 1
                }],
                force: true
            }
        );
        assert_eq!(c.alerts[0].severity, core::Severity::Warning);
        assert_eq!(
            c.output_bytes(),
            (ENTRY_COST + 3) + 5 + (ENTRY_COST + 1 + 2)
        );
    }

    #[test]
    fn refusals_keep_their_case() {
        let r: core::PolicyRefusal = w::PolicyError::InvalidConfig("`k`".into()).into();
        assert_eq!(r, core::PolicyRefusal::InvalidConfig("`k`".into()));
    }
}
