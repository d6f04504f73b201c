//! The replication verifier against the emulator: each test drives the real handler with
//! real-shaped S3 events and reads the outcome back through S3 (verification records,
//! status objects) and SQS (notices delivered through SNS).

use anyhow::{Context, Result};
use kbha_core::{ArchiveCheck, ChecksumCheck, CopyCheck, ManifestCheck, Verdict};
use kbha_integration::replication::{BACKUPS, REPLICA, ReplicationWorld, S3Shape, STATE, s3_event, schedule, tar_gz};
use kbha_lambda::record::Invocation;
use kbha_replication_verifier::ActionTaken;

const HOUR: i64 = 3_600_000;

/// A backup time five minutes before the real clock, in whole seconds. S3 stamps uploads
/// with the real clock and the verdicts compare the two, so a fixed backup time would make
/// them depend on the hour the tests run (a fixed 10:00 UTC turned "ok" into "breach" at 11:00).
fn recent() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    (i64::try_from(now).unwrap_or(i64::MAX) - 300) * 1000
}

fn files() -> Vec<(&'static str, &'static [u8])> {
    vec![("chroma.sqlite3", &b"SQLite format 3\0 rows and rows"[..]), ("index/segment-0001.bin", &[7u8; 4096][..])]
}

#[tokio::test]
async fn a_good_backup_is_ok_its_record_written_and_both_regions_status_raised() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let key = "chromadb/2026/11/26/chroma-10-00.tar.gz";
    let taken_at = recent();
    let up = w.put_backup(key, &files(), taken_at).await?;
    w.emu
        .put_bytes(REPLICA, key, w.emu.s3().await.get_object().bucket(BACKUPS).key(key).send().await?.body.collect().await?.to_vec())
        .await?;
    let v = w.verifier(&[]).await?;
    let now = up.last_modified_ms + 60_000;
    let records = v.handle(&s3_event(S3Shape::Direct, &[&up]), Invocation::lambda(now, "0c9a7e44-request-1")).await?;
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].action, records[0].verdict), (ActionTaken::Recorded, Some(Verdict::Ok)), "{:?}", records[0].policy);
    let record = serde_json::to_value(&records[0])?;
    assert_eq!(record["request_id"], "0c9a7e44-request-1", "{record}");
    assert_eq!(kbha_lambda::record::shape_problems(&record), Vec::<String>::new(), "{record}");

    let rec = w.record(BACKUPS, key).await?.expect("record written");
    assert_eq!(rec.verdict, Verdict::Ok);
    assert_eq!(rec.etag, format!("\"{}\"", up.etag));
    assert_eq!(rec.facts.archive, ArchiveCheck::Valid { entries: 2 });
    assert_eq!(rec.facts.manifest, ManifestCheck::Valid { files: 2 });
    assert!(matches!(rec.facts.checksum, ChecksumCheck::Matched { .. }), "{:?}", rec.facts.checksum);
    assert_eq!(rec.facts.cross_region_copy, CopyCheck::Present);
    assert_eq!(rec.facts.created_at_ms, taken_at, "age counts from the manifest's created_at");
    for region in ["us-east-1", "us-west-2"] {
        let status = w.status(region).await?.expect("status written");
        assert_eq!(status.newest_verified_backup_at_ms, taken_at, "{region}");
    }
    assert!(w.notices(1, 1).await?.is_empty(), "an ok verdict sends no notice");
    Ok(())
}

