//! `kbha policy new <name> --world failover|replication|alert [--dir <parent>]`: scaffolds
//! a guest crate that builds with `kbha policy build --crate <dir>` and tests with
//! `kbha policy test` (component) and `cargo test` (natively).
//!
//! The crate is its own workspace, so it builds wherever it lives, with or without a kbha
//! checkout: the guest SDK (`kbha-policy-sdk`), kbha-core (its `testing` feature and the
//! golden test use it) and the WIT files come embedded in `kbha` (build.rs) and are written
//! to `<crate>/vendor/` (the repository's layout: `wit/`, `policies/sdk/`, `crates/core/`),
//! which the crate depends on by path. It starts from the Cargo.lock kbha was built with:
//! every dependency then resolves to a version already in the local registry cache.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use kbha_policy_host::World;

mod vendor {
    include!(concat!(env!("OUT_DIR"), "/vendor.rs"));
}

const FAILOVER_LIB: &str = include_str!("templates/failover.rs.tmpl");
const REPLICATION_LIB: &str = include_str!("templates/replication.rs.tmpl");
const ALERT_LIB: &str = include_str!("templates/alert.rs.tmpl");
const GOLDEN: &str = include_str!("templates/golden.rs.tmpl");

/// What the scaffold writes for one world: its lib, the kbha-core types its golden test
/// names, and example cases (input, expected).
struct WorldTemplate {
    lib: &'static str,
    input_type: &'static str,
    decision_type: &'static str,
    cases: &'static [(&'static str, &'static str, &'static str)],
}

fn template(world: World) -> WorldTemplate {
    match world {
        World::Failover => WorldTemplate {
            lib: FAILOVER_LIB,
            input_type: "FailoverInput",
            decision_type: "FailoverDecision",
            cases: &[
                (
                    "primary-alarm-shifts-to-secondary",
                    include_str!("../../../../policies/failover-default/cases/primary-alarm-shifts-to-secondary/input.json"),
                    r#"{"decision": {"action": {"kind": "shift_weights", "weights": [{"set_identifier": "primary", "weight": 0}, {"set_identifier": "secondary", "weight": 100}], "force": false}, "reason": "primary `primary` is down; shifting traffic to `secondary`", "alerts": []}}"#,
                ),
                (
                    "healthy-primary-holds",
                    include_str!("../../../../policies/failover-default/cases/healthy-primary-holds/input.json"),
                    r#"{"decision": {"action": {"kind": "hold"}, "reason": "primary `primary` needs no change", "alerts": []}}"#,
                ),
            ],
        },
        World::Replication => WorldTemplate {
            lib: REPLICATION_LIB,
            input_type: "ReplicationInput",
            decision_type: "ReplicationDecision",
            cases: &[
                (
                    "good-backup-ok",
                    include_str!("../../../../policies/replication-default/cases/good-backup-ok/input.json"),
                    r#"{"decision": {"verdict": "ok", "reason": "`chromadb/2026/11/26/chroma backup 10:00.tar.gz` arrived", "alerts": []}}"#,
                ),
                (
                    "checksum-mismatch-corrupt",
                    include_str!("../../../../policies/replication-default/cases/checksum-mismatch-corrupt/input.json"),
                    r#"{"decision": {"verdict": "corrupt", "reason": "`chromadb/2026/11/26/chroma backup 10:00.tar.gz` has SHA-256 6060606060606060606060606060606060606060606060606060606060606060, not 5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f", "alerts": []}}"#,
                ),
            ],
        },
        World::Alert => WorldTemplate {
            lib: ALERT_LIB,
            input_type: "AlertInput",
            decision_type: "AlertDecision",
            cases: &[
                (
                    "critical-alarm-routes-to-critical",
                    include_str!("../../../../policies/alert-default/cases/critical-alarm-routes-to-critical/input.json"),
                    r#"{"decision": {"severity": "critical", "destinations": ["critical"], "dedup_key": "kbha-api-primary-unhealthy|us-east-1", "group_key": "kbha-api-primary-unhealthy", "suppress": null, "reason": "`kbha-api-primary-unhealthy` goes to critical"}}"#,
                ),
                (
                    "generic-text-goes-to-warning",
                    include_str!("../../../../policies/alert-default/cases/generic-text-goes-to-default/input.json"),
                    r#"{"decision": {"severity": "warning", "destinations": ["warning"], "dedup_key": "disk full on host-1|-", "group_key": "disk full on host-1", "suppress": null, "reason": "`disk full on host-1` goes to warning"}}"#,
                ),
            ],
        },
    }
}

/// A TOML basic string (paths may hold backslashes or quotes).
fn toml_str(p: &Path) -> String {
    format!("\"{}\"", p.display().to_string().replace('\\', "\\\\").replace('"', "\\\""))
}

fn cargo_toml(name: &str, world: World, sdk: &Path, core: &Path) -> String {
    let w = world.wit_name().trim_end_matches("-policy");
    let (sdk, core) = (toml_str(sdk), toml_str(core));
    let version = env!("CARGO_PKG_VERSION");
    format!(
        r#"[package]
name = "{name}"
description = "A kbha {w} policy (a WebAssembly component)."
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the component; rlib: native tests call `decide` directly.
crate-type = ["cdylib", "rlib"]

[dependencies]
kbha-policy-sdk = {{ path = {sdk}, features = ["{w}"] }}

[dev-dependencies]
kbha-policy-sdk = {{ path = {sdk}, features = ["{w}", "testing"] }}
kbha-core = {{ path = {core} }}

# Its own workspace: the crate builds wherever it lives. vendor/ holds kbha's guest SDK,
# kbha-core and the WIT files, as `kbha policy new` wrote them (kbha {version}); a newer
# kbha can write them again into a fresh crate.
[workspace]
exclude = ["vendor"]

# `kbha policy build` builds this profile (kbha's own guests' profile) into target/wasm.
[profile.policy]
inherits = "release"
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = "debuginfo"
debug = false
"#
    )
}

