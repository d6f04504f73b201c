//! Embeds the built-in policies built by `cargo xtask policies`
//! (`<target>/policies/{failover,replication,alert}-default.wasm`).
//!
//! A missing one does not fail this crate's build (the `kbha` CLI that builds the policies
//! depends on it) but is reported; each Lambda binary then refuses to compile
//! (`BUILTINS_EMBEDDED`), so no function ships without its built-in policy.
use std::fmt::Write as _;
use std::path::PathBuf;

const DEFAULTS: [(&str, &str); 3] =
    [("BUILTIN_FAILOVER", "failover-default"), ("BUILTIN_REPLICATION", "replication-default"), ("BUILTIN_ALERT", "alert-default")];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = std::env::var("KBHA_POLICY_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| manifest.join("../../target"));
        target.join("policies")
    });
    let dir = dir.canonicalize().unwrap_or(dir);
    println!("cargo:rerun-if-env-changed=KBHA_POLICY_DIR");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let mut text = String::new();
    let mut all = true;
    for (constant, name) in DEFAULTS {
        let path = dir.join(format!("{name}.wasm"));
        println!("cargo:rerun-if-changed={}", path.display());
        let code = if path.exists() {
            format!("Some(include_bytes!({:?}))", path.display().to_string())
        } else {
            println!("cargo:warning=no built-in policy at {}: run `cargo xtask policies`, then build again", path.display());
            all = false;
            "None".to_owned()
        };
        let _ = writeln!(
            text,
            "/// The `{name}` component, when it was built before this crate.\npub static {constant}: Option<&[u8]> = {code};"
        );
    }
    // The same components precompiled for the architecture this crate is built for
    // (`cargo xtask policies` writes `<name>.<arch>.cwasm`): a cold start then loads compiled
    // code instead of compiling. Optional: without one, the component is compiled at init.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    for (constant, name) in DEFAULTS {
        let path = dir.join(format!("{name}.{arch}.cwasm"));
        println!("cargo:rerun-if-changed={}", path.display());
        let code = if path.exists() { format!("Some(include_bytes!({:?}))", path.display().to_string()) } else { "None".to_owned() };
        let _ = writeln!(
            text,
            "/// `{name}` precompiled for {arch}, when it was built before this crate.\npub static {constant}_PRECOMPILED: Option<&[u8]> = {code};"
        );
    }
    let _ = writeln!(text, "/// All three were there when this crate was built.\npub const ALL_PRESENT: bool = {all};");
    let _ = writeln!(
        text,
        "/// Where `cargo xtask policies` writes components.\npub const POLICY_DIR: &str = {:?};",
        dir.display().to_string()
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("builtin.rs");
    if let Err(e) = std::fs::write(&out, text) {
        panic!("cannot write {}: {e}", out.display());
    }
}
