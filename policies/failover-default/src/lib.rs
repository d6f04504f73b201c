//! The default kbha failover policy.
//!
//! Decides whether to move the Route 53 weights of a primary/secondary record
//! set after an alarm or on a schedule. It is a pure function of its input; the
//! host's guardrails still check whatever it returns.
//!
//! # Config keys
//!
//! | key               | default | meaning |
//! |-------------------|---------|---------|
//! | `active_weight`   | `100`   | weight given to the target that should carry traffic (0..=255) |
//! | `hysteresis_s`    | `600`   | how long the primary must be OK and healthy before failback |
//! | `failback`        | `auto`  | `auto` fails back after the hysteresis; `manual` holds and says so |
//! | `rpo_s`           | `3600`  | largest acceptable replication age of the secondary, in seconds |
//! | `allow_data_loss` | `false` | shift even when the secondary's replication age exceeds `rpo_s` |
//!
//! # Rules
//!
//! Exactly one target must have `primary: true`. The primary is *down* when
//! its alarm state is `alarm` or its health is `unhealthy`.
//! - Primary `insufficient-data`: hold, warning alert.
//! - Primary down and still carrying traffic: shift all weight to the first
//!   healthy secondary (health not `unhealthy`, alarm state not `alarm`).
//!   No such secondary: hold, critical alert. The secondary's replication age
//!   above `rpo_s` (and `allow_data_loss` off): hold, critical alert.
//!   Replication age unknown, or past `rpo_s` with `allow_data_loss`: shift,
//!   with a warning alert saying so.
//! - Primary down and already without traffic: hold.
//! - Primary OK and healthy but without traffic: `failback = manual` holds with
//!   an info alert; otherwise fail back once the primary has been OK for
//!   `hysteresis_s` (an unknown `alarm_state_since` counts as not yet).
//! - Primary OK and carrying traffic: hold.

use kbha_policy_sdk::types::{
    AlarmState, Alert, FailoverAction, FailoverDecision, FailoverInput, Health, PolicyError, Shift,
    Target, Weight,
};
use kbha_policy_sdk::{Config, critical, info, warning};

/// The policy, exported as the component's `decide`.
pub struct DefaultFailover;

impl kbha_policy_sdk::failover::Guest for DefaultFailover {
    fn decide(input: FailoverInput) -> Result<FailoverDecision, PolicyError> {
        decide(&input)
    }
}

// Natively this crate is a library for tests; only the component exports (and not when
// another policy links it for its `decide`: two exports of `decide` would not link).
#[cfg(all(target_arch = "wasm32", feature = "export"))]
kbha_policy_sdk::export_failover_policy!(DefaultFailover);

/// The parsed configuration (see the crate docs for keys and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Weight for the target that should carry traffic.
    pub active_weight: u32,
    /// Seconds the primary must be OK before failback.
    pub hysteresis_s: u64,
    /// `true` when failback waits for an operator.
    pub manual_failback: bool,
    /// Largest acceptable replication age, seconds.
    pub rpo_s: u64,
    /// Shift even past the RPO.
    pub allow_data_loss: bool,
}

impl Settings {
    /// Reads the settings from the input's config entries.
    pub fn parse(config: &Config<'_>) -> Result<Self, PolicyError> {
        let active_weight = config.get_u64("active_weight", 100)?;
        if active_weight == 0 || active_weight > 255 {
            return Err(PolicyError::InvalidConfig(format!(
                "`active_weight` must be between 1 and 255, got `{active_weight}`"
            )));
        }
        Ok(Self {
            active_weight: active_weight as u32,
            hysteresis_s: config.get_u64("hysteresis_s", 600)?,
            manual_failback: config.get_choice("failback", &["auto", "manual"], "auto")?
                == "manual",
            rpo_s: config.get_u64("rpo_s", 3600)?,
            allow_data_loss: config.get_bool("allow_data_loss", false)?,
        })
    }
}

fn hold(reason: impl Into<String>, alerts: Vec<Alert>) -> FailoverDecision {
    FailoverDecision {
        action: FailoverAction::Hold,
        reason: reason.into(),
        alerts,
    }
}

/// Weights that send everything to `to`, zero to every other target.
fn all_to(targets: &[Target], to: &str, weight: u32) -> Vec<Weight> {
    targets
        .iter()
        .map(|t| Weight {
            set_identifier: t.set_identifier.clone(),
            weight: if t.set_identifier == to { weight } else { 0 },
        })
        .collect()
}

fn shift(
    targets: &[Target],
    to: &str,
    weight: u32,
    reason: String,
    alerts: Vec<Alert>,
) -> FailoverDecision {
    FailoverDecision {
        action: FailoverAction::ShiftWeights(Shift {
            weights: all_to(targets, to, weight),
            force: false,
        }),
        reason,
        alerts,
    }
}

fn is_down(t: &Target) -> bool {
    t.alarm_state == AlarmState::Alarm || t.health == Health::Unhealthy
}

