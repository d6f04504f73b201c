//! The incident sequences of the controller rework, against the local AWS emulator, with
//! the mapped alarms living in CloudWatch (the handler reads their current state on every
//! invocation) and the health checks set by the test. Every assertion reads the result
//! back through the AWS APIs: weights through ListResourceRecordSets, notices through an
//! SQS queue subscribed to the topic.
//!
//! Times are simulated (`t0()` is 2026-11-26T10:00Z); the emulator's control API stamps
//! each alarm state with the simulated time, as CloudWatch would have.

use anyhow::Result;
use kbha_failover::{ActionTaken, DecisionRecord, Policies};
use kbha_integration::*;
use kbha_lambda::record::Invocation;
use serde_json::Value;

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;

/// The target fails at `at`: its health check fails and its alarm goes to ALARM in
/// CloudWatch; with `deliver`, the alarm's notification reaches the function 5 s later.
async fn fail(w: &World, f: &Function, target: &str, at: i64, deliver: bool) -> Result<Option<DecisionRecord>> {
    transition(w, f, target, false, at, deliver).await
}

/// The target recovers at `at` (health check passes, alarm OK).
async fn recover(w: &World, f: &Function, target: &str, at: i64, deliver: bool) -> Result<Option<DecisionRecord>> {
    transition(w, f, target, true, at, deliver).await
}

async fn transition(w: &World, f: &Function, target: &str, healthy: bool, at: i64, deliver: bool) -> Result<Option<DecisionRecord>> {
    let (region, alarm) = alarm_of(target);
    let state = if healthy { "OK" } else { "ALARM" };
    w.set_health(target, healthy).await?;
    w.emu.set_alarm_state_at(region, alarm, state, "test", at).await?;
    if !deliver {
        return Ok(None);
    }
    let ev = alarm_event(Shape::Sns, alarm, region, state, at, &format!("{alarm}-{state}-{at}"))?;
    Ok(f.handle(&ev, Invocation::at(at + 5 * SEC)).await?.pop())
}

fn action(r: &Option<DecisionRecord>) -> Option<ActionTaken> {
    r.as_ref().map(|r| r.action)
}

/// 1. The primary fails again soon after a failback: the evacuation is not held by the
///    cooldown (which only holds returns).
#[tokio::test]
async fn a_primary_failing_again_two_minutes_after_failback_is_evacuated_at_once() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&[("KBHA_HYSTERESIS_SECONDS", "600"), ("KBHA_COOLDOWN_SECONDS", "600")], builtin()).await?;
    assert_eq!(action(&fail(&w, &f, "primary", t0(), true).await?), Some(ActionTaken::Applied));
    recover(&w, &f, "primary", t0() + 5 * MIN, true).await?;
    let back = tick_at(&f, t0() + 16 * MIN).await?;
    assert_eq!(back.action, ActionTaken::Applied, "failback after the hysteresis: {:?}", back.guardrail);
    assert_eq!(w.weights().await?, weights(10, 90), "the stepped return's first step");
    let again = fail(&w, &f, "primary", t0() + 18 * MIN, true).await?;
    assert_eq!(action(&again), Some(ActionTaken::Applied), "{:?}", again.as_ref().and_then(|r| r.guardrail.clone()));
    let note = again.and_then(|r| r.plan).expect("the plan's rollback");
    assert_eq!(note.outcome, Some(kbha_core::plan::PlanOutcome::RolledBack), "{note:?}");
    assert_eq!(w.weights().await?, weights(0, 100));
    // The same with the return all at once: a plain evacuation, not held by the cooldown.
    let w = world_with_alarms().await?;
    let env = [("KBHA_HYSTERESIS_SECONDS", "600"), ("KBHA_COOLDOWN_SECONDS", "600"), ("KBHA_RETURN_STEPS", "100")];
    let f = w.function(&env, builtin()).await?;
    fail(&w, &f, "primary", t0(), true).await?;
    recover(&w, &f, "primary", t0() + 5 * MIN, true).await?;
    assert_eq!(tick_at(&f, t0() + 16 * MIN).await?.action, ActionTaken::Applied);
    assert_eq!(w.weights().await?, weights(100, 0));
    let again = fail(&w, &f, "primary", t0() + 18 * MIN, true).await?;
    assert_eq!(action(&again), Some(ActionTaken::Applied), "{:?}", again.and_then(|r| r.header.guardrail));
    assert_eq!(w.weights().await?, weights(0, 100));
    Ok(())
}

/// 2. The secondary, carrying all traffic, fails while the primary has recovered but not
///    for the hysteresis, with manual failback: traffic goes to the primary at once.
#[tokio::test]
async fn a_failing_secondary_hands_traffic_back_to_a_recovered_primary_even_with_manual_failback() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&[("KBHA_FAILBACK", "manual")], builtin()).await?;
    fail(&w, &f, "primary", t0(), true).await?;
    assert_eq!(w.weights().await?, weights(0, 100));
    recover(&w, &f, "primary", t0() + 10 * MIN, true).await?;
    assert_eq!(tick_at(&f, t0() + 11 * MIN).await?.action, ActionTaken::NoChange, "manual failback holds");
    let r = fail(&w, &f, "secondary", t0() + 12 * MIN, true).await?;
    assert_eq!(action(&r), Some(ActionTaken::Applied), "{:?}", r.and_then(|r| r.header.guardrail));
    assert_eq!(w.weights().await?, weights(100, 0));
    Ok(())
}

