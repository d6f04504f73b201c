//! `cargo xtask drill`: runs a scenario from `samples/drills/` against the local AWS emulator in
//! simulated time, with the real failover and replication-verifier handlers, checks the
//! scenario's expectations against what is read back from Route 53, SQS (SNS deliveries)
//! and S3, and writes `target/drill/<name>/report.html`.
//!
//! The mapped CloudWatch alarms exist in the emulator and an `alarm` step sets their state
//! there at the step's simulated time before (unless `lost`) delivering the transition, so
//! the failover function's DescribeAlarms sees what a real account would. An `ops` step
//! runs an operator command (`kbha ops switchover|abort`) on the same function, as
//! [`OPERATOR`], at the step's simulated time.

mod report;
pub mod scenario;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kbha_alert_router::{AlertRouter, RouterConfig};
use kbha_aws::{S3Store, SnsNotifier};
use kbha_core::plan::PlanOutcome;
use kbha_failover::ledger::{Objectives, Report};
use kbha_failover::ops::Command;
use kbha_failover::plan::PlanNote;
use kbha_failover::{ActionTaken, DecisionRecord, Policies};
use kbha_integration::replication::{BACKUPS, REPLICA, S3Shape, Uploaded, manifest_for, restore_test, s3_event, schedule, tar_gz};
use kbha_integration::{Function, PRIMARY_ALARM, SECONDARY_ALARM, STATE_BUCKET, Shape, World, alarm_event, fixture, tick};
use kbha_lambda::record::Invocation;
use kbha_policy_lifecycle::{Alerting, Failover, Replication, builtin};
use kbha_replication_verifier::{VerifierConfig, VerifierFunction};
use kbha_test_harness::TopicQueue;
use scenario::{BackupKind, DrillExpect, Expect, OpsStep, Scenario, Step, offset, parse_duration};
use serde_json::json;

/// Where the verifier writes per-region status; the failover RPO gate reads it.
const STATUS_PREFIX: &str = "kbha/replication/status/";
/// Alarm notifications reach the handler this long after the state change.
const DELIVERY_MS: i64 = 2_000;
/// The alert router's dedup state.
const ALERT_BUCKET: &str = "kbha-alert-state";
/// The mapped alarms, as `World::env` maps them: (target, alarm name, region).
const ALARMS: [(&str, &str, &str); 2] = [("primary", PRIMARY_ALARM, "us-east-1"), ("secondary", SECONDARY_ALARM, "us-west-2")];
/// The caller identity of the drill's operator commands.
pub const OPERATOR: &str = "drill-operator";

/// `cargo xtask drill` arguments.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// A scenario file, or with `--all` a directory of them.
    pub path: PathBuf,
    /// Run every `*.toml` in the directory.
    #[arg(long)]
    pub all: bool,
}

/// What happened at one step, for the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// Offset, ms.
    pub at: i64,
    /// What the step did.
    pub what: String,
    /// When (offset, ms) the failover handler ran at this step (a delivered alarm: `at`
    /// plus the delivery delay; a tick: `at`); `None` when it was not called. The weights
    /// read back after the step hold from then.
    pub decided_at: Option<i64>,
    /// Failover action or verifier verdict.
    pub outcome: String,
    /// Weights after the step.
    pub weights: BTreeMap<String, u32>,
    /// Health-check truth after the step (target -> healthy).
    pub health: BTreeMap<String, bool>,
    /// Alarm states after the step (target -> in ALARM).
    pub alarms: BTreeMap<String, bool>,
    /// Notices delivered by this step.
    pub new_notices: usize,
    /// Alerts the router delivered to severity topics at this step, read back from their
    /// queues: (severity, subject).
    pub alerts: Vec<(String, String)>,
    /// Newest verified backup of the secondary region after the step (absolute ms).
    pub newest_verified_ms: Option<i64>,
    /// Kind and verdict of a backup step.
    pub backup: Option<(BackupKind, String)>,
    /// A restore test step: its verdict and duration (ms), the restore part of the RTO.
    pub restore: Option<(String, u64)>,
    /// The stepped shift (return or switchover) as this step's decisions left it: the
    /// plan note of the failover handler's last record that carried one; for an operator
    /// command, the plan in place after it (an abort: the plan it ended).
    pub plan: Option<PlanNote>,
    /// In words, for the table: the plan note's reason, or what an operator command did
    /// (or why it was rejected).
    pub note: Option<String>,
    /// Failed expectations at this step.
    pub failures: Vec<String>,
}

