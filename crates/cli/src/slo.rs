//! `kbha slo render --spec <file> [--out <file>]`: SLO alerting from a spec file
//! (`samples/slo/knowledgebeast.toml`, reference in `docs/slo.md`), rendered as a
//! standalone CloudFormation template (JSON) to deploy beside the kbha stack.
//!
//! Per SLO, the multi-window, multi-burn-rate alerts of the Google SRE workbook
//! ("Alerting on SLOs", as Sloth and Pyrra generate them): a *page* when 2 % of the error
//! budget burns in 1 h (checked over 1 h and 5 min) or 5 % in 6 h (6 h and 30 min), a
//! *ticket* when 10 % burns in 1 d (1 d and 2 h) or in 3 d (3 d and 6 h). For a 30-day
//! window those are the workbook's burn rates 14.4, 6, 3 and 1; other windows keep the
//! budget shares and scale the burn rates (as Sloth's 28-day windows do).
//!
//! Each window is one `AWS::CloudWatch::Alarm` whose metric math computes the burn rate,
//! `error ratio over the window / (1 - objective)`, from a single datapoint one window
//! long (`Period` = the window, `EvaluationPeriods` = 1: the `Sum` over one period that
//! long is the window's count, and CloudWatch allows `Period * EvaluationPeriods` up to
//! 7 days for periods of an hour or more, 1 day below). The pairs are joined by one
//! `AWS::CloudWatch::CompositeAlarm` per alert (`(ALARM(long) AND ALARM(short)) OR (...)`),
//! which with FailoverRequired are the only alarms with actions:
//! the alarms topic (parameter `AlarmsTopicArn`, or with `--create-topic` a topic the
//! template creates in its region and subscribes the alert router to), with
//! `severity=... slo=...` words in the description for the alert router. An optional
//! `[capacity]` section adds the FailoverRequired alarm.
//!
//! The output is JSON written through typed structs, so the file is the same bytes on
//! every run (the golden file `samples/slo/knowledgebeast.rendered.json` is compared with
//! a fresh render by the tests).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

/// `kbha slo` commands.
#[derive(Debug, clap::Subcommand)]
pub enum SloCommand {
    /// Render a spec's SLO alarms as a CloudFormation template (JSON) to deploy beside the
    /// kbha stack (docs/slo.md).
    Render(RenderArgs),
}

/// `kbha slo render` arguments.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The SLO spec (TOML), e.g. samples/slo/knowledgebeast.toml.
    #[arg(long)]
    pub spec: PathBuf,
    /// Write the template here (parent directories are created); default: stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// For a region without the kbha stack: create the alarms' SNS topic
    /// (`<prefix>-slo-alarms`) and subscribe the alert router's live alias to it
    /// (parameter AlertRouterAliasArn), instead of taking AlarmsTopicArn. CloudWatch alarm
    /// actions need a topic in the alarm's region (docs/slo.md).
    #[arg(long)]
    pub create_topic: bool,
}

/// Runs a `kbha slo` command.
pub fn run(cmd: &SloCommand) -> Result<ExitCode> {
    match cmd {
        SloCommand::Render(args) => {
            let model = load(&args.spec)?;
            let text = render(&model, Topic::from_flag(args.create_topic))?;
            match &args.out {
                Some(out) => {
                    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
                    }
                    std::fs::write(out, &text).with_context(|| format!("cannot write `{}`", out.display()))?;
                    eprintln!(
                        "slo: {} ({} SLOs: {} window alarms, {} composite alarms{})",
                        out.display(),
                        model.slos.len(),
                        model.slos.len() * 2 * WORKBOOK.len(),
                        model.slos.len() * 2,
                        if model.capacity.is_some() { ", FailoverRequired" } else { "" }
                    );
                }
                None => {
                    use std::io::Write as _;
                    std::io::stdout().lock().write_all(text.as_bytes()).context("cannot write the template to stdout")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

// ------------------------------------------------------------------ the workbook's table

/// Which alert a window pair belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertClass {
    /// Wake someone up: the budget burns fast.
    Page,
    /// Look at it during working hours: the budget burns slowly but steadily.
    Ticket,
}

impl AlertClass {
    /// `page` or `ticket`, as in alarm names and the `alert=` label.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertClass::Page => "page",
            AlertClass::Ticket => "ticket",
        }
    }
}

/// One row of the workbook's table: a long and a short window, and the share of the
/// whole window's error budget that burning for the long window at the alert's rate
/// consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPair {
    /// Page or ticket.
    pub class: AlertClass,
    /// The long window, seconds: the burn must have lasted this long.
    pub long_s: u64,
    /// The short window, seconds (1/12 of the long one): the burn is still going on, so
    /// the alert resets soon after the burn stops.
    pub short_s: u64,
    /// Percent of the error budget consumed in the long window at the alert's burn rate.
    pub budget_percent: u64,
}

/// The workbook's recommended windows ("Alerting on SLOs", table 5-8).
pub const WORKBOOK: [WindowPair; 4] = [
    WindowPair { class: AlertClass::Page, long_s: 3_600, short_s: 300, budget_percent: 2 },
    WindowPair { class: AlertClass::Page, long_s: 21_600, short_s: 1_800, budget_percent: 5 },
    WindowPair { class: AlertClass::Ticket, long_s: 86_400, short_s: 7_200, budget_percent: 10 },
    WindowPair { class: AlertClass::Ticket, long_s: 259_200, short_s: 21_600, budget_percent: 10 },
];

impl WindowPair {
    /// The burn-rate factor for an SLO window: budget share * SLO window / long window
    /// (14.4, 6, 3, 1 for 30 days). Integer arithmetic up to the one division, so 30 days
    /// gives exactly the workbook's numbers.
    pub fn burn_rate(&self, slo_window_s: u64) -> f64 {
        round(self.exact_burn_rate(slo_window_s))
    }

    fn exact_burn_rate(&self, slo_window_s: u64) -> f64 {
        (self.budget_percent * slo_window_s) as f64 / (100 * self.long_s) as f64
    }

    /// The error ratio over a window above which the alarm fires: burn rate * error
    /// budget (14.4 * 0.0005 = 0.0072 for 99.95 % over 30 days).
    pub fn error_ratio_threshold(&self, slo_window_s: u64, budget: f64) -> f64 {
        round(self.burn_rate(slo_window_s) * budget)
    }

