//! `kbha policy backtest` on the decision records two drills print (the real failover
//! handler against the emulator): the built-in policy against itself, the business-hours
//! sample, the hostile policy's faults and guardrail refusals, and the same records read
//! back from CloudWatch Logs page by page. Needs `cargo xtask policies` (target/policies).
//!
//! Here rather than in crates/cli: the records come from `xtask drill`. `kbha` runs as
//! `xtask kbha ...`, the same code as the kbha binary (`kbha::cli`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use kbha_aws::sdk::cloudwatchlogs::types::InputLogEvent;
use kbha_test_harness::{Emulator, repo_root};
use serde_json::Value;

/// Runs xtask; returns (exit code, stdout, stderr).
fn xtask(args: &[&str], env: &[(&str, String)]) -> Result<(i32, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(repo_root())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .context("run xtask")?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr)))
}

/// Runs kbha (`xtask kbha ...`); returns (exit code, stdout, stderr).
fn kbha(args: &[&str], env: &[(&str, String)]) -> Result<(i32, String, String)> {
    let mut all = vec!["kbha"];
    all.extend_from_slice(args);
    xtask(&all, env)
}

/// The records two drills print (a stepped return; a failure again after the return), in
/// a directory of JSONL files: made once for every test here.
fn records_dir() -> Result<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(d) = DIR.get() {
        return Ok(d);
    }
    let dir = std::env::temp_dir().join(format!("kbha-backtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for drill in ["stepped-return", "fail-again-after-failback"] {
        let (code, out, err) = xtask(&["drill", &format!("samples/drills/{drill}.toml")], &[])?;
        if code != 0 {
            bail!("drill {drill} failed:\n{out}\n{err}");
        }
        std::fs::write(dir.join(format!("{drill}.jsonl")), out)?;
    }
    Ok(DIR.get_or_init(|| dir))
}

/// All decision records in the directory.
fn records(dir: &Path) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        out.extend(text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["record"] == "kbha.decision"));
    }
    Ok(out)
}

/// `kbha policy backtest ... --json` -> (exit code, summary).
fn backtest(args: &[&str], env: &[(&str, String)]) -> Result<(i32, Value)> {
    let mut all = vec!["policy", "backtest"];
    all.extend_from_slice(args);
    all.push("--json");
    let (code, out, err) = kbha(&all, env)?;
    let summary = serde_json::from_str(&out).with_context(|| format!("exit {code}, stdout {out:?}, stderr {err}"))?;
    Ok((code, summary))
}

/// Whether the recorded decision gives traffic back to the primary while it has none.
fn is_return(record: &Value) -> bool {
    let primary = record["input"]["targets"].as_array().and_then(|ts| ts.iter().find(|t| t["primary"] == true));
    let Some(p) = primary.filter(|p| p["weight"] == 0) else { return false };
    let action = &record["policy"]["decision"]["action"];
    action["weights"]
        .as_array()
        .is_some_and(|ws| ws.iter().any(|w| w["set_identifier"] == p["set_identifier"] && w["weight"].as_u64().is_some_and(|n| n > 0)))
}

fn differ(s: &Value) -> usize {
    s["different"].as_object().map_or(0, |m| m.values().filter_map(Value::as_array).map(Vec::len).sum())
}

#[test]
fn the_builtin_policy_against_its_own_records_differs_nowhere() -> Result<()> {
    let dir = records_dir()?.display().to_string();
    let (code, s) = backtest(&["builtin", "--world", "failover", "--records", &dir], &[])?;
    assert_eq!(code, 0, "{s:#}");
    let failover = records(Path::new(&dir))?.iter().filter(|r| r["function"] == "failover" && !r["input"].is_null()).count();
    assert!(failover >= 40, "the drills made {failover} failover decisions");
    assert_eq!(s["replayed"], failover, "{s:#}");
    assert_eq!((s["equal"].as_u64(), differ(&s), s["unreadable"].as_array().map(Vec::len)), (Some(failover as u64), 0, Some(0)));
    assert!(s["other_world"].as_u64().is_some_and(|n| n > 0), "the replication verdicts are of another world: {s:#}");
    Ok(())
}

