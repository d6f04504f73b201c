//! Domain types: the host-side mirror of `wit/kbha.wit`.
//!
//! These types are also the documented JSON formats used by `kbha policy eval`,
//! policy test cases and decision records (snake_case fields, times as
//! `*_ms` milliseconds since the Unix epoch, enums as lowercase strings,
//! variants tagged by `kind`). The one place that converts between them and
//! the WIT bindings is `kbha-policy-host`'s `convert` module (and the SDK's
//! `testing` module on the guest side).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
pub type TimestampMs = i64;

/// A policy's own parameters, `key -> value`. Ordered, so digests are stable.
pub type PolicyConfig = BTreeMap<String, String>;

/// How loud a policy log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Detail for debugging a policy.
    Debug,
    /// Normal operation.
    Info,
    /// Unusual, did not stop the decision.
    Warn,
    /// Something wrong.
    Error,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Needs attention during working hours.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The lowercase name used in JSON and SNS message attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A notice a policy (or a guardrail) asks to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// How urgent.
    pub severity: Severity,
    /// One line; the notification subject.
    pub summary: String,
    /// Longer explanation.
    #[serde(default)]
    pub detail: String,
}

/// Why a policy refused to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum PolicyRefusal {
    /// A config entry is missing or malformed.
    InvalidConfig(String),
    /// The input lacks something the policy needs.
    InvalidInput(String),
    /// Any other failure inside the policy.
    Internal(String),
}

impl std::fmt::Display for PolicyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyRefusal::InvalidConfig(m) => write!(f, "invalid config: {m}"),
            PolicyRefusal::InvalidInput(m) => write!(f, "invalid input: {m}"),
            PolicyRefusal::Internal(m) => write!(f, "internal: {m}"),
        }
    }
}

// ------------------------------------------------------------------- failover

/// State of a CloudWatch alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    /// Within threshold.
    Ok,
    /// Threshold breached.
    Alarm,
    /// Not enough data.
    InsufficientData,
}

impl AlarmState {
    /// Parses CloudWatch's spelling (`OK`, `ALARM`, `INSUFFICIENT_DATA`).
    pub fn from_cloudwatch(s: &str) -> Option<Self> {
        match s {
            "OK" => Some(AlarmState::Ok),
            "ALARM" => Some(AlarmState::Alarm),
            "INSUFFICIENT_DATA" => Some(AlarmState::InsufficientData),
            _ => None,
        }
    }

    /// CloudWatch's spelling.
    pub fn as_cloudwatch(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

/// A CloudWatch alarm state change, whatever shape it arrived in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// Alarm name.
    pub name: String,
    /// Region of the alarm.
    pub region: String,
    /// New state.
    pub state: AlarmState,
    /// Previous state, when given.
    #[serde(default)]
    pub previous_state: Option<AlarmState>,
    /// CloudWatch's reason text.
    #[serde(default)]
    pub reason: String,
    /// When the state changed.
    pub state_changed_at_ms: TimestampMs,
    /// Set identifier of the target this alarm speaks for (from configuration).
    #[serde(default)]
    pub target: Option<String>,
    /// Tags or labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Route 53 health-check verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
    /// Not configured or unreadable.
    Unknown,
}

/// One record of the weighted record set, with what is known of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// SetIdentifier.
    pub set_identifier: String,
    /// Region served from.
    pub region: String,
    /// Carries traffic in normal operation.
    #[serde(default)]
    pub primary: bool,
    /// Current weight.
    pub weight: u32,
    /// Health-check verdict.
    pub health: Health,
    /// The worst state of the alarms that speak for this target, as CloudWatch reports
    /// it now (or, for an alarm CloudWatch does not know, as its last event said).
    pub alarm_state: AlarmState,
    /// Since when `alarm_state` holds.
    #[serde(default)]
    pub alarm_state_since_ms: Option<TimestampMs>,
    /// Since when kbha has observed this target continuously up (health not failing, no
    /// alarm in ALARM or INSUFFICIENT_DATA); `None` while it is not up.
    #[serde(default)]
    pub up_since_ms: Option<TimestampMs>,
    /// When kbha last observed this target down (health failing or an alarm in ALARM);
    /// `None` when never, as far as the state object remembers.
    #[serde(default)]
    pub last_down_at_ms: Option<TimestampMs>,
    /// Age (at `now`) of the newest verified backup restorable here.
    #[serde(default)]
    pub replication_age_ms: Option<u64>,
}

