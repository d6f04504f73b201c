//! The Python sample policy (`samples/policies/business-hours-py`, a CPython
//! component built with componentize-py) under an engine with
//! [`Limits::python`]: it passes the golden cases of the Rust
//! `business-hours` sample and decides as that sample's component on the
//! default policy's cases, its WASI sandbox is empty, and a WASI engine still
//! refuses every import outside the offered set.
//!
//! The components come from `bash scripts/build-python-policies.sh` (CI runs it
//! before the tests); without them these tests fail, saying so. Compiling a
//! CPython component takes seconds, so each is compiled once per test binary
//! and its compiled code is kept in `target/policies/<name>.<engine>.cwasm`
//! (checked by digest before use; a stale or foreign file is compiled again).
//!
//! WASI needs the crate's `wasi` feature: `cargo test --workspace` has it (the command
//! line and xtask turn it on, and cargo unifies features in a workspace build), as has
//! `cargo test -p kbha-policy-host --features wasi`; a build without it skips this file.

#![cfg(feature = "wasi")]

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use kbha_core::{FailoverDecision, FailoverInput, PolicyRefusal};
use kbha_policy_host::{FailoverPolicy, FailoverWorld, Limits, PolicyEngine, PolicyError};
use serde::Deserialize;

use kbha_policy_host::guests::{built_dir as policies_dir, workspace_dir as workspace};

fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PolicyEngine::new(Limits::python()).expect("python engine"))
}

/// Loads `target/policies/<name>.wasm`, from its compiled artifact when one
/// for these bytes exists, compiling (and keeping the artifact) otherwise.
fn load(name: &str) -> FailoverPolicy {
    let path = policies_dir().join(format!("{name}.wasm"));
    let wasm = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read `{}` ({e}); run `bash scripts/build-python-policies.sh` first", path.display()));
    let digest = kbha_policy_host::digest(&wasm);
    let cached = policies_dir().join(format!("{name}.python-engine.cwasm"));
    if let Ok(artifact) = std::fs::read(&cached)
        && let Ok(policy) = engine().load_precompiled::<FailoverWorld>(&artifact, &digest)
    {
        return policy;
    }
    let policy = engine().load::<FailoverWorld>(&wasm).unwrap_or_else(|e| panic!("`{}` does not load: {e}", path.display()));
    // The cache only saves time; failing to write it is no test failure.
    if let Ok(artifact) = policy.artifact() {
        let _ = std::fs::write(&cached, artifact);
    }
    policy
}

fn business_hours_py() -> &'static FailoverPolicy {
    static POLICY: OnceLock<FailoverPolicy> = OnceLock::new();
    POLICY.get_or_init(|| load("business-hours-py"))
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expected {
    Decision(FailoverDecision),
    Refused(PolicyRefusal),
}

fn case(dir: &Path) -> Result<(FailoverInput, Expected)> {
    let name = dir.display().to_string();
    let input = serde_json::from_slice(&std::fs::read(dir.join("input.json"))?).with_context(|| name.clone())?;
    let expected = serde_json::from_slice(&std::fs::read(dir.join("expected.json"))?).with_context(|| name.clone())?;
    Ok((input, expected))
}

#[test]
fn python_business_hours_passes_the_rust_samples_golden_cases() -> Result<()> {
    let policy = business_hours_py();
    let dir = workspace().join("samples/policies/business-hours/cases");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir)? {
        let dir = entry?.path();
        let (input, expected) = case(&dir)?;
        assert_eq!(outcome(policy, &input, &dir), expected, "case `{}`", dir.display());
        n += 1;
    }
    anyhow::ensure!(n >= 7, "only {n} cases in `{}`", dir.display());
    Ok(())
}

/// The outcome of a decision as the golden files write it; a fault fails the test.
fn outcome(policy: &FailoverPolicy, input: &FailoverInput, case: &Path) -> Expected {
    match policy.decide(input) {
        Ok(eval) => Expected::Decision(eval.decision),
        Err(PolicyError::Refused(r)) => Expected::Refused(r),
        Err(e) => panic!("`{}`: policy fault: {e}", case.display()),
    }
}

