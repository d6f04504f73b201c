//! kbha-hosting: how the three functions host their policies.
//!
//! One generic path for every world: where a policy comes from ([`PolicySource`]), the
//! built-in components embedded at build time ([`builtin`]), loading from S3
//! ([`load_swappable`]), and what decides when a policy faults ([`Policies::decide`]: the
//! fallback, else the world's safe "hold" answer plus an alert naming the fault).
//! wasmtime itself stays in `kbha-policy-host`; this crate only uses its typed API.

// Panics are contained by unwinding: lambda_runtime answers a panicking invocation with an
// error and keeps the instance, the policy host contains a panic on a WASI policy's thread,
// the verifier's walk thread hands its panic back. With panic = "abort" each would kill the
// runtime instead, so such a build is refused (the workspace's [profile.release] says why).
#[cfg(panic = "abort")]
compile_error!(
    "kbha's functions contain panics by unwinding: build with panic = \"unwind\" (the workspace's [profile.release] declares it; do not override CARGO_PROFILE_RELEASE_PANIC)"
);

pub mod cache;
pub mod claim;
pub mod emf;
mod hosted;
mod kinds;
pub mod lambda;
mod policies;
pub mod record;
pub mod settings;
mod source;
mod swap;
pub mod verify;

pub use hosted::{BuiltinCell, Hosted, LoadError, builtin, load_artifact, load_swappable};
/// Whether the three built-in policies (`cargo xtask policies`) were embedded when this
/// crate was compiled. Each Lambda binary asserts it at compile time: a function without
/// its built-in policy would only fail at init, in AWS.
pub const BUILTINS_EMBEDDED: bool = hosted::builtin_bytes::ALL_PRESENT;
pub use kinds::{Alerting, Failover, Kind, Replication};
pub use policies::{Decided, Decider, Policies, PolicyFault};
pub use settings::{Env, SettingError};
pub use source::{Fallback, PolicySource, S3Location, SourceError};
pub use swap::{Checked, Lifecycle, SwappablePolicy};