#[test]
fn the_business_hours_sample_differs_exactly_on_the_returns_outside_its_hours() -> Result<()> {
    let dir = records_dir()?;
    // The returns the built-in started (stepped, or at once with `return_steps = "100"`), by hour:
    // the drills run at the wall clock, so the hours are chosen around them.
    let returns: Vec<(String, i64)> = records(dir)?
        .iter()
        .filter(|r| r["function"] == "failover" && is_return(r))
        .map(|r| {
            let now = r["now"].as_str().unwrap_or_default();
            (r["event_id"].as_str().unwrap_or_default().to_owned(), now[11..13].parse::<i64>().unwrap_or(-1))
        })
        .collect();
    assert!(returns.len() >= 2, "the drills return traffic at least twice: {returns:?}");
    let first = returns[0].1;
    let (open, close) = if first < 23 { (first + 1, 24) } else { (0, 23) };
    let outside: BTreeSet<&str> = returns.iter().filter(|(_, h)| !(open..close).contains(h)).map(|(id, _)| id.as_str()).collect();
    let wasm = repo_root().join("target/policies/business-hours.wasm").display().to_string();
    let dir = dir.display().to_string();
    let (code, s) =
        backtest(&[&wasm, "--records", &dir, "--set", &format!("open_hour={open}"), "--set", &format!("close_hour={close}")], &[])?;
    assert_eq!(code, 1, "{s:#}");
    let groups: Vec<&String> = s["different"].as_object().context("different")?.keys().collect();
    assert!(groups.iter().all(|g| *g == "shift_in_steps -> hold" || *g == "shift_weights -> hold"), "{s:#}");
    let diffs: Vec<&Value> = s["different"].as_object().context("groups")?.values().filter_map(Value::as_array).flatten().collect();
    let held: BTreeSet<&str> = diffs.iter().filter_map(|d| d["event_id"].as_str()).collect();
    assert_eq!(held, outside, "{s:#}");
    for d in diffs {
        assert!(d["candidate"]["reason"].as_str().is_some_and(|r| r.contains("outside business hours")), "{d:#}");
        assert_eq!(d["guardrail"]["verdict"], "no_change", "holding needs no guardrail: {d:#}");
    }
    // Hours that hold every return: nothing differs.
    let (lo, hi) = (returns.iter().map(|r| r.1).min().unwrap_or(0), returns.iter().map(|r| r.1).max().unwrap_or(23));
    let (code, s) =
        backtest(&[&wasm, "--records", &dir, "--set", &format!("open_hour={lo}"), "--set", &format!("close_hour={}", hi + 1)], &[])?;
    assert_eq!((code, differ(&s)), (0, 0), "{s:#}");
    Ok(())
}

#[test]
fn a_hostile_candidate_s_faults_are_counted_and_unsafe_weights_are_flagged_as_refused() -> Result<()> {
    let dir = records_dir()?.display().to_string();
    let wasm = repo_root().join("target/policies/hostile.wasm").display().to_string();
    let (code, s) = backtest(&[&wasm, "--records", &dir, "--set", "mode=panic"], &[])?;
    assert_eq!(code, 1);
    assert_eq!(s["faults"], s["replayed"], "{s:#}");
    assert_eq!(s["equal"], 0);
    assert!(s["different"].as_object().context("groups")?.keys().all(|k| k.ends_with("-> fault:trap")), "{s:#}");

    // All traffic on the primary whatever happens: during the outages the guardrails would
    // have refused it (onto a down target); elsewhere it equals a hold or is a return.
    let (code, s) = backtest(&[&wasm, "--records", &dir, "--set", "mode=weights", "--set", "weights=primary=100,secondary=0"], &[])?;
    assert_eq!(code, 1);
    let refused = s["refused_by_guardrails"].as_u64().unwrap_or(0);
    assert!(refused > 0, "{s:#}");
    let all: Vec<&Value> = s["different"].as_object().context("groups")?.values().filter_map(Value::as_array).flatten().collect();
    let counted = all.iter().filter(|d| d["guardrail"]["verdict"] == "refused").count();
    assert_eq!(counted as u64, refused);
    Ok(())
}