#[test]
fn python_and_rust_business_hours_agree_on_the_default_policys_cases() -> Result<()> {
    // The Python file ports the default policy's rules too; the default
    // policy's cases (RPO, manual failback, both regions down, bad config...)
    // exercise them. The Rust sample as a component is the reference.
    let python = business_hours_py();
    let rust_path = policies_dir().join("business-hours.wasm");
    let rust = PolicyEngine::new(Limits::default())?.load::<FailoverWorld>(
        &std::fs::read(&rust_path).with_context(|| format!("`{}`: run `cargo xtask policies` first", rust_path.display()))?,
    )?;
    let dir = workspace().join("policies/failover-default/cases");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir)? {
        let dir = entry?.path();
        let (input, _) = case(&dir)?;
        assert_eq!(outcome(python, &input, &dir), outcome(&rust, &input, &dir), "case `{}`", dir.display());
        n += 1;
    }
    anyhow::ensure!(n >= 7, "only {n} cases in `{}`", dir.display());
    Ok(())
}

#[test]
fn python_decisions_replay_bit_for_bit() -> Result<()> {
    let policy = business_hours_py();
    let dir = workspace().join("samples/policies/business-hours/cases/failback-at-noon");
    let (input, _) = case(&dir)?;
    let first = policy.decide(&input)?;
    let second = policy.decide(&input)?;
    assert_eq!(first.decision, second.decision);
    assert_eq!(first.fuel_used, second.fuel_used, "same input, same work");
    assert!(first.fuel_used < Limits::python().fuel / 10, "{}", first.fuel_used);
    Ok(())
}

/// The findings of `crates/policy-host/tests/sandbox-probe-py/app.py`.
#[derive(Debug, Deserialize)]
struct Findings {
    env: std::collections::BTreeMap<String, String>,
    argv: Vec<String>,
    listdir_root: String,
    listdir_cwd: String,
    read_passwd: String,
    write_tmp: String,
    stdin: String,
    connect: String,
    getaddrinfo: String,
    time_ms: i64,
    monotonic_ns: u64,
    urandom: String,
}

#[test]
fn the_wasi_sandbox_is_empty() -> Result<()> {
    let probe = load("sandbox-probe-py");
    let dir = workspace().join("samples/policies/business-hours/cases/failback-at-noon");
    let (input, _) = case(&dir)?;
    let eval = probe.decide(&input)?;
    let f: Findings = serde_json::from_str(&eval.decision.reason).with_context(|| eval.decision.reason.clone())?;
    // Nothing from the host's environment, arguments or stdin.
    assert!(f.env.is_empty(), "{f:?}");
    assert!(f.argv.iter().all(|a| a.is_empty()), "{f:?}");
    assert_eq!(f.stdin, "ok: ''", "{f:?}");
    // No files: no directory is preopened, so every path is unreachable.
    for answer in [&f.listdir_root, &f.listdir_cwd, &f.read_passwd, &f.write_tmp] {
        assert!(!answer.starts_with("ok"), "{f:?}");
    }
    // No network. componentize-py's CPython has no `socket` module at all
    // (ModuleNotFoundError), so Python code cannot even reach `wasi:sockets`;
    // the host's sockets refuse TCP, UDP and lookups regardless.
    assert!(!f.connect.starts_with("ok"), "{f:?}");
    assert!(!f.getaddrinfo.starts_with("ok"), "{f:?}");
    // Clocks: the wall clock reads the input's `now`, the monotonic clock 0.
    assert_eq!(f.time_ms, input.now_ms, "{f:?}");
    assert_eq!(f.monotonic_ns, 0, "{f:?}");
    // Randomness is a fixed sequence: the same bytes every decision.
    let again: Findings = serde_json::from_str(&probe.decide(&input)?.decision.reason)?;
    assert_eq!(f.urandom, again.urandom);
    // What it printed went nowhere: not into the decision, not into the log.
    assert!(eval.logs.is_empty(), "{:?}", eval.logs);
    Ok(())
}