/// One finished drill.
#[derive(Debug)]
pub struct Outcome {
    /// The scenario.
    pub scenario: Scenario,
    /// Simulated start, absolute ms.
    pub base: i64,
    /// Steps as run.
    pub rows: Vec<Row>,
    /// Report path.
    pub report: PathBuf,
    /// Failed expectations over the whole drill (`[expect]` of the scenario).
    pub drill_failures: Vec<String>,
    /// The incident ledger the failover function wrote, read back as `kbha report` reads it.
    pub ledger: Option<Report>,
}

impl Outcome {
    /// Number of failed expectations.
    pub fn failures(&self) -> usize {
        self.rows.iter().map(|r| r.failures.len()).sum::<usize>() + self.drill_failures.len()
    }
}

/// Runs `cargo xtask drill`.
pub async fn run(args: &DrillArgs) -> Result<std::process::ExitCode> {
    let files = if args.all {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&args.path)
            .with_context(|| format!("read directory {}", args.path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        v.sort();
        if v.is_empty() {
            bail!("no *.toml scenario in {}", args.path.display());
        }
        v
    } else {
        vec![args.path.clone()]
    };
    if !args.all {
        let outcome = run_file(&args.path).await?;
        // The report path is the last line printed.
        return Ok(if outcome.failures() == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE });
    }
    let mut failed = Vec::new();
    for f in &files {
        let outcome = run_file(f).await?;
        if outcome.failures() > 0 {
            failed.push(outcome.scenario.name.clone());
        }
    }
    if failed.is_empty() {
        println!("all {} drill(s) passed", files.len());
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        println!("{} of {} drill(s) FAILED: {}", failed.len(), files.len(), failed.join(", "));
        Ok(std::process::ExitCode::FAILURE)
    }
}

/// Loads and runs one scenario file, printing progress; writes the report.
pub async fn run_file(path: &Path) -> Result<Outcome> {
    let scenario = Scenario::load(path)?;
    println!("drill {}: {}", scenario.name, scenario.description.trim());
    let mut drill = Drill::start(&scenario).await?;
    let mut rows = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        let row = drill.step(i, step).await.with_context(|| format!("step {} at {}", i + 1, step.at))?;
        print_row(&row);
        rows.push(row);
    }
    let end = rows.last().map(|r| r.at).unwrap_or_default();
    // The ledger, read back through S3 the way `kbha report` reads it, over the drill.
    let objectives = Objectives {
        slo_percent: 99.95,
        rpo_ms: parse_duration(&scenario.settings.rpo)?.try_into().unwrap_or(u64::MAX),
        rto_ms: 4 * 3_600_000,
    };
    let ledger = kbha_failover::ledger::report(drill.failover.incidents().await?, drill.base, drill.base + end + 1, objectives);
    let mut outcome =
        Outcome { report: PathBuf::new(), base: drill.base, scenario, rows, drill_failures: Vec::new(), ledger: Some(ledger) };
    let dir = kbha_test_harness::repo_root().join("target/drill").join(&outcome.scenario.name);
    std::fs::create_dir_all(&dir)?;
    let report = dir.join("report.html");
    let figures = report::figures(&outcome);
    outcome.drill_failures = check_drill(&outcome.scenario.expect, &figures, outcome.ledger.as_ref());
    std::fs::write(&report, report::html(&outcome, &figures))?;
    report::print_figures(&figures);
    if let Some(l) = &outcome.ledger {
        std::fs::write(dir.join("ledger.json"), serde_json::to_string_pretty(l)?)?;
        println!("  incident ledger ({} incident(s); the figures `kbha report` prints):", l.incidents.len());
        print!("{}", kbha::report::incident_table(l));
        for p in &l.planned {
            let closed = p.incident.closed_at_ms.map_or("OPEN".to_owned(), kbha_core::time::format_timestamp);
            println!(
                "  planned event {} (to {}, {} change(s)), closed {closed}",
                p.incident.id,
                p.incident.target,
                p.incident.changes.len()
            );
        }
    }
    for f in &outcome.drill_failures {
        println!("{f}");
    }
    let outcome = Outcome { report, ..outcome };
    let n = outcome.failures();
    if n == 0 {
        println!("  PASSED: every expectation held");
    } else {
        println!("  FAILED: {n} expectation(s) did not hold");
    }
    println!("  report: {}", outcome.report.display());
    Ok(outcome)
}

