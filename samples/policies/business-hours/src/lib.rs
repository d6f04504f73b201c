//! Sample kbha failover policy: no automatic failback outside business hours.
//!
//! Failing over is urgent and happens at any hour, exactly as the default policy decides
//! it, including an evacuation onto a recovered primary when the target carrying traffic
//! fails. Moving traffic back to the primary while nothing is down is not: the default
//! policy's failback is kept only inside business hours (09:00 to 17:00 UTC, the end
//! excluded), so someone is at work when it happens; outside them the policy holds and
//! says why. The time is the input's `now`: a policy has no clock, and the same input
//! always gives the same decision.
//!
//! # Config keys
//!
//! Every key of the default policy (`hysteresis_s`, `failback`, ...), and:
//!
//! | key          | default | meaning |
//! |--------------|---------|---------|
//! | `open_hour`  | `9`     | first hour (UTC, 0..=23) in which failback may happen |
//! | `close_hour` | `17`    | hour (UTC, 1..=24) from which failback waits again; after `open_hour` |

use kbha_policy_sdk::Config;
use kbha_policy_sdk::types::{AlarmState, FailoverAction, FailoverDecision, FailoverInput, Health, PolicyError};

/// The policy, exported as the component's `decide`.
pub struct BusinessHours;

impl kbha_policy_sdk::failover::Guest for BusinessHours {
    fn decide(input: FailoverInput) -> Result<FailoverDecision, PolicyError> {
        decide(&input)
    }
}

// Natively this crate is a library for tests; only the component exports.
#[cfg(target_arch = "wasm32")]
kbha_policy_sdk::export_failover_policy!(BusinessHours);

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Business hours as `[open_hour, close_hour)` in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    /// First hour of the day in which failback may happen.
    pub open_hour: u64,
    /// First hour of the day in which it may not any more.
    pub close_hour: u64,
}

impl Hours {
    /// Reads `open_hour` / `close_hour` from the input's config entries.
    pub fn parse(config: &Config<'_>) -> Result<Self, PolicyError> {
        let open_hour = config.get_u64("open_hour", 9)?;
        let close_hour = config.get_u64("close_hour", 17)?;
        if open_hour >= close_hour || close_hour > 24 {
            return Err(PolicyError::InvalidConfig(format!(
                "business hours must satisfy 0 <= `open_hour` < `close_hour` <= 24, got {open_hour} and {close_hour}"
            )));
        }
        Ok(Hours { open_hour, close_hour })
    }

    /// Whether `now_ms` (ms since the Unix epoch) falls inside business hours.
    pub fn contain(&self, now_ms: i64) -> bool {
        let of_day = now_ms.rem_euclid(DAY_MS);
        // Hours are at most 24: the products fit easily.
        (self.open_hour as i64 * HOUR_MS..self.close_hour as i64 * HOUR_MS).contains(&of_day)
    }
}

/// Whether `decision` is a failback: it gives weight back to a primary that carries none
/// now while no target carrying traffic is down. A shift onto the primary away from a
/// down target (the default policy evacuates to a recovered primary when the secondary
/// fails) is an evacuation, urgent at any hour.
fn is_failback(input: &FailoverInput, decision: &FailoverDecision) -> bool {
    // A stepped return (the default policy's failback unless `return_steps` is `100`) is a
    // failback as much as a shift at once.
    let weights = match &decision.action {
        FailoverAction::ShiftWeights(shift) => &shift.weights,
        FailoverAction::ShiftInSteps(plan) => &plan.weights,
        FailoverAction::Hold => return false,
    };
    // As the default policy counts carriers: all of them when every weight is 0.
    let all_zero = input.targets.iter().all(|t| t.weight == 0);
    let evacuating =
        input.targets.iter().any(|t| (all_zero || t.weight > 0) && (t.health == Health::Unhealthy || t.alarm_state == AlarmState::Alarm));
    !evacuating
        && input
            .targets
            .iter()
            .filter(|t| t.primary && t.weight == 0)
            .any(|p| weights.iter().any(|w| w.set_identifier == p.set_identifier && w.weight > 0))
}

/// The decision, as a plain function so native tests call it directly.
pub fn decide(input: &FailoverInput) -> Result<FailoverDecision, PolicyError> {
    let hours = Hours::parse(&Config::new(&input.config))?;
    let decision = kbha_policy_failover_default::decide(input)?;
    if !is_failback(input, &decision) || hours.contain(input.now) {
        return Ok(decision);
    }
    Ok(FailoverDecision {
        action: FailoverAction::Hold,
        reason: format!(
            "outside business hours ({:02}:00-{:02}:00 UTC): holding the failback the default policy would make ({})",
            hours.open_hour, hours.close_hour, decision.reason
        ),
        alerts: decision.alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIDNIGHT: i64 = 1_795_651_200_000; // 2026-11-26T00:00:00Z

    #[test]
    fn business_hours_include_the_start_and_exclude_the_end() {
        let h = Hours { open_hour: 9, close_hour: 17 };
        assert!(!h.contain(MIDNIGHT + 9 * HOUR_MS - 1));
        assert!(h.contain(MIDNIGHT + 9 * HOUR_MS));
        assert!(h.contain(MIDNIGHT + 17 * HOUR_MS - 1));
        assert!(!h.contain(MIDNIGHT + 17 * HOUR_MS));
        assert!(!h.contain(MIDNIGHT));
        // Before the epoch the day still starts at midnight.
        assert!(h.contain(-DAY_MS + 12 * HOUR_MS));
    }

    #[test]
    fn bad_hours_are_refused() {
        let entries = |o: &str, c: &str| {
            vec![
                kbha_policy_sdk::types::ConfigEntry { key: "open_hour".into(), value: o.into() },
                kbha_policy_sdk::types::ConfigEntry { key: "close_hour".into(), value: c.into() },
            ]
        };
        for (o, c) in [("17", "9"), ("9", "9"), ("0", "25")] {
            assert!(Hours::parse(&Config::new(&entries(o, c))).is_err(), "{o}-{c}");
        }
        assert_eq!(Hours::parse(&Config::new(&entries("0", "24"))), Ok(Hours { open_hour: 0, close_hour: 24 }));
    }
}