#[tokio::test]
async fn damaged_backups_are_corrupt_each_with_a_critical_notice() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let good = tar_gz(&files())?;
    // Bytes flipped in the middle of the deflate stream.
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x5a;
    let flipped = w.put("kbha-backups-us-east-1", "redis/flipped.tar.gz", flipped).await?;
    // Cut short.
    let truncated = w.put(BACKUPS, "redis/truncated.tar.gz", good[..good.len() - 40].to_vec()).await?;
    // Empty.
    let empty = w.put(BACKUPS, "redis/empty.tar.gz", Vec::new()).await?;
    // Intact, but its sidecar says otherwise.
    w.emu.put_bytes(BACKUPS, "redis/mismatch.tar.gz.sha256", format!("{}  mismatch.tar.gz\n", "0".repeat(64)).into_bytes()).await?;
    let mismatch = w.put(BACKUPS, "redis/mismatch.tar.gz", good).await?;

    let v = w.verifier(&[]).await?;
    let now = mismatch.last_modified_ms + 60_000;
    // Several records in one invocation.
    let records = v.handle(&s3_event(S3Shape::Direct, &[&flipped, &truncated, &empty, &mismatch]), Invocation::at(now)).await?;
    assert_eq!(records.len(), 4);
    for (up, what) in [(&flipped, "archive"), (&truncated, "archive"), (&empty, "empty"), (&mismatch, "SHA-256")] {
        let rec = w.record(BACKUPS, &up.key).await?.expect("record");
        assert_eq!(rec.verdict, Verdict::Corrupt, "{}: {}", up.key, rec.reason);
        assert!(rec.reason.contains(what), "{}: {}", up.key, rec.reason);
        assert!(rec.notified, "{}", up.key);
    }
    let mismatch_rec = w.record(BACKUPS, "redis/mismatch.tar.gz").await?.expect("record");
    assert!(matches!(mismatch_rec.facts.checksum, ChecksumCheck::Mismatched { ref expected, .. } if expected == &"0".repeat(64)));
    assert_eq!(mismatch_rec.facts.archive, ArchiveCheck::Valid { entries: 2 }, "the archive itself is intact");

    let notices = w.notices(5, 5).await?;
    assert_eq!(notices.len(), 4, "one notice per corrupt backup");
    for (body, attrs, subject) in &notices {
        assert_eq!(body["kind"], "kbha.notice");
        assert_eq!(body["function"], "replication");
        assert_eq!(attrs["severity"], "critical");
        assert_eq!(attrs["source"], "kbha.replication");
        assert_eq!(attrs["kind"], "corrupt");
        assert!(subject.starts_with("[kbha critical] backup corrupt: redis"), "{subject}");
    }
    assert!(w.status("us-east-1").await?.is_none(), "corrupt backups never count as verified");
    Ok(())
}

#[tokio::test]
async fn a_backup_older_than_the_rpo_is_a_breach() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let taken_at = recent() - 2 * HOUR;
    let up = w.put_backup("chromadb/late.tar.gz", &files(), taken_at).await?;
    let v = w.verifier(&[]).await?;
    let records = v.handle(&s3_event(S3Shape::Direct, &[&up]), Invocation::at(up.last_modified_ms + 60_000)).await?;
    assert_eq!(records[0].verdict, Some(Verdict::Breach));
    let rec = w.record(BACKUPS, &up.key).await?.expect("record");
    assert!(rec.reason.contains("past the RPO"), "{}", rec.reason);
    let notices = w.notices(2, 3).await?;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].1["kind"], "breach");
    // Intact, so it still counts for the RPO gate (at its real, old, time).
    assert_eq!(w.status("us-east-1").await?.map(|s| s.newest_verified_backup_at_ms), Some(taken_at));
    Ok(())
}

#[tokio::test]
async fn the_dead_man_check_breaches_when_no_backup_is_within_the_rpo() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let taken_at = recent();
    let up = w.put_backup("chromadb/only.tar.gz", &files(), taken_at).await?;
    w.emu.put_bytes(REPLICA, &up.key, tar_gz(&files())?).await?;
    let v = w.verifier(&[]).await?;
    v.handle(&s3_event(S3Shape::Direct, &[&up]), Invocation::at(up.last_modified_ms + 60_000)).await?;

    // Just after the backup: chromadb fine, redis has never had one.
    let records =
        v.handle(&schedule(up.last_modified_ms + 10 * 60_000, "tick-1"), Invocation::at(up.last_modified_ms + 10 * 60_000)).await?;
    let verdicts: Vec<_> = records.iter().map(|r| (r.subject.as_str(), r.verdict)).collect();
    assert_eq!(verdicts, vec![("source:chromadb", Some(Verdict::Ok)), ("source:redis", Some(Verdict::Breach))]);
    let notices = w.notices(2, 3).await?;
    assert_eq!(notices.len(), 1);
    assert!(notices[0].0["reason"].as_str().unwrap_or_default().contains("no backup found"), "{}", notices[0].0);

    // Two hours on, nothing new arrived: chromadb breaches too.
    let later = taken_at + 2 * HOUR;
    let records = v.handle(&schedule(later, "tick-2"), Invocation::at(later)).await?;
    assert!(records.iter().all(|r| r.verdict == Some(Verdict::Breach)), "{records:?}");
    let notices = w.notices(3, 3).await?;
    assert_eq!(notices.len(), 2);
    assert!(notices.iter().any(|(b, ..)| b["reason"].as_str().unwrap_or_default().contains("chromadb/only.tar.gz")));
    Ok(())
}

