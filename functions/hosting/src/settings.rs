//! Reading a function's environment: every error names the variable and says what is
//! expected, so a wrong configuration fails init with a message an operator can act on.

use std::collections::BTreeMap;

use kbha_core::PolicyConfig;

use crate::{Fallback, PolicySource, S3Location};

/// A configuration problem; the function refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{variable}` {problem}")]
pub struct SettingError {
    /// The environment variable at fault.
    pub variable: String,
    /// What is wrong with it and what is expected.
    pub problem: String,
}

/// A lookup of variables (the process environment, or a map in tests and `kbha replay`).
/// Values are trimmed; an empty value counts as unset.
pub struct Env<F: Fn(&str) -> Option<String>> {
    get: F,
}

impl Env<fn(&str) -> Option<String>> {
    /// The process environment.
    pub fn process() -> Self {
        Env { get: |k| std::env::var(k).ok() }
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// Variables looked up through `get`.
    pub fn new(get: F) -> Self {
        Env { get }
    }

    fn err(variable: &str, problem: impl Into<String>) -> SettingError {
        SettingError { variable: variable.to_owned(), problem: problem.into() }
    }

    /// The value, if set and not blank.
    pub fn optional(&self, k: &str) -> Option<String> {
        (self.get)(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// The value, or an error saying it is not set.
    pub fn required(&self, k: &str) -> Result<String, SettingError> {
        self.optional(k).ok_or_else(|| Self::err(k, "is not set"))
    }

    /// A whole number, `default` when unset.
    pub fn number(&self, k: &str, default: u64) -> Result<u64, SettingError> {
        match self.optional(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Self::err(k, format!("is `{v}`; expected a whole number"))),
        }
    }

    /// `true` / `false`, `default` when unset.
    pub fn flag(&self, k: &str, default: bool) -> Result<bool, SettingError> {
        match self.optional(k).as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(Self::err(k, format!("is `{other}`; expected `true` or `false`"))),
        }
    }

    /// A JSON value, `None` when unset; `example` shows the expected shape in the error.
    pub fn json<T: serde::de::DeserializeOwned>(&self, k: &str, example: &str) -> Result<Option<T>, SettingError> {
        self.optional(k)
            .map(|raw| serde_json::from_str(&raw).map_err(|e| Self::err(k, format!("is not valid JSON like `{example}`: {e}"))))
            .transpose()
    }

    /// An `s3://bucket/prefix` location, `None` when unset.
    pub fn s3_location(&self, k: &str) -> Result<Option<S3Location>, SettingError> {
        self.optional(k).map(|raw| raw.parse().map_err(|e: crate::SourceError| Self::err(k, e.to_string()))).transpose()
    }

    /// `KBHA_POLICY` (default `builtin`).
    pub fn policy_source(&self) -> Result<PolicySource, SettingError> {
        let raw = self.optional("KBHA_POLICY").unwrap_or_else(|| "builtin".into());
        raw.parse().map_err(|e: crate::SourceError| Self::err("KBHA_POLICY", e.to_string()))
    }

    /// `KBHA_POLICY_FALLBACK` (default `builtin`).
    pub fn policy_fallback(&self) -> Result<Fallback, SettingError> {
        let raw = self.optional("KBHA_POLICY_FALLBACK").unwrap_or_else(|| "builtin".into());
        raw.parse().map_err(|e: crate::SourceError| Self::err("KBHA_POLICY_FALLBACK", e.to_string()))
    }

    /// `KBHA_POLICY_PUBLIC_KEY` (ed25519, 64 hex digits or base64; unset: no signature
    /// required), `KBHA_POLICY_CHECK_SECONDS` (default 30) and `KBHA_SHADOW_POLICY`
    /// (a policy source; unset: no shadow).
    pub fn policy_lifecycle(&self) -> Result<crate::Lifecycle, SettingError> {
        let public_key = self
            .optional("KBHA_POLICY_PUBLIC_KEY")
            .map(|raw| crate::verify::parse_public_key(&raw).map_err(|e| Self::err("KBHA_POLICY_PUBLIC_KEY", e)))
            .transpose()?;
        let shadow = self
            .optional("KBHA_SHADOW_POLICY")
            .map(|raw| raw.parse().map_err(|e: crate::SourceError| Self::err("KBHA_SHADOW_POLICY", e.to_string())))
            .transpose()?;
        Ok(crate::Lifecycle { public_key, check_every_s: self.number("KBHA_POLICY_CHECK_SECONDS", 30)?, shadow })
    }

    /// `KBHA_POLICY_CONFIG`: a JSON object of strings (default empty).
    pub fn policy_config(&self) -> Result<PolicyConfig, SettingError> {
        Ok(self.json::<BTreeMap<String, String>>("KBHA_POLICY_CONFIG", r#"{"rpo_s":"3600"}"#)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Env::new(move |k| map.get(k).cloned())
    }

    #[test]
    fn errors_name_the_variable_and_the_expectation() {
        let e = env(&[("N", "ten"), ("F", "yes"), ("P", "http://x"), ("J", "{")]);
        assert_eq!(
            e.number("N", 1).expect_err("must be rejected").to_string(),
            "invalid configuration: `N` is `ten`; expected a whole number"
        );
        assert!(e.flag("F", false).expect_err("must be rejected").to_string().contains("`F` is `yes`"));
        assert!(e.s3_location("P").expect_err("must be rejected").to_string().contains("s3://bucket/prefix"));
        assert!(e.json::<serde_json::Value>("J", "{}").is_err());
        assert_eq!(e.required("MISSING").expect_err("must be rejected").to_string(), "invalid configuration: `MISSING` is not set");
    }

    #[test]
    fn defaults_apply_when_unset_or_blank() {
        let e = env(&[("BLANK", "  ")]);
        assert_eq!(e.number("BLANK", 7), Ok(7));
        assert_eq!(e.flag("UNSET", true), Ok(true));
        assert_eq!(e.policy_source(), Ok(PolicySource::Builtin));
        assert_eq!(e.policy_fallback(), Ok(Fallback::Builtin));
        assert!(e.policy_config().expect("empty").is_empty());
        assert_eq!(e.policy_lifecycle(), Ok(crate::Lifecycle::default()));
    }

    #[test]
    fn lifecycle_settings_parse() {
        let key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        let pairs = [("KBHA_POLICY_PUBLIC_KEY", key), ("KBHA_POLICY_CHECK_SECONDS", "5")];
        let e = env(&pairs);
        let l = e.policy_lifecycle().expect("valid");
        assert_eq!((l.public_key.map(|k| hex::encode(k.to_bytes())), l.check_every_s), (Some(key.to_owned()), 5));
        let short = [("KBHA_POLICY_PUBLIC_KEY", "abcd")];
        let bad = env(&short).policy_lifecycle().expect_err("a 2-byte key");
        assert!(bad.to_string().contains("`KBHA_POLICY_PUBLIC_KEY` is 2 bytes"), "{bad}");
    }
}