    /// Percent of the window's budget consumed by burning at the alert's rate for the
    /// long window: burn rate * long window / SLO window (the table's 2, 5, 10, 10).
    pub fn budget_consumed_percent(&self, slo_window_s: u64) -> f64 {
        round(100.0 * self.exact_burn_rate(slo_window_s) * self.long_s as f64 / slo_window_s as f64)
    }
}

/// CloudWatch's bound on an alarm's evaluation range (`Period * EvaluationPeriods`):
/// 7 days, or 1 day for periods under an hour (PutMetricAlarm, `Period`).
pub fn max_evaluation_range_s(period_s: u64) -> u64 {
    if period_s < 3_600 { 86_400 } else { 604_800 }
}

/// Rounds away binary noise (0.007200000000000001 -> 0.0072), keeping 12 decimals.
fn round(x: f64) -> f64 {
    (x * 1e12).round() / 1e12
}

/// A number as it reads in descriptions and expressions: shortest form, no `.0`.
fn num(x: f64) -> String {
    format!("{}", round(x))
}

/// `300` -> `5m`, `3600` -> `1h`, `86400` -> `1d`.
pub fn span(s: u64) -> String {
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3_600) {
        format!("{}h", s / 3_600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

// ------------------------------------------------------------------ the spec file

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    service: String,
    #[serde(default = "default_prefix")]
    name_prefix: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    severity: SeverityFile,
    #[serde(default)]
    parameters: BTreeMap<String, ParameterFile>,
    #[serde(default)]
    slo: Vec<SloFile>,
    #[serde(default)]
    capacity: Option<CapacityFile>,
}

fn default_prefix() -> String {
    "kbha".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeverityFile {
    #[serde(default = "critical")]
    page: String,
    #[serde(default = "warning")]
    ticket: String,
}

impl Default for SeverityFile {
    fn default() -> Self {
        SeverityFile { page: critical(), ticket: warning() }
    }
}

fn critical() -> String {
    "critical".into()
}

fn warning() -> String {
    "warning".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterFile {
    description: String,
    #[serde(default = "string_type", rename = "type")]
    kind: String,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
}

fn string_type() -> String {
    "String".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SloFile {
    name: String,
    #[serde(default)]
    description: Option<String>,
    objective: f64,
    #[serde(default = "default_window")]
    window: String,
    #[serde(default)]
    ratio: Option<RatioFile>,
    #[serde(default)]
    latency: Option<LatencyFile>,
}

fn default_window() -> String {
    "30d".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RatioFile {
    namespace: String,
    bad: Vec<String>,
    total: Vec<String>,
    #[serde(default = "sum")]
    statistic: String,
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
}

fn sum() -> String {
    "Sum".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyFile {
    namespace: String,
    metric: String,
    threshold: f64,
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapacityFile {
    #[serde(default = "failover_required")]
    name: String,
    #[serde(default)]
    description: Option<String>,
    namespace: String,
    metric: String,
    #[serde(default = "minimum")]
    statistic: String,
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
    #[serde(default)]
    desired: Option<toml::Value>,
    #[serde(default)]
    desired_metric: Option<MetricFile>,
    #[serde(default = "half")]
    min_fraction: f64,
    #[serde(default = "two_minutes", rename = "for")]
    duration: String,
    #[serde(default = "critical")]
    severity: String,
}

fn failover_required() -> String {
    "failover-required".into()
}

fn minimum() -> String {
    "Minimum".into()
}

fn half() -> f64 {
    0.5
}

fn two_minutes() -> String {
    "2m".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricFile {
    namespace: String,
    metric: String,
    #[serde(default = "maximum")]
    statistic: String,
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
}

fn maximum() -> String {
    "Maximum".into()
}

// ------------------------------------------------------------------ the validated model

/// A validated spec, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The service the SLOs are about (descriptions, `service=` label unless `labels` sets one).
    pub service: String,
    /// Default of the template's `NamePrefix` parameter.
    pub name_prefix: String,
    /// Free text for the template's description.
    pub description: Option<String>,
    /// Extra `key=value` labels of every alert's description.
    pub labels: Vec<(String, String)>,
    /// Severity of page alerts.
    pub page_severity: String,
    /// Severity of ticket alerts.
    pub ticket_severity: String,
    /// Template parameters the dimensions refer to.
    pub parameters: Vec<Parameter>,
    /// The SLOs, in file order.
    pub slos: Vec<Slo>,
    /// The FailoverRequired rule.
    pub capacity: Option<Capacity>,
}

/// A template parameter declared in `[parameters.<Name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// Logical name (`LoadBalancer`).
    pub name: String,
    /// `String` or `Number`.
    pub kind: String,
    /// What to give.
    pub description: String,
    /// Default value.
    pub default: Option<String>,
    /// `AllowedPattern`.
    pub pattern: Option<String>,
}

/// One SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// `availability`, `latency-p95`: alarm names, the `slo=` label.
    pub name: String,
    /// CamelCase of the name, in logical IDs.
    pub logical: String,
    /// Free text.
    pub description: Option<String>,
    /// Percent of good events, strictly between 0 and 100.
    pub objective: f64,
    /// The SLO window, seconds.
    pub window_s: u64,
    /// What counts as bad.
    pub sli: Sli,
}

impl Slo {
    /// The error budget as a fraction: 1 - objective (0.0005 for 99.95).
    pub fn budget(&self) -> f64 {
        round((100.0 - self.objective) / 100.0)
    }
}

/// A value in the template: a literal, or a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// As is.
    Lit(String),
    /// `{"Ref": name}`.
    Ref(String),
    /// `{"Fn::Sub": text}`.
    Sub(String),
    /// `{"Fn::GetAtt": [resource, attribute]}`.
    GetAtt(String, String),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Value::Lit(v) => s.serialize_str(v),
            Value::Ref(r) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("Ref", r)?;
                m.end()
            }
            Value::Sub(t) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("Fn::Sub", t)?;
                m.end()
            }
            Value::GetAtt(r, a) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("Fn::GetAtt", &[r, a])?;
                m.end()
            }
        }
    }
}

