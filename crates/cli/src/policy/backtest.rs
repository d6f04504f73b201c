//! `kbha policy backtest <candidate> --records <source>`: what a candidate policy would have
//! decided on the decisions a function really made.
//!
//! Every decision record carries the policy input it was asked (`input`, with its
//! `input_digest`; [`kbha_lambda::record`]). The backtest reads records from JSONL files
//! (what the functions, `kbha replay` and `cargo xtask drill` print) or from a function's CloudWatch
//! Logs log group, checks each input against its digest, asks the candidate, hosted the way
//! a function hosts it, and compares its answer with the decision on record. For failover
//! it also runs the candidate's decision through the guardrails with the settings the
//! function used (`guardrail_context`), so a difference the guardrails would have refused
//! is flagged as such. Exit status as `kbha policy diff`: 0 when nothing differs, 1 when
//! some decisions differ or the candidate faulted, 2 on trouble.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kbha_aws::{AwsSettings, CloudWatchLogEvents, LogEvents, LogQuery, load_sdk_config};
use kbha_core::guardrails::{GuardrailContext, GuardrailVerdict};
use kbha_core::time::parse_timestamp;
use kbha_lambda::record::input_digest;
use kbha_policy_host::{PolicyEngine, World};
use kbha_policy_lifecycle::{Alerting, Decider, Failover, Kind, Replication};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::diff::Operand;

/// The term every decision record's log event contains: narrows a log group read.
const RECORD_TERM: &str = "\"kbha.decision\"";

/// `kbha policy backtest` arguments.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// The candidate: a `.wasm` component, or `builtin`.
    pub candidate: PathBuf,
    /// Where the decision records are: a JSONL file, a directory of `*.jsonl`/`*.log`
    /// files, `-` for stdin, or `logs:<log group>` (e.g. `logs:/aws/lambda/kbha-failover`)
    /// to read a function's CloudWatch Logs; repeatable. Lines that are not decision
    /// records are skipped.
    #[arg(long, required = true)]
    pub records: Vec<String>,
    /// Test only records of this world; needed when the candidate is `builtin`.
    #[arg(long, value_parser = ["failover", "replication", "alert"])]
    pub world: Option<String>,
    /// Only decisions made within this long before now: `7d`, `12h`, `90m`.
    #[arg(long)]
    pub since: Option<String>,
    /// Ask the candidate with this policy configuration entry added to (or replacing one
    /// in) each recorded input's `config`, e.g. a setting the candidate introduces;
    /// repeatable. The recorded decision is still the one to compare with.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Log events per FilterLogEvents page, for `logs:` sources (1 to 10000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub page_size: i32,
    /// AWS endpoint override for `logs:` sources (an emulator); default: the environment's.
    #[arg(long)]
    pub endpoint_url: Option<String>,
}

/// One decision that came out differently.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// The record's event id.
    pub event_id: String,
    /// When the function decided.
    pub now: String,
    /// The candidate's decision, or its fault.
    pub candidate: Value,
    /// The decision on record.
    pub recorded: Value,
    /// The guardrails' verdict on the candidate's decision (failover), with the settings
    /// the function used; `None` for other worlds and for faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<GuardrailVerdict>,
}

impl Difference {
    fn refused(&self) -> bool {
        matches!(self.guardrail, Some(GuardrailVerdict::Refused { .. }))
    }
}

/// What a backtest found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Decision records read (of any world).
    pub records: usize,
    /// Records of the candidate's world whose input was replayed.
    pub replayed: usize,
    /// Records of other worlds, not replayed.
    pub other_world: usize,
    /// Records with no input: no policy was asked (duplicates, stale transitions).
    pub without_input: usize,
    /// Records whose input was too large to keep (`input_truncated`).
    pub truncated: usize,
    /// Records whose input does not match its `input_digest`, or does not parse: not
    /// replayed (listed by event id).
    pub unreadable: Vec<String>,
    /// Decisions the candidate made the same.
    pub equal: usize,
    /// Decisions that came out differently, grouped by `recorded action -> candidate
    /// action` (a fault is `fault:<kind>`).
    pub different: BTreeMap<String, Vec<Difference>>,
    /// Differences the guardrails would have refused.
    pub refused_by_guardrails: usize,
    /// Inputs on which the candidate faulted.
    pub faults: usize,
}

