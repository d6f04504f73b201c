//! The authoring commands through the `kbha` binary: `policy diff` on the business-hours
//! sample against the built-in, and `policy new` -> `policy build --crate` ->
//! `policy test` on a scaffolded crate. Needs `cargo xtask policies` (target/policies).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

/// Runs kbha from the repository root; returns (exit code, stdout, stderr).
fn kbha(args: &[&str]) -> Result<(i32, String, String)> {
    kbha_env(args, &[])
}

/// [`kbha`] with extra environment variables.
fn kbha_env(args: &[&str], env: &[(&str, &Path)]) -> Result<(i32, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_kbha"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(kbha_test_harness::repo_root())
        .output()
        .context("run kbha")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

const SAMPLE: &str = "target/policies/business-hours.wasm";
const SAMPLE_CASES: &str = "samples/policies/business-hours/cases";

#[test]
fn the_business_hours_sample_passes_its_cases() -> Result<()> {
    let (code, out, err) = kbha(&["policy", "test", SAMPLE, SAMPLE_CASES])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("11 passed, 0 failed"), "{out}");
    Ok(())
}

#[test]
fn diff_shows_the_business_hours_sample_holds_failback_only_outside_hours() -> Result<()> {
    let (code, out, err) = kbha(&["policy", "diff", "builtin", SAMPLE, "--inputs", SAMPLE_CASES])?;
    assert_eq!(code, 1, "differences exit 1: {out}{err}");
    let differing: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ') && l.contains("(differs in:")).collect();
    assert_eq!(
        differing,
        [
            "bad-hours-refused (differs in: outcome)",
            "failback-at-1700-exactly-holds (differs in: action, reason)",
            "failback-in-the-evening-holds (differs in: action, reason)",
            "failback-just-before-0900-holds (differs in: action, reason)",
        ],
        "{out}"
    );
    assert!(out.contains("  old: {\"decision\":{\"action\":{\"kind\":\"shift_in_steps\""), "{out}");
    assert!(out.contains("  new: {\"decision\":{\"action\":{\"kind\":\"hold\"}"), "{out}");
    assert!(out.ends_with("11 inputs, 4 differ\n"), "{out}");

    // A policy against itself: no difference, exit 0. Plain `*.json` inputs work too.
    let plain = std::env::temp_dir().join(format!("kbha-diff-plain-{}", std::process::id()));
    std::fs::create_dir_all(&plain)?;
    for case in ["failback-at-noon", "alarm-at-night-fails-over"] {
        std::fs::copy(
            Path::new(&kbha_test_harness::repo_root()).join(SAMPLE_CASES).join(case).join("input.json"),
            plain.join(format!("{case}.json")),
        )?;
    }
    let plain_arg = plain.to_str().context("utf-8 temp path")?;
    let (code, out, err) = kbha(&["policy", "diff", SAMPLE, SAMPLE, "--inputs", plain_arg])?;
    assert_eq!((code, out.as_str()), (0, "2 inputs, 0 differ\n"), "{err}");
    // Trouble exits 2, as diff(1) does.
    let (code, _, err) = kbha(&["policy", "diff", "builtin", "builtin", "--inputs", plain_arg])?;
    assert_eq!(code, 2, "both built-in without --world: {err}");
    assert!(err.contains("--world"), "{err}");
    std::fs::remove_dir_all(&plain)?;
    Ok(())
}

/// The initial size, in 64 KiB pages, of every memory the component's core modules define.
fn initial_memory_pages(component: &[u8]) -> Result<Vec<u64>> {
    let mut pages = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        if let wasmparser::Payload::MemorySection(memories) = payload? {
            for memory in memories {
                pages.push(memory?.initial);
            }
        }
    }
    Ok(pages)
}

#[test]
fn a_scaffolded_policy_builds_and_passes_its_own_cases() -> Result<()> {
    let parent = std::env::temp_dir().join(format!("kbha-new-{}", std::process::id()));
    std::fs::create_dir_all(&parent)?;
    let parent_arg = parent.to_str().context("utf-8 temp path")?;
    let (code, out, err) = kbha(&["policy", "new", "my-failover", "--world", "failover", "--dir", parent_arg])?;
    assert_eq!(code, 0, "{out}{err}");
    let dir = parent.join("my-failover");
    for f in ["Cargo.toml", "Cargo.lock", "README.md", "src/lib.rs", "tests/golden.rs"] {
        assert!(dir.join(f).is_file(), "{f} not scaffolded");
    }
    let (code, _, err) = kbha(&["policy", "new", "my-failover", "--world", "failover", "--dir", parent_arg])?;
    assert_ne!(code, 0, "an existing crate is never overwritten: {err}");

    let started = Instant::now();
    let out_dir = parent.join("out");
    // The workspace's target directory: std (build-std) and wit-bindgen are already built
    // there for the guests (`cargo xtask policies`), so only the policy and its SDK compile.
    let target = kbha_test_harness::repo_root().join("target");
    let (code, out, err) = kbha_env(
        &["policy", "build", "--crate", dir.to_str().context("utf-8")?, "--out", out_dir.to_str().context("utf-8")?],
        &[("CARGO_TARGET_DIR", &target)],
    )?;
    assert_eq!(code, 0, "build failed:\n{out}\n{err}");
    assert!(out.contains("my-failover: world failover-policy"), "{out}");
    eprintln!("scaffolded crate built in {:?}", started.elapsed());
    let component = out_dir.join("my-failover.wasm");
    // Built with room for its heap (guest.rs), so the SDK's allocator need not grow the
    // memory during a decision: each growth costs the host two mprotect calls.
    let pages = initial_memory_pages(&std::fs::read(&component)?)?;
    assert_eq!(pages, [32], "the policy's core module should start with 2 MiB of memory");
    let cases = dir.join("cases");
    let (code, out, err) = kbha(&["policy", "test", component.to_str().context("utf-8")?, cases.to_str().context("utf-8")?])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    std::fs::remove_dir_all(&parent)?;
    Ok(())
}
