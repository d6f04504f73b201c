//! The failover function's configuration: one typed struct, parsed once at init from
//! environment variables through [`Env`], as every function reads its settings. Every
//! error names the variable. docs/failover.md's "Configuration" table documents each one.

use kbha_core::PolicyConfig;
use kbha_lambda::{Env, SettingError};
use kbha_policy_lifecycle::{Fallback, PolicySource, S3Location};
use serde::Deserialize;

/// A configuration problem; the function refuses to start. The shared [`SettingError`],
/// under the name this crate has always exported.
pub type ConfigError = SettingError;

/// One target of the weighted record set, as configured (`KBHA_TARGETS`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The record's SetIdentifier.
    pub set_identifier: String,
    /// Region it serves from.
    pub region: String,
    /// Carries traffic in normal operation (exactly one target).
    #[serde(default)]
    pub primary: bool,
    /// Route 53 health check to read; defaults to the one attached to the record.
    #[serde(default)]
    pub health_check_id: Option<String>,
    /// CloudWatch alarms that speak for this target: names (read in the target's region)
    /// or alarm ARNs (read in the ARN's region; Route 53 health-check alarms live in
    /// us-east-1, and a stack's own alarms in the stack's region).
    #[serde(default)]
    pub alarms: Vec<String>,
}

impl TargetConfig {
    /// Each mapped alarm as (region, name).
    pub fn alarm_refs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.alarms.iter().map(|a| alarm_ref(a).unwrap_or((self.region.as_str(), a.as_str())))
    }
}

/// `(region, name)` of an alarm ARN (`arn:<partition>:cloudwatch:<region>:<account>:alarm:<name>`);
/// `None` for a plain name.
fn alarm_ref(a: &str) -> Option<(&str, &str)> {
    let rest = a.strip_prefix("arn:")?;
    let mut parts = rest.splitn(6, ':');
    let (_partition, service, region, _account, kind) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let name = parts.next()?;
    (service == "cloudwatch" && kind == "alarm" && !region.is_empty() && !name.is_empty()).then_some((region, name))
}

/// Failback mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failback {
    /// Fail back automatically after the hysteresis.
    Auto,
    /// Never fail back automatically.
    Manual,
}

/// Everything the failover function is told by its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// `KBHA_HOSTED_ZONE_ID`: the hosted zone of the record set.
    pub hosted_zone_id: String,
    /// `KBHA_RECORD_NAME`: DNS name of the weighted record set.
    pub record_name: String,
    /// `KBHA_RECORD_TYPE`: record type (default `A`).
    pub record_type: String,
    /// `KBHA_TARGETS`: the targets (JSON list).
    pub targets: Vec<TargetConfig>,
    /// `KBHA_POLICY`: `builtin` or `s3://bucket/key`.
    pub policy: PolicySource,
    /// `KBHA_POLICY_FALLBACK`: `builtin` or `hold` (default `builtin`).
    pub fallback: Fallback,
    /// `KBHA_POLICY_CONFIG`: extra policy parameters (JSON object of strings).
    pub policy_config: PolicyConfig,
    /// `KBHA_COOLDOWN_SECONDS`: minimum time between a change and a return or rebalance
    /// after it (default 600); evacuations are not held by it.
    pub cooldown_s: u64,
    /// `KBHA_MIN_INTERVAL_SECONDS`: minimum time between any two changes, evacuations
    /// included (default 5, like ARC's safety-rule wait period).
    pub min_interval_s: u64,
    /// `KBHA_FAILBACK`: `auto` or `manual` (default `auto`).
    pub failback: Failback,
    /// `KBHA_HYSTERESIS_SECONDS`: how long the primary must be OK before failback (default 600).
    pub hysteresis_s: u64,
    /// `KBHA_DRY_RUN`: decide, check, log and notify, never change Route 53 (default false).
    pub dry_run: bool,
    /// `KBHA_BREAK_GLASS`: allow a policy's `force` onto a failing target (default false).
    pub break_glass: bool,
    /// `KBHA_NOTIFY_TOPIC_ARN`: SNS topic for notices.
    pub notify_topic_arn: String,
    /// `KBHA_RPO_SECONDS`: recovery point objective (default 3600).
    pub rpo_s: u64,
    /// `KBHA_STATE_BUCKET` + `KBHA_STATE_PREFIX`: where the function's state object lives.
    pub state: S3Location,
    /// `KBHA_REPLICATION_STATUS`: `s3://bucket/prefix` of the replication verifier's
    /// per-region status objects (`<prefix><region>.json`); unset: ages unknown.
    pub replication_status: Option<S3Location>,
    /// `KBHA_RPO_SOURCES`: the backup sources a region needs to take traffic, by the
    /// verifier's source names (comma-separated); a region is as fresh as the oldest of
    /// them. Empty (the default): every source in the region's status object.
    pub rpo_sources: Vec<String>,
    /// `KBHA_MAX_ATTEMPTS`: decide-and-swap attempts when Route 53 reports a conflict (default 4).
    pub max_attempts: u32,
    /// `KBHA_INSYNC_ALERT_MINUTES`: a change Route 53 has not reported INSYNC this long
    /// after it was made is announced (critical, once) (default 5).
    pub insync_alert_minutes: u64,
    /// `KBHA_RETURN_STEPS`: failback steps, percent of the traffic, rising to 100 (default
    /// `10,25,50,75,100`; `100`: at once). Given to the policy as `return_steps`.
    pub return_steps: String,
    /// `KBHA_RETURN_BAKE_SECONDS`: how long each failback step holds, the primary up,
    /// before the next (default 300). Given to the policy as `return_bake_s`.
    pub return_bake_s: u64,
    /// `KBHA_REMIND_SECONDS`: a standing condition (the RPO gate holding, a policy fault,
    /// every target down, ...) is announced again under the same dedup key this long after
    /// it was last announced, so the alert router can repeat it (default 3600; `0`: never).
    pub remind_s: u64,
}

