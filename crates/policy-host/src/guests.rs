//! Every guest crate the build knows, in one list.
//!
//! `cargo xtask policies` builds exactly these; the host tests expand
//! [`foreach_guest!`](crate::foreach_guest) so a guest without a test fails to
//! compile (the wasmtime test-programs pattern).

use std::path::{Path, PathBuf};

use crate::World;

/// The workspace this crate was built in: where the tests, benches and examples find
/// the guests' sources and golden cases.
pub fn workspace_dir() -> &'static Path {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here)
}

/// Where `cargo xtask policies` and `scripts/build-python-policies.sh` put the built
/// components: `$CARGO_TARGET_DIR/policies`, else `target/policies`.
pub fn built_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => workspace_dir().join(d).join("policies"),
        _ => workspace_dir().join("target/policies"),
    }
}

/// Calls `$mac! { (ident, "artifact-name", "cargo-package", World) ... }`
/// with every guest crate.
#[macro_export]
macro_rules! foreach_guest {
    ($mac:ident) => {
        $mac! {
            (failover_default, "failover-default", "kbha-policy-failover-default", Failover),
            (hostile, "hostile", "kbha-policy-hostile", Failover),
            (replication_default, "replication-default", "kbha-policy-replication-default", Replication),
            (alert_default, "alert-default", "kbha-policy-alert-default", Alert),
            (business_hours, "business-hours", "kbha-policy-business-hours", Failover),
        }
    };
}

/// A guest crate and the component it builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guest {
    /// Artifact name: `<out>/<name>.wasm` and `<out>/<name>.cwasm`.
    pub name: &'static str,
    /// Cargo package to build for wasm32.
    pub package: &'static str,
    /// The world its component must implement.
    pub world: World,
}

impl Guest {
    /// The core module cargo writes (`<package with _>.wasm`).
    pub fn core_module_file(&self) -> String {
        format!("{}.wasm", self.package.replace('-', "_"))
    }
}

macro_rules! guest_table {
    ($(($id:ident, $name:literal, $package:literal, $world:ident)),* $(,)?) => {
        /// Every guest, from [`foreach_guest!`](crate::foreach_guest).
        pub const GUESTS: &[Guest] = &[$(Guest { name: $name, package: $package, world: World::$world }),*];
    };
}
foreach_guest!(guest_table);