/// What kbha makes of a target's health check and alarms taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Health check not failing and every alarm OK: it may be given traffic.
    Up,
    /// Health check failing or an alarm in ALARM: traffic should leave it.
    Down,
    /// Not down, but an alarm has insufficient data: not proven up, so no traffic is
    /// returned to it, and none is taken away for that alone.
    Unproven,
}

impl Target {
    /// The target's condition now. A failing health check makes it down whatever its
    /// alarms say (INSUFFICIENT_DATA never hides a failing check).
    pub fn condition(&self) -> Condition {
        if self.health == Health::Unhealthy || self.alarm_state == AlarmState::Alarm {
            Condition::Down
        } else if self.alarm_state == AlarmState::InsufficientData {
            Condition::Unproven
        } else {
            Condition::Up
        }
    }

    /// Whether the target has been observed up, without a break, for at least `for_ms` at `now_ms`.
    pub fn up_for(&self, for_ms: i64, now_ms: TimestampMs) -> bool {
        self.condition() == Condition::Up && self.up_since_ms.is_some_and(|s| now_ms.saturating_sub(s) >= for_ms)
    }
}

/// A weight for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weight {
    /// SetIdentifier.
    pub set_identifier: String,
    /// New weight.
    pub weight: u32,
}

/// The last change kbha applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastChange {
    /// When.
    pub at_ms: TimestampMs,
    /// The weights set.
    pub weights: Vec<Weight>,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// Why the failover policy is asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailoverTrigger {
    /// An alarm changed state.
    Alarm(Alarm),
    /// Scheduled re-evaluation.
    Schedule,
}

/// Everything the failover policy may know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverInput {
    /// Decision time.
    pub now_ms: TimestampMs,
    /// Event id.
    pub event_id: String,
    /// Why it is asked.
    pub trigger: FailoverTrigger,
    /// DNS name of the record set.
    pub record_name: String,
    /// Every target.
    pub targets: Vec<Target>,
    /// Last applied change.
    #[serde(default)]
    pub last_change: Option<LastChange>,
    /// Policy parameters.
    #[serde(default)]
    pub config: PolicyConfig,
}

/// What to do with the weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailoverAction {
    /// Leave them.
    Hold,
    /// Set new weights (unlisted targets keep theirs).
    ShiftWeights {
        /// New weights.
        weights: Vec<Weight>,
        /// Move traffic onto failing targets (break-glass only).
        #[serde(default)]
        force: bool,
    },
    /// Move to new weights in steps ([`crate::plan`]).
    ShiftInSteps {
        /// Weights at the end (unlisted targets keep theirs).
        weights: Vec<Weight>,
        /// The steps, in order; the last at 100 %.
        steps: Vec<PlanStep>,
    },
}

/// One step of a stepped shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// Percent of the way from the weights at the plan's start to its end (1..=100).
    pub percent: u8,
    /// How long the step holds, its raised targets up, before the next one.
    pub bake_ms: u64,
}

/// The failover policy's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverDecision {
    /// Hold or shift.
    pub action: FailoverAction,
    /// Why.
    pub reason: String,
    /// Notices to send.
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

// ---------------------------------------------------------------- replication

/// SHA-256 check of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChecksumCheck {
    /// Matched the expected hash.
    Matched {
        /// Hex SHA-256.
        sha256: String,
    },
    /// Differs from the expected hash.
    Mismatched {
        /// Expected hex SHA-256.
        expected: String,
        /// Actual hex SHA-256.
        actual: String,
    },
    /// Nothing to compare with.
    Unverified {
        /// Actual hex SHA-256.
        sha256: String,
    },
}

