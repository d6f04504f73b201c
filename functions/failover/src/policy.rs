//! The policies the handler asks, and what happens when one faults.
//!
//! A policy that traps, runs out of fuel, exceeds memory, returns malformed output or
//! refuses never stops the function: the configured fallback decides (the built-in
//! component, or hold) and the fault is reported so an alert can name the policy's
//! digest and the fault.

use std::sync::Arc;

use kbha_core::{Alert, FailoverAction, FailoverDecision, FailoverInput, Severity};
use serde::Serialize;

/// Why a policy produced no usable decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyFault {
    /// Short fault class (`trap`, `out_of_fuel`, `memory_limit`, `malformed_output`, `refused`, ...).
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// A failover policy as the handler sees it.
pub trait FailoverDecider: Send + Sync {
    /// Where it came from (`builtin`, `s3://...`).
    fn source(&self) -> &str;
    /// `sha256:<hex>` of the component.
    fn digest(&self) -> &str;
    /// Decides; log lines the policy wrote are forwarded by the implementation.
    fn decide(&self, input: &FailoverInput) -> Result<FailoverDecision, PolicyFault>;
}

/// The configured policy and what replaces it when it faults.
#[derive(Clone)]
pub struct Policies {
    /// The configured policy.
    pub primary: Arc<dyn FailoverDecider>,
    /// The fallback; `None` means hold.
    pub fallback: Option<Arc<dyn FailoverDecider>>,
}

/// A decision and who made it.
#[derive(Debug, Clone, Serialize)]
pub struct Decided {
    /// The decision to check against the guardrails.
    pub decision: FailoverDecision,
    /// Source of the policy that decided (`hold` when nothing could).
    pub decided_by: String,
    /// Digest of the policy that decided.
    pub digest: String,
    /// The configured policy's source and digest, and its fault when it faulted.
    pub policy_source: String,
    /// Digest of the configured policy.
    pub policy_digest: String,
    /// The fault of the configured policy (and of the fallback, if it faulted too).
    pub faults: Vec<PolicyFault>,
}

impl Policies {
    /// Asks the configured policy, falling back on a fault.
    pub fn decide(&self, input: &FailoverInput) -> Decided {
        let primary = &self.primary;
        let mut faults = Vec::new();
        let mut candidates: Vec<&Arc<dyn FailoverDecider>> = vec![primary];
        if let Some(fb) = &self.fallback {
            // A built-in that faults must not be asked twice.
            if fb.digest() != primary.digest() {
                candidates.push(fb);
            }
        }
        for policy in candidates {
            match policy.decide(input) {
                Ok(mut decision) => {
                    if !faults.is_empty() {
                        decision.alerts.push(fault_alert(primary.as_ref(), &faults[0], policy.source()));
                    }
                    return Decided {
                        decision,
                        decided_by: policy.source().to_owned(),
                        digest: policy.digest().to_owned(),
                        policy_source: primary.source().to_owned(),
                        policy_digest: primary.digest().to_owned(),
                        faults,
                    };
                }
                Err(fault) => {
                    tracing::error!(policy = policy.source(), digest = policy.digest(), kind = %fault.kind, "policy fault: {}", fault.message);
                    faults.push(fault);
                }
            }
        }
        let first = faults.first().cloned().unwrap_or(PolicyFault { kind: "none".into(), message: "no policy".into() });
        Decided {
            decision: FailoverDecision {
                action: FailoverAction::Hold,
                reason: format!("holding: no policy could decide ({}: {})", first.kind, first.message),
                alerts: vec![fault_alert(primary.as_ref(), &first, "hold")],
            },
            decided_by: "hold".into(),
            digest: "hold".into(),
            policy_source: primary.source().to_owned(),
            policy_digest: primary.digest().to_owned(),
            faults,
        }
    }
}

fn fault_alert(policy: &dyn FailoverDecider, fault: &PolicyFault, decided_by: &str) -> Alert {
    Alert {
        severity: Severity::Critical,
        summary: format!("failover policy {} faulted ({}); {decided_by} decided instead", policy.source(), fault.kind),
        detail: format!(
            "policy {} (digest {}) failed: {}: {}. The fallback `{decided_by}` made this decision. Fix or roll back the policy.",
            policy.source(),
            policy.digest(),
            fault.kind,
            fault.message
        ),
    }
}
