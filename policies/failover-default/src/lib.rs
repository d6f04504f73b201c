//! The default kbha failover policy.
//!
//! Decides whether to move the Route 53 weights of a weighted record set after an alarm
//! or on a schedule, from what the host observed *now* (level-triggered: the trigger
//! only says "look"). It is a pure function of its input; the host's guardrails still
//! check whatever it returns.
//!
//! # Config keys
//!
//! | key               | default | meaning |
//! |-------------------|---------|---------|
//! | `active_weight`   | `100`   | weight given to the target that should carry traffic (1..=255) |
//! | `hysteresis_s`    | `600`   | how long the primary must have been observed up before failback |
//! | `failback`        | `auto`  | `auto` fails back after the hysteresis; `manual` holds and says so |
//! | `rpo_s`           | `3600`  | largest acceptable replication age of a target traffic moves to, in seconds |
//! | `allow_data_loss` | `false` | evacuate even onto a target whose replication age exceeds `rpo_s` |
//! | `return_steps`    | `10,25,50,75,100` | traffic share steps of a failback, percent, rising to 100 (`100`: all at once) |
//! | `return_bake_s`   | `300`   | how long each step of a failback holds, the primary up, before the next |
//!
//! # Rules
//!
//! Exactly one target must have `primary: true`. A target is *down* when its health
//! check fails or an alarm is in `alarm` (an alarm with insufficient data never hides a
//! failing check), *unproven* when it is not down but an alarm has insufficient data,
//! and *up* otherwise. Targets *carrying* traffic are those with a weight above 0 (all of
//! them when every weight is 0: Route 53 then spreads traffic evenly).
//! - **A carrier is down: evacuate** at once, whatever the hysteresis or failback mode,
//!   to the best target that is not down: up before unproven, then within the RPO
//!   (`allow_data_loss` aside), then up the longest, then the primary, then the freshest
//!   replica, then record-set order. Replication age unknown, or past `rpo_s` with
//!   `allow_data_loss`: evacuate with a warning. Every candidate past the RPO: hold,
//!   critical. No target is up or unproven: hold, critical ("every target is down";
//!   the host announces it once however the failures arrived).
//! - **A carrier is unproven** (and none is down): hold, warning.
//! - **The primary is up and carries nothing: return.** `failback = manual` holds with an
//!   info alert; otherwise fail back once the primary has been observed up for
//!   `hysteresis_s` (`up_since`, which restarts at every observed failure, health flaps
//!   included), and hold saying how long remains before that. The failback goes in the
//!   steps of `return_steps` (the host bakes each for `return_bake_s` and rolls back if the
//!   primary fails meanwhile); `return_steps = 100` fails back at once.
//! - Otherwise hold.

use kbha_policy_sdk::types::{
    AlarmState, Alert, FailoverAction, FailoverDecision, FailoverInput, Health, Plan, PlanStep, PolicyError, Shift, Target, Weight,
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
    /// Failback steps, percent (rising, the last 100).
    pub return_steps: Vec<u8>,
    /// Seconds each failback step holds.
    pub return_bake_s: u64,
}

/// Parses `10,25,50,75,100`: rising percentages ending at 100.
fn parse_steps(text: &str) -> Result<Vec<u8>, PolicyError> {
    let bad = |why: String| {
        PolicyError::InvalidConfig(format!("`return_steps` {why}; write rising percentages ending at 100, e.g. `10,25,50,75,100`"))
    };
    let mut steps = Vec::new();
    for part in text.split(',') {
        let p = part.trim().trim_end_matches('%').trim();
        let v: u8 = p.parse().map_err(|_| bad(format!("has `{p}`, not a percentage")))?;
        if v == 0 || v > 100 || steps.last().is_some_and(|l| *l >= v) {
            return Err(bad(format!("has `{v}` out of order or outside 1..=100")));
        }
        steps.push(v);
    }
    if steps.last() != Some(&100) {
        return Err(bad("does not end at 100".into()));
    }
    Ok(steps)
}

impl Settings {
    /// Reads the settings from the input's config entries.
    pub fn parse(config: &Config<'_>) -> Result<Self, PolicyError> {
        let active_weight = config.get_u64("active_weight", 100)?;
        if active_weight == 0 || active_weight > 255 {
            return Err(PolicyError::InvalidConfig(format!("`active_weight` must be between 1 and 255, got `{active_weight}`")));
        }
        Ok(Self {
            active_weight: active_weight as u32,
            hysteresis_s: config.get_u64("hysteresis_s", 600)?,
            manual_failback: config.get_choice("failback", &["auto", "manual"], "auto")? == "manual",
            rpo_s: config.get_u64("rpo_s", 3600)?,
            allow_data_loss: config.get_bool("allow_data_loss", false)?,
            return_steps: parse_steps(config.get_str("return_steps", "10,25,50,75,100"))?,
            return_bake_s: config.get_u64("return_bake_s", 300)?,
        })
    }
}