/// A metric with its dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRef {
    /// CloudWatch namespace.
    pub namespace: String,
    /// Metric name.
    pub metric: String,
    /// Statistic.
    pub statistic: String,
    /// Dimensions, by name.
    pub dimensions: Vec<(String, Value)>,
}

/// The service level indicator.
#[derive(Debug, Clone, PartialEq)]
pub enum Sli {
    /// Sum of the `bad` metrics over the sum of the `total` metrics.
    Ratio {
        /// CloudWatch namespace.
        namespace: String,
        /// Metrics counting bad events (missing datapoints count as 0).
        bad: Vec<String>,
        /// Metrics counting all events.
        total: Vec<String>,
        /// `Sum` or `SampleCount`.
        statistic: String,
        /// Dimensions of every metric.
        dimensions: Vec<(String, Value)>,
    },
    /// The share of requests slower than `threshold`, from the percentile rank
    /// `PR(:threshold)` of a latency metric.
    Latency {
        /// CloudWatch namespace.
        namespace: String,
        /// The latency metric (`TargetResponseTime`).
        metric: String,
        /// The slowest good request, in the metric's unit (seconds for ALB).
        threshold: f64,
        /// Dimensions.
        dimensions: Vec<(String, Value)>,
    },
}

/// The FailoverRequired rule: healthy capacity under a fraction of the full capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Alarm name suffix and `rule=` label (`failover-required`).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The healthy count (`HealthyHostCount`, statistic `Minimum`).
    pub healthy: MetricRef,
    /// The full capacity.
    pub desired: Desired,
    /// Alarm below this fraction of the full capacity.
    pub min_fraction: f64,
    /// For this many consecutive minutes.
    pub minutes: u64,
    /// Severity label.
    pub severity: String,
}

/// The full capacity the healthy count is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Desired {
    /// A fixed number of targets.
    Count(u64),
    /// A `Number` template parameter.
    Param(String),
    /// A metric (ECS `DesiredTaskCount`, Auto Scaling `GroupDesiredCapacity`).
    Metric(MetricRef),
}

/// Reads and validates a spec file.
pub fn load(path: &Path) -> Result<Model> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    parse(&text).with_context(|| format!("`{}`", path.display()))
}

/// Parses and validates a spec.
pub fn parse(text: &str) -> Result<Model> {
    let file: SpecFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    validate(file)
}

/// `line 4, `objective = "99.9"`: invalid type: ...`: toml's message, where it is, and
/// the line itself (which names the field when the message does not).
fn toml_error(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) if span.start <= text.len() => {
            let before = &text[..span.start];
            let line = before.matches('\n').count() + 1;
            let line_text = text.lines().nth(line - 1).unwrap_or_default().trim();
            anyhow!("line {line}, `{line_text}`: {message}")
        }
        _ => anyhow!("{message}"),
    }
}

const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];
const RESERVED_PARAMETERS: [&str; 3] = ["NamePrefix", "AlarmsTopicArn", "AlertRouterAliasArn"];
const RESERVED_LABELS: [&str; 4] = ["severity", "slo", "alert", "rule"];

fn validate(f: SpecFile) -> Result<Model> {
    if !is_name(&f.service) {
        bail!("service `{}`: use lowercase letters, digits and dashes, like knowledgebeast", f.service);
    }
    if !(f.name_prefix.len() >= 2 && f.name_prefix.len() <= 20 && is_name(&f.name_prefix)) {
        bail!(
            "name_prefix `{}`: 2 to 20 lowercase letters, digits and dashes, starting with a letter (the kbha stack's NamePrefix)",
            f.name_prefix
        );
    }
    for s in [&f.severity.page, &f.severity.ticket] {
        if !SEVERITIES.contains(&s.as_str()) {
            bail!("severity: `{s}` is not one of critical, warning, info (the alert router's severities)");
        }
    }
    let mut labels = Vec::new();
    for (k, v) in &f.labels {
        if RESERVED_LABELS.contains(&k.as_str()) {
            bail!("labels.{k}: `{k}` is set by kbha slo render (use [severity] for severities)");
        }
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            bail!("labels: `{k}` is not a label name (letters, digits, `_` and `-`)");
        }
        if v.is_empty() || v.contains(char::is_whitespace) || v.contains('=') {
            bail!("labels.{k}: `{v}` must be one word without `=`, as the alert router reads key=value words");
        }
        labels.push((k.clone(), v.clone()));
    }
    if !labels.iter().any(|(k, _)| k == "service") {
        labels.insert(0, ("service".into(), f.service.clone()));
    }

    let mut parameters = Vec::new();
    for (name, p) in &f.parameters {
        if !(name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && name.chars().all(|c| c.is_ascii_alphanumeric())) {
            bail!("parameters.{name}: a parameter name is letters and digits, starting with a letter");
        }
        if RESERVED_PARAMETERS.contains(&name.as_str()) {
            bail!("parameters.{name}: `{name}` is a parameter kbha slo render declares itself");
        }
        if name.starts_with("Slo") {
            bail!("parameters.{name}: names starting with Slo are the rendered resources' logical IDs");
        }
        if p.kind != "String" && p.kind != "Number" {
            bail!("parameters.{name}.type: `{}` is not String or Number", p.kind);
        }
        if p.description.trim().is_empty() {
            bail!("parameters.{name}.description is empty: say what to give");
        }
        parameters.push(Parameter {
            name: name.clone(),
            kind: p.kind.clone(),
            description: p.description.clone(),
            default: p.default.clone(),
            pattern: p.pattern.clone(),
        });
    }
    let mut used = BTreeSet::new();

    if f.slo.is_empty() && f.capacity.is_none() {
        bail!("no [[slo]] and no [capacity]: nothing to render");
    }
    let mut slos: Vec<Slo> = Vec::new();
    for s in f.slo {
        let slo = validate_slo(s, &f.parameters, &mut used)?;
        if slos.iter().any(|o| o.name == slo.name || o.logical == slo.logical) {
            bail!("slo `{}`: a second SLO with this name (or the same name without dashes)", slo.name);
        }
        slos.push(slo);
    }
    let capacity = f.capacity.map(|c| validate_capacity(c, &f.parameters, &mut used)).transpose()?;
    if let Some(c) = &capacity
        && f.parameters.contains_key(&capacity_logical_id(c))
    {
        bail!("parameters.{}: the FailoverRequired alarm's logical ID; rename the parameter", capacity_logical_id(c));
    }
    for p in &parameters {
        if !used.contains(&p.name) {
            bail!("parameters.{}: declared but no dimension or value uses `${{{}}}`", p.name, p.name);
        }
    }
    Ok(Model {
        service: f.service,
        name_prefix: f.name_prefix,
        description: f.description,
        labels,
        page_severity: f.severity.page,
        ticket_severity: f.severity.ticket,
        parameters,
        slos,
        capacity,
    })
}

