//! Host tests against the built components in `target/policies` (run
//! `cargo xtask policies` first): golden cases of the default failover
//! policy, hostile guests contained with their specific errors, precompiled
//! artifacts deciding the same.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kbha_core::{FailoverDecision, FailoverInput, PolicyRefusal};
use kbha_policy_host::{AlertWorld, FailoverPolicy, FailoverWorld, Limits, PolicyEngine, PolicyError, ReplicationWorld};
use serde::Deserialize;

use kbha_policy_host::guests::{built_dir as policies_dir, workspace_dir as workspace};

fn artifact(name: &str, ext: &str) -> Vec<u8> {
    let path = policies_dir().join(format!("{name}.{ext}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read `{}` ({e}); run `cargo xtask policies` first", path.display()))
}

/// One engine for the whole test binary, as a Lambda would hold it.
fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PolicyEngine::new(Limits { fuel: 20_000_000, memory_bytes: 32 << 20, ..Limits::default() }).expect("engine"))
}

fn load(name: &str) -> FailoverPolicy {
    engine().load::<FailoverWorld>(&artifact(name, "wasm")).expect("guest loads")
}

// Every guest must have a test module of its name here; a guest added to
// `foreach_guest!` without one fails to compile.
macro_rules! assert_every_guest_tested {
    ($(($id:ident, $name:literal, $package:literal, $world:ident)),* $(,)?) => {
        $(const _: fn() = $id::covered;)*
    };
}
kbha_policy_host::foreach_guest!(assert_every_guest_tested);

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expected {
    Decision(FailoverDecision),
    Refused(PolicyRefusal),
}

fn outcome(policy: &FailoverPolicy, input: &FailoverInput) -> Expected {
    match policy.decide(input) {
        Ok(eval) => Expected::Decision(eval.decision),
        Err(PolicyError::Refused(r)) => Expected::Refused(r),
        Err(e) => panic!("policy fault: {e}"),
    }
}

fn golden_cases() -> Result<Vec<(String, FailoverInput, Expected)>> {
    let dir = workspace().join("policies/failover-default/cases");
    let mut cases = vec![];
    for entry in std::fs::read_dir(&dir)? {
        let d = entry?.path();
        let name = d.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let input = serde_json::from_slice(&std::fs::read(d.join("input.json"))?).with_context(|| name.clone())?;
        let expected = serde_json::from_slice(&std::fs::read(d.join("expected.json"))?).with_context(|| name.clone())?;
        cases.push((name, input, expected));
    }
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    anyhow::ensure!(cases.len() >= 2, "no golden cases found in `{}`", dir.display());
    Ok(cases)
}

/// The sample policy `samples/policies/business-hours`: its golden cases as a component.
mod business_hours {
    use super::*;

    pub fn covered() {}

    #[test]
    fn golden_cases_decide_as_natively() -> Result<()> {
        let policy = load("business-hours");
        let dir = workspace().join("samples/policies/business-hours/cases");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir)? {
            let case = entry?.path();
            let name = case.display().to_string();
            let input: FailoverInput = serde_json::from_slice(&std::fs::read(case.join("input.json"))?).with_context(|| name.clone())?;
            let expected: Expected = serde_json::from_slice(&std::fs::read(case.join("expected.json"))?).with_context(|| name.clone())?;
            assert_eq!(outcome(&policy, &input), expected, "case `{name}`");
            n += 1;
        }
        anyhow::ensure!(n >= 7, "only {n} cases in `{}`", dir.display());
        Ok(())
    }
}

mod failover_default {
    use super::*;

    pub fn covered() {}

    #[test]
    fn golden_cases_decide_as_natively() -> Result<()> {
        let policy = load("failover-default");
        for (name, input, expected) in golden_cases()? {
            assert_eq!(outcome(&policy, &input), expected, "case `{name}`");
        }
        Ok(())
    }

    #[test]
    fn precompiled_artifact_decides_the_same() -> Result<()> {
        let wasm = artifact("failover-default", "wasm");
        let digest = kbha_policy_host::digest(&wasm);
        let pre = engine().load_precompiled::<FailoverWorld>(&artifact("failover-default", "cwasm"), &digest)?;
        assert_eq!(pre.digest(), digest);
        let fresh = engine().load::<FailoverWorld>(&wasm)?;
        for (name, input, _) in golden_cases()? {
            assert_eq!(outcome(&pre, &input), outcome(&fresh, &input), "case `{name}`");
        }
        Ok(())
    }

