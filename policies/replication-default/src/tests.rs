//! One test per branch of [`decide`](super::decide).

use super::*;
use kbha_policy_sdk::types::{ChecksumMismatch, ConfigEntry, Severity};

const NOW: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

fn facts() -> BackupFacts {
    BackupFacts {
        bucket: "kbha-backups-us-east-1".into(),
        key: "chromadb/2026/11/26/chroma backup 10:00.tar.gz".into(),
        source: "chromadb".into(),
        size_bytes: 1_000_000,
        created_at: NOW - 5 * MIN,
        previous_size_bytes: Some(990_000),
        previous_created_at: Some(NOW - 65 * MIN),
        checksum: ChecksumCheck::Matched("ab".repeat(32)),
        archive: ArchiveCheck::Valid(12),
        manifest: ManifestCheck::Valid(11),
        cross_region_copy: CopyCheck::Present,
    }
}

fn input(subject: ReplicationSubject, config: &[(&str, &str)]) -> ReplicationInput {
    ReplicationInput {
        now: NOW,
        event_id: "evt-1".into(),
        subject,
        config: config.iter().map(|(k, v)| ConfigEntry { key: (*k).into(), value: (*v).into() }).collect(),
    }
}

fn judge(f: BackupFacts, config: &[(&str, &str)]) -> ReplicationDecision {
    decide(&input(ReplicationSubject::Backup(f), config)).expect("decides")
}

fn dead_man(key: Option<&str>, at: Option<i64>) -> ReplicationDecision {
    let status = SourceStatus { source: "chromadb".into(), newest_key: key.map(Into::into), newest_at: at };
    decide(&input(ReplicationSubject::DeadMan(status), &[])).expect("decides")
}

#[test]
fn a_good_backup_is_ok_without_alerts() {
    let d = judge(facts(), &[]);
    assert_eq!(d.verdict, Verdict::Ok, "{}", d.reason);
    assert!(d.alerts.is_empty());
    assert!(d.reason.contains("12 archive entries"), "{}", d.reason);
}

#[test]
fn an_empty_object_is_corrupt() {
    let d = judge(BackupFacts { size_bytes: 0, ..facts() }, &[]);
    assert_eq!(d.verdict, Verdict::Corrupt);
    assert_eq!(d.alerts[0].severity, Severity::Critical);
}

#[test]
fn a_checksum_mismatch_is_corrupt_and_names_both_hashes() {
    let d = judge(
        BackupFacts { checksum: ChecksumCheck::Mismatched(ChecksumMismatch { expected: "aa".into(), actual: "bb".into() }), ..facts() },
        &[],
    );
    assert_eq!(d.verdict, Verdict::Corrupt);
    assert!(d.reason.contains("aa") && d.reason.contains("bb"), "{}", d.reason);
}

#[test]
fn a_damaged_archive_is_corrupt() {
    let d = judge(BackupFacts { archive: ArchiveCheck::Invalid("unexpected end of file".into()), ..facts() }, &[]);
    assert_eq!(d.verdict, Verdict::Corrupt);
    assert!(d.reason.contains("unexpected end of file"));
}

#[test]
fn a_manifest_mismatch_is_corrupt_and_lists_at_most_five_problems() {
    let problems: Vec<String> = (0..7).map(|i| format!("file{i}: size differs")).collect();
    let d = judge(BackupFacts { manifest: ManifestCheck::Invalid(problems), ..facts() }, &[]);
    assert_eq!(d.verdict, Verdict::Corrupt);
    assert!(d.reason.contains("file4") && !d.reason.contains("file5"), "{}", d.reason);
    assert!(d.reason.contains("and 2 more"), "{}", d.reason);
}

#[test]
fn a_backup_older_than_the_rpo_is_a_breach() {
    let d = judge(BackupFacts { created_at: NOW - 61 * MIN, ..facts() }, &[]);
    assert_eq!(d.verdict, Verdict::Breach);
    assert!(d.reason.contains("1h 1m"), "{}", d.reason);
    let d = judge(BackupFacts { created_at: NOW - 61 * MIN, ..facts() }, &[("rpo_s", "7200")]);
    assert_eq!(d.verdict, Verdict::Ok);
}

#[test]
fn corrupt_outranks_breach() {
    let d = judge(BackupFacts { created_at: NOW - 120 * MIN, size_bytes: 0, ..facts() }, &[]);
    assert_eq!(d.verdict, Verdict::Corrupt);
    assert!(d.reason.contains("empty") && d.reason.contains("RPO"), "{}", d.reason);
}

#[test]
fn a_shrunken_backup_is_a_warning_unless_allowed() {
    let small = BackupFacts { size_bytes: 400_000, ..facts() };
    let d = judge(small.clone(), &[]);
    assert_eq!(d.verdict, Verdict::Warning);
    assert_eq!(d.alerts[0].severity, Severity::Warning);
    assert_eq!(judge(small.clone(), &[("allow_shrink", "true")]).verdict, Verdict::Ok);
    assert_eq!(judge(small.clone(), &[("min_size_pct", "30")]).verdict, Verdict::Ok);
    assert_eq!(judge(small, &[("min_size_pct", "0")]).verdict, Verdict::Ok);
    assert_eq!(judge(BackupFacts { size_bytes: 495_000, ..facts() }, &[]).verdict, Verdict::Ok, "exactly 50% is fine");
}

#[test]
fn a_missing_copy_is_a_warning_or_with_require_copy_a_breach() {
    let f = BackupFacts { cross_region_copy: CopyCheck::Missing, ..facts() };
    assert_eq!(judge(f.clone(), &[]).verdict, Verdict::Warning);
    assert_eq!(judge(f, &[("require_copy", "true")]).verdict, Verdict::Breach);
    let none = BackupFacts { cross_region_copy: CopyCheck::NotConfigured, ..facts() };
    assert_eq!(judge(none, &[("require_copy", "true")]).verdict, Verdict::Ok);
}

#[test]
fn an_unverified_checksum_warns_only_when_required() {
    let f = BackupFacts { checksum: ChecksumCheck::Unverified("cd".repeat(32)), ..facts() };
    assert_eq!(judge(f.clone(), &[]).verdict, Verdict::Ok);
    assert_eq!(judge(f, &[("require_checksum", "true")]).verdict, Verdict::Warning);
}

#[test]
fn dead_man_without_any_backup_is_a_breach() {
    let d = dead_man(None, None);
    assert_eq!(d.verdict, Verdict::Breach);
    assert!(d.reason.contains("no backup found"), "{}", d.reason);
}

#[test]
fn dead_man_with_a_stale_newest_backup_is_a_breach() {
    let d = dead_man(Some("chromadb/old.tar.gz"), Some(NOW - 90 * MIN));
    assert_eq!(d.verdict, Verdict::Breach);
    assert!(d.reason.contains("1h 30m") && d.reason.contains("chromadb/old.tar.gz"), "{}", d.reason);
}

#[test]
fn dead_man_with_a_fresh_backup_is_ok() {
    let d = dead_man(Some("chromadb/new.tar.gz"), Some(NOW - 10 * MIN));
    assert_eq!(d.verdict, Verdict::Ok, "{}", d.reason);
    assert!(d.alerts.is_empty());
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    for (k, v) in [("rpo_s", "0"), ("rpo_s", "soon"), ("min_size_pct", "150"), ("allow_shrink", "maybe")] {
        let e = decide(&input(ReplicationSubject::Backup(facts()), &[(k, v)])).expect_err("must be rejected");
        assert!(matches!(&e, PolicyError::InvalidConfig(m) if m.contains(k)), "{k}={v}: {e:?}");
    }
}
