//! `kbha policy ...`: build, check and evaluate policy components.

mod build;
mod check;
mod eval;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// `kbha policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Build every guest crate to a component (`.wasm`) and a precompiled
    /// artifact for this host (`.cwasm`).
    Build {
        /// Output directory [default: $CARGO_TARGET_DIR/policies or target/policies].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Build only these guests (artifact names); default: all.
        #[arg(long = "only")]
        only: Vec<String>,
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
}

/// Runs one `kbha policy` subcommand.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Build { out, only } => build::run(out, &only),
        PolicyCommand::Check { component } => check::run(&component),
        PolicyCommand::Eval {
            component,
            input,
            world,
            verbose,
        } => eval::run(&component, &input, world.as_deref(), verbose),
        PolicyCommand::Test { component, cases } => test::run(&component, &cases),
    }
}

/// The workspace root: the CLI lives at `functions/cli`.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(PathBuf::from)
        .unwrap_or(manifest)
}

/// `$CARGO_TARGET_DIR`, or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// `sha256:<hex>` of a file's bytes.
pub fn sha256(bytes: &[u8]) -> String {
    kbha_policy_host::digest(bytes)
}
