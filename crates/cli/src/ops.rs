//! `kbha ops ...`: a person looks at and steers a live deployment, with the failover
//! function's own configuration (its `KBHA_*` variables, from the environment or a
//! `--config` file) against AWS or, with `--endpoint-url`, the local emulator. The work is
//! done by the failover library ([`kbha_failover::ops`]), so the command and the function
//! share one state object, one set of guardrails and one compare-and-swap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kbha_aws::{AwsSettings, Identity, StsIdentity, load_sdk_config};
use kbha_core::time::format_timestamp;
use kbha_failover::ops::{Command, Status, parse_weights};
use kbha_lambda::lambda::InitTimer;
use kbha_lambda::lambda::now_ms;

/// Where the configuration and AWS come from (shared by `kbha ops` and `kbha report`).
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// A file with the function's configuration: `KBHA_X=value` lines (a `.env` file), a
    /// JSON object of them, or the output of `aws lambda get-function-configuration`.
    /// Default: the `KBHA_*` variables of the environment.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Endpoint for every AWS call (the local emulator); default: the environment's
    /// `AWS_ENDPOINT_URL`, else AWS.
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
}

/// `kbha ops` arguments.
#[derive(Debug, clap::Args)]
pub struct OpsArgs {
    /// Configuration and endpoint.
    #[command(flatten)]
    pub target: Target,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: OpsCommand,
}

/// Operator commands.
#[derive(Debug, clap::Subcommand)]
pub enum OpsCommand {
    /// What kbha sees now: weights and shares, health, alarms, replication age, recent
    /// changes and who made them, pause, drains, approvals, the open incident.
    Status,
    /// Stop automatic changes (events and ticks still observe, record and announce).
    Pause {
        /// Why (recorded and announced).
        #[arg(long)]
        reason: String,
    },
    /// Let the function change weights again.
    Resume,
    /// Move traffic by hand, through the guardrails and the compare-and-swap.
    Shift {
        /// All traffic to this target.
        #[arg(long, conflicts_with = "weights")]
        to: Option<String>,
        /// Or these weights: `primary=50,secondary=50`.
        #[arg(long)]
        weights: Option<String>,
        /// Onto a target whose health check fails (needs KBHA_BREAK_GLASS=true; logged loudly).
        #[arg(long)]
        force: bool,
        /// Why.
        #[arg(long, default_value = "operator shift")]
        reason: String,
    },
    /// Maintenance: move the target's traffic off and never give it traffic automatically.
    Drain {
        /// The target (set identifier).
        target: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// End a drain.
    Undrain {
        /// The target (set identifier).
        target: String,
    },
    /// With KBHA_FAILBACK=manual: the next evaluation returns traffic if the primary is up.
    ApproveFailback,
    /// Close the open incident by hand.
    CloseIncident {
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Planned switchover (game day, maintenance): all traffic to a target observed up, in
    /// steps with a bake time each, rolled back if it fails; waits for the RPO gate before
    /// the first step. Later steps come with the function's ticks.
    Switchover {
        /// Destination (set identifier).
        #[arg(long)]
        to: String,
        /// Steps, percent, rising to 100 (default: KBHA_RETURN_STEPS, `10,25,50,75,100`).
        #[arg(long)]
        steps: Option<String>,
        /// How long each step holds (`5m`, `90s`; default: KBHA_RETURN_BAKE_SECONDS, 5m).
        #[arg(long)]
        bake: Option<String>,
        /// Why (recorded and announced).
        #[arg(long, default_value = "planned switchover")]
        reason: String,
    },
    /// Stop the stepped shift under way (a switchover or a stepped return) and put the
    /// weights back to where it started; automatic returns are then held until the next
    /// `switchover`.
    Abort {
        /// Why.
        #[arg(long, default_value = "aborted by an operator")]
        reason: String,
    },
}

/// Reads the `KBHA_*` configuration: from `path`, or the environment.
pub fn config_map(path: Option<&Path>) -> Result<BTreeMap<String, String>> {
    let Some(path) = path else {
        return Ok(std::env::vars().filter(|(k, _)| k.starts_with("KBHA_")).collect());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the configuration file `{}`", path.display()))?;
    parse_config(&text).with_context(|| format!("configuration file `{}`", path.display()))
}

/// Parses a configuration file (see [`Target::config`]).
pub fn parse_config(text: &str) -> Result<BTreeMap<String, String>> {
    if text.trim_start().starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
        let vars = v.pointer("/Environment/Variables").unwrap_or(&v);
        let obj = vars.as_object().context("expected a JSON object of KBHA_* variables")?;
        return obj
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                other => bail!("`{k}` is {other}; every value must be a string"),
            })
            .collect();
    }
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line.split_once('=').with_context(|| format!("line {}: `{line}` is not KEY=value", n + 1))?;
        let v = v.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|x| x.strip_suffix('\''))
            .or_else(|| v.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
            .unwrap_or(v);
        out.insert(k.trim().to_owned(), v.to_owned());
    }
    Ok(out)
}