/// gzip/tar walk of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ArchiveCheck {
    /// Every entry read.
    Valid {
        /// Number of tar entries.
        entries: u64,
    },
    /// Damaged.
    Invalid {
        /// Where and how.
        problem: String,
    },
    /// Not an archive kbha walks.
    NotArchive,
}

/// Manifest check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ManifestCheck {
    /// No manifest in this layout.
    Absent,
    /// Every listed file matched.
    Valid {
        /// Number of files.
        files: u32,
    },
    /// Problems, one line each.
    Invalid {
        /// The problems.
        problems: Vec<String>,
    },
}

/// Cross-region copy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyCheck {
    /// Not configured.
    NotConfigured,
    /// Present with the same size.
    Present,
    /// Missing or different.
    Missing,
}

/// Facts about one backup that landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFacts {
    /// Bucket.
    pub bucket: String,
    /// Decoded key.
    pub key: String,
    /// Logical source.
    pub source: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Creation time.
    pub created_at_ms: TimestampMs,
    /// Previous backup's size.
    #[serde(default)]
    pub previous_size_bytes: Option<u64>,
    /// Previous backup's creation time.
    #[serde(default)]
    pub previous_created_at_ms: Option<TimestampMs>,
    /// SHA-256 check.
    pub checksum: ChecksumCheck,
    /// Archive walk.
    pub archive: ArchiveCheck,
    /// Manifest check.
    pub manifest: ManifestCheck,
    /// Cross-region copy.
    pub cross_region_copy: CopyCheck,
}

/// Newest backup of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// Source name.
    pub source: String,
    /// Key of the newest verified backup, if any.
    #[serde(default)]
    pub newest_key: Option<String>,
    /// Creation time of the newest verified backup, if any.
    #[serde(default)]
    pub newest_at_ms: Option<TimestampMs>,
}

/// What the replication policy judges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplicationSubject {
    /// A backup landed.
    Backup(BackupFacts),
    /// Scheduled check of one source.
    DeadMan(SourceStatus),
}

/// Everything the replication policy may know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationInput {
    /// Decision time.
    pub now_ms: TimestampMs,
    /// Event id.
    pub event_id: String,
    /// Subject.
    pub subject: ReplicationSubject,
    /// Policy parameters.
    #[serde(default)]
    pub config: PolicyConfig,
}

/// Replication verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Worth a look.
    Warning,
    /// RPO breached.
    Breach,
    /// Untrustworthy.
    Corrupt,
}

/// The replication policy's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationDecision {
    /// Verdict.
    pub verdict: Verdict,
    /// Why.
    pub reason: String,
    /// Notices.
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// Per-region replication status, written by the replication verifier
/// (`<status prefix><region>.json`) and read by the failover function's RPO gate.
///
/// Freshness is kept per source (`sources`): a fresh Redis backup must not hide a stale
/// ChromaDB one. The top-level fields are the *oldest* source's, what a reader that
/// needs every source in the region sees; a reader that needs only some sources asks
/// [`ReplicationStatus::oldest_of`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// Region.
    pub region: String,
    /// Creation time of the oldest source's newest verified (not corrupt) backup that can
    /// be restored there; the newest backup's, when `sources` is empty (an older writer).
    pub newest_verified_backup_at_ms: TimestampMs,
    /// Its key.
    #[serde(default)]
    pub key: Option<String>,
    /// Its source name.
    #[serde(default)]
    pub source: Option<String>,
    /// Each source's newest verified backup restorable in the region, by source name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, SourceFreshness>,
}

/// One source's newest verified backup in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFreshness {
    /// Its creation time.
    pub newest_verified_backup_at_ms: TimestampMs,
    /// Its key.
    pub key: String,
}

/// How fresh a region is for the sources a reader needs ([`ReplicationStatus::oldest_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// The oldest needed source's newest verified backup.
    Oldest {
        /// Its creation time.
        at_ms: TimestampMs,
        /// The source that sets it (the one that would hold the RPO gate); `None` for a
        /// status object without per-source entries.
        source: Option<String>,
    },
    /// A needed source has no verified backup restorable in the region.
    Missing(String),
}

