//! The policies a function asks, and what happens when one faults.
//!
//! A policy that traps, runs out of fuel, exceeds memory, returns malformed output or
//! refuses never stops the function: the configured fallback decides (the built-in
//! component, or the world's safe answer) and the fault is reported, so an alert can name
//! the policy's digest and the fault.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kbha_core::{Alert, Severity};
use serde::Serialize;

use crate::Kind;

/// Why a policy produced no usable decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyFault {
    /// Short fault class (`trap`, `out_of_fuel`, `memory_limit`, `malformed_output`, `refused`, ...).
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// A policy of world `K` as a function sees it.
pub trait Decider<K: Kind>: Send + Sync {
    /// Where it came from (`builtin`, `s3://...`).
    fn source(&self) -> &str;
    /// `sha256:<hex>` of the component.
    fn digest(&self) -> &str;
    /// Decides; log lines the policy wrote are forwarded by the implementation.
    fn decide(&self, input: &K::Input) -> Result<K::Decision, PolicyFault>;
    /// The policy deciding right now, for deciders that swap policies while warm
    /// ([`crate::SwappablePolicy`]); `None` for a fixed policy.
    fn current(&self) -> Option<Arc<dyn Decider<K>>> {
        None
    }
    /// Alerts waiting to be delivered with the next decision (a rejected new policy
    /// object); each is handed out once.
    fn take_notices(&self) -> Vec<Alert> {
        Vec::new()
    }
}

/// The configured policy and what replaces it when it faults.
pub struct Policies<K: Kind> {
    /// The configured policy.
    pub primary: Arc<dyn Decider<K>>,
    /// The fallback; `None` means the world's safe answer ([`Kind::hold`]).
    pub fallback: Option<Arc<dyn Decider<K>>>,
    /// `KBHA_SHADOW_POLICY`: asked on the same input, never applied; disagreements are
    /// logged with both decisions and counted in [`Policies::shadow_disagreements`].
    pub shadow: Option<Arc<dyn Decider<K>>>,
    /// Shadow disagreements since the process started.
    pub shadow_disagreements: Arc<AtomicU64>,
}

impl<K: Kind> Clone for Policies<K> {
    fn clone(&self) -> Self {
        Policies {
            primary: Arc::clone(&self.primary),
            fallback: self.fallback.clone(),
            shadow: self.shadow.clone(),
            shadow_disagreements: Arc::clone(&self.shadow_disagreements),
        }
    }
}

/// A decision and who made it.
#[derive(Debug, Clone, Serialize)]
pub struct Decided<D> {
    /// The decision.
    pub decision: D,
    /// Source of the policy that decided (`hold` when nothing could).
    pub decided_by: String,
    /// Digest of the policy that decided.
    pub digest: String,
    /// The configured policy's source.
    pub policy_source: String,
    /// Digest of the configured policy.
    pub policy_digest: String,
    /// The fault of the configured policy (and of the fallback, if it faulted too).
    pub faults: Vec<PolicyFault>,
    /// The alert about the fault, for worlds whose decisions carry no alerts (the alert
    /// router delivers it itself); `None` when it went into the decision or nothing faulted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_alert: Option<Alert>,
    /// Digest of the shadow policy, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_digest: Option<String>,
    /// Whether the shadow decided the same (`false` also when it faulted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_agrees: Option<bool>,
}

impl<K: Kind> Policies<K> {
    /// Only the configured policy, no fallback.
    pub fn single(primary: Arc<dyn Decider<K>>) -> Self {
        Policies::new(primary, None)
    }

    /// The configured policy and its fallback, no shadow.
    pub fn new(primary: Arc<dyn Decider<K>>, fallback: Option<Arc<dyn Decider<K>>>) -> Self {
        Policies { primary, fallback, shadow: None, shadow_disagreements: Arc::default() }
    }

