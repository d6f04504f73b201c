//! Stepped shifts against the local AWS emulator: the default policy's stepped return (one
//! step per bake, completion), rollback when the returning primary fails mid-plan (inside
//! the cooldown), eight concurrent copies of one tick taking one step, a planned switchover
//! (steps, held there, back, abort, the RPO gate) and the ledger's planned events. Results
//! are read back through the AWS APIs: weights through ListResourceRecordSets, notices
//! through SQS, the state object and the ledger through S3.

use anyhow::{Context, Result};
use kbha_core::plan::{PlanOutcome, parse_steps};
use kbha_failover::ActionTaken;
use kbha_failover::ops::Command;
use kbha_integration::*;
use kbha_lambda::record::Invocation;

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const ME: &str = "arn:aws:iam::123456789012:user/gameday";

/// Hysteresis 10 min, cooldown 10 min (longer than the 5 min bake: steps are paced by the
/// bake, not the cooldown), the guide's steps.
const ENV: [(&str, &str); 2] = [("KBHA_HYSTERESIS_SECONDS", "600"), ("KBHA_COOLDOWN_SECONDS", "600")];

/// Fails the primary at t0, recovers it at t0+5m: the return is due at t0+15m.
async fn evacuated_and_recovered(w: &World, f: &Function) -> Result<()> {
    assert_eq!(fail(w, f, "primary", t0()).await?.action, ActionTaken::Applied);
    recover(w, f, "primary", t0() + 5 * MIN).await?;
    assert_eq!(w.weights().await?, weights(0, 100));
    Ok(())
}

#[tokio::test]
async fn a_stepped_return_takes_one_step_per_bake_and_completes_closing_the_incident() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&ENV, builtin()).await?;
    evacuated_and_recovered(&w, &f).await?;
    let start = t0() + 15 * MIN;
    let r = tick_at(&f, start).await?;
    assert_eq!(r.action, ActionTaken::Applied, "{:?}", r.guardrail);
    assert_eq!(w.weights().await?, weights(10, 90));
    let note = r.plan.context("the plan note")?;
    assert_eq!((note.step, note.of), (1, 5));
    // Before the bake: nothing; the record says why.
    let r = tick_at(&f, start + 4 * MIN).await?;
    assert_eq!(r.action, ActionTaken::NoChange);
    assert!(r.plan.is_some_and(|n| n.reason.contains("baking until")));
    for (k, (p, s)) in [(25, 75), (50, 50), (75, 25), (100, 0)].into_iter().enumerate() {
        let at = start + (k as i64 + 1) * 5 * MIN;
        let r = tick_at(&f, at).await?;
        assert_eq!(r.action, ActionTaken::Applied, "step {}: {:?}", k + 2, r.guardrail);
        assert_eq!(w.weights().await?, weights(p, s));
        assert!(state(&w, &f).await?.incident.is_some_and(|i| i.closed_at_ms.is_none()), "open while the plan runs");
    }
    let r = tick_at(&f, start + 25 * MIN).await?;
    assert_eq!(r.action, ActionTaken::NoChange);
    assert_eq!(r.plan.and_then(|n| n.outcome), Some(PlanOutcome::Completed));
    let s = state(&w, &f).await?;
    assert!(s.plan.is_none());
    let inc = ledger_objects(&w).await?.pop().context("the incident")?;
    assert_eq!(inc.closed_at_ms, Some(start + 25 * MIN), "closed when the plan completed");
    let steps: Vec<_> = inc.changes.iter().filter_map(|c| c.plan.clone()).collect();
    assert_eq!(steps.len(), 5, "{steps:?}");
    assert!(steps[4].ends_with("step 5 of 5"), "{steps:?}");
    assert!(inc.operator_actions.iter().any(|a| a.command == "plan completed"), "{:?}", inc.operator_actions);
    let n = w.notices(8, 10).await?;
    let sums = summaries(&n);
    assert!(sums.iter().any(|s| s.contains("stepped return to `primary`, step 3 of 5")), "{sums:?}");
    assert!(sums.iter().any(|s| s.contains("completed")), "{sums:?}");
    Ok(())
}

