//! The replication verifier's handler: event -> normalise -> gather facts (S3 reads and
//! one streaming pass over the backup) -> policy -> verification record (create-once) ->
//! status for the failover RPO gate -> notice -> decision record.
//!
//! Exactly-once where it matters: the verification record is created with
//! `If-None-Match: *`, so a redelivered event finds it and changes nothing; the record
//! says whether its notice went out, so a retry after a crash between the record and the
//! notice sends the notice then (at least once, never silently lost). Two copies of one
//! event running at once send one notice: the record carries a claim on it
//! ([`kbha_lambda::claim`]), and only its holder publishes.

use std::collections::BTreeMap;
use std::time::Instant;

use kbha_aws::{AwsError, Notifier, ObjectHead, ObjectStore, PutCondition};
use kbha_core::backup_events::{BackupEvent, ObjectCreated, normalise_backup_event};
use kbha_core::events::EventError;
use kbha_core::time::format_timestamp;
use kbha_core::{
    Alert, BackupFacts, ChecksumCheck, CopyCheck, ManifestCheck, ReplicationDecision, ReplicationInput, ReplicationStatus,
    ReplicationSubject, Severity, SourceFreshness, SourceStatus, TimestampMs, Verdict,
};
use kbha_lambda::claim::{self, Claim, Holder};
use kbha_lambda::record::{Invocation, RecordHeader, RecordedInput, ms};
use kbha_policy_lifecycle::{Decided, Policies, Replication};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ManifestMode, SourceConfig, VerifierConfig};
use crate::manifest::{MANIFEST_SUFFIX, Manifest, SIDECAR_SUFFIX, is_companion, parse_sidecar};
use crate::stream::{Layout, ReadError, StreamFacts, scan};

/// Why an invocation failed. [`VerifierError::retryable`] tells Lambda whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// The event is not one the verifier understands.
    #[error(transparent)]
    Event(#[from] EventError),
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// Reading the backup failed part way (not a verdict on the backup).
    #[error("s3://{bucket}/{key}: {source}; the event will be retried")]
    Read {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// What failed.
        #[source]
        source: ReadError,
    },
    /// The object changed or was cut short while it was verified.
    #[error("s3://{bucket}/{key} changed while it was verified ({problem}); the event will be retried")]
    Changed {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// What differed.
        problem: String,
    },
    /// A verification record in S3 cannot be parsed.
    #[error("verification record s3://{bucket}/{key} is not valid: {message}; delete it to verify the backup again")]
    CorruptRecord {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Parse error.
        message: String,
    },
    /// A status object kept changing under concurrent writers.
    #[error("status object s3://{bucket}/{key} changed {attempts} times in a row; the event will be retried")]
    ConflictExhausted {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A restore-test event names a source that is not configured.
    #[error("the restore test names source `{name}`, which KBHA_BACKUP_SOURCES does not list (known: {known})")]
    UnknownSource {
        /// The name given.
        name: String,
        /// The configured names.
        known: String,
    },
    /// The restore test's scratch directory failed (not a verdict on the backup).
    #[error("restore test of `{name}`: {problem}; the event will be retried")]
    Scratch {
        /// Source under test.
        name: String,
        /// What failed.
        problem: String,
    },
    /// Another copy of the event holds the notice and has not finished sending it.
    #[error(
        "another invocation is sending the notice of verification record s3://{bucket}/{key} and has not finished; the event will be retried"
    )]
    NoticeInProgress {
        /// Bucket of the verification record.
        bucket: String,
        /// Key of the verification record.
        key: String,
    },
}

impl VerifierError {
    fn notice_in_progress(bucket: &str, key: &str) -> Self {
        VerifierError::NoticeInProgress { bucket: bucket.to_owned(), key: key.to_owned() }
    }

    /// Whether Lambda (or SNS) should deliver the event again.
    pub fn retryable(&self) -> bool {
        match self {
            VerifierError::Event(_) | VerifierError::CorruptRecord { .. } | VerifierError::UnknownSource { .. } => false,
            VerifierError::Aws(e) => e.retryable(),
            VerifierError::Read { .. }
            | VerifierError::Changed { .. }
            | VerifierError::ConflictExhausted { .. }
            | VerifierError::Scratch { .. }
            | VerifierError::NoticeInProgress { .. } => true,
        }
    }
}

/// What was done about one object or one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionTaken {
    /// A verification record was written.
    Recorded,
    /// The object was verified before (same ETag); nothing new was written.
    Duplicate,
    /// Not a backup this function checks (no source owns it, a manifest or sidecar, gone).
    Skipped,
    /// Dead-man check of one source.
    Checked,
    /// A restore test of one source's newest verified backup was run and recorded.
    RestoreTested,
}

pub use kbha_lambda::record::Durations;

