//! `kbha policy diff <old> <new> --inputs <dir>`: where two policies decide differently.
//!
//! Both policies are hosted the way a function hosts them (kbha-policy-lifecycle's [`Decider`]),
//! asked on every input, and compared as JSON. Exit status as `diff(1)`: 0 when none
//! differ, 1 when some do, 2 on trouble (unreadable component or input).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use kbha_policy_host::{PolicyEngine, World};
use kbha_policy_lifecycle::{Alerting, Decider, Failover, Hosted, Kind, Replication, builtin};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// One input: its case name and file.
#[derive(Debug)]
struct Input {
    name: String,
    path: PathBuf,
}

/// Inputs under `dir`: golden case directories (`<case>/input.json`) and plain
/// `<name>.json` files, sorted by name.
fn inputs(dir: &Path) -> anyhow::Result<Vec<Input>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read the inputs directory `{}`", dir.display()))? {
        let path = entry?.path();
        let stem = |p: &Path| p.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if path.is_dir() && path.join("input.json").is_file() {
            found.push(Input { name: stem(&path), path: path.join("input.json") });
        } else if path.is_file() && path.extension().is_some_and(|e| e == "json") {
            found.push(Input { name: stem(&path), path });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    if found.is_empty() {
        bail!("no inputs in `{}` (expected `<case>/input.json` directories or `*.json` files)", dir.display());
    }
    Ok(found)
}

/// A policy argument: `builtin`, or the path of a `.wasm` component (with its bytes).
pub(super) enum Operand {
    Builtin,
    Component(PathBuf, Vec<u8>),
}

impl Operand {
    pub(super) fn read(arg: &Path) -> anyhow::Result<Self> {
        if arg == Path::new("builtin") {
            return Ok(Operand::Builtin);
        }
        let bytes = std::fs::read(arg).with_context(|| format!("cannot read `{}`", arg.display()))?;
        Ok(Operand::Component(arg.to_owned(), bytes))
    }

    /// The world the component implements (as `kbha policy check` reads it).
    pub(super) fn world(&self, engine: &PolicyEngine) -> anyhow::Result<Option<World>> {
        let Operand::Component(path, bytes) = self else { return Ok(None) };
        match engine.inspect(bytes).with_context(|| format!("`{}`", path.display()))?.world {
            Some(w) => Ok(Some(w)),
            None => bail!("`{}` implements no kbha world; run `kbha policy check` on it", path.display()),
        }
    }

    pub(super) fn load<K: Kind>(&self) -> anyhow::Result<Arc<dyn Decider<K>>> {
        let policy: Arc<dyn Decider<K>> = match self {
            Operand::Builtin => builtin::<K>()?,
            Operand::Component(path, bytes) => Arc::new(Hosted::<K>::from_bytes(&path.display().to_string(), bytes)?),
        };
        Ok(policy)
    }
}

/// What a policy answered, as JSON: `{"decision": ...}` or `{"fault": {...}}`.
fn outcome<K: Kind>(policy: &dyn Decider<K>, input: &K::Input) -> Value {
    match policy.decide(input) {
        Ok(d) => json!({ "decision": d }),
        Err(f) => json!({ "fault": { "kind": f.kind, "message": f.message } }),
    }
}

/// Top-level fields of the decisions that differ (`action, reason`), to say at a glance
/// what changed.
fn differing_fields(old: &Value, new: &Value) -> String {
    match (old.get("decision"), new.get("decision")) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(String::as_str).collect::<Vec<_>>().join(", ")
        }
        _ => "outcome".to_owned(),
    }
}

/// Counts of one comparison run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Inputs compared.
    pub inputs: usize,
    /// Inputs on which the two policies decided differently.
    pub differ: usize,
}

fn compare<K: Kind>(old: &Operand, new: &Operand, inputs: &[Input]) -> anyhow::Result<Summary>
where
    K::Input: DeserializeOwned,
{
    let (old_policy, new_policy) = (old.load::<K>()?, new.load::<K>()?);
    let mut differ = 0;
    for input in inputs {
        let text = std::fs::read_to_string(&input.path).with_context(|| format!("cannot read `{}`", input.path.display()))?;
        let parsed: K::Input =
            serde_json::from_str(&text).with_context(|| format!("`{}` is not a {} input", input.path.display(), K::NAME))?;
        let (a, b) = (outcome(old_policy.as_ref(), &parsed), outcome(new_policy.as_ref(), &parsed));
        if a != b {
            differ += 1;
            println!("{} (differs in: {})\n  old: {a}\n  new: {b}", input.name, differing_fields(&a, &b));
        }
    }
    Ok(Summary { inputs: inputs.len(), differ })
}

fn diff(old: &Path, new: &Path, dir: &Path, world: Option<&str>) -> anyhow::Result<Summary> {
    let engine = PolicyEngine::new(super::limits()?)?;
    let (old, new) = (Operand::read(old)?, Operand::read(new)?);
    let given = world.map(|w| World::parse(w).with_context(|| format!("unknown world `{w}`"))).transpose()?;
    let found = [old.world(&engine)?, new.world(&engine)?, given];
    let mut worlds = found.iter().flatten();
    let Some(&world) = worlds.next() else {
        bail!("both policies are `builtin`: say which one with --world failover|replication|alert");
    };
    if let Some(other) = worlds.find(|w| **w != world) {
        bail!("the policies implement different worlds ({} and {}); compare policies of one world", world.wit_name(), other.wit_name());
    }
    let inputs = inputs(dir)?;
    match world {
        World::Failover => compare::<Failover>(&old, &new, &inputs),
        World::Replication => compare::<Replication>(&old, &new, &inputs),
        World::Alert => compare::<Alerting>(&old, &new, &inputs),
    }
}

/// Runs `kbha policy diff`; prints the differences and `N inputs, D differ`.
pub fn run(old: &Path, new: &Path, dir: &Path, world: Option<&str>) -> anyhow::Result<ExitCode> {
    match diff(old, new, dir, world) {
        Ok(s) => {
            println!("{} inputs, {} differ", s.inputs, s.differ);
            Ok(ExitCode::from(u8::from(s.differ > 0)))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}
