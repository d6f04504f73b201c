//! Loading: one generic path from component bytes (or a precompiled artifact) to a
//! [`Policy`] of a [`PolicyWorld`], plus [`PolicyEngine::inspect`] for `kbha policy check`.

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre};

use crate::imports::forbidden_imports;
use crate::sandbox::State;
use crate::{Policy, PolicyEngine, PolicyError, PolicyWorld, World};

/// `sha256:<hex>` of some bytes; the policy digest is this of the component.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What a component looks like from outside, for `kbha policy check`.
#[derive(Debug)]
pub struct Inspection {
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    /// Size in bytes.
    pub size_bytes: usize,
    /// Import names.
    pub imports: Vec<String>,
    /// Export names.
    pub exports: Vec<String>,
    /// The world it implements, when one of kbha's matches.
    pub world: Option<World>,
    /// Problems found (forbidden imports, no matching world); empty when
    /// the component would load.
    pub problems: Vec<PolicyError>,
}

pub(crate) fn compile_err(e: wasmtime::Error) -> PolicyError {
    PolicyError::Compile(format!("{e:#}"))
}

impl PolicyEngine {
    /// Loads a component of world `W`, e.g. `engine.load::<FailoverWorld>(&bytes)`.
    pub fn load<W: PolicyWorld>(&self, bytes: &[u8]) -> Result<Policy<W>, PolicyError> {
        check_header(bytes)?;
        let component = Component::new(&self.engine, bytes).map_err(compile_err)?;
        let pre = self.link::<W>(&component)?;
        Ok(self.policy(&component, digest(bytes), pre))
    }

    /// Loads a component of world `W` from [`PolicyEngine::precompile`] output
    /// whose component digest must equal `expected_digest`.
    pub fn load_precompiled<W: PolicyWorld>(&self, artifact: &[u8], expected_digest: &str) -> Result<Policy<W>, PolicyError> {
        let component = self.deserialize(artifact, expected_digest)?;
        let pre = self.link::<W>(&component)?;
        Ok(self.policy(&component, expected_digest.to_string(), pre))
    }

    /// Describes a component: digest, imports, exports, matching world and
    /// problems. Fails only when the bytes are no component at all.
    pub fn inspect(&self, bytes: &[u8]) -> Result<Inspection, PolicyError> {
        check_header(bytes)?;
        let component = Component::new(&self.engine, bytes).map_err(compile_err)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let mut problems: Vec<PolicyError> = forbidden_imports(&imports, self.limits.wasi).collect();
        let world = if problems.is_empty() {
            let pre = self.linker.instantiate_pre(&component).map_err(compile_err)?;
            World::ALL.into_iter().find(|w| w.accepts(&pre))
        } else {
            None
        };
        if world.is_none() && problems.is_empty() {
            problems.push(PolicyError::WrongWorld {
                expected: "failover-policy | replication-policy | alert-policy",
                detail: format!("exports are [{}]", exports.join(", ")),
            });
        }
        Ok(Inspection { digest: digest(bytes), size_bytes: bytes.len(), imports, exports, world, problems })
    }

    /// Checks imports and exports, builds the `InstancePre` and checks it
    /// against world `W`.
    fn link<W: PolicyWorld>(&self, component: &Component) -> Result<W::Pre, PolicyError> {
        let world = W::WORLD.wit_name();
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(n, _)| n.to_string()).collect();
        if let Some(e) = forbidden_imports(&imports, self.limits.wasi).next() {
            return Err(e);
        }
        if ty.get_export(&self.engine, "decide").is_none() {
            let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
            return Err(PolicyError::WrongWorld {
                expected: world,
                detail: format!("no `decide` export (exports are [{}])", exports.join(", ")),
            });
        }
        let pre: InstancePre<State> = self.linker.instantiate_pre(component).map_err(compile_err)?;
        W::pre(pre).map_err(|e| PolicyError::WrongWorld { expected: world, detail: format!("{e:#}") })
    }

    /// A loaded policy of `component`, linked as `pre`.
    fn policy<W: PolicyWorld>(&self, component: &Component, digest: String, pre: W::Pre) -> Policy<W> {
        Policy { wasi: self.imports_wasi(component), engine: self.clone(), digest, pre }
    }

    /// Whether `component` imports any WASI interface.
    fn imports_wasi(&self, component: &Component) -> bool {
        component.component_type().imports(&self.engine).any(|(n, _)| n.starts_with("wasi:"))
    }
}

/// Tells a component from a core module (or garbage) before compiling, so
/// the error says which it is.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), PolicyError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(PolicyError::NotWasm);
    }
    // Bytes 4..8: version and layer; layer 0 is a core module, 1 a component.
    match (&bytes[4..6], &bytes[6..8]) {
        (_, [0, 0]) => Err(PolicyError::NotAComponent),
        (_, [1, 0]) => Ok(()),
        _ => Err(PolicyError::NotWasm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tells_module_from_component() {
        assert!(matches!(check_header(b"\0asm\x01\0\0\0"), Err(PolicyError::NotAComponent)));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(check_header(b"{\"json\": 1}"), Err(PolicyError::NotWasm)));
    }

    #[test]
    fn digest_is_prefixed_sha256() {
        let d = digest(b"");
        assert_eq!(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(d.len(), crate::precompiled::DIGEST_LEN);
    }
}
