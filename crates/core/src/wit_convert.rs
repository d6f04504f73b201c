//! Conversions between the WIT-generated types and kbha-core's domain types, written
//! once for both bindings generators: wasmtime's `bindgen!` in `kbha-policy-host` (the
//! host) and wit-bindgen in `kbha-policy-sdk`'s `testing` feature (native guest tests).
//! Both generate the same type and field names from `wit/kbha.wit`, so one body serves
//! both; inputs go core -> WIT, decisions come back WIT -> core.

/// Expands to the `From` conversions between `$crate`'s domain types and the WIT types
/// named through a module alias `w` that must be in scope at the call site
/// (`use crate::bindings::types as w;`).
#[macro_export]
macro_rules! wit_conversions {
    () => {
        fn config(c: $crate::PolicyConfig) -> Vec<w::ConfigEntry> {
            c.into_iter().map(|(key, value)| w::ConfigEntry { key, value }).collect()
        }

        fn pairs(m: std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
            m.into_iter().collect()
        }

        impl From<$crate::Level> for w::Level {
            fn from(l: $crate::Level) -> Self {
                match l {
                    $crate::Level::Debug => w::Level::Debug,
                    $crate::Level::Info => w::Level::Info,
                    $crate::Level::Warn => w::Level::Warn,
                    $crate::Level::Error => w::Level::Error,
                }
            }
        }

        impl From<w::Level> for $crate::Level {
            fn from(l: w::Level) -> Self {
                match l {
                    w::Level::Debug => $crate::Level::Debug,
                    w::Level::Info => $crate::Level::Info,
                    w::Level::Warn => $crate::Level::Warn,
                    w::Level::Error => $crate::Level::Error,
                }
            }
        }

        impl From<$crate::Severity> for w::Severity {
            fn from(s: $crate::Severity) -> Self {
                match s {
                    $crate::Severity::Info => w::Severity::Info,
                    $crate::Severity::Warning => w::Severity::Warning,
                    $crate::Severity::Critical => w::Severity::Critical,
                }
            }
        }

        impl From<w::Severity> for $crate::Severity {
            fn from(s: w::Severity) -> Self {
                match s {
                    w::Severity::Info => $crate::Severity::Info,
                    w::Severity::Warning => $crate::Severity::Warning,
                    w::Severity::Critical => $crate::Severity::Critical,
                }
            }
        }

        impl From<w::Alert> for $crate::Alert {
            fn from(a: w::Alert) -> Self {
                $crate::Alert { severity: a.severity.into(), summary: a.summary, detail: a.detail }
            }
        }

        impl From<w::PolicyError> for $crate::PolicyRefusal {
            fn from(e: w::PolicyError) -> Self {
                match e {
                    w::PolicyError::InvalidConfig(m) => $crate::PolicyRefusal::InvalidConfig(m),
                    w::PolicyError::InvalidInput(m) => $crate::PolicyRefusal::InvalidInput(m),
                    w::PolicyError::Internal(m) => $crate::PolicyRefusal::Internal(m),
                }
            }
        }

        // ------------------------------------------------------------------- failover

        impl From<$crate::AlarmState> for w::AlarmState {
            fn from(s: $crate::AlarmState) -> Self {
                match s {
                    $crate::AlarmState::Ok => w::AlarmState::Ok,
                    $crate::AlarmState::Alarm => w::AlarmState::Alarm,
                    $crate::AlarmState::InsufficientData => w::AlarmState::InsufficientData,
                }
            }
        }

        impl From<$crate::Health> for w::Health {
            fn from(h: $crate::Health) -> Self {
                match h {
                    $crate::Health::Healthy => w::Health::Healthy,
                    $crate::Health::Unhealthy => w::Health::Unhealthy,
                    $crate::Health::Unknown => w::Health::Unknown,
                }
            }
        }

        impl From<$crate::Alarm> for w::Alarm {
            fn from(a: $crate::Alarm) -> Self {
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

        impl From<$crate::Target> for w::Target {
            fn from(t: $crate::Target) -> Self {
                w::Target {
                    set_identifier: t.set_identifier,
                    region: t.region,
                    primary: t.primary,
                    weight: t.weight,
                    health: t.health.into(),
                    alarm_state: t.alarm_state.into(),
                    alarm_state_since: t.alarm_state_since_ms,
                    up_since: t.up_since_ms,
                    last_down_at: t.last_down_at_ms,
                    replication_age_ms: t.replication_age_ms,
                }
            }
        }

        impl From<$crate::Weight> for w::Weight {
            fn from(x: $crate::Weight) -> Self {
                w::Weight { set_identifier: x.set_identifier, weight: x.weight }
            }
        }

        impl From<w::Weight> for $crate::Weight {
            fn from(x: w::Weight) -> Self {
                $crate::Weight { set_identifier: x.set_identifier, weight: x.weight }
            }
        }

        impl From<$crate::FailoverInput> for w::FailoverInput {
            fn from(i: $crate::FailoverInput) -> Self {
                w::FailoverInput {
                    now: i.now_ms,
                    event_id: i.event_id,
                    trigger: match i.trigger {
                        $crate::FailoverTrigger::Alarm(a) => w::FailoverTrigger::Alarm(a.into()),
                        $crate::FailoverTrigger::Schedule => w::FailoverTrigger::Schedule,
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

        impl From<w::FailoverDecision> for $crate::FailoverDecision {
            fn from(d: w::FailoverDecision) -> Self {
                $crate::FailoverDecision {
                    action: match d.action {
                        w::FailoverAction::Hold => $crate::FailoverAction::Hold,
                        w::FailoverAction::ShiftWeights(s) => $crate::FailoverAction::ShiftWeights {
                            weights: s.weights.into_iter().map(Into::into).collect(),
                            force: s.force,
                        },
                        w::FailoverAction::ShiftInSteps(p) => $crate::FailoverAction::ShiftInSteps {
                            weights: p.weights.into_iter().map(Into::into).collect(),
                            steps: p.steps.into_iter().map(|s| $crate::PlanStep { percent: s.percent, bake_ms: s.bake_ms }).collect(),
                        },
                    },
                    reason: d.reason,
                    alerts: d.alerts.into_iter().map(Into::into).collect(),
                }
            }
        }

        // ---------------------------------------------------------------- replication

        impl From<$crate::ReplicationInput> for w::ReplicationInput {
            fn from(i: $crate::ReplicationInput) -> Self {
                w::ReplicationInput {
                    now: i.now_ms,
                    event_id: i.event_id,
                    subject: match i.subject {
                        $crate::ReplicationSubject::Backup(b) => w::ReplicationSubject::Backup(w::BackupFacts {
                            bucket: b.bucket,
                            key: b.key,
                            source: b.source,
                            size_bytes: b.size_bytes,
                            created_at: b.created_at_ms,
                            previous_size_bytes: b.previous_size_bytes,
                            previous_created_at: b.previous_created_at_ms,
                            checksum: match b.checksum {
                                $crate::ChecksumCheck::Matched { sha256 } => w::ChecksumCheck::Matched(sha256),
                                $crate::ChecksumCheck::Mismatched { expected, actual } => {
                                    w::ChecksumCheck::Mismatched(w::ChecksumMismatch { expected, actual })
                                }
                                $crate::ChecksumCheck::Unverified { sha256 } => w::ChecksumCheck::Unverified(sha256),
                            },
                            archive: match b.archive {
                                $crate::ArchiveCheck::Valid { entries } => w::ArchiveCheck::Valid(entries),
                                $crate::ArchiveCheck::Invalid { problem } => w::ArchiveCheck::Invalid(problem),
                                $crate::ArchiveCheck::NotArchive => w::ArchiveCheck::NotArchive,
                            },
                            manifest: match b.manifest {
                                $crate::ManifestCheck::Absent => w::ManifestCheck::Absent,
                                $crate::ManifestCheck::Valid { files } => w::ManifestCheck::Valid(files),
                                $crate::ManifestCheck::Invalid { problems } => w::ManifestCheck::Invalid(problems),
                            },
                            cross_region_copy: match b.cross_region_copy {
                                $crate::CopyCheck::NotConfigured => w::CopyCheck::NotConfigured,
                                $crate::CopyCheck::Present => w::CopyCheck::Present,
                                $crate::CopyCheck::Missing => w::CopyCheck::Missing,
                            },
                        }),
                        $crate::ReplicationSubject::DeadMan(s) => w::ReplicationSubject::DeadMan(w::SourceStatus {
                            source: s.source,
                            newest_key: s.newest_key,
                            newest_at: s.newest_at_ms,
                        }),
                    },
                    config: config(i.config),
                }
            }
        }

        impl From<w::ReplicationDecision> for $crate::ReplicationDecision {
            fn from(d: w::ReplicationDecision) -> Self {
                $crate::ReplicationDecision {
                    verdict: match d.verdict {
                        w::Verdict::Ok => $crate::Verdict::Ok,
                        w::Verdict::Warning => $crate::Verdict::Warning,
                        w::Verdict::Breach => $crate::Verdict::Breach,
                        w::Verdict::Corrupt => $crate::Verdict::Corrupt,
                    },
                    reason: d.reason,
                    alerts: d.alerts.into_iter().map(Into::into).collect(),
                }
            }
        }

        // --------------------------------------------------------------------- alerts

        impl From<$crate::AlertInput> for w::AlertInput {
            fn from(i: $crate::AlertInput) -> Self {
                let a = i.alert;
                w::AlertInput {
                    now: i.now_ms,
                    event_id: i.event_id,
                    alert: w::IncomingAlert {
                        source: match a.source {
                            $crate::AlertSource::Cloudwatch => w::AlertSource::Cloudwatch,
                            $crate::AlertSource::Kbha => w::AlertSource::Kbha,
                            $crate::AlertSource::Generic => w::AlertSource::Generic,
                        },
                        name: a.name,
                        status: match a.status {
                            $crate::AlertStatus::Firing => w::AlertStatus::Firing,
                            $crate::AlertStatus::Resolved => w::AlertStatus::Resolved,
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

        impl From<w::AlertDecision> for $crate::AlertDecision {
            fn from(d: w::AlertDecision) -> Self {
                $crate::AlertDecision {
                    severity: d.severity.into(),
                    destinations: d.destinations,
                    dedup_key: d.dedup_key,
                    group_key: d.group_key,
                    suppress: d.suppress.map(|s| match s {
                        w::Suppression::MaintenanceWindow(n) => $crate::Suppression::MaintenanceWindow(n),
                        w::Suppression::Silence(n) => $crate::Suppression::Silence(n),
                        w::Suppression::InhibitedBy(n) => $crate::Suppression::InhibitedBy(n),
                    }),
                    reason: d.reason,
                }
            }
        }
    };
}
