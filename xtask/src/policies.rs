//! `cargo xtask policies [--only <name>]... [--out <dir>]`: builds the repository's
//! built-in guests (`kbha_policy_host::guests::GUESTS`: `policies/*` and the business-hours
//! sample) into `target/policies/<name>.{wasm,cwasm}` (`$CARGO_TARGET_DIR/policies`), where
//! kbha-policy-lifecycle embeds them from and the tests load them. Same toolchain handling as
//! `kbha policy build` ([`kbha::guest`]: rustup's wasm32 target, or Debian's rustc-web with
//! build-std); compiled code is shared in `target/wasm`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use kbha::guest::{self, Job, Package};
use kbha_policy_host::guests::GUESTS;

/// `cargo xtask policies` options.
#[derive(Debug, clap::Args)]
pub struct PoliciesArgs {
    /// Output directory [default: $CARGO_TARGET_DIR/policies or target/policies].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Build only these guests (artifact names); default: all.
    #[arg(long = "only")]
    only: Vec<String>,
}

/// `$CARGO_TARGET_DIR` (relative: to the repository root), or `<repository>/target`.
pub fn target_dir() -> PathBuf {
    let root = crate::repo_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root.join(d),
        _ => root.join("target"),
    }
}

/// Builds the guests.
pub fn run(args: &PoliciesArgs) -> anyhow::Result<ExitCode> {
    for name in &args.only {
        if !GUESTS.iter().any(|g| g.name == name) {
            let known: Vec<_> = GUESTS.iter().map(|g| g.name).collect();
            bail!("unknown guest `{name}`; known: {}", known.join(", "));
        }
    }
    let jobs: Vec<Job> = GUESTS
        .iter()
        .filter(|g| args.only.is_empty() || args.only.iter().any(|n| n == g.name))
        .map(|g| Job { name: g.name.to_owned(), package: Package { name: g.package.to_owned(), manifest: None }, world: Some(g.world) })
        .collect();
    let target = target_dir();
    let out = args.out.clone().unwrap_or_else(|| target.join("policies"));
    guest::build(jobs, &crate::repo_root(), &target.join("wasm"), &out)?;
    Ok(ExitCode::SUCCESS)
}
