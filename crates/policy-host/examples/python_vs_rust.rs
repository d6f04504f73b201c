//! Load and decision time of the Python sample policy next to the Rust one.
//!
//! ```sh
//! cargo xtask policies && bash scripts/build-python-policies.sh
//! cargo run --example python_vs_rust [-- <decisions>]
//! ```
//!
//! For each of `business-hours` (Rust, default [`Limits`]) and
//! `business-hours-py` (CPython via componentize-py, [`Limits::python`]):
//! compile time (`load::<FailoverWorld>` of the `.wasm`), load time from the compiled
//! artifact (what the functions' compiled-policy cache does), and the
//! fresh-instance decision time p50/p99 and fuel on the golden case
//! `failback-at-noon`. docs/writing-policies.md ("Write a policy in Python") quotes its output.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kbha_core::FailoverInput;
use kbha_policy_host::{FailoverWorld, Limits, PolicyEngine};

use kbha_policy_host::guests::{built_dir as policies_dir, workspace_dir as workspace};

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn measure(name: &str, limits: Limits, input: &FailoverInput, n: usize) -> Result<()> {
    let path = policies_dir().join(format!("{name}.wasm"));
    let wasm = std::fs::read(&path).with_context(|| format!("read `{}`", path.display()))?;
    let engine = PolicyEngine::new(limits)?;
    let t = Instant::now();
    let policy = engine.load::<FailoverWorld>(&wasm)?;
    let compile = t.elapsed();
    let artifact = policy.artifact()?;
    let t = Instant::now();
    let cached = engine.load_precompiled::<FailoverWorld>(&artifact, policy.digest())?;
    let from_cache = t.elapsed();
    // One decision first: page in the code and the memory image.
    let first = cached.decide(input)?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let eval = cached.decide(input)?;
        times.push(t.elapsed());
        anyhow::ensure!(eval.decision == first.decision, "{name}: decision changed");
    }
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {name} | {:.1} MB | {} | {} | {} | {} | {} |",
        wasm.len() as f64 / 1e6,
        ms(compile),
        ms(from_cache),
        us(p(0.5)),
        us(p(0.99)),
        first.fuel_used,
    );
    Ok(())
}

fn main() -> Result<()> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200);
    let case = workspace().join("samples/policies/business-hours/cases/failback-at-noon/input.json");
    let input: FailoverInput = serde_json::from_slice(&std::fs::read(&case)?)?;
    println!("{n} fresh-instance decisions each, case `failback-at-noon`");
    println!("| policy | component | compile | load from artifact | decision p50 | decision p99 | fuel |");
    println!("|---|---|---|---|---|---|---|");
    measure("business-hours", Limits::default(), &input, n)?;
    measure("business-hours-py", Limits::python(), &input, n)?;
    Ok(())
}