impl Summary {
    /// How many decisions differ (faults included).
    pub fn differ(&self) -> usize {
        self.different.values().map(Vec::len).sum()
    }
}

/// A world's part of the backtest: how to name a decision's action, and (failover) the
/// guardrail check of a candidate's decision.
trait Backtested: Kind
where
    Self::Input: DeserializeOwned + Serialize,
{
    /// The guardrails' verdict on `decision`, from the record's `guardrail_context`.
    fn guardrails(_record: &Value, _input: &Self::Input, _decision: &Self::Decision) -> Option<GuardrailVerdict> {
        None
    }
}

impl Backtested for Failover {
    fn guardrails(record: &Value, input: &Self::Input, decision: &Self::Decision) -> Option<GuardrailVerdict> {
        let context: GuardrailContext = serde_json::from_value(record.get("guardrail_context")?.clone()).ok()?;
        Some(context.check(input, decision))
    }
}
impl Backtested for Replication {}
impl Backtested for Alerting {}

/// The action a decision (as JSON) takes, for grouping: the failover action's kind, the
/// replication verdict, the alert's severity (or `suppressed`).
pub fn action_of(decision: &Value) -> String {
    if let Some(kind) = decision.pointer("/action/kind").and_then(Value::as_str) {
        return kind.to_owned();
    }
    if let Some(verdict) = decision.get("verdict").and_then(Value::as_str) {
        return verdict.to_owned();
    }
    if decision.get("suppress").is_some_and(|s| !s.is_null()) {
        return "suppressed".to_owned();
    }
    match decision.get("severity").and_then(Value::as_str) {
        Some(s) => s.to_owned(),
        None => "?".to_owned(),
    }
}

/// The world of a record's `function` field.
fn world_of(record: &Value) -> Option<World> {
    match record.get("function")?.as_str()? {
        "failover" => Some(World::Failover),
        "replication" => Some(World::Replication),
        "alert-router" => Some(World::Alert),
        _ => None,
    }
}

/// A decision record in `line`: the line itself, or (Lambda's JSON log format) its
/// `message`.
pub fn record_in(line: &str) -> Option<Value> {
    let line = line.trim();
    if !line.starts_with('{') {
        return None;
    }
    let v: Value = serde_json::from_str(line).ok()?;
    if v.get("record").and_then(Value::as_str) == Some("kbha.decision") {
        return Some(v);
    }
    record_in(v.get("message")?.as_str()?)
}