#[tokio::test]
async fn a_source_whose_only_backup_is_corrupt_fails_the_dead_man_check() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let good = w.put_backup("chromadb/good.tar.gz", &files(), recent()).await?;
    w.emu.put_bytes(REPLICA, &good.key, tar_gz(&files())?).await?;
    let mut damaged = tar_gz(&files())?;
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x5a;
    let bad = w.put(BACKUPS, "redis/only.tar.gz", damaged).await?;
    let v = w.verifier(&[]).await?;
    let now = bad.last_modified_ms + 60_000;
    let records = v.handle(&s3_event(S3Shape::Direct, &[&good, &bad]), Invocation::at(now)).await?;
    assert_eq!(records.iter().map(|r| r.verdict).collect::<Vec<_>>(), vec![Some(Verdict::Ok), Some(Verdict::Corrupt)]);

    // Both objects are minutes old, but only chromadb's is a backup that restores.
    let tick = now + 5 * 60_000;
    let records = v.handle(&schedule(tick, "tick-1"), Invocation::at(tick)).await?;
    let verdicts: Vec<_> = records.iter().map(|r| (r.subject.as_str(), r.verdict)).collect();
    assert_eq!(verdicts, vec![("source:chromadb", Some(Verdict::Ok)), ("source:redis", Some(Verdict::Breach))]);
    let record = serde_json::to_value(&records[1])?;
    assert_eq!(record["input"]["subject"]["kind"], "dead_man", "{record}");
    assert_eq!(record["input"]["subject"]["newest_key"], serde_json::Value::Null, "the corrupt object is not its newest backup: {record}");
    let notices = w.notices(2, 3).await?;
    assert_eq!(notices.len(), 2, "the corrupt backup's notice and the dead-man's");
    assert!(notices.iter().any(|(b, ..)| b["reason"].as_str().unwrap_or_default().contains("no backup found")), "{notices:?}");
    Ok(())
}

#[tokio::test]
async fn each_source_keeps_its_own_freshness_and_the_region_is_as_fresh_as_the_oldest() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let stale_at = recent() - 3 * HOUR;
    let stale = w.put_backup("chromadb/stale.tar.gz", &files(), stale_at).await?;
    let fresh = w.put_backup("redis/fresh.tar.gz", &files(), recent()).await?;
    let v = w.verifier(&[]).await?;
    // The fresh one first: the stale one must still pull the region back.
    let now = fresh.last_modified_ms + 60_000;
    v.handle(&s3_event(S3Shape::Direct, &[&fresh]), Invocation::at(now)).await?;
    v.handle(&s3_event(S3Shape::Direct, &[&stale]), Invocation::at(now)).await?;

    let status = w.status("us-east-1").await?.expect("status written");
    assert_eq!((status.newest_verified_backup_at_ms, status.source.as_deref()), (stale_at, Some("chromadb")), "{status:?}");
    // redis backups carry no manifest here: their age counts from the upload.
    let fresh_at = w.record(BACKUPS, &fresh.key).await?.expect("record").facts.created_at_ms;
    assert!(fresh_at > stale_at + 2 * HOUR);
    assert_eq!(status.sources["redis"].newest_verified_backup_at_ms, fresh_at);
    assert_eq!(status.sources["chromadb"].key, "chromadb/stale.tar.gz");
    assert_eq!(status.oldest_of(&["redis".into()]), kbha_core::Freshness::Oldest { at_ms: fresh_at, source: Some("redis".into()) });
    Ok(())
}

