//! Decision latency of the default failover policy: as a component with a
//! fresh store and instance per decision (what the functions do), with one
//! reused instance (bench-only API), and the same Rust compiled natively.
//!
//! Needs `target/policies/failover-default.wasm` (`cargo xtask policies`).
//! Input: the golden case `primary-alarm-shifts-to-secondary`. `kbha bench`
//! prints p50/p99 and the ratios in one table; this gives criterion's
//! confidence intervals for the same three paths.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kbha_core::FailoverInput;
use kbha_policy_host::{FailoverWorld, Limits, PolicyEngine};

use kbha_policy_host::guests::{built_dir as policies_dir, workspace_dir as workspace};

fn decision(c: &mut Criterion) {
    let wasm_path = policies_dir().join("failover-default.wasm");
    let wasm = std::fs::read(&wasm_path)
        .unwrap_or_else(|e| panic!("cannot read `{}` ({e}); run `cargo xtask policies` first", wasm_path.display()));
    let case = workspace().join("policies/failover-default/cases/primary-alarm-shifts-to-secondary/input.json");
    let input: FailoverInput = serde_json::from_slice(&std::fs::read(&case).expect("golden input")).expect("golden input parses");

    let engine = PolicyEngine::new(Limits::default()).expect("engine");
    let policy = engine.load::<FailoverWorld>(&wasm).expect("failover-default loads");
    let mut reused = policy.reused_instance().expect("instance");
    let wit_input: kbha_policy_sdk::types::FailoverInput = input.clone().into();
    // The three paths must agree before their speed means anything.
    let native = kbha_policy_failover_default::decide(&wit_input).map(kbha_core::FailoverDecision::from);
    let fresh = policy.decide(&input).map(|e| e.decision);
    assert_eq!(native.as_ref().ok(), fresh.as_ref().ok(), "component and native disagree");
    assert_eq!(fresh.as_ref().ok(), reused.decide(&input).as_ref().ok(), "reused instance disagrees");

    let mut g = c.benchmark_group("failover-default decision");
    g.bench_function("component, fresh instance", |b| b.iter(|| policy.decide(black_box(&input)).expect("decides")));
    g.bench_function("component, reused instance", |b| b.iter(|| reused.decide(black_box(&input)).expect("decides")));
    g.bench_function("native", |b| {
        // Includes the core -> WIT conversion, as the component paths do.
        b.iter(|| {
            let wit_input: kbha_policy_sdk::types::FailoverInput = black_box(&input).clone().into();
            kbha_policy_failover_default::decide(&wit_input).expect("decides")
        })
    });
    g.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
