//! Operator commands and the incident ledger against the local AWS emulator: every command
//! (pause/resume, shift, drain/undrain, approve-failback, close-incident, status), a command
//! racing the function, pause honoured by events and ticks, the ledger's figures and
//! Route 53's INSYNC recorded. Results are read back through the AWS APIs: weights through
//! ListResourceRecordSets, notices through SQS, the state object and the ledger through S3.

use anyhow::{Context, Result};
use kbha_aws::{Identity, StsIdentity};
use kbha_failover::ActionTaken;
use kbha_failover::ops::{Command, OpsError};
use kbha_integration::*;
use kbha_lambda::record::Invocation;

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const ME: &str = "arn:aws:iam::123456789012:user/oncall";

#[tokio::test]
async fn a_pause_holds_the_evacuation_on_events_and_ticks_announces_it_once_and_resume_lets_it_through() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&[], builtin()).await?;
    let rec = f.operate(ME, &Command::Pause { reason: "db migration".into() }, t0()).await?;
    assert!(rec.notice_id.is_some());
    let n = w.notices(1, 10).await?;
    assert_eq!(n[0]["type"], "operator");
    assert_eq!(n[0]["by"], ME);
    assert_eq!(state(&w, &f).await?.ops.paused.map(|p| p.reason), Some("db migration".into()));

    let r = fail(&w, &f, "primary", t0() + MIN).await?;
    assert_eq!(r.action, ActionTaken::Paused);
    assert_eq!(w.weights().await?, weights(100, 0), "nothing changes while paused");
    let n = w.notices(1, 10).await?;
    assert_eq!(n.len(), 1, "{:?}", summaries(&n));
    assert_eq!(n[0]["severity"], "critical", "an evacuation held by a pause pages: {:?}", summaries(&n));
    assert!(n[0]["summary"].as_str().unwrap_or("").contains("kbha ops resume"), "{:?}", summaries(&n));
    // Ticks keep observing (the incident opens) but hold the change and stay quiet.
    for k in 1..=3 {
        assert_eq!(tick_at(&f, t0() + MIN + k * MIN).await?.action, ActionTaken::Paused);
    }
    assert!(w.notices(1, 2).await?.is_empty(), "the held change is announced once");
    assert!(state(&w, &f).await?.incident.is_some(), "the incident is open while paused");

    f.operate(ME, &Command::Resume, t0() + 5 * MIN).await?;
    assert_eq!(tick_at(&f, t0() + 6 * MIN).await?.action, ActionTaken::Applied);
    assert_eq!(w.weights().await?, weights(0, 100));
    Ok(())
}

#[tokio::test]
async fn a_drained_target_loses_its_traffic_and_gets_none_back_until_undrained() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&[("KBHA_HYSTERESIS_SECONDS", "60"), ("KBHA_COOLDOWN_SECONDS", "60")], builtin()).await?;
    // An unknown target is a clear error, and changes nothing.
    let err = f.operate(ME, &Command::Drain { target: "tertiary".into(), reason: "x".into() }, t0()).await.expect_err("unknown");
    assert!(matches!(err, OpsError::UnknownTarget(_)), "{err}");
    let rec = f.operate(ME, &Command::Drain { target: "primary".into(), reason: "kernel patch".into() }, t0()).await?;
    assert!(rec.change_id.is_some(), "{rec:?}");
    assert_eq!(w.weights().await?, weights(0, 100));
    // The function first sees the primary up now, so it waits for the hysteresis; long
    // after it and the cooldown the policy wants to return, and the drain refuses it.
    assert_ne!(tick_at(&f, t0() + MIN).await?.action, ActionTaken::Applied);
    for k in 1..=3 {
        let r = tick_at(&f, t0() + k * 10 * MIN).await?;
        assert_eq!(r.action, ActionTaken::Refused, "{:?}", r.guardrail);
    }
    assert_eq!(w.weights().await?, weights(0, 100));
    let s = state(&w, &f).await?;
    assert!(s.ops.drained.contains_key("primary"));
    assert_eq!(s.changes.last().map(|c| c.by.as_str()), Some(ME), "the change is recorded with who made it");
    w.notices(10, 3).await?;
    // The secondary fails while the primary is drained: traffic stays (the operator's
    // choice), and a critical notice says why and what to do.
    let r = fail(&w, &f, "secondary", t0() + 35 * MIN).await?;
    assert_eq!(r.action, ActionTaken::Refused);
    assert_eq!(w.weights().await?, weights(0, 100));
    let n = w.notices(1, 10).await?;
    assert!(n.iter().any(|n| n["severity"] == "critical" && n.to_string().contains("kbha ops undrain")), "{:?}", summaries(&n));
    f.operate(ME, &Command::Undrain { target: "primary".into() }, t0() + 40 * MIN).await?;
    assert_eq!(tick_at(&f, t0() + 41 * MIN).await?.action, ActionTaken::Applied, "the evacuation goes through at once");
    assert_eq!(w.weights().await?, weights(100, 0));
    Ok(())
}