impl FailoverConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingError> {
        Self::from_settings(&Env::process())
    }

    /// Reads configuration through `get` (tests and `kbha replay` pass maps).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        Self::from_settings(&Env::new(get))
    }

    fn from_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, SettingError> {
        let example = r#"[{"set_identifier":"primary","region":"us-east-1","primary":true,"alarms":["api-down"]}]"#;
        let targets: Vec<TargetConfig> = env.required_json("KBHA_TARGETS", "a JSON list of targets", example)?;
        validate_targets(&targets)?;
        let policy = env.policy_source()?;
        let fallback = env.policy_fallback()?;
        let policy_config = env.policy_config()?;
        let failback = env.choice("KBHA_FAILBACK", Failback::Auto, &[("auto", Failback::Auto), ("manual", Failback::Manual)])?;
        let state_bucket = env.required("KBHA_STATE_BUCKET")?;
        let replication_status = env.s3_location("KBHA_REPLICATION_STATUS")?;
        let source_name = |n: &str| n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        let rpo_sources = env.list("KBHA_RPO_SOURCES", "source names (letters, digits, `-`, `_`, `.`)", source_name)?;
        let max_attempts = env.number("KBHA_MAX_ATTEMPTS", 4)?;
        if !(1..=20).contains(&max_attempts) {
            return Err(SettingError::new("KBHA_MAX_ATTEMPTS", format!("is {max_attempts}; expected 1..=20")));
        }
        Ok(FailoverConfig {
            hosted_zone_id: env.required("KBHA_HOSTED_ZONE_ID")?.trim_start_matches("/hostedzone/").to_owned(),
            record_name: kbha_aws::normalize_name(&env.required("KBHA_RECORD_NAME")?),
            record_type: env.text("KBHA_RECORD_TYPE", "A").to_ascii_uppercase(),
            targets,
            policy,
            fallback,
            policy_config,
            cooldown_s: env.seconds("KBHA_COOLDOWN_SECONDS", 600)?,
            min_interval_s: env.seconds("KBHA_MIN_INTERVAL_SECONDS", 5)?,
            failback,
            hysteresis_s: env.seconds("KBHA_HYSTERESIS_SECONDS", 600)?,
            dry_run: env.flag("KBHA_DRY_RUN", false)?,
            break_glass: env.flag("KBHA_BREAK_GLASS", false)?,
            notify_topic_arn: env.required("KBHA_NOTIFY_TOPIC_ARN")?,
            rpo_s: env.seconds("KBHA_RPO_SECONDS", 3600)?,
            state: S3Location { bucket: state_bucket, prefix: env.text("KBHA_STATE_PREFIX", "kbha/failover/") },
            replication_status,
            rpo_sources,
            max_attempts: max_attempts as u32,
            insync_alert_minutes: match env.number("KBHA_INSYNC_ALERT_MINUTES", 5)? {
                0 => return Err(SettingError::new("KBHA_INSYNC_ALERT_MINUTES", "is 0; expected at least 1")),
                n => n,
            },
            return_steps: {
                let raw = env.text("KBHA_RETURN_STEPS", "10,25,50,75,100");
                kbha_core::plan::parse_steps(&raw, 0).map_err(|e| SettingError::new("KBHA_RETURN_STEPS", format!("is `{raw}`: {e}")))?;
                raw
            },
            return_bake_s: env.seconds("KBHA_RETURN_BAKE_SECONDS", 300)?,
            remind_s: env.seconds("KBHA_REMIND_SECONDS", 3600)?,
        })
    }

    /// When a change not INSYNC is announced, ms.
    pub fn insync_alert_ms(&self) -> i64 {
        i64::try_from(self.insync_alert_minutes.saturating_mul(60_000)).unwrap_or(i64::MAX)
    }

    /// How long after a standing condition was last announced it is reminded, ms (0: never).
    pub fn remind_ms(&self) -> i64 {
        i64::try_from(self.remind_s.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// When kbha stops asking Route 53 about a change (ten times the alert time), ms.
    pub fn insync_give_up_ms(&self) -> i64 {
        self.insync_alert_ms().saturating_mul(10)
    }

    /// The policy's parameters: the host settings it needs, overridden by
    /// `KBHA_POLICY_CONFIG` entries of the same key.
    pub fn policy_parameters(&self) -> PolicyConfig {
        let mut p = PolicyConfig::new();
        p.insert("hysteresis_s".into(), self.hysteresis_s.to_string());
        p.insert("rpo_s".into(), self.rpo_s.to_string());
        p.insert("return_steps".into(), self.return_steps.clone());
        p.insert("return_bake_s".into(), self.return_bake_s.to_string());
        p.insert(
            "failback".into(),
            match self.failback {
                Failback::Auto => "auto",
                Failback::Manual => "manual",
            }
            .into(),
        );
        p.extend(self.policy_config.clone());
        p
    }

    /// The guardrails' settings.
    pub fn guardrails(&self) -> kbha_core::guardrails::GuardrailSettings {
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        kbha_core::guardrails::GuardrailSettings {
            cooldown_ms: ms(self.cooldown_s),
            min_interval_ms: ms(self.min_interval_s),
            hysteresis_ms: ms(self.hysteresis_s),
            manual_failback: self.failback == Failback::Manual,
            break_glass: self.break_glass,
        }
    }

    /// The target an alarm speaks for.
    pub fn target_of_alarm(&self, alarm_name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.alarm_refs().any(|(_, name)| name == alarm_name))
    }

    /// Key of the state object of this record set.
    pub fn state_key(&self) -> String {
        format!("{}{}/{}-{}.json", self.state.prefix, self.hosted_zone_id, self.record_name.trim_end_matches('.'), self.record_type)
    }
}

