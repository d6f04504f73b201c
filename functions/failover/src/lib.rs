//! kbha-failover: the failover Lambda's logic, as a library so `kbha replay`, the drill
//! and the tests drive the same handler the binary runs.
//!
//! Flow per alarm transition or tick (`handler`): normalise event -> finish earlier work
//! (`journal`) -> skip duplicates and stale transitions -> observe what AWS says now:
//! Route 53 records and health checks, CloudWatch alarm states, replication ages, merged
//! with the observed history (`observe`) -> policy (wasm component) and the stepped shift
//! under way (`plan`) -> guardrails ->
//! compare-and-swap change -> state write -> SNS notice (`announce`) -> decision record.

mod announce;
pub mod config;
pub mod handler;
pub mod journal;
pub mod ledger;
pub mod observe;
pub mod ops;
pub mod plan;
mod start;

pub use config::{ConfigError, FailoverConfig};
pub use handler::{ActionTaken, DecisionRecord, FailoverError, FailoverFunction, ReplicationStatus};
pub use journal::{Notice, PendingChange, StoredState};
pub use kbha_lambda::record::Invocation;
pub use kbha_policy_lifecycle::{LoadError, PolicyFault};
pub use start::{LambdaFailover, start, start_with};

/// The failover policy and its fallback.
pub type Policies = kbha_policy_lifecycle::Policies<kbha_policy_lifecycle::Failover>;
/// A failover decision and who made it.
pub type Decided = kbha_policy_lifecycle::Decided<kbha_core::FailoverDecision>;

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
