//! kbha-replication-verifier: the replication verifier Lambda's logic, as a library so
//! `kbha replay`, the drill and the tests drive the same handler the binary runs.
//!
//! Flow per backup object: normalise event -> gather facts (HEAD, manifest, sidecar, one
//! streaming pass for SHA-256 and the gzip/tar walk, previous backup, cross-region copy)
//! -> policy (wasm component) -> verification record (create-once) -> per-region status
//! for the failover RPO gate -> SNS notice for non-ok verdicts -> decision record.
//! On a schedule: the dead-man check of every source. On its own schedule or on demand: the
//! restore test of each source's newest verified backup ([`restore_test`]).

pub mod config;
pub mod datastores;
pub mod handler;
pub mod manifest;
pub mod restore;
pub mod restore_test;
mod start;
pub mod stream;

pub use config::{ManifestMode, SourceConfig, VerifierConfig};
pub use handler::{ActionTaken, DecisionRecord, VerificationRecord, VerifierError, VerifierFunction};
pub use kbha_lambda::record::Invocation;
pub use start::{LambdaVerifier, start};

/// The replication policy and its fallback.
pub type Policies = kbha_policy_lifecycle::Policies<kbha_policy_lifecycle::Replication>;

impl From<VerifierError> for lambda_runtime::Diagnostic {
    /// The error type says whether retrying can help, so retries are a decision.
    fn from(e: VerifierError) -> Self {
        let class = if e.retryable() { "Retryable" } else { "NonRetryable" };
        let kind = match &e {
            VerifierError::Event(_) => "UnrecognisedEvent",
            VerifierError::Aws(_) => "Aws",
            VerifierError::Read { .. } => "ReadFailed",
            VerifierError::Changed { .. } => "ObjectChanged",
            VerifierError::CorruptRecord { .. } => "CorruptRecord",
            VerifierError::ConflictExhausted { .. } => "ConflictExhausted",
            VerifierError::NoticeInProgress { .. } => "NoticeInProgress",
            VerifierError::UnknownSource { .. } => "UnknownSource",
            VerifierError::Scratch { .. } => "RestoreScratch",
        };
        lambda_runtime::Diagnostic { error_type: format!("kbha.{class}.{kind}"), error_message: e.to_string() }
    }
}