#[test]
fn bad_sources_and_arguments_exit_2_with_a_message() -> Result<()> {
    let (code, _, err) = kbha(&["policy", "backtest", "builtin", "--world", "failover", "--records", "/nonexistent/records.jsonl"], &[])?;
    assert_eq!(code, 2);
    assert!(err.contains("cannot open `/nonexistent/records.jsonl`"), "{err}");
    let dir = records_dir()?.display().to_string();
    let (code, _, err) = kbha(&["policy", "backtest", "builtin", "--records", &dir], &[])?;
    assert_eq!(code, 2);
    assert!(err.contains("--world"), "{err}");
    let (code, _, err) = kbha(&["policy", "backtest", "builtin", "--world", "failover", "--records", &dir, "--set", "open_hour"], &[])?;
    assert_eq!(code, 2);
    assert!(err.contains("--set takes KEY=VALUE"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_read_from_cloudwatch_logs_page_by_page_give_the_same_summary_as_the_files() -> Result<()> {
    let dir = records_dir()?;
    let emu = Emulator::start()?;
    let logs = kbha_aws::sdk::cloudwatchlogs::Client::new(&emu.sdk_config().await);
    let group = "/aws/lambda/kbha-failover";
    logs.create_log_group().log_group_name(group).send().await?;
    logs.create_log_stream().log_group_name(group).log_stream_name("2026/12/04/[$LATEST]a").send().await?;
    // Every line the drills printed, as Lambda keeps stdout (the drill's own lines too,
    // which the filter and the reader must leave out), stamped one second apart.
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        lines.extend(std::fs::read_to_string(entry?.path())?.lines().map(str::to_owned).collect::<Vec<_>>());
    }
    let t0 = kbha_lambda::lambda::now_ms() - 3_600_000;
    let events: Vec<InputLogEvent> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| InputLogEvent::builder().timestamp(t0 + i as i64 * 1000).message(l).build())
        .collect::<Result<_, _>>()?;
    for chunk in events.chunks(100) {
        logs.put_log_events()
            .log_group_name(group)
            .log_stream_name("2026/12/04/[$LATEST]a")
            .set_log_events(Some(chunk.to_vec()))
            .send()
            .await?;
    }
    let env =
        [("AWS_ACCESS_KEY_ID", "test".to_owned()), ("AWS_SECRET_ACCESS_KEY", "test".to_owned()), ("AWS_REGION", "us-east-1".to_owned())];
    let source = format!("logs:{group}");
    let url = emu.endpoint_url();
    let args = ["builtin", "--world", "failover", "--records", &source, "--page-size", "7", "--endpoint-url", &url];
    let (code, from_logs) = backtest(&args, &env)?;
    let (_, from_files) = backtest(&["builtin", "--world", "failover", "--records", &dir.display().to_string()], &[])?;
    assert_eq!(code, 0, "{from_logs:#}");
    assert_eq!(from_logs, from_files);
    let (_, _, err) = kbha(
        &["policy", "backtest", "builtin", "--world", "failover", "--records", &source, "--page-size", "7", "--endpoint-url", &url],
        &env,
    )?;
    let pages: usize = err.rsplit(", ").next().and_then(|p| p.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    let records = records(dir)?.len();
    assert!(pages >= records / 7, "{records} records in pages of 7 took {pages} pages: {err}");
    // --since leaves out what is older than the window (everything here is an hour old).
    let (code, _, err) = kbha(
        &["policy", "backtest", "builtin", "--world", "failover", "--records", &source, "--since", "10m", "--endpoint-url", &url],
        &env,
    )?;
    assert_eq!(code, 2, "no records in the window is trouble, not a pass: {err}");
    assert!(err.contains("no decision records in logs:"), "{err}");
    Ok(())
}