/// The function over real (or emulated) AWS, as the Lambda builds it.
pub type Live = kbha_failover::LambdaFailover;

/// Builds the failover function for `target` exactly as its Lambda `main` does (the same
/// policy lifecycle: pin, signature, shadow, fallback); a switchover runs one evaluation,
/// as a tick would.
pub async fn live(target: &Target) -> Result<(std::sync::Arc<Live>, aws_config::SdkConfig)> {
    let env = config_map(target.config.as_deref())?;
    let settings = AwsSettings { endpoint_url: target.endpoint_url.clone(), ..AwsSettings::default() };
    let conf = load_sdk_config(&settings).await;
    let started = kbha_failover::start_with(|k| env.get(k).cloned(), &conf, &mut InitTimer::start()).await?;
    Ok((started.function, conf))
}

/// The replication verifier's last restore test of each source, read from beside the
/// status objects the RPO gate reads (`<KBHA_REPLICATION_STATUS>restore-tests/`): how long
/// restoring the newest backup takes is the restore part of the RTO.
async fn restore_tests(f: &Live, conf: &aws_config::SdkConfig, now: i64) -> Result<String> {
    use kbha_aws::ObjectStore as _;
    use std::fmt::Write as _;
    let mut o = String::from("\nrestore tests (the restore part of the RTO):\n");
    let Some(loc) = &f.config().replication_status else {
        o.push_str("  (KBHA_REPLICATION_STATUS is not set)\n");
        return Ok(o);
    };
    let store = kbha_aws::S3Store::from_conf(conf);
    let prefix = format!("{}restore-tests/", loc.prefix);
    let mut found = 0;
    for obj in store.list(&loc.bucket, &prefix).await? {
        let Some(got) = store.get(&loc.bucket, &obj.key).await? else { continue };
        match serde_json::from_slice::<kbha_replication_verifier::restore_test::RestoreStatus>(&got.bytes) {
            Ok(t) => {
                found += 1;
                let _ = writeln!(
                    o,
                    "  {:<12} {:<10} {:>9}  tested {} ({} ago), backup {} taken {}",
                    t.source,
                    t.verdict.as_str(),
                    format!("{:.1} s", t.duration_ms as f64 / 1000.0),
                    format_timestamp(t.tested_at_ms),
                    mins(now - t.tested_at_ms),
                    t.key,
                    format_timestamp(t.backup_created_at_ms),
                );
            }
            Err(e) => {
                let _ = writeln!(o, "  s3://{}/{}: unreadable ({e})", loc.bucket, obj.key);
            }
        }
    }
    if found == 0 {
        o.push_str("  (none recorded: the verifier's RestoreTest schedule has not run, or its status prefix differs)\n");
    }
    Ok(o)
}

