//! Reading a function's environment: every error names the variable and says what is
//! expected, so a wrong configuration fails init with a message an operator can act on.
//! The one parser of settings: each function's config reads through [`Env`], so a kind of
//! value (seconds, a list, a choice, JSON) is accepted and refused the same way everywhere.

use std::collections::BTreeMap;

use kbha_core::PolicyConfig;
use kbha_policy_host::Limits;

use kbha_policy_lifecycle::{Fallback, PolicySource, S3Location};

/// Sets the limits of the process's policy engine: re-exported here, next to
/// [`Env::policy_limits`] which reads them, for the functions' start-up.
pub use kbha_policy_lifecycle::configure_engine;

/// A configuration problem; the function refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{variable}` {problem}")]
pub struct SettingError {
    /// The environment variable at fault.
    pub variable: String,
    /// What is wrong with it and what is expected.
    pub problem: String,
}

impl SettingError {
    /// A problem with `variable`, for the checks a config makes beyond what a reader does.
    pub fn new(variable: &str, problem: impl Into<String>) -> Self {
        SettingError { variable: variable.to_owned(), problem: problem.into() }
    }
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

    /// The value, if set and not blank.
    pub fn optional(&self, k: &str) -> Option<String> {
        (self.get)(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// The value, or an error saying it is not set.
    pub fn required(&self, k: &str) -> Result<String, SettingError> {
        self.optional(k).ok_or_else(|| SettingError::new(k, "is not set"))
    }

    /// The value, `default` when unset.
    pub fn text(&self, k: &str, default: &str) -> String {
        self.optional(k).unwrap_or_else(|| default.to_owned())
    }

    /// A whole number, `default` when unset.
    pub fn number(&self, k: &str, default: u64) -> Result<u64, SettingError> {
        self.whole(k, default, "a whole number")
    }

    /// A duration in whole seconds, `default` when unset.
    pub fn seconds(&self, k: &str, default: u64) -> Result<u64, SettingError> {
        self.whole(k, default, "a whole number of seconds")
    }

    fn whole(&self, k: &str, default: u64, expected: &str) -> Result<u64, SettingError> {
        match self.optional(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| SettingError::new(k, format!("is `{v}`; expected {expected}"))),
        }
    }

    /// `true` / `false` (also `1`/`0`, `yes`/`no`, in any case), `default` when unset.
    pub fn flag(&self, k: &str, default: bool) -> Result<bool, SettingError> {
        match self.optional(k).map(|v| (v.to_ascii_lowercase(), v)) {
            None => Ok(default),
            Some((lower, raw)) => match lower.as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(SettingError::new(k, format!("is `{raw}`; expected `true` or `false`"))),
            },
        }
    }

