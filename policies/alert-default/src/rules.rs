//! The JSON-valued config keys (routes, maintenance windows, silences, inhibit rules)
//! and how they match alerts. Parsing failures name the key, so a typo in an operator's
//! config is refused rather than ignored.

use std::collections::BTreeMap;

use kbha_policy_sdk::types::{ActiveAlert, AlertSource, AlertStatus, IncomingAlert, PolicyError, Severity};
use serde::Deserialize;

const DAY_MS: i64 = 86_400_000;
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One pattern or any of several. `*` matches any run of characters; everything else
/// matches itself (case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Pattern {
    /// One pattern.
    One(String),
    /// Any of these.
    Any(Vec<String>),
}

impl Pattern {
    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::One(p) => glob(p, value),
            Pattern::Any(ps) => ps.iter().any(|p| glob(p, value)),
        }
    }
}

/// `*`-wildcard match over the whole value.
pub fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi) = (0, 0);
    // Position after the last `*` seen and the value position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi + 1, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Field name -> pattern; every field must be present and match. An empty matcher
/// matches everything. Fields: `name`, `source`, `region`, `status`, `severity`, and
/// any label key.
pub type Matcher = BTreeMap<String, Pattern>;

/// Something a matcher can look at.
pub trait Fields {
    /// The value of `field`, when the alert has it.
    fn field(&self, field: &str) -> Option<String>;
}

/// An incoming alert seen with the severity decided for it.
pub struct Incoming<'a> {
    /// The alert.
    pub alert: &'a IncomingAlert,
    /// Its decided severity (`None` while routing: the sender's hint is used).
    pub severity: Option<Severity>,
}

pub fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

pub fn parse_severity(s: &str) -> Option<Severity> {
    match s {
        "info" => Some(Severity::Info),
        "warning" => Some(Severity::Warning),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

pub fn source_str(s: AlertSource) -> &'static str {
    match s {
        AlertSource::Cloudwatch => "cloudwatch",
        AlertSource::Kbha => "kbha",
        AlertSource::Generic => "generic",
    }
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl Fields for Incoming<'_> {
    fn field(&self, field: &str) -> Option<String> {
        let a = self.alert;
        match field {
            "name" => Some(a.name.clone()),
            "source" => Some(source_str(a.source).to_owned()),
            "region" => a.region.clone(),
            "status" => Some(match a.status {
                AlertStatus::Firing => "firing".to_owned(),
                AlertStatus::Resolved => "resolved".to_owned(),
            }),
            "severity" => self.severity.or(a.severity_hint).map(|s| severity_str(s).to_owned()),
            other => label(&a.labels, other).map(str::to_owned),
        }
    }
}

impl Fields for ActiveAlert {
    fn field(&self, field: &str) -> Option<String> {
        match field {
            "name" => Some(self.name.clone()),
            "region" => self.region.clone(),
            "status" => Some("firing".to_owned()),
            "severity" => Some(severity_str(self.severity).to_owned()),
            "dedup_key" => Some(self.dedup_key.clone()),
            other => label(&self.labels, other).map(str::to_owned),
        }
    }
}

/// Whether every field of `m` is present on `x` and matches.
pub fn matches(m: &Matcher, x: &dyn Fields) -> bool {
    m.iter().all(|(k, p)| x.field(k).is_some_and(|v| p.matches(&v)))
}

// ------------------------------------------------------------------- routes

/// `routes`: the first route whose `match` matches decides severity and destinations.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Name, for the reason text.
    #[serde(default)]
    pub name: Option<String>,
    /// Which alerts.
    #[serde(default, rename = "match")]
    pub matcher: Matcher,
    /// Severity to give them; absent: the sender's hint or `default_severity`.
    #[serde(default)]
    pub severity: Option<String>,
    /// Destinations; absent: the severity's destinations.
    #[serde(default)]
    pub destinations: Option<Vec<String>>,
}

// ------------------------------------------------------- windows, silences

/// A maintenance window as written in `maintenance_windows`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowJson {
    name: String,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    weekly: Option<WeeklyJson>,
    #[serde(default, rename = "match")]
    matcher: Matcher,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeeklyJson {
    days: Vec<String>,
    start: String,
    end: String,
}

/// When a window is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// From `start` (inclusive) to `end` (exclusive), ms since the epoch.
    Once {
        /// Opens.
        start: i64,
        /// Closes.
        end: i64,
    },
    /// Every week on `days` (Monday = 0) from `start_min` to `end_min` minutes after
    /// midnight UTC; an end before the start runs past midnight into the next day.
    Weekly {
        /// Days it opens on.
        days: [bool; 7],
        /// Opens, minutes after midnight UTC.
        start_min: i64,
        /// Closes, minutes after midnight UTC.
        end_min: i64,
    },
}

