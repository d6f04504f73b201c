//! The replication verifier's configuration: one typed struct, parsed once at init from
//! environment variables. Every error names the variable. docs/replication.md's
//! "Configuration" table documents each one.

use kbha_core::PolicyConfig;
use kbha_lambda::{Env, SettingError};
use kbha_policy_lifecycle::{Fallback, PolicySource};
use serde::Deserialize;

/// Whether a backup comes with a manifest next to it (`<key>.manifest.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ManifestMode {
    /// Check it when present.
    #[default]
    Optional,
    /// It must be present; a missing manifest makes the backup corrupt.
    Required,
    /// Never look for one.
    None,
}

/// Where the cross-region copy of a source's backups lands.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyConfig {
    /// Bucket in the other region.
    pub bucket: String,
    /// That region.
    pub region: String,
    /// Key prefix replacing the source's `prefix` (default: the same keys).
    #[serde(default)]
    pub prefix: Option<String>,
}

/// One backup source (`KBHA_BACKUP_SOURCES` entry).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Logical name (`chromadb`, `redis`); used in verdicts and alerts.
    pub name: String,
    /// Bucket the backups land in.
    pub bucket: String,
    /// Key prefix of this source's backups (may be empty).
    #[serde(default)]
    pub prefix: String,
    /// Region of the bucket; its status object is what the failover function's RPO gate reads.
    pub region: String,
    /// Manifest layout (default `optional`).
    #[serde(default)]
    pub manifest: ManifestMode,
    /// Cross-region copy to check, if any.
    #[serde(default)]
    pub copy: Option<CopyConfig>,
}

impl SourceConfig {
    /// Whether `bucket`/`key` belongs to this source.
    pub fn owns(&self, bucket: &str, key: &str) -> bool {
        self.bucket == bucket && key.starts_with(&self.prefix)
    }

    /// Key of the cross-region copy of `key`.
    pub fn copy_key(&self, key: &str) -> Option<(String, String)> {
        let copy = self.copy.as_ref()?;
        let rest = key.strip_prefix(&self.prefix).unwrap_or(key);
        let key = match &copy.prefix {
            Some(p) => format!("{p}{rest}"),
            None => key.to_owned(),
        };
        Some((copy.bucket.clone(), key))
    }
}

/// Everything the replication verifier is told by its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// `KBHA_BACKUP_SOURCES`: the sources, JSON list.
    pub sources: Vec<SourceConfig>,
    /// `KBHA_STATE_BUCKET`: bucket of verification records and status objects.
    pub state_bucket: String,
    /// `KBHA_RECORD_PREFIX`: key prefix of verification records (default `kbha/replication/records/`).
    pub record_prefix: String,
    /// `KBHA_STATUS_PREFIX`: key prefix of the per-region status objects (default `kbha/replication/status/`).
    pub status_prefix: String,
    /// `KBHA_NOTIFY_TOPIC_ARN`: SNS topic for notices.
    pub notify_topic_arn: String,
    /// `KBHA_POLICY`: `builtin` or `s3://bucket/key`.
    pub policy: PolicySource,
    /// `KBHA_POLICY_FALLBACK`: `builtin` or `hold`.
    pub fallback: Fallback,
    /// Policy parameters: `KBHA_RPO_SECONDS` as `rpo_s`, then `KBHA_POLICY_CONFIG` on top.
    pub policy_config: PolicyConfig,
    /// `KBHA_COPY_DEADLINE_SECONDS`: how long a cross-region copy that was missing when its
    /// backup was verified is looked for again on each scheduled check (default 3600).
    pub copy_deadline_s: u64,
    /// `KBHA_RESTORE_DIR`: where the restore test extracts backups (default: the system's
    /// temporary directory, `/tmp` on Lambda); it works in a `kbha-restore` directory made
    /// under it and removed after each test, never in the directory itself.
    pub restore_dir: std::path::PathBuf,
    /// `KBHA_RESTORE_MAX_BYTES`: most bytes a restore test may write, in bytes or with a
    /// `KiB`/`MiB`/`GiB` suffix (default 448 MiB, inside Lambda's default 512 MB of `/tmp`);
    /// more gives `too_large`.
    pub restore_max_bytes: u64,
    /// `KBHA_RESTORE_MAX_AGE_DAYS`: the scheduled check warns when a source's last restore
    /// test is older than this many days (or there is none); unset: no such warning.
    pub restore_max_age_days: Option<u64>,
}

