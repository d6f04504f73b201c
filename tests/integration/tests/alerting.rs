//! The alert router against the local AWS emulator. Deliveries are read back through SQS
//! queues subscribed to the destination topics, state through S3 GetObject; time is an
//! input (`now_ms`), so repeat intervals and windows run in simulated time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use kbha_alert_router::{AlertRouter, DecisionRecord, Outcome, RouterConfig, RouterError};
use kbha_aws::{S3Store, SnsNotifier};
use kbha_core::Suppression;
use kbha_core::time::format_timestamp;
use kbha_integration::{fixture, t0};
use kbha_lambda::record::Invocation;
use kbha_policy_lifecycle::{Alerting, Policies, builtin};
use kbha_test_harness::{Emulator, Fault, SnsEnvelope, TopicQueue};
use serde_json::{Value, json};

const SEC: i64 = 1000;
const BUCKET: &str = "kbha-alert-state";

type Router = AlertRouter<S3Store, SnsNotifier>;

/// An emulator with the three severity topics (each with a queue) and the state bucket.
struct AlertWorld {
    emu: Emulator,
    topics: BTreeMap<&'static str, TopicQueue>,
}

impl AlertWorld {
    async fn start() -> Result<AlertWorld> {
        let emu = Emulator::start()?;
        emu.create_bucket(BUCKET).await?;
        let mut topics = BTreeMap::new();
        for name in ["critical", "warning", "info"] {
            topics.insert(name, emu.create_topic_with_queue(&format!("kbha-{name}")).await?);
        }
        Ok(AlertWorld { emu, topics })
    }

    /// A router over this world (a fresh one per call: a separate Lambda instance, with
    /// its own cache), with `extra` environment overrides.
    async fn router(&self, extra: &[(&str, &str)]) -> Result<Router> {
        let destinations: BTreeMap<&str, &str> = self.topics.iter().map(|(k, t)| (*k, t.topic_arn.as_str())).collect();
        let mut env: BTreeMap<String, String> = BTreeMap::from([
            ("KBHA_DESTINATIONS".to_owned(), serde_json::to_string(&destinations)?),
            ("KBHA_STATE_BUCKET".to_owned(), BUCKET.to_owned()),
        ]);
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let cfg = RouterConfig::from_lookup(|k| env.get(k).cloned())?;
        let conf = self.emu.sdk_config().await;
        let policies = Policies::<Alerting>::new(builtin::<Alerting>()?, None);
        Ok(AlertRouter::new(cfg, S3Store::from_conf(&conf), SnsNotifier::from_conf(&conf), policies))
    }

    /// Deliveries on `topic`: waits up to `secs` for `n` (asks for more to prove "exactly").
    async fn deliveries(&self, topic: &str, n: usize, secs: u64) -> Result<Vec<SnsEnvelope>> {
        let tq = self.topics.get(topic).context("no such topic")?;
        self.emu.drain_messages(tq, n, Duration::from_secs(secs)).await
    }

    /// The state object a decision names, read back through GetObject.
    async fn state(&self, rec: &DecisionRecord) -> Result<Value> {
        let obj = self.emu.s3().await.get_object().bucket(BUCKET).key(&rec.state_key).send().await?;
        Ok(serde_json::from_slice(&obj.body.collect().await?.into_bytes())?)
    }
}

/// A CloudWatch alarm notification as SNS delivers it to the Lambda.
fn alarm(name: &str, region: &str, state: &str, description: &str, at_ms: i64, message_id: &str) -> Result<Value> {
    let mut ev = fixture("cloudwatch-alarm-sns.json")?;
    let sns = &mut ev["Records"][0]["Sns"];
    let mut msg: Value = serde_json::from_str(sns["Message"].as_str().unwrap_or("{}"))?;
    msg["AlarmName"] = json!(name);
    msg["AlarmDescription"] = json!(description);
    msg["AlarmArn"] = json!(format!("arn:aws:cloudwatch:{region}:111122223333:alarm:{name}"));
    msg["NewStateValue"] = json!(state);
    msg["OldStateValue"] = json!(if state == "OK" { "ALARM" } else { "OK" });
    msg["StateChangeTime"] = json!(format_timestamp(at_ms).replace('Z', "+0000"));
    sns["Message"] = json!(msg.to_string());
    sns["MessageId"] = json!(message_id);
    sns["Subject"] = json!(format!("{state}: \"{name}\""));
    Ok(ev)
}

fn outcomes(recs: &[DecisionRecord]) -> Vec<Outcome> {
    recs.iter().map(|r| r.action).collect()
}

