//! `kbha policy test <component> <cases-dir>`: table-driven cases in the golden format
//! (`<case>/input.json`, `<case>/expected.json` holding `{"decision": ...}` or
//! `{"refused": ...}`), a `N passed, M failed` summary and a non-zero exit on failure.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use kbha_policy_host::{Evaluation, PolicyEngine, PolicyError, World};
use serde::Serialize;
use serde_json::{Value, json};

/// What a case produced, as the golden files write it.
fn outcome<D: Serialize>(result: Result<Evaluation<D>, PolicyError>) -> anyhow::Result<Value> {
    Ok(match result {
        Ok(eval) => json!({ "decision": eval.decision }),
        Err(PolicyError::Refused(r)) => json!({ "refused": r }),
        Err(e) => json!({ "fault": { "kind": e.kind(), "message": e.to_string() } }),
    })
}

/// Runs every case directory under `cases` and prints one line per failure and a summary.
pub fn run(component: &Path, cases: &Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(component).with_context(|| format!("cannot read `{}`", component.display()))?;
    let engine = PolicyEngine::new(super::limits()?)?;
    let Some(world) = engine.inspect(&bytes)?.world else {
        bail!("`{}` implements no kbha world; run `kbha policy check` on it", component.display());
    };
    let failover = matches!(world, World::Failover).then(|| engine.load::<kbha_policy_host::FailoverWorld>(&bytes)).transpose()?;
    let replication = matches!(world, World::Replication).then(|| engine.load::<kbha_policy_host::ReplicationWorld>(&bytes)).transpose()?;
    let alert = matches!(world, World::Alert).then(|| engine.load::<kbha_policy_host::AlertWorld>(&bytes)).transpose()?;
    let mut dirs: Vec<_> = std::fs::read_dir(cases)
        .with_context(|| format!("cannot read the cases directory `{}`", cases.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!("no case directories in `{}` (each holds input.json and expected.json)", cases.display());
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in dirs {
        let name = case.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let run_case = |case: &Path| -> anyhow::Result<(Value, Value)> {
            let input = std::fs::read_to_string(case.join("input.json")).context("input.json")?;
            let expected: Value = serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).context("expected.json")?)
                .context("expected.json is not JSON")?;
            let got = if let Some(p) = &failover {
                outcome(p.decide(&serde_json::from_str(&input).context("input.json is not a failover input")?))?
            } else if let Some(p) = &replication {
                outcome(p.decide(&serde_json::from_str(&input).context("input.json is not a replication input")?))?
            } else if let Some(p) = &alert {
                outcome(p.decide(&serde_json::from_str(&input).context("input.json is not an alert input")?))?
            } else {
                bail!("no loaded policy");
            };
            Ok((got, expected))
        };
        match run_case(&case) {
            Ok((got, expected)) if got == expected => passed += 1,
            Ok((got, expected)) => {
                failed += 1;
                println!("FAIL {name}\n  expected: {expected}\n  got:      {got}");
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {name}: {e:#}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