/// One JSON line per object or source in the log, and the invocation's response. Its
/// first fields are the ones every function's record has ([`kbha_lambda::record`]).
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    /// The fields every function's record starts with ([`RecordHeader`]); `subject` is
    /// `s3://bucket/key` of the backup, `source:<name>` for the dead-man check,
    /// `restore:<name>` for a restore test; `guardrail` is always null (no guardrails here).
    #[serde(flatten)]
    pub header: RecordHeader<Option<Decided<ReplicationDecision>>, ActionTaken>,
    /// The facts the policy was given, for backups.
    pub facts: Option<BackupFacts>,
    /// The verdict (the policy's, or the recorded one for duplicates).
    pub verdict: Option<Verdict>,
    /// Why it was skipped.
    pub skipped: Option<String>,
    /// Key of the verification record in the state bucket.
    pub record_key: Option<String>,
    /// Regions whose status object moved forward.
    pub status_updated: Vec<String>,
    /// Scheduled check: backups whose missing cross-region copy has now arrived.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub copies_arrived: Vec<String>,
    /// Scheduled check: backups whose copy is still missing past the deadline.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub copies_given_up: Vec<String>,
    /// Restore tests: what the test found; scheduled checks: the source's last restore
    /// test (its duration is the restore part of the RTO).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<crate::restore_test::RestoreStatus>,
    /// Scheduled check: the notice that the last restore test is older than
    /// `KBHA_RESTORE_MAX_AGE_DAYS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_notice_id: Option<String>,
    /// SNS message id of the notice, when one was sent.
    pub notice_id: Option<String>,
}

kbha_lambda::record_header!(DecisionRecord, Option<Decided<ReplicationDecision>>, ActionTaken);

/// The backups of one source whose cross-region copy was missing when they were verified,
/// looked for again on each scheduled check (`<status prefix>pending-copies/<source>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCopies {
    /// Source name.
    pub source: String,
    /// Oldest first.
    pub copies: Vec<PendingCopy>,
}

/// A backup whose copy is looked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCopy {
    /// Key of the backup (its copy's key follows from the source's `copy`).
    pub key: String,
    /// The backup's creation time: what the copy region's status moves to.
    pub created_at_ms: TimestampMs,
    /// Its size, which the copy must have.
    pub size: u64,
    /// Its S3 SHA-256 checksum, when S3 holds one.
    pub sha256: Option<String>,
    /// When the copy was first found missing; the deadline counts from here.
    pub since_ms: TimestampMs,
}

/// A source keeps at most this many copies pending: a copy job that stopped altogether
/// would otherwise grow the list by one per backup until the deadline.
const MAX_PENDING_COPIES: usize = 200;

/// Adds `c` unless it is there; drops the oldest beyond [`MAX_PENDING_COPIES`].
fn add_pending(copies: &mut Vec<PendingCopy>, c: PendingCopy) -> bool {
    if copies.iter().any(|p| p.key == c.key) {
        return false;
    }
    copies.push(c);
    if copies.len() > MAX_PENDING_COPIES {
        let dropped = copies.len() - MAX_PENDING_COPIES;
        tracing::warn!(dropped, "too many cross-region copies pending; the oldest are no longer looked for");
        copies.drain(..dropped);
    }
    true
}

/// The verification record kept in S3, one per backup object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// Always `kbha.verification`.
    pub kind: String,
    /// Bucket of the backup.
    pub bucket: String,
    /// Key of the backup.
    pub key: String,
    /// ETag of the verified object: a new object under the same key is verified again.
    pub etag: String,
    /// Source name.
    pub source: String,
    /// Region of the source bucket.
    pub region: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Why.
    pub reason: String,
    /// The facts the verdict rests on.
    pub facts: BackupFacts,
    /// Alerts the policy raised.
    pub alerts: Vec<Alert>,
    /// Event that caused the verification.
    pub event_id: String,
    /// When it was verified.
    pub verified_at_ms: TimestampMs,
    /// Source of the policy that decided (`hold` when none could).
    pub decided_by: String,
    /// Configured policy's source and digest.
    pub policy_source: String,
    /// Digest of the configured policy.
    pub policy_digest: String,
    /// Whether the notice for a non-ok verdict was published.
    pub notified: bool,
    /// Who publishes the notice while it is due; absent once sent, or when none is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifying: Option<Claim>,
}

/// The replication verifier, generic over its AWS dependencies.
pub struct VerifierFunction<S, N> {
    pub(crate) cfg: VerifierConfig,
    pub(crate) store: S,
    notifier: N,
    policies: Policies<Replication>,
    /// Stores for the cross-region copies' regions (S3 redirects requests for another
    /// region's bucket, which the SDK does not follow); `store` serves the others.
    regional: BTreeMap<String, S>,
}

/// Writers racing on one status object get this many tries.
const STATUS_ATTEMPTS: u32 = 5;

impl<S: ObjectStore, N: Notifier> VerifierFunction<S, N> {
    /// Wires configuration, AWS adapters and policies.
    pub fn new(cfg: VerifierConfig, store: S, notifier: N, policies: Policies<Replication>) -> Self {
        VerifierFunction { cfg, store, notifier, policies, regional: BTreeMap::new() }
    }

    /// Uses `store` for buckets in `region` (the cross-region copies).
    pub fn with_region_store(mut self, region: &str, store: S) -> Self {
        self.regional.insert(region.to_owned(), store);
        self
    }

