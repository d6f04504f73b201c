//! Test-only failover policies that misbehave on purpose.
//!
//! The `mode` config key picks the misbehaviour; the host's tests check that
//! each one ends in its own typed error, quickly, without harming the host.
//! Never deploy this component.
//!
//! | `mode`        | behaviour |
//! |---------------|-----------|
//! | `loop`        | spins forever (out of fuel) |
//! | `alloc`       | allocates without bound (memory limit) |
//! | `panic`       | panics (trap; panics abort in guests) |
//! | `unreachable` | executes `unreachable` (trap) |
//! | `oversized`   | returns a 10 MiB reason (output size cap) |
//! | `log-flood`   | logs 10 000 lines, then holds (log budget) |
//! | `refuse`      | returns `internal` policy-error |
//! | `weights`     | asks for the weights in `weights` (`id=w,id=w`), whatever the facts (guardrail tests) |
//! | anything else | holds |

use kbha_policy_sdk::Config;
use kbha_policy_sdk::types::{FailoverAction, FailoverDecision, FailoverInput, PolicyError};

/// The misbehaving policy.
pub struct Hostile;

impl kbha_policy_sdk::failover::Guest for Hostile {
    fn decide(input: FailoverInput) -> Result<FailoverDecision, PolicyError> {
        decide(&input)
    }
}

#[cfg(target_arch = "wasm32")]
kbha_policy_sdk::export_failover_policy!(Hostile);

fn hold(reason: String) -> FailoverDecision {
    FailoverDecision { action: FailoverAction::Hold, reason, alerts: vec![] }
}

/// Behaves as the `mode` config key says (see the crate docs).
pub fn decide(input: &FailoverInput) -> Result<FailoverDecision, PolicyError> {
    let config = Config::new(&input.config);
    match config.get_str("mode", "hold") {
        "loop" => {
            let mut i = 0u64;
            loop {
                // black_box keeps the optimiser from proving the loop useless.
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = vec![];
            loop {
                // Reserve a MiB but touch one byte: memory grows fast while
                // fuel lasts, so the memory cap is what stops it.
                let mut chunk = Vec::<u8>::with_capacity(1 << 20);
                chunk.push(1);
                hoard.push(chunk);
                std::hint::black_box(&hoard);
            }
        }
        "panic" => panic!("hostile policy panics on purpose"),
        "unreachable" => {
            #[cfg(target_arch = "wasm32")]
            core::arch::wasm32::unreachable();
            #[cfg(not(target_arch = "wasm32"))]
            unreachable!("hostile policy traps on purpose")
        }
        "oversized" => Ok(hold("x".repeat(10 << 20))),
        "log-flood" => {
            for i in 0..10_000 {
                kbha_policy_sdk::log!(Info, "line {i}");
            }
            Ok(hold("flooded the log".into()))
        }
        "refuse" => Err(PolicyError::Internal("hostile policy refuses on purpose".into())),
        "weights" => {
            let mut weights = Vec::new();
            for pair in config.get_str("weights", "").split(',').filter(|p| !p.is_empty()) {
                let (id, w) = pair
                    .split_once('=')
                    .ok_or_else(|| PolicyError::InvalidConfig(format!("`weights` entry `{pair}` is not `id=weight`")))?;
                let weight = w.parse().map_err(|_| PolicyError::InvalidConfig(format!("`weights` entry `{pair}` has no number")))?;
                weights.push(kbha_policy_sdk::types::Weight { set_identifier: id.into(), weight });
            }
            Ok(FailoverDecision {
                action: FailoverAction::ShiftWeights(kbha_policy_sdk::types::Shift { weights, force: false }),
                reason: "hostile policy asks for fixed weights".into(),
                alerts: vec![],
            })
        }
        other => Ok(hold(format!("mode `{other}`: holding"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbha_policy_sdk::types::{ConfigEntry, FailoverTrigger};

    fn input(mode: &str) -> FailoverInput {
        FailoverInput {
            now: 0,
            event_id: "e".into(),
            trigger: FailoverTrigger::Schedule,
            record_name: "r".into(),
            targets: vec![],
            last_change: None,
            config: vec![ConfigEntry { key: "mode".into(), value: mode.into() }],
        }
    }

    // Only the modes that terminate natively are exercised here; the rest are
    // the host's job to contain.
    #[test]
    fn benign_modes_behave_as_documented() {
        assert!(matches!(decide(&input("hold")), Ok(d) if d.reason.contains("holding")));
        assert!(matches!(decide(&input("refuse")), Err(PolicyError::Internal(_))));
        assert_eq!(decide(&input("oversized")).map(|d| d.reason.len()), Ok(10 << 20));
    }
}
