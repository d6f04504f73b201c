//! `kbha`: the command line for kbha policies.
//!
//! Run it through the cargo alias from the workspace root:
//!
//! ```text
//! cargo kbha policy build                      # every guest -> target/policies/<name>.{wasm,cwasm}
//! cargo kbha policy check target/policies/failover-default.wasm
//! cargo kbha policy eval target/policies/failover-default.wasm --input case.json
//! cargo kbha replay failover --event samples/events/cloudwatch-alarm-sns.json   # KBHA_* + AWS_ENDPOINT_URL
//! cargo kbha replay replication --event samples/events/s3-object-created.json
//! cargo kbha replay alerting --event samples/events/kbha-notice-sns.json
//! cargo kbha bench --quick                    # ratios against same-run baselines (CI mode)
//! cargo kbha demo                              # region-failure drill against the local emulator
//! cargo kbha drill samples/drills/region-failure.toml   # a scenario; report in target/drill/<name>/
//! cargo kbha drill --all samples/drills        # every scenario
//! cargo kbha ops status                        # a live deployment: KBHA_* or --config, --endpoint-url
//! cargo kbha ops pause --reason "db migration"  # also resume, shift, drain, undrain, approve-failback
//! cargo kbha report --since 30d --html report.html
//! cargo kbha slo render --spec samples/slo/knowledgebeast.toml --out target/slo/knowledgebeast.json
//! ```

mod bench;
mod demo;
mod drill;
mod ops;
mod policy;
mod replay;
mod report;
mod restore_test;
mod slo;
mod timeline;

use clap::{Parser, Subcommand};

/// kbha: high-availability automation with WebAssembly policies.
#[derive(Debug, Parser)]
#[command(name = "kbha", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Command groups; each lives in its own module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Build, check and evaluate policy components.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run a function's handler once on a recorded event, with the function's `KBHA_*`
    /// configuration, against `AWS_ENDPOINT_URL` (an emulator) or AWS.
    #[command(subcommand)]
    Replay(ReplayCommand),
    /// The region-failure drill end to end against a local AWS emulator (simulated time).
    Demo,
    /// Benchmarks: one table of ratios against baselines measured in the same run.
    Bench(bench::BenchArgs),
    /// Run a drill scenario (`samples/drills/*.toml`) against a local AWS emulator in
    /// simulated time; writes `target/drill/<name>/report.html`.
    Drill(drill::DrillArgs),
    /// Look at and steer a live deployment: status, pause/resume, shift, drain/undrain,
    /// approve-failback, close-incident (the failover function's `KBHA_*` configuration).
    Ops(ops::OpsArgs),
    /// Whether the promises held: availability and error budget, and per incident the time
    /// to detect, evacuate, INSYNC, the achieved RPO and the RTO, from the incident ledger.
    Report(report::ReportArgs),
    /// SLO alerting: render a spec's multi-window, multi-burn-rate alarms as a
    /// CloudFormation template (docs/slo.md).
    #[command(subcommand)]
    Slo(slo::SloCommand),
    /// Restore-test backups: each source's newest verified backup through the replication
    /// verifier (its `KBHA_*` configuration), or a local backup file with `--file`.
    RestoreTest(restore_test::RestoreTestArgs),
}

/// Functions `kbha replay` can run.
#[derive(Debug, Subcommand)]
enum ReplayCommand {
    /// The failover function.
    Failover(replay::ReplayArgs),
    /// The replication verifier.
    Replication(replay::ReplayArgs),
    /// The alert router.
    Alerting(replay::ReplayArgs),
}

/// Runs an async command on a runtime made for it (only these commands need one).
fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(fut).map(|()| std::process::ExitCode::SUCCESS)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => policy::run(cmd),
        Command::Replay(ReplayCommand::Failover(args)) => block_on(replay::failover(&args)),
        Command::Replay(ReplayCommand::Replication(args)) => block_on(replay::replication(&args)),
        Command::Replay(ReplayCommand::Alerting(args)) => block_on(replay::alerting(&args)),
        Command::Demo => block_on(demo::run()),
        Command::Bench(args) => bench::run(&args),
        Command::Ops(args) => block_on(ops::run(&args)),
        Command::Report(args) => block_on(report::run(&args)),
        Command::Slo(cmd) => slo::run(&cmd),
        Command::RestoreTest(args) => block_on(restore_test::run(&args)),
        Command::Drill(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(drill::run(&args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
