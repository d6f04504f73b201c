//! `kbha policy check <component>`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kbha_policy_host::PolicyEngine;

/// Prints what the host sees in the component; non-zero exit on problems.
pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let engine = PolicyEngine::new(super::limits()?)?;
    let inspection = engine.inspect(&bytes).with_context(|| format!("`{}`", path.display()))?;
    println!("component: {}", path.display());
    println!("digest:    {}", inspection.digest);
    println!("size:      {} bytes", inspection.size_bytes);
    println!("world:     {}", inspection.world.map(|w| format!("kbha:policy/{}@0.3.0", w.wit_name())).unwrap_or_else(|| "none".into()));
    println!("imports:   [{}]", inspection.imports.join(", "));
    println!("exports:   [{}]", inspection.exports.join(", "));
    if inspection.problems.is_empty() {
        println!("ok");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &inspection.problems {
        eprintln!("problem: {p}");
    }
    Ok(ExitCode::FAILURE)
}
