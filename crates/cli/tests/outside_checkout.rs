//! The installed `kbha` works outside a kbha checkout: run from a fresh directory, `policy
//! new` writes a crate that needs nothing of the checkout (the SDK and the WIT files come
//! vendored from the binary), and the command line carries none of the repository's
//! developer tasks (those are `cargo xtask ...`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};

/// A fresh directory outside the checkout.
fn fresh_dir(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kbha-outside-{tag}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    ensure!(!dir.starts_with(kbha_test_harness::repo_root()), "the temp dir {} is inside the checkout", dir.display());
    Ok(dir)
}

/// Runs kbha in `cwd`, with nothing of cargo's environment that could lead it back.
fn kbha(cwd: &Path, args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_kbha"))
        .args(args)
        .current_dir(cwd)
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .context("run kbha")
}

#[test]
fn policy_new_outside_a_checkout_vendors_the_sdk_and_wit() -> Result<()> {
    let dir = fresh_dir("new")?;
    let out = kbha(&dir, &["policy", "new", "my-policy", "--world", "failover"])?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "policy new failed:\n{text}");
    let krate = dir.join("my-policy");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml"))?;
    let root = kbha_test_harness::repo_root();
    let root = root.to_str().context("utf-8 checkout path")?;
    ensure!(!manifest.contains(root), "Cargo.toml names the checkout {root}:\n{manifest}");
    ensure!(!manifest.contains(".."), "Cargo.toml climbs out of the crate:\n{manifest}");
    ensure!(manifest.contains(r#"path = "vendor/policies/sdk""#), "{manifest}");
    for f in [
        "Cargo.lock",
        "src/lib.rs",
        "tests/golden.rs",
        "cases/healthy-primary-holds/expected.json",
        "vendor/wit/kbha.wit",
        "vendor/policies/sdk/Cargo.toml",
        "vendor/policies/sdk/src/lib.rs",
        "vendor/crates/core/Cargo.toml",
        "vendor/crates/core/src/lib.rs",
    ] {
        ensure!(krate.join(f).is_file(), "{f} not written");
    }
    // The vendored copy is the checkout's, and stands alone.
    let wit = std::fs::read_to_string(krate.join("vendor/wit/kbha.wit"))?;
    ensure!(wit == std::fs::read_to_string(Path::new(root).join("wit/kbha.wit"))?, "vendor/wit/kbha.wit differs from wit/kbha.wit");
    for m in ["vendor/policies/sdk/Cargo.toml", "vendor/crates/core/Cargo.toml"] {
        let text = std::fs::read_to_string(krate.join(m))?;
        ensure!(!text.contains("workspace") && !text.contains(root), "{m} leans on the kbha workspace:\n{text}");
    }
    // Cargo reads the crate and its vendored dependencies (no build, no network). Filtered to
    // the guest's target: unfiltered, cargo metadata downloads every platform's dependencies
    // (the SDK's allocator lists Windows ones), which a fresh machine has never fetched.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let meta = Command::new(cargo)
        .args(["metadata", "--offline", "--format-version", "1", "--filter-platform", "wasm32-unknown-unknown"])
        .current_dir(&krate)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .context("run cargo metadata")?;
    ensure!(meta.status.success(), "cargo metadata on the new crate failed:\n{}", String::from_utf8_lossy(&meta.stderr));
    let meta = String::from_utf8_lossy(&meta.stdout);
    ensure!(!meta.contains(&format!("{root}/policies/sdk")), "the crate resolves the checkout's SDK");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn the_command_line_has_no_developer_tasks() -> Result<()> {
    let dir = fresh_dir("help")?;
    let out = kbha(&dir, &["--help"])?;
    ensure!(out.status.success(), "kbha --help failed");
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help.lines().filter_map(|l| l.strip_prefix("  ")).filter_map(|l| l.split_whitespace().next()).collect();
    for c in ["policy", "replay", "ops", "report", "slo", "restore-test"] {
        ensure!(commands.contains(&c), "`{c}` missing from kbha --help:\n{help}");
    }
    for c in ["drill", "bench", "demo"] {
        ensure!(!commands.contains(&c), "`{c}` is a developer task (cargo xtask), yet kbha --help lists it:\n{help}");
    }
    let out = kbha(&dir, &["policy", "build", "--help"])?;
    let help = String::from_utf8_lossy(&out.stdout);
    ensure!(help.contains("--crate") && !help.contains("--only"), "{help}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
