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
    /// A component object in S3, loaded at init.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::Builtin => write!(f, "builtin"),
            PolicySource::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

impl FromStr for PolicySource {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "builtin" {
            return Ok(PolicySource::Builtin);
        }
        S3Location::from_str(s)
            .ok()
            .filter(|l| !l.prefix.is_empty() && !l.prefix.ends_with('/'))
            .map(|l| PolicySource::S3 { bucket: l.bucket, key: l.prefix })
            .ok_or(SourceError { value: s.to_owned(), expected: "`builtin` or `s3://bucket/key`" })
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
        assert_eq!(
            "s3://policies/failover/v2.wasm".parse(),
            Ok(PolicySource::S3 { bucket: "policies".into(), key: "failover/v2.wasm".into() })
        );
        for bad in ["s3://policies", "s3://policies/", "s3:///key", "https://x/y", "Builtin"] {
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