    /// Handles one invocation. Every object is attempted; if any failed, the first
    /// failure is returned after the others were handled (a retry finds their records
    /// and changes nothing for them). Decided at `inv.now_ms`; the records carry `inv.request_id`.
    pub async fn handle(&self, event: &Value, inv: Invocation) -> Result<Vec<DecisionRecord>, VerifierError> {
        let event = normalise_backup_event(event).inspect_err(|e| tracing::error!("{e}"))?;
        let mut records = Vec::new();
        let mut first_error = None;
        match event {
            BackupEvent::Objects { created, skipped } => {
                for line in skipped {
                    tracing::info!("skipped: {line}");
                }
                for object in created {
                    match self.verify_object(&object, &inv).await {
                        Ok(rec) => records.push(rec),
                        Err(e) => {
                            tracing::error!(bucket = %object.bucket, key = %object.key, retryable = e.retryable(), "{e}");
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            BackupEvent::Schedule { event_id, .. } => {
                for source in &self.cfg.sources {
                    match self.dead_man(source, &event_id, &inv).await {
                        Ok(rec) => records.push(rec),
                        Err(e) => {
                            tracing::error!(source = %source.name, retryable = e.retryable(), "{e}");
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            BackupEvent::RestoreTest { event_id, source } => {
                let sources: Vec<&SourceConfig> = match &source {
                    None => self.cfg.sources.iter().collect(),
                    Some(name) => match self.cfg.sources.iter().find(|s| &s.name == name) {
                        Some(s) => vec![s],
                        None => {
                            let known = self.cfg.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
                            let e = VerifierError::UnknownSource { name: name.clone(), known };
                            tracing::error!("{e}");
                            return Err(e);
                        }
                    },
                };
                for source in sources {
                    match self.restore_test(source, &event_id, &inv).await {
                        Ok(rec) => records.push(rec),
                        Err(e) => {
                            tracing::error!(source = %source.name, retryable = e.retryable(), "{e}");
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
        for rec in &records {
            // The decision record is the function's log line; stdout is what Lambda ships.
            println!("{}", serde_json::to_string(rec).unwrap_or_default());
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(records),
        }
    }

    pub(crate) fn record(&self, event_id: &str, inv: &Invocation, subject: String, action: ActionTaken) -> DecisionRecord {
        DecisionRecord {
            header: RecordHeader::new("replication", event_id, inv, subject, None, action),
            facts: None,
            verdict: None,
            skipped: None,
            record_key: None,
            status_updated: Vec::new(),
            copies_arrived: Vec::new(),
            copies_given_up: Vec::new(),
            restore_test: None,
            restore_notice_id: None,
            notice_id: None,
        }
    }

    /// Whether a key belongs to kbha's own records (when they share the backup bucket).
    fn is_own(&self, bucket: &str, key: &str) -> bool {
        bucket == self.cfg.state_bucket && (key.starts_with(&self.cfg.record_prefix) || key.starts_with(&self.cfg.status_prefix))
    }

    async fn verify_object(&self, o: &ObjectCreated, inv: &Invocation) -> Result<DecisionRecord, VerifierError> {
        let now_ms = inv.now_ms;
        // Tells this invocation's notice claim from another copy's.
        let me = claim::token();
        let started = Instant::now();
        let subject = format!("s3://{}/{}", o.bucket, o.key);
        let mut rec = self.record(&o.event_id, inv, subject, ActionTaken::Skipped);
        let skip = |mut rec: DecisionRecord, why: &str| {
            rec.skipped = Some(why.to_owned());
            Ok(rec)
        };
        if self.is_own(&o.bucket, &o.key) {
            return skip(rec, "a kbha record, not a backup");
        }
        if is_companion(&o.key) {
            return skip(rec, "a manifest or checksum sidecar; checked with its backup");
        }
        let Some(source) = self.cfg.source_of(&o.bucket, &o.key) else {
            return skip(rec, "no configured source owns this bucket and prefix");
        };
        let Some(head) = self.store.head(&o.bucket, &o.key).await? else {
            return skip(rec, "the object no longer exists");
        };
        let record_key = format!("{}{}/{}.json", self.cfg.record_prefix, o.bucket, o.key);
        rec.record_key = Some(record_key.clone());
        let existing = self.read_record(&record_key).await?;
        if let Some((previous, etag)) = &existing
            && previous.etag == head.etag
        {
            return self.duplicate(rec, previous.clone(), etag.clone(), &me).await;
        }

        let facts = self.gather(source, o, &head).await?;
        rec.durations.gather_ms = ms(started);

        let decided_at = Instant::now();
        let input = ReplicationInput {
            now_ms,
            event_id: o.event_id.clone(),
            subject: ReplicationSubject::Backup(facts.clone()),
            config: self.cfg.policy_config.clone(),
        };
        rec.input = RecordedInput::of(&input);
        let decided = self.policies.decide(&input);
        rec.durations.decide_ms = ms(decided_at);

        let acted_at = Instant::now();
        let verdict = decided.decision.verdict;
        let vrec = VerificationRecord {
            kind: "kbha.verification".into(),
            bucket: o.bucket.clone(),
            key: o.key.clone(),
            etag: head.etag.clone(),
            source: source.name.clone(),
            region: source.region.clone(),
            verdict,
            reason: decided.decision.reason.clone(),
            facts: facts.clone(),
            alerts: decided.decision.alerts.clone(),
            event_id: o.event_id.clone(),
            verified_at_ms: now_ms,
            decided_by: decided.decided_by.clone(),
            policy_source: decided.policy_source.clone(),
            policy_digest: decided.policy_digest.clone(),
            notified: false,
            // The notice is claimed in the same create that records the verdict, so of two
            // copies of this event only the one whose record stands publishes it.
            notifying: (verdict != Verdict::Ok || decided.fault_alert.is_some()).then(|| Claim::new(&me, kbha_lambda::lambda::now_ms())),
        };
        let cond = match &existing {
            Some((_, etag)) => PutCondition::IfMatch(etag.clone()),
            None => PutCondition::IfNoneMatch,
        };
        let record_etag = match self.store.put(&self.cfg.state_bucket, &record_key, to_json(&vrec), cond).await {
            Ok(etag) => etag,
            Err(e) if e.is_conflict() => {
                // Another invocation verified the same object first: its record stands.
                if let Some((theirs, etag)) = self.read_record(&record_key).await?
                    && theirs.etag == head.etag
                {
                    return self.duplicate(rec, theirs, etag, &me).await;
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        rec.action = ActionTaken::Recorded;
        rec.verdict = Some(verdict);
        rec.facts = Some(facts.clone());

        if verdict != Verdict::Corrupt && decided.decided_by != "hold" {
            let mut regions = vec![source.region.clone()];
            if facts.cross_region_copy == CopyCheck::Present
                && let Some(copy) = &source.copy
            {
                regions.push(copy.region.clone());
            }
            for region in regions {
                if self.raise_status(&region, facts.created_at_ms, &o.key, &source.name).await? {
                    rec.status_updated.push(region);
                }
            }
            if facts.cross_region_copy == CopyCheck::Missing {
                // S3 replication lags: the scheduled check looks for the copy again.
                let pending = PendingCopy {
                    key: o.key.clone(),
                    created_at_ms: facts.created_at_ms,
                    size: head.size,
                    sha256: head.sha256_checksum.clone(),
                    since_ms: now_ms,
                };
                self.update_pending(&source.name, |copies| add_pending(copies, pending.clone())).await?;
            }
        }
        if vrec.notifying.is_some() {
            rec.notice_id = self.deliver(&record_key, vrec, record_etag, &me, &decided.faults).await?;
        }
        rec.policy = Some(decided);
        rec.durations.act_ms = ms(acted_at);
        Ok(rec)
    }

    /// The object was verified before: finish what that run may not have (the status
    /// objects, the notice), nothing else.
    async fn duplicate(
        &self,
        mut rec: DecisionRecord,
        previous: VerificationRecord,
        etag: String,
        me: &str,
    ) -> Result<DecisionRecord, VerifierError> {
        rec.action = ActionTaken::Duplicate;
        rec.verdict = Some(previous.verdict);
        // The run that wrote the record may have failed before raising the status
        // objects; raising is idempotent (never backwards), so a retry completes it.
        if previous.verdict != Verdict::Corrupt && previous.decided_by != "hold" {
            let source = self.cfg.sources.iter().find(|s| s.name == previous.source);
            let mut regions = vec![previous.region.clone()];
            if previous.facts.cross_region_copy == CopyCheck::Present
                && let Some(copy) = source.and_then(|s| s.copy.as_ref())
            {
                regions.push(copy.region.clone());
            }
            for region in regions {
                if self.raise_status(&region, previous.facts.created_at_ms, &previous.key, &previous.source).await? {
                    rec.status_updated.push(region);
                }
            }
            if previous.facts.cross_region_copy == CopyCheck::Missing && source.is_some_and(|s| s.copy.is_some()) {
                // As the first run would have; the size alone identifies the copy here.
                let pending = PendingCopy {
                    key: previous.key.clone(),
                    created_at_ms: previous.facts.created_at_ms,
                    size: previous.facts.size_bytes,
                    sha256: None,
                    since_ms: previous.verified_at_ms,
                };
                self.update_pending(&previous.source, |copies| add_pending(copies, pending.clone())).await?;
            }
        }
        // Due: a non-ok verdict (records written before claims existed say no more), or
        // a claim, which is only written when a notice is due.
        if (previous.verdict != Verdict::Ok || previous.notifying.is_some()) && !previous.notified {
            let key = rec.record_key.clone().unwrap_or_default();
            rec.notice_id = self.deliver(&key, previous, etag, me, &[]).await?;
        }
        Ok(rec)
    }

    /// Publishes the record's notice when this invocation holds its claim, or can take
    /// it over (released, or its holder's lease ran out), then marks it sent; waits while
    /// another copy holds it. `None`: sent by another copy meanwhile.
    async fn deliver(
        &self,
        key: &str,
        mut v: VerificationRecord,
        mut etag: String,
        me: &str,
        faults: &[kbha_policy_lifecycle::PolicyFault],
    ) -> Result<Option<String>, VerifierError> {
        let started = Instant::now();
        let bucket = &self.cfg.state_bucket;
        loop {
            if v.notified {
                return Ok(None);
            }
            let now = kbha_lambda::lambda::now_ms();
            match v.notifying.as_ref().map_or(Holder::Free, |c| c.holder(me, now)) {
                Holder::Mine => {
                    let sent = self.notify(&v, faults).await;
                    match &sent {
                        Ok(_) => {
                            v.notified = true;
                            v.notifying = None;
                        }
                        // Released, so the retry need not wait for the lease.
                        Err(_) => {
                            if let Some(c) = v.notifying.as_mut() {
                                c.release();
                            }
                        }
                    }
                    if let Err(e) = self.store.put(bucket, key, to_json(&v), PutCondition::IfMatch(etag)).await {
                        // Sent but not marked: a retry after the lease sends it once more.
                        // Failed and not released: a retry waits for the lease.
                        tracing::warn!(record = %key, "could not update the notice claim: {e}");
                    }
                    return sent.map(Some);
                }
                Holder::Free => {
                    v.notifying = Some(Claim::new(me, now));
                    match self.store.put(bucket, key, to_json(&v), PutCondition::IfMatch(etag.clone())).await {
                        Ok(new) => etag = new,
                        Err(e) if e.is_conflict() => (v, etag) = self.reread(key).await?,
                        Err(e) => return Err(e.into()),
                    }
                }
                Holder::Other => {
                    if started.elapsed() >= claim::WAIT {
                        return Err(VerifierError::notice_in_progress(bucket, key));
                    }
                    tokio::time::sleep(claim::POLL).await;
                    (v, etag) = self.reread(key).await?;
                }
            }
        }
    }

    /// The record again, while delivering its notice (it cannot vanish: records are
    /// only ever replaced).
    async fn reread(&self, key: &str) -> Result<(VerificationRecord, String), VerifierError> {
        self.read_record(key).await?.ok_or_else(|| VerifierError::Changed {
            bucket: self.cfg.state_bucket.clone(),
            key: key.to_owned(),
            problem: "the verification record disappeared while its notice was sent".into(),
        })
    }

    async fn read_record(&self, key: &str) -> Result<Option<(VerificationRecord, String)>, VerifierError> {
        let Some(obj) = self.store.get(&self.cfg.state_bucket, key).await? else {
            return Ok(None);
        };
        let parsed = serde_json::from_slice(&obj.bytes).map_err(|e| VerifierError::CorruptRecord {
            bucket: self.cfg.state_bucket.clone(),
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Some((parsed, obj.etag)))
    }

    /// Size, checksums, manifest, archive walk, previous backup and copy of one object.
    async fn gather(&self, source: &SourceConfig, o: &ObjectCreated, head: &ObjectHead) -> Result<BackupFacts, VerifierError> {
        let layout = Layout::of_key(&o.key);
        let mut manifest_problem = None;
        let manifest = match source.manifest {
            ManifestMode::None => None,
            mode => match self.store.get(&o.bucket, &format!("{}{MANIFEST_SUFFIX}", o.key)).await? {
                Some(obj) => match Manifest::parse(&obj.bytes) {
                    Ok(m) => Some(m),
                    Err(problem) => {
                        manifest_problem = Some(problem);
                        None
                    }
                },
                None if mode == ManifestMode::Required => {
                    manifest_problem = Some(format!("manifest `{}{MANIFEST_SUFFIX}` is missing", o.key));
                    None
                }
                None => None,
            },
        };
        let sidecar = match self.store.get(&o.bucket, &format!("{}{SIDECAR_SUFFIX}", o.key)).await? {
            Some(obj) => Some(parse_sidecar(&obj.bytes)),
            None => None,
        };
        // Expected hashes, each with where it came from.
        let mut expected: Vec<String> = Vec::new();
        if let Some(h) = manifest.as_ref().and_then(|m| m.archive.as_ref()).and_then(|a| a.sha256.as_ref()) {
            expected.push(h.to_ascii_lowercase());
        }
        match &sidecar {
            Some(Ok(h)) => expected.push(h.clone()),
            Some(Err(problem)) => manifest_problem = manifest_problem.or_else(|| Some(problem.clone())),
            None => {}
        }
        if let Some(h) = &head.sha256_checksum {
            expected.push(h.clone());
        }
        let hash_files = manifest.as_ref().is_some_and(|m| !m.files.is_empty());
        let must_stream = layout != Layout::Opaque || head.sha256_checksum.is_none() || hash_files;
        let streamed = if must_stream { Some(self.stream(o, head, layout, hash_files).await?) } else { None };

        let actual = streamed.as_ref().map(|s| s.sha256.clone()).or_else(|| head.sha256_checksum.clone()).unwrap_or_default();
        let checksum = match expected.iter().find(|e| **e != actual) {
            Some(e) => ChecksumCheck::Mismatched { expected: e.clone(), actual },
            None if expected.is_empty() => ChecksumCheck::Unverified { sha256: actual },
            None => ChecksumCheck::Matched { sha256: actual },
        };
        let archive = streamed.as_ref().map_or(kbha_core::ArchiveCheck::NotArchive, |s| s.archive.clone());
        let manifest_check = match (&manifest, manifest_problem) {
            (_, Some(problem)) => ManifestCheck::Invalid { problems: vec![problem] },
            (None, None) => ManifestCheck::Absent,
            (Some(m), None) => {
                let files = streamed.as_ref().map(|s| s.files.clone()).unwrap_or_default();
                let mut check = if m.files.is_empty() { ManifestCheck::Valid { files: 0 } } else { m.check(&files) };
                if let Some(size) = m.archive.as_ref().and_then(|a| a.size)
                    && size != head.size
                {
                    let problem = format!("the archive has {} bytes, manifest says {size}", head.size);
                    check = match check {
                        ManifestCheck::Invalid { mut problems } => {
                            problems.insert(0, problem);
                            ManifestCheck::Invalid { problems }
                        }
                        _ => ManifestCheck::Invalid { problems: vec![problem] },
                    };
                }
                check
            }
        };
        let created_at_ms = match manifest.as_ref().map(Manifest::created_at_ms) {
            Some(Ok(Some(at))) => at,
            _ => head.last_modified_ms,
        };
        let previous = self.previous_backup(source, &o.key, head).await?;
        let cross_region_copy = self.copy_check(source, &o.key, head).await?;
        Ok(BackupFacts {
            bucket: o.bucket.clone(),
            key: o.key.clone(),
            source: source.name.clone(),
            size_bytes: head.size,
            created_at_ms,
            previous_size_bytes: previous.as_ref().map(|p| p.size),
            previous_created_at_ms: previous.map(|p| p.last_modified_ms),
            checksum,
            archive,
            manifest: manifest_check,
            cross_region_copy,
        })
    }

    /// One pass over the object on a blocking thread, fed from the S3 body as it arrives.
    async fn stream(&self, o: &ObjectCreated, head: &ObjectHead, layout: Layout, hash_files: bool) -> Result<StreamFacts, VerifierError> {
        let changed = |problem: String| VerifierError::Changed { bucket: o.bucket.clone(), key: o.key.clone(), problem };
        let Some(body) = self.store.open(&o.bucket, &o.key).await? else {
            return Err(changed("it was deleted".into()));
        };
        if body.etag != head.etag {
            return Err(changed(format!("ETag {} became {}", head.etag, body.etag)));
        }
        let reader = tokio_util::io::SyncIoBridge::new(body.reader);
        let facts = tokio::task::spawn_blocking(move || scan(reader, layout, hash_files))
            .await
            .map_err(|e| changed(format!("the verifying thread failed: {e}")))?
            .map_err(|source| VerifierError::Read { bucket: o.bucket.clone(), key: o.key.clone(), source })?;
        if facts.bytes != head.size {
            return Err(changed(format!("read {} bytes of {}", facts.bytes, head.size)));
        }
        Ok(facts)
    }

    /// The newest other backup of the source that is not newer than this one.
    async fn previous_backup(
        &self,
        source: &SourceConfig,
        key: &str,
        head: &ObjectHead,
    ) -> Result<Option<kbha_aws::ObjectSummary>, VerifierError> {
        let listing = self.store.list(&source.bucket, &source.prefix).await?;
        Ok(listing
            .into_iter()
            .filter(|s| s.key != key && !is_companion(&s.key) && !self.is_own(&source.bucket, &s.key))
            .filter(|s| self.cfg.source_of(&source.bucket, &s.key).is_some_and(|owner| owner.name == source.name))
            .filter(|s| (s.last_modified_ms, s.key.as_str()) < (head.last_modified_ms, key))
            .max_by(|a, b| (a.last_modified_ms, &a.key).cmp(&(b.last_modified_ms, &b.key))))
    }

    async fn copy_check(&self, source: &SourceConfig, key: &str, head: &ObjectHead) -> Result<CopyCheck, VerifierError> {
        self.copy_present(source, key, head.size, head.sha256_checksum.as_deref()).await
    }

    /// Whether the copy of `key` is in the copy bucket with the same size (and SHA-256,
    /// when S3 holds one for both).
    async fn copy_present(&self, source: &SourceConfig, key: &str, size: u64, sha256: Option<&str>) -> Result<CopyCheck, VerifierError> {
        let (Some((bucket, copy_key)), Some(copy)) = (source.copy_key(key), source.copy.as_ref()) else {
            return Ok(CopyCheck::NotConfigured);
        };
        let store = self.regional.get(&copy.region).unwrap_or(&self.store);
        Ok(match store.head(&bucket, &copy_key).await? {
            None => CopyCheck::Missing,
            Some(copy) => {
                let same_hash = match (copy.sha256_checksum.as_deref(), sha256) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                if copy.size == size && same_hash { CopyCheck::Present } else { CopyCheck::Missing }
            }
        })
    }

    /// Changes a source's list of copies still looked for; `change` answers whether it
    /// changed anything.
    async fn update_pending(&self, source: &str, change: impl Fn(&mut Vec<PendingCopy>) -> bool) -> Result<(), VerifierError> {
        let key = format!("{}pending-copies/{source}.json", self.cfg.status_prefix);
        self.update_derived(&key, |pending: Option<PendingCopies>| {
            let mut copies = pending.map(|p| p.copies).unwrap_or_default();
            change(&mut copies).then(|| PendingCopies { source: source.to_owned(), copies })
        })
        .await?;
        Ok(())
    }

    /// The scheduled re-check of a source's missing copies: one that arrived raises the
    /// copy region's status; one past `KBHA_COPY_DEADLINE_SECONDS` is given up (its
    /// backup's verification already sent the notice that the copy was missing).
    async fn recheck_copies(&self, source: &SourceConfig, now_ms: TimestampMs, rec: &mut DecisionRecord) -> Result<(), VerifierError> {
        let Some(copy) = &source.copy else { return Ok(()) };
        let key = format!("{}pending-copies/{}.json", self.cfg.status_prefix, source.name);
        let Some(obj) = self.store.get(&self.cfg.state_bucket, &key).await? else { return Ok(()) };
        let copies = serde_json::from_slice::<PendingCopies>(&obj.bytes).map(|p| p.copies).unwrap_or_default();
        let deadline_ms = i64::try_from(self.cfg.copy_deadline_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut done = Vec::new();
        for c in copies {
            if self.copy_present(source, &c.key, c.size, c.sha256.as_deref()).await? == CopyCheck::Present {
                if self.raise_status(&copy.region, c.created_at_ms, &c.key, &source.name).await?
                    && !rec.status_updated.contains(&copy.region)
                {
                    rec.status_updated.push(copy.region.clone());
                }
                rec.copies_arrived.push(c.key.clone());
                done.push(c.key);
            } else if now_ms.saturating_sub(c.since_ms) > deadline_ms {
                tracing::warn!(source = %source.name, key = %c.key, region = %copy.region, "cross-region copy still missing past KBHA_COPY_DEADLINE_SECONDS; no longer looked for");
                rec.copies_given_up.push(c.key.clone());
                done.push(c.key);
            }
        }
        if !done.is_empty() {
            self.update_pending(&source.name, |copies| {
                let before = copies.len();
                copies.retain(|c| !done.contains(&c.key));
                copies.len() != before
            })
            .await?;
        }
        Ok(())
    }

    /// Moves `source`'s entry in a region's status forward to `at_ms` (never back).
    async fn raise_status(&self, region: &str, at_ms: TimestampMs, key: &str, source: &str) -> Result<bool, VerifierError> {
        let status_key = format!("{}{region}.json", self.cfg.status_prefix);
        self.update_derived(&status_key, |status: Option<ReplicationStatus>| match status {
            None => Some(ReplicationStatus::new(region, source, at_ms, key)),
            Some(mut status) => status.raise(source, at_ms, key).then_some(status),
        })
        .await
    }

    /// Changes a derived JSON object in the state bucket (a status, a pending list) as a
    /// compare-and-swap: `change` gets what is there (`None` when absent or unreadable:
    /// derived data is rebuilt, not kept broken) and answers the new value, or `None` to
    /// leave it. Returns whether it wrote.
    pub(crate) async fn update_derived<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        key: &str,
        change: impl Fn(Option<T>) -> Option<T>,
    ) -> Result<bool, VerifierError> {
        for _ in 0..STATUS_ATTEMPTS {
            let current = self.store.get(&self.cfg.state_bucket, key).await?;
            let (value, cond) = match &current {
                None => (None, PutCondition::IfNoneMatch),
                Some(obj) => (serde_json::from_slice::<T>(&obj.bytes).ok(), PutCondition::IfMatch(obj.etag.clone())),
            };
            let Some(new) = change(value) else { return Ok(false) };
            match self.store.put(&self.cfg.state_bucket, key, to_json(&new), cond).await {
                Ok(_) => return Ok(true),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VerifierError::ConflictExhausted { bucket: self.cfg.state_bucket.clone(), key: key.to_owned(), attempts: STATUS_ATTEMPTS })
    }

    /// A source's newest verified backup in its own region, from the status object: what
    /// the dead-man check goes by (an object that arrived but was found corrupt, or was
    /// never verified, does not count).
    pub(crate) async fn verified_newest(&self, source: &SourceConfig) -> Result<Option<SourceFreshness>, VerifierError> {
        let status_key = format!("{}{}.json", self.cfg.status_prefix, source.region);
        let Some(obj) = self.store.get(&self.cfg.state_bucket, &status_key).await? else { return Ok(None) };
        match serde_json::from_slice::<ReplicationStatus>(&obj.bytes) {
            Ok(status) => Ok(match status.sources.get(&source.name) {
                Some(f) => Some(f.clone()),
                // A status from an older writer knows only the newest backup of the region.
                None if status.sources.is_empty() && status.source.as_deref() == Some(source.name.as_str()) => {
                    status.key.map(|key| SourceFreshness { newest_verified_backup_at_ms: status.newest_verified_backup_at_ms, key })
                }
                None => None,
            }),
            Err(e) => {
                // Derived data, rewritten by the next verification; until then the source
                // reads as having no verified backup, which the policy judges.
                tracing::error!(bucket = %self.cfg.state_bucket, key = %status_key, "replication status unreadable: {e}");
                Ok(None)
            }
        }
    }

    /// The dead-man check of one source: its newest verified backup against the RPO.
    async fn dead_man(&self, source: &SourceConfig, event_id: &str, inv: &Invocation) -> Result<DecisionRecord, VerifierError> {
        let now_ms = inv.now_ms;
        let started = Instant::now();
        let mut rec = self.record(event_id, inv, format!("source:{}", source.name), ActionTaken::Checked);
        let newest = self.verified_newest(source).await?;
        rec.durations.gather_ms = ms(started);
        let status = SourceStatus {
            source: source.name.clone(),
            newest_key: newest.as_ref().map(|n| n.key.clone()),
            newest_at_ms: newest.map(|n| n.newest_verified_backup_at_ms),
        };
        let decided_at = Instant::now();
        let input = ReplicationInput {
            now_ms,
            event_id: event_id.to_owned(),
            subject: ReplicationSubject::DeadMan(status.clone()),
            config: self.cfg.policy_config.clone(),
        };
        rec.input = RecordedInput::of(&input);
        let decided = self.policies.decide(&input);
        rec.durations.decide_ms = ms(decided_at);
        rec.verdict = Some(decided.decision.verdict);
        let acted_at = Instant::now();
        if decided.decision.verdict != Verdict::Ok {
            let notice = notice_json(
                &source.name,
                &source.region,
                None,
                &decided.decision,
                event_id,
                now_ms,
                (&decided.decided_by, &decided.policy_source, &decided.policy_digest),
                &decided.faults,
            );
            let summary = format!("no fresh backup of `{}`", source.name);
            rec.notice_id = Some(self.publish(decided.decision.verdict, &source.region, &summary, &notice).await?);
        }
        rec.policy = Some(decided);
        // The copies are looked for after the verdict (they move the copy region, not the
        // source's own): a failure here must not cost the dead-man check, and the next
        // scheduled check looks again, so it is logged rather than retried.
        if let Err(e) = self.recheck_copies(source, now_ms, &mut rec).await {
            tracing::warn!(source = %source.name, "cross-region copies not re-checked this time: {e}");
        }
        self.restore_test_age(source, event_id, now_ms, &mut rec).await?;
        rec.durations.act_ms = ms(acted_at);
        Ok(rec)
    }

    async fn notify(&self, v: &VerificationRecord, faults: &[kbha_policy_lifecycle::PolicyFault]) -> Result<String, VerifierError> {
        let decision = ReplicationDecision { verdict: v.verdict, reason: v.reason.clone(), alerts: v.alerts.clone() };
        let notice = notice_json(
            &v.source,
            &v.region,
            Some(v),
            &decision,
            &v.event_id,
            v.verified_at_ms,
            (&v.decided_by, &v.policy_source, &v.policy_digest),
            faults,
        );
        let summary = format!("{} {}", v.source, v.key);
        self.publish(v.verdict, &v.region, &summary, &notice).await
    }

    async fn publish(&self, verdict: Verdict, region: &str, what: &str, notice: &Value) -> Result<String, VerifierError> {
        self.publish_as(severity_of(verdict), verdict_name(verdict), region, &format!("backup {}: {what}", verdict_name(verdict)), notice)
            .await
    }

    /// Publishes a notice of `kind` (the `kind` message attribute the router routes on).
    pub(crate) async fn publish_as(
        &self,
        severity: Severity,
        name: &str,
        region: &str,
        what: &str,
        notice: &Value,
    ) -> Result<String, VerifierError> {
        let subject = format!("[kbha {}] {what}", severity.as_str());
        let attributes = BTreeMap::from([
            ("severity".to_owned(), severity.as_str().to_owned()),
            ("source".to_owned(), "kbha.replication".to_owned()),
            ("region".to_owned(), region.to_owned()),
            ("kind".to_owned(), name.to_owned()),
        ]);
        Ok(self.notifier.publish(&self.cfg.notify_topic_arn, &subject, &notice.to_string(), &attributes).await?)
    }
}

fn severity_of(v: Verdict) -> Severity {
    match v {
        Verdict::Ok => Severity::Info,
        Verdict::Warning => Severity::Warning,
        Verdict::Breach | Verdict::Corrupt => Severity::Critical,
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Warning => "warning",
        Verdict::Breach => "breach",
        Verdict::Corrupt => "corrupt",
    }
}

/// The notice body: the same envelope as the failover function's (`kind: kbha.notice`).
#[allow(clippy::too_many_arguments)]
fn notice_json(
    source: &str,
    region: &str,
    v: Option<&VerificationRecord>,
    decision: &ReplicationDecision,
    event_id: &str,
    at_ms: TimestampMs,
    (decided_by, policy_source, policy_digest): (&str, &str, &str),
    faults: &[kbha_policy_lifecycle::PolicyFault],
) -> Value {
    let severity = severity_of(decision.verdict);
    serde_json::json!({
        "kind": "kbha.notice",
        "function": "replication",
        "type": verdict_name(decision.verdict),
        "severity": severity,
        "summary": decision.alerts.first().map_or_else(|| decision.reason.clone(), |a| a.summary.clone()),
        "reason": decision.reason,
        "source": source,
        "region": region,
        "bucket": v.map(|v| v.bucket.as_str()),
        "key": v.map(|v| v.key.as_str()),
        "facts": v.map(|v| &v.facts),
        "event_id": event_id,
        "at": format_timestamp(at_ms),
        "decided_by": decided_by,
        "policy_source": policy_source,
        "policy_digest": policy_digest,
        "policy_faults": faults,
        "alerts": decision.alerts,
    })
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}