fn message(env: &SnsEnvelope) -> Result<Value> {
    serde_json::from_str(&env.message).context("delivery is JSON")
}

#[tokio::test]
async fn critical_alarm_goes_to_the_critical_topic_with_attributes() -> Result<()> {
    let w = AlertWorld::start().await?;
    let r = w.router(&[]).await?;
    let ev = alarm("kbha-api-primary-unhealthy", "us-east-1", "ALARM", "API health severity=critical service=api", t0(), "m-1")?;
    let recs = r.handle(&ev, Invocation::lambda(t0() + 5 * SEC, "3d5c1b7a-request-1")).await?;
    assert_eq!(outcomes(&recs), [Outcome::Delivered]);
    assert_eq!(recs[0].deliveries.len(), 1);
    let record = serde_json::to_value(&recs[0])?;
    assert_eq!(record["request_id"], "3d5c1b7a-request-1", "{record}");
    assert_eq!(kbha_lambda::record::shape_problems(&record), Vec::<String>::new(), "{record}");
    let got = w.deliveries("critical", 2, 3).await?;
    assert_eq!(got.len(), 1, "{got:?}");
    let d = &got[0];
    assert_eq!(d.attributes["severity"], "critical");
    assert_eq!(d.attributes["source"], "cloudwatch");
    assert_eq!(d.attributes["region"], "us-east-1");
    assert_eq!(d.attributes["dedup_key"], "cloudwatch/kbha-api-primary-unhealthy/us-east-1");
    let subject = d.subject.clone().unwrap_or_default();
    assert_eq!(subject, "[kbha critical] ALARM: kbha-api-primary-unhealthy in us-east-1");
    let m = message(d)?;
    assert_eq!(
        (m["status"].as_str(), m["delivery"].as_str(), m["labels"]["service"].as_str()),
        (Some("firing"), Some("firing"), Some("api"))
    );
    assert!(m["body"].as_str().is_some_and(|b| b.contains("\"AlarmName\"")), "the full alarm JSON is kept: {m}");
    assert_eq!(recs[0].deliveries[0].message_id, d.raw["MessageId"].as_str().unwrap_or_default());
    assert!(w.deliveries("warning", 1, 1).await?.is_empty(), "nothing on the warning topic");
    Ok(())
}

#[tokio::test]
async fn the_same_alarm_ten_times_is_delivered_once_then_repeated_after_the_interval() -> Result<()> {
    let w = AlertWorld::start().await?;
    let r = w.router(&[("KBHA_REPEAT_INTERVAL_SECONDS", "600")]).await?;
    let mut recs = Vec::new();
    for i in 0..10 {
        let ev = alarm("kbha-redis-memory-high", "us-east-1", "ALARM", "", t0(), &format!("copy-{i}"))?;
        recs.extend(r.handle(&ev, Invocation::at(t0() + (5 + i) * SEC)).await?);
    }
    assert_eq!(recs.iter().filter(|r| r.action == Outcome::Delivered).count(), 1, "{:?}", outcomes(&recs));
    assert_eq!(recs.iter().filter(|r| r.action == Outcome::Duplicate).count(), 9);
    assert_eq!(w.deliveries("warning", 2, 3).await?.len(), 1);

    let again = alarm("kbha-redis-memory-high", "us-east-1", "ALARM", "", t0(), "copy-late")?;
    let recs = r.handle(&again, Invocation::at(t0() + 605 * SEC)).await?;
    assert_eq!(outcomes(&recs), [Outcome::Repeated]);
    let got = w.deliveries("warning", 2, 3).await?;
    assert_eq!(got.len(), 1);
    assert!(got[0].subject.as_deref().is_some_and(|s| s.starts_with("[kbha warning, repeat]")), "{:?}", got[0].subject);
    assert_eq!(message(&got[0])?["notification"], 2);
    let state = w.state(&recs[0]).await?;
    assert_eq!((state["sent_count"].as_u64(), state["status"].as_str()), (Some(2), Some("firing")));
    assert!(state["claim"].is_null(), "the delivery was confirmed: {state}");
    Ok(())
}

