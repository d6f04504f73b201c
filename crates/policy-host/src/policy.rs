//! A loaded policy ([`Policy`]) and one decision of it: a fresh store under the
//! engine's limits, every failure turned into its typed [`PolicyError`].

use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

use crate::convert::OutputSize;
use crate::engine::host_err;
use crate::sandbox::State;
use crate::{AlertWorld, FailoverWorld, Limits, PolicyEngine, PolicyError, PolicyWorld, ReplicationWorld, bindings, precompiled};

/// A log line written by a policy.
pub type LogLine = (kbha_core::Level, String);

/// One decision and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<D> {
    /// The policy's answer.
    pub decision: D,
    /// Lines the policy logged, up to [`Limits::log_lines`].
    pub logs: Vec<LogLine>,
    /// Lines dropped beyond the budget.
    pub logs_dropped: usize,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Wall time of instantiation plus the call.
    pub duration: Duration,
}

/// A loaded component of world `W`, from [`PolicyEngine::load`] or
/// [`PolicyEngine::load_precompiled`].
pub struct Policy<W: PolicyWorld> {
    /// Whether the component imports WASI (only possible on a WASI engine).
    pub(crate) wasi: bool,
    pub(crate) engine: PolicyEngine,
    pub(crate) digest: String,
    pub(crate) pre: W::Pre,
}

/// A loaded `failover-policy` component.
pub type FailoverPolicy = Policy<FailoverWorld>;
/// A loaded `replication-policy` component.
pub type ReplicationPolicy = Policy<ReplicationWorld>;
/// A loaded `alert-policy` component.
pub type AlertPolicy = Policy<AlertWorld>;

impl<W: PolicyWorld> Policy<W> {
    /// `sha256:<hex>` of the component bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// This policy's compiled code as a [`PolicyEngine::precompile`]-style
    /// artifact, without compiling again: what a compiled-module cache keeps.
    pub fn artifact(&self) -> Result<Vec<u8>, PolicyError> {
        let code = W::instance_pre(&self.pre).component().serialize().map_err(host_err)?;
        Ok(precompiled::envelope(&self.digest, &code))
    }

    /// Runs the policy on `input` in a fresh store under the engine's
    /// limits.
    pub fn decide(&self, input: &W::Input) -> Result<Evaluation<W::Decision>, PolicyError> {
        let wit_input = input.clone().into();
        self.run(W::now_ms(&wit_input), &wit_input)
    }

    /// Runs one decision taken at `now_ms` in a fresh store and turns every
    /// failure into its typed error.
    fn run(&self, now_ms: i64, input: &W::WitInput) -> Result<Evaluation<W::Decision>, PolicyError> {
        let start = Instant::now();
        let limits = &self.engine.limits;
        let body = || -> Result<_, PolicyError> {
            let mut store = self.engine.store(now_ms)?;
            let result = W::decide(&self.pre, &mut store, input);
            let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
            Ok((result, fuel_used, store.into_data()))
        };
        // wasmtime-wasi's synchronous bindings enter a tokio runtime for some
        // calls (streams, poll), which panics on a thread already inside one,
        // as a Lambda handler is. A WASI decision therefore runs on its own
        // short-lived thread (tens of microseconds, next to milliseconds of
        // CPython); a policy without WASI imports (any Rust one) runs inline,
        // on a WASI engine too.
        let (result, fuel_used, state) = if self.wasi {
            std::thread::scope(|s| s.spawn(body).join()).map_err(|_| PolicyError::Host("the policy's thread panicked".to_string()))??
        } else {
            body()?
        };
        let duration = start.elapsed();
        let decision = match result {
            Ok(Ok(d)) => W::Decision::from(d),
            Ok(Err(refusal)) => return Err(PolicyError::Refused(refusal.into())),
            Err(e) => return Err(classify(e, &state, limits)),
        };
        let size = decision.output_bytes();
        if size > limits.output_bytes {
            return Err(PolicyError::OutputTooLarge { size_bytes: size, limit_bytes: limits.output_bytes });
        }
        Ok(Evaluation { decision, logs: state.logs, logs_dropped: state.logs_dropped, fuel_used, duration })
    }
}

impl<W: PolicyWorld> std::fmt::Debug for Policy<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(W::POLICY_NAME).field("digest", &self.digest).finish_non_exhaustive()
    }
}

/// Turns a failed call into its typed error, reading why from the store's data.
fn classify(e: wasmtime::Error, state: &State, limits: &Limits) -> PolicyError {
    if state.memory_limit_hit {
        return PolicyError::MemoryLimit { limit_bytes: limits.memory_bytes };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PolicyError::OutOfFuel { fuel: limits.fuel },
        Some(Trap::AllocationTooLarge) => PolicyError::MemoryLimit { limit_bytes: limits.memory_bytes },
        Some(trap) => PolicyError::Trap(trap.to_string()),
        // Not a trap: lifting the result failed (bad utf-8, bad discriminant,
        // pointer out of bounds) or the pool is exhausted.
        None => {
            let text = format!("{e:#}");
            if text.contains("maximum concurrent") || text.contains("instance limit") {
                PolicyError::Host(text)
            } else {
                PolicyError::MalformedOutput(text)
            }
        }
    }
}

impl FailoverPolicy {
    /// **Bench-only**: one instance kept for many decisions, to measure what
    /// instantiation costs (`kbha bench`, `cargo bench -p kbha-policy-host`).
    /// Production code uses [`Policy::decide`]: a fresh store per
    /// decision, so no state leaks from one decision into the next.
    pub fn reused_instance(&self) -> Result<ReusedFailoverInstance<'_>, PolicyError> {
        // The sandbox's wall clock (WASI policies only) reads the epoch.
        let mut store = self.engine.store(0)?;
        let instance = self.pre.instantiate(&mut store).map_err(host_err)?;
        Ok(ReusedFailoverInstance { policy: self, store, instance })
    }
}

/// **Bench-only**: a failover policy instance that decides many times in
/// one store (see [`FailoverPolicy::reused_instance`]). Fuel is refilled and
/// logs cleared before each decision; guest memory is not reset.
pub struct ReusedFailoverInstance<'a> {
    policy: &'a FailoverPolicy,
    store: Store<State>,
    instance: bindings::failover::FailoverPolicy,
}

impl std::fmt::Debug for ReusedFailoverInstance<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReusedFailoverInstance").field("digest", &self.policy.digest()).finish_non_exhaustive()
    }
}

impl ReusedFailoverInstance<'_> {
    /// Runs the policy on `input` in this instance's store.
    pub fn decide(&mut self, input: &kbha_core::FailoverInput) -> Result<kbha_core::FailoverDecision, PolicyError> {
        let limits = &self.policy.engine.limits;
        self.store.set_fuel(limits.fuel).map_err(host_err)?;
        self.store.data_mut().logs.clear();
        let wit_input = input.clone().into();
        match self.instance.call_decide(&mut self.store, &wit_input) {
            Ok(Ok(d)) => Ok(d.into()),
            Ok(Err(refusal)) => Err(PolicyError::Refused(refusal.into())),
            Err(e) => Err(classify(e, self.store.data(), limits)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn policies_can_live_in_an_arc_across_threads() {
        assert_send_sync::<PolicyEngine>();
        assert_send_sync::<FailoverPolicy>();
        assert_send_sync::<ReplicationPolicy>();
        assert_send_sync::<AlertPolicy>();
    }
}
