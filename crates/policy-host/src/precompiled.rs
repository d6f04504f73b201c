//! Precompiled artifacts: a component compiled once for this engine and CPU,
//! wrapped in an envelope that pins it to its policy's digest, and read back with
//! the crate's only `unsafe` (wasmtime's `Component::deserialize`).

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::load::{compile_err, digest};
use crate::{PolicyEngine, PolicyError};

const PRECOMPILED_MAGIC: &[u8] = b"kbha-precompiled-policy/1\0";
/// `sha256:` plus 64 hex digits.
pub(crate) const DIGEST_LEN: usize = 7 + 64;

/// The precompiled artifact layout `deserialize` reads: `MAGIC | policy digest |
/// sha256 of code | code`.
pub(crate) fn envelope(digest: &str, code: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(code.len() + 128);
    out.extend_from_slice(PRECOMPILED_MAGIC);
    out.extend_from_slice(digest.as_bytes());
    out.extend_from_slice(&Sha256::digest(code));
    out.extend_from_slice(code);
    out
}

impl PolicyEngine {
    /// Compiles a component for this engine (and this host's CPU) into an
    /// artifact for [`PolicyEngine::load_precompiled`]. The component is
    /// validated first: only loadable policies are precompiled.
    pub fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>, PolicyError> {
        let inspection = self.inspect(bytes)?;
        if let Some(p) = inspection.problems.into_iter().next() {
            return Err(p);
        }
        let code = self.engine.precompile_component(bytes).map_err(compile_err)?;
        Ok(envelope(&digest(bytes), &code))
    }

    /// Compiles a component, with this engine's configuration, for `target` (a target triple
    /// such as `aarch64-unknown-linux-gnu`), so a binary built for that target can embed it
    /// (the built-in policies, `cargo xtask policies`) and skip compiling at cold start.
    /// wasmtime compiles for the target's baseline CPU, so every CPU of that architecture
    /// loads it; an engine of another configuration or wasmtime version refuses it (and the
    /// caller compiles the component instead). Needs the `cross-precompile` feature for
    /// targets other than the host's architecture.
    pub fn precompile_for_target(&self, bytes: &[u8], target: &str) -> Result<Vec<u8>, PolicyError> {
        let inspection = self.inspect(bytes)?;
        if let Some(p) = inspection.problems.into_iter().next() {
            return Err(p);
        }
        let mut config = crate::engine::config(&self.limits);
        config.target(target).map_err(crate::engine::host_err)?;
        let engine = wasmtime::Engine::new(&config).map_err(crate::engine::host_err)?;
        let code = engine.precompile_component(bytes).map_err(compile_err)?;
        Ok(envelope(&digest(bytes), &code))
    }

    /// Turns a precompiled artifact back into a component.
    ///
    /// The artifact layout is `MAGIC | policy digest (71 bytes) | sha256 of
    /// code (32 bytes) | code`, written only by [`PolicyEngine::precompile`].
    #[allow(unsafe_code)]
    pub(crate) fn deserialize(&self, artifact: &[u8], expected_digest: &str) -> Result<Component, PolicyError> {
        let bad = |m: &str| PolicyError::Precompiled(m.to_string());
        let rest = artifact.strip_prefix(PRECOMPILED_MAGIC).ok_or_else(|| bad("not a kbha precompiled policy (bad magic)"))?;
        if rest.len() < DIGEST_LEN + 32 {
            return Err(bad("truncated header"));
        }
        let (recorded, rest) = rest.split_at(DIGEST_LEN);
        let (code_hash, code) = rest.split_at(32);
        if recorded != expected_digest.as_bytes() {
            return Err(PolicyError::Precompiled(format!(
                "artifact is of policy `{}`, expected `{expected_digest}`",
                String::from_utf8_lossy(recorded)
            )));
        }
        if Sha256::digest(code).as_slice() != code_hash {
            return Err(bad("code does not match its recorded sha256 (corrupt file)"));
        }
        // SAFETY: `Component::deserialize` trusts the bytes to be wasmtime's
        // own compiled code. These bytes carry the envelope only
        // `PolicyEngine::precompile` writes, their sha256 was just checked
        // against the envelope, and they are of the policy the caller pinned
        // by digest. Callers load artifacts only from their own build output
        // (never from S3 or any shared location; remote policies arrive as
        // `.wasm` and go through `PolicyEngine::load`). wasmtime itself rejects
        // artifacts of another version, configuration or CPU.
        unsafe { Component::deserialize(&self.engine, code) }.map_err(|e| PolicyError::Precompiled(format!("{e:#}")))
    }
}