fn hold(reason: impl Into<String>, alerts: Vec<Alert>) -> FailoverDecision {
    FailoverDecision { action: FailoverAction::Hold, reason: reason.into(), alerts }
}

/// Weights that send everything to `to`, zero to every other target.
fn all_to(targets: &[Target], to: &str, weight: u32) -> Vec<Weight> {
    targets
        .iter()
        .map(|t| Weight { set_identifier: t.set_identifier.clone(), weight: if t.set_identifier == to { weight } else { 0 } })
        .collect()
}

fn shift(targets: &[Target], to: &str, weight: u32, reason: String, alerts: Vec<Alert>) -> FailoverDecision {
    FailoverDecision { action: FailoverAction::ShiftWeights(Shift { weights: all_to(targets, to, weight), force: false }), reason, alerts }
}

/// A target's condition, as the host's guardrails see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Condition {
    Up,
    Unproven,
    Down,
}

fn condition(t: &Target) -> Condition {
    if t.health == Health::Unhealthy || t.alarm_state == AlarmState::Alarm {
        Condition::Down
    } else if t.alarm_state == AlarmState::InsufficientData {
        Condition::Unproven
    } else {
        Condition::Up
    }
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
            return Err(PolicyError::InvalidInput(format!("no target of `{}` is marked primary; mark exactly one", input.record_name)));
        }
        (Some(_), Some(_)) => {
            return Err(PolicyError::InvalidInput(format!(
                "more than one target of `{}` is marked primary; mark exactly one",
                input.record_name
            )));
        }
    };
    let all_zero = input.targets.iter().all(|t| t.weight == 0);
    let carries = |t: &Target| all_zero || t.weight > 0;

    if let Some(down) = input.targets.iter().find(|t| carries(t) && condition(t) == Condition::Down) {
        return Ok(evacuate(input, down, &settings));
    }
    if let Some(unproven) = input.targets.iter().find(|t| carries(t) && condition(t) == Condition::Unproven) {
        let id = &unproven.set_identifier;
        return Ok(hold(
            format!("`{id}` carries traffic and has insufficient alarm data; holding until its state is known"),
            vec![warning(
                format!("kbha: `{id}` alarm has insufficient data"),
                format!(
                    "An alarm of `{id}` of `{}` reports INSUFFICIENT_DATA while its health check \
                     does not fail; no failover decision is taken until it reports OK or ALARM.",
                    input.record_name
                ),
            )],
        ));
    }
    let p_id = &primary.set_identifier;
    if carries(primary) {
        return Ok(hold(format!("primary `{p_id}` is up and carrying traffic"), vec![]));
    }
    match condition(primary) {
        Condition::Down => {
            return Ok(hold(format!("primary `{p_id}` is down and carries no traffic"), vec![]));
        }
        Condition::Unproven => {
            return Ok(hold(format!("primary `{p_id}` has insufficient alarm data; no failback until its state is known"), vec![]));
        }
        Condition::Up => {}
    }
    fail_back(input, primary, &settings)
}

