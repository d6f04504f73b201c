//! `kbha policy build [--crate <dir>]... [--out <dir>]`: a policy crate (default: the one in
//! the current directory) -> component (`.wasm`) -> precompiled artifact for this host
//! (`.cwasm`), with [`crate::guest`] (rustup's wasm32 target, or Debian's rustc-web with
//! build-std).
//!
//! Everything lands where cargo would put the crate's own build: its target directory as
//! `cargo metadata` reports it (`$CARGO_TARGET_DIR`, else the `target/` of the crate's
//! workspace), compiled code under `<target>/wasm`, the artifacts in `<target>/policies`
//! unless `--out` says otherwise. The component's path is printed.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

use crate::guest::{self, Job};

/// The target directory cargo uses for the crate of `manifest` (`cargo metadata`).
fn target_directory(manifest: &Path) -> anyhow::Result<PathBuf> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        target_directory: PathBuf,
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(manifest)
        .output()
        .with_context(|| format!("cannot run `{} metadata`", Path::new(&cargo).display()))?;
    if !out.status.success() {
        bail!("`cargo metadata` for `{}` failed: {}", manifest.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let parsed: Metadata = serde_json::from_slice(&out.stdout).context("`cargo metadata` printed no target directory")?;
    Ok(parsed.target_directory)
}

/// Runs `kbha policy build`: each crate directory of `crates` (default: `.`) in turn.
pub fn run(out: Option<PathBuf>, crates: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let dirs = if crates.is_empty() { vec![PathBuf::from(".")] } else { crates.to_vec() };
    for dir in dirs {
        let package = guest::crate_package(&dir)?;
        let Some(manifest) = package.manifest.clone() else { bail!("`{}` has no Cargo.toml", dir.display()) };
        let crate_dir = manifest.parent().map(Path::to_path_buf).unwrap_or_else(|| dir.clone());
        let target = target_directory(&manifest)?;
        let out = out.clone().unwrap_or_else(|| target.join("policies"));
        let job = Job { name: package.name.clone(), package, world: None };
        guest::build(vec![job], &crate_dir, &target.join("wasm"), &out)?;
    }
    Ok(ExitCode::SUCCESS)
}
