//! kbha-policy-lifecycle: a policy from its source to a decision.
//!
//! One generic path for every world ([`Kind`]): where a policy comes from ([`PolicySource`]),
//! the built-in components embedded at build time ([`builtin`]), the checks an S3 object
//! passes before it runs ([`verify`]: pin, signature; then [`load_checked`]: world, imports,
//! limits, a smoke decision), the warm swap ([`SwappablePolicy`]), the compiled cache
//! ([`cache`]), and what decides when a policy faults ([`Policies::decide`]: the fallback,
//! else the world's safe "hold" answer plus an alert naming the fault). [`load_swappable`]
//! is the one way a function loads its policies.
//!
//! wasmtime itself stays in `kbha-policy-host`; this crate only uses its typed API. The
//! Lambda side (settings, records, the runtime entry) is `kbha-lambda`.
//!
//! Modules depend one way: `verify`, `source`, `embedded` <- `kinds` <- `cache`, `policies`
//! <- `hosted` <- `swap` <- `load`.

// Panics are contained by unwinding: lambda_runtime answers a panicking invocation with an
// error and keeps the instance, the policy host contains a panic on a WASI policy's thread,
// the verifier's walk thread hands its panic back. With panic = "abort" each would kill the
// runtime instead, so such a build is refused (the workspace's [profile.release] says why).
#[cfg(panic = "abort")]
compile_error!(
    "kbha's functions contain panics by unwinding: build with panic = \"unwind\" (the workspace's [profile.release] declares it; do not override CARGO_PROFILE_RELEASE_PANIC)"
);

pub mod cache;
mod embedded;
mod hosted;
mod kinds;
mod load;
mod policies;
mod source;
mod swap;
pub mod verify;

pub use hosted::{Hosted, LoadError, builtin, configure_engine, load_artifact, load_checked};
/// Whether the three built-in policies (`cargo xtask policies`) were embedded when this
/// crate was compiled. Each Lambda binary asserts it at compile time: a function without
/// its built-in policy would only fail at init, in AWS.
pub const BUILTINS_EMBEDDED: bool = embedded::ALL_PRESENT;
pub use kinds::{Alerting, Failover, Kind, Replication};
pub use load::load_swappable;
pub use policies::{Decided, Decider, Policies, PolicyFault};
pub use source::{Fallback, PolicySource, S3Location, SourceError};
pub use swap::{Checked, Lifecycle, SwappablePolicy};