impl ReplicationStatus {
    /// A status with one source's backup.
    pub fn new(region: &str, source: &str, at_ms: TimestampMs, key: &str) -> Self {
        let mut s = ReplicationStatus {
            region: region.to_owned(),
            newest_verified_backup_at_ms: at_ms,
            key: None,
            source: None,
            sources: BTreeMap::new(),
        };
        s.raise(source, at_ms, key);
        s
    }

    /// Moves `source` forward to `at_ms` (never back) and the top level to the oldest
    /// source. Returns whether anything changed. A status from an older writer (no
    /// `sources`) keeps what it knew: its top level becomes its source's entry.
    pub fn raise(&mut self, source: &str, at_ms: TimestampMs, key: &str) -> bool {
        if self.sources.is_empty()
            && let (Some(old_source), Some(old_key)) = (&self.source, &self.key)
        {
            let old = SourceFreshness { newest_verified_backup_at_ms: self.newest_verified_backup_at_ms, key: old_key.clone() };
            self.sources.insert(old_source.clone(), old);
        }
        if self.sources.get(source).is_some_and(|f| f.newest_verified_backup_at_ms >= at_ms) {
            return false;
        }
        self.sources.insert(source.to_owned(), SourceFreshness { newest_verified_backup_at_ms: at_ms, key: key.to_owned() });
        if let Some((name, oldest)) = self.sources.iter().min_by_key(|(name, f)| (f.newest_verified_backup_at_ms, *name)) {
            self.newest_verified_backup_at_ms = oldest.newest_verified_backup_at_ms;
            self.key = Some(oldest.key.clone());
            self.source = Some(name.clone());
        }
        true
    }

    /// The oldest of the `needed` sources (every source in the object when `needed` is
    /// empty). A status without per-source entries answers with its top level.
    pub fn oldest_of(&self, needed: &[String]) -> Freshness {
        if self.sources.is_empty() {
            return Freshness::Oldest { at_ms: self.newest_verified_backup_at_ms, source: self.source.clone() };
        }
        if let Some(missing) = needed.iter().find(|n| !self.sources.contains_key(*n)) {
            return Freshness::Missing(missing.clone());
        }
        self.sources
            .iter()
            .filter(|(name, _)| needed.is_empty() || needed.contains(name))
            .min_by_key(|(name, f)| (f.newest_verified_backup_at_ms, *name))
            .map(|(name, f)| Freshness::Oldest { at_ms: f.newest_verified_backup_at_ms, source: Some(name.clone()) })
            .unwrap_or(Freshness::Oldest { at_ms: self.newest_verified_backup_at_ms, source: self.source.clone() })
    }
}

// --------------------------------------------------------------------- alerts

/// Where an incoming message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSource {
    /// CloudWatch alarm notification.
    Cloudwatch,
    /// kbha notice.
    Kbha,
    /// Anything else.
    Generic,
}

impl AlertSource {
    /// The serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSource::Cloudwatch => "cloudwatch",
            AlertSource::Kbha => "kbha",
            AlertSource::Generic => "generic",
        }
    }
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Holds.
    Firing,
    /// Cleared.
    Resolved,
}

/// An incoming alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingAlert {
    /// Origin.
    pub source: AlertSource,
    /// Name.
    pub name: String,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Region, when known.
    #[serde(default)]
    pub region: Option<String>,
    /// Suggested severity.
    #[serde(default)]
    pub severity_hint: Option<Severity>,
    /// Summary.
    pub summary: String,
    /// Raw text.
    pub body: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it happened.
    pub at_ms: TimestampMs,
}

/// A firing alert from the router's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveAlert {
    /// Dedup key.
    pub dedup_key: String,
    /// Name.
    pub name: String,
    /// Region.
    #[serde(default)]
    pub region: Option<String>,
    /// Severity.
    pub severity: Severity,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Firing since.
    pub since_ms: TimestampMs,
}

/// Everything the alert policy may know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertInput {
    /// Decision time.
    pub now_ms: TimestampMs,
    /// Event id.
    pub event_id: String,
    /// The alert.
    pub alert: IncomingAlert,
    /// Firing alerts.
    #[serde(default)]
    pub active: Vec<ActiveAlert>,
    /// Policy parameters.
    #[serde(default)]
    pub config: PolicyConfig,
}