#[test]
fn a_wasi_decision_runs_inside_an_async_handler() -> Result<()> {
    // A Lambda handler decides on a tokio worker thread. wasmtime-wasi's
    // synchronous streams enter a tokio runtime, which panics there; the host
    // runs WASI decisions on a thread of their own. The probe prints, so its
    // decision goes through those streams.
    let probe = load("sandbox-probe-py");
    let dir = workspace().join("samples/policies/business-hours/cases/failback-at-noon");
    let (input, _) = case(&dir)?;
    for rt in
        [tokio::runtime::Builder::new_current_thread().build()?, tokio::runtime::Builder::new_multi_thread().worker_threads(1).build()?]
    {
        let eval = rt.block_on(async { probe.decide(&input) })?;
        assert!(eval.decision.reason.contains("\"env\": {}"), "{}", eval.decision.reason);
    }
    Ok(())
}

#[test]
fn a_hostile_python_policy_is_contained_with_typed_errors() -> Result<()> {
    let probe = load("sandbox-probe-py");
    let dir = workspace().join("samples/policies/business-hours/cases/failback-at-noon");
    let (mut input, _) = case(&dir)?;
    let limits = Limits::python();
    input.event_id = "loop".into();
    let start = std::time::Instant::now();
    let e = probe.decide(&input).expect_err("stopped");
    let spent = start.elapsed();
    assert!(matches!(e, PolicyError::OutOfFuel { fuel } if fuel == limits.fuel), "{e}");
    // The budget stops an endless loop in bounded time (dev profile, loaded CI).
    assert!(spent < std::time::Duration::from_secs(20), "{spent:?}");
    input.event_id = "hog".into();
    let e = probe.decide(&input).expect_err("stopped");
    assert!(matches!(e, PolicyError::MemoryLimit { limit_bytes } if limit_bytes == limits.memory_bytes), "{e}");
    input.event_id = "raise".into();
    let e = probe.decide(&input).expect_err("trapped");
    assert!(matches!(e, PolicyError::Trap(_)), "{e}");
    // Each decision has a fresh store: the faults leave the policy usable.
    input.event_id = "after the faults".into();
    assert!(probe.decide(&input).is_ok());
    Ok(())
}

fn component_importing(name: &str) -> Vec<u8> {
    wat::parse_str(format!(r#"(component (import "{name}" (instance (export "get-arguments" (func (result (list string)))))))"#))
        .expect("wat")
}

#[test]
fn a_wasi_engine_refuses_imports_outside_the_offered_set() {
    for name in ["wasi:http/outgoing-handler@0.2.0", "wasi:keyvalue/store@0.2.0", "wasi:cli/environment@0.3.0", "acme:net/raw-socket@1.0.0"]
    {
        let e = engine().load::<FailoverWorld>(&component_importing(name)).expect_err("refused");
        assert!(matches!(&e, PolicyError::ForbiddenImport { name: n } if n == name), "{name}: {e}");
    }
    // An offered WASI import passes the import check; this component then
    // fails for what it lacks, a `decide`.
    let e = engine().load::<FailoverWorld>(&component_importing("wasi:cli/environment@0.2.0")).expect_err("no decide");
    assert!(matches!(e, PolicyError::WrongWorld { .. }), "{e}");
}

#[test]
fn the_default_engine_still_refuses_the_python_component() -> Result<()> {
    // The compiled code of the Python engine, linked by an engine without
    // WASI (same compiler settings, so no second compile of CPython).
    let policy = business_hours_py();
    let plain = PolicyEngine::new(Limits::default())?;
    let e = plain.load_precompiled::<FailoverWorld>(&policy.artifact()?, policy.digest()).expect_err("refused");
    assert!(matches!(&e, PolicyError::ForbiddenImport { name } if name.starts_with("wasi:")), "{e}");
    Ok(())
}
