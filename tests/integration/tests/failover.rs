//! The failover function against the local AWS emulator (moto + kbha's strict Route 53
//! layer). Every assertion reads state back through the AWS APIs: weights through
//! ListResourceRecordSets, notices through an SQS queue subscribed to the topic.

use std::sync::Arc;

use anyhow::Result;
use kbha_failover::{ActionTaken, DecisionRecord, FailoverError, Policies};
use kbha_integration::*;
use kbha_lambda::record::Invocation;
use kbha_policy_lifecycle::{Failover, builtin as builtin_policy, load_artifact};

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;

fn builtin() -> Policies {
    Policies::single(builtin_policy::<Failover>().expect("built-in policy loads"))
}

async fn primary_down(w: &World) -> Result<()> {
    w.set_health("primary", false).await
}

fn applied(records: &[DecisionRecord]) -> usize {
    records.iter().filter(|r| r.action == ActionTaken::Applied).count()
}

#[tokio::test]
async fn primary_alarm_moves_traffic_to_the_secondary_and_announces_it() -> Result<()> {
    let w = World::start().await?;
    let f = w.function(&[], builtin()).await?;
    primary_down(&w).await?;
    let ev = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "m-1")?;
    let recs = f.handle(&ev, Invocation::lambda(t0() + 5 * SEC, "6b1f0d2e-request-1")).await?;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].action, ActionTaken::Applied);
    assert!(recs[0].change_id.as_deref().is_some_and(|c| !c.is_empty()));
    // The record names the Lambda invocation that decided, and has the common shape.
    let record = serde_json::to_value(&recs[0])?;
    assert_eq!(record["request_id"], "6b1f0d2e-request-1", "{record}");
    assert_eq!(kbha_lambda::record::shape_problems(&record), Vec::<String>::new(), "{record}");
    assert_eq!(w.weights().await?, weights(0, 100));
    let notices = w.notices(1, 10).await?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    let n = &notices[0];
    assert_eq!(n["type"], "applied");
    assert_eq!(n["change_id"], serde_json::json!(recs[0].change_id));
    assert_eq!(n["old_weights"][0]["weight"], 100);
    assert_eq!(n["new_weights"][1]["weight"], 100);
    assert!(n["policy_digest"].as_str().is_some_and(|d| d.starts_with("sha256:")));
    assert_eq!(n["_attributes"]["severity"], "warning");
    assert_eq!(n["_attributes"]["source"], "kbha.failover");
    assert_eq!(n["_attributes"]["region"], "us-east-1");
    assert!(n["_subject"].as_str().is_some_and(|s| s.contains("traffic shifted")), "{n}");
    Ok(())
}

#[tokio::test]
async fn the_same_event_delivered_five_times_changes_once() -> Result<()> {
    let w = World::start().await?;
    let f = w.function(&[], builtin()).await?;
    primary_down(&w).await?;
    let ev = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "m-dup")?;
    let mut all = Vec::new();
    for i in 0..5 {
        all.extend(f.handle(&ev, Invocation::lambda(t0() + (5 + i) * SEC, format!("request-{i}"))).await?);
    }
    assert_eq!(applied(&all), 1);
    assert_eq!(all.iter().filter(|r| r.action == ActionTaken::SkippedDuplicate).count(), 4);
    // Each delivery's record, the skipped ones too, names its own invocation.
    let ids: Vec<_> = all.iter().map(|r| r.request_id.clone().unwrap_or_default()).collect();
    assert_eq!(ids, ["request-0", "request-1", "request-2", "request-3", "request-4"]);
    assert_eq!(w.weights().await?, weights(0, 100));
    Ok(())
}

#[tokio::test]
async fn an_ok_older_than_the_change_that_followed_it_changes_nothing() -> Result<()> {
    let w = World::start().await?;
    let f = w.function(&[("KBHA_HYSTERESIS_SECONDS", "0"), ("KBHA_COOLDOWN_SECONDS", "0")], builtin()).await?;
    primary_down(&w).await?;
    f.handle(&alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "m-a")?, Invocation::at(t0() + 10 * SEC)).await?;
    assert_eq!(w.weights().await?, weights(0, 100));
    w.set_health("primary", true).await?;
    // OK that happened before the change was applied, delivered late.
    let late = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "OK", t0() + 5 * SEC, "m-late")?;
    let recs = f.handle(&late, Invocation::at(t0() + 60 * SEC)).await?;
    assert_eq!(recs[0].action, ActionTaken::SkippedStale);
    assert_eq!(w.weights().await?, weights(0, 100));
    Ok(())
}