    /// One of the `options` by its exact name, `default` when unset.
    pub fn choice<T: Clone>(&self, k: &str, default: T, options: &[(&str, T)]) -> Result<T, SettingError> {
        let Some(raw) = self.optional(k) else { return Ok(default) };
        if let Some((_, value)) = options.iter().find(|(name, _)| *name == raw) {
            return Ok(value.clone());
        }
        let names: Vec<String> = options.iter().map(|(name, _)| format!("`{name}`")).collect();
        let expected = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        };
        Err(SettingError::new(k, format!("is `{raw}`; expected {expected}")))
    }

    /// Comma-separated entries, trimmed, each non-empty and passing `valid`; empty when
    /// unset. `what` names the entries in the error (`source names (letters, ...)`).
    pub fn list(&self, k: &str, what: &str, valid: impl Fn(&str) -> bool) -> Result<Vec<String>, SettingError> {
        let Some(raw) = self.optional(k) else { return Ok(Vec::new()) };
        raw.split(',')
            .map(str::trim)
            .map(|entry| {
                if !entry.is_empty() && valid(entry) {
                    Ok(entry.to_owned())
                } else {
                    Err(SettingError::new(k, format!("has `{entry}`; expected comma-separated {what}")))
                }
            })
            .collect()
    }

    /// A JSON value, `None` when unset; `example` shows the expected shape in the error.
    pub fn json<T: serde::de::DeserializeOwned>(&self, k: &str, example: &str) -> Result<Option<T>, SettingError> {
        self.json_as(k, "valid JSON", example)
    }

    /// A JSON value, `None` when unset; the error says it is not `shape` (`a JSON list of
    /// targets`) like `example`.
    pub fn json_as<T: serde::de::DeserializeOwned>(&self, k: &str, shape: &str, example: &str) -> Result<Option<T>, SettingError> {
        self.optional(k)
            .map(|raw| serde_json::from_str(&raw).map_err(|e| SettingError::new(k, format!("is not {shape} like `{example}`: {e}"))))
            .transpose()
    }

    /// A JSON value that must be set; see [`Env::json_as`].
    pub fn required_json<T: serde::de::DeserializeOwned>(&self, k: &str, shape: &str, example: &str) -> Result<T, SettingError> {
        self.json_as(k, shape, example)?.ok_or_else(|| SettingError::new(k, "is not set"))
    }

    /// An `s3://bucket/prefix` location, `None` when unset.
    pub fn s3_location(&self, k: &str) -> Result<Option<S3Location>, SettingError> {
        self.optional(k)
            .map(|raw| raw.parse().map_err(|e: kbha_policy_lifecycle::SourceError| SettingError::new(k, e.to_string())))
            .transpose()
    }

    /// `KBHA_POLICY` (default `builtin`).
    pub fn policy_source(&self) -> Result<PolicySource, SettingError> {
        let k = "KBHA_POLICY";
        self.text(k, "builtin").parse().map_err(|e: kbha_policy_lifecycle::SourceError| SettingError::new(k, e.to_string()))
    }

    /// `KBHA_POLICY_FALLBACK` (default `builtin`).
    pub fn policy_fallback(&self) -> Result<Fallback, SettingError> {
        let k = "KBHA_POLICY_FALLBACK";
        self.text(k, "builtin").parse().map_err(|e: kbha_policy_lifecycle::SourceError| SettingError::new(k, e.to_string()))
    }

    /// `KBHA_POLICY_PUBLIC_KEY` (ed25519, 64 hex digits or base64; unset: no signature
    /// required), `KBHA_POLICY_CHECK_SECONDS` (default 30) and `KBHA_SHADOW_POLICY`
    /// (a policy source; unset: no shadow).
    pub fn policy_lifecycle(&self) -> Result<kbha_policy_lifecycle::Lifecycle, SettingError> {
        let public_key = self
            .optional("KBHA_POLICY_PUBLIC_KEY")
            .map(|raw| kbha_policy_lifecycle::verify::parse_public_key(&raw).map_err(|e| SettingError::new("KBHA_POLICY_PUBLIC_KEY", e)))
            .transpose()?;
        let shadow = self
            .optional("KBHA_SHADOW_POLICY")
            .map(|raw| raw.parse().map_err(|e: kbha_policy_lifecycle::SourceError| SettingError::new("KBHA_SHADOW_POLICY", e.to_string())))
            .transpose()?;
        Ok(kbha_policy_lifecycle::Lifecycle { public_key, check_every_s: self.number("KBHA_POLICY_CHECK_SECONDS", 30)?, shadow })
    }

    /// `KBHA_POLICY_WASI` (default `off`): the policy engine's limits. `on` lets policies
    /// that import WASI 0.2 (Python ones) load, in an empty sandbox, with
    /// [`Limits::python`]; `off` refuses them. Read once at start and handed to
    /// [`configure_engine`], since one engine serves every policy of the process. `on`
    /// in a binary built without WASI (the functions' `python-policies` feature) is an
    /// error saying how to rebuild, never a silent `off`.
    pub fn policy_limits(&self) -> Result<Limits, SettingError> {
        let k = "KBHA_POLICY_WASI";
        let wasi = self.choice(k, false, &[("on", true), ("off", false)])?;
        if wasi && !kbha_policy_host::WASI_BUILT_IN {
            return Err(SettingError::new(k, format!("is `on`, but {}", kbha_policy_host::WASI_NOT_BUILT_IN)));
        }
        Ok(if wasi { Limits::python() } else { Limits::default() })
    }

    /// `KBHA_POLICY_CONFIG`: a JSON object of strings (default empty).
    pub fn policy_config(&self) -> Result<PolicyConfig, SettingError> {
        let config =
            self.json_as::<BTreeMap<String, String>>("KBHA_POLICY_CONFIG", "a JSON object of string values", r#"{"rpo_s":"3600"}"#)?;
        Ok(config.unwrap_or_default())
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
        let e = env(&[("N", "ten"), ("F", "maybe"), ("P", "http://x"), ("J", "{"), ("S", "5m"), ("C", "often")]);
        assert_eq!(
            e.number("N", 1).expect_err("must be rejected").to_string(),
            "invalid configuration: `N` is `ten`; expected a whole number"
        );
        assert_eq!(e.seconds("S", 1).expect_err("must be rejected").problem, "is `5m`; expected a whole number of seconds");
        assert!(e.flag("F", false).expect_err("must be rejected").to_string().contains("`F` is `maybe`; expected `true` or `false`"));
        assert!(e.s3_location("P").expect_err("must be rejected").to_string().contains("s3://bucket/prefix"));
        assert!(e.json::<serde_json::Value>("J", "{}").expect_err("must be rejected").problem.starts_with("is not valid JSON like `{}`"));
        let shaped = e.json_as::<Vec<u8>>("J", "a JSON list of bytes", "[1]").expect_err("must be rejected");
        assert!(shaped.problem.starts_with("is not a JSON list of bytes like `[1]`: "), "{shaped}");
        assert_eq!(e.required("MISSING").expect_err("must be rejected").to_string(), "invalid configuration: `MISSING` is not set");
        assert_eq!(e.required_json::<Vec<u8>>("MISSING", "a list", "[]").expect_err("must be rejected").problem, "is not set");
        let three = [("a", 1), ("b", 2), ("c", 3)];
        assert_eq!(e.choice("C", 0, &three).expect_err("must be rejected").problem, "is `often`; expected `a`, `b` or `c`");
        assert_eq!(e.choice("C", 0, &three[..2]).expect_err("must be rejected").problem, "is `often`; expected `a` or `b`");
    }

    #[test]
    fn defaults_apply_when_unset_or_blank() {
        let e = env(&[("BLANK", "  ")]);
        assert_eq!(e.number("BLANK", 7), Ok(7));
        assert_eq!(e.seconds("UNSET", 9), Ok(9));
        assert_eq!(e.text("BLANK", "d"), "d");
        assert_eq!(e.flag("UNSET", true), Ok(true));
        assert_eq!(e.choice("BLANK", 'x', &[("y", 'y')]), Ok('x'));
        assert_eq!(e.list("BLANK", "names", |_| true), Ok(Vec::new()));
        assert_eq!(e.json::<serde_json::Value>("UNSET", "{}"), Ok(None));
        assert_eq!(e.policy_source(), Ok(PolicySource::Builtin));
        assert_eq!(e.policy_fallback(), Ok(Fallback::Builtin));
        assert!(e.policy_config().expect("empty").is_empty());
        assert_eq!(e.policy_lifecycle(), Ok(kbha_policy_lifecycle::Lifecycle::default()));
        assert_eq!(e.policy_limits(), Ok(Limits::default()));
    }

    #[test]
    fn values_parse() {
        let pairs = [("N", " 42 "), ("T", "TRUE"), ("Y", "yes"), ("Z", "0"), ("C", "b"), ("J", r#"{"a":"1"}"#), ("V", "x")];
        let e = env(&pairs);
        assert_eq!((e.number("N", 0), e.seconds("N", 0)), (Ok(42), Ok(42)));
        assert_eq!((e.flag("T", false), e.flag("Y", false), e.flag("Z", true)), (Ok(true), Ok(true), Ok(false)));
        assert_eq!(e.choice("C", 0, &[("a", 1), ("b", 2)]), Ok(2));
        assert_eq!(e.text("V", "d"), "x");
        assert_eq!(e.required_json::<BTreeMap<String, String>>("J", "an object", "{}").expect("valid")["a"], "1");
        assert_eq!(e.choice("C", 0, &[("B", 1)]).expect_err("names are exact").variable, "C");
    }

    #[test]
    fn lists_are_trimmed_and_every_entry_is_checked() {
        let alnum = |n: &str| n.chars().all(char::is_alphanumeric);
        let pairs = [("L", " a , b2 "), ("HOLE", "a,,b"), ("BAD", "a,b c")];
        let e = env(&pairs);
        assert_eq!(e.list("L", "names", alnum), Ok(vec!["a".to_owned(), "b2".to_owned()]));
        assert_eq!(e.list("HOLE", "names", alnum).expect_err("empty entry").problem, "has ``; expected comma-separated names");
        assert_eq!(e.list("BAD", "names", alnum).expect_err("a space").problem, "has `b c`; expected comma-separated names");
    }

    #[test]
    fn policy_settings_parse() {
        let wasi = |v: &str| env(&[("KBHA_POLICY_WASI", v)]).policy_limits();
        assert_eq!(wasi(" off "), Ok(Limits::default()));
        if kbha_policy_host::WASI_BUILT_IN {
            assert_eq!(wasi("on"), Ok(Limits::python()));
        } else {
            let e = wasi("on").expect_err("no WASI in this build");
            assert_eq!(e.variable, "KBHA_POLICY_WASI");
            assert!(e.problem.starts_with("is `on`, but this binary was built without the `wasi` feature"), "{e}");
            assert!(e.problem.contains("--features python-policies"), "{e}");
        }
        let bad = wasi("yes").expect_err("neither on nor off");
        assert_eq!((bad.variable.as_str(), bad.problem.as_str()), ("KBHA_POLICY_WASI", "is `yes`; expected `on` or `off`"));
        let config = env(&[("KBHA_POLICY_CONFIG", "[1]")]).policy_config().expect_err("a list");
        assert!(config.problem.starts_with("is not a JSON object of string values like"), "{config}");
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
