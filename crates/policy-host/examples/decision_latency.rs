//! p50 / p99 of the failover-default decision on a fresh instance ([`Policy::decide`],
//! what the functions do) and on a reused one, timed as `cargo xtask bench` times them:
//! `cargo run -p kbha-policy-host --example decision_latency [-- <n> [<gap µs>]]`.
//! A gap (default 0) spins between decisions, as a handler's AWS calls separate them.
//!
//! Needs `target/policies/failover-default.wasm` (`cargo xtask policies`).

use std::time::{Duration, Instant};

use kbha_core::FailoverInput;
use kbha_policy_host::guests::{built_dir, workspace_dir};
use kbha_policy_host::{FailoverWorld, Limits, PolicyEngine, PolicyError};

fn percentiles(n: usize, gap: Duration, mut f: impl FnMut() -> Result<(), PolicyError>) -> Result<(Duration, Duration), PolicyError> {
    for _ in 0..n.min(50) {
        f()?;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let spin = Instant::now();
        while spin.elapsed() < gap {
            std::hint::spin_loop();
        }
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    Ok((at(0.50), at(0.99)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(300);
    let gap = Duration::from_micros(args.next().map(|a| a.parse()).transpose()?.unwrap_or(0));
    let wasm = std::fs::read(built_dir().join("failover-default.wasm"))?;
    let case = workspace_dir().join("policies/failover-default/cases/primary-alarm-shifts-to-secondary/input.json");
    let input: FailoverInput = serde_json::from_slice(&std::fs::read(case)?)?;
    let engine = PolicyEngine::new(Limits::default())?;
    let policy = engine.load::<FailoverWorld>(&wasm)?;
    let mut reused = policy.reused_instance()?;
    for round in 0..3 {
        let (f50, f99) = percentiles(n, gap, || policy.decide(std::hint::black_box(&input)).map(drop))?;
        let (r50, r99) = percentiles(n, gap, || reused.decide(std::hint::black_box(&input)).map(drop))?;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "round {round}: fresh p50 {:.1} µs / p99 {:.1} µs; reused p50 {:.1} µs / p99 {:.1} µs",
            us(f50),
            us(f99),
            us(r50),
            us(r99)
        );
    }
    Ok(())
}