impl Span {
    /// Whether `now` falls inside.
    pub fn contains(&self, now: i64) -> bool {
        match *self {
            Span::Once { start, end } => start <= now && now < end,
            Span::Weekly { days, start_min, end_min } => {
                let day = now.div_euclid(DAY_MS);
                let minute = now.rem_euclid(DAY_MS) / 60_000;
                // 1970-01-01 was a Thursday (Monday = 0 makes it 3).
                let weekday = |d: i64| (d + 3).rem_euclid(7) as usize;
                if start_min < end_min {
                    days[weekday(day)] && start_min <= minute && minute < end_min
                } else {
                    (days[weekday(day)] && minute >= start_min) || (days[weekday(day - 1)] && minute < end_min)
                }
            }
        }
    }
}

/// A maintenance window: matching alerts are not delivered while it is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Name, reported in the suppression.
    pub name: String,
    /// When it is open.
    pub span: Span,
    /// Which alerts it covers.
    pub matcher: Matcher,
}

/// A silence: matching alerts are not delivered between `starts` and `until`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceJson {
    name: String,
    #[serde(default, rename = "match")]
    matcher: Matcher,
    #[serde(default)]
    starts: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
}

/// A parsed silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    /// Name, reported in the suppression.
    pub name: String,
    /// Which alerts.
    pub matcher: Matcher,
    /// From (inclusive); `None`: always.
    pub starts: Option<i64>,
    /// Until (exclusive); `None`: until removed from the config.
    pub until: Option<i64>,
}

impl Silence {
    /// Whether it is in force at `now`.
    pub fn active(&self, now: i64) -> bool {
        self.starts.is_none_or(|s| s <= now) && self.until.is_none_or(|u| now < u)
    }
}

/// `inhibit_rules`: a firing alert matching `source` mutes incoming alerts matching
/// `target` that agree with it on every field in `equal`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    /// Name, for the reason text.
    #[serde(default)]
    pub name: Option<String>,
    /// Which firing alerts inhibit.
    #[serde(default)]
    pub source: Matcher,
    /// Which incoming alerts are inhibited.
    #[serde(default)]
    pub target: Matcher,
    /// Fields both must have, with equal values.
    #[serde(default)]
    pub equal: Vec<String>,
}

/// The default inhibition: a firing `*region-down*` alert mutes every other alert of
/// its region.
pub fn default_inhibit_rules() -> Vec<InhibitRule> {
    vec![InhibitRule {
        name: Some("region-down".into()),
        source: Matcher::from([("name".to_owned(), Pattern::One("*region-down*".into()))]),
        target: Matcher::new(),
        equal: vec!["region".into()],
    }]
}

// ------------------------------------------------------------------ parsing

fn invalid(key: &str, problem: impl std::fmt::Display) -> PolicyError {
    PolicyError::InvalidConfig(format!("`{key}` {problem}"))
}

/// Parses a JSON-valued key, naming it and showing the expected shape on failure.
pub fn json<T: serde::de::DeserializeOwned>(key: &str, raw: &str, example: &str) -> Result<T, PolicyError> {
    serde_json::from_str(raw).map_err(|e| invalid(key, format_args!("is not valid ({e}); expected JSON like `{example}`")))
}

fn time(key: &str, field: &str, s: &str) -> Result<i64, PolicyError> {
    kbha_core::time::parse_timestamp(s).map_err(|e| invalid(key, format_args!("`{field}`: {e}")))
}

fn hh_mm(key: &str, s: &str) -> Result<i64, PolicyError> {
    let bad = || invalid(key, format_args!("time `{s}` is not `HH:MM` (UTC, 00:00..=24:00)"));
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..=24).contains(&h) || !(0..60).contains(&m) || h * 60 + m > 24 * 60 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// `maintenance_windows`.
pub fn parse_windows(key: &str, raw: &str) -> Result<Vec<Window>, PolicyError> {
    let list: Vec<WindowJson> = json(
        key,
        raw,
        r#"[{"name":"db-upgrade","start":"2026-11-26T09:00:00Z","end":"2026-11-26T11:00:00Z","match":{"region":"us-east-1"}}]"#,
    )?;
    list.into_iter()
        .map(|w| {
            let span = match (&w.start, &w.end, &w.weekly) {
                (Some(s), Some(e), None) => {
                    let (start, end) = (time(key, "start", s)?, time(key, "end", e)?);
                    if end <= start {
                        return Err(invalid(key, format_args!("window `{}` ends before it starts", w.name)));
                    }
                    Span::Once { start, end }
                }
                (None, None, Some(wk)) => {
                    let mut days = [false; 7];
                    for d in &wk.days {
                        let lower = d.to_ascii_lowercase();
                        let i = WEEKDAYS
                            .iter()
                            .position(|x| lower.starts_with(x))
                            .ok_or_else(|| invalid(key, format_args!("window `{}`: `{d}` is not a weekday (mon..sun)", w.name)))?;
                        days[i] = true;
                    }
                    Span::Weekly { days, start_min: hh_mm(key, &wk.start)?, end_min: hh_mm(key, &wk.end)? }
                }
                _ => {
                    return Err(invalid(key, format_args!("window `{}` needs either `start` and `end`, or `weekly`", w.name)));
                }
            };
            Ok(Window { name: w.name, span, matcher: w.matcher })
        })
        .collect()
}