#[tokio::test]
async fn a_drain_with_nowhere_to_move_the_traffic_is_an_error_that_keeps_the_mark_and_says_so() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&[], builtin()).await?;
    w.set_health("secondary", false).await?;
    let err = f.operate(ME, &Command::Drain { target: "primary".into(), reason: "patch".into() }, t0()).await.expect_err("nowhere to go");
    assert!(err.to_string().contains("no other undrained target is up"), "{err}");
    assert_eq!(w.weights().await?, weights(100, 0), "traffic stays on the primary");
    let s = state(&w, &f).await?;
    assert!(s.ops.drained.contains_key("primary"), "the mark is set");
    let a = s.actions.last().context("the attempt is recorded")?;
    assert!(a.detail.contains("could not be moved off"), "{a:?}");
    let n = w.notices(2, 10).await?;
    assert!(
        n.iter().any(|n| n["type"] == "operator" && n["summary"].as_str().unwrap_or("").contains("could not be moved off")),
        "{:?}",
        summaries(&n)
    );
    Ok(())
}

#[tokio::test]
async fn approve_failback_returns_traffic_on_the_next_evaluation_and_is_used_up() -> Result<()> {
    let w = world_with_alarms().await?;
    // A return all at once (an approved stepped return: tests/integration/tests/plans.rs).
    let env =
        [("KBHA_FAILBACK", "manual"), ("KBHA_HYSTERESIS_SECONDS", "60"), ("KBHA_COOLDOWN_SECONDS", "60"), ("KBHA_RETURN_STEPS", "100")];
    let f = w.function(&env, builtin()).await?;
    assert_eq!(fail(&w, &f, "primary", t0()).await?.action, ActionTaken::Applied);
    recover(&w, &f, "primary", t0() + 5 * MIN).await?;
    assert_eq!(tick_at(&f, t0() + 20 * MIN).await?.action, ActionTaken::NoChange, "manual failback holds");
    assert_eq!(w.weights().await?, weights(0, 100));
    f.operate(ME, &Command::ApproveFailback, t0() + 21 * MIN).await?;
    assert!(state(&w, &f).await?.ops.failback_approval.is_some());
    assert_eq!(tick_at(&f, t0() + 22 * MIN).await?.action, ActionTaken::Applied);
    assert_eq!(w.weights().await?, weights(100, 0));
    assert!(state(&w, &f).await?.ops.failback_approval.is_none(), "the approval is used up by the return");
    // The next failure and recovery wait for a new approval.
    assert_eq!(fail(&w, &f, "primary", t0() + 30 * MIN).await?.action, ActionTaken::Applied);
    recover(&w, &f, "primary", t0() + 31 * MIN).await?;
    assert_eq!(tick_at(&f, t0() + 45 * MIN).await?.action, ActionTaken::NoChange);
    assert_eq!(w.weights().await?, weights(0, 100));
    Ok(())
}