    /// Asks the configured policy, falling back on a fault. Alerts waiting in the
    /// configured policy (a rejected new object) go with this decision.
    pub fn decide(&self, input: &K::Input) -> Decided<K::Decision> {
        // Resolved once: a decision keeps the policy it started with even if a swap
        // happens meanwhile.
        let primary = self.primary.current().unwrap_or_else(|| Arc::clone(&self.primary));
        let mut decided = self.decide_with(&primary, input);
        for notice in self.primary.take_notices() {
            if let Some(left) = K::attach(&mut decided.decision, notice) {
                match &mut decided.fault_alert {
                    None => decided.fault_alert = Some(left),
                    Some(alert) => {
                        alert.detail = format!("{}\n\nAlso: {}. {}", alert.detail, left.summary, left.detail);
                    }
                }
            }
        }
        if let Some(shadow) = &self.shadow {
            let agrees = match shadow.decide(input) {
                Ok(theirs) => {
                    let same = serde_json::to_value(&theirs).ok() == serde_json::to_value(&decided.decision).ok();
                    if !same {
                        tracing::warn!(
                            shadow = shadow.source(),
                            shadow_digest = shadow.digest(),
                            applied = %serde_json::to_string(&decided.decision).unwrap_or_default(),
                            shadow_decision = %serde_json::to_string(&theirs).unwrap_or_default(),
                            "shadow policy disagrees"
                        );
                    }
                    same
                }
                Err(fault) => {
                    tracing::warn!(shadow = shadow.source(), shadow_digest = shadow.digest(), kind = %fault.kind, "shadow policy faulted: {}", fault.message);
                    false
                }
            };
            if !agrees {
                self.shadow_disagreements.fetch_add(1, Ordering::Relaxed);
            }
            decided.shadow_digest = Some(shadow.digest().to_owned());
            decided.shadow_agrees = Some(agrees);
        }
        decided
    }

    fn decide_with(&self, primary: &Arc<dyn Decider<K>>, input: &K::Input) -> Decided<K::Decision> {
        let mut faults = Vec::new();
        let mut candidates: Vec<&Arc<dyn Decider<K>>> = vec![primary];
        if let Some(fb) = &self.fallback {
            // A built-in that faults must not be asked twice.
            if fb.digest() != primary.digest() {
                candidates.push(fb);
            }
        }
        for policy in candidates {
            match policy.decide(input) {
                Ok(mut decision) => {
                    let fault_alert =
                        faults.first().and_then(|f| K::attach(&mut decision, fault_alert::<K>(primary.as_ref(), f, policy.source())));
                    return Decided {
                        decision,
                        decided_by: policy.source().to_owned(),
                        digest: policy.digest().to_owned(),
                        policy_source: primary.source().to_owned(),
                        policy_digest: primary.digest().to_owned(),
                        faults,
                        fault_alert,
                        shadow_digest: None,
                        shadow_agrees: None,
                    };
                }
                Err(fault) => {
                    tracing::error!(policy = policy.source(), digest = policy.digest(), kind = %fault.kind, "policy fault: {}", fault.message);
                    faults.push(fault);
                }
            }
        }
        let first = faults.first().cloned().unwrap_or(PolicyFault { kind: "none".into(), message: "no policy".into() });
        let mut decision = K::hold(input, &format!("no policy could decide ({}: {})", first.kind, first.message));
        let fault_alert = K::attach(&mut decision, fault_alert::<K>(primary.as_ref(), &first, "hold"));
        Decided {
            decision,
            decided_by: "hold".into(),
            digest: "hold".into(),
            policy_source: primary.source().to_owned(),
            policy_digest: primary.digest().to_owned(),
            faults,
            fault_alert,
            shadow_digest: None,
            shadow_agrees: None,
        }
    }
}

