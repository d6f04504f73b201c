//! `kbha policy eval <component> --input <json> [--world ...]`.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use kbha_policy_host::{Evaluation, PolicyEngine, World};
use serde::Serialize;

/// Evaluates the component on the input and prints the decision JSON.
pub fn run(component: &Path, input: &Path, world: Option<&str>, verbose: bool) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(component).with_context(|| format!("cannot read `{}`", component.display()))?;
    let input_text = if input == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read the input from stdin")?;
        s
    } else {
        std::fs::read_to_string(input).with_context(|| format!("cannot read `{}`", input.display()))?
    };
    let engine = PolicyEngine::new(super::limits()?)?;
    let world = match world {
        Some(w) => World::parse(w).with_context(|| format!("unknown world `{w}`"))?,
        None => match engine.inspect(&bytes)?.world {
            Some(w) => w,
            None => bail!("`{}` implements no kbha world; run `kbha policy check` on it", component.display()),
        },
    };
    let parse_err = || format!("`{}` is not a valid {} input", input.display(), world.wit_name());
    match world {
        World::Failover => {
            let input = serde_json::from_str(&input_text).with_context(parse_err)?;
            print(engine.load::<kbha_policy_host::FailoverWorld>(&bytes)?.decide(&input)?, verbose)
        }
        World::Replication => {
            let input = serde_json::from_str(&input_text).with_context(parse_err)?;
            print(engine.load::<kbha_policy_host::ReplicationWorld>(&bytes)?.decide(&input)?, verbose)
        }
        World::Alert => {
            let input = serde_json::from_str(&input_text).with_context(parse_err)?;
            print(engine.load::<kbha_policy_host::AlertWorld>(&bytes)?.decide(&input)?, verbose)
        }
    }
}

fn print<D: Serialize>(eval: Evaluation<D>, verbose: bool) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&eval.decision)?);
    if verbose {
        for (level, line) in &eval.logs {
            eprintln!("log {level:?}: {line}");
        }
        if eval.logs_dropped > 0 {
            eprintln!("({} log lines dropped)", eval.logs_dropped);
        }
        eprintln!("fuel used: {}, time: {:?}", eval.fuel_used, eval.duration);
    }
    Ok(ExitCode::SUCCESS)
}