impl VerifierConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingError> {
        Self::from_env_lookup(&Env::process())
    }

    /// Reads configuration through `get` (tests and `kbha replay` pass maps).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        Self::from_env_lookup(&Env::new(get))
    }

    fn from_env_lookup<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, SettingError> {
        let example = r#"[{"name":"chromadb","bucket":"kbha-backups-us-east-1","prefix":"chromadb/","region":"us-east-1"}]"#;
        let sources: Vec<SourceConfig> = env
            .json("KBHA_BACKUP_SOURCES", example)?
            .ok_or_else(|| SettingError { variable: "KBHA_BACKUP_SOURCES".into(), problem: "is not set".into() })?;
        validate_sources(&sources)?;
        let rpo_s = env.number("KBHA_RPO_SECONDS", 3600)?;
        if rpo_s == 0 {
            return Err(SettingError { variable: "KBHA_RPO_SECONDS".into(), problem: "is 0; expected at least 1".into() });
        }
        let mut policy_config = PolicyConfig::from([("rpo_s".to_owned(), rpo_s.to_string())]);
        policy_config.extend(env.policy_config()?);
        Ok(VerifierConfig {
            sources,
            state_bucket: env.required("KBHA_STATE_BUCKET")?,
            record_prefix: env.optional("KBHA_RECORD_PREFIX").unwrap_or_else(|| "kbha/replication/records/".into()),
            status_prefix: env.optional("KBHA_STATUS_PREFIX").unwrap_or_else(|| "kbha/replication/status/".into()),
            notify_topic_arn: env.required("KBHA_NOTIFY_TOPIC_ARN")?,
            policy: env.policy_source()?,
            fallback: env.policy_fallback()?,
            policy_config,
            copy_deadline_s: env.number("KBHA_COPY_DEADLINE_SECONDS", 3600)?,
            restore_dir: env.optional("KBHA_RESTORE_DIR").map_or_else(std::env::temp_dir, std::path::PathBuf::from),
            restore_max_bytes: match env.optional("KBHA_RESTORE_MAX_BYTES") {
                None => 448 << 20,
                Some(v) => parse_bytes(&v).map_err(|problem| SettingError { variable: "KBHA_RESTORE_MAX_BYTES".into(), problem })?,
            },
            restore_max_age_days: match env.optional("KBHA_RESTORE_MAX_AGE_DAYS") {
                None => None,
                Some(_) => match env.number("KBHA_RESTORE_MAX_AGE_DAYS", 0)? {
                    0 => {
                        return Err(SettingError {
                            variable: "KBHA_RESTORE_MAX_AGE_DAYS".into(),
                            problem: "is 0; expected at least 1 (or unset it)".into(),
                        });
                    }
                    n => Some(n),
                },
            },
        })
    }

    /// Regions of the cross-region copies, each once.
    pub fn copy_regions(&self) -> Vec<String> {
        let regions: std::collections::BTreeSet<String> =
            self.sources.iter().filter_map(|s| s.copy.as_ref()).map(|c| c.region.clone()).collect();
        regions.into_iter().collect()
    }

    /// The source that owns `bucket`/`key` (the longest matching prefix wins).
    pub fn source_of(&self, bucket: &str, key: &str) -> Option<&SourceConfig> {
        self.sources.iter().filter(|s| s.owns(bucket, key)).max_by_key(|s| s.prefix.len())
    }
}

/// Bytes, or with a `KiB`, `MiB` or `GiB` suffix (the template passes `448MiB`: it cannot
/// multiply).
fn parse_bytes(v: &str) -> Result<u64, String> {
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, ""),
    };
    let shift = match unit.trim() {
        "" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(format!("is `{v}`; expected a whole number of bytes, or one with a KiB, MiB or GiB suffix")),
    };
    match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(1 << shift)) {
        Some(0) => Err(format!("is `{v}`; expected at least 1 byte")),
        Some(n) => Ok(n),
        None => Err(format!("is `{v}`; expected a whole number of bytes, or one with a KiB, MiB or GiB suffix")),
    }
}

