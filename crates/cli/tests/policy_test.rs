//! `kbha policy test`: the built-in policy passes its own golden cases; a case with a
//! wrong expectation fails with a non-zero exit. Needs `cargo xtask policies`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn kbha_test(component: &Path, cases: &Path) -> Result<(bool, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_kbha")).args(["policy", "test"]).arg(component).arg(cases).output()?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned()))
}

#[test]
fn golden_cases_pass_and_a_wrong_expectation_fails() -> Result<()> {
    let component = root().join("target/policies/failover-default.wasm");
    let cases = root().join("policies/failover-default/cases");
    let n = std::fs::read_dir(&cases)?.count();
    let (ok, out) = kbha_test(&component, &cases)?;
    assert!(ok, "{out}");
    assert!(out.trim_end().ends_with(&format!("{n} passed, 0 failed")), "{out}");

    // One case copied with a wrong expectation.
    let dir = std::env::temp_dir().join(format!("kbha-policy-test-{}", std::process::id()));
    let case = dir.join("wrong");
    std::fs::create_dir_all(&case)?;
    let src = cases.join("healthy-primary-holds");
    std::fs::copy(src.join("input.json"), case.join("input.json")).context("input")?;
    std::fs::write(case.join("expected.json"), r#"{"decision":{"action":{"kind":"hold"},"reason":"not what it says","alerts":[]}}"#)?;
    let (ok, out) = kbha_test(&component, &dir)?;
    std::fs::remove_dir_all(&dir)?;
    assert!(!ok, "a wrong expectation must fail: {out}");
    assert!(out.contains("FAIL wrong") && out.trim_end().ends_with("0 passed, 1 failed"), "{out}");
    Ok(())
}
