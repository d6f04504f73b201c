//! The three policy worlds as types, so lifecycle code is written once.

use std::borrow::Borrow;

use kbha_core::{
    Alert, AlertDecision, AlertInput, FailoverAction, FailoverDecision, FailoverInput, ReplicationDecision, ReplicationInput, Severity,
    Verdict,
};
use kbha_policy_host::{
    AlertPolicy, AlertWorld, Evaluation, FailoverPolicy, FailoverWorld, Policy, PolicyEngine, PolicyError, PolicyWorld, ReplicationPolicy,
    ReplicationWorld,
};
use serde::Serialize;

use crate::embedded;

/// A policy world: its input, its decision, its loaded component, and its safe answer.
///
/// Loading and running are the same for every world ([`PolicyEngine::load`] of its
/// [`PolicyWorld`], then [`Policy::decide`]), so those methods are provided; an impl
/// says only what differs: the types, the built-in and the safe answer.
pub trait Kind: Send + Sync + 'static {
    /// The world in `kbha-policy-host`, with the same input and decision.
    type World: PolicyWorld<Input = Self::Input, Decision = Self::Decision>;
    /// What the policy is asked.
    type Input: Send + Sync;
    /// What it answers.
    type Decision: Clone + std::fmt::Debug + Serialize + Send + Sync;
    /// A loaded component of this world: always `Policy<Self::World>` (the bounds let
    /// the provided methods below say so).
    type Component: From<Policy<Self::World>> + Borrow<Policy<Self::World>> + Send + Sync + 'static;
    /// Short name (`failover`, `replication`, `alert`), used in messages.
    const NAME: &'static str;
    /// Artifact name of the built-in default (`<name>.wasm` in the policy dir).
    const DEFAULT_ARTIFACT: &'static str;

    /// The built-in component's bytes, when this binary was built with them.
    fn builtin_bytes() -> Option<&'static [u8]>;
    /// The built-in component precompiled for this binary's architecture, when it was built
    /// with it (loaded instead of compiling; [`crate::builtin`]).
    fn builtin_precompiled() -> Option<&'static [u8]>;
    /// The answer when no policy could decide: the safe one for this world.
    fn hold(input: &Self::Input, why: &str) -> Self::Decision;
    /// Adds a notice to a decision; gives it back when this world's decisions carry none.
    fn attach(decision: &mut Self::Decision, alert: Alert) -> Option<Alert>;
    /// A canned input a new policy must decide without faulting before it replaces the
    /// running one (a golden case of the world's default policy).
    fn smoke_input() -> Result<Self::Input, String>;

    /// Validates and prepares a component of this world.
    fn load(engine: &PolicyEngine, bytes: &[u8]) -> Result<Self::Component, PolicyError> {
        engine.load::<Self::World>(bytes).map(Into::into)
    }
    /// Loads a component from its precompiled artifact (see [`crate::cache`]), which
    /// must be of the component with `digest`.
    fn load_precompiled(engine: &PolicyEngine, artifact: &[u8], digest: &str) -> Result<Self::Component, PolicyError> {
        engine.load_precompiled::<Self::World>(artifact, digest).map(Into::into)
    }
    /// A loaded component's compiled code as an artifact for [`Kind::load_precompiled`].
    fn artifact(component: &Self::Component) -> Result<Vec<u8>, PolicyError> {
        component.borrow().artifact()
    }
    /// Runs one decision.
    fn evaluate(component: &Self::Component, input: &Self::Input) -> Result<Evaluation<Self::Decision>, PolicyError> {
        component.borrow().decide(input)
    }
}

fn canned<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("the canned input does not parse: {e}"))
}

/// The `failover-policy` world. Safe answer: hold the weights.
#[derive(Debug)]
pub enum Failover {}

impl Kind for Failover {
    type World = FailoverWorld;
    type Input = FailoverInput;
    type Decision = FailoverDecision;
    type Component = FailoverPolicy;
    const NAME: &'static str = "failover";
    const DEFAULT_ARTIFACT: &'static str = "failover-default";

    fn builtin_bytes() -> Option<&'static [u8]> {
        embedded::FAILOVER
    }
    fn builtin_precompiled() -> Option<&'static [u8]> {
        embedded::FAILOVER_PRECOMPILED
    }
    fn hold(_input: &Self::Input, why: &str) -> Self::Decision {
        FailoverDecision { action: FailoverAction::Hold, reason: format!("holding: {why}"), alerts: Vec::new() }
    }
    fn attach(decision: &mut Self::Decision, alert: Alert) -> Option<Alert> {
        decision.alerts.push(alert);
        None
    }
    fn smoke_input() -> Result<Self::Input, String> {
        canned(include_str!("../../../policies/failover-default/cases/healthy-primary-holds/input.json"))
    }
}

/// The `replication-policy` world. Safe answer: a warning that the backup is unverified
/// (never `ok`: nothing vouched for it).
#[derive(Debug)]
pub enum Replication {}

impl Kind for Replication {
    type World = ReplicationWorld;
    type Input = ReplicationInput;
    type Decision = ReplicationDecision;
    type Component = ReplicationPolicy;
    const NAME: &'static str = "replication";
    const DEFAULT_ARTIFACT: &'static str = "replication-default";

    fn builtin_bytes() -> Option<&'static [u8]> {
        embedded::REPLICATION
    }
    fn builtin_precompiled() -> Option<&'static [u8]> {
        embedded::REPLICATION_PRECOMPILED
    }
    fn hold(_input: &Self::Input, why: &str) -> Self::Decision {
        ReplicationDecision { verdict: Verdict::Warning, reason: format!("unverified: {why}"), alerts: Vec::new() }
    }
    fn attach(decision: &mut Self::Decision, alert: Alert) -> Option<Alert> {
        decision.alerts.push(alert);
        None
    }
    fn smoke_input() -> Result<Self::Input, String> {
        canned(include_str!("../../../policies/replication-default/cases/dead-man-fresh-ok/input.json"))
    }
}

/// The `alert-policy` world. Safe answer: deliver as critical, never drop.
#[derive(Debug)]
pub enum Alerting {}

impl Kind for Alerting {
    type World = AlertWorld;
    type Input = AlertInput;
    type Decision = AlertDecision;
    type Component = AlertPolicy;
    const NAME: &'static str = "alert";
    const DEFAULT_ARTIFACT: &'static str = "alert-default";

    fn builtin_bytes() -> Option<&'static [u8]> {
        embedded::ALERT
    }
    fn builtin_precompiled() -> Option<&'static [u8]> {
        embedded::ALERT_PRECOMPILED
    }
    fn hold(input: &Self::Input, why: &str) -> Self::Decision {
        let alert = &input.alert;
        let region = alert.region.as_deref().unwrap_or("-");
        AlertDecision {
            severity: Severity::Critical,
            destinations: vec!["critical".to_owned()],
            dedup_key: format!("{}|{region}", alert.name),
            group_key: alert.name.clone(),
            suppress: None,
            reason: format!("delivered as critical: {why}"),
        }
    }
    fn attach(_decision: &mut Self::Decision, alert: Alert) -> Option<Alert> {
        Some(alert)
    }
    fn smoke_input() -> Result<Self::Input, String> {
        canned(include_str!("../../../policies/alert-default/cases/critical-alarm-routes-to-critical/input.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_world_has_a_canned_input() {
        assert!(Failover::smoke_input().is_ok());
        assert!(Replication::smoke_input().is_ok());
        assert!(Alerting::smoke_input().is_ok());
    }
}