fn validate_slo(s: SloFile, params: &BTreeMap<String, ParameterFile>, used: &mut BTreeSet<String>) -> Result<Slo> {
    let name = s.name;
    if !is_name(&name) || name.len() > 40 {
        bail!("slo `{name}`: name: up to 40 lowercase letters, digits and dashes, starting with a letter, like latency-p95");
    }
    let at = |msg: String| anyhow!("slo `{name}`: {msg}");
    if !s.objective.is_finite() || s.objective <= 0.0 || s.objective >= 100.0 {
        return Err(at(format!("objective {} is out of range: give a percentage strictly between 0 and 100, like 99.95", s.objective)));
    }
    let window_s = parse_window(&s.window).map_err(|e| at(e.to_string()))?;
    let sli = match (s.ratio, s.latency) {
        (Some(r), None) => {
            let field = |f: &str| format!("ratio.{f}");
            let namespace = check_namespace(&r.namespace, &field("namespace")).map_err(|e| at(e.to_string()))?;
            let bad = check_metric_names(&r.bad, &field("bad")).map_err(|e| at(e.to_string()))?;
            let total = check_metric_names(&r.total, &field("total")).map_err(|e| at(e.to_string()))?;
            if bad.len() + total.len() > 10 {
                return Err(at("ratio: at most 10 metrics in bad and total together".into()));
            }
            if r.statistic != "Sum" && r.statistic != "SampleCount" {
                return Err(at(format!("ratio.statistic: `{}` is not Sum or SampleCount (a ratio of counts)", r.statistic)));
            }
            let dimensions = check_dimensions(&r.dimensions, &field("dimensions"), params, used).map_err(|e| at(e.to_string()))?;
            Sli::Ratio { namespace, bad, total, statistic: r.statistic, dimensions }
        }
        (None, Some(l)) => {
            let namespace = check_namespace(&l.namespace, "latency.namespace").map_err(|e| at(e.to_string()))?;
            let metric = check_metric_names(std::slice::from_ref(&l.metric), "latency.metric").map_err(|e| at(e.to_string()))?.remove(0);
            if !l.threshold.is_finite() || l.threshold <= 0.0 {
                return Err(at(format!(
                    "latency.threshold {} must be above 0 (the slowest good request, in the metric's unit: seconds for TargetResponseTime)",
                    l.threshold
                )));
            }
            let dimensions = check_dimensions(&l.dimensions, "latency.dimensions", params, used).map_err(|e| at(e.to_string()))?;
            Sli::Latency { namespace, metric, threshold: l.threshold, dimensions }
        }
        (Some(_), Some(_)) => return Err(at("give [slo.ratio] or [slo.latency], not both".into())),
        (None, None) => {
            return Err(at("no SLI: give [slo.ratio] (bad and total counts) or [slo.latency] (a threshold on a latency metric)".into()));
        }
    };
    let slo = Slo { logical: camel(&name), name: name.clone(), description: s.description, objective: s.objective, window_s, sli };
    // The fastest alert must be able to fire: its error-ratio threshold below 1.
    let page = WORKBOOK[0];
    let threshold = page.error_ratio_threshold(window_s, slo.budget());
    if threshold >= 1.0 {
        return Err(at(format!(
            "objective {} leaves an error budget of {} %: the {} page alert would need an error ratio of {}, which cannot happen; use an objective above {} % for a {} window",
            s.objective,
            num(100.0 - s.objective),
            span(page.long_s),
            num(threshold),
            num(100.0 - 100.0 / page.burn_rate(window_s)),
            span(window_s)
        )));
    }
    Ok(slo)
}

fn validate_capacity(c: CapacityFile, params: &BTreeMap<String, ParameterFile>, used: &mut BTreeSet<String>) -> Result<Capacity> {
    if !is_name(&c.name) || c.name.len() > 40 {
        bail!("capacity.name `{}`: up to 40 lowercase letters, digits and dashes, starting with a letter", c.name);
    }
    let statistics = ["Minimum", "Maximum", "Average", "Sum", "SampleCount"];
    let healthy = MetricRef {
        namespace: check_namespace(&c.namespace, "capacity.namespace")?,
        metric: check_metric_names(std::slice::from_ref(&c.metric), "capacity.metric")?.remove(0),
        statistic: c.statistic.clone(),
        dimensions: check_dimensions(&c.dimensions, "capacity.dimensions", params, used)?,
    };
    if !statistics.contains(&c.statistic.as_str()) {
        bail!("capacity.statistic: `{}` is not one of {}", c.statistic, statistics.join(", "));
    }
    let desired = match (c.desired, c.desired_metric) {
        (Some(v), None) => match &v {
            toml::Value::Integer(n) if *n >= 1 => Desired::Count(n.unsigned_abs()),
            toml::Value::String(s) => match reference(s) {
                Some(p) if params.get(p).is_some_and(|d| d.kind == "Number") => {
                    used.insert(p.to_owned());
                    Desired::Param(p.to_owned())
                }
                Some(p) => bail!("capacity.desired: `${{{p}}}` is not declared as a [parameters.{p}] with type = \"Number\""),
                None => bail!(
                    "capacity.desired: `{s}`: give the full capacity as a whole number of targets (4) or a Number parameter (\"${{DesiredCapacity}}\")"
                ),
            },
            toml::Value::Integer(n) => bail!("capacity.desired {n}: the full capacity is at least 1 target"),
            other => bail!(
                "capacity.desired: a {}: give the full capacity as a whole number of targets, at least 1, or a Number parameter (\"${{DesiredCapacity}}\")",
                other.type_str()
            ),
        },
        (None, Some(m)) => {
            if !statistics.contains(&m.statistic.as_str()) {
                bail!("capacity.desired_metric.statistic: `{}` is not one of {}", m.statistic, statistics.join(", "));
            }
            Desired::Metric(MetricRef {
                namespace: check_namespace(&m.namespace, "capacity.desired_metric.namespace")?,
                metric: check_metric_names(std::slice::from_ref(&m.metric), "capacity.desired_metric.metric")?.remove(0),
                statistic: m.statistic,
                dimensions: check_dimensions(&m.dimensions, "capacity.desired_metric.dimensions", params, used)?,
            })
        }
        (Some(_), Some(_)) => bail!("capacity: give desired or [capacity.desired_metric], not both"),
        (None, None) => {
            bail!("capacity: the full capacity is missing: give desired (a number or a Number parameter) or [capacity.desired_metric]")
        }
    };
    if !c.min_fraction.is_finite() || c.min_fraction <= 0.0 || c.min_fraction >= 1.0 {
        bail!("capacity.min_fraction {} is out of range: give a fraction strictly between 0 and 1, like 0.5", c.min_fraction);
    }
    let minutes = c
        .duration
        .strip_suffix('m')
        .and_then(|m| m.parse::<u64>().ok())
        .filter(|m| (1..=60).contains(m))
        .ok_or_else(|| anyhow!("capacity.for: `{}` is not a number of minutes from 1m to 60m, like 2m", c.duration))?;
    if !SEVERITIES.contains(&c.severity.as_str()) {
        bail!("capacity.severity: `{}` is not one of critical, warning, info", c.severity);
    }
    Ok(Capacity { name: c.name, description: c.description, healthy, desired, min_fraction: c.min_fraction, minutes, severity: c.severity })
}