/// Why an alert is not delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Suppression {
    /// Maintenance window.
    MaintenanceWindow(String),
    /// Silence.
    Silence(String),
    /// Inhibited by a firing alert (its dedup key).
    InhibitedBy(String),
}

/// The alert policy's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertDecision {
    /// Severity.
    pub severity: Severity,
    /// Logical destinations.
    pub destinations: Vec<String>,
    /// Dedup key.
    pub dedup_key: String,
    /// Group key.
    pub group_key: String,
    /// Suppression, if any.
    #[serde(default)]
    pub suppress: Option<Suppression>,
    /// Why.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_source_does_not_hide_a_stale_one() {
        let mut s = ReplicationStatus::new("us-west-2", "chromadb", 1_000, "chromadb/a.tar.gz");
        assert!(s.raise("redis", 9_000, "redis/b.rdb.gz"));
        // The top level is the oldest source, what a reader needing both must go by.
        assert_eq!((s.newest_verified_backup_at_ms, s.source.as_deref()), (1_000, Some("chromadb")));
        assert_eq!(s.oldest_of(&[]), Freshness::Oldest { at_ms: 1_000, source: Some("chromadb".into()) });
        assert_eq!(s.oldest_of(&["redis".into()]), Freshness::Oldest { at_ms: 9_000, source: Some("redis".into()) });
        assert_eq!(s.oldest_of(&["redis".into(), "kafka".into()]), Freshness::Missing("kafka".into()));
        // Never back; forward moves the top level to the next oldest.
        assert!(!s.raise("chromadb", 500, "chromadb/old.tar.gz"));
        assert!(s.raise("chromadb", 12_000, "chromadb/c.tar.gz"));
        assert_eq!((s.newest_verified_backup_at_ms, s.key.as_deref()), (9_000, Some("redis/b.rdb.gz")));
    }

    #[test]
    fn a_status_from_an_older_writer_reads_as_before_and_keeps_its_source_on_the_next_raise() {
        let mut s: ReplicationStatus =
            serde_json::from_str(r#"{"region":"us-west-2","newest_verified_backup_at_ms":5000,"key":"k","source":"redis"}"#)
                .expect("parse");
        assert_eq!(s.oldest_of(&["chromadb".into()]), Freshness::Oldest { at_ms: 5_000, source: Some("redis".into()) });
        assert!(s.raise("chromadb", 4_000, "c"));
        assert_eq!(s.oldest_of(&[]), Freshness::Oldest { at_ms: 4_000, source: Some("chromadb".into()) });
        assert_eq!(s.oldest_of(&["redis".into()]), Freshness::Oldest { at_ms: 5_000, source: Some("redis".into()) });
        let v = serde_json::to_value(&s).expect("serialise");
        assert_eq!(v["sources"]["chromadb"]["newest_verified_backup_at_ms"], 4_000);
    }

    #[test]
    fn failover_decision_json_shape_is_tagged_by_kind() {
        let d = FailoverDecision {
            action: FailoverAction::ShiftWeights {
                weights: vec![Weight { set_identifier: "secondary".into(), weight: 100 }],
                force: false,
            },
            reason: "r".into(),
            alerts: vec![],
        };
        let v = serde_json::to_value(&d).expect("serialise");
        assert_eq!(v["action"]["kind"], "shift_weights");
        assert_eq!(v["action"]["weights"][0]["weight"], 100);
        let back: FailoverDecision = serde_json::from_value(v).expect("parse back");
        assert_eq!(back, d);
    }

    #[test]
    fn alarm_state_round_trips_cloudwatch_spelling() {
        for s in ["OK", "ALARM", "INSUFFICIENT_DATA"] {
            let st = AlarmState::from_cloudwatch(s).expect("known state");
            assert_eq!(st.as_cloudwatch(), s);
        }
        assert_eq!(AlarmState::from_cloudwatch("alarm"), None);
    }
}