#[tokio::test]
async fn an_approval_lapses_when_the_primary_fails_again_before_the_return() -> Result<()> {
    let w = world_with_alarms().await?;
    let f =
        w.function(&[("KBHA_FAILBACK", "manual"), ("KBHA_HYSTERESIS_SECONDS", "60"), ("KBHA_COOLDOWN_SECONDS", "60")], builtin()).await?;
    fail(&w, &f, "primary", t0()).await?;
    recover(&w, &f, "primary", t0() + 5 * MIN).await?;
    f.operate(ME, &Command::ApproveFailback, t0() + 6 * MIN).await?;
    // It flaps before the next evaluation, then recovers.
    fail(&w, &f, "primary", t0() + 6 * MIN + 10 * SEC).await?;
    recover(&w, &f, "primary", t0() + 7 * MIN).await?;
    assert_eq!(tick_at(&f, t0() + 20 * MIN).await?.action, ActionTaken::NoChange, "the approval predates the last failure");
    assert_eq!(w.weights().await?, weights(0, 100));
    // With auto failback there is nothing to approve.
    let auto = w.function(&[], builtin()).await?;
    assert!(matches!(auto.operate(ME, &Command::ApproveFailback, t0()).await, Err(OpsError::Invalid(_))));
    Ok(())
}

#[tokio::test]
async fn a_manual_shift_goes_through_the_guardrails_and_force_needs_break_glass() -> Result<()> {
    let w = world_with_alarms().await?;
    let f = w.function(&[], builtin()).await?;
    let to = |t: &str, force: bool| Command::Shift { to: Some(t.into()), weights: vec![], force, reason: "game day".into() };
    let rec = f.operate(ME, &to("secondary", false), t0()).await?;
    assert_eq!(w.weights().await?, weights(0, 100));
    assert!(rec.change_id.is_some());
    // Onto a failing target: refused, forced or not, without break-glass.
    w.set_health("primary", false).await?;
    let err = f.operate(ME, &to("primary", false), t0() + MIN).await.expect_err("onto a down target");
    assert!(err.to_string().contains("would rise although it is down"), "{err}");
    let err = f.operate(ME, &to("primary", true), t0() + MIN).await.expect_err("force without break-glass");
    assert!(err.to_string().contains("break-glass is not enabled"), "{err}");
    assert_eq!(w.weights().await?, weights(0, 100));
    let glass = w.function(&[("KBHA_BREAK_GLASS", "true")], builtin()).await?;
    let rec = glass.operate(ME, &to("primary", true), t0() + 2 * MIN).await?;
    assert!(rec.forced);
    assert_eq!(w.weights().await?, weights(100, 0));
    // Explicit weights, and a clear error for nonsense.
    w.set_health("primary", true).await?;
    let half = Command::Shift {
        to: None,
        weights: kbha_failover::ops::parse_weights("primary=50,secondary=50").map_err(anyhow::Error::msg)?,
        force: false,
        reason: "split".into(),
    };
    glass.operate(ME, &half, t0() + 3 * MIN).await?;
    assert_eq!(w.weights().await?, weights(50, 50));
    let err = f.operate(ME, &Command::Shift { to: None, weights: vec![], force: false, reason: String::new() }, t0() + 4 * MIN).await;
    assert!(matches!(err, Err(OpsError::Invalid(_))));
    Ok(())
}