/// `silences`.
pub fn parse_silences(key: &str, raw: &str) -> Result<Vec<Silence>, PolicyError> {
    let list: Vec<SilenceJson> =
        json(key, raw, r#"[{"name":"flaky-canary","match":{"name":"kbha-canary-*"},"until":"2026-12-01T00:00:00Z"}]"#)?;
    list.into_iter()
        .map(|s| {
            Ok(Silence {
                starts: s.starts.as_deref().map(|t| time(key, "starts", t)).transpose()?,
                until: s.until.as_deref().map(|t| time(key, "until", t)).transpose()?,
                name: s.name,
                matcher: s.matcher,
            })
        })
        .collect()
}

/// `routes`, with severities checked.
pub fn parse_routes(key: &str, raw: &str) -> Result<Vec<Route>, PolicyError> {
    let routes: Vec<Route> =
        json(key, raw, r#"[{"name":"db","match":{"service":"chromadb"},"severity":"critical","destinations":["critical","db-team"]}]"#)?;
    for r in &routes {
        if let Some(s) = &r.severity
            && parse_severity(s).is_none()
        {
            return Err(invalid(key, format_args!("severity `{s}` is not info, warning or critical")));
        }
    }
    Ok(routes)
}

/// `destinations`: severity -> destination names.
pub fn parse_destinations(key: &str, raw: &str) -> Result<BTreeMap<String, Vec<String>>, PolicyError> {
    let map: BTreeMap<String, Vec<String>> = json(key, raw, r#"{"critical":["critical","pager"],"warning":["warning"],"info":["info"]}"#)?;
    if let Some(bad) = map.keys().find(|k| parse_severity(k).is_none()) {
        return Err(invalid(key, format_args!("has key `{bad}`; keys are info, warning, critical")));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob("*region-down*", "kbha-primary-region-down"));
        assert!(glob("kbha-*-unhealthy", "kbha-api-primary-unhealthy"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYbc"));
        assert!(!glob("kbha-*", "other"));
        assert!(!glob("abc", "abcd"));
        assert!(glob("abc", "abc"));
    }

    #[test]
    fn weekly_window_wraps_past_midnight() {
        // 2026-11-28 is a Saturday.
        let sat_23h = kbha_core::time::parse_timestamp("2026-11-28T23:30:00Z").expect("ts");
        let sun_01h = sat_23h + 2 * 3_600_000;
        let sun_03h = sat_23h + 4 * 3_600_000;
        let mut days = [false; 7];
        days[5] = true;
        let span = Span::Weekly { days, start_min: 22 * 60, end_min: 2 * 60 };
        assert!(span.contains(sat_23h));
        assert!(span.contains(sun_01h), "continues into Sunday morning");
        assert!(!span.contains(sun_03h));
        assert!(!span.contains(sat_23h - 7 * 86_400_000 + 86_400_000), "not on Sunday evening");
    }

    #[test]
    fn windows_need_a_span_and_valid_times() {
        let e = parse_windows("maintenance_windows", r#"[{"name":"w"}]"#).expect_err("no span");
        assert!(matches!(&e, PolicyError::InvalidConfig(m) if m.contains("`maintenance_windows`") && m.contains("`w`")));
        let e = parse_windows("maintenance_windows", r#"[{"name":"w","weekly":{"days":["sun"],"start":"25:00","end":"01:00"}}]"#)
            .expect_err("bad time");
        assert!(matches!(&e, PolicyError::InvalidConfig(m) if m.contains("25:00")));
        let e = parse_windows("maintenance_windows", "{").expect_err("not json");
        assert!(matches!(&e, PolicyError::InvalidConfig(m) if m.contains("expected JSON like")));
    }
}