fn fault_alert<K: Kind>(policy: &dyn Decider<K>, fault: &PolicyFault, decided_by: &str) -> Alert {
    Alert {
        severity: Severity::Critical,
        summary: format!("{} policy {} faulted ({}); {decided_by} decided instead", K::NAME, policy.source(), fault.kind),
        detail: format!(
            "policy {} (digest {}) failed: {}: {}. The fallback `{decided_by}` made this decision. Fix or roll back the policy.",
            policy.source(),
            policy.digest(),
            fault.kind,
            fault.message
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Alerting, Failover};
    use kbha_core::{AlertInput, AlertSource, AlertStatus, FailoverAction, FailoverDecision, FailoverInput, IncomingAlert};

    /// A stand-in policy: the thing under test is the fallback logic around it.
    struct Fixed<K: Kind> {
        name: &'static str,
        answer: Result<K::Decision, PolicyFault>,
    }

    impl<K: Kind> Decider<K> for Fixed<K> {
        fn source(&self) -> &str {
            self.name
        }
        fn digest(&self) -> &str {
            self.name
        }
        fn decide(&self, _input: &K::Input) -> Result<K::Decision, PolicyFault> {
            self.answer.clone()
        }
    }

    fn trap() -> PolicyFault {
        PolicyFault { kind: "trap".into(), message: "unreachable".into() }
    }

    fn failover_input() -> FailoverInput {
        serde_json::from_value(serde_json::json!({
            "now_ms": 0, "event_id": "e", "trigger": {"kind": "schedule"}, "record_name": "api.example.com.", "targets": [], "config": {}
        }))
        .expect("a minimal failover input")
    }

    fn shift() -> FailoverDecision {
        FailoverDecision { action: FailoverAction::Hold, reason: "from the fallback".into(), alerts: vec![] }
    }

    #[test]
    fn a_fault_falls_back_and_the_decision_carries_the_alert() {
        let policies = Policies::<Failover>::new(
            Arc::new(Fixed { name: "s3://p/bad.wasm", answer: Err(trap()) }),
            Some(Arc::new(Fixed { name: "builtin", answer: Ok(shift()) })),
        );
        let d = policies.decide(&failover_input());
        assert_eq!(d.decided_by, "builtin");
        assert_eq!(d.policy_source, "s3://p/bad.wasm");
        assert_eq!(d.faults, vec![trap()]);
        assert_eq!(d.decision.reason, "from the fallback");
        assert_eq!(d.decision.alerts.len(), 1);
        assert!(d.decision.alerts[0].detail.contains("s3://p/bad.wasm"), "{:?}", d.decision.alerts);
        assert!(d.fault_alert.is_none());
    }

    #[test]
    fn no_fallback_gives_the_worlds_safe_answer() {
        let policies = Policies::<Failover>::single(Arc::new(Fixed { name: "s3://p/bad.wasm", answer: Err(trap()) }));
        let d = policies.decide(&failover_input());
        assert_eq!(d.decided_by, "hold");
        assert_eq!(d.decision.action, FailoverAction::Hold);
        assert!(d.decision.reason.contains("trap"), "{}", d.decision.reason);
    }

    #[test]
    fn a_fallback_with_the_same_digest_is_not_asked_twice() {
        let bad: Arc<dyn Decider<Failover>> = Arc::new(Fixed { name: "builtin", answer: Err(trap()) });
        let policies = Policies::<Failover>::new(Arc::clone(&bad), Some(bad));
        assert_eq!(policies.decide(&failover_input()).faults.len(), 1);
    }

    #[test]
    fn a_shadow_is_never_applied_and_disagreements_are_counted() {
        let other = FailoverDecision { action: FailoverAction::Hold, reason: "the shadow's view".into(), alerts: vec![] };
        let mut policies = Policies::<Failover>::single(Arc::new(Fixed { name: "builtin", answer: Ok(shift()) }));
        policies.shadow = Some(Arc::new(Fixed { name: "s3://p/next.wasm", answer: Ok(other) }));
        let d = policies.decide(&failover_input());
        assert_eq!(d.decision, shift());
        assert_eq!((d.shadow_digest.as_deref(), d.shadow_agrees), (Some("s3://p/next.wasm"), Some(false)));
        policies.shadow = Some(Arc::new(Fixed { name: "s3://p/same.wasm", answer: Ok(shift()) }));
        assert_eq!(policies.decide(&failover_input()).shadow_agrees, Some(true));
        policies.shadow = Some(Arc::new(Fixed { name: "s3://p/bad.wasm", answer: Err(trap()) }));
        let d = policies.decide(&failover_input());
        assert_eq!((d.decided_by.as_str(), d.shadow_agrees), ("builtin", Some(false)));
        assert_eq!(policies.shadow_disagreements.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn alert_hold_delivers_as_critical_and_hands_back_the_fault_alert() {
        let input = AlertInput {
            now_ms: 0,
            event_id: "e".into(),
            alert: IncomingAlert {
                source: AlertSource::Generic,
                name: "disk full".into(),
                status: AlertStatus::Firing,
                region: Some("eu-west-1".into()),
                severity_hint: None,
                summary: "disk full".into(),
                body: "raw".into(),
                labels: Default::default(),
                at_ms: 0,
            },
            active: vec![],
            config: Default::default(),
        };
        let policies = Policies::<Alerting>::single(Arc::new(Fixed { name: "builtin", answer: Err(trap()) }));
        let d = policies.decide(&input);
        assert_eq!(d.decision.severity, Severity::Critical);
        assert_eq!(d.decision.destinations, vec!["critical".to_owned()]);
        assert_eq!(d.decision.dedup_key, "disk full|eu-west-1");
        assert!(d.fault_alert.is_some());
    }
}
