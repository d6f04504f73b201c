//! `kbha`: the command line for kbha policies.
//!
//! Run it through the cargo alias from the workspace root:
//!
//! ```text
//! cargo kbha policy build                      # every guest -> target/policies/<name>.{wasm,cwasm}
//! cargo kbha policy check target/policies/failover-default.wasm
//! cargo kbha policy eval target/policies/failover-default.wasm --input case.json
//! ```

mod policy;

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
    // `Replay(replay::ReplayCommand)` goes here (decision-record replay).
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => policy::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
