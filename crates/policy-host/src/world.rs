//! The three policy worlds: [`World`] as a value, and [`PolicyWorld`] as a type
//! ([`FailoverWorld`], [`ReplicationWorld`], [`AlertWorld`]), so that loading
//! ([`PolicyEngine::load`](crate::PolicyEngine::load)) and running
//! ([`Policy`](crate::Policy)) are written once for all of them.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use crate::bindings;
use crate::convert::OutputSize;
use crate::sandbox::State;

/// The world of a policy component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// `failover-policy`.
    Failover,
    /// `replication-policy`.
    Replication,
    /// `alert-policy`.
    Alert,
}

impl World {
    /// Every world, in a fixed order.
    pub const ALL: [World; 3] = [World::Failover, World::Replication, World::Alert];

    /// The WIT world name.
    pub fn wit_name(self) -> &'static str {
        match self {
            World::Failover => "failover-policy",
            World::Replication => "replication-policy",
            World::Alert => "alert-policy",
        }
    }

    /// Parses `failover`, `replication` or `alert` (or the WIT world name).
    pub fn parse(s: &str) -> Option<World> {
        World::ALL.into_iter().find(|w| s == w.wit_name() || w.wit_name().strip_suffix("-policy") == Some(s))
    }

    /// Whether a component linked as `pre` implements this world.
    pub(crate) fn accepts(self, pre: &InstancePre<State>) -> bool {
        match self {
            World::Failover => FailoverWorld::pre(pre.clone()).is_ok(),
            World::Replication => ReplicationWorld::pre(pre.clone()).is_ok(),
            World::Alert => AlertWorld::pre(pre.clone()).is_ok(),
        }
    }
}

/// A policy world as a type: what a policy of it is asked and what it answers.
/// [`PolicyEngine::load`](crate::PolicyEngine::load) takes one to know which
/// world to load, and [`Policy`](crate::Policy) to know how to run it.
///
/// Implemented by [`FailoverWorld`], [`ReplicationWorld`] and [`AlertWorld`]
/// only (its wasmtime side is private to this crate).
pub trait PolicyWorld: sealed::Bindings + Send + Sync + 'static {
    /// This world as a value.
    const WORLD: World;
    /// What a policy of this world is asked.
    type Input: Clone + Into<Self::WitInput>;
    /// What it answers.
    type Decision: From<Self::WitDecision> + OutputSize;
}

pub(crate) mod sealed {
    use super::*;

    /// The wasmtime side of a [`PolicyWorld`]: its `bindgen!` types and how to
    /// call its `decide`.
    pub trait Bindings: Sized {
        /// Name of its loaded-policy type, for `Debug`.
        const POLICY_NAME: &'static str;
        /// The generated pre-instance (`<World>PolicyPre`).
        type Pre: Send + Sync;
        /// The generated input record.
        type WitInput: Send + Sync;
        /// The generated decision record.
        type WitDecision: Send;

        /// When the decision is taken: the input's `now` (copied from `now_ms`).
        fn now_ms(input: &Self::WitInput) -> i64;
        /// Checks that a linked component implements this world.
        fn pre(pre: InstancePre<State>) -> wasmtime::Result<Self::Pre>;
        /// The linked component underneath.
        fn instance_pre(pre: &Self::Pre) -> &InstancePre<State>;
        /// Instantiates in `store` and calls `decide`.
        fn decide(
            pre: &Self::Pre,
            store: &mut Store<State>,
            input: &Self::WitInput,
        ) -> wasmtime::Result<Result<Self::WitDecision, bindings::types::PolicyError>>;
    }
}

use sealed::Bindings as _;

/// Declares a world's type and implements [`PolicyWorld`] for it from its bindings.
macro_rules! policy_world {
    ($(#[$doc:meta])* $name:ident = $world:ident, $policy_name:literal, $pre:ty, $input:ident, $decision:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}

        impl PolicyWorld for $name {
            const WORLD: World = World::$world;
            type Input = kbha_core::$input;
            type Decision = kbha_core::$decision;
        }

        impl sealed::Bindings for $name {
            const POLICY_NAME: &'static str = $policy_name;
            type Pre = $pre;
            type WitInput = bindings::types::$input;
            type WitDecision = bindings::types::$decision;

            fn now_ms(input: &Self::WitInput) -> i64 {
                input.now
            }
            fn pre(pre: InstancePre<State>) -> wasmtime::Result<Self::Pre> {
                <$pre>::new(pre)
            }
            fn instance_pre(pre: &Self::Pre) -> &InstancePre<State> {
                pre.instance_pre()
            }
            fn decide(
                pre: &Self::Pre,
                store: &mut Store<State>,
                input: &Self::WitInput,
            ) -> wasmtime::Result<Result<Self::WitDecision, bindings::types::PolicyError>> {
                let instance = pre.instantiate(&mut *store)?;
                instance.call_decide(&mut *store, input)
            }
        }
    };
}

policy_world!(
    /// The `failover-policy` world, for [`PolicyEngine::load`](crate::PolicyEngine::load).
    FailoverWorld = Failover,
    "FailoverPolicy",
    bindings::failover::FailoverPolicyPre<State>,
    FailoverInput,
    FailoverDecision
);
policy_world!(
    /// The `replication-policy` world, for [`PolicyEngine::load`](crate::PolicyEngine::load).
    ReplicationWorld = Replication,
    "ReplicationPolicy",
    bindings::replication::ReplicationPolicyPre<State>,
    ReplicationInput,
    ReplicationDecision
);
policy_world!(
    /// The `alert-policy` world, for [`PolicyEngine::load`](crate::PolicyEngine::load).
    AlertWorld = Alert,
    "AlertPolicy",
    bindings::alert::AlertPolicyPre<State>,
    AlertInput,
    AlertDecision
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_parse_short_and_wit_names() {
        assert_eq!(World::parse("failover"), Some(World::Failover));
        assert_eq!(World::parse("alert-policy"), Some(World::Alert));
        assert_eq!(World::parse("nope"), None);
    }

    #[test]
    fn world_types_name_their_world() {
        assert_eq!([FailoverWorld::WORLD, ReplicationWorld::WORLD, AlertWorld::WORLD], World::ALL);
    }
}
