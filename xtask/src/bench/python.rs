//! The Python sample policy next to the Rust one (issue 6): load time (compile, and from
//! the compiled artifact the functions' cache keeps) and fresh-instance decision time of
//! `business-hours-py` (CPython via componentize-py, `Limits::python`) against
//! `business-hours` (Rust, default limits), on the golden case `failback-at-noon`, after
//! checking that both decide the same. Full mode only: compiling CPython takes seconds.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kbha_core::FailoverInput;
use kbha_policy_host::{FailoverPolicy, Limits, PolicyEngine};

use super::{Row, percentiles, row, target_dir, us, workspace};

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Compile time, load-from-artifact time and the loaded policy.
fn load(name: &str, limits: Limits) -> Result<(Duration, Duration, FailoverPolicy)> {
    let path = target_dir().join(format!("policies/{name}.wasm"));
    let wasm = std::fs::read(&path).with_context(|| path.display().to_string())?;
    let engine = PolicyEngine::new(limits)?;
    let start = Instant::now();
    let compiled = engine.load::<kbha_policy_host::FailoverWorld>(&wasm)?;
    let compile = start.elapsed();
    let artifact = compiled.artifact()?;
    let start = Instant::now();
    let cached = engine.load_precompiled::<kbha_policy_host::FailoverWorld>(&artifact, compiled.digest())?;
    Ok((compile, start.elapsed(), cached))
}

/// Two rows (load, decision), or one saying why they are skipped.
pub(super) fn rows(quick: bool, n: usize, rows: &mut Vec<Row>) -> Result<()> {
    let skipped = |why: &str| row("Python policy business-hours-py", format!("skipped: {why}"), "-".into(), "-".into(), "-");
    if quick {
        rows.push(skipped("--quick (compiling CPython takes seconds)"));
        return Ok(());
    }
    if !target_dir().join("policies/business-hours-py.wasm").is_file() {
        rows.push(skipped("no target/policies/business-hours-py.wasm (bash scripts/build-python-policies.sh)"));
        return Ok(());
    }
    let case = workspace().join("samples/policies/business-hours/cases/failback-at-noon/input.json");
    let input: FailoverInput = serde_json::from_slice(&std::fs::read(&case).with_context(|| case.display().to_string())?)?;
    let (rs_compile, rs_load, rust) = load("business-hours", Limits::default())?;
    let (py_compile, py_load, python) = load("business-hours-py", Limits::python())?;
    if rust.decide(&input)?.decision != python.decide(&input)?.decision {
        bail!("business-hours and business-hours-py disagree on failback-at-noon");
    }
    let (rs50, rs99) = percentiles(n, || {
        std::hint::black_box(rust.decide(&input)?);
        Ok(())
    })?;
    let (py50, py99) = percentiles(n, || {
        std::hint::black_box(python.decide(&input)?);
        Ok(())
    })?;
    let ratio = |a: Duration, b: Duration| format!("{:.0}x", a.as_secs_f64() / b.as_secs_f64().max(1e-9));
    rows.push(row(
        "load Python policy business-hours-py (compile / from compiled artifact)",
        format!("{} / {}", ms(py_compile), ms(py_load)),
        format!("Rust business-hours {} / {}", ms(rs_compile), ms(rs_load)),
        format!("{} / {}", ratio(py_compile, rs_compile), ratio(py_load, rs_load)),
        "-",
    ));
    rows.push(row(
        "decision, Python business-hours-py fresh instance (p50 / p99)",
        format!("{} / {}", us(py50), us(py99)),
        format!("Rust business-hours p50 {} / p99 {}", us(rs50), us(rs99)),
        format!("{} / {}", ratio(py50, rs50), ratio(py99, rs99)),
        "-",
    ));
    Ok(())
}