#[tokio::test]
async fn a_primary_failing_at_50_percent_is_rolled_back_at_once_inside_the_cooldown() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&ENV, builtin()).await?;
    evacuated_and_recovered(&w, &f).await?;
    let start = t0() + 15 * MIN;
    for k in 0..3 {
        assert_eq!(tick_at(&f, start + k * 5 * MIN).await?.action, ActionTaken::Applied);
    }
    assert_eq!(w.weights().await?, weights(50, 50));
    // One minute after the 50 % step (the cooldown has 9 minutes to go), the health check
    // fails; the tick sees it before any alarm.
    w.set_health("primary", false).await?;
    let r = tick_at(&f, start + 11 * MIN).await?;
    assert_eq!(r.action, ActionTaken::Applied, "{:?}", r.guardrail);
    assert_eq!(w.weights().await?, weights(0, 100), "back to the weights before the plan");
    let note = r.plan.context("note")?;
    assert_eq!(note.outcome, Some(PlanOutcome::RolledBack));
    assert!(note.reason.contains("step 3 of 5 (50 %)") && note.reason.contains("`primary` is down"), "{}", note.reason);
    let n = w.notices(6, 10).await?;
    let rolled = n.iter().find(|n| n["summary"].as_str().is_some_and(|s| s.contains("rolled back"))).context("a rollback notice")?;
    assert_eq!(rolled["plan"]["outcome"], "rolled_back");
    assert_eq!(rolled["severity"], "warning");
    // The primary recovers: the return starts over after a new hysteresis, from 10 %.
    w.set_health("primary", true).await?;
    assert_eq!(tick_at(&f, start + 12 * MIN).await?.action, ActionTaken::NoChange);
    // Up since the failure seen at +11 min: the hysteresis ends at +21 min.
    assert_eq!(tick_at(&f, start + 20 * MIN).await?.action, ActionTaken::NoChange, "9 min < hysteresis");
    assert_eq!(tick_at(&f, start + 21 * MIN).await?.action, ActionTaken::Applied);
    assert_eq!(w.weights().await?, weights(10, 90));
    let s = state(&w, &f).await?;
    let inc = s.incident.context("still the same open incident")?;
    assert!(inc.changes.iter().any(|c| c.plan.as_deref().is_some_and(|p| p.ends_with(": rollback"))), "{:?}", inc.changes);
    Ok(())
}

#[tokio::test]
async fn eight_concurrent_copies_of_one_tick_take_one_step() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&ENV, builtin()).await?;
    evacuated_and_recovered(&w, &f).await?;
    let start = t0() + 15 * MIN;
    tick_at(&f, start).await?;
    assert_eq!(w.weights().await?, weights(10, 90));
    // The step is due: eight copies of one tick, and two other ticks, at once.
    let at = start + 5 * MIN;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let f = f.clone();
        let id = if i < 8 { "tick-dup".to_owned() } else { format!("tick-other-{i}") };
        tasks.push(tokio::spawn(async move { f.handle(&tick(at, &id)?, Invocation::at(at)).await.map_err(anyhow::Error::from) }));
    }
    let mut changes = std::collections::BTreeSet::new();
    for t in tasks {
        let recs = t.await??;
        // A copy that finds the change made by another copy of its event finishes that
        // one's work and reports it (same change id); it never makes a second change.
        // A copy that finds the change landed before its maker recorded the change id
        // reports it without one (it cannot know it): only the ids given count.
        changes.extend(recs.iter().filter(|r| r.action == ActionTaken::Applied).filter_map(|r| r.change_id.clone()));
    }
    assert_eq!(w.weights().await?, weights(25, 75), "one step, not two");
    assert_eq!(changes.len(), 1, "one Route 53 change, reported under one change id: {changes:?}");
    // Evacuation, step 1, step 2: one notice for the step whichever copy sent it.
    let n = w.notices(20, 5).await?;
    let sums = summaries(&n);
    assert_eq!(sums.iter().filter(|s| s.contains("step 2 of 5")).count(), 1, "{sums:?}");
    let s = state(&w, &f).await?;
    assert_eq!(s.plan.map(|p| p.step), Some(2));
    assert_eq!(tick_at(&f, at + MIN).await?.action, ActionTaken::NoChange, "the next step bakes from this one");
    Ok(())
}

