//! Every way loading or running a policy can fail.

use kbha_core::PolicyRefusal;

/// Why a policy could not be loaded or did not produce a decision.
///
/// The host treats every case as a policy fault (fall back, alert); the
/// variants exist so the alert and the decision record can say which fault.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The bytes are a core WebAssembly module, not a component.
    #[error("this is a core wasm module, not a component; build it with `kbha policy build` (or `wasm-tools component new`)")]
    NotAComponent,
    /// The bytes are not WebAssembly at all.
    #[error("not a webassembly binary (bad magic or version); check the file is a `.wasm` policy component")]
    NotWasm,
    /// The component does not implement the requested world.
    #[error("component does not implement world `{expected}`: {detail}; build it against that world of wit/kbha.wit")]
    WrongWorld {
        /// The world the host asked for.
        expected: &'static str,
        /// What did not match.
        detail: String,
    },
    /// The component imports something the host does not offer.
    #[error(
        "component imports `{name}`, which kbha does not provide; policies may import only `kbha:policy/host@0.3.0`, and WASI 0.2 only when WASI is on (`KBHA_POLICY_WASI=on`, `Limits::wasi`; for Python policies){}",
        if crate::WASI_BUILT_IN { "" } else { "; and this binary was built without the `wasi` feature: rebuild it with `--features python-policies` first" }
    )]
    ForbiddenImport {
        /// The import's name.
        name: String,
    },
    /// The component was built against another version of the kbha contract.
    #[error(
        "component was built against `kbha:policy@{found}`, but this host serves `kbha:policy@{served}`, which is not compatible with it; rebuild the policy against the current wit/kbha.wit (`kbha policy build`)"
    )]
    ContractVersion {
        /// The version the component imports.
        found: String,
        /// The version the host serves.
        served: &'static str,
    },
    /// Compiling or instantiating the component failed.
    #[error("cannot compile the component: {0}")]
    Compile(String),
    /// A precompiled artifact is corrupt, foreign or for another engine.
    #[error("precompiled artifact rejected: {0}; rebuild it with `kbha policy build`")]
    Precompiled(String),
    /// The policy trapped (panic, `unreachable`, out-of-bounds access...).
    #[error("policy trapped: {0}")]
    Trap(String),
    /// The policy used up its fuel (an endless or too long computation).
    #[error("policy ran out of fuel after {fuel} units; it loops or needs a larger `Limits::fuel`")]
    OutOfFuel {
        /// The fuel it was given.
        fuel: u64,
    },
    /// The policy tried to grow its memory past the cap.
    #[error("policy exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimit {
        /// The cap.
        limit_bytes: usize,
    },
    /// The decision is larger than the output cap.
    #[error("policy output is {size_bytes} bytes, over the cap of {limit_bytes}; shorten reasons and alerts")]
    OutputTooLarge {
        /// Size of the returned decision (strings and list entries).
        size_bytes: usize,
        /// The cap.
        limit_bytes: usize,
    },
    /// The guest returned values the host could not read (bad string, bad
    /// discriminant, out-of-bounds pointer).
    #[error("policy returned malformed output: {0}")]
    MalformedOutput(String),
    /// The policy itself refused to decide (its `policy-error`).
    #[error("policy refused to decide: {0}")]
    Refused(PolicyRefusal),
    /// Reading a policy file failed.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The engine could not be set up or the host failed internally.
    #[error("policy host failure: {0}")]
    Host(String),
}

impl PolicyError {
    /// A short stable name for metrics, alerts and decision records.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::NotAComponent => "not_a_component",
            PolicyError::NotWasm => "not_wasm",
            PolicyError::WrongWorld { .. } => "wrong_world",
            PolicyError::ForbiddenImport { .. } => "forbidden_import",
            PolicyError::ContractVersion { .. } => "contract_version",
            PolicyError::Compile(_) => "compile",
            PolicyError::Precompiled(_) => "precompiled",
            PolicyError::Trap(_) => "trap",
            PolicyError::OutOfFuel { .. } => "out_of_fuel",
            PolicyError::MemoryLimit { .. } => "memory_limit",
            PolicyError::OutputTooLarge { .. } => "output_too_large",
            PolicyError::MalformedOutput(_) => "malformed_output",
            PolicyError::Refused(_) => "refused",
            PolicyError::Io { .. } => "io",
            PolicyError::Host(_) => "host",
        }
    }
}
