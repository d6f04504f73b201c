//! The restore test: proves a backup restores, not only that it hashes. Each source's
//! newest *verified* backup is streamed from S3 into the scratch directory and its files
//! are opened as their data stores would open them ([`crate::restore`]).
//!
//! Recorded once per run and source (`<record prefix>restore-tests/<source>/<id>.json`,
//! `If-None-Match: *`), so a redelivered event neither tests again nor notifies twice; the
//! per-source status (`<status prefix>restore-tests/<source>.json`) holds the last test,
//! which the scheduled check reads for its age alert and shows beside the backup verdicts.
//!
//! The verdict is the checks' own (a database that fails `PRAGMA integrity_check` cannot
//! be argued with), so it is not put to the replication policy: the WIT contract has no
//! restore subject yet.

use std::time::Instant;

use kbha_aws::{ObjectStore, PutCondition};
use kbha_core::time::format_timestamp;
use kbha_core::{Severity, TimestampMs, Verdict};
use kbha_lambda::record::{Invocation, ms};
use serde::{Deserialize, Serialize};

use crate::config::{ManifestMode, SourceConfig};
use crate::handler::{ActionTaken, DecisionRecord, VerifierError, VerifierFunction, to_json};
use crate::manifest::{MANIFEST_SUFFIX, Manifest};
use crate::restore::{RestoreError, RestoreOutcome, RestoreVerdict, Scratch, restore_test};
use crate::stream::Layout;

/// The record of one restore test, created once per run id and source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    /// Always `kbha.restore_test`.
    pub kind: String,
    /// Source name.
    pub source: String,
    /// Region of the source.
    pub region: String,
    /// Bucket of the backup tested.
    pub bucket: String,
    /// Key of the backup tested.
    pub key: String,
    /// Its ETag.
    pub etag: String,
    /// When the backup was made (its verified creation time).
    pub backup_created_at_ms: TimestampMs,
    /// Run id (the event's).
    pub event_id: String,
    /// When the test started.
    pub tested_at_ms: TimestampMs,
    /// From the first byte read to the last check, in milliseconds: the restore part of
    /// the RTO for a backup of this size.
    pub duration_ms: u64,
    /// What it found, file by file.
    pub outcome: RestoreOutcome,
    /// Whether the notice of a failed test was published.
    pub notified: bool,
}

/// A source's last restore test (`<status prefix>restore-tests/<source>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreStatus {
    /// Source name.
    pub source: String,
    /// When the test started.
    pub tested_at_ms: TimestampMs,
    /// The test's verdict.
    pub verdict: RestoreVerdict,
    /// Its duration in milliseconds.
    pub duration_ms: u64,
    /// Bytes restored.
    pub restored_bytes: u64,
    /// Key of the backup tested.
    pub key: String,
    /// When that backup was made.
    pub backup_created_at_ms: TimestampMs,
    /// Key of the full record in the state bucket.
    pub record_key: String,
}

impl RestoreRecord {
    fn status(&self, record_key: &str) -> RestoreStatus {
        RestoreStatus {
            source: self.source.clone(),
            tested_at_ms: self.tested_at_ms,
            verdict: self.outcome.verdict,
            duration_ms: self.duration_ms,
            restored_bytes: self.outcome.restored_bytes,
            key: self.key.clone(),
            backup_created_at_ms: self.backup_created_at_ms,
            record_key: record_key.to_owned(),
        }
    }
}

/// The decision record's verdict for a restore test (`too_large` tested nothing: a warning).
fn verdict_of(v: RestoreVerdict) -> Verdict {
    match v {
        RestoreVerdict::Ok => Verdict::Ok,
        RestoreVerdict::Corrupt => Verdict::Corrupt,
        RestoreVerdict::TooLarge => Verdict::Warning,
    }
}

