//! The alert router's configuration: one typed struct, parsed once at init from
//! environment variables through [`Env`], as every function reads its settings. Every
//! error names the variable. docs/alerting.md's "Configuration" table documents each one.

use std::collections::BTreeMap;

use kbha_core::PolicyConfig;
use kbha_lambda::{Env, SettingError};
use kbha_policy_lifecycle::{Fallback, PolicySource};

/// A configuration problem; the function refuses to start. The shared [`SettingError`],
/// under the name this crate has always exported.
pub type ConfigError = SettingError;

/// Everything the alert router is told by its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// `KBHA_DESTINATIONS`: logical destination name -> SNS topic ARN.
    pub destinations: BTreeMap<String, String>,
    /// `KBHA_DEFAULT_DESTINATION`: where alerts go whose policy named no known
    /// destination (default `critical`); must be a key of `destinations`.
    pub default_destination: String,
    /// `KBHA_STATE_BUCKET`: bucket of the dedup state objects.
    pub state_bucket: String,
    /// `KBHA_STATE_PREFIX`: their key prefix (default `kbha/alerts/`).
    pub state_prefix: String,
    /// `KBHA_POLICY`: `builtin` or `s3://bucket/key`.
    pub policy: PolicySource,
    /// `KBHA_POLICY_FALLBACK`: `builtin` or `hold` (default `builtin`).
    pub fallback: Fallback,
    /// `KBHA_POLICY_CONFIG`: the policy's parameters (JSON object of strings).
    pub policy_config: PolicyConfig,
    /// `KBHA_REPEAT_INTERVAL_SECONDS`: a firing alert is delivered again after this
    /// long (default 14400, Alertmanager's 4h).
    pub repeat_interval_s: u64,
    /// `KBHA_CLAIM_SECONDS`: how long a delivery claimed by one invocation keeps other
    /// invocations off it before they take over (default 120).
    pub claim_lease_s: u64,
}

impl RouterConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingError> {
        Self::from_settings(&Env::process())
    }

    /// Reads configuration through `get` (tests and `kbha replay` pass maps).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        Self::from_settings(&Env::new(get))
    }

    fn from_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, SettingError> {
        let k = "KBHA_DESTINATIONS";
        let example = r#"{"critical":"arn:aws:sns:us-east-1:111122223333:kbha-critical"}"#;
        let destinations: BTreeMap<String, String> =
            env.required_json(k, "a JSON object of destination names to SNS topic ARNs", example)?;
        if destinations.is_empty() {
            return Err(SettingError::new(k, "names no destination"));
        }
        if let Some((name, arn)) = destinations.iter().find(|(_, arn)| !arn.starts_with("arn:") || arn.split(':').count() < 6) {
            return Err(SettingError::new(k, format!("maps `{name}` to `{arn}`, which is not an SNS topic ARN")));
        }
        let default_destination = env.text("KBHA_DEFAULT_DESTINATION", "critical");
        if !destinations.contains_key(&default_destination) {
            let problem = format!("is `{default_destination}`, which KBHA_DESTINATIONS does not name");
            return Err(SettingError::new("KBHA_DEFAULT_DESTINATION", problem));
        }
        let policy = env.policy_source()?;
        let fallback = env.policy_fallback()?;
        let policy_config = env.policy_config()?;
        let claim_lease_s = env.seconds("KBHA_CLAIM_SECONDS", 120)?;
        if claim_lease_s == 0 {
            return Err(SettingError::new("KBHA_CLAIM_SECONDS", "is 0; expected at least 1"));
        }
        Ok(RouterConfig {
            destinations,
            default_destination,
            state_bucket: env.required("KBHA_STATE_BUCKET")?,
            state_prefix: env.text("KBHA_STATE_PREFIX", "kbha/alerts/"),
            policy,
            fallback,
            policy_config,
            repeat_interval_s: env.seconds("KBHA_REPEAT_INTERVAL_SECONDS", 14_400)?,
            claim_lease_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESTS: &str = r#"{"critical":"arn:aws:sns:us-east-1:1:crit","warning":"arn:aws:sns:us-east-1:1:warn"}"#;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |k| map.get(k).cloned()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![("KBHA_DESTINATIONS", DESTS), ("KBHA_STATE_BUCKET", "state")]
    }

    #[test]
    fn minimal_configuration_gets_documented_defaults() {
        let c = RouterConfig::from_lookup(env(&base())).expect("valid");
        assert_eq!(c.destinations["warning"], "arn:aws:sns:us-east-1:1:warn");
        assert_eq!(c.default_destination, "critical");
        assert_eq!((c.state_prefix.as_str(), c.repeat_interval_s, c.claim_lease_s), ("kbha/alerts/", 14_400, 120));
        assert_eq!((c.policy.clone(), c.fallback), (PolicySource::Builtin, Fallback::Builtin));
        assert!(c.policy_config.is_empty());
    }

    #[test]
    fn every_error_names_its_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("KBHA_DESTINATIONS", "[]", "JSON object"),
            ("KBHA_DESTINATIONS", "{}", "no destination"),
            ("KBHA_DESTINATIONS", r#"{"critical":"kbha-critical"}"#, "not an SNS topic ARN"),
            ("KBHA_DEFAULT_DESTINATION", "pager", "does not name"),
            ("KBHA_POLICY", "http://x", "s3://bucket/key"),
            ("KBHA_POLICY_FALLBACK", "pray", "hold"),
            ("KBHA_POLICY_CONFIG", "[1]", "JSON object"),
            ("KBHA_REPEAT_INTERVAL_SECONDS", "4h", "whole number"),
            ("KBHA_CLAIM_SECONDS", "0", "at least 1"),
        ];
        for (var, value, expect) in cases {
            let mut e = base();
            e.retain(|(k, _)| k != var);
            e.push((var, value));
            let err = RouterConfig::from_lookup(env(&e)).expect_err(var);
            assert_eq!(err.variable, *var);
            assert!(err.to_string().contains(expect), "{err}");
        }
        let e = RouterConfig::from_lookup(env(&[("KBHA_DESTINATIONS", DESTS)])).expect_err("no bucket");
        assert_eq!(e.variable, "KBHA_STATE_BUCKET");
    }
}