/// 3. The OK transition is lost: the next ticks read CloudWatch and the health check,
///    and traffic returns once the hysteresis has passed.
#[tokio::test]
async fn a_lost_ok_transition_stops_mattering_at_the_next_tick() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&[], builtin()).await?;
    fail(&w, &f, "primary", t0(), true).await?;
    assert_eq!(w.weights().await?, weights(0, 100));
    recover(&w, &f, "primary", t0() + 30 * MIN, false).await?;
    assert_eq!(tick_at(&f, t0() + 31 * MIN).await?.action, ActionTaken::NoChange, "up 1 min only");
    let r = tick_at(&f, t0() + 41 * MIN).await?;
    assert_eq!(r.action, ActionTaken::Applied, "{:?}", r.policy.as_ref().map(|p| &p.decision.reason));
    assert_eq!(w.weights().await?, weights(10, 90), "the stepped return begins");
    Ok(())
}

/// 4. A health flap that never trips the alarm: a tick evacuates on health alone, and the
///    hysteresis counts from the flap, not from the alarm's last change days ago.
#[tokio::test]
async fn a_short_health_flap_restarts_the_hysteresis() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&[("KBHA_HYSTERESIS_SECONDS", "600"), ("KBHA_COOLDOWN_SECONDS", "300")], builtin()).await?;
    w.set_health("primary", false).await?;
    assert_eq!(tick_at(&f, t0()).await?.action, ActionTaken::Applied, "evacuated on health alone");
    w.set_health("primary", true).await?;
    assert_eq!(tick_at(&f, t0() + MIN).await?.action, ActionTaken::NoChange);
    // The cooldown (5 min) is over; the hysteresis from the flap (10 min) is not.
    assert_eq!(tick_at(&f, t0() + 6 * MIN).await?.action, ActionTaken::NoChange);
    assert_eq!(w.weights().await?, weights(0, 100));
    assert_eq!(tick_at(&f, t0() + 10 * MIN).await?.action, ActionTaken::Applied);
    assert_eq!(w.weights().await?, weights(10, 90), "the stepped return begins");
    Ok(())
}

/// 5. INSUFFICIENT_DATA on the alarm does not hide a failing health check.
#[tokio::test]
async fn insufficient_data_does_not_hide_a_failing_health_check() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&[], builtin()).await?;
    w.set_health("primary", false).await?;
    w.emu.set_alarm_state_at("us-east-1", PRIMARY_ALARM, "INSUFFICIENT_DATA", "no data", t0()).await?;
    let ev = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "INSUFFICIENT_DATA", t0(), "m-insufficient")?;
    let r = f.handle(&ev, Invocation::at(t0() + 5 * SEC)).await?;
    assert_eq!(r[0].action, ActionTaken::Applied);
    assert_eq!(w.weights().await?, weights(0, 100));
    Ok(())
}

/// 6. Both regions fail one after the other: the second failure pages (critical), once,
///    however many ticks follow.
#[tokio::test]
async fn regions_failing_one_after_the_other_page_once() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&[], builtin()).await?;
    fail(&w, &f, "primary", t0(), true).await?;
    fail(&w, &f, "secondary", t0() + 3 * MIN, true).await?;
    for m in 4..8 {
        assert_eq!(tick_at(&f, t0() + m * MIN).await?.action, ActionTaken::NoChange);
    }
    assert_eq!(w.weights().await?, weights(0, 100), "nowhere better to go: traffic stays");
    let notices: Vec<Value> = w.notices(3, 10).await?;
    let critical: Vec<&Value> = notices.iter().filter(|n| n["_attributes"]["severity"] == "critical").collect();
    assert_eq!(critical.len(), 1, "{notices:#?}");
    assert!(critical[0]["alerts"].to_string().contains("every target"), "{}", critical[0]);
    assert_eq!(notices.len(), 2, "the failover and the page; the ticks repeat nothing: {notices:#?}");
    Ok(())
}

/// 7. Guardrails count traffic share: at 100/100 with the primary down, a policy that
///    zeroes the healthy secondary is refused (it would send everything to the sick one).
#[tokio::test]
async fn zeroing_the_healthy_side_at_even_weights_is_refused() -> Result<()> {
    let w = world_with_alarms().await?;
    w.emu.set_weight(&w.fx, "secondary", 100).await?;
    // The hostile guest asks for fixed weights whatever the facts (see policies/hostile).
    let policies =
        Policies::single(kbha_policy_lifecycle::load_artifact::<kbha_policy_lifecycle::Failover>("hostile", "s3://policies/hostile.wasm")?);
    let f = w.function(&[("KBHA_POLICY_CONFIG", r#"{"mode":"weights","weights":"secondary=0"}"#)], policies).await?;
    w.set_health("primary", false).await?;
    let r = tick_at(&f, t0()).await?;
    assert_eq!(r.action, ActionTaken::Refused, "{:?}", r.guardrail);
    assert!(serde_json::to_string(&r.guardrail)?.contains("onto_unhealthy_target"));
    assert_eq!(w.weights().await?, weights(100, 100));
    Ok(())
}