/// The primary is up and carries nothing: fail back once it has been up for the hysteresis.
fn fail_back(input: &FailoverInput, primary: &Target, settings: &Settings) -> Result<FailoverDecision, PolicyError> {
    let p_id = &primary.set_identifier;
    if settings.manual_failback {
        return Ok(hold(
            format!("primary `{p_id}` is up again; failback is manual"),
            vec![info(
                format!("kbha: `{p_id}` recovered, manual failback pending"),
                format!(
                    "Primary `{p_id}` of `{}` is up but carries no traffic. \
                     Failback is configured as manual: shift the weights back when ready.",
                    input.record_name
                ),
            )],
        ));
    }
    let hysteresis_ms = settings.hysteresis_s.saturating_mul(1000) as i64;
    match primary.up_since {
        Some(since) if since.saturating_add(hysteresis_ms) <= input.now => {
            let reason = format!("primary `{p_id}` has been up for at least {}; failing back", fmt_secs(settings.hysteresis_s));
            if settings.return_steps == [100] {
                return Ok(shift(&input.targets, p_id, settings.active_weight, reason, vec![]));
            }
            let bake_ms = settings.return_bake_s.saturating_mul(1000);
            Ok(FailoverDecision {
                action: FailoverAction::ShiftInSteps(Plan {
                    weights: all_to(&input.targets, p_id, settings.active_weight),
                    steps: settings.return_steps.iter().map(|p| PlanStep { percent: *p, bake_ms }).collect(),
                }),
                reason: format!(
                    "{reason} in steps of {} % ({} each)",
                    settings.return_steps.iter().map(u8::to_string).collect::<Vec<_>>().join("/"),
                    fmt_secs(settings.return_bake_s)
                ),
                alerts: vec![],
            })
        }
        Some(since) => {
            let remaining_ms = since.saturating_add(hysteresis_ms) - input.now;
            let remaining_s = (remaining_ms as u64).div_ceil(1000);
            Ok(hold(format!("primary `{p_id}` is up; waiting for hysteresis, {} remaining before failback", fmt_secs(remaining_s)), vec![]))
        }
        None => Ok(hold(
            format!(
                "primary `{p_id}` is up but since when is unknown; waiting for hysteresis of {} before failback",
                fmt_secs(settings.hysteresis_s)
            ),
            vec![],
        )),
    }
}

/// Ranks evacuation candidates: smaller is better.
fn rank(t: &Target, rpo_ms: u64, index: usize) -> impl Ord {
    // Within the RPO, then unknown (shift with a warning), then past it (hold, or shift
    // with `allow_data_loss`).
    let rpo_class = match t.replication_age_ms {
        Some(a) if a <= rpo_ms => 0,
        None => 1,
        Some(_) => 2,
    };
    (
        condition(t),
        rpo_class,
        // Up the longest first; unknown last.
        t.up_since.unwrap_or(i64::MAX),
        !t.primary,
        t.replication_age_ms.unwrap_or(u64::MAX),
        index,
    )
}

/// A target carrying traffic is down: choose where the traffic goes, if anywhere.
fn evacuate(input: &FailoverInput, down: &Target, settings: &Settings) -> FailoverDecision {
    let d_id = &down.set_identifier;
    let rpo_ms = settings.rpo_s.saturating_mul(1000);
    let candidates = input.targets.iter().enumerate().filter(|(_, t)| condition(t) != Condition::Down);
    let Some((_, best)) = candidates.min_by_key(|(i, t)| rank(t, rpo_ms, *i)) else {
        return hold(
            format!("`{d_id}` is down and every other target is down too; nowhere to move traffic"),
            vec![critical(
                format!("kbha: every target of `{}` is down", input.record_name),
                format!(
                    "`{d_id}` carries traffic and is down, and no other target is up. \
                     Traffic stays where it is; manual intervention is needed."
                ),
            )],
        );
    };
    let b_id = &best.set_identifier;
    let mut alerts = vec![];
    match best.replication_age_ms {
        Some(age) if age > rpo_ms && !settings.allow_data_loss => {
            return hold(
                format!(
                    "`{d_id}` is down but `{b_id}` replication is {} old, over the RPO of {}; holding",
                    fmt_secs(age / 1000),
                    fmt_secs(settings.rpo_s)
                ),
                vec![critical(
                    format!("kbha: failover to `{b_id}` blocked by RPO"),
                    format!(
                        "`{d_id}` of `{}` is down. `{b_id}` has data {} old, \
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
            format!("kbha: failover to `{b_id}` past the RPO"),
            format!(
                "`{b_id}` has data {} old, over the RPO of {}; shifting anyway \
                 because `allow_data_loss` is set.",
                fmt_secs(age / 1000),
                fmt_secs(settings.rpo_s)
            ),
        )),
        Some(_) => {}
        None => alerts.push(warning(
            format!("kbha: replication age of `{b_id}` unknown"),
            format!(
                "Failing over to `{b_id}` without knowing how fresh its data is; \
                 check the replication verifier."
            ),
        )),
    }
    if condition(best) == Condition::Unproven {
        alerts.push(warning(
            format!("kbha: evacuating to `{b_id}` with insufficient alarm data"),
            format!("`{d_id}` is down; `{b_id}` is the best target left although an alarm of it has insufficient data."),
        ));
    }
    let reason = if down.primary {
        format!("primary `{d_id}` is down; shifting traffic to `{b_id}`")
    } else {
        format!("`{d_id}` carries traffic and is down; evacuating to `{b_id}`")
    };
    shift(&input.targets, b_id, settings.active_weight, reason, alerts)
}

#[cfg(test)]
mod tests;