/// Replays one record of world `K` with `candidate` into `summary`.
fn replay<K: Backtested>(candidate: &dyn Decider<K>, record: &Value, set: &BTreeMap<String, String>, summary: &mut Summary)
where
    K::Input: DeserializeOwned + Serialize,
{
    let event_id = record.get("event_id").and_then(Value::as_str).unwrap_or("?").to_owned();
    if record.get("input_truncated").and_then(Value::as_bool) == Some(true) {
        summary.truncated += 1;
        return;
    }
    let (Some(input), Some(recorded)) =
        (record.get("input").filter(|i| !i.is_null()), record.pointer("/policy/decision").filter(|d| !d.is_null()))
    else {
        summary.without_input += 1;
        return;
    };
    let Ok(mut parsed) = serde_json::from_value::<K::Input>(input.clone()) else {
        summary.unreadable.push(event_id);
        return;
    };
    // The function hashed the input's JSON as it serialised it; re-serialising the parsed
    // input gives the same bytes only if nothing was lost or changed on the way.
    if record.get("input_digest").and_then(Value::as_str) != Some(input_digest(&parsed).as_str()) {
        summary.unreadable.push(event_id);
        return;
    }
    if !set.is_empty() {
        let mut changed = input.clone();
        if let Some(config) = changed.get_mut("config").and_then(Value::as_object_mut) {
            config.extend(set.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))));
        }
        match serde_json::from_value::<K::Input>(changed) {
            Ok(p) => parsed = p,
            Err(_) => {
                summary.unreadable.push(event_id);
                return;
            }
        }
    }
    summary.replayed += 1;
    let (candidate_json, guardrail) = match candidate.decide(&parsed) {
        Ok(d) => (serde_json::to_value(&d).unwrap_or(Value::Null), K::guardrails(record, &parsed, &d)),
        Err(f) => {
            summary.faults += 1;
            (json!({ "fault": { "kind": f.kind, "message": f.message } }), None)
        }
    };
    if &candidate_json == recorded {
        summary.equal += 1;
        return;
    }
    let new_action = match candidate_json.pointer("/fault/kind").and_then(Value::as_str) {
        Some(kind) => format!("fault:{kind}"),
        None => action_of(&candidate_json),
    };
    let old_action = action_of(recorded);
    let key = if old_action == new_action {
        format!("{old_action} -> {new_action} (other reason or alerts)")
    } else {
        format!("{old_action} -> {new_action}")
    };
    let now = record.get("now").and_then(Value::as_str).unwrap_or("?").to_owned();
    let d = Difference { event_id, now, candidate: candidate_json, recorded: recorded.clone(), guardrail };
    if d.refused() {
        summary.refused_by_guardrails += 1;
    }
    summary.different.entry(key).or_default().push(d);
}

/// Backtests `candidate` (of `world`) on `records`; decisions before `since_ms` are left out.
fn backtest_world<K: Backtested>(
    candidate: &Operand,
    records: &[Value],
    world: World,
    set: &BTreeMap<String, String>,
    since_ms: Option<i64>,
) -> Result<Summary>
where
    K::Input: DeserializeOwned + Serialize,
{
    let policy = candidate.load::<K>()?;
    let mut summary = Summary { records: records.len(), ..Summary::default() };
    for record in records {
        if world_of(record) != Some(world) {
            summary.other_world += 1;
            continue;
        }
        let at = record.get("now").and_then(Value::as_str).and_then(|t| parse_timestamp(t).ok());
        if since_ms.is_some_and(|since| at.is_some_and(|at| at < since)) {
            summary.records -= 1;
            continue;
        }
        replay::<K>(policy.as_ref(), record, set, &mut summary);
    }
    Ok(summary)
}

/// Backtests `candidate` on decision records (already read).
pub fn backtest(candidate: &Path, world: Option<&str>, records: &[Value], set: &[String], since_ms: Option<i64>) -> Result<Summary> {
    let set = set
        .iter()
        .map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect::<Option<BTreeMap<_, _>>>()
        .with_context(|| format!("--set takes KEY=VALUE, got {}", set.join(" ")))?;
    let engine = PolicyEngine::new(super::limits()?)?;
    let candidate = Operand::read(candidate)?;
    let given = world.map(|w| World::parse(w).with_context(|| format!("unknown world `{w}`"))).transpose()?;
    let world = match (candidate.world(&engine)?, given) {
        (Some(found), Some(given)) if found != given => {
            bail!("the candidate implements {} but --world says {}", found.wit_name(), given.wit_name())
        }
        (Some(w), _) | (None, Some(w)) => w,
        (None, None) => bail!("the candidate is `builtin`: say which one with --world failover|replication|alert"),
    };
    match world {
        World::Failover => backtest_world::<Failover>(&candidate, records, world, &set, since_ms),
        World::Replication => backtest_world::<Replication>(&candidate, records, world, &set, since_ms),
        World::Alert => backtest_world::<Alerting>(&candidate, records, world, &set, since_ms),
    }
}

