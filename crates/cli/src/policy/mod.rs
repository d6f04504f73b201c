//! `kbha policy ...`: build, check and evaluate policy components.

mod backtest;
mod build;
mod check;
mod diff;
mod eval;
mod new;
mod promote;
mod publish;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// The engine limits for `KBHA_POLICY_WASI`, read as the functions read it: `on` lets
/// `check`, `eval`, `test`, `diff` and `publish` load WASI-importing (Python) policies.
/// kbha-policy-lifecycle's engine gets the same limits, as `diff` and `backtest` load through it.
fn limits() -> anyhow::Result<kbha_policy_host::Limits> {
    let limits = kbha_lambda::Env::process().policy_limits()?;
    kbha_lambda::settings::configure_engine(limits.clone())?;
    Ok(limits)
}

/// `kbha policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Build a policy crate (default: the one in the current directory) to a component
    /// (`.wasm`) and a precompiled artifact for this host (`.cwasm`), under the crate's own
    /// target directory (`$CARGO_TARGET_DIR`, else its workspace's `target/`); prints their
    /// paths. (The repository's built-in guests: `cargo xtask policies`.)
    Build {
        /// Output directory [default: <target directory>/policies].
        #[arg(long)]
        out: Option<PathBuf>,
        /// The crate directory (a policy made with `kbha policy new`) [default: .];
        /// repeatable. Artifacts are named after the package: `<out>/<package>.wasm`.
        #[arg(long = "crate", value_name = "DIR")]
        crates: Vec<PathBuf>,
    },
    /// Inspect a component: world, imports, size, digest. Exits non-zero when
    /// the host would refuse it.
    Check {
        /// The `.wasm` component.
        component: PathBuf,
    },
    /// Evaluate a component on a JSON input (kbha-core format) and print the
    /// decision as JSON.
    Eval {
        /// The `.wasm` component.
        component: PathBuf,
        /// Input JSON file (`-` for stdin).
        #[arg(long)]
        input: PathBuf,
        /// World to evaluate; detected from the component when omitted.
        #[arg(long, value_parser = ["failover", "replication", "alert"])]
        world: Option<String>,
        /// Also print logs and fuel used to stderr.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Run table-driven cases (`<case>/input.json` + `<case>/expected.json`, the golden
    /// format) against a component; prints `N passed, M failed`, exits non-zero on a failure.
    Test {
        /// The `.wasm` component.
        component: PathBuf,
        /// Directory of case directories.
        cases: PathBuf,
    },
    /// Where two policies decide differently: evaluates both on every input under
    /// `--inputs` and prints each difference and `N inputs, D differ`. Exits 0 when none
    /// differ, 1 when some do, 2 on trouble (like `diff`).
    Diff {
        /// The old policy: a `.wasm` component, or `builtin`.
        old: PathBuf,
        /// The new policy: a `.wasm` component, or `builtin`.
        new: PathBuf,
        /// Inputs: golden case directories (`<case>/input.json`) and/or `*.json` files.
        #[arg(long)]
        inputs: PathBuf,
        /// World of the inputs; needed only when both policies are `builtin`.
        #[arg(long, value_parser = ["failover", "replication", "alert"])]
        world: Option<String>,
    },
    /// What a candidate would have decided on real decisions: replays the policy inputs
    /// in decision records (JSONL files or a function's CloudWatch Logs) with the candidate
    /// and prints the decisions that come out differently, grouped by `old -> new` action,
    /// with what the guardrails would have said (failover). Exits 0 when none differ, 1 when
    /// some do or the candidate faulted, 2 on trouble.
    Backtest(backtest::BacktestArgs),
    /// Check a component as a function would, upload it (and its ed25519 signature
    /// `<key>.sig` with --sign) to S3, and print the configuration that pins it.
    Publish(publish::PublishArgs),
    /// Make a published policy the live one of a deployed function: rewrites its Lambda
    /// environment (`KBHA_POLICY`, and `KBHA_POLICY_PUBLIC_KEY` with --public-key), keeping
    /// the replaced values in `KBHA_POLICY_PREVIOUS*`; prints a decision record.
    Promote(promote::PromoteArgs),
    /// Put back the policy a function ran before the last promote (`KBHA_POLICY_PREVIOUS`,
    /// and its key); a second rollback undoes the first. Prints a decision record.
    Rollback(promote::RollbackArgs),
    /// Make an ed25519 key pair for `publish --sign`: `<prefix>.key` (private, mode 0600)
    /// and `<prefix>.pub` (the `KBHA_POLICY_PUBLIC_KEY` value).
    Keygen {
        /// Path prefix of the two files.
        prefix: PathBuf,
    },
    /// Scaffold a policy crate `<dir>/<name>/`: `src/lib.rs`, README, example golden cases
    /// and their test, and the guest SDK with the WIT files (embedded in kbha) vendored
    /// under `vendor/`, so the crate builds wherever it lives.
    New {
        /// Crate name (lowercase letters, digits, `-`).
        name: String,
        /// The world it implements.
        #[arg(long, value_parser = ["failover", "replication", "alert"])]
        world: String,
        /// Parent directory [default: the current directory].
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// Runs one `kbha policy` subcommand.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Build { out, crates } => build::run(out, &crates),
        PolicyCommand::Check { component } => check::run(&component),
        PolicyCommand::Eval { component, input, world, verbose } => eval::run(&component, &input, world.as_deref(), verbose),
        PolicyCommand::Test { component, cases } => test::run(&component, &cases),
        PolicyCommand::Diff { old, new, inputs, world } => diff::run(&old, &new, &inputs, world.as_deref()),
        PolicyCommand::Backtest(args) => backtest::run(&args),
        PolicyCommand::Publish(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(publish::publish(&args)).map(|()| ExitCode::SUCCESS)
        }
        PolicyCommand::Promote(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(promote::promote(&args)).map(|()| ExitCode::SUCCESS)
        }
        PolicyCommand::Rollback(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(promote::rollback(&args)).map(|()| ExitCode::SUCCESS)
        }
        PolicyCommand::Keygen { prefix } => publish::keygen(&prefix),
        PolicyCommand::New { name, world, dir } => new::run(&name, &world, &dir),
    }
}

/// `sha256:<hex>` of a file's bytes.
pub fn sha256(bytes: &[u8]) -> String {
    kbha_policy_host::digest(bytes)
}