#[tokio::test]
async fn a_command_racing_the_function_loses_nothing() -> Result<()> {
    // The function evacuates the failed primary while an operator pauses and another drains
    // the secondary's neighbour: every write lands, in whichever order.
    for round in 0..3 {
        let w = world_with_alarms().await?;
        let f = w.function(&[], builtin()).await?;
        let at = t0() + i64::from(round) * MIN;
        w.set_health("primary", false).await?;
        w.emu.set_alarm_state_at("us-east-1", PRIMARY_ALARM, "ALARM", "test", at).await?;
        let ev = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", at, &format!("race-{round}"))?;
        let pause = Command::Pause { reason: format!("race {round}") };
        let (r, p) = tokio::join!(f.handle(&ev, Invocation::at(at + 5 * SEC)), f.operate(ME, &pause, at + 5 * SEC));
        let r = r?.pop().context("record")?;
        p?;
        let s = state(&w, &f).await?;
        assert!(s.ops.paused.is_some(), "round {round}: the pause is kept");
        assert!(s.state.handled_events.iter().any(|e| e == &format!("race-{round}")), "round {round}: the event is recorded");
        assert!(s.actions.iter().any(|a| a.command == "pause"), "round {round}");
        match r.action {
            // The function read the state before the pause: its change stands, recorded.
            ActionTaken::Applied => {
                assert_eq!(w.weights().await?, weights(0, 100));
                assert!(s.changes.iter().any(|c| c.event_id == format!("race-{round}")), "round {round}: the change is recorded");
            }
            // After: it held the change.
            ActionTaken::Paused => assert_eq!(w.weights().await?, weights(100, 0)),
            other => panic!("round {round}: unexpected {other:?}"),
        }
        assert!(s.pending.is_empty() && s.outbox.is_empty(), "round {round}: nothing left half-done: {s:?}");
    }
    // Two operators shifting at once against the function's evacuation: Route 53's
    // compare-and-swap lets each change land whole, one after the other.
    let w = world_with_alarms().await?;
    let f = w.function(&[("KBHA_MIN_INTERVAL_SECONDS", "0")], builtin()).await?;
    w.set_health("primary", false).await?;
    w.emu.set_alarm_state_at("us-east-1", PRIMARY_ALARM, "ALARM", "test", t0()).await?;
    let ev = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "race-shift")?;
    let split = Command::Shift {
        to: None,
        weights: kbha_failover::ops::parse_weights("primary=0,secondary=200").map_err(anyhow::Error::msg)?,
        force: false,
        reason: "more".into(),
    };
    let (r, o) = tokio::join!(f.handle(&ev, Invocation::at(t0() + 5 * SEC)), f.operate(ME, &split, t0() + 5 * SEC));
    let r = r?.pop().context("record")?;
    let s = state(&w, &f).await?;
    let w_now = w.weights().await?;
    assert_eq!(w_now.get("primary"), Some(&0), "traffic is off the failed primary whoever won: {w_now:?}");
    let landed = s.changes.iter().filter(|c| c.change_id.is_some()).count();
    let expected = usize::from(r.action == ActionTaken::Applied) + usize::from(o.is_ok());
    assert_eq!(landed, expected, "every change that landed is recorded: {:?} / {:?} / {:?}", r.action, o.as_ref().err(), s.changes);
    Ok(())
}