#[tokio::test]
async fn a_flapping_alarm_changes_at_most_once_within_the_cooldown() -> Result<()> {
    let w = World::start().await?;
    // Hysteresis 0 so the policy itself would fail back at once: only the cooldown holds it.
    let f = w.function(&[("KBHA_HYSTERESIS_SECONDS", "0"), ("KBHA_COOLDOWN_SECONDS", "600")], builtin()).await?;
    let mut all = Vec::new();
    for i in 0..20 {
        let state = if i % 2 == 0 { "ALARM" } else { "OK" };
        w.set_health("primary", state == "OK").await?;
        let at = t0() + i * 10 * SEC;
        all.extend(
            f.handle(&alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", state, at, &format!("flap-{i}"))?, Invocation::at(at + SEC))
                .await?,
        );
    }
    assert_eq!(applied(&all), 1, "{:?}", all.iter().map(|r| r.action).collect::<Vec<_>>());
    let refused = all.iter().filter(|r| r.action == ActionTaken::Refused).count();
    assert!(refused >= 9, "failbacks within the cooldown are refused: {refused}");
    let notices = w.notices(20, 15).await?;
    assert_eq!(notices.len(), 20, "every transition is answered on the topic");
    assert!(notices.iter().filter(|n| n["type"] == "refused").all(|n| n["refusals"][0].as_str().is_some_and(|r| r.contains("cooldown"))));
    Ok(())
}

#[tokio::test]
async fn both_regions_unhealthy_holds_with_a_critical_notice() -> Result<()> {
    let w = World::start().await?;
    let f = w.function(&[], builtin()).await?;
    w.set_health("primary", false).await?;
    w.set_health("secondary", false).await?;
    let recs =
        f.handle(&alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "m-both")?, Invocation::at(t0() + 5 * SEC)).await?;
    assert_eq!(recs[0].action, ActionTaken::NoChange);
    assert_eq!(w.weights().await?, weights(100, 0));
    let n = w.notices(1, 10).await?;
    assert_eq!(n[0]["severity"], "critical", "{}", n[0]);
    assert_eq!(n[0]["_attributes"]["severity"], "critical");
    Ok(())
}

#[tokio::test]
async fn eight_concurrent_invocations_for_one_transition_apply_one_change() -> Result<()> {
    let w = World::start().await?;
    let f = w.function(&[], builtin()).await?;
    primary_down(&w).await?;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let f = Arc::clone(&f);
        // Each SNS delivery carries its own message id, as redeliveries across subscriptions do.
        let ev = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), &format!("conc-{i}"))?;
        tasks.push(tokio::spawn(async move { f.handle(&ev, Invocation::at(t0() + 5 * SEC)).await }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    assert_eq!(applied(&all), 1, "{:?}", all.iter().map(|r| (r.action, r.attempts)).collect::<Vec<_>>());
    assert_eq!(w.weights().await?, weights(0, 100));
    // One notice: only the copy holding the notice claim publishes it.
    let notices = w.notices(8, 3).await?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["type"], "applied");
    assert_eq!(all.iter().filter(|r| r.notice_id.is_some()).count(), 1);
    Ok(())
}