/// `30d` -> seconds; whole days from 7 to 90 (the longest alert window is 3 days).
pub fn parse_window(w: &str) -> Result<u64> {
    let days = w
        .strip_suffix('d')
        .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("window `{w}` is not a number of days like 30d"))?;
    if !(7..=90).contains(&days) {
        bail!("window `{w}` is out of range: give 7d to 90d (the longest alert window is 3d)");
    }
    Ok(days * 86_400)
}

fn is_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn camel(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

fn check_namespace(ns: &str, field: &str) -> Result<String> {
    if ns.trim().is_empty() {
        bail!("{field} is empty: name the CloudWatch namespace, like AWS/ApplicationELB");
    }
    if ns.starts_with(':') || ns.len() > 255 {
        bail!("{field}: `{ns}` is not a CloudWatch namespace");
    }
    Ok(ns.to_owned())
}

fn check_metric_names(names: &[String], field: &str) -> Result<Vec<String>> {
    if names.is_empty() {
        bail!("{field} is empty: name at least one metric");
    }
    for n in names {
        if n.trim().is_empty() {
            bail!("{field}: empty metric name");
        }
        if n.len() > 255 {
            bail!("{field}: metric name `{n}` is longer than 255 characters");
        }
    }
    let distinct: BTreeSet<_> = names.iter().collect();
    if distinct.len() != names.len() {
        bail!("{field}: a metric is listed twice");
    }
    Ok(names.to_vec())
}

/// `${Name}` -> `Name`.
fn reference(v: &str) -> Option<&str> {
    v.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
}

fn check_dimensions(
    dims: &BTreeMap<String, String>,
    field: &str,
    params: &BTreeMap<String, ParameterFile>,
    used: &mut BTreeSet<String>,
) -> Result<Vec<(String, Value)>> {
    if dims.len() > 30 {
        bail!("{field}: more than 30 dimensions");
    }
    let mut out = Vec::new();
    for (k, v) in dims {
        if k.trim().is_empty() || k.len() > 255 {
            bail!("{field}: `{k}` is not a dimension name");
        }
        let value = match reference(v) {
            Some(p) if params.contains_key(p) => {
                used.insert(p.to_owned());
                Value::Ref(p.to_owned())
            }
            Some(p) => bail!("{field}.{k}: `${{{p}}}` is not declared: add [parameters.{p}]"),
            None if v.contains("${") => bail!("{field}.{k}: `{v}`: a parameter reference `${{Name}}` must be the whole value"),
            None if v.trim().is_empty() => bail!("{field}.{k} is empty"),
            None if v.len() > 1024 => bail!("{field}.{k}: longer than 1024 characters"),
            None => Value::Lit(v.clone()),
        };
        out.push((k.clone(), value));
    }
    Ok(out)
}

// ------------------------------------------------------------------ the template

/// A map serialized in insertion order, whatever serde_json's map type.
struct Ordered<T>(Vec<(String, T)>);

impl<T: Serialize> Serialize for Ordered<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct Template {
    #[serde(rename = "AWSTemplateFormatVersion")]
    version: &'static str,
    #[serde(rename = "Description")]
    description: String,
    #[serde(rename = "Metadata")]
    metadata: Metadata,
    #[serde(rename = "Parameters")]
    parameters: Ordered<ParameterOut>,
    #[serde(rename = "Resources")]
    resources: Ordered<Resource>,
    #[serde(rename = "Outputs", skip_serializing_if = "Ordered::is_empty")]
    outputs: Ordered<Output>,
}

impl<T> Ordered<T> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Serialize)]
struct Metadata {
    #[serde(rename = "kbha")]
    kbha: MetadataKbha,
}

/// The numbers behind the alarms, for reviewers (not read by CloudFormation); numbers as
/// strings, as template metadata takes no floats (cfn-lint E4002).
#[derive(Serialize)]
struct MetadataKbha {
    generator: &'static str,
    service: String,
    slos: Vec<MetadataSlo>,
}

#[derive(Serialize)]
struct MetadataSlo {
    name: String,
    objective_percent: String,
    window: String,
    error_budget: String,
    alerts: Vec<MetadataAlert>,
}

#[derive(Serialize)]
struct MetadataAlert {
    alert: &'static str,
    long_window: String,
    short_window: String,
    burn_rate: String,
    error_ratio_threshold: String,
    budget_consumed_percent: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ParameterOut {
    #[serde(rename = "Type")]
    kind: String,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_value: Option<u64>,
}

#[derive(Serialize)]
struct Resource {
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(rename = "Metadata", skip_serializing_if = "Option::is_none")]
    metadata: Option<serde_json::Value>,
    #[serde(rename = "Properties")]
    properties: Properties,
}