/// Decision records from a file, a directory of `*.jsonl`/`*.log` files, or stdin (`-`).
fn read_local(source: &str, out: &mut Vec<Value>) -> Result<()> {
    let mut read = |reader: &mut dyn BufRead, name: &str| -> Result<()> {
        for line in reader.lines() {
            let line = line.with_context(|| format!("cannot read `{name}`"))?;
            out.extend(record_in(&line));
        }
        Ok(())
    };
    if source == "-" {
        return read(&mut std::io::stdin().lock(), "stdin");
    }
    let path = Path::new(source);
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read the directory `{source}`"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "jsonl" || e == "log"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no `*.jsonl` or `*.log` files in `{source}`");
        }
        files
    } else {
        vec![path.to_owned()]
    };
    for file in files {
        let f = std::fs::File::open(&file).with_context(|| format!("cannot open `{}`", file.display()))?;
        read(&mut std::io::BufReader::new(f), &file.display().to_string())?;
    }
    Ok(())
}

/// Decision records from a log group, every page, with a progress line on stderr.
pub async fn read_logs<L: LogEvents>(logs: &L, query: &LogQuery, out: &mut Vec<Value>) -> Result<()> {
    let (mut token, mut pages, mut events) = (None, 0usize, 0usize);
    loop {
        let page = logs.page(query, token).await.with_context(|| format!("cannot read the log group `{}`", query.group))?;
        pages += 1;
        events += page.messages.len();
        out.extend(page.messages.iter().filter_map(|m| record_in(m)));
        eprint!("\rreading {}: {events} events, {pages} page(s)", query.group);
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    eprintln!();
    Ok(())
}

/// Reads every `--records` source.
async fn read_all(args: &BacktestArgs, since_ms: Option<i64>) -> Result<Vec<Value>> {
    let mut records = Vec::new();
    let mut logs = None;
    for source in &args.records {
        let Some(group) = source.strip_prefix("logs:") else {
            read_local(source, &mut records)?;
            continue;
        };
        if group.is_empty() {
            bail!("`{source}` names no log group; write `logs:/aws/lambda/<function>`");
        }
        if logs.is_none() {
            let settings = AwsSettings { endpoint_url: args.endpoint_url.clone(), ..AwsSettings::default() };
            logs = Some(CloudWatchLogEvents::from_conf(&load_sdk_config(&settings).await));
        }
        let query =
            LogQuery { group: group.to_owned(), start_ms: since_ms, pattern: Some(RECORD_TERM.to_owned()), page_size: args.page_size };
        if let Some(l) = &logs {
            read_logs(l, &query, &mut records).await?;
        }
    }
    Ok(records)
}

/// The summary as text.
pub fn render(s: &Summary) -> String {
    let mut out = format!(
        "{} decision record(s): {} replayed, {} of other worlds, {} without input (no policy was asked), {} cut for size, {} unreadable\n",
        s.records,
        s.replayed,
        s.other_world,
        s.without_input,
        s.truncated,
        s.unreadable.len()
    );
    if !s.unreadable.is_empty() {
        out += &format!("  unreadable (input does not match its digest, or does not parse): {}\n", s.unreadable.join(", "));
    }
    out += &format!(
        "{} equal, {} different ({} the guardrails would refuse), {} candidate fault(s)\n",
        s.equal,
        s.differ(),
        s.refused_by_guardrails,
        s.faults
    );
    for (key, diffs) in &s.different {
        out += &format!("{key}: {}\n", diffs.len());
        for d in diffs {
            let why = d.candidate.get("reason").or_else(|| d.candidate.pointer("/fault/message")).and_then(Value::as_str).unwrap_or("");
            let guard = match &d.guardrail {
                Some(GuardrailVerdict::Refused { refusals }) => format!(" [guardrails would refuse: {refusals:?}]"),
                Some(GuardrailVerdict::Apply { .. }) => " [guardrails: apply]".to_owned(),
                Some(GuardrailVerdict::NoChange) | None => String::new(),
            };
            out += &format!("  {} {}{guard}: {why}\n", d.now, d.event_id);
        }
    }
    out
}

/// Runs `kbha policy backtest`.
pub fn run(args: &BacktestArgs) -> Result<ExitCode> {
    let go = || -> Result<Summary> {
        let since_ms =
            args.since.as_deref().map(|s| crate::report::parse_span(s).map(|span| kbha_lambda::lambda::now_ms() - span)).transpose()?;
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let records = rt.block_on(read_all(args, since_ms))?;
        if records.is_empty() {
            bail!("no decision records in {}", args.records.join(", "));
        }
        backtest(&args.candidate, args.world.as_deref(), &records, &args.set, since_ms)
    };
    match go() {
        Ok(s) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", render(&s));
            }
            Ok(ExitCode::from(u8::from(s.differ() > 0)))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_found_bare_or_inside_a_json_log_line_and_other_lines_are_skipped() {
        let rec = r#"{"record":"kbha.decision","function":"failover","event_id":"e"}"#;
        assert_eq!(record_in(rec).and_then(|r| r["event_id"].as_str().map(str::to_owned)).as_deref(), Some("e"));
        let wrapped = json!({"timestamp": "2026-11-26T10:00:00Z", "level": "INFO", "message": rec}).to_string();
        assert!(record_in(&wrapped).is_some());
        assert!(record_in("INIT_START Runtime Version: provided:al2023").is_none());
        assert!(record_in(r#"{"level":"INFO","fields":{"message":"observing"}}"#).is_none());
        assert!(record_in("{not json").is_none());
    }

    #[test]
    fn actions_are_named_per_world() {
        assert_eq!(action_of(&json!({"action": {"kind": "shift_in_steps"}})), "shift_in_steps");
        assert_eq!(action_of(&json!({"verdict": "stale"})), "stale");
        assert_eq!(action_of(&json!({"severity": "critical", "suppress": null})), "critical");
        assert_eq!(action_of(&json!({"severity": "critical", "suppress": {"until": 1}})), "suppressed");
    }

    #[test]
    fn records_of_the_builtin_policy_replay_equal_and_a_changed_input_is_unreadable() -> Result<()> {
        let policy = kbha_policy_lifecycle::builtin::<Failover>()?;
        let input: kbha_core::FailoverInput =
            serde_json::from_str(include_str!("../../../../policies/failover-default/cases/healthy-primary-holds/input.json"))?;
        let decision = policy.decide(&input).map_err(|f| anyhow::anyhow!("{f:?}"))?;
        let recorded = kbha_lambda::record::RecordedInput::of(&input);
        let mut record = json!({
            "record": "kbha.decision", "function": "failover", "event_id": "e1", "now": "2026-11-26T10:00:00.000Z",
            "input_digest": recorded.input_digest, "input": serde_json::to_value(&recorded.input)?,
            "policy": {"decision": decision},
        });
        let (mut s, none) = (Summary::default(), BTreeMap::new());
        replay::<Failover>(policy.as_ref(), &record, &none, &mut s);
        assert_eq!((s.replayed, s.equal, s.differ()), (1, 1, 0), "{s:?}");
        // A configuration the policy refuses: the same input otherwise, a different answer.
        let bad = BTreeMap::from([("return_steps".to_owned(), "50,10".to_owned())]);
        replay::<Failover>(policy.as_ref(), &record, &bad, &mut s);
        assert_eq!((s.replayed, s.equal, s.differ()), (2, 1, 1), "{s:?}");
        record["input"]["now_ms"] = json!(1);
        replay::<Failover>(policy.as_ref(), &record, &none, &mut s);
        assert_eq!(s.unreadable, ["e1"]);
        record["input"] = Value::Null;
        replay::<Failover>(policy.as_ref(), &record, &none, &mut s);
        assert_eq!(s.without_input, 1);
        Ok(())
    }
}