#[tokio::test]
async fn eight_concurrent_copies_of_a_transition_that_changes_nothing_send_one_notice() -> Result<()> {
    let w = World::start().await?;
    let f = w.function(&[], builtin()).await?;
    // The secondary's alarm fires while the primary serves: a notice, no change.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let f = Arc::clone(&f);
        let ev = alarm_event(Shape::Sns, SECONDARY_ALARM, "us-west-2", "ALARM", t0(), &format!("quiet-{i}"))?;
        tasks.push(tokio::spawn(async move { f.handle(&ev, Invocation::at(t0() + 5 * SEC)).await }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    assert_eq!(applied(&all), 0);
    assert_eq!(w.weights().await?, weights(100, 0));
    let notices = w.notices(8, 3).await?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["type"], "no_change");
    assert_eq!(all.iter().filter(|r| r.notice_id.is_some()).count(), 1, "{:?}", all.iter().map(|r| r.action).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn a_record_changed_between_read_and_write_is_detected_and_redecided() -> Result<()> {
    let w = World::start().await?;
    primary_down(&w).await?;
    // An operator sets 50/50 by hand after kbha read the records and before its batch lands.
    let dns = OperatorInterleaves {
        inner: kbha_aws::Route53Dns::from_conf(&w.emu.sdk_config().await),
        operator_weights: std::sync::Mutex::new(Some(vec![("primary".into(), 50), ("secondary".into(), 50)])),
    };
    let f = w.function_with_dns(&[], builtin(), dns).await?;
    let recs =
        f.handle(&alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "m-cas")?, Invocation::at(t0() + 5 * SEC)).await?;
    assert_eq!(recs[0].action, ActionTaken::Applied);
    assert_eq!(recs[0].attempts, 2, "first attempt lost the compare-and-swap");
    assert_eq!(recs[0].old_weights.iter().map(|w| w.weight).collect::<Vec<_>>(), [50, 50], "re-read the operator's weights");
    assert_eq!(w.weights().await?, weights(0, 100));
    Ok(())
}

#[tokio::test]
async fn replication_older_than_the_rpo_holds_with_a_critical_notice() -> Result<()> {
    let w = World::start().await?;
    let f = w.function(&[], builtin()).await?;
    primary_down(&w).await?;
    w.set_replication("us-west-2", t0() - 2 * 60 * MIN).await?;
    let recs =
        f.handle(&alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "m-rpo")?, Invocation::at(t0() + 5 * SEC)).await?;
    assert_eq!(recs[0].action, ActionTaken::NoChange);
    assert_eq!(w.weights().await?, weights(100, 0));
    let n = w.notices(1, 10).await?;
    assert_eq!(n[0]["severity"], "critical");
    assert!(n[0]["alerts"].to_string().to_lowercase().contains("rpo"), "{}", n[0]);
    Ok(())
}

#[tokio::test]
async fn a_stale_source_behind_a_fresh_one_holds_the_rpo_gate_and_the_record_names_it() -> Result<()> {
    let w = World::start().await?;
    primary_down(&w).await?;
    // Redis was copied a minute ago; ChromaDB's newest verified backup is two hours old.
    w.set_replication_sources("us-west-2", &[("redis", t0() - MIN), ("chromadb", t0() - 2 * 60 * MIN)]).await?;
    let f = w.function(&[], builtin()).await?;
    let recs =
        f.handle(&alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "m-rpo-src")?, Invocation::at(t0() + 5 * SEC)).await?;
    assert_eq!(recs[0].action, ActionTaken::NoChange, "{:?}", recs[0].policy);
    assert_eq!(w.weights().await?, weights(100, 0));
    let record = serde_json::to_value(&recs[0])?;
    let secondary = record["replication"].as_array().and_then(|r| r.iter().find(|t| t["set_identifier"] == "secondary")).cloned();
    assert_eq!(secondary.as_ref().map(|t| t["source"].clone()), Some(serde_json::json!("chromadb")), "{record}");

    // A region that needs only Redis (KBHA_RPO_SOURCES) takes the traffic.
    let f = w.function(&[("KBHA_RPO_SOURCES", "redis")], builtin()).await?;
    let recs = f.handle(&tick(t0() + MIN, "tick-rpo-src")?, Invocation::at(t0() + MIN)).await?;
    assert_eq!(recs[0].action, ActionTaken::Applied, "{:?}", recs[0].policy);
    assert_eq!(w.weights().await?, weights(0, 100));
    Ok(())
}

#[tokio::test]
async fn dry_run_changes_nothing_and_says_so() -> Result<()> {
    let w = World::start().await?;
    let f = w.function(&[("KBHA_DRY_RUN", "true")], builtin()).await?;
    primary_down(&w).await?;
    let recs =
        f.handle(&alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "m-dry")?, Invocation::at(t0() + 5 * SEC)).await?;
    assert_eq!(recs[0].action, ActionTaken::DryRun);
    assert_eq!(w.weights().await?, weights(100, 0));
    let n = w.notices(1, 10).await?;
    assert_eq!(n[0]["type"], "dry_run");
    assert_eq!(n[0]["dry_run"], true);
    assert_eq!(n[0]["_attributes"]["dry_run"], "true");
    assert!(n[0]["_subject"].as_str().is_some_and(|s| s.contains("dry-run")));
    Ok(())
}

