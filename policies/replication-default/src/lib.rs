//! The default kbha replication policy.
//!
//! Judges one backup that landed (the facts the verifier gathered: size, SHA-256,
//! gzip/tar walk, manifest, cross-region copy) or, on the schedule, the newest backup of
//! one source (the dead-man switch). A pure function of its input.
//!
//! # Config keys
//!
//! | key                   | default | meaning |
//! |-----------------------|---------|---------|
//! | `rpo_s`               | `3600`  | recovery point objective: a backup older than this (at arrival or at the scheduled check) is a breach |
//! | `min_size_pct`        | `50`    | a backup smaller than this percentage of the previous one of the same source is a warning (0 disables) |
//! | `allow_shrink`        | `false` | accept any shrink without a warning |
//! | `require_copy`        | `false` | a missing cross-region copy is a breach instead of a warning |
//! | `require_checksum`    | `false` | a backup with no expected checksum to compare with (no S3 checksum, sidecar or manifest) is a warning |
//!
//! # Rules, most severe first
//!
//! - **corrupt** (critical alert): empty object; SHA-256 differs from the expected one;
//!   the gzip/tar stream is damaged or truncated; the manifest does not match.
//! - **breach** (critical alert): the backup was taken more than `rpo_s` ago; the
//!   dead-man check finds no backup, or a newest backup older than `rpo_s`; with
//!   `require_copy`, the cross-region copy is missing.
//! - **warning** (warning alert): size far below the previous backup; cross-region copy
//!   missing; with `require_checksum`, nothing to compare the checksum with.
//! - **ok** otherwise, without alerts.

use kbha_policy_sdk::types::{
    Alert, ArchiveCheck, BackupFacts, ChecksumCheck, CopyCheck, ManifestCheck, PolicyError, ReplicationDecision, ReplicationInput,
    ReplicationSubject, SourceStatus, Verdict,
};
use kbha_policy_sdk::{Config, critical, warning};

/// The policy, exported as the component's `decide`.
pub struct DefaultReplication;

impl kbha_policy_sdk::replication::Guest for DefaultReplication {
    fn decide(input: ReplicationInput) -> Result<ReplicationDecision, PolicyError> {
        decide(&input)
    }
}

// Natively this crate is a library for tests; only the component exports.
#[cfg(target_arch = "wasm32")]
kbha_policy_sdk::export_replication_policy!(DefaultReplication);

/// The parsed configuration (see the crate docs for keys and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// RPO in seconds.
    pub rpo_s: u64,
    /// Smallest acceptable size relative to the previous backup, percent.
    pub min_size_pct: u64,
    /// Accept any shrink.
    pub allow_shrink: bool,
    /// Missing copy is a breach.
    pub require_copy: bool,
    /// No checksum to compare with is a warning.
    pub require_checksum: bool,
}

impl Settings {
    /// Reads the settings from the input's config entries.
    pub fn parse(config: &Config<'_>) -> Result<Self, PolicyError> {
        let rpo_s = config.get_u64("rpo_s", 3600)?;
        if rpo_s == 0 {
            return Err(PolicyError::InvalidConfig("`rpo_s` must be at least 1 second".into()));
        }
        let min_size_pct = config.get_u64("min_size_pct", 50)?;
        if min_size_pct > 100 {
            return Err(PolicyError::InvalidConfig(format!("`min_size_pct` must be between 0 and 100, got `{min_size_pct}`")));
        }
        Ok(Settings {
            rpo_s,
            min_size_pct,
            allow_shrink: config.get_bool("allow_shrink", false)?,
            require_copy: config.get_bool("require_copy", false)?,
            require_checksum: config.get_bool("require_checksum", false)?,
        })
    }
}

/// Findings of one evaluation, most severe verdict wins.
struct Findings {
    verdict: Verdict,
    lines: Vec<String>,
}

impl Findings {
    fn new() -> Self {
        Findings { verdict: Verdict::Ok, lines: Vec::new() }
    }

    fn add(&mut self, verdict: Verdict, line: String) {
        if rank(verdict) > rank(self.verdict) {
            self.verdict = verdict;
        }
        self.lines.push(line);
    }

    fn decide(self, subject: &str, ok_reason: String) -> ReplicationDecision {
        if self.verdict == Verdict::Ok {
            return ReplicationDecision { verdict: Verdict::Ok, reason: ok_reason, alerts: Vec::new() };
        }
        let reason = self.lines.join("; ");
        let name = verdict_name(self.verdict);
        let summary = format!("backup {name}: {subject}");
        let alert: Alert =
            if self.verdict == Verdict::Warning { warning(summary, reason.clone()) } else { critical(summary, reason.clone()) };
        ReplicationDecision { verdict: self.verdict, reason, alerts: vec![alert] }
    }
}

fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Ok => 0,
        Verdict::Warning => 1,
        Verdict::Breach => 2,
        Verdict::Corrupt => 3,
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

/// Human-readable duration, e.g. `1h 5m`.
fn fmt_secs(s: u64) -> String {
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// Whole seconds from `at` to `now` (0 when `at` is in the future).
fn age_s(now: i64, at: i64) -> u64 {
    u64::try_from(now.saturating_sub(at) / 1000).unwrap_or(0)
}

/// The decision, as a plain function so native tests call it directly.
pub fn decide(input: &ReplicationInput) -> Result<ReplicationDecision, PolicyError> {
    let settings = Settings::parse(&Config::new(&input.config))?;
    Ok(match &input.subject {
        ReplicationSubject::Backup(facts) => judge_backup(input.now, facts, &settings),
        ReplicationSubject::DeadMan(status) => judge_dead_man(input.now, status, &settings),
    })
}

fn judge_backup(now: i64, f: &BackupFacts, s: &Settings) -> ReplicationDecision {
    let mut found = Findings::new();
    if f.size_bytes == 0 {
        found.add(Verdict::Corrupt, "the object is empty".into());
    }
    match &f.checksum {
        ChecksumCheck::Mismatched(m) => {
            found.add(Verdict::Corrupt, format!("SHA-256 is {} but {} was expected", m.actual, m.expected));
        }
        ChecksumCheck::Unverified(_) if s.require_checksum => {
            found.add(Verdict::Warning, "no expected SHA-256 to compare with (no S3 checksum, sidecar or manifest)".into());
        }
        _ => {}
    }
    if let ArchiveCheck::Invalid(problem) = &f.archive {
        found.add(Verdict::Corrupt, format!("archive is damaged: {problem}"));
    }
    if let ManifestCheck::Invalid(problems) = &f.manifest {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        let more = problems.len().saturating_sub(shown.len());
        let tail = if more > 0 { format!(" (and {more} more)") } else { String::new() };
        found.add(Verdict::Corrupt, format!("manifest does not match: {}{tail}", shown.join(", ")));
    }
    let age = age_s(now, f.created_at);
    if age > s.rpo_s {
        found.add(Verdict::Breach, format!("the backup is {} old, past the RPO of {}", fmt_secs(age), fmt_secs(s.rpo_s)));
    }
    if let Some(previous) = f.previous_size_bytes
        && !s.allow_shrink
        && s.min_size_pct > 0
        && previous > 0
        && u128::from(f.size_bytes) * 100 < u128::from(previous) * u128::from(s.min_size_pct)
    {
        found.add(
            Verdict::Warning,
            format!("size {} bytes is below {}% of the previous backup ({} bytes)", f.size_bytes, s.min_size_pct, previous),
        );
    }
    if f.cross_region_copy == CopyCheck::Missing {
        let verdict = if s.require_copy { Verdict::Breach } else { Verdict::Warning };
        found.add(verdict, "the cross-region copy is missing or differs".into());
    }
    let subject = format!("s3://{}/{}", f.bucket, f.key);
    let detail = match &f.archive {
        ArchiveCheck::Valid(n) => format!(", {n} archive entries read"),
        _ => String::new(),
    };
    let ok = format!("{subject} ({} bytes, {} old{detail}) verified", f.size_bytes, fmt_secs(age));
    found.decide(&subject, ok)
}

fn judge_dead_man(now: i64, status: &SourceStatus, s: &Settings) -> ReplicationDecision {
    let mut found = Findings::new();
    let subject = format!("source `{}`", status.source);
    let ok = match (&status.newest_key, status.newest_at) {
        (Some(key), Some(at)) => {
            let age = age_s(now, at);
            if age > s.rpo_s {
                found.add(
                    Verdict::Breach,
                    format!("no backup within the RPO of {}: the newest, `{key}`, is {} old", fmt_secs(s.rpo_s), fmt_secs(age)),
                );
            }
            format!("newest backup `{key}` is {} old, within the RPO of {}", fmt_secs(age), fmt_secs(s.rpo_s))
        }
        _ => {
            found.add(Verdict::Breach, format!("no backup found for {subject}"));
            String::new()
        }
    };
    found.decide(&subject, ok)
}

#[cfg(test)]
mod tests;
