//! `xtask`: the repository's developer tasks, next to (not inside) the `kbha` command line:
//!
//! ```text
//! cargo xtask policies                      # built-in guests -> target/policies/<name>.{wasm,cwasm}
//! cargo xtask drill samples/drills/region-failure.toml   # a scenario; report in target/drill/<name>/
//! cargo xtask drill --all samples/drills    # every scenario
//! cargo xtask demo                          # region-failure drill against the local emulator
//! cargo xtask bench --quick                 # ratios against same-run baselines (CI mode)
//! ```
//!
//! The drills and the demo run the real handlers against the local AWS emulator
//! (`tests/emulator`, through kbha-integration and kbha-test-harness); none of this ships in
//! the installed `kbha`.

mod bench;
mod demo;
mod drill;
mod policies;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// The repository root (this crate lives in `xtask/`).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// kbha's developer tasks: built-in guests, drills, demo, benchmarks.
#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The tasks.
#[derive(Debug, Subcommand)]
enum Command {
    /// Build the built-in guests (`policies/*`, the business-hours sample) to components
    /// and precompiled artifacts in target/policies.
    Policies(policies::PoliciesArgs),
    /// Run a drill scenario (`samples/drills/*.toml`) against a local AWS emulator in
    /// simulated time; writes `target/drill/<name>/report.html`.
    Drill(drill::DrillArgs),
    /// The region-failure drill end to end against a local AWS emulator (simulated time).
    Demo,
    /// Benchmarks: one table of ratios against baselines measured in the same run.
    Bench(bench::BenchArgs),
    /// The `kbha` command line itself (the same code as the binary), for tests that drive
    /// both: `xtask kbha policy backtest ...`.
    #[command(hide = true)]
    Kbha {
        /// kbha's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policies(args) => policies::run(&args),
        Command::Drill(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(drill::run(&args))),
        Command::Demo => kbha::block_on(demo::run()),
        Command::Bench(args) => bench::run(&args),
        Command::Kbha { args } => return kbha::cli::main_with(std::iter::once("kbha".into()).chain(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