fn readme(name: &str, world: World) -> String {
    let w = world.wit_name().trim_end_matches("-policy");
    format!(
        r#"# {name}

A kbha {w} policy: a WebAssembly component implementing `kbha:policy/{world}@0.3.0`
(`vendor/wit/kbha.wit`). The policy is `decide` in `src/lib.rs`.

In this directory, with the `kbha` command line (`cargo install --path crates/cli` in
a kbha checkout):

    kbha policy build                   # -> target/policies/{name}.wasm (and .cwasm)
    kbha policy test target/policies/{name}.wasm cases
    kbha policy diff builtin target/policies/{name}.wasm --inputs cases
    kbha policy publish target/policies/{name}.wasm --to s3://<bucket>/{name}.wasm --sign <key>

and natively: `cargo test`. `vendor/` is the guest SDK, kbha-core and the WIT files that
came with kbha: keep it with the crate (and in version control); do not edit it.

Cases live in `cases/<case>/input.json` (the input, kbha-core's JSON format) and
`cases/<case>/expected.json` (`{{"decision": ...}}` or `{{"refused": ...}}`). Regenerate the
expectations with `KBHA_BLESS=1 cargo test --test golden` and review the diff.

Rules for a policy: decide from the input alone (`now` is the time; there is no clock,
file, network or environment), return within the host's fuel and memory limits, and
refuse (`PolicyError::InvalidConfig` / `InvalidInput`) rather than guess.
"#,
        world = world.wit_name()
    )
}

/// Runs `kbha policy new`; writes `<parent>/<name>/`.
pub fn run(name: &str, world: &str, parent: &Path) -> anyhow::Result<ExitCode> {
    let world = World::parse(world).with_context(|| format!("unknown world `{world}`; use failover, replication or alert"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') || name.starts_with('-') {
        bail!("`{name}` is not a usable crate name: use lowercase letters, digits and `-`");
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!("`{}` exists; choose another name or remove it", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let t = template(world);
    let lib_name = name.replace('-', "_");
    let mut files: Vec<(PathBuf, String)> = vec![
        ("Cargo.toml".into(), cargo_toml(name, world, Path::new("vendor/policies/sdk"), Path::new("vendor/crates/core"))),
        ("README.md".into(), readme(name, world)),
        // `cargo test` in the crate builds into its own target/.
        (".gitignore".into(), "/target\n".to_owned()),
        ("src/lib.rs".into(), t.lib.replace("__NAME__", name)),
        (
            "tests/golden.rs".into(),
            GOLDEN.replace("__INPUT__", t.input_type).replace("__DECISION__", t.decision_type).replace("__LIB__", &lib_name),
        ),
    ];
    for (case, input, expected) in t.cases {
        files.push((Path::new("cases").join(case).join("input.json"), (*input).to_owned()));
        let pretty = serde_json::from_str::<serde_json::Value>(expected)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .context("a template case does not parse")?;
        files.push((Path::new("cases").join(case).join("expected.json"), pretty + "\n"));
    }
    // kbha's lock: the same dependency versions as kbha's own guests.
    files.push(("Cargo.lock".into(), vendor::CARGO_LOCK.to_owned()));
    for (rel, text) in vendor::VENDOR {
        files.push((Path::new("vendor").join(rel), (*text).to_owned()));
    }
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("cannot create `{}`", p.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    println!("created {} ({} policy, {} files)", dir.display(), world.wit_name(), files.len());
    println!("next: kbha policy build --crate {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_sdk_is_complete_and_self_contained() {
        let paths: Vec<&str> = vendor::VENDOR.iter().map(|(p, _)| *p).collect();
        for p in ["wit/kbha.wit", "policies/sdk/Cargo.toml", "policies/sdk/src/lib.rs", "crates/core/Cargo.toml", "crates/core/src/lib.rs"]
        {
            assert!(paths.contains(&p), "{p} not vendored: {paths:?}");
        }
        for (p, text) in vendor::VENDOR.iter().filter(|(p, _)| p.ends_with("Cargo.toml")) {
            assert!(!text.contains("workspace"), "{p} still inherits from the workspace:\n{text}");
            assert!(toml::from_str::<toml::Table>(text).is_ok(), "{p} is not TOML:\n{text}");
        }
        assert!(vendor::CARGO_LOCK.contains("name = \"wit-bindgen\""));
    }

    #[test]
    fn every_template_case_expectation_is_json() {
        for world in [World::Failover, World::Replication, World::Alert] {
            for (name, input, expected) in template(world).cases {
                assert!(serde_json::from_str::<serde_json::Value>(input).is_ok(), "{name}: input");
                let v: serde_json::Value = serde_json::from_str(expected).unwrap_or_default();
                assert!(v.get("decision").is_some(), "{name}: expected");
            }
        }
    }
}