/// Runs `kbha ops`.
pub async fn run(args: &OpsArgs) -> Result<()> {
    let (f, conf) = live(&args.target).await?;
    let now = now_ms();
    let command = match &args.command {
        OpsCommand::Status => {
            let status = f.status(now).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render_status(&status));
                print!("{}", restore_tests(&f, &conf, now).await?);
            }
            return Ok(());
        }
        OpsCommand::Pause { reason } => Command::Pause { reason: reason.clone() },
        OpsCommand::Resume => Command::Resume,
        OpsCommand::Shift { to, weights, force, reason } => Command::Shift {
            to: to.clone(),
            weights: weights.as_deref().map(parse_weights).transpose().map_err(anyhow::Error::msg)?.unwrap_or_default(),
            force: *force,
            reason: reason.clone(),
        },
        OpsCommand::Drain { target, reason } => Command::Drain { target: target.clone(), reason: reason.clone() },
        OpsCommand::Undrain { target } => Command::Undrain { target: target.clone() },
        OpsCommand::ApproveFailback => Command::ApproveFailback,
        OpsCommand::CloseIncident { reason } => Command::CloseIncident { reason: reason.clone() },
        OpsCommand::Switchover { to, steps, bake, reason } => {
            let cfg = f.config();
            let bake_ms = match bake {
                Some(b) => u64::try_from(crate::report::parse_duration(b).context("--bake")?).unwrap_or(0),
                None => cfg.return_bake_s.saturating_mul(1000),
            };
            let steps = kbha_core::plan::parse_steps(steps.as_deref().unwrap_or(&cfg.return_steps), bake_ms)
                .map_err(|e| anyhow::anyhow!("--steps: {e}"))?;
            Command::Switchover { to: to.clone(), steps, reason: reason.clone() }
        }
        OpsCommand::Abort { reason } => Command::Abort { reason: reason.clone() },
    };
    let by = StsIdentity::from_conf(&conf)
        .caller_arn()
        .await
        .context("cannot tell who you are (STS GetCallerIdentity); every operator command records its caller")?;
    // The decision record goes to stdout; the human summary to stderr, so `--json` output
    // stays one JSON document.
    let rec = f.operate(&by, &command, now).await?;
    if !args.json {
        eprintln!("{}", rec.detail);
        if let Some(id) = &rec.change_id {
            eprintln!(
                "route 53 change {id}: {} -> {}",
                kbha_failover::ops::describe(&rec.old_weights),
                kbha_failover::ops::describe(&rec.new_weights)
            );
        }
        eprintln!("recorded as {by}; notice {}", rec.notice_id.as_deref().unwrap_or("NOT sent (see the warning above)"));
    }
    Ok(())
}

fn ago(now: i64, t: Option<i64>) -> String {
    match t {
        None => "-".into(),
        Some(t) => format!("{} ({} ago)", format_timestamp(t), mins(now - t)),
    }
}