/// Human-readable duration for reasons, e.g. `9m 30s`.
fn fmt_secs(s: u64) -> String {
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// The decision, as a plain function so native tests call it directly.
pub fn decide(input: &FailoverInput) -> Result<FailoverDecision, PolicyError> {
    let settings = Settings::parse(&Config::new(&input.config))?;
    let mut primaries = input.targets.iter().filter(|t| t.primary);
    let primary = match (primaries.next(), primaries.next()) {
        (Some(p), None) => p,
        (None, _) => {
            return Err(PolicyError::InvalidInput(format!(
                "no target of `{}` is marked primary; mark exactly one",
                input.record_name
            )));
        }
        (Some(_), Some(_)) => {
            return Err(PolicyError::InvalidInput(format!(
                "more than one target of `{}` is marked primary; mark exactly one",
                input.record_name
            )));
        }
    };
    let p_id = &primary.set_identifier;

    if primary.alarm_state == AlarmState::InsufficientData {
        return Ok(hold(
            format!(
                "primary `{p_id}` has insufficient alarm data; holding until its state is known"
            ),
            vec![warning(
                format!("kbha: `{p_id}` alarm has insufficient data"),
                format!(
                    "The alarm for primary `{p_id}` of `{}` reports INSUFFICIENT_DATA; \
                     no failover decision is taken until it reports OK or ALARM.",
                    input.record_name
                ),
            )],
        ));
    }

    if is_down(primary) {
        if primary.weight == 0 {
            return Ok(hold(
                format!("primary `{p_id}` is down but already carries no traffic"),
                vec![],
            ));
        }
        return Ok(fail_over(input, primary, &settings));
    }

    // The primary is OK and healthy (or health unknown).
    if primary.weight > 0 {
        return Ok(hold(
            format!("primary `{p_id}` is OK and carrying traffic"),
            vec![],
        ));
    }
    if settings.manual_failback {
        return Ok(hold(
            format!("primary `{p_id}` is OK again; failback is manual"),
            vec![info(
                format!("kbha: `{p_id}` recovered, manual failback pending"),
                format!(
                    "Primary `{p_id}` of `{}` is OK and healthy but carries no traffic. \
                     Failback is configured as manual: shift the weights back when ready.",
                    input.record_name
                ),
            )],
        ));
    }
    let hysteresis_ms = settings.hysteresis_s.saturating_mul(1000);
    match primary.alarm_state_since {
        Some(since) if since.saturating_add(hysteresis_ms as i64) <= input.now => Ok(shift(
            &input.targets,
            p_id,
            settings.active_weight,
            format!(
                "primary `{p_id}` has been OK for at least {}; failing back",
                fmt_secs(settings.hysteresis_s)
            ),
            vec![],
        )),
        Some(since) => {
            let remaining_ms = since.saturating_add(hysteresis_ms as i64) - input.now;
            let remaining_s = (remaining_ms as u64).div_ceil(1000);
            Ok(hold(
                format!(
                    "primary `{p_id}` is OK; waiting for hysteresis, {} remaining before failback",
                    fmt_secs(remaining_s)
                ),
                vec![],
            ))
        }
        None => Ok(hold(
            format!(
                "primary `{p_id}` is OK but since when is unknown; waiting for hysteresis of {} before failback",
                fmt_secs(settings.hysteresis_s)
            ),
            vec![],
        )),
    }
}

/// The primary is down and carries traffic: choose where it goes, if anywhere.
fn fail_over(input: &FailoverInput, primary: &Target, settings: &Settings) -> FailoverDecision {
    let p_id = &primary.set_identifier;
    let candidate = input.targets.iter().find(|t| {
        !t.primary && t.health != Health::Unhealthy && t.alarm_state != AlarmState::Alarm
    });
    let Some(secondary) = candidate else {
        return hold(
            format!("primary `{p_id}` is down and no secondary is healthy; both regions unhealthy"),
            vec![critical(
                format!("kbha: both regions unhealthy for `{}`", input.record_name),
                format!(
                    "Primary `{p_id}` is down and no secondary target is healthy. \
                     Traffic stays where it is; manual intervention is needed."
                ),
            )],
        );
    };
    let s_id = &secondary.set_identifier;
    let rpo_ms = settings.rpo_s.saturating_mul(1000);
    let mut alerts = vec![];
    match secondary.replication_age_ms {
        Some(age) if age > rpo_ms && !settings.allow_data_loss => {
            return hold(
                format!(
                    "primary `{p_id}` is down but `{s_id}` replication is {} old, over the RPO of {}; holding",
                    fmt_secs(age / 1000),
                    fmt_secs(settings.rpo_s)
                ),
                vec![critical(
                    format!("kbha: failover to `{s_id}` blocked by RPO"),
                    format!(
                        "Primary `{p_id}` of `{}` is down. Secondary `{s_id}` has data {} old, \
                         over the RPO of {}; failing over would lose data. Set \
                         `allow_data_loss = true` or fail over by hand to accept the loss.",
                        input.record_name,
                        fmt_secs(age / 1000),
                        fmt_secs(settings.rpo_s)
                    ),
                )],
            );
        }
        Some(age) if age > rpo_ms => alerts.push(warning(
            format!("kbha: failover to `{s_id}` past the RPO"),
            format!(
                "Secondary `{s_id}` has data {} old, over the RPO of {}; shifting anyway \
                 because `allow_data_loss` is set.",
                fmt_secs(age / 1000),
                fmt_secs(settings.rpo_s)
            ),
        )),
        Some(_) => {}
        None => alerts.push(warning(
            format!("kbha: replication age of `{s_id}` unknown"),
            format!(
                "Failing over to `{s_id}` without knowing how fresh its data is; \
                 check the replication verifier."
            ),
        )),
    }
    shift(
        &input.targets,
        s_id,
        settings.active_weight,
        format!("primary `{p_id}` is down; shifting traffic to `{s_id}`"),
        alerts,
    )
}

#[cfg(test)]
mod tests;