    #[test]
    fn a_loaded_policys_artifact_loads_without_compiling_and_decides_the_same() -> Result<()> {
        let wasm = artifact("failover-default", "wasm");
        let fresh = engine().load::<FailoverWorld>(&wasm)?;
        let cached = engine().load_precompiled::<FailoverWorld>(&fresh.artifact()?, fresh.digest())?;
        assert_eq!(cached.digest(), fresh.digest());
        for (name, input, _) in golden_cases()? {
            assert_eq!(outcome(&cached, &input), outcome(&fresh, &input), "case `{name}`");
        }
        // Pinned to its digest like any artifact.
        let other = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(engine().load_precompiled::<FailoverWorld>(&fresh.artifact()?, &other), Err(PolicyError::Precompiled(_))));
        Ok(())
    }

    #[test]
    fn precompiled_artifact_is_pinned_and_integrity_checked() {
        let mut cwasm = artifact("failover-default", "cwasm");
        let digest = kbha_policy_host::digest(&artifact("failover-default", "wasm"));
        let other = kbha_policy_host::digest(b"another policy");
        assert!(matches!(engine().load_precompiled::<FailoverWorld>(&cwasm, &other), Err(PolicyError::Precompiled(_))));
        let last = cwasm.len() - 1;
        cwasm[last] ^= 0xff;
        let e = engine().load_precompiled::<FailoverWorld>(&cwasm, &digest).expect_err("corrupt artifact");
        assert!(matches!(&e, PolicyError::Precompiled(m) if m.contains("corrupt")), "{e}");
        assert!(matches!(
            engine().load_precompiled::<FailoverWorld>(&artifact("failover-default", "wasm"), &digest),
            Err(PolicyError::Precompiled(_))
        ));
    }

    #[test]
    fn digest_is_sha256_of_the_component() {
        let wasm = artifact("failover-default", "wasm");
        let policy = engine().load::<FailoverWorld>(&wasm).expect("loads");
        assert_eq!(policy.digest(), kbha_policy_host::digest(&wasm));
        assert!(policy.digest().starts_with("sha256:"));
    }

    #[test]
    fn loaded_as_another_world_is_wrong_world() {
        let wasm = artifact("failover-default", "wasm");
        let e = engine().load::<AlertWorld>(&wasm).expect_err("not an alert policy");
        assert!(matches!(e, PolicyError::WrongWorld { expected: "alert-policy", .. }), "{e}");
        let e = engine().load::<ReplicationWorld>(&wasm).expect_err("not a replication policy");
        assert!(matches!(e, PolicyError::WrongWorld { expected: "replication-policy", .. }), "{e}");
    }

    #[test]
    fn one_policy_serves_threads_concurrently() -> Result<()> {
        let policy = std::sync::Arc::new(load("failover-default"));
        let (name, input, expected) = golden_cases()?.into_iter().next().context("a case")?;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (p, i) = (policy.clone(), input.clone());
                std::thread::spawn(move || outcome(&p, &i))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().expect("thread"), expected, "case `{name}`");
        }
        Ok(())
    }
}

mod hostile {
    use super::*;

    pub fn covered() {}

    fn input(mode: &str) -> FailoverInput {
        serde_json::from_value(serde_json::json!({
            "now_ms": 0, "event_id": "e", "trigger": {"kind": "schedule"}, "record_name": "r",
            "targets": [], "config": {"mode": mode}
        }))
        .expect("input")
    }

    /// Runs a mode and checks it ends quickly.
    fn run(mode: &str) -> Result<kbha_policy_host::Evaluation<FailoverDecision>, PolicyError> {
        let policy = load("hostile");
        let started = Instant::now();
        let r = policy.decide(&input(mode));
        assert!(started.elapsed() < Duration::from_secs(10), "mode `{mode}` took {:?}", started.elapsed());
        r
    }

    #[test]
    fn benign_mode_decides() {
        let eval = run("hold").expect("decides");
        assert!(eval.decision.reason.contains("holding"));
        assert!(eval.fuel_used > 0);
    }

    #[test]
    fn endless_loop_runs_out_of_fuel() {
        assert!(matches!(run("loop"), Err(PolicyError::OutOfFuel { fuel: 20_000_000 })));
    }

    #[test]
    fn unbounded_allocation_hits_memory_limit() {
        let r = run("alloc");
        assert!(matches!(r, Err(PolicyError::MemoryLimit { limit_bytes }) if limit_bytes == 32 << 20), "{r:?}");
    }

    #[test]
    fn panic_is_a_trap() {
        let r = run("panic");
        assert!(matches!(&r, Err(PolicyError::Trap(m)) if m.contains("unreachable")), "{r:?}");
    }

    #[test]
    fn unreachable_is_a_trap() {
        assert!(matches!(run("unreachable"), Err(PolicyError::Trap(_))));
    }