fn validate_targets(targets: &[TargetConfig]) -> Result<(), SettingError> {
    let err = |problem: String| Err(SettingError::new("KBHA_TARGETS", problem));
    if targets.len() < 2 {
        return err(format!("lists {} target(s); failover needs at least two", targets.len()));
    }
    let primaries = targets.iter().filter(|t| t.primary).count();
    if primaries != 1 {
        return err(format!("marks {primaries} targets as primary; exactly one must have `\"primary\": true`"));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut alarms = std::collections::BTreeMap::new();
    for t in targets {
        if t.set_identifier.is_empty() || t.region.is_empty() {
            return err("has a target with an empty `set_identifier` or `region`".into());
        }
        if !ids.insert(t.set_identifier.as_str()) {
            return err(format!("names set identifier `{}` twice", t.set_identifier));
        }
        if let Some(bad) = t.alarms.iter().find(|a| a.starts_with("arn:") && alarm_ref(a).is_none()) {
            return err(format!("has alarm `{bad}`, which is neither an alarm name nor a CloudWatch alarm ARN"));
        }
        for (_, a) in t.alarm_refs() {
            if let Some(other) = alarms.insert(a, t.set_identifier.as_str()) {
                return err(format!("maps alarm `{a}` to both `{other}` and `{}`", t.set_identifier));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn alarms_are_names_in_the_target_region_or_arns_in_theirs() {
        let t: TargetConfig = serde_json::from_str(
            r#"{"set_identifier":"s","region":"us-west-2","alarms":["plain","arn:aws:cloudwatch:us-east-1:111122223333:alarm:kbha-api:x"]}"#,
        )
        .expect("parses");
        assert_eq!(t.alarm_refs().collect::<Vec<_>>(), [("us-west-2", "plain"), ("us-east-1", "kbha-api:x")]);
        assert_eq!(alarm_ref("arn:aws:sns:us-east-1:1:topic"), None);
    }

    const TARGETS: &str = r#"[{"set_identifier":"primary","region":"us-east-1","primary":true,"alarms":["a1"]},
                             {"set_identifier":"secondary","region":"us-west-2","alarms":["a2"]}]"#;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |k| map.get(k).cloned()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("KBHA_HOSTED_ZONE_ID", "/hostedzone/Z123"),
            ("KBHA_RECORD_NAME", "API.example.com"),
            ("KBHA_TARGETS", TARGETS),
            ("KBHA_NOTIFY_TOPIC_ARN", "arn:aws:sns:us-east-1:1:n"),
            ("KBHA_STATE_BUCKET", "state"),
        ]
    }

    #[test]
    fn minimal_configuration_gets_documented_defaults() {
        let c = FailoverConfig::from_lookup(env(&base())).expect("valid");
        assert_eq!(c.hosted_zone_id, "Z123");
        assert_eq!(c.record_name, "api.example.com.");
        assert_eq!(c.record_type, "A");
        assert_eq!((c.cooldown_s, c.hysteresis_s, c.rpo_s, c.max_attempts), (600, 600, 3600, 4));
        assert_eq!((c.dry_run, c.break_glass), (false, false));
        assert_eq!(c.policy, PolicySource::Builtin);
        assert_eq!(c.fallback, Fallback::Builtin);
        assert_eq!(c.target_of_alarm("a2").map(|t| t.set_identifier.as_str()), Some("secondary"));
        assert_eq!(c.state_key(), "kbha/failover/Z123/api.example.com-A.json");
        assert_eq!(c.policy_parameters()["failback"], "auto");
        assert_eq!((c.policy_parameters()["return_steps"].as_str(), c.return_bake_s), ("10,25,50,75,100", 300));
    }

    #[test]
    fn every_error_names_its_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("KBHA_TARGETS", "[]", "at least two"),
            ("KBHA_TARGETS", "not json", "JSON list"),
            ("KBHA_TARGETS", r#"[{"set_identifier":"a","region":"r"},{"set_identifier":"b","region":"r"}]"#, "exactly one"),
            ("KBHA_POLICY", "http://x", "builtin"),
            ("KBHA_POLICY_FALLBACK", "pray", "hold"),
            ("KBHA_FAILBACK", "sometimes", "manual"),
            ("KBHA_COOLDOWN_SECONDS", "ten", "whole number"),
            ("KBHA_DRY_RUN", "maybe", "true"),
            ("KBHA_POLICY_CONFIG", "[1]", "JSON object"),
            ("KBHA_MAX_ATTEMPTS", "0", "1..=20"),
            ("KBHA_RETURN_STEPS", "10,50", "must be 100 %"),
            ("KBHA_RETURN_BAKE_SECONDS", "5m", "whole number"),
            ("KBHA_RPO_SOURCES", "chromadb,,redis", "comma-separated source names"),
            ("KBHA_RPO_SOURCES", "chroma db", "has `chroma db`"),
        ];
        for (var, value, expect) in cases {
            let mut e = base();
            e.retain(|(k, _)| k != var);
            e.push((var, value));
            let err = FailoverConfig::from_lookup(env(&e)).expect_err(var);
            assert_eq!(err.variable, *var);
            assert!(err.to_string().contains(expect), "{err}");
        }
        let mut e = base();
        e.push(("KBHA_RPO_SOURCES", " chromadb , redis "));
        assert_eq!(FailoverConfig::from_lookup(env(&e)).expect("valid").rpo_sources, ["chromadb", "redis"]);
        let mut e = base();
        e.retain(|(k, _)| *k != "KBHA_NOTIFY_TOPIC_ARN");
        assert_eq!(FailoverConfig::from_lookup(env(&e)).expect_err("missing").variable, "KBHA_NOTIFY_TOPIC_ARN");
    }

    #[test]
    fn policy_config_overrides_host_parameters() {
        let mut e = base();
        e.push(("KBHA_POLICY_CONFIG", r#"{"rpo_s":"7200","active_weight":"200"}"#));
        e.push(("KBHA_POLICY", "s3://policies/failover/v2.wasm"));
        let c = FailoverConfig::from_lookup(env(&e)).expect("valid");
        let p = c.policy_parameters();
        assert_eq!((p["rpo_s"].as_str(), p["active_weight"].as_str()), ("7200", "200"));
        assert_eq!(c.policy, PolicySource::s3("policies", "failover/v2.wasm"));
    }
}