#[tokio::test]
async fn an_open_maintenance_window_suppresses_and_the_record_says_so() -> Result<()> {
    let w = AlertWorld::start().await?;
    let windows = r#"[{"name":"redis-upgrade","start":"2026-11-26T09:30:00Z","end":"2026-11-26T10:30:00Z","match":{"service":"redis"}}]"#;
    let policy_config = json!({ "maintenance_windows": windows }).to_string();
    let r = w.router(&[("KBHA_POLICY_CONFIG", policy_config.as_str())]).await?;
    let ev = alarm("kbha-redis-memory-high", "us-east-1", "ALARM", "severity=critical service=redis", t0(), "m-w")?;
    let recs = r.handle(&ev, Invocation::at(t0() + 5 * SEC)).await?;
    assert_eq!(outcomes(&recs), [Outcome::Suppressed]);
    assert_eq!(recs[0].suppression, Some(Suppression::MaintenanceWindow("redis-upgrade".into())));
    assert!(recs[0].policy.decision.reason.contains("maintenance window `redis-upgrade`"));
    let logged = serde_json::to_value(&recs[0])?;
    assert_eq!(logged["suppression"]["kind"], "maintenance_window", "the decision record line names it: {logged}");
    let state = w.state(&recs[0]).await?;
    assert_eq!(state["suppressed"]["name"], "redis-upgrade");
    assert!(w.deliveries("critical", 1, 2).await?.is_empty());

    // Still firing after the window closed: delivered then.
    let later = alarm("kbha-redis-memory-high", "us-east-1", "ALARM", "severity=critical service=redis", t0(), "m-w2")?;
    let recs = r.handle(&later, Invocation::at(t0() + 31 * 60 * SEC)).await?;
    assert_eq!(outcomes(&recs), [Outcome::Delivered]);
    assert_eq!(w.deliveries("critical", 2, 3).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn region_down_inhibits_per_service_alerts_of_that_region_only() -> Result<()> {
    let w = AlertWorld::start().await?;
    let r = w.router(&[]).await?;
    let down = alarm("kbha-primary-region-down", "us-east-1", "ALARM", "severity=critical", t0(), "m-down")?;
    assert_eq!(outcomes(&r.handle(&down, Invocation::at(t0() + SEC)).await?), [Outcome::Delivered]);
    // A separate instance: it learns about the region-down alert from S3, not memory.
    let r2 = w.router(&[]).await?;
    let east = alarm("kbha-chromadb-latency-high", "us-east-1", "ALARM", "service=chromadb", t0() + 10 * SEC, "m-east")?;
    let recs = r2.handle(&east, Invocation::at(t0() + 11 * SEC)).await?;
    assert_eq!(outcomes(&recs), [Outcome::Suppressed]);
    assert_eq!(recs[0].suppression, Some(Suppression::InhibitedBy("cloudwatch/kbha-primary-region-down/us-east-1".into())));
    let west = alarm("kbha-chromadb-latency-high", "us-west-2", "ALARM", "service=chromadb", t0() + 10 * SEC, "m-west")?;
    assert_eq!(outcomes(&r2.handle(&west, Invocation::at(t0() + 12 * SEC)).await?), [Outcome::Delivered]);

    let critical = w.deliveries("critical", 2, 3).await?;
    assert_eq!(critical.len(), 1);
    assert_eq!(critical[0].attributes["dedup_key"], "cloudwatch/kbha-primary-region-down/us-east-1");
    let warning = w.deliveries("warning", 2, 3).await?;
    assert_eq!(warning.len(), 1, "only the us-west-2 service alarm");
    assert_eq!(warning[0].attributes["region"], "us-west-2");
    Ok(())
}

#[tokio::test]
async fn ok_after_alarm_is_delivered_as_resolved_and_closes_the_entry() -> Result<()> {
    let w = AlertWorld::start().await?;
    let r = w.router(&[]).await?;
    let stray_ok = alarm("kbha-api-secondary-unhealthy", "us-west-2", "OK", "severity=critical", t0(), "m-stray")?;
    assert_eq!(
        outcomes(&r.handle(&stray_ok, Invocation::at(t0())).await?),
        [Outcome::ResolvedUnknown],
        "an OK for nothing fired is not sent"
    );

    let fire = alarm("kbha-api-primary-unhealthy", "us-east-1", "ALARM", "severity=critical", t0(), "m-a")?;
    r.handle(&fire, Invocation::at(t0() + SEC)).await?;
    let ok = fixture("cloudwatch-alarm-sns-ok.json")?;
    let recs = r.handle(&ok, Invocation::at(t0() + 15 * 60 * SEC)).await?;
    assert_eq!(outcomes(&recs), [Outcome::Resolved]);
    let got = w.deliveries("critical", 3, 3).await?;
    assert_eq!(got.len(), 2, "the alarm and its resolution");
    let resolved = &got[1];
    assert_eq!(resolved.attributes["status"], "resolved");
    assert!(
        resolved.subject.as_deref().is_some_and(|s| s.starts_with("[kbha resolved] OK: kbha-api-primary-unhealthy")),
        "{:?}",
        resolved.subject
    );
    let state = w.state(&recs[0]).await?;
    assert_eq!(state["status"], "resolved");
    // The same OK again is a duplicate; a new ALARM is a new incident.
    assert_eq!(outcomes(&r.handle(&ok, Invocation::at(t0() + 16 * 60 * SEC)).await?), [Outcome::Duplicate]);
    let refire = alarm("kbha-api-primary-unhealthy", "us-east-1", "ALARM", "severity=critical", t0() + 20 * 60 * SEC, "m-b")?;
    assert_eq!(outcomes(&r.handle(&refire, Invocation::at(t0() + 20 * 60 * SEC)).await?), [Outcome::Delivered]);
    assert_eq!(w.deliveries("critical", 2, 3).await?.len(), 1);
    Ok(())
}

/// The same SNS message delivered to eight instances at the same instant (same message
/// id, same decision time). Found by the storm: claim tokens were `<message id>@<now>`,
/// so the copy that lost the claim write found a claim equal to its own, took it for its
/// own and published a second time.
#[tokio::test]
async fn eight_copies_of_one_message_at_the_same_instant_deliver_exactly_once() -> Result<()> {
    let w = AlertWorld::start().await?;
    let ev = alarm("kbha-api-primary-unhealthy", "us-east-1", "ALARM", "severity=critical", t0(), "m-same")?;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let r = Arc::new(w.router(&[]).await?);
        let ev = ev.clone();
        tasks.push(tokio::spawn(async move { r.handle(&ev, Invocation::at(t0() + 5 * SEC)).await }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let delivered = all.iter().filter(|r| r.action == Outcome::Delivered).count();
    assert_eq!(delivered, 1, "{:?}", outcomes(&all));
    Ok(())
}

#[tokio::test]
async fn eight_concurrent_copies_of_one_alert_deliver_exactly_once() -> Result<()> {
    let w = AlertWorld::start().await?;
    let ev = alarm("kbha-api-primary-unhealthy", "us-east-1", "ALARM", "severity=critical", t0(), "m-same")?;
    let mut tasks = Vec::new();
    for i in 0..8 {
        // Eight Lambda instances, each with its own clients and cache.
        let r = Arc::new(w.router(&[]).await?);
        let ev = ev.clone();
        tasks.push(tokio::spawn(async move { r.handle(&ev, Invocation::at(t0() + 5 * SEC + i)).await }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    assert_eq!(all.iter().filter(|r| r.action == Outcome::Delivered).count(), 1, "{:?}", outcomes(&all));
    assert!(all.iter().all(|r| matches!(r.action, Outcome::Delivered | Outcome::Duplicate | Outcome::InFlight)));
    assert_eq!(w.deliveries("critical", 2, 4).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_malformed_message_is_delivered_as_a_generic_alert_with_its_raw_text() -> Result<()> {
    let w = AlertWorld::start().await?;
    let r = w.router(&[]).await?;
    let raw = "{\"AlarmName\": \"kbha-api-primary-unhealthy\", \"NewStateValue\": ALARM";
    let mut ev = fixture("cloudwatch-alarm-sns.json")?;
    ev["Records"][0]["Sns"]["Message"] = json!(raw);
    let recs = r.handle(&ev, Invocation::at(t0())).await?;
    assert_eq!(outcomes(&recs), [Outcome::Delivered]);
    let got = w.deliveries("warning", 2, 3).await?;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attributes["source"], "generic");
    let m = message(&got[0])?;
    assert_eq!(m["body"], raw, "the raw text, unchanged");
    // And a plain-text message from another tool.
    let text = fixture("generic-text-sns.json")?;
    assert_eq!(outcomes(&r.handle(&text, Invocation::at(t0())).await?), [Outcome::Delivered]);
    let got = w.deliveries("warning", 2, 3).await?;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].subject.as_deref(), Some("[kbha warning] Disk almost full on kb-worker-3"));
    assert!(message(&got[0])?["body"].as_str().is_some_and(|b| b.starts_with("/var/lib/chroma is at 97%")));
    Ok(())
}

#[tokio::test]
async fn a_failing_publish_is_retried_and_if_it_keeps_failing_the_invocation_fails_retryably() -> Result<()> {
    let w = AlertWorld::start().await?;
    let r = w.router(&[]).await?;
    // Two 500s: the SDK's retry gets through on the third attempt.
    w.emu.inject(&Fault::error("sns", 500, "InternalError").method("POST").times(2)).await?;
    let first = alarm("kbha-api-primary-unhealthy", "us-east-1", "ALARM", "severity=critical", t0(), "m-1")?;
    assert_eq!(outcomes(&r.handle(&first, Invocation::at(t0())).await?), [Outcome::Delivered]);
    assert!(w.emu.pending_faults().await?.is_empty(), "both faults were hit");
    assert_eq!(w.deliveries("critical", 2, 3).await?.len(), 1);

    // SNS keeps failing: the invocation fails, retryable, and nothing is lost.
    w.emu.inject(&Fault::error("sns", 500, "InternalError").method("POST").times(100)).await?;
    let second = alarm("kbha-chromadb-down", "us-west-2", "ALARM", "severity=critical", t0(), "m-2")?;
    let err = r.handle(&second, Invocation::at(t0() + SEC)).await.expect_err("publish keeps failing");
    assert!(matches!(err, RouterError::Delivery { .. }), "{err}");
    assert!(err.retryable());
    w.emu.clear_faults().await?;
    // SNS delivers the same message again (to any instance): now it goes out, once.
    let retry = w.router(&[]).await?;
    assert_eq!(outcomes(&retry.handle(&second, Invocation::at(t0() + 60 * SEC)).await?), [Outcome::Delivered]);
    assert_eq!(outcomes(&retry.handle(&second, Invocation::at(t0() + 61 * SEC)).await?), [Outcome::Duplicate]);
    let got = w.deliveries("critical", 2, 3).await?;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attributes["dedup_key"], "cloudwatch/kbha-chromadb-down/us-west-2");
    Ok(())
}

#[tokio::test]
async fn a_kbha_notice_is_routed_by_its_severity() -> Result<()> {
    let w = AlertWorld::start().await?;
    let r = w.router(&[]).await?;
    let recs = r.handle(&fixture("kbha-notice-sns.json")?, Invocation::at(t0() + 6 * SEC)).await?;
    assert_eq!(outcomes(&recs), [Outcome::Delivered]);
    assert_eq!(recs[0].alert.name, "kbha.failover.applied");
    let got = w.deliveries("warning", 2, 3).await?;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].attributes["source"].as_str(), got[0].attributes["region"].as_str()), ("kbha", "us-east-1"));
    assert_eq!(got[0].subject.as_deref(), Some("[kbha warning] traffic shifted: primary=0, secondary=100"));
    Ok(())
}

#[tokio::test]
async fn a_policy_that_refuses_never_drops_the_alert_and_its_fault_pages_once() -> Result<()> {
    let w = AlertWorld::start().await?;
    // The built-in policy refuses a malformed `routes` value: a policy fault, so the hold
    // answer delivers the alert as critical, and a fault alert names the policy.
    let r = w.router(&[("KBHA_POLICY_CONFIG", r#"{"routes":"[{\"severity\":\"loud\"}]"}"#)]).await?;
    let ev = alarm("kbha-redis-memory-high", "us-east-1", "ALARM", "severity=info", t0(), "m-1")?;
    let recs = r.handle(&ev, Invocation::at(t0())).await?;
    assert_eq!(outcomes(&recs), [Outcome::Delivered]);
    assert_eq!(recs[0].policy.decided_by, "hold");
    assert_eq!(recs[0].policy.faults[0].kind, "refused", "{:?}", recs[0].policy.faults);
    assert_eq!(recs[0].fault_notice, Some(Outcome::Delivered));
    let got = w.deliveries("critical", 3, 3).await?;
    assert_eq!(got.len(), 2, "the alert and the fault notice");
    let subjects: Vec<_> = got.iter().filter_map(|g| g.subject.clone()).collect();
    assert!(subjects.iter().any(|s| s.contains("ALARM: kbha-redis-memory-high")), "{subjects:?}");
    assert!(subjects.iter().any(|s| s.contains("alert policy builtin faulted (refused)")), "{subjects:?}");
    // Another alert: delivered; the fault notice is not repeated within the interval.
    let other = alarm("kbha-api-primary-unhealthy", "us-east-1", "ALARM", "", t0(), "m-2")?;
    let recs = r.handle(&other, Invocation::at(t0() + SEC)).await?;
    assert_eq!((recs[0].action, recs[0].fault_notice), (Outcome::Delivered, Some(Outcome::Duplicate)));
    assert_eq!(w.deliveries("critical", 2, 3).await?.len(), 1);
    Ok(())
}