/// Run ids become one key segment.
fn key_segment(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

impl<S: ObjectStore, N: kbha_aws::Notifier> VerifierFunction<S, N> {
    fn restore_status_key(&self, source: &str) -> String {
        format!("{}restore-tests/{source}.json", self.cfg.status_prefix)
    }

    /// A source's last restore test, if one was recorded (an unreadable status reads as
    /// none: it is derived, and rewritten by the next test).
    pub(crate) async fn restore_status(&self, source: &str) -> Result<Option<RestoreStatus>, VerifierError> {
        let key = self.restore_status_key(source);
        let Some(obj) = self.store.get(&self.cfg.state_bucket, &key).await? else { return Ok(None) };
        Ok(serde_json::from_slice(&obj.bytes).inspect_err(|e| tracing::error!(key = %key, "restore status unreadable: {e}")).ok())
    }

    async fn raise_restore_status(&self, status: &RestoreStatus) -> Result<(), VerifierError> {
        let key = self.restore_status_key(&status.source);
        self.update_derived(&key, |current: Option<RestoreStatus>| match current {
            Some(c) if c.tested_at_ms >= status.tested_at_ms => None,
            _ => Some(status.clone()),
        })
        .await?;
        Ok(())
    }

    /// A run's record and its ETag, if it was recorded.
    async fn read_restore_record(&self, key: &str) -> Result<Option<(RestoreRecord, String)>, VerifierError> {
        let bucket = &self.cfg.state_bucket;
        let Some(obj) = self.store.get(bucket, key).await? else { return Ok(None) };
        let record = serde_json::from_slice(&obj.bytes).map_err(|e| VerifierError::CorruptRecord {
            bucket: bucket.clone(),
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Some((record, obj.etag)))
    }

    /// Restore-tests `source`'s newest verified backup, once per `event_id`.
    pub(crate) async fn restore_test(
        &self,
        source: &SourceConfig,
        event_id: &str,
        inv: &Invocation,
    ) -> Result<DecisionRecord, VerifierError> {
        let started = Instant::now();
        let mut rec = self.record(event_id, inv, format!("restore:{}", source.name), ActionTaken::Skipped);
        let record_key = format!("{}restore-tests/{}/{}.json", self.cfg.record_prefix, source.name, key_segment(event_id));
        rec.record_key = Some(record_key.clone());
        let bucket = &self.cfg.state_bucket;
        if let Some((previous, etag)) = self.read_restore_record(&record_key).await? {
            return self.finish(rec, previous, etag, &record_key).await.map(|mut rec| {
                rec.action = ActionTaken::Duplicate;
                rec
            });
        }
        let skip = |mut rec: DecisionRecord, why: String| {
            tracing::warn!(source = %source.name, "restore test skipped: {why}");
            rec.skipped = Some(why);
            Ok(rec)
        };
        let Some(newest) = self.verified_newest(source).await? else {
            return skip(rec, "no verified backup of this source to restore; the scheduled check reports the missing backup".into());
        };
        let Some(body) = self.store.open(&source.bucket, &newest.key).await? else {
            return skip(rec, format!("the newest verified backup s3://{}/{} no longer exists", source.bucket, newest.key));
        };
        let manifest = match source.manifest {
            ManifestMode::None => None,
            _ => match self.store.get(&source.bucket, &format!("{}{MANIFEST_SUFFIX}", newest.key)).await? {
                // An invalid manifest was judged when the backup was verified; the files
                // are still opened.
                Some(m) => Manifest::parse(&m.bytes).ok(),
                None => None,
            },
        };
        rec.durations.gather_ms = ms(started);
        let tested_at_ms = inv.now_ms;
        let layout = Layout::of_key(&newest.key);
        let name = newest.key.rsplit('/').next().unwrap_or(&newest.key).to_owned();
        let scratch = Scratch { dir: self.cfg.restore_dir.join("kbha-restore"), max_bytes: self.cfg.restore_max_bytes };
        let etag = body.etag.clone();
        let reader = tokio_util::io::SyncIoBridge::new(body.reader);
        let outcome = tokio::task::spawn_blocking(move || restore_test(reader, layout, &name, manifest.as_ref(), &scratch))
            .await
            .map_err(|e| VerifierError::Scratch { name: source.name.clone(), problem: format!("the restoring thread failed: {e}") })?
            .map_err(|e| match e {
                RestoreError::Read(read) => VerifierError::Read { bucket: source.bucket.clone(), key: newest.key.clone(), source: read },
                RestoreError::Scratch { .. } => VerifierError::Scratch { name: source.name.clone(), problem: e.to_string() },
            })?;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record = RestoreRecord {
            kind: "kbha.restore_test".into(),
            source: source.name.clone(),
            region: source.region.clone(),
            bucket: source.bucket.clone(),
            key: newest.key.clone(),
            etag,
            backup_created_at_ms: newest.newest_verified_backup_at_ms,
            event_id: event_id.to_owned(),
            tested_at_ms,
            duration_ms,
            outcome,
            notified: false,
        };
        let record_etag = match self.store.put(bucket, &record_key, to_json(&record), PutCondition::IfNoneMatch).await {
            Ok(etag) => etag,
            Err(e) if e.is_conflict() => {
                // Another copy of the run recorded first: its record stands.
                let Some((theirs, etag)) = self.read_restore_record(&record_key).await? else { return Err(e.into()) };
                let mut rec = self.finish(rec, theirs, etag, &record_key).await?;
                rec.action = ActionTaken::Duplicate;
                return Ok(rec);
            }
            Err(e) => return Err(e.into()),
        };
        rec.action = ActionTaken::RestoreTested;
        self.finish(rec, record, record_etag, &record_key).await
    }

    /// Raises the status and sends the notice of a failed test if not yet sent: the part a
    /// retry completes after a crash.
    async fn finish(
        &self,
        mut rec: DecisionRecord,
        mut r: RestoreRecord,
        etag: String,
        record_key: &str,
    ) -> Result<DecisionRecord, VerifierError> {
        let acted = Instant::now();
        let status = r.status(record_key);
        self.raise_restore_status(&status).await?;
        rec.verdict = Some(verdict_of(r.outcome.verdict));
        rec.restore_test = Some(status);
        if r.outcome.verdict != RestoreVerdict::Ok && !r.notified {
            let (severity, what) = match r.outcome.verdict {
                RestoreVerdict::TooLarge => (Severity::Warning, format!("restore test not run, backup too large: {} {}", r.source, r.key)),
                _ => (Severity::Critical, format!("restore test failed: {} {}", r.source, r.key)),
            };
            let notice = serde_json::json!({
                "kind": "kbha.notice",
                "function": "replication",
                "type": format!("restore_{}", r.outcome.verdict.as_str()),
                "severity": severity,
                "summary": format!("restore test of `{}`: {}", r.source, r.outcome.reason),
                "reason": r.outcome.reason,
                "source": r.source,
                "region": r.region,
                "bucket": r.bucket,
                "key": r.key,
                "restore_test": r,
                "event_id": r.event_id,
                "at": format_timestamp(r.tested_at_ms),
            });
            let kind = format!("restore_{}", r.outcome.verdict.as_str());
            rec.notice_id = Some(self.publish_as(severity, &kind, &r.region, &what, &notice).await?);
            r.notified = true;
            // Marking it sent may lose to another copy that marked it first: either way it is.
            match self.store.put(&self.cfg.state_bucket, record_key, to_json(&r), PutCondition::IfMatch(etag)).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        rec.durations.act_ms = ms(acted);
        Ok(rec)
    }

    /// The scheduled check's part: the source's last restore test goes in the record, and
    /// with `KBHA_RESTORE_MAX_AGE_DAYS` set, a missing or too old one is a warning notice.
    pub(crate) async fn restore_test_age(
        &self,
        source: &SourceConfig,
        event_id: &str,
        now_ms: TimestampMs,
        rec: &mut DecisionRecord,
    ) -> Result<(), VerifierError> {
        let Some(days) = self.cfg.restore_max_age_days else { return Ok(()) };
        let last = self.restore_status(&source.name).await?;
        let max_ms = i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
        let stale = last.as_ref().is_none_or(|l| now_ms.saturating_sub(l.tested_at_ms) > max_ms);
        if stale {
            let summary = match &last {
                None => format!("`{}` has never been restore-tested (KBHA_RESTORE_MAX_AGE_DAYS={days})", source.name),
                Some(l) => format!(
                    "the last restore test of `{}` was on {}, more than {days} days ago",
                    source.name,
                    format_timestamp(l.tested_at_ms)
                ),
            };
            let notice = serde_json::json!({
                "kind": "kbha.notice",
                "function": "replication",
                "type": "restore_test_stale",
                "severity": Severity::Warning,
                "summary": summary,
                "reason": "no recent restore test: check the restore-test schedule and the function's errors",
                "source": source.name,
                "region": source.region,
                "last_restore_test": last,
                "event_id": event_id,
                "at": format_timestamp(now_ms),
            });
            rec.restore_notice_id = Some(
                self.publish_as(
                    Severity::Warning,
                    "restore_test_stale",
                    &source.region,
                    &format!("restore test stale: {}", source.name),
                    &notice,
                )
                .await?,
            );
        }
        rec.restore_test = last;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_make_one_key_segment() {
        assert_eq!(key_segment("5e3f-aa/../x y"), "5e3f-aa_.._x_y");
    }
}
