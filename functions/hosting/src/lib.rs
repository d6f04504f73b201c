//! kbha-hosting: how the three functions host their policies.
//!
//! One generic path for every world: where a policy comes from ([`PolicySource`]), the
//! built-in components embedded at build time ([`builtin`]), loading from S3
//! ([`load_policies`]), and what decides when a policy faults ([`Policies::decide`]: the
//! fallback, else the world's safe "hold" answer plus an alert naming the fault).
//! wasmtime itself stays in `kbha-policy-host`; this crate only uses its typed API.

pub mod cache;
pub mod claim;
pub mod emf;
mod hosted;
mod kinds;
pub mod lambda;
pub mod record;
mod policies;
pub mod settings;
mod source;
mod swap;
pub mod verify;

pub use hosted::{BuiltinCell, Hosted, LoadError, builtin, load_artifact, load_policies, load_swappable};
pub use kinds::{Alerting, Failover, Kind, Replication};
pub use policies::{Decided, Decider, Policies, PolicyFault};
pub use settings::{Env, SettingError};
pub use source::{Fallback, PolicySource, S3Location, SourceError};
pub use swap::{Checked, Lifecycle, SwappablePolicy};