    #[test]
    fn oversized_output_is_refused() {
        let r = run("oversized");
        assert!(
            matches!(r, Err(PolicyError::OutputTooLarge { size_bytes, limit_bytes }) if size_bytes >= 10 << 20 && limit_bytes == Limits::default().output_bytes),
            "{r:?}"
        );
    }

    #[test]
    fn log_flood_is_cut_to_the_budget() {
        let eval = run("log-flood").expect("decides");
        assert_eq!(eval.logs.len(), Limits::default().log_lines);
        assert_eq!(eval.logs.len() + eval.logs_dropped, 10_000);
        assert_eq!(eval.logs[0], (kbha_core::Level::Info, "line 0".to_string()));
    }

    #[test]
    fn refusal_is_typed() {
        let r = run("refuse");
        assert!(matches!(r, Err(PolicyError::Refused(PolicyRefusal::Internal(_)))), "{r:?}");
    }

    #[test]
    fn a_fault_leaves_the_policy_usable() {
        // Each decision has a fresh store: a trap must not poison the next one.
        let policy = load("hostile");
        assert!(policy.decide(&input("panic")).is_err());
        assert!(policy.decide(&input("hold")).is_ok());
    }

    fn wat(name: &str) -> Vec<u8> {
        let path = workspace().join("policies/hostile/wat").join(name);
        wat::parse_file(&path).unwrap_or_else(|e| panic!("`{}`: {e}", path.display()))
    }

    #[test]
    fn wasi_import_is_forbidden_and_named() {
        let e = engine().load::<FailoverWorld>(&wat("imports-wasi.wat")).expect_err("refused");
        assert!(matches!(&e, PolicyError::ForbiddenImport { name } if name == "wasi:cli/environment@0.2.0"), "{e}");
        assert!(e.to_string().contains("`wasi:cli/environment@0.2.0`"));
    }

    #[test]
    fn core_module_is_not_a_component() {
        assert!(matches!(engine().load::<FailoverWorld>(&wat("core-module.wat")), Err(PolicyError::NotAComponent)));
    }

    #[test]
    fn component_without_decide_is_wrong_world() {
        let e = engine().load::<FailoverWorld>(&wat("no-exports.wat")).expect_err("refused");
        assert!(matches!(&e, PolicyError::WrongWorld { expected: "failover-policy", detail } if detail.contains("no `decide`")), "{e}");
    }

    #[test]
    fn garbage_is_not_wasm() {
        assert!(matches!(engine().load::<FailoverWorld>(b"{\"not\": \"wasm\"}"), Err(PolicyError::NotWasm)));
    }

    #[test]
    fn inspect_reports_world_and_problems() -> Result<()> {
        let ok = engine().inspect(&artifact("failover-default", "wasm"))?;
        assert_eq!(ok.world, Some(kbha_policy_host::World::Failover));
        assert!(ok.problems.is_empty());
        let bad = engine().inspect(&wat("imports-wasi.wat"))?;
        assert_eq!(bad.world, None);
        assert!(matches!(bad.problems.as_slice(), [PolicyError::ForbiddenImport { .. }]));
        Ok(())
    }
}

mod alert_default {
    use super::*;
    use kbha_core::{AlertDecision, AlertInput};
    use kbha_policy_host::AlertPolicy;

    pub fn covered() {}

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum AlertExpected {
        Decision(AlertDecision),
        Refused(PolicyRefusal),
    }

    fn outcome(policy: &AlertPolicy, input: &AlertInput) -> AlertExpected {
        match policy.decide(input) {
            Ok(eval) => AlertExpected::Decision(eval.decision),
            Err(PolicyError::Refused(r)) => AlertExpected::Refused(r),
            Err(e) => panic!("policy fault: {e}"),
        }
    }

    fn cases() -> Result<Vec<(String, AlertInput, AlertExpected)>> {
        let dir = workspace().join("policies/alert-default/cases");
        let mut cases = vec![];
        for entry in std::fs::read_dir(&dir)? {
            let d = entry?.path();
            let name = d.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let input = serde_json::from_slice(&std::fs::read(d.join("input.json"))?).with_context(|| name.clone())?;
            let expected = serde_json::from_slice(&std::fs::read(d.join("expected.json"))?).with_context(|| name.clone())?;
            cases.push((name, input, expected));
        }
        cases.sort_by(|a, b| a.0.cmp(&b.0));
        anyhow::ensure!(cases.len() >= 2, "no golden cases found in `{}`", dir.display());
        Ok(cases)
    }

    fn load() -> AlertPolicy {
        engine().load::<AlertWorld>(&artifact("alert-default", "wasm")).expect("guest loads")
    }