#[tokio::test]
async fn the_ledger_records_an_incident_with_insync_and_its_figures_and_status_shows_it() -> Result<()> {
    let w = world_with_alarms().await?;
    w.set_replication("us-west-2", t0() - 10 * MIN).await?;
    let env = [("KBHA_HYSTERESIS_SECONDS", "600"), ("KBHA_COOLDOWN_SECONDS", "600"), ("KBHA_RETURN_STEPS", "100")];
    let f = w.function(&env, builtin()).await?;
    // The emulator answers PENDING on a change's first GetChange, INSYNC afterwards.
    let r = fail(&w, &f, "primary", t0()).await?;
    assert_eq!(r.action, ActionTaken::Applied);
    let s = state(&w, &f).await?;
    let inc = s.incident.clone().context("an incident opened")?;
    assert_eq!((inc.target.as_str(), inc.opened_at_ms, inc.detected_at_ms), ("primary", t0(), t0() + 5 * SEC));
    let evac = inc.evacuation().context("the evacuation is in the incident")?;
    assert_eq!(evac.change_id, r.change_id);
    assert_eq!(evac.insync_at_ms, None, "PENDING when the change was made");
    assert_eq!(evac.rpo_ms, Some((10 * MIN + 5 * SEC) as u64), "the age of the secondary's newest verified backup");
    assert_eq!(ledger_objects(&w).await?.len(), 1, "the ledger object is written at once");

    let status = f.status(t0() + MIN).await?;
    assert!(status.incident.is_some());
    assert_eq!(status.targets[0].weight, 0);

    tick_at(&f, t0() + MIN).await?;
    let s = state(&w, &f).await?;
    let evac = s.incident.as_ref().and_then(|i| i.evacuation().cloned()).context("evacuation")?;
    assert_eq!(evac.insync_at_ms, Some(t0() + MIN), "INSYNC recorded on the next invocation");

    recover(&w, &f, "primary", t0() + 10 * MIN).await?;
    assert_eq!(tick_at(&f, t0() + 21 * MIN).await?.action, ActionTaken::Applied, "failback");
    tick_at(&f, t0() + 22 * MIN).await?;
    // Closed, written, and gone from the state object once its changes are INSYNC.
    let s = state(&w, &f).await?;
    assert!(s.incident.is_none(), "{:?}", s.incident);
    let ledger = ledger_objects(&w).await?;
    assert_eq!(ledger.len(), 1);
    let i = &ledger[0];
    assert_eq!(i.closed_at_ms, Some(t0() + 21 * MIN));
    assert_eq!(i.changes.len(), 2);
    assert!(i.changes.iter().all(|c| c.insync_at_ms.is_some()), "{:?}", i.changes);
    let fig = i.figures(t0() + 30 * MIN);
    assert_eq!(fig.detect_ms, 5 * SEC);
    assert_eq!(fig.evacuate_ms, Some(5 * SEC));
    assert_eq!(fig.insync_ms, Some(MIN));
    assert_eq!(fig.rto_ms, Some(MIN));
    assert_eq!(fig.duration_ms, Some(21 * MIN));
    // The report reads the same ledger.
    let report = kbha_failover::ledger::report(
        f.incidents().await?,
        t0() - 30 * 24 * 60 * MIN,
        t0() + 30 * MIN,
        kbha_failover::ledger::Objectives { slo_percent: 99.95, rpo_ms: 3_600_000, rto_ms: 4 * 3_600_000 },
    );
    assert_eq!(report.incidents.len(), 1);
    assert!((report.unavailable_minutes - 1.0).abs() < 1e-9, "{}", report.unavailable_minutes);
    assert!(report.slo_met);
    Ok(())
}

#[tokio::test]
async fn a_change_not_insync_in_time_is_announced_once_and_operators_close_incidents() -> Result<()> {
    let w = world_with_alarms().await?;
    w.emu.set_change_pending_reads(1000).await?;
    let f = w.function(&[("KBHA_INSYNC_ALERT_MINUTES", "2")], builtin()).await?;
    fail(&w, &f, "primary", t0()).await?;
    let first = w.notices(1, 10).await?;
    assert_eq!(first.len(), 1, "{:?}", summaries(&first));
    tick_at(&f, t0() + MIN).await?;
    assert!(w.notices(1, 2).await?.is_empty(), "not late yet");
    tick_at(&f, t0() + 3 * MIN).await?;
    let late = w.notices(1, 10).await?;
    assert_eq!(late.len(), 1, "{:?}", summaries(&late));
    assert_eq!(late[0]["type"], "change_not_insync");
    assert_eq!(late[0]["severity"], "critical");
    tick_at(&f, t0() + 4 * MIN).await?;
    assert!(w.notices(1, 2).await?.is_empty(), "announced once");
    // The operator closes the incident by hand; it is written to the ledger with who did it.
    let who = StsIdentity::from_conf(&w.emu.sdk_config().await).caller_arn().await?;
    f.operate(&who, &Command::CloseIncident { reason: "handled by hand".into() }, t0() + 5 * MIN).await?;
    let ledger = ledger_objects(&w).await?;
    assert_eq!(ledger[0].closed_by.as_deref(), Some(who.as_str()));
    assert!(ledger[0].operator_actions.iter().any(|a| a.command == "close-incident" && a.by == who));
    assert!(matches!(f.operate(&who, &Command::CloseIncident { reason: "again".into() }, t0() + 6 * MIN).await, Err(OpsError::Invalid(_))));
    Ok(())
}