fn print_row(r: &Row) {
    let w = |k: &str| r.weights.get(k).copied().unwrap_or_default();
    let mark = if r.failures.is_empty() { "ok" } else { "FAIL" };
    println!(
        "  {}  {:<36} {:<12} primary={:<3} secondary={:<3} notices+{} alerts+{}  {mark}",
        offset(r.at),
        r.what,
        r.outcome,
        w("primary"),
        w("secondary"),
        r.new_notices,
        r.alerts.len()
    );
    if let Some(n) = &r.note {
        println!("      {}: {n}", if r.what.starts_with("ops ") { "ops" } else { "plan" });
    }
    for f in &r.failures {
        println!("{f}");
    }
    let _ = std::io::stdout().flush();
}

/// The provisioned topology and the handlers under drill.
struct Drill {
    world: World,
    failover: Arc<Function>,
    verifier: VerifierFunction<S3Store, SnsNotifier>,
    router: AlertRouter<S3Store, SnsNotifier>,
    severities: BTreeMap<String, TopicQueue>,
    alerts: usize,
    base: i64,
    health: BTreeMap<String, bool>,
    alarms: BTreeMap<String, bool>,
    notices: usize,
    backups: usize,
}

impl Drill {
    async fn start(s: &Scenario) -> Result<Drill> {
        let world = World::start().await.context("cannot start the local AWS emulator (run `bash tests/emulator/setup.sh`)")?;
        // Simulated time runs faster than Route 53 propagation could be modelled: changes
        // report INSYNC at the first GetChange, so the ledger's INSYNC times are those of
        // the invocation that made the change.
        world.emu.set_change_pending_reads(0).await?;
        world.emu.create_bucket(BACKUPS).await?;
        let west = aws_sdk_s3::types::CreateBucketConfiguration::builder()
            .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::UsWest2)
            .build();
        world
            .emu
            .s3()
            .await
            .create_bucket()
            .bucket(REPLICA)
            .create_bucket_configuration(west)
            .send()
            .await
            .context("CreateBucket replica")?;
        let secs = |d: &str| parse_duration(d).map(|ms| (ms / 1000).to_string());
        let (hyst, cool, rpo) = (secs(&s.settings.hysteresis)?, secs(&s.settings.cooldown)?, secs(&s.settings.rpo)?);
        let failback = s.settings.failback.as_str();
        let status = format!("s3://{STATE_BUCKET}/{STATUS_PREFIX}");
        // The stepped return: the function's defaults unless the scenario sets them.
        let bake = s.settings.return_bake.as_deref().map(secs).transpose()?;
        let mut env: Vec<(&str, &str)> = vec![
            ("KBHA_HYSTERESIS_SECONDS", &hyst),
            ("KBHA_COOLDOWN_SECONDS", &cool),
            ("KBHA_RPO_SECONDS", &rpo),
            ("KBHA_REPLICATION_STATUS", &status),
            ("KBHA_FAILBACK", failback),
        ];
        if let Some(steps) = &s.settings.return_steps {
            env.push(("KBHA_RETURN_STEPS", steps));
        }
        if let Some(bake) = &bake {
            env.push(("KBHA_RETURN_BAKE_SECONDS", bake));
        }
        let failover = world.function(&env, Policies::single(builtin::<Failover>()?)).await?;
        let sources = json!([{"name": "chromadb", "bucket": BACKUPS, "prefix": "chromadb/", "region": "us-east-1",
                              "copy": {"bucket": REPLICA, "region": "us-west-2"}}]);
        let env = BTreeMap::from([
            ("KBHA_BACKUP_SOURCES".to_owned(), sources.to_string()),
            ("KBHA_STATE_BUCKET".to_owned(), STATE_BUCKET.to_owned()),
            ("KBHA_STATUS_PREFIX".to_owned(), STATUS_PREFIX.to_owned()),
            ("KBHA_NOTIFY_TOPIC_ARN".to_owned(), world.notices.topic_arn.clone()),
            ("KBHA_RPO_SECONDS".to_owned(), rpo.clone()),
        ]);
        let cfg = VerifierConfig::from_lookup(|k| env.get(k).cloned())?;
        let conf = world.emu.sdk_config().await;
        let verifier = VerifierFunction::new(
            cfg,
            S3Store::from_conf(&conf),
            SnsNotifier::from_conf(&conf),
            kbha_policy_lifecycle::Policies::single(builtin::<Replication>()?),
        )
        .with_region_store("us-west-2", S3Store::from_conf_in_region(&conf, "us-west-2"));
        // Every kbha notice goes through the real alert router to severity topics.
        world.emu.create_bucket(ALERT_BUCKET).await?;
        let mut severities = BTreeMap::new();
        for name in ["critical", "warning", "info"] {
            severities.insert(name.to_owned(), world.emu.create_topic_with_queue(&format!("kbha-{name}")).await?);
        }
        let destinations: BTreeMap<&str, &str> = severities.iter().map(|(k, t)| (k.as_str(), t.topic_arn.as_str())).collect();
        let renv = BTreeMap::from([
            ("KBHA_DESTINATIONS".to_owned(), serde_json::to_string(&destinations)?),
            ("KBHA_STATE_BUCKET".to_owned(), ALERT_BUCKET.to_owned()),
        ]);
        let router = AlertRouter::new(
            RouterConfig::from_lookup(|k| renv.get(k).cloned())?,
            S3Store::from_conf(&conf),
            SnsNotifier::from_conf(&conf),
            kbha_policy_lifecycle::Policies::single(builtin::<Alerting>()?),
        );
        // Simulated time starts at the wall clock (whole minute): S3 stamps LastModified
        // with the real time, which the verifier's dead-man check reads.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
        let base = i64::try_from(now)? / 60_000 * 60_000;
        // The mapped alarms, in CloudWatch where the failover function reads them, OK
        // since the start.
        for (_, alarm, region) in ALARMS {
            world.emu.put_alarm(region, alarm).await?;
            world.emu.set_alarm_state_at(region, alarm, "OK", "drill start", base).await?;
        }
        let both = |v: bool| BTreeMap::from([("primary".to_owned(), v), ("secondary".to_owned(), v)]);
        println!(
            "  provisioned: zone {} record {} (primary us-east-1, secondary us-west-2), health checks, alarms {PRIMARY_ALARM} (us-east-1) {SECONDARY_ALARM} (us-west-2), topic, buckets {BACKUPS} {REPLICA} {STATE_BUCKET}",
            world.fx.zone_id, world.fx.record_name
        );
        Ok(Drill {
            world,
            failover,
            verifier,
            router,
            severities,
            alerts: 0,
            base,
            health: both(true),
            alarms: both(false),
            notices: 0,
            backups: 0,
        })
    }

    async fn step(&mut self, i: usize, step: &Step) -> Result<Row> {
        let at = parse_duration(&step.at)?;
        let now = self.base + at;
        let id = format!("drill-{}", i + 1);
        let mut notice_ids = 0usize;
        let mut backup = None;
        let mut restore = None;
        let mut decided_at = None;
        let (mut plan, mut note) = (None, None);
        let (what, outcome) = if let Some(a) = &step.alarm {
            let (_, alarm, region) =
                ALARMS.into_iter().find(|(t, _, _)| *t == a.target).with_context(|| format!("no alarm for target {}", a.target))?;
            let shape = match a.shape.as_str() {
                "sns" => Shape::Sns,
                "eventbridge" => Shape::EventBridge,
                "alarm-action" => Shape::AlarmAction,
                other => bail!("alarm shape {other:?}; expected sns, eventbridge or alarm-action"),
            };
            let state = a.state.to_ascii_uppercase();
            self.alarms.insert(a.target.clone(), state == "ALARM");
            // CloudWatch first: the handler reads the alarm's current state from there.
            let reason = format!("kbha drill step {} at {}", i + 1, step.at);
            self.world.emu.set_alarm_state_at(region, alarm, &state, &reason, now).await?;
            if a.lost {
                (format!("alarm {} {state} (lost: CloudWatch only)", a.target), "-".to_owned())
            } else {
                let recs =
                    self.failover.handle(&alarm_event(shape, alarm, region, &state, now, &id)?, Invocation::at(now + DELIVERY_MS)).await?;
                notice_ids += recs.iter().filter(|r| r.notice_id.is_some()).count();
                decided_at = Some(at + DELIVERY_MS);
                (plan, note) = plan_of(&recs);
                (format!("alarm {} {state} ({})", a.target, a.shape), actions(recs.iter().map(|r| r.action)))
            }
        } else if let Some(h) = &step.health {
            self.world.set_health(&h.target, h.healthy).await?;
            self.health.insert(h.target.clone(), h.healthy);
            (format!("health check {} {}", h.target, if h.healthy { "healthy" } else { "FAILING" }), "-".to_owned())
        } else if let Some(b) = &step.backup {
            self.backups += 1;
            let uploaded = self.land_backup(b.kind, now - parse_duration(&b.age)?, b.copy).await?;
            let recs = self.verifier.handle(&s3_event(S3Shape::Direct, &[&uploaded]), Invocation::at(now)).await?;
            notice_ids += recs.iter().filter(|r| r.notice_id.is_some()).count();
            let verdict = recs.iter().filter_map(|r| r.verdict).map(|v| format!("{v:?}")).collect::<Vec<_>>().join(",");
            backup = Some((b.kind, verdict.clone()));
            (format!("backup lands ({:?}, age {})", b.kind, b.age).to_lowercase(), verdict)
        } else if step.tick {
            let recs = self.failover.handle(&tick(now, &id)?, Invocation::at(now)).await?;
            notice_ids += recs.iter().filter(|r| r.notice_id.is_some()).count();
            decided_at = Some(at);
            (plan, note) = plan_of(&recs);
            ("failover re-evaluation (schedule)".to_owned(), actions(recs.iter().map(|r| r.action)))
        } else if let Some(o) = &step.ops {
            let (what, command) = self.command(o)?;
            // The plan an abort ends, for the step's plan note.
            let before = if matches!(command, Command::Abort { .. }) { self.failover.status(now).await?.plan } else { None };
            match self.failover.operate(OPERATOR, &command, now).await {
                Ok(rec) => {
                    notice_ids += usize::from(rec.notice_id.is_some());
                    decided_at = Some(at);
                    plan = match command {
                        Command::Abort { .. } => before.map(|p| PlanNote::new(&p, p.step, Some(PlanOutcome::Aborted), rec.detail.clone())),
                        _ => self.failover.status(now).await?.plan.map(|p| PlanNote::new(&p, p.step, None, rec.detail.clone())),
                    };
                    note = Some(match &command {
                        Command::Switchover { steps, .. } => {
                            format!("{} (bake {} per step)", rec.detail, steps.first().map_or_else(|| "0s".into(), |s| duration(s.bake_ms)))
                        }
                        _ => rec.detail.clone(),
                    });
                    (what, if rec.change_id.is_some() { "Applied" } else { "NoChange" }.to_owned())
                }
                Err(e) => {
                    note = Some(format!("rejected: {e}"));
                    (what, "Rejected".to_owned())
                }
            }
        } else if step.dead_man {
            let recs = self.verifier.handle(&schedule(now, &id), Invocation::at(now)).await?;
            notice_ids += recs.iter().filter(|r| r.notice_id.is_some()).count();
            let verdict = recs.iter().filter_map(|r| r.verdict).map(|v| format!("{v:?}")).collect::<Vec<_>>().join(",");
            ("verifier dead-man check (schedule)".to_owned(), verdict)
        } else if step.restore_test {
            let recs = self.verifier.handle(&restore_test(&id, None), Invocation::at(now)).await?;
            notice_ids += recs.iter().filter(|r| r.notice_id.is_some()).count();
            let tests: Vec<_> = recs.iter().filter_map(|r| r.restore_test.as_ref()).collect();
            let outcome = tests.iter().map(|t| format!("{} in {} ms", t.verdict.as_str(), t.duration_ms)).collect::<Vec<_>>().join(",");
            // The slowest source bounds the restore.
            restore = tests.iter().max_by_key(|t| t.duration_ms).map(|t| (t.verdict.as_str().to_owned(), t.duration_ms));
            ("verifier restore test of the newest backup".to_owned(), if outcome.is_empty() { "skipped".into() } else { outcome })
        } else {
            ("check".to_owned(), "-".to_owned())
        };
        // Deliveries are read back from the queue subscribed to the topic: wait for as many
        // as the handlers published; extra ones already queued come in the same batch.
        let wait = std::time::Duration::from_secs(if notice_ids > 0 { 5 } else { 0 });
        let delivered = self.world.emu.drain_messages(&self.world.notices, notice_ids, wait).await?;
        self.notices += delivered.len();
        let alerts = self.route(&delivered, &id, now + DELIVERY_MS).await?;
        self.alerts += alerts.len();
        let weights = self.world.weights().await?;
        let newest_verified_ms = self.newest_verified("us-west-2").await?;
        let mut row = Row {
            at,
            what,
            decided_at,
            outcome,
            weights,
            health: self.health.clone(),
            alarms: self.alarms.clone(),
            new_notices: delivered.len(),
            alerts,
            newest_verified_ms,
            backup,
            restore,
            plan,
            note,
            failures: Vec::new(),
        };
        if let Some(e) = &step.expect {
            row.failures = check(e, &row, self.notices, self.alerts);
        }
        Ok(row)
    }

    /// The command an `ops` step runs, and the step as the table shows it.
    fn command(&self, o: &OpsStep) -> Result<(String, Command)> {
        let reason = o.reason.clone();
        Ok(match o.command.as_str() {
            "switchover" => {
                let to = o.to.clone().context("switchover needs `to`")?;
                let cfg = self.failover.config();
                let bake_ms = match &o.bake {
                    Some(b) => u64::try_from(parse_duration(b)?).unwrap_or_default(),
                    None => cfg.return_bake_s.saturating_mul(1000),
                };
                let text = o.steps.clone().unwrap_or_else(|| cfg.return_steps.clone());
                let steps = kbha_core::plan::parse_steps(&text, bake_ms).map_err(anyhow::Error::msg).context("switchover steps")?;
                let what = format!("ops switchover --to {to}");
                (what, Command::Switchover { to, steps, reason: reason.unwrap_or_else(|| "planned switchover (drill)".into()) })
            }
            "abort" => {
                ("ops abort".to_owned(), Command::Abort { reason: reason.unwrap_or_else(|| "aborted by an operator (drill)".into()) })
            }
            other => bail!("ops command {other:?}; expected switchover or abort"),
        })
    }

    /// Hands each notice to the alert router as SNS delivers it to the Lambda and reads
    /// back what reached the severity topics.
    async fn route(&self, notices: &[kbha_test_harness::SnsEnvelope], id: &str, now: i64) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (k, n) in notices.iter().enumerate() {
            let mut ev = fixture("kbha-notice-sns.json")?;
            let sns = &mut ev["Records"][0]["Sns"];
            sns["Message"] = json!(n.message);
            sns["Subject"] = json!(n.subject);
            sns["MessageId"] = json!(format!("{id}-notice-{k}"));
            sns["TopicArn"] = json!(self.world.notices.topic_arn);
            let attrs: serde_json::Map<String, serde_json::Value> =
                n.attributes.iter().map(|(k, v)| (k.clone(), json!({"Type": "String", "Value": v}))).collect();
            sns["MessageAttributes"] = serde_json::Value::Object(attrs);
            let recs = self.router.handle(&ev, Invocation::at(now)).await?;
            for d in recs.iter().flat_map(|r| &r.deliveries) {
                let tq = self.severities.get(&d.destination).with_context(|| format!("unknown destination {}", d.destination))?;
                for m in self.world.emu.drain_messages(tq, 1, std::time::Duration::from_secs(5)).await? {
                    out.push((d.destination.clone(), m.subject.unwrap_or_default()));
                }
            }
        }
        Ok(out)
    }

    /// Uploads a backup archive and its manifest (and the cross-region copy).
    async fn land_backup(&self, kind: BackupKind, created_ms: i64, copy: bool) -> Result<Uploaded> {
        let n = self.backups;
        let key = format!("chromadb/{}-{n:03}.tar.gz", kbha_core::time::format_timestamp(created_ms).replace(':', ""));
        // A real SQLite database, so the restore test opens what it would in production.
        let db = chroma_db(n, created_ms)?;
        let files: [(&str, &[u8]); 2] = [("chroma.sqlite3", &db), ("index/segment-0.bin", b"segment")];
        let mut archive = tar_gz(&files)?;
        let manifest = manifest_for(&files, &archive, created_ms);
        if kind == BackupKind::Corrupt {
            // Damaged after the manifest was written: the digest no longer matches.
            let mid = archive.len() / 2;
            archive.truncate(mid);
        }
        let emu = &self.world.emu;
        emu.put_bytes(BACKUPS, &format!("{key}.manifest.json"), manifest.to_string().into_bytes()).await?;
        emu.put_bytes(BACKUPS, &key, archive.clone()).await?;
        if copy {
            emu.put_bytes(REPLICA, &key, archive).await?;
        }
        let h = emu.s3().await.head_object().bucket(BACKUPS).key(&key).send().await.context("HeadObject backup")?;
        Ok(Uploaded {
            bucket: BACKUPS.to_owned(),
            key,
            size: u64::try_from(h.content_length().unwrap_or_default()).unwrap_or_default(),
            etag: h.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
            last_modified_ms: h.last_modified().map(|t| t.to_millis().unwrap_or_default()).unwrap_or_default(),
        })
    }

    /// The verifier's status of `region`, read back through S3 GetObject.
    async fn newest_verified(&self, region: &str) -> Result<Option<i64>> {
        let key = format!("{STATUS_PREFIX}{region}.json");
        match self.world.emu.s3().await.get_object().bucket(STATE_BUCKET).key(&key).send().await {
            Ok(out) => {
                let bytes = out.body.collect().await?.into_bytes();
                let status: kbha_core::ReplicationStatus = serde_json::from_slice(&bytes).context("status object")?;
                Ok(Some(status.newest_verified_backup_at_ms))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(e).context("GetObject status"),
        }
    }
}