    #[test]
    fn golden_cases_decide_as_natively() -> Result<()> {
        let policy = load();
        let cases = cases()?;
        assert!(cases.iter().any(|(_, _, e)| matches!(e, AlertExpected::Refused(_))), "a refusal case is covered");
        for (name, input, expected) in cases {
            assert_eq!(outcome(&policy, &input), expected, "case `{name}`");
        }
        Ok(())
    }

    #[test]
    fn precompiled_artifact_decides_the_same() -> Result<()> {
        let wasm = artifact("alert-default", "wasm");
        let digest = kbha_policy_host::digest(&wasm);
        let pre = engine().load_precompiled::<AlertWorld>(&artifact("alert-default", "cwasm"), &digest)?;
        assert_eq!(pre.digest(), digest);
        let fresh = engine().load::<AlertWorld>(&wasm)?;
        for (name, input, _) in cases()? {
            assert_eq!(outcome(&pre, &input), outcome(&fresh, &input), "case `{name}`");
        }
        Ok(())
    }

    #[test]
    fn loaded_as_another_world_is_wrong_world() {
        let wasm = artifact("alert-default", "wasm");
        let e = engine().load::<FailoverWorld>(&wasm).expect_err("not a failover policy");
        assert!(matches!(e, PolicyError::WrongWorld { expected: "failover-policy", .. }), "{e}");
        let ok = engine().inspect(&wasm).expect("inspects");
        assert_eq!(ok.world, Some(kbha_policy_host::World::Alert));
        assert!(ok.problems.is_empty(), "{:?}", ok.problems);
    }

    #[test]
    fn a_decision_with_json_config_stays_well_within_fuel() -> Result<()> {
        let (_, input, _) = cases()?.into_iter().find(|(n, ..)| n == "route-overrides-severity-and-destinations").context("case")?;
        let eval = load().decide(&input)?;
        assert!(eval.fuel_used < Limits::default().fuel / 10, "fuel used: {}", eval.fuel_used);
        Ok(())
    }
}

mod replication_default {
    use super::*;
    use kbha_core::{ReplicationDecision, ReplicationInput};
    use kbha_policy_host::ReplicationPolicy;

    pub fn covered() {}

    fn outcome(policy: &ReplicationPolicy, input: &ReplicationInput) -> Result<ReplicationDecision, PolicyRefusal> {
        match policy.decide(input) {
            Ok(eval) => Ok(eval.decision),
            Err(PolicyError::Refused(r)) => Err(r),
            Err(e) => panic!("policy fault: {e}"),
        }
    }

    /// The same case files the policy crate runs natively.
    fn cases() -> Result<Vec<(String, ReplicationInput, serde_json::Value)>> {
        let dir = workspace().join("policies/replication-default/cases");
        let mut cases = vec![];
        for entry in std::fs::read_dir(&dir)? {
            let d = entry?.path();
            let name = d.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let input = serde_json::from_slice(&std::fs::read(d.join("input.json"))?).with_context(|| name.clone())?;
            let expected = serde_json::from_slice(&std::fs::read(d.join("expected.json"))?).with_context(|| name.clone())?;
            cases.push((name, input, expected));
        }
        anyhow::ensure!(cases.len() >= 2, "no golden cases found in `{}`", dir.display());
        Ok(cases)
    }

    fn as_expected(outcome: Result<ReplicationDecision, PolicyRefusal>) -> serde_json::Value {
        match outcome {
            Ok(d) => serde_json::json!({ "decision": d }),
            Err(r) => serde_json::json!({ "refused": r }),
        }
    }

    #[test]
    fn golden_cases_decide_as_natively() -> Result<()> {
        let policy = engine().load::<ReplicationWorld>(&artifact("replication-default", "wasm"))?;
        for (name, input, expected) in cases()? {
            assert_eq!(as_expected(outcome(&policy, &input)), expected, "case `{name}`");
        }
        Ok(())
    }

    #[test]
    fn precompiled_artifact_decides_the_same() -> Result<()> {
        let wasm = artifact("replication-default", "wasm");
        let digest = kbha_policy_host::digest(&wasm);
        let pre = engine().load_precompiled::<ReplicationWorld>(&artifact("replication-default", "cwasm"), &digest)?;
        let fresh = engine().load::<ReplicationWorld>(&wasm)?;
        for (name, input, _) in cases()? {
            assert_eq!(outcome(&pre, &input), outcome(&fresh, &input), "case `{name}`");
        }
        Ok(())
    }

    #[test]
    fn loaded_as_another_world_is_wrong_world() {
        let e = engine().load::<FailoverWorld>(&artifact("replication-default", "wasm")).expect_err("not a failover policy");
        assert!(matches!(e, PolicyError::WrongWorld { expected: "failover-policy", .. }), "{e}");
    }
}
