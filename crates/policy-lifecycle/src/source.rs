//! Where a policy comes from, and what decides when it faults: parsed from the
//! `KBHA_POLICY` / `KBHA_POLICY_FALLBACK` settings of each function.

use std::str::FromStr;

/// Setting value that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is `{value}`; expected {expected}")]
pub struct SourceError {
    /// The value given.
    pub value: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

/// Where a policy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// The default component embedded in the binary.
    Builtin,
    /// A component object in S3, loaded at init and checked for changes while warm.
    /// Written `s3://bucket/key[?versionId=<id>][#sha256:<hex>]`.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// A pinned object version (`?versionId=`); such a source never changes.
        version_id: Option<String>,
        /// The pinned digest (`#sha256:<hex>`, lowercase hex): any other content is refused.
        sha256: Option<String>,
    },
}

impl PolicySource {
    /// An unpinned S3 source.
    pub fn s3(bucket: &str, key: &str) -> Self {
        PolicySource::S3 { bucket: bucket.to_owned(), key: key.to_owned(), version_id: None, sha256: None }
    }
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::Builtin => write!(f, "builtin"),
            PolicySource::S3 { bucket, key, version_id, sha256 } => {
                write!(f, "s3://{bucket}/{key}")?;
                if let Some(v) = version_id {
                    write!(f, "?versionId={v}")?;
                }
                if let Some(d) = sha256 {
                    write!(f, "#sha256:{d}")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for PolicySource {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "builtin" {
            return Ok(PolicySource::Builtin);
        }
        let err =
            || SourceError { value: s.to_owned(), expected: "`builtin` or `s3://bucket/key[?versionId=<id>][#sha256:<64 hex digits>]`" };
        let (rest, sha256) = match s.split_once('#') {
            None => (s, None),
            Some((rest, pin)) => {
                let hex = pin.strip_prefix("sha256:").ok_or_else(err)?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err());
                }
                (rest, Some(hex.to_ascii_lowercase()))
            }
        };
        let (location, version_id) = match rest.split_once('?') {
            None => (rest, None),
            Some((location, query)) => {
                let v = query.strip_prefix("versionId=").filter(|v| !v.is_empty() && !v.contains('&')).ok_or_else(err)?;
                (location, Some(v.to_owned()))
            }
        };
        S3Location::from_str(location)
            .ok()
            .filter(|l| !l.prefix.is_empty() && !l.prefix.ends_with('/'))
            .map(|l| PolicySource::S3 { bucket: l.bucket, key: l.prefix, version_id, sha256 })
            .ok_or_else(err)
    }
}

/// What decides when the configured policy faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The built-in default policy.
    Builtin,
    /// The world's safe answer (hold the weights; "unverified"; deliver as critical).
    Hold,
}

impl FromStr for Fallback {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "builtin" => Ok(Fallback::Builtin),
            "hold" => Ok(Fallback::Hold),
            _ => Err(SourceError { value: s.to_owned(), expected: "`builtin` or `hold`" }),
        }
    }
}

/// An `s3://bucket/prefix` location (the prefix may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (may be empty).
    pub prefix: String,
}

impl FromStr for S3Location {
    type Err = SourceError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let err = || SourceError { value: raw.to_owned(), expected: "`s3://bucket/prefix`" };
        let rest = raw.strip_prefix("s3://").ok_or_else(err)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(err());
        }
        Ok(S3Location { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_sources_parse() {
        assert_eq!("builtin".parse(), Ok(PolicySource::Builtin));
        assert_eq!("s3://policies/failover/v2.wasm".parse(), Ok(PolicySource::s3("policies", "failover/v2.wasm")));
        let digest = "ab".repeat(32);
        let pinned = format!("s3://policies/f.wasm?versionId=3HL4kqtJ#sha256:{}", digest.to_uppercase());
        let parsed: PolicySource = pinned.parse().expect("a pinned source");
        assert_eq!(
            parsed,
            PolicySource::S3 {
                bucket: "policies".into(),
                key: "f.wasm".into(),
                version_id: Some("3HL4kqtJ".into()),
                sha256: Some(digest.clone()),
            }
        );
        assert_eq!(parsed.to_string(), format!("s3://policies/f.wasm?versionId=3HL4kqtJ#sha256:{digest}"));
        for bad in [
            "s3://policies",
            "s3://policies/",
            "s3:///key",
            "https://x/y",
            "Builtin",
            "s3://p/k#sha256:abc",
            "s3://p/k#md5:00",
            "s3://p/k?versionId=",
            "s3://p/k?v=1",
        ] {
            assert!(bad.parse::<PolicySource>().is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn fallbacks_parse() {
        assert_eq!("hold".parse(), Ok(Fallback::Hold));
        assert_eq!("builtin".parse(), Ok(Fallback::Builtin));
        let e = "none".parse::<Fallback>().expect_err("must be rejected");
        assert_eq!(e.to_string(), "is `none`; expected `builtin` or `hold`");
    }

    #[test]
    fn locations_keep_an_empty_prefix() {
        let l: S3Location = "s3://backups".parse().expect("valid");
        assert_eq!(l, S3Location { bucket: "backups".into(), prefix: String::new() });
        assert_eq!(l.to_string(), "s3://backups/");
    }
}