#[tokio::test]
async fn a_copy_that_arrives_after_its_backup_advances_the_copy_region_on_the_next_tick() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let taken_at = recent();
    let late = w.put_backup("chromadb/late-copy.tar.gz", &files(), taken_at).await?;
    let never = w.put_backup("chromadb/never-copied.tar.gz", &files(), taken_at - 60_000).await?;
    let v = w.verifier(&[("KBHA_COPY_DEADLINE_SECONDS", "1800")]).await?;
    let now = late.last_modified_ms + 60_000;
    let records = v.handle(&s3_event(S3Shape::Direct, &[&never, &late]), Invocation::at(now)).await?;
    assert!(records.iter().all(|r| r.status_updated == ["us-east-1"]), "copies missing: only the home region");
    assert!(w.status("us-west-2").await?.is_none());

    // Replication catches up with one of them; the next tick finds it.
    w.emu.put_bytes(REPLICA, &late.key, tar_gz(&files())?).await?;
    let tick = now + 5 * 60_000;
    let records = v.handle(&schedule(tick, "tick-1"), Invocation::at(tick)).await?;
    let chromadb = records.iter().find(|r| r.subject == "source:chromadb").expect("chromadb checked");
    assert_eq!(chromadb.copies_arrived, [late.key.as_str()]);
    assert_eq!(chromadb.status_updated, ["us-west-2"]);
    assert_eq!(w.status("us-west-2").await?.map(|s| s.sources["chromadb"].newest_verified_backup_at_ms), Some(taken_at));

    // The other never comes: looked for until the deadline, then given up.
    let records = v.handle(&schedule(now + 20 * 60_000, "tick-2"), Invocation::at(now + 20 * 60_000)).await?;
    let chromadb = records.iter().find(|r| r.subject == "source:chromadb").expect("chromadb checked");
    assert!(chromadb.copies_arrived.is_empty() && chromadb.copies_given_up.is_empty(), "{chromadb:?}");
    let records = v.handle(&schedule(now + 31 * 60_000, "tick-3"), Invocation::at(now + 31 * 60_000)).await?;
    let chromadb = records.iter().find(|r| r.subject == "source:chromadb").expect("chromadb checked");
    assert_eq!(chromadb.copies_given_up, [never.key.as_str()]);
    let pending = w.pending_copies("chromadb").await?.context("pending list kept")?;
    assert_eq!(pending["copies"], serde_json::json!([]), "{pending}");
    Ok(())
}

#[tokio::test]
async fn the_same_event_twice_gives_one_record_and_one_notice() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let up = w.put(BACKUPS, "redis/empty-twice.tar.gz", Vec::new()).await?;
    let v = w.verifier(&[]).await?;
    let event = s3_event(S3Shape::Sns, &[&up]);
    let first = v.handle(&event, Invocation::at(up.last_modified_ms + 1000)).await?;
    let before = w.record(BACKUPS, &up.key).await?.expect("record");
    let second = v.handle(&event, Invocation::at(up.last_modified_ms + 9000)).await?;
    assert_eq!(first[0].action, ActionTaken::Recorded);
    assert_eq!(second[0].action, ActionTaken::Duplicate);
    assert_eq!(second[0].verdict, Some(Verdict::Corrupt));
    assert_eq!(w.record(BACKUPS, &up.key).await?, Some(before), "the record is unchanged");
    assert_eq!(w.notices(3, 3).await?.len(), 1, "exactly one notice");
    Ok(())
}