/// A duration, short.
pub fn mins(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// `kbha ops status` as text.
pub fn render_status(s: &Status) -> String {
    use std::fmt::Write;
    let now = kbha_core::time::parse_timestamp(&s.now).unwrap_or_default();
    let mut o = String::new();
    let _ = writeln!(o, "{}  at {}", s.record_name, s.now);
    let mut modes = vec![];
    if let Some(p) = &s.paused {
        modes.push(format!("PAUSED by {} at {}: {}", p.by, format_timestamp(p.at_ms), p.reason));
    }
    if s.manual_failback {
        modes.push(match &s.failback_approval {
            Some(a) => format!("failback manual, APPROVED by {} at {}", a.by, format_timestamp(a.at_ms)),
            None => "failback manual (no approval pending)".into(),
        });
    }
    if s.dry_run {
        modes.push("DRY-RUN".into());
    }
    if let Some(m) = &s.switched {
        modes.push(format!("automatic returns HELD by {} at {}: {}", m.by, format_timestamp(m.at_ms), m.reason));
    }
    let _ = writeln!(o, "mode: {}", if modes.is_empty() { "automatic".to_owned() } else { modes.join("; ") });
    let _ = writeln!(
        o,
        "\n{:<12} {:<11} {:>6} {:>6}  {:<9} {:<10} {:<18} {:<28} replication age",
        "target", "region", "weight", "share", "condition", "health", "alarms", "up since"
    );
    for t in &s.targets {
        let d = &t.detail;
        let mut name = t.set_identifier.clone();
        if t.primary {
            name.push('*');
        }
        let cond = format!("{:?}", t.condition).to_lowercase();
        let _ = writeln!(
            o,
            "{:<12} {:<11} {:>6} {:>5.0}%  {:<9} {:<10} {:<18} {:<28} {}{}",
            name,
            t.region,
            t.weight,
            t.share_percent,
            cond,
            format!("{:?}", d.health).to_lowercase(),
            d.alarm_state.as_cloudwatch(),
            d.up_since_ms.map_or("-".into(), |u| format!("{} ({})", format_timestamp(u), mins(now - u))),
            d.replication_age_ms.map_or("unknown".into(), |a| mins(a as i64)),
            t.drained.as_ref().map_or(String::new(), |m| format!("  DRAINED by {}: {}", m.by, m.reason)),
        );
    }
    let _ = writeln!(o, "(* primary)\n\nalarms:");
    for a in &s.alarms {
        let _ = writeln!(o, "  {:<40} {:<10} {:<18} since {}", a.name, a.target, a.state, a.since);
    }
    if s.alarms.is_empty() {
        let _ = writeln!(o, "  (none mapped, or CloudWatch knows none)");
    }
    let _ = writeln!(o, "\nrecent changes (newest last):");
    for c in s.recent_changes.iter().rev().take(5).rev() {
        let _ = writeln!(
            o,
            "  {} {:<10} by {}: {} (insync {}) {}",
            format_timestamp(c.at_ms),
            format!("{:?}", c.kind).to_lowercase(),
            c.by,
            kbha_failover::ops::describe(&c.to),
            c.insync_at_ms.map_or("not yet".into(), |t| format!("+{}", mins(t - c.at_ms))),
            c.reason.lines().next().unwrap_or("")
        );
    }
    if s.recent_changes.is_empty() {
        let _ = writeln!(o, "  (none recorded)");
    }
    if !s.recent_actions.is_empty() {
        let _ = writeln!(o, "\noperator actions (newest last):");
        for a in s.recent_actions.iter().rev().take(5).rev() {
            let _ = writeln!(o, "  {} {} by {}: {}", format_timestamp(a.at_ms), a.command, a.by, a.detail);
        }
    }
    match &s.incident {
        None => {
            let _ = writeln!(o, "\nno open incident");
        }
        Some((i, f)) => {
            let _ = writeln!(o, "\nOPEN INCIDENT {}: `{}` failed at {}", i.id, i.target, ago(now, Some(i.opened_at_ms)));
            let _ = writeln!(
                o,
                "  detected +{}, evacuated {}, INSYNC {}, unhealthy traffic {}, achieved RPO {}",
                mins(f.detect_ms),
                f.evacuate_ms.map_or("not yet".into(), |v| format!("+{}", mins(v))),
                f.insync_ms.map_or("not yet".into(), |v| format!("+{}", mins(v))),
                mins(f.unhealthy_ms),
                f.rpo_ms.map_or("unknown".into(), |v| mins(v as i64)),
            );
        }
    }
    if let Some(p) = &s.plan {
        let _ = writeln!(
            o,
            "\nUNDER WAY: {} ({}), {} since {}, started by {} at {}; steps {}",
            p.title(),
            p.id,
            p.describe_step(p.step),
            ago(now, p.step_at_ms),
            p.by,
            format_timestamp(p.started_at_ms),
            p.steps.iter().map(|s| format!("{} % ({})", s.percent, mins(s.bake_ms as i64))).collect::<Vec<_>>().join(", ")
        );
    }
    if !s.standing_alerts.is_empty() {
        let _ = writeln!(o, "\nstanding alerts:");
        for a in &s.standing_alerts {
            let _ = writeln!(o, "  {a}");
        }
    }
    if s.unsent_notices > 0 {
        let _ = writeln!(o, "\n{} notice(s) staged and not yet sent (the next invocation sends them)", s.unsent_notices);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_in_three_shapes() -> Result<()> {
        let env = parse_config("# comment\nexport KBHA_RECORD_NAME=api.example.com\nKBHA_TARGETS='[{\"a\":1}]'\n")?;
        assert_eq!(env["KBHA_RECORD_NAME"], "api.example.com");
        assert_eq!(env["KBHA_TARGETS"], "[{\"a\":1}]");
        let env = parse_config(r#"{"KBHA_RECORD_NAME": "x"}"#)?;
        assert_eq!(env["KBHA_RECORD_NAME"], "x");
        let env = parse_config(r#"{"FunctionName": "f", "Environment": {"Variables": {"KBHA_RECORD_NAME": "y"}}}"#)?;
        assert_eq!(env["KBHA_RECORD_NAME"], "y");
        assert!(parse_config("NOT A LINE").is_err());
        assert!(parse_config(r#"{"KBHA_COOLDOWN_SECONDS": 5}"#).expect_err("a number").to_string().contains("string"));
        Ok(())
    }
}
