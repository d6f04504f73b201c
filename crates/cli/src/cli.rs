//! The `kbha` command line: its arguments and their dispatch (`src/main.rs` calls it).

use crate::{block_on, ops, policy, replay, report, restore_test, slo};
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

/// Runs the command line on `args` (the first is the program name), as the `kbha` binary
/// does; also `cargo xtask kbha ...`, so tests of xtask run the same code on its output.
pub fn main_with<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Policy(cmd) => policy::run(cmd),
        Command::Replay(ReplayCommand::Failover(args)) => block_on(replay::failover(&args)),
        Command::Replay(ReplayCommand::Replication(args)) => block_on(replay::replication(&args)),
        Command::Replay(ReplayCommand::Alerting(args)) => block_on(replay::alerting(&args)),
        Command::Ops(args) => block_on(ops::run(&args)),
        Command::Report(args) => block_on(report::run(&args)),
        Command::Slo(cmd) => slo::run(&cmd),
        Command::RestoreTest(args) => block_on(restore_test::run(&args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