#[tokio::test]
async fn a_switchover_goes_in_steps_stays_there_comes_back_and_is_a_planned_event() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&ENV, builtin()).await?;
    let steps = parse_steps("10,50,100", (5 * MIN) as u64).map_err(anyhow::Error::msg)?;
    let to = |t: &str| Command::Switchover { to: t.into(), steps: steps.clone(), reason: "game day".into() };
    let rec = f.operate(ME, &to("secondary"), t0()).await?;
    assert!(rec.change_id.is_some(), "{}", rec.detail);
    assert_eq!(w.weights().await?, weights(90, 10));
    assert_eq!(tick_at(&f, t0() + 4 * MIN).await?.action, ActionTaken::NoChange);
    assert_eq!(tick_at(&f, t0() + 5 * MIN).await?.action, ActionTaken::Applied);
    assert_eq!(w.weights().await?, weights(50, 50));
    assert_eq!(tick_at(&f, t0() + 10 * MIN).await?.action, ActionTaken::Applied);
    assert_eq!(w.weights().await?, weights(0, 100));
    let r = tick_at(&f, t0() + 15 * MIN).await?;
    assert_eq!(r.plan.and_then(|n| n.outcome), Some(PlanOutcome::Completed));
    // The primary is up and proven, yet traffic stays where the operator put it.
    for at in [t0() + 30 * MIN, t0() + 60 * MIN] {
        assert_eq!(tick_at(&f, at).await?.action, ActionTaken::NoChange);
    }
    assert_eq!(w.weights().await?, weights(0, 100));
    assert!(f.status(t0() + 61 * MIN).await?.switched.is_some());
    // A second switchover while none runs: back to the primary, then aborted at 10 %.
    f.operate(ME, &to("primary"), t0() + 62 * MIN).await?;
    assert_eq!(w.weights().await?, weights(10, 90));
    let err = f.operate(ME, &to("primary"), t0() + 63 * MIN).await.expect_err("one plan at a time");
    assert!(err.to_string().contains("abort"), "{err}");
    f.operate(ME, &Command::Abort { reason: "latency on the primary".into() }, t0() + 64 * MIN).await?;
    assert_eq!(w.weights().await?, weights(0, 100), "back where the switchover started");
    assert_eq!(tick_at(&f, t0() + 80 * MIN).await?.action, ActionTaken::NoChange, "returns held after an abort");
    let s = state(&w, &f).await?;
    assert!(s.plan.is_none() && s.ops.switched.is_some());
    // The ledger: planned events, no incident; availability untouched.
    let ledger = ledger_objects(&w).await?;
    assert!(!ledger.is_empty() && ledger.iter().all(|i| i.planned), "{ledger:?}");
    let report = kbha_failover::ledger::report(
        ledger,
        t0() - MIN,
        t0() + 90 * MIN,
        kbha_failover::ledger::Objectives { slo_percent: 99.95, rpo_ms: 3_600_000, rto_ms: 4 * 3_600_000 },
    );
    assert!(report.incidents.is_empty() && !report.planned.is_empty());
    assert_eq!(report.availability_percent, 100.0);
    Ok(())
}

#[tokio::test]
async fn a_switchover_waits_for_the_rpo_gate_and_refuses_a_target_that_is_down() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&ENV, builtin()).await?;
    w.set_replication("us-west-2", t0() - 2 * 3_600_000).await?;
    let steps = parse_steps("50,100", MIN as u64).map_err(anyhow::Error::msg)?;
    let rec = f.operate(ME, &Command::Switchover { to: "secondary".into(), steps: steps.clone(), reason: "drill".into() }, t0()).await?;
    assert!(rec.change_id.is_none() && rec.detail.contains("RPO gate"), "{}", rec.detail);
    assert_eq!(w.weights().await?, weights(100, 0));
    w.set_replication("us-west-2", t0()).await?;
    assert_eq!(tick_at(&f, t0() + MIN).await?.action, ActionTaken::Applied);
    assert_eq!(w.weights().await?, weights(50, 50));
    f.operate(ME, &Command::Abort { reason: "enough".into() }, t0() + 2 * MIN).await?;
    assert_eq!(w.weights().await?, weights(100, 0));
    w.set_health("secondary", false).await?;
    let err =
        f.operate(ME, &Command::Switchover { to: "secondary".into(), steps, reason: "x".into() }, t0() + 3 * MIN).await.expect_err("down");
    assert!(err.to_string().contains("observed up"), "{err}");
    Ok(())
}
