//! The default kbha alert policy.
//!
//! Decides, for one incoming alert, its severity, where it goes, its dedup and group
//! keys, and whether it is suppressed. A pure function of its input: the router keeps
//! the dedup/repeat state and the firing alerts it passes in as `active`.
//!
//! # Config keys
//!
//! Plain keys:
//!
//! | key                | default   | meaning |
//! |--------------------|-----------|---------|
//! | `default_severity` | `warning` | severity of an alert with no sender hint and no route setting one |
//! | `group_by`         | `region`  | comma-separated fields making the group key (`name`, `source`, `region`, `severity`, or a label) |
//!
//! JSON-valued keys (a string holding JSON):
//!
//! | key                   | default | meaning |
//! |-----------------------|---------|---------|
//! | `destinations`        | `{"critical":["critical"],"warning":["warning"],"info":["info"]}` | severity -> logical destination names |
//! | `routes`              | `[]` | first match wins: `{"name":"db","match":{"service":"chromadb"},"severity":"critical","destinations":["critical","db-team"]}`; a route without `severity` keeps the alert's, without `destinations` uses the severity's |
//! | `maintenance_windows` | `[]` | `{"name":"upgrade","start":"2026-11-26T09:00:00Z","end":"2026-11-26T11:00:00Z","match":{"region":"us-east-1"}}` or recurring `{"name":"patching","weekly":{"days":["sun"],"start":"02:00","end":"04:00"},"match":{}}` (UTC) |
//! | `silences`            | `[]` | `{"name":"flaky-canary","match":{"name":"kbha-canary-*"},"starts":"…","until":"…"}` (`starts`/`until` optional) |
//! | `inhibit_rules`       | region-down rule | `{"name":"region-down","source":{"name":"*region-down*"},"target":{},"equal":["region"]}`: a firing alert matching `source` mutes incoming alerts matching `target` that have the same value for every `equal` field; `[]` turns inhibition off |
//!
//! A `match` object maps fields to a pattern or a list of patterns (`*` is a wildcard);
//! every listed field must be present and match. Fields: `name`, `source`
//! (`cloudwatch`|`kbha`|`generic`), `region`, `status` (`firing`|`resolved`),
//! `severity`, and any label (`service`, `namespace`, …).
//!
//! # Rules
//!
//! 1. Severity: the first matching route's, else the sender's hint, else `default_severity`.
//! 2. Destinations: the route's, else `destinations[severity]`.
//! 3. Dedup key: the label `dedup_key` when the sender set one; else
//!    `cloudwatch/<name>/<region>` for alarms (so ALARM and OK pair up), and
//!    `<source>/<name>/<region>/<summary>` for kbha notices and generic messages (two
//!    different notices of one kind are two alerts). A missing region is `-`.
//! 4. Group key: `field=value` pairs of `group_by`, joined by `,`.
//! 5. Suppression, first that applies: an open maintenance window, an active silence,
//!    then inhibition by a firing alert (never by the alert itself). Resolutions are
//!    suppressed the same way as firing alerts, so a muted alert stays muted.

mod rules;

use std::collections::BTreeMap;

use kbha_policy_sdk::types::{AlertDecision, AlertInput, AlertSource, PolicyError, Severity, Suppression};
use kbha_policy_sdk::{Config, log};

use rules::{Fields, Incoming, matches, parse_severity, severity_str, source_str};
pub use rules::{InhibitRule, Route, Silence, Span, Window, glob};

/// The policy, exported as the component's `decide`.
pub struct DefaultAlert;

impl kbha_policy_sdk::alert::Guest for DefaultAlert {
    fn decide(input: AlertInput) -> Result<AlertDecision, PolicyError> {
        decide(&input)
    }
}

// Natively this crate is a library for tests; only the component exports.
#[cfg(target_arch = "wasm32")]
kbha_policy_sdk::export_alert_policy!(DefaultAlert);

/// The parsed configuration (see the crate docs for keys and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Severity when nothing else says.
    pub default_severity: Severity,
    /// Fields of the group key.
    pub group_by: Vec<String>,
    /// Severity -> destinations.
    pub destinations: BTreeMap<String, Vec<String>>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
    /// Maintenance windows.
    pub windows: Vec<Window>,
    /// Silences.
    pub silences: Vec<Silence>,
    /// Inhibit rules.
    pub inhibit_rules: Vec<InhibitRule>,
}