impl Resource {
    fn new(kind: &'static str, properties: Properties) -> Resource {
        Resource { kind, metadata: None, properties }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Properties {
    Alarm(Box<AlarmProperties>),
    Composite(CompositeProperties),
    /// The few resources of `--create-topic`.
    Raw(serde_json::Value),
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AlarmProperties {
    alarm_name: Value,
    alarm_description: String,
    metrics: Vec<Query>,
    evaluation_periods: u64,
    datapoints_to_alarm: u64,
    threshold: f64,
    comparison_operator: &'static str,
    treat_missing_data: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    alarm_actions: Vec<Value>,
    #[serde(rename = "OKActions", skip_serializing_if = "Vec::is_empty")]
    ok_actions: Vec<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CompositeProperties {
    alarm_name: Value,
    alarm_description: String,
    alarm_rule: Value,
    alarm_actions: Vec<Value>,
    #[serde(rename = "OKActions")]
    ok_actions: Vec<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Query {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expression: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metric_stat: Option<MetricStat>,
    return_data: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetricStat {
    metric: Metric,
    period: u64,
    stat: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metric {
    namespace: String,
    metric_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dimensions: Vec<Dimension>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Dimension {
    name: String,
    value: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Output {
    description: String,
    value: Value,
}

/// Where the alarms send their state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// The `AlarmsTopicArn` parameter: the kbha stack's alarms topic, in its region.
    Parameter,
    /// A topic created by the template, subscribed by the alert router's live alias
    /// (parameter `AlertRouterAliasArn`), for a region without the kbha stack.
    Create,
}

impl Topic {
    fn from_flag(create: bool) -> Topic {
        if create { Topic::Create } else { Topic::Parameter }
    }

    fn action(self) -> Value {
        match self {
            Topic::Parameter => Value::Ref("AlarmsTopicArn".into()),
            Topic::Create => Value::Ref(CREATED_TOPIC.into()),
        }
    }
}

/// Logical ID of the topic `--create-topic` makes.
const CREATED_TOPIC: &str = "SloAlarmsTopic";

/// CloudFormation's limit on an alarm description.
const MAX_DESCRIPTION: usize = 1024;

/// The logical ID of an SLO's alarm for one window of one alert: `SloAvailabilityPage1h`.
pub fn window_logical_id(slo: &Slo, class: AlertClass, window_s: u64) -> String {
    format!("Slo{}{}{}", slo.logical, camel(class.as_str()), span(window_s))
}

/// The logical ID of the FailoverRequired alarm: `FailoverRequiredAlarm`.
fn capacity_logical_id(c: &Capacity) -> String {
    format!("{}Alarm", camel(&c.name))
}

/// The logical ID of an SLO's composite alarm: `SloAvailabilityPage`.
pub fn composite_logical_id(slo: &Slo, class: AlertClass) -> String {
    format!("Slo{}{}", slo.logical, camel(class.as_str()))
}

/// Renders the template: pretty JSON ending with a newline.
pub fn render(model: &Model, topic: Topic) -> Result<String> {
    let mut parameters = vec![
        (
            "NamePrefix".to_owned(),
            ParameterOut {
                kind: "String".into(),
                description: "Prefix of the alarm names: the kbha stack's NamePrefix.".into(),
                default: Some(model.name_prefix.clone()),
                allowed_pattern: Some("^[a-z][a-z0-9-]{1,19}$".into()),
                min_value: None,
            },
        ),
        match topic {
            Topic::Parameter => (
                "AlarmsTopicArn".to_owned(),
                ParameterOut {
                    kind: "String".into(),
                    description: "The SNS topic the alert router reads, in this stack's region: the kbha stack's output AlarmsTopicArn when it runs here (docs/slo.md).".into(),
                    default: None,
                    allowed_pattern: Some("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+$".into()),
                    min_value: None,
                },
            ),
            Topic::Create => (
                "AlertRouterAliasArn".to_owned(),
                ParameterOut {
                    kind: "String".into(),
                    description: "The kbha stack's output AlertRouterAliasArn: subscribed to the alarms topic this stack creates (the kbha stack must let that topic invoke it, docs/slo.md).".into(),
                    default: None,
                    allowed_pattern: Some("^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]+:[A-Za-z0-9_-]+$".into()),
                    min_value: None,
                },
            ),
        },
    ];
    for p in &model.parameters {
        parameters.push((
            p.name.clone(),
            ParameterOut {
                kind: p.kind.clone(),
                description: p.description.clone(),
                default: p.default.clone(),
                allowed_pattern: p.pattern.clone(),
                min_value: (p.kind == "Number").then_some(1),
            },
        ));
    }

    let mut resources = Vec::new();
    if topic == Topic::Create {
        resources.extend(topic_resources());
    }
    let mut metadata = Vec::new();
    for slo in &model.slos {
        let budget = slo.budget();
        let mut alerts = Vec::new();
        for class in [AlertClass::Page, AlertClass::Ticket] {
            let pairs: Vec<&WindowPair> = WORKBOOK.iter().filter(|p| p.class == class).collect();
            let mut rule = Vec::new();
            let mut said = Vec::new();
            for pair in &pairs {
                let burn = pair.burn_rate(slo.window_s);
                let mut ids = Vec::new();
                for window_s in [pair.long_s, pair.short_s] {
                    let id = window_logical_id(slo, class, window_s);
                    let props = window_alarm(model, slo, class, pair, window_s)?;
                    resources.push((id.clone(), Resource::new("AWS::CloudWatch::Alarm", Properties::Alarm(Box::new(props)))));
                    ids.push(id);
                }
                rule.push(format!("(ALARM(\"${{{}}}\") AND ALARM(\"${{{}}}\"))", ids[0], ids[1]));
                said.push(format!(
                    "{}x over {} and {} ({} % of the budget in {})",
                    num(burn),
                    span(pair.long_s),
                    span(pair.short_s),
                    num(pair.budget_consumed_percent(slo.window_s)),
                    span(pair.long_s)
                ));
                alerts.push(MetadataAlert {
                    alert: class.as_str(),
                    long_window: span(pair.long_s),
                    short_window: span(pair.short_s),
                    burn_rate: num(burn),
                    error_ratio_threshold: num(pair.error_ratio_threshold(slo.window_s, budget)),
                    budget_consumed_percent: num(pair.budget_consumed_percent(slo.window_s)),
                });
            }
            let severity = match class {
                AlertClass::Page => &model.page_severity,
                AlertClass::Ticket => &model.ticket_severity,
            };
            let how = match class {
                AlertClass::Page => "error budget burning fast",
                AlertClass::Ticket => "error budget burning steadily",
            };
            let description = describe(
                format!(
                    "{} SLO {}: {} % over {}{}: {how}: {}.",
                    model.service,
                    slo.name,
                    num(slo.objective),
                    span(slo.window_s),
                    about(slo),
                    said.join(", or ")
                ),
                &[("severity", severity), ("slo", &slo.name), ("alert", class.as_str())],
                &model.labels,
            )?;
            resources.push((
                composite_logical_id(slo, class),
                Resource::new(
                    "AWS::CloudWatch::CompositeAlarm",
                    Properties::Composite(CompositeProperties {
                        alarm_name: Value::Sub(format!("${{NamePrefix}}-slo-{}-{}", slo.name, class.as_str())),
                        alarm_description: description,
                        alarm_rule: Value::Sub(rule.join(" OR ")),
                        alarm_actions: vec![topic.action()],
                        ok_actions: vec![topic.action()],
                    }),
                ),
            ));
        }
        metadata.push(MetadataSlo {
            name: slo.name.clone(),
            objective_percent: num(slo.objective),
            window: span(slo.window_s),
            error_budget: num(budget),
            alerts,
        });
    }

    let mut outputs = Vec::new();
    if topic == Topic::Create {
        outputs.push((
            "SloAlarmsTopicArn".to_owned(),
            Output {
                description: "The topic the alarms notify; the alert router's live alias is subscribed to it.".into(),
                value: Value::Ref(CREATED_TOPIC.into()),
            },
        ));
    }
    if let Some(c) = &model.capacity {
        let id = capacity_logical_id(c);
        resources
            .push((id.clone(), Resource::new("AWS::CloudWatch::Alarm", Properties::Alarm(Box::new(capacity_alarm(model, c, topic)?)))));
        outputs.push((
            format!("{id}Arn"),
            Output {
                description: "The FailoverRequired alarm: list it in the failover function's KBHA_TARGETS[].alarms for this region's target to let kbha fail over on it.".into(),
                value: Value::GetAtt(id, "Arn".into()),
            },
        ));
    }

    let mut description = format!(
        "kbha SLO alerts for {} (kbha slo render, docs/slo.md): per SLO, multi-window multi-burn-rate alarms after the Google SRE workbook, a page when 2 % of the error budget burns in 1h or 5 % in 6h, a ticket when 10 % burns in 1d or 3d{}. Deploy in the region of the metrics; {}",
        model.service,
        if model.capacity.is_some() { "; FailoverRequired on the healthy capacity" } else { "" },
        match topic {
            Topic::Parameter => "AlarmsTopicArn: the kbha stack's alarms topic, in the same region.",
            Topic::Create => "the alarms notify the topic created here, which the alert router (AlertRouterAliasArn) subscribes to.",
        }
    );
    if let Some(d) = &model.description {
        description = format!("{} {description}", d.trim());
    }
    if description.len() > MAX_DESCRIPTION {
        bail!("description: the template description would be {} characters, above CloudFormation's {MAX_DESCRIPTION}", description.len());
    }
    let template = Template {
        version: "2010-09-09",
        description,
        metadata: Metadata { kbha: MetadataKbha { generator: "kbha slo render", service: model.service.clone(), slos: metadata } },
        parameters: Ordered(parameters),
        resources: Ordered(resources),
        outputs: Ordered(outputs),
    };
    let mut text = serde_json::to_string_pretty(&template)?;
    text.push('\n');
    Ok(text)
}

fn about(slo: &Slo) -> String {
    slo.description.as_deref().map(|d| format!(" ({})", d.trim())).unwrap_or_default()
}

/// Text, then the labels as `key=value` words, checked against the length limit.
fn describe(text: String, own: &[(&str, &str)], labels: &[(String, String)]) -> Result<String> {
    let mut d = text;
    for (k, v) in own.iter().copied().chain(labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        d.push_str(&format!(" {k}={v}"));
    }
    if d.len() > MAX_DESCRIPTION {
        bail!(
            "an alarm description would be {} characters, above CloudWatch's {MAX_DESCRIPTION}: shorten the description fields: {d}",
            d.len()
        );
    }
    Ok(d)
}

fn dimensions(dims: &[(String, Value)]) -> Vec<Dimension> {
    dims.iter().map(|(n, v)| Dimension { name: n.clone(), value: v.clone() }).collect()
}

fn metric_query(id: String, namespace: &str, metric: &str, dims: &[(String, Value)], period: u64, stat: &str) -> Query {
    Query {
        id,
        label: Some(metric.to_owned()),
        expression: None,
        metric_stat: Some(MetricStat {
            metric: Metric { namespace: namespace.to_owned(), metric_name: metric.to_owned(), dimensions: dimensions(dims) },
            period,
            stat: stat.to_owned(),
        }),
        return_data: false,
    }
}

/// The alarm on one window of one alert: the burn rate over the window, from one
/// datapoint as long as the window.
fn window_alarm(model: &Model, slo: &Slo, class: AlertClass, pair: &WindowPair, window_s: u64) -> Result<AlarmProperties> {
    if window_s > max_evaluation_range_s(window_s) || !window_s.is_multiple_of(60) {
        bail!("the {} window is beyond what a CloudWatch alarm evaluates", span(window_s));
    }
    let budget = slo.budget();
    let mut metrics = Vec::new();
    let ratio = match &slo.sli {
        Sli::Ratio { namespace, bad, total, statistic, dimensions } => {
            let mut bad_terms = Vec::new();
            for (i, m) in bad.iter().enumerate() {
                let id = format!("bad{}", i + 1);
                bad_terms.push(format!("FILL({id}, 0)"));
                metrics.push(metric_query(id, namespace, m, dimensions, window_s, statistic));
            }
            let mut total_terms = Vec::new();
            for (i, m) in total.iter().enumerate() {
                let id = format!("total{}", i + 1);
                // One total: its absence means no traffic, and the alarm sees no data.
                // Several: a missing one counts as 0.
                total_terms.push(if total.len() == 1 { id.clone() } else { format!("FILL({id}, 0)") });
                metrics.push(metric_query(id, namespace, m, dimensions, window_s, statistic));
            }
            format!("({}) / ({})", bad_terms.join(" + "), total_terms.join(" + "))
        }
        Sli::Latency { namespace, metric, threshold, dimensions } => {
            let stat = format!("PR(:{})", num(*threshold));
            metrics.push(metric_query("fast".into(), namespace, metric, dimensions, window_s, &stat));
            "(100 - fast) / 100".to_owned()
        }
    };
    let burn = pair.burn_rate(slo.window_s);
    metrics.push(Query {
        id: "burnrate".into(),
        label: Some(format!("{} burn rate over {}", slo.name, span(window_s))),
        expression: Some(Value::Lit(format!("{ratio} / {}", num(budget)))),
        metric_stat: None,
        return_data: true,
    });
    let other = if window_s == pair.long_s { pair.short_s } else { pair.long_s };
    let description = describe(
        format!(
            "{} SLO {}: {} % over {}: error budget burn rate over the last {} above {}x (error ratio above {}); with the {} alarm it makes the {} alert, whose composite alarm notifies (this one has no actions).",
            model.service,
            slo.name,
            num(slo.objective),
            span(slo.window_s),
            span(window_s),
            num(burn),
            num(pair.error_ratio_threshold(slo.window_s, budget)),
            span(other),
            class.as_str()
        ),
        &[("slo", &slo.name)],
        &[],
    )?;
    Ok(AlarmProperties {
        alarm_name: Value::Sub(format!("${{NamePrefix}}-slo-{}-{}-{}", slo.name, class.as_str(), span(window_s))),
        alarm_description: description,
        metrics,
        evaluation_periods: 1,
        datapoints_to_alarm: 1,
        threshold: burn,
        comparison_operator: "GreaterThanThreshold",
        // No traffic, no errors: an idle service does not burn its budget.
        treat_missing_data: "notBreaching",
        alarm_actions: Vec::new(),
        ok_actions: Vec::new(),
    })
}

/// FailoverRequired: healthy / full capacity under the fraction for the duration.
fn capacity_alarm(model: &Model, c: &Capacity, topic: Topic) -> Result<AlarmProperties> {
    let h = &c.healthy;
    let mut metrics = vec![metric_query("healthy".into(), &h.namespace, &h.metric, &h.dimensions, 60, &h.statistic)];
    let (expression, full) = match &c.desired {
        Desired::Count(n) => (Value::Lit(format!("healthy / {n}")), format!("{n} targets")),
        Desired::Param(p) => (Value::Sub(format!("healthy / ${{{p}}}")), format!("the {p} parameter")),
        Desired::Metric(m) => {
            metrics.push(metric_query("desired".into(), &m.namespace, &m.metric, &m.dimensions, 60, &m.statistic));
            (Value::Lit("healthy / desired".into()), format!("{} {}", m.namespace, m.metric))
        }
    };
    metrics.push(Query {
        id: "capacity".into(),
        label: Some("healthy share of the full capacity".into()),
        expression: Some(expression),
        metric_stat: None,
        return_data: true,
    });
    let text = c.description.as_deref().map(|d| format!("{} ", d.trim())).unwrap_or_default();
    let description = describe(
        format!(
            "{text}{} FailoverRequired: under {} % of the capacity healthy ({} {} / {full}) for {} minutes; missing data counts as failing. Fail over to the other region.",
            model.service,
            num(c.min_fraction * 100.0),
            h.namespace,
            h.metric,
            c.minutes
        ),
        &[("severity", &c.severity), ("rule", &c.name)],
        &model.labels,
    )?;
    Ok(AlarmProperties {
        alarm_name: Value::Sub(format!("${{NamePrefix}}-{}", c.name)),
        alarm_description: description,
        metrics,
        evaluation_periods: c.minutes,
        datapoints_to_alarm: c.minutes,
        threshold: c.min_fraction,
        comparison_operator: "LessThanThreshold",
        // A region that stops reporting is not a healthy one.
        treat_missing_data: "breaching",
        alarm_actions: vec![topic.action()],
        ok_actions: vec![topic.action()],
    })
}

/// `--create-topic`: the alarms' topic in this region, its policy (CloudWatch alarms of
/// this account may publish) and the alert router's cross-region subscription, as
/// infra/health-alarms.yaml makes them for us-east-1.
fn topic_resources() -> Vec<(String, Resource)> {
    let topic = Resource {
        kind: "AWS::SNS::Topic",
        metadata: Some(serde_json::json!({"checkov": {"skip": [{
            "id": "CKV_AWS_26",
            "comment": "CloudWatch alarm actions cannot publish to a topic encrypted with the AWS managed SNS key, and the messages are alarm state changes, not secrets."
        }]}})),
        properties: Properties::Raw(serde_json::json!({"TopicName": {"Fn::Sub": "${NamePrefix}-slo-alarms"}})),
    };
    let policy = Resource::new(
        "AWS::SNS::TopicPolicy",
        Properties::Raw(serde_json::json!({
            "Topics": [{"Ref": CREATED_TOPIC}],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "CloudWatchAlarmsOfThisAccount",
                    "Effect": "Allow",
                    "Principal": {"Service": "cloudwatch.amazonaws.com"},
                    "Action": "sns:Publish",
                    "Resource": {"Ref": CREATED_TOPIC},
                    "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
                }]
            }
        })),
    );
    let subscription = Resource::new(
        "AWS::SNS::Subscription",
        Properties::Raw(
            serde_json::json!({"TopicArn": {"Ref": CREATED_TOPIC}, "Protocol": "lambda", "Endpoint": {"Ref": "AlertRouterAliasArn"}}),
        ),
    );
    vec![
        (CREATED_TOPIC.to_owned(), topic),
        (format!("{CREATED_TOPIC}Policy"), policy),
        ("SloAlarmsRouterSubscription".to_owned(), subscription),
    ]
}

#[cfg(test)]
mod tests;
