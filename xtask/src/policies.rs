//! `cargo xtask policies [--only <name>]... [--out <dir>]`: builds the repository's
//! built-in guests (`kbha_policy_host::guests::GUESTS`: `policies/*` and the business-hours
//! sample) into `target/policies/<name>.{wasm,cwasm}` (`$CARGO_TARGET_DIR/policies`), where
//! kbha-policy-lifecycle embeds them from and the tests load them. Same toolchain handling as
//! `kbha policy build` ([`kbha::guest`]: rustup's wasm32 target, or Debian's rustc-web with
//! build-std); compiled code is shared in `target/wasm`.
//!
//! The three built-in defaults are also precompiled for each Lambda architecture
//! (`<name>.<arch>.cwasm`, [`ARCHES`]): kbha-policy-lifecycle embeds the one of the target it
//! is built for, so a cold start in a fresh execution environment (an empty `/tmp`, no
//! cached artifact) loads compiled code instead of compiling the component (~65 ms here).

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
    let names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
    guest::build(jobs, &crate::repo_root(), &target.join("wasm"), &out)?;
    for name in names.iter().filter(|n| BUILTINS.contains(&n.as_str())) {
        precompile_for_arches(&out, name)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The built-in defaults the Lambda binaries embed.
const BUILTINS: [&str; 3] = ["failover-default", "replication-default", "alert-default"];

/// Lambda's architectures: `CARGO_CFG_TARGET_ARCH` and the target triple to compile for.
pub const ARCHES: [(&str, &str); 2] = [("x86_64", "x86_64-unknown-linux-gnu"), ("aarch64", "aarch64-unknown-linux-gnu")];

/// Writes `<out>/<name>.<arch>.cwasm` for each of [`ARCHES`], with the default limits' engine
/// configuration (what the functions run with unless `KBHA_POLICY_WASI` is on).
fn precompile_for_arches(out: &std::path::Path, name: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let wasm = out.join(format!("{name}.wasm"));
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading `{}`", wasm.display()))?;
    let engine = kbha_policy_host::PolicyEngine::new(kbha_policy_host::Limits::default())?;
    for (arch, triple) in ARCHES {
        let artifact = engine.precompile_for_target(&bytes, triple).with_context(|| format!("precompiling `{name}` for {triple}"))?;
        let path = out.join(format!("{name}.{arch}.cwasm"));
        std::fs::write(&path, &artifact).with_context(|| format!("writing `{}`", path.display()))?;
        println!("{} ({} bytes, for {triple})", path.display(), artifact.len());
    }
    Ok(())
}