#[tokio::test]
async fn a_trapping_policy_falls_back_and_an_alert_names_it() -> Result<()> {
    let w = World::start().await?;
    let trap = load_artifact::<Failover>("hostile", "s3://policies/trap.wasm")?;
    let policies = Policies::new(trap, Some(builtin_policy::<Failover>()?));
    let f = w.function(&[("KBHA_POLICY_CONFIG", r#"{"mode":"unreachable"}"#)], policies).await?;
    primary_down(&w).await?;
    let recs =
        f.handle(&alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "m-trap")?, Invocation::at(t0() + 5 * SEC)).await?;
    assert_eq!(recs[0].action, ActionTaken::Applied, "the built-in fallback decided the failover");
    assert_eq!(w.weights().await?, weights(0, 100));
    let n = w.notices(1, 10).await?;
    assert_eq!(n[0]["decided_by"], "builtin");
    assert_eq!(n[0]["policy_faults"][0]["kind"], "trap");
    let alerts = n[0]["alerts"].to_string();
    assert!(alerts.contains("s3://policies/trap.wasm") && alerts.contains("sha256:"), "{alerts}");
    assert_eq!(n[0]["severity"], "critical");
    Ok(())
}

#[tokio::test]
async fn failback_happens_after_the_hysteresis_and_not_before() -> Result<()> {
    let w = World::start().await?;
    // All at once (the stepped return is tests/integration/tests/plans.rs).
    let env = [("KBHA_HYSTERESIS_SECONDS", "600"), ("KBHA_COOLDOWN_SECONDS", "300"), ("KBHA_RETURN_STEPS", "100")];
    let f = w.function(&env, builtin()).await?;
    primary_down(&w).await?;
    f.handle(&alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "fb-1")?, Invocation::at(t0() + 5 * SEC)).await?;
    assert_eq!(w.weights().await?, weights(0, 100));
    w.set_health("primary", true).await?;
    let ok_at = t0() + 20 * MIN;
    let r = f.handle(&alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "OK", ok_at, "fb-2")?, Invocation::at(ok_at + 5 * SEC)).await?;
    assert_eq!(r[0].action, ActionTaken::NoChange, "OK for 5 s is not enough");
    let r = f.handle(&tick(ok_at + 9 * MIN, "tick-1")?, Invocation::at(ok_at + 9 * MIN)).await?;
    assert_eq!(r[0].action, ActionTaken::NoChange, "9 min < 10 min hysteresis");
    assert_eq!(w.weights().await?, weights(0, 100));
    let r = f.handle(&tick(ok_at + 10 * MIN, "tick-2")?, Invocation::at(ok_at + 10 * MIN)).await?;
    assert_eq!(r[0].action, ActionTaken::Applied, "{:?}", r[0].policy);
    assert_eq!(w.weights().await?, weights(100, 0));
    Ok(())
}

#[tokio::test]
async fn each_event_shape_drives_the_same_decision() -> Result<()> {
    let mut results = Vec::new();
    for shape in [Shape::Sns, Shape::EventBridge, Shape::AlarmAction] {
        let w = World::start().await?;
        let f = w.function(&[], builtin()).await?;
        primary_down(&w).await?;
        let recs =
            f.handle(&alarm_event(shape, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "shape")?, Invocation::at(t0() + 5 * SEC)).await?;
        results.push((shape, recs[0].action, recs[0].new_weights.clone(), w.weights().await?));
    }
    for r in &results {
        assert_eq!(r.1, ActionTaken::Applied, "{r:?}");
        assert_eq!(r.3, weights(0, 100), "{r:?}");
        assert_eq!(r.2, results[0].2, "{r:?}");
    }
    Ok(())
}

#[tokio::test]
async fn the_real_fixture_files_drive_a_failover() -> Result<()> {
    for name in ["cloudwatch-alarm-sns.json", "cloudwatch-alarm-eventbridge.json", "cloudwatch-alarm-action-metric.json"] {
        let w = World::start().await?;
        let f = w.function(&[], builtin()).await?;
        primary_down(&w).await?;
        let recs = f.handle(&fixture(name)?, Invocation::at(t0() + 5 * SEC)).await?;
        assert_eq!(recs[0].action, ActionTaken::Applied, "{name}");
        assert_eq!(w.weights().await?, weights(0, 100), "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn an_unrecognised_event_is_a_non_retryable_error_with_a_warning_and_no_change() -> Result<()> {
    let w = World::start().await?;
    let f = w.function(&[], builtin()).await?;
    let err = f.handle(&fixture("s3-object-created.json")?, Invocation::at(t0())).await.expect_err("s3 event refused");
    assert!(matches!(err, FailoverError::Event(_)));
    assert!(!err.retryable());
    assert_eq!(w.weights().await?, weights(100, 0));
    let n = w.notices(1, 10).await?;
    assert_eq!(n[0]["type"], "unrecognised_event");
    assert_eq!(n[0]["_attributes"]["severity"], "warning");
    let state = w.emu.s3().await.list_objects_v2().bucket(STATE_BUCKET).send().await?;
    assert_eq!(state.key_count(), Some(0), "no state written");
    Ok(())
}
