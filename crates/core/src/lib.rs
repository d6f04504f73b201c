//! kbha-core: the pure middle of kbha.
//!
//! Domain types (the JSON formats of policy inputs, decisions and decision
//! records), normalising AWS event shapes, and the guardrails. Nothing here
//! performs I/O or reads the clock: time is always an input.

pub mod backup_events;
pub mod dedup;
pub mod events;
pub mod guardrails;
pub mod plan;
pub mod state;
pub mod time;
pub mod types;
mod wit_convert;

pub use types::*;