/// The plan note of the last record that carries one, and its reason.
fn plan_of(recs: &[DecisionRecord]) -> (Option<PlanNote>, Option<String>) {
    let plan = recs.iter().rev().find_map(|r| r.plan.clone());
    let note = plan.as_ref().map(|p| p.reason.clone());
    (plan, note)
}

/// `completed`, `rolled_back`, ...: how `kbha` and the scenarios spell a plan outcome.
fn outcome_name(o: PlanOutcome) -> String {
    serde_json::to_value(o).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| format!("{o:?}"))
}

/// `5m`, `1m30s`, `45s`, as the scenarios write durations.
fn duration(ms: u64) -> String {
    let (m, s) = (ms / 60_000, (ms / 1000) % 60);
    match (m, s) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

fn actions(a: impl Iterator<Item = ActionTaken>) -> String {
    a.map(|a| format!("{a:?}")).collect::<Vec<_>>().join(",")
}

fn fmt_weights(w: &BTreeMap<String, u32>) -> String {
    let parts: Vec<String> = w.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Expected-vs-got lines for every expectation that does not hold.
fn check(e: &Expect, row: &Row, notices: usize, alerts: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |field: &str, expected: String, got: String| {
        out.push(format!(
            "      expectation failed at {} ({}): {field}\n        - expected {expected}\n        + got      {got}",
            offset(row.at),
            row.what
        ));
    };
    if let Some(w) = &e.weights
        && w.iter().any(|(k, v)| row.weights.get(k) != Some(v))
    {
        diff("weights", fmt_weights(w), fmt_weights(&row.weights));
    }
    // A failover handler call, or an operator command (also when it was rejected).
    let is_action = row.decided_at.is_some() || row.what.starts_with("ops ");
    if let Some(a) = &e.action
        && (!is_action || !row.outcome.eq_ignore_ascii_case(a))
    {
        diff("action", a.clone(), if is_action { row.outcome.clone() } else { "(no failover handler call)".into() });
    }
    let is_verdict = row.backup.is_some() || row.what.starts_with("verifier");
    if let Some(v) = &e.verdict
        && (!is_verdict || !row.outcome.eq_ignore_ascii_case(v))
    {
        diff("verdict", v.clone(), if is_verdict { row.outcome.clone() } else { "(no verifier call)".into() });
    }
    if let Some(n) = e.notices
        && n != notices
    {
        diff("notices delivered so far", n.to_string(), notices.to_string());
    }
    if let Some(n) = e.alerts
        && n != alerts
    {
        diff("alerts delivered by the router so far", n.to_string(), alerts.to_string());
    }
    let no_plan = || "(no plan note at this step)".to_owned();
    if let Some(k) = e.plan_step {
        match &row.plan {
            Some(p) if p.step == k => {}
            Some(p) => diff("plan step", format!("step {k}"), format!("step {} of {} ({})", p.step, p.of, p.reason)),
            None => diff("plan step", format!("step {k}"), no_plan()),
        }
    }
    if let Some(want) = &e.plan_outcome {
        let got = row.plan.as_ref().map(|p| p.outcome.map_or_else(|| format!("under way, step {} of {}", p.step, p.of), outcome_name));
        if got.as_deref() != Some(want.as_str()) {
            diff("plan outcome", want.clone(), got.unwrap_or_else(no_plan));
        }
    }
    out
}

/// Expected-vs-got lines for every expectation over the whole drill that does not hold.
fn check_drill(e: &DrillExpect, b: &report::Both, ledger: Option<&Report>) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |field: &str, expected: String, got: String| {
        out.push(format!("      expectation failed over the drill: {field}\n        - expected {expected}\n        + got      {got}"));
    };
    let incidents = ledger.map(|l| l.incidents.as_slice()).unwrap_or_default();
    if let Some(n) = e.incidents
        && n != incidents.len()
    {
        diff("incidents in the ledger", n.to_string(), incidents.len().to_string());
    }
    let planned = ledger.map(|l| l.planned.len()).unwrap_or_default();
    if let Some(n) = e.planned
        && n != planned
    {
        diff("planned events in the ledger", n.to_string(), planned.to_string());
    }
    if let Some(max) = &e.max_rto {
        let bound = parse_duration(max).unwrap_or_default();
        for i in incidents {
            match i.figures.rto_ms {
                Some(rto) if rto <= bound => {}
                got => diff(
                    &format!("RTO of {}", i.incident.id),
                    format!("at most {max}"),
                    got.map_or("not restored".into(), |v| format!("{} s", v / 1000)),
                ),
            }
        }
    }
    if e.all_insync == Some(true) {
        for i in incidents {
            for c in i.incident.changes.iter().filter(|c| c.insync_at_ms.is_none()) {
                diff(&format!("INSYNC of change {:?} in {}", c.change_id, i.incident.id), "recorded".into(), "none".into());
            }
        }
    }
    if e.all_closed == Some(true) {
        for i in incidents.iter().filter(|i| i.incident.closed_at_ms.is_none()) {
            diff(&format!("incident {}", i.incident.id), "closed".into(), "open".into());
        }
    }
    if let (Some(max), Some(bound)) = (&e.max_unhealthy_traffic, b.bound_s) {
        let got = b.kbha.unhealthy_traffic_s;
        if got > bound {
            out.push(format!(
                "      expectation failed over the drill: traffic-seconds served by an unhealthy region\n        - expected at most {bound:.0} (max_unhealthy_traffic = {max:?})\n        + got      {got:.1}"
            ));
        }
    }
    out
}

/// A small ChromaDB-shaped SQLite database (a `collections` table and some rows), as bytes.
fn chroma_db(n: usize, created_ms: i64) -> Result<Vec<u8>> {
    let path = std::env::temp_dir().join(format!("kbha-drill-{}-{n}.sqlite3", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let db = rusqlite::Connection::open(&path)?;
    db.execute_batch("CREATE TABLE collections (id TEXT PRIMARY KEY, name TEXT NOT NULL); INSERT INTO collections VALUES ('c1', 'docs');")?;
    db.execute("CREATE TABLE snapshot (n INTEGER, taken_at INTEGER)", ())?;
    db.execute("INSERT INTO snapshot VALUES (?1, ?2)", (i64::try_from(n).unwrap_or_default(), created_ms))?;
    db.close().map_err(|(_, e)| e)?;
    let bytes = std::fs::read(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(bytes)
}