fn validate_sources(sources: &[SourceConfig]) -> Result<(), SettingError> {
    let err = |problem: String| Err(SettingError { variable: "KBHA_BACKUP_SOURCES".into(), problem });
    if sources.is_empty() {
        return err("lists no source; give at least one".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for s in sources {
        if s.name.is_empty() || s.bucket.is_empty() || s.region.is_empty() {
            return err("has a source with an empty `name`, `bucket` or `region`".into());
        }
        if !names.insert(&s.name) {
            return err(format!("names source `{}` twice", s.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn base() -> Vec<(&'static str, String)> {
        vec![
            ("KBHA_BACKUP_SOURCES", r#"[{"name":"chromadb","bucket":"b1","prefix":"chromadb/","region":"us-east-1","copy":{"bucket":"b2","region":"us-west-2"}},{"name":"chroma-hourly","bucket":"b1","prefix":"chromadb/hourly/","region":"us-east-1","manifest":"required"}]"#.into()),
            ("KBHA_STATE_BUCKET", "state".into()),
            ("KBHA_NOTIFY_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:kbha-notices".into()),
        ]
    }

    fn parse(vars: &[(&'static str, String)]) -> Result<VerifierConfig, SettingError> {
        let map: BTreeMap<&str, String> = vars.iter().cloned().collect();
        VerifierConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = parse(&base()).expect("valid");
        assert_eq!(c.record_prefix, "kbha/replication/records/");
        assert_eq!(c.status_prefix, "kbha/replication/status/");
        assert_eq!(c.policy, PolicySource::Builtin);
        assert_eq!(c.policy_config.get("rpo_s").map(String::as_str), Some("3600"));
        assert_eq!(c.sources[0].manifest, ManifestMode::Optional);
        assert_eq!(c.copy_deadline_s, 3600);
        assert_eq!(c.restore_max_bytes, 448 << 20);
        assert_eq!(c.restore_max_age_days, None);
        assert_eq!(c.restore_dir, std::env::temp_dir());
    }

    #[test]
    fn policy_config_overrides_the_rpo_variable() {
        let mut v = base();
        v.push(("KBHA_RPO_SECONDS", "1800".into()));
        assert_eq!(parse(&v).expect("valid").policy_config["rpo_s"], "1800");
        v.push(("KBHA_POLICY_CONFIG", r#"{"rpo_s":"600","min_size_pct":"80"}"#.into()));
        let c = parse(&v).expect("valid");
        assert_eq!(c.policy_config["rpo_s"], "600");
        assert_eq!(c.policy_config["min_size_pct"], "80");
    }

    #[test]
    fn restore_budget_takes_binary_suffixes() {
        assert_eq!(parse_bytes("10000"), Ok(10_000));
        assert_eq!(parse_bytes("448MiB"), Ok(448 << 20));
        assert_eq!(parse_bytes("10 GiB"), Ok(10 << 30));
        assert_eq!(parse_bytes("4KiB"), Ok(4096));
        assert!(parse_bytes("99999999999GiB").is_err(), "overflow is refused");
    }

    #[test]
    fn the_longest_prefix_owns_a_key() {
        let c = parse(&base()).expect("valid");
        assert_eq!(c.source_of("b1", "chromadb/hourly/x.tgz").map(|s| s.name.as_str()), Some("chroma-hourly"));
        assert_eq!(c.source_of("b1", "chromadb/daily/x.tgz").map(|s| s.name.as_str()), Some("chromadb"));
        assert!(c.source_of("b2", "chromadb/x.tgz").is_none());
        assert_eq!(c.sources[0].copy_key("chromadb/x.tgz"), Some(("b2".into(), "chromadb/x.tgz".into())));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value, expect) in [
            ("KBHA_BACKUP_SOURCES", "[]", "no source"),
            ("KBHA_BACKUP_SOURCES", r#"[{"name":"a","bucket":"b","region":"r","colour":"red"}]"#, "not valid JSON"),
            ("KBHA_BACKUP_SOURCES", r#"[{"name":"a","bucket":"b","region":"r"},{"name":"a","bucket":"c","region":"r"}]"#, "twice"),
            ("KBHA_RPO_SECONDS", "0", "at least 1"),
            ("KBHA_POLICY", "ftp://x", "s3://bucket/key"),
            ("KBHA_COPY_DEADLINE_SECONDS", "1h", "whole number"),
            ("KBHA_RESTORE_MAX_BYTES", "0", "at least 1"),
            ("KBHA_RESTORE_MAX_BYTES", "2TB", "suffix"),
            ("KBHA_RESTORE_MAX_BYTES", "MiB", "whole number"),
            ("KBHA_RESTORE_MAX_AGE_DAYS", "0", "at least 1"),
            ("KBHA_RESTORE_MAX_AGE_DAYS", "a week", "whole number"),
        ] {
            let mut v = base();
            v.retain(|(k, _)| *k != var);
            v.push((var, value.into()));
            let e = parse(&v).expect_err("must be rejected");
            assert_eq!(e.variable, var);
            assert!(e.problem.contains(expect), "{var}={value}: {e}");
        }
        let mut v = base();
        v.retain(|(k, _)| *k != "KBHA_STATE_BUCKET");
        assert_eq!(parse(&v).expect_err("must be rejected").variable, "KBHA_STATE_BUCKET");
    }
}
