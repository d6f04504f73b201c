//! Embeds the built-in failover policy built by `cargo kbha policy build`.
//!
//! When it is missing the binary still builds (the `kbha` CLI that builds the policies
//! depends on this crate), but says so, and loading the built-in policy then fails with
//! what to run.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = std::env::var("KBHA_POLICY_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| manifest.join("../../target"));
        target.join("policies")
    });
    let dir = dir.canonicalize().unwrap_or(dir);
    let builtin = dir.join("failover-default.wasm");
    println!("cargo:rerun-if-changed={}", builtin.display());
    println!("cargo:rerun-if-env-changed=KBHA_POLICY_DIR");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let code = if builtin.exists() {
        format!("Some(include_bytes!({:?}))", builtin.display().to_string())
    } else {
        println!("cargo:warning=no built-in policy at {}: run `cargo kbha policy build`, then build again", builtin.display());
        "None".to_owned()
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("builtin.rs");
    let text = format!(
        "/// The default failover component, when it was built before this crate.\n\
         pub static BUILTIN_FAILOVER: Option<&[u8]> = {code};\n\
         /// Where `cargo kbha policy build` writes components.\n\
         pub const POLICY_DIR: &str = {:?};\n",
        dir.display().to_string()
    );
    if let Err(e) = std::fs::write(&out, text) {
        panic!("cannot write {}: {e}", out.display());
    }
}
