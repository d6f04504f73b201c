//! kbha-policy-host: loads, validates and runs kbha policy components.
//!
//! This is the only crate that depends on wasmtime. A policy is a component
//! implementing one world of `wit/kbha.wit`; it imports nothing but
//! `kbha:policy/host@0.3.0` (its `log`), and every call gets a fresh store with
//! a fuel budget, a memory cap and an output-size cap.
//!
//! With the `wasi` cargo feature ([`WASI_BUILT_IN`]; the functions' `python-policies`),
//! an engine built with [`Limits::wasi`] on (see [`Limits::python`]) also
//! offers WASI 0.2, for interpreted policies such as CPython components built
//! with componentize-py, which import it whether they use it or not. That WASI
//! is an empty sandbox, built fresh for each decision: no preopened
//! directories, no environment variables, no arguments, an empty stdin,
//! stdout and stderr discarded, no network (TCP, UDP and name lookup refused,
//! every socket address denied), a wall clock that always reads the input's
//! `now`, a monotonic clock that always reads 0, and random bytes from a fixed
//! sequence, so a replayed decision is still the same decision.
//!
//! ```no_run
//! # fn main() -> Result<(), kbha_policy_host::PolicyError> {
//! # let component_bytes: Vec<u8> = vec![];
//! # let input: kbha_core::FailoverInput = todo!();
//! use kbha_policy_host::{FailoverWorld, Limits, PolicyEngine};
//! let engine = PolicyEngine::new(Limits::default())?;
//! let policy = engine.load::<FailoverWorld>(&component_bytes)?;
//! let eval = policy.decide(&input)?;
//! println!("{} -> {:?} ({} fuel)", policy.digest(), eval.decision, eval.fuel_used);
//! # Ok(()) }
//! ```
//!
//! By concern: `engine` (wasmtime's configuration), `limits`, `sandbox` (what a
//! decision's store holds and offers), `imports` (what a policy may import),
//! `world` (the three worlds as types), `load` (bytes to a loaded policy),
//! `precompiled` (compiled artifacts), `policy` (running a decision).

mod bindings;
mod convert;
mod engine;
mod error;
pub mod guests;
mod imports;
mod limits;
mod load;
mod policy;
mod precompiled;
mod sandbox;
mod world;

pub use engine::PolicyEngine;
pub use error::PolicyError;
pub use imports::{ALLOWED_IMPORTS, CONTRACT_VERSION, WASI_IMPORTS};
pub use limits::{Limits, WASI_BUILT_IN, WASI_NOT_BUILT_IN};
pub use load::{Inspection, digest};
pub use policy::{AlertPolicy, Evaluation, FailoverPolicy, LogLine, Policy, ReplicationPolicy, ReusedFailoverInstance};
pub use world::{AlertWorld, FailoverWorld, PolicyWorld, ReplicationWorld, World};
