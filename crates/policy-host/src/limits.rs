//! Limits: what one decision may spend (fuel, memory, output, log lines), how many
//! decisions run at once, and whether the WASI sandbox is offered.

use crate::PolicyError;

/// Per-evaluation limits, fixed for an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per decision (roughly one unit per wasm instruction). Fuel, not a
    /// wall clock, so a replayed decision fails or succeeds the same way.
    pub fuel: u64,
    /// Largest linear memory a policy may have, in bytes.
    pub memory_bytes: usize,
    /// Largest decision, in bytes of strings plus a small cost per list entry.
    pub output_bytes: usize,
    /// Log lines kept per decision; later lines are counted and dropped.
    pub log_lines: usize,
    /// Longest log line kept, in bytes; longer lines are cut.
    pub log_line_bytes: usize,
    /// Policy instances alive at once across the engine (pooling allocator
    /// slots); one per concurrent decision.
    pub max_concurrent: u32,
    /// Offer the empty WASI 0.2 sandbox (see the crate docs) to policies that
    /// import it. Off by default: a policy importing WASI is then refused with
    /// [`PolicyError::ForbiddenImport`]. Turn it on only for an engine that
    /// runs interpreted policies ([`Limits::python`]); Rust policies never need it.
    /// Needs the crate's `wasi` feature ([`WASI_BUILT_IN`]): without it, an engine
    /// with this on is refused ([`PolicyEngine::new`](crate::PolicyEngine::new)).
    pub wasi: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 50_000_000,
            memory_bytes: 64 << 20,
            output_bytes: 256 << 10,
            log_lines: 64,
            log_line_bytes: 2048,
            max_concurrent: 8,
            wasi: false,
        }
    }
}

/// Whether this build offers WASI, i.e. was built with the `wasi` feature (the
/// functions' `python-policies`); [`Limits::wasi`] needs it.
pub const WASI_BUILT_IN: bool = cfg!(feature = "wasi");

/// What to do when WASI is asked of a build without it, for error messages.
pub const WASI_NOT_BUILT_IN: &str = "this binary was built without the `wasi` feature of kbha-policy-host, so it cannot run \
     policies that import WASI (Python policies); rebuild it with `--features python-policies` (a Lambda function: \
     `cargo lambda build --release --arm64 --features python-policies`; see docs/deploy.md) or leave `KBHA_POLICY_WASI` off";

impl Limits {
    /// The limits for the `KBHA_POLICY_WASI` setting: unset or `off` gives
    /// [`Limits::default`] (WASI refused), `on` gives [`Limits::python`], or an
    /// error saying how to rebuild in a build without WASI ([`WASI_BUILT_IN`]).
    pub fn for_wasi_setting(value: Option<&str>) -> Result<Self, PolicyError> {
        match value.map(str::trim) {
            None | Some("") | Some("off") => Ok(Self::default()),
            Some("on") if !WASI_BUILT_IN => Err(PolicyError::Host(format!("`KBHA_POLICY_WASI` is `on`, but {WASI_NOT_BUILT_IN}"))),
            Some("on") => Ok(Self::python()),
            Some(other) => Err(PolicyError::Host(format!("`KBHA_POLICY_WASI` must be `on` or `off`, got `{other}`"))),
        }
    }

    /// Limits for a CPython component (componentize-py): WASI on and
    /// 100 million units of fuel. The sample's decision burns ~0.5 million
    /// (the Rust sample ~14 thousand: CPython interprets, and its start-up is
    /// snapshotted into the component at build time, so it costs no fuel), so
    /// this leaves 200x headroom for heavier policies, while an endless Python
    /// loop (tests/python.rs) is stopped after about 20 ms. Memory stays at the
    /// default 64 MiB: the sample decides within 16 MiB, and a policy
    /// allocating without end gets [`PolicyError::MemoryLimit`].
    pub fn python() -> Self {
        Self { fuel: 100_000_000, wasi: true, ..Self::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasi_setting_is_on_off_or_refused() {
        assert_eq!(Limits::for_wasi_setting(None).ok(), Some(Limits::default()));
        assert_eq!(Limits::for_wasi_setting(Some("off")).ok(), Some(Limits::default()));
        assert!(Limits::for_wasi_setting(Some("yes")).is_err());
        match Limits::for_wasi_setting(Some("on")) {
            Ok(limits) => assert!(WASI_BUILT_IN && limits == Limits::python()),
            Err(e) => assert!(!WASI_BUILT_IN && e.to_string().contains("--features python-policies"), "{e}"),
        }
    }
}