#[tokio::test]
async fn eight_concurrent_copies_of_one_event_give_one_record_and_one_notice() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let up = w.put(BACKUPS, "redis/empty-eight.tar.gz", Vec::new()).await?;
    let v = std::sync::Arc::new(w.verifier(&[]).await?);
    let at = up.last_modified_ms + 1000;
    let mut tasks = Vec::new();
    for shape in [S3Shape::Direct, S3Shape::Sns, S3Shape::EventBridge, S3Shape::Direct].repeat(2) {
        let (v, event) = (std::sync::Arc::clone(&v), s3_event(shape, &[&up]));
        tasks.push(tokio::spawn(async move { v.handle(&event, Invocation::at(at)).await }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let recorded = all.iter().filter(|r| r.action == ActionTaken::Recorded).count();
    assert_eq!(recorded, 1, "{:?}", all.iter().map(|r| r.action).collect::<Vec<_>>());
    assert!(all.iter().all(|r| r.verdict == Some(Verdict::Corrupt)));
    // Only the copy holding the notice claim publishes; the record says it was sent.
    assert_eq!(w.notices(8, 3).await?.len(), 1, "exactly one notice");
    assert_eq!(all.iter().filter(|r| r.notice_id.is_some()).count(), 1);
    let rec = w.record(BACKUPS, &up.key).await?.expect("record");
    assert!(rec.notified && rec.notifying.is_none(), "{rec:?}");
    Ok(())
}

#[tokio::test]
async fn a_notice_claimed_by_a_copy_that_died_waits_for_its_lease_then_is_sent_once() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let up = w.put(BACKUPS, "redis/empty-orphan.tar.gz", Vec::new()).await?;
    let v = w.verifier(&[]).await?;
    let event = s3_event(S3Shape::Direct, &[&up]);
    v.handle(&event, Invocation::at(up.last_modified_ms + 1000)).await?;
    assert_eq!(w.notices(3, 3).await?.len(), 1);
    // Rewind the record to what a copy that claimed the notice and died leaves behind.
    let key = format!("kbha/replication/records/{BACKUPS}/{}.json", up.key);
    let mut orphan = w.record(BACKUPS, &up.key).await?.expect("record");
    orphan.notified = false;
    let lease_end = kbha_lambda::lambda::now_ms() + 60_000;
    orphan.notifying = Some(kbha_lambda::claim::Claim { by: "a-copy-that-died".into(), until_ms: lease_end });
    w.emu.put_bytes(STATE, &key, serde_json::to_vec(&orphan)?).await?;
    // While its lease runs, a redelivery waits (bounded), sends nothing, fails retryably.
    let err = v.handle(&event, Invocation::at(up.last_modified_ms + 2000)).await.expect_err("the lease still runs");
    assert!(err.retryable() && err.to_string().contains("another invocation is sending"), "{err}");
    assert!(w.notices(3, 2).await?.is_empty());
    // Once it has run out, the next redelivery takes the claim over and sends it once.
    orphan.notifying = Some(kbha_lambda::claim::Claim { by: "a-copy-that-died".into(), until_ms: 1 });
    w.emu.put_bytes(STATE, &key, serde_json::to_vec(&orphan)?).await?;
    let recs = v.handle(&event, Invocation::at(up.last_modified_ms + 3000)).await?;
    assert!(recs[0].notice_id.is_some());
    assert_eq!(w.notices(3, 3).await?.len(), 1);
    let rec = w.record(BACKUPS, &up.key).await?.expect("record");
    assert!(rec.notified && rec.notifying.is_none(), "{rec:?}");
    Ok(())
}

#[tokio::test]
async fn url_encoded_keys_with_spaces_and_non_ascii_characters_are_found() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let v = w.verifier(&[]).await?;
    for (shape, key) in [
        (S3Shape::Direct, "chromadb/2026/11/26/chroma backup 10:00.tar.gz"),
        (S3Shape::Sns, "chromadb/2026/11/26/sauvegarde région+été 11:00.tar.gz"),
        (S3Shape::EventBridge, "chromadb/2026/11/26/バックアップ 12:00 (1).tar.gz"),
    ] {
        let up = w.put_backup(key, &files(), recent()).await?;
        let records = v.handle(&s3_event(shape, &[&up]), Invocation::at(up.last_modified_ms + 1000)).await?;
        assert_eq!(records[0].action, ActionTaken::Recorded, "{shape:?} {key}: {:?}", records[0].skipped);
        assert_eq!(records[0].subject, format!("s3://{BACKUPS}/{key}"));
        let rec = w.record(BACKUPS, key).await?.expect("record under the decoded key");
        assert_eq!(rec.key, key);
    }
    Ok(())
}

#[tokio::test]
async fn manifests_and_keys_no_source_owns_are_skipped() -> Result<()> {
    let w = ReplicationWorld::start().await?;
    let up = w.put_backup("chromadb/with-manifest.tar.gz", &files(), recent()).await?;
    let manifest = w.head(BACKUPS, "chromadb/with-manifest.tar.gz.manifest.json").await?;
    let stray = w.put(BACKUPS, "elsewhere/file.bin", b"x".to_vec()).await?;
    let v = w.verifier(&[]).await?;
    let records = v.handle(&s3_event(S3Shape::Direct, &[&manifest, &stray, &up]), Invocation::at(up.last_modified_ms + 1000)).await?;
    let actions: Vec<_> = records.iter().map(|r| r.action).collect();
    assert_eq!(actions, vec![ActionTaken::Skipped, ActionTaken::Skipped, ActionTaken::Recorded]);
    assert!(w.record(BACKUPS, "elsewhere/file.bin").await?.is_none());
    Ok(())
}