impl Settings {
    /// Reads the settings from the input's config entries.
    pub fn parse(config: &Config<'_>) -> Result<Self, PolicyError> {
        let default_severity = config.get_choice("default_severity", &["info", "warning", "critical"], "warning")?;
        let mut destinations: BTreeMap<String, Vec<String>> =
            ["critical", "warning", "info"].iter().map(|s| ((*s).to_owned(), vec![(*s).to_owned()])).collect();
        if let Some(raw) = config.raw("destinations") {
            destinations.extend(rules::parse_destinations("destinations", raw)?);
        }
        let group_by = config.get_str("group_by", "region").split(',').map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).collect();
        let inhibit_rules = match config.raw("inhibit_rules") {
            None => rules::default_inhibit_rules(),
            Some(raw) => rules::json(
                "inhibit_rules",
                raw,
                r#"[{"name":"region-down","source":{"name":"*region-down*"},"target":{},"equal":["region"]}]"#,
            )?,
        };
        Ok(Settings {
            default_severity: parse_severity(default_severity).unwrap_or(Severity::Warning),
            group_by,
            destinations,
            routes: config.raw("routes").map(|r| rules::parse_routes("routes", r)).transpose()?.unwrap_or_default(),
            windows: config
                .raw("maintenance_windows")
                .map(|r| rules::parse_windows("maintenance_windows", r))
                .transpose()?
                .unwrap_or_default(),
            silences: config.raw("silences").map(|r| rules::parse_silences("silences", r)).transpose()?.unwrap_or_default(),
            inhibit_rules,
        })
    }
}

/// The dedup key of rule 3.
fn dedup_key(input: &AlertInput) -> String {
    let a = &input.alert;
    if let Some((_, k)) = a.labels.iter().find(|(k, v)| k == "dedup_key" && !v.is_empty()) {
        return k.clone();
    }
    let region = a.region.as_deref().unwrap_or("-");
    match a.source {
        AlertSource::Cloudwatch => format!("cloudwatch/{}/{region}", a.name),
        other => format!("{}/{}/{region}/{}", source_str(other), a.name, a.summary),
    }
}

/// Why the alert must not be delivered, if it must not.
fn suppression(s: &Settings, input: &AlertInput, me: &Incoming<'_>, key: &str) -> Option<(Suppression, String)> {
    let now = input.now;
    if let Some(w) = s.windows.iter().find(|w| w.span.contains(now) && matches(&w.matcher, me)) {
        return Some((Suppression::MaintenanceWindow(w.name.clone()), format!("maintenance window `{}` is open", w.name)));
    }
    if let Some(sil) = s.silences.iter().find(|x| x.active(now) && matches(&x.matcher, me)) {
        return Some((Suppression::Silence(sil.name.clone()), format!("silence `{}` matches", sil.name)));
    }
    for rule in &s.inhibit_rules {
        if !matches(&rule.target, me) {
            continue;
        }
        let inhibitor = input.active.iter().find(|act| {
            act.dedup_key != key
                && matches(&rule.source, *act)
                && rule.equal.iter().all(|f| matches!((act.field(f), me.field(f)), (Some(x), Some(y)) if x == y))
        });
        if let Some(act) = inhibitor {
            let rule_name = rule.name.as_deref().unwrap_or("unnamed");
            return Some((
                Suppression::InhibitedBy(act.dedup_key.clone()),
                format!("inhibited by firing `{}` (rule `{rule_name}`)", act.dedup_key),
            ));
        }
    }
    None
}

/// The decision, as a plain function so native tests call it directly.
pub fn decide(input: &AlertInput) -> Result<AlertDecision, PolicyError> {
    let s = Settings::parse(&Config::new(&input.config))?;
    let a = &input.alert;
    if a.name.is_empty() {
        return Err(PolicyError::InvalidInput("the alert has no name".into()));
    }
    let routing = Incoming { alert: a, severity: None };
    let route = s.routes.iter().find(|r| matches(&r.matcher, &routing));
    let severity = route.and_then(|r| r.severity.as_deref()).and_then(parse_severity).or(a.severity_hint).unwrap_or(s.default_severity);
    let destinations = match route.and_then(|r| r.destinations.clone()) {
        Some(d) => d,
        None => s.destinations.get(severity_str(severity)).cloned().unwrap_or_default(),
    };
    let me = Incoming { alert: a, severity: Some(severity) };
    let key = dedup_key(input);
    let group_key = s.group_by.iter().map(|f| format!("{f}={}", me.field(f).unwrap_or_else(|| "-".into()))).collect::<Vec<_>>().join(",");
    let via = route.map(|r| format!(" via route `{}`", r.name.as_deref().unwrap_or("unnamed"))).unwrap_or_default();
    let (suppress, reason) = match suppression(&s, input, &me, &key) {
        Some((sup, why)) => {
            log!(Info, "suppressing `{key}`: {why}");
            (Some(sup), format!("{} `{}` suppressed: {why}", severity_str(severity), a.name))
        }
        None if destinations.is_empty() => (None, format!("{} `{}`{via} has no destination", severity_str(severity), a.name)),
        None => (None, format!("{} `{}`{via} goes to {}", severity_str(severity), a.name, destinations.join(", "))),
    };
    Ok(AlertDecision { severity, destinations, dedup_key: key, group_key, suppress, reason })
}

#[cfg(test)]
mod tests;
