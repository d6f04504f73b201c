//! kbha-failover: the failover Lambda's logic, as a library so `kbha replay`, the drill
//! and the tests drive the same handler the binary runs.
//!
//! Flow per alarm transition or tick: normalise event -> gather facts (state object,
//! Route 53 records, health checks, replication ages) -> policy (wasm component) ->
//! guardrails -> compare-and-swap change -> state write -> SNS notice -> decision record.

pub mod config;
pub mod handler;

pub use config::{ConfigError, FailoverConfig};
pub use handler::{ActionTaken, DecisionRecord, FailoverError, FailoverFunction, Notice, PendingChange, ReplicationStatus, StoredState};
pub use kbha_hosting::{LoadError, PolicyFault};

/// The failover policy and its fallback.
pub type Policies = kbha_hosting::Policies<kbha_hosting::Failover>;
/// A failover decision and who made it.
pub type Decided = kbha_hosting::Decided<kbha_core::FailoverDecision>;

impl From<FailoverError> for lambda_runtime::Diagnostic {
    /// The error type says whether retrying can help, so retries are a decision.
    fn from(e: FailoverError) -> Self {
        let class = if e.retryable() { "Retryable" } else { "NonRetryable" };
        let kind = match &e {
            FailoverError::Event(_) => "UnrecognisedEvent",
            FailoverError::Aws(_) => "Aws",
            FailoverError::RecordSet { .. } => "RecordSetMismatch",
            FailoverError::ConflictExhausted { .. } => "ConflictExhausted",
            FailoverError::NoticeInProgress { .. } => "NoticeInProgress",
            FailoverError::CorruptState { .. } => "CorruptState",
        };
        lambda_runtime::Diagnostic { error_type: format!("kbha.{class}.{kind}"), error_message: e.to_string() }
    }
}
