//! Shared set-up for the integration tests: real-shaped AWS events built from the
//! fixtures in `samples/events/`, and a failover function wired to a fresh emulator.

pub mod replication;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use kbha_aws::{AwsError, CloudWatchAlarms, Dns, Route53Dns, S3Store, SnsNotifier, WeightedRecord};
use kbha_core::time::{format_timestamp, parse_timestamp};
use kbha_failover::ledger::Incident;
use kbha_failover::{DecisionRecord, FailoverConfig, FailoverFunction, Policies, StoredState};
use kbha_lambda::record::Invocation;
use kbha_test_harness::{Emulator, TopicQueue, WeightedFixture};
use serde_json::{Value, json};

/// Alarm that speaks for the primary target.
pub const PRIMARY_ALARM: &str = "kbha-api-primary-unhealthy";
/// Alarm that speaks for the secondary target.
pub const SECONDARY_ALARM: &str = "kbha-api-secondary-unhealthy";
/// Bucket holding state and replication status.
pub const STATE_BUCKET: &str = "kbha-state";

/// `2026-11-26T10:00:00Z`, the fixtures' transition time.
pub fn t0() -> i64 {
    parse_timestamp("2026-11-26T10:00:00Z").unwrap_or_default()
}

/// A fixture read from `samples/events/`.
pub fn fixture(name: &str) -> Result<Value> {
    let path = kbha_test_harness::repo_root().join("samples/events").join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// How an alarm transition is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// SNS-wrapped CloudWatch notification.
    Sns,
    /// EventBridge `CloudWatch Alarm State Change`.
    EventBridge,
    /// Direct alarm action (`alarmData`).
    AlarmAction,
}

/// A real-shaped event for `alarm` moving to `state` at `at_ms`, delivered as `shape`
/// with delivery id `id` (SNS MessageId / EventBridge id).
pub fn alarm_event(shape: Shape, alarm: &str, region: &str, state: &str, at_ms: i64, id: &str) -> Result<Value> {
    let ts = format_timestamp(at_ms);
    let arn = format!("arn:aws:cloudwatch:{region}:111122223333:alarm:{alarm}");
    let old = if state == "ALARM" { "OK" } else { "ALARM" };
    Ok(match shape {
        Shape::Sns => {
            let mut ev = fixture("cloudwatch-alarm-sns.json")?;
            let rec = &mut ev["Records"][0]["Sns"];
            let mut msg: Value = serde_json::from_str(rec["Message"].as_str().unwrap_or("{}"))?;
            msg["AlarmName"] = json!(alarm);
            msg["AlarmArn"] = json!(arn);
            msg["NewStateValue"] = json!(state);
            msg["OldStateValue"] = json!(old);
            msg["StateChangeTime"] = json!(ts.replace('Z', "+0000"));
            rec["Message"] = json!(msg.to_string());
            rec["MessageId"] = json!(id);
            rec["Subject"] = json!(format!("{state}: \"{alarm}\""));
            ev
        }
        Shape::EventBridge => {
            let mut ev = fixture("cloudwatch-alarm-eventbridge.json")?;
            ev["id"] = json!(id);
            ev["region"] = json!(region);
            ev["resources"] = json!([arn]);
            ev["detail"]["alarmName"] = json!(alarm);
            ev["detail"]["state"]["value"] = json!(state);
            ev["detail"]["state"]["timestamp"] = json!(ts);
            ev["detail"]["previousState"]["value"] = json!(old);
            ev
        }
        Shape::AlarmAction => {
            let mut ev = fixture("cloudwatch-alarm-action-metric.json")?;
            ev["alarmArn"] = json!(arn);
            ev["region"] = json!(region);
            ev["alarmData"]["alarmName"] = json!(alarm);
            ev["alarmData"]["state"]["value"] = json!(state);
            ev["alarmData"]["state"]["timestamp"] = json!(ts);
            ev["alarmData"]["previousState"]["value"] = json!(old);
            ev
        }
    })
}

/// An EventBridge scheduled tick at `at_ms`.
pub fn tick(at_ms: i64, id: &str) -> Result<Value> {
    let mut ev = fixture("eventbridge-scheduled.json")?;
    ev["id"] = json!(id);
    ev["time"] = json!(format_timestamp(at_ms));
    Ok(ev)
}

/// The function type the tests drive.
pub type Function = FailoverFunction<Route53Dns, CloudWatchAlarms, S3Store, SnsNotifier>;

/// An emulator seeded with the weighted record set, a notice topic with a queue, and
/// the state bucket.
pub struct World {
    /// The emulator (dropped last).
    pub emu: Emulator,
    /// Zone and records.
    pub fx: WeightedFixture,
    /// Notice topic and its queue.
    pub notices: TopicQueue,
}

impl World {
    /// Starts an emulator and seeds it.
    pub async fn start() -> Result<World> {
        let emu = Emulator::start()?;
        let fx = emu.create_weighted_fixture(&Default::default()).await?;
        let notices = emu.create_topic_with_queue("kbha-notices").await?;
        emu.create_bucket(STATE_BUCKET).await?;
        Ok(World { emu, fx, notices })
    }

    /// The function's environment for this world, plus `extra` overrides.
    pub fn env(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let targets = json!([
            {"set_identifier": "primary", "region": "us-east-1", "primary": true, "alarms": [PRIMARY_ALARM]},
            {"set_identifier": "secondary", "region": "us-west-2", "alarms": [SECONDARY_ALARM]},
        ]);
        let mut env: BTreeMap<String, String> = [
            ("KBHA_HOSTED_ZONE_ID", self.fx.zone_id.as_str()),
            ("KBHA_RECORD_NAME", self.fx.record_name.as_str()),
            ("KBHA_NOTIFY_TOPIC_ARN", self.notices.topic_arn.as_str()),
            ("KBHA_STATE_BUCKET", STATE_BUCKET),
            ("KBHA_REPLICATION_STATUS", "s3://kbha-state/replication/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.insert("KBHA_TARGETS".into(), targets.to_string());
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        env
    }

    /// A failover function over this world's emulator with `policies`.
    pub async fn function(&self, extra: &[(&str, &str)], policies: Policies) -> Result<Arc<Function>> {
        let dns = Route53Dns::from_conf(&self.emu.sdk_config().await);
        self.function_with_dns(extra, policies, dns).await
    }

    /// The same with another [`Dns`] (used to interleave a concurrent change).
    pub async fn function_with_dns<D: Dns>(
        &self,
        extra: &[(&str, &str)],
        policies: Policies,
        dns: D,
    ) -> Result<Arc<FailoverFunction<D, CloudWatchAlarms, S3Store, SnsNotifier>>> {
        let env = self.env(extra);
        let cfg = FailoverConfig::from_lookup(|k| env.get(k).cloned())?;
        let conf = self.emu.sdk_config().await;
        Ok(Arc::new(FailoverFunction::new(
            cfg,
            dns,
            CloudWatchAlarms::from_conf(&conf),
            S3Store::from_conf(&conf),
            SnsNotifier::from_conf(&conf),
            policies,
        )))
    }

    /// Writes the replication status the verifier would write for `region` after verifying
    /// each `(source, created at)` backup: per-source entries, the top level the oldest.
    pub async fn set_replication_sources(&self, region: &str, sources: &[(&str, i64)]) -> Result<()> {
        let mut status: Option<kbha_core::ReplicationStatus> = None;
        for (source, at) in sources {
            let key = format!("{source}/backup-{at}.tar.gz");
            match status.as_mut() {
                None => status = Some(kbha_core::ReplicationStatus::new(region, source, *at, &key)),
                Some(s) => {
                    s.raise(source, *at, &key);
                }
            }
        }
        let body = serde_json::to_vec(&status.context("at least one source")?)?;
        self.emu.put_bytes(STATE_BUCKET, &format!("replication/{region}.json"), body).await?;
        Ok(())
    }

    /// Writes the replication status the verifier would write for `region`.
    pub async fn set_replication(&self, region: &str, newest_verified_backup_at_ms: i64) -> Result<()> {
        let body = json!({"region": region, "newest_verified_backup_at_ms": newest_verified_backup_at_ms}).to_string();
        self.emu
            .s3()
            .await
            .put_object()
            .bucket(STATE_BUCKET)
            .key(format!("replication/{region}.json"))
            .body(body.into_bytes().into())
            .send()
            .await?;
        Ok(())
    }

    /// Current weights, read back through ListResourceRecordSets.
    pub async fn weights(&self) -> Result<BTreeMap<String, u32>> {
        self.emu.weights(&self.fx).await
    }

    /// Sets a target's health-check status.
    pub async fn set_health(&self, set_identifier: &str, healthy: bool) -> Result<()> {
        let id = &self.fx.target(set_identifier).context("no such target")?.health_check_id;
        self.emu.set_health(id, healthy).await
    }

    /// Notices delivered so far (waits up to `secs` for at least `n`).
    pub async fn notices(&self, n: usize, secs: u64) -> Result<Vec<Value>> {
        let msgs = self.emu.drain_messages(&self.notices, n, std::time::Duration::from_secs(secs)).await?;
        msgs.iter()
            .map(|m| {
                let mut v: Value = serde_json::from_str(&m.message).context("notice is JSON")?;
                v["_subject"] = json!(m.subject);
                v["_attributes"] = json!(m.attributes);
                Ok(v)
            })
            .collect()
    }
}

/// The failover function's built-in policy.
pub fn builtin() -> Policies {
    Policies::single(kbha_policy_lifecycle::builtin::<kbha_policy_lifecycle::Failover>().expect("built-in policy loads"))
}

/// A world whose two mapped alarms exist in CloudWatch, OK since a day before `t0()`.
pub async fn world_with_alarms() -> Result<World> {
    let w = World::start().await?;
    for (region, name) in [("us-east-1", PRIMARY_ALARM), ("us-west-2", SECONDARY_ALARM)] {
        w.emu.put_alarm(region, name).await?;
        w.emu.set_alarm_state_at(region, name, "OK", "steady", t0() - 24 * 3_600_000).await?;
    }
    Ok(w)
}

/// The target's region and alarm.
pub fn alarm_of(target: &str) -> (&'static str, &'static str) {
    if target == "primary" { ("us-east-1", PRIMARY_ALARM) } else { ("us-west-2", SECONDARY_ALARM) }
}

/// A scheduled tick at `at`, handled at `at`: its one decision record.
pub async fn tick_at(f: &Function, at: i64) -> Result<kbha_failover::DecisionRecord> {
    f.handle(&tick(at, &format!("tick-{at}"))?, Invocation::at(at)).await?.pop().context("one record per tick")
}

/// `{primary: p, secondary: s}`.
pub fn weights(p: u32, s: u32) -> BTreeMap<String, u32> {
    BTreeMap::from([("primary".to_owned(), p), ("secondary".to_owned(), s)])
}

/// Real Route 53 access that, just before kbha's first change batch, lets "an operator"
/// change the weights through the same API, so kbha's batch meets records that changed
/// since it read them. Everything else passes straight through.
pub struct OperatorInterleaves {
    /// The real adapter.
    pub inner: Route53Dns,
    /// Weights the operator sets, taken once.
    pub operator_weights: std::sync::Mutex<Option<Vec<(String, u32)>>>,
}

impl Dns for OperatorInterleaves {
    async fn weighted_records(&self, zone_id: &str, name: &str, rtype: &str) -> Result<Vec<WeightedRecord>, AwsError> {
        self.inner.weighted_records(zone_id, name, rtype).await
    }

    async fn swap_records(&self, zone_id: &str, swaps: &[(WeightedRecord, WeightedRecord)], comment: &str) -> Result<String, AwsError> {
        let operator = self.operator_weights.lock().map(|mut g| g.take()).unwrap_or(None);
        if let Some(ws) = operator {
            let (name, rtype) = (&swaps[0].0.name, &swaps[0].0.rtype);
            let current = self.inner.weighted_records(zone_id, name, rtype).await?;
            let theirs = kbha_aws::swaps_for_weights(&current, ws.iter().map(|(id, w)| (id.as_str(), *w)))
                .map_err(|u| AwsError::Invalid { operation: "test", message: format!("unknown {u:?}") })?;
            self.inner.swap_records(zone_id, &theirs, "operator drains by hand").await?;
        }
        self.inner.swap_records(zone_id, swaps, comment).await
    }

    async fn health_status(&self, health_check_id: &str) -> Result<kbha_core::Health, AwsError> {
        self.inner.health_status(health_check_id).await
    }
    async fn change_status(&self, change_id: &str) -> Result<kbha_aws::ChangeStatus, AwsError> {
        self.inner.change_status(change_id).await
    }
}

// ---- shared by the operator and plan tests

/// The target fails (health check and alarm) at `at`; the alarm is delivered 5 s later.
pub async fn fail(w: &World, f: &Function, target: &str, at: i64) -> Result<DecisionRecord> {
    transition_delivered(w, f, target, false, at).await
}

/// The target recovers at `at` (health check passes, alarm OK); delivered 5 s later.
pub async fn recover(w: &World, f: &Function, target: &str, at: i64) -> Result<DecisionRecord> {
    transition_delivered(w, f, target, true, at).await
}

async fn transition_delivered(w: &World, f: &Function, target: &str, healthy: bool, at: i64) -> Result<DecisionRecord> {
    let (region, alarm) = alarm_of(target);
    let state = if healthy { "OK" } else { "ALARM" };
    w.set_health(target, healthy).await?;
    w.emu.set_alarm_state_at(region, alarm, state, "test", at).await?;
    let ev = alarm_event(Shape::Sns, alarm, region, state, at, &format!("{alarm}-{state}-{at}"))?;
    f.handle(&ev, Invocation::at(at + 5_000)).await?.pop().context("one record")
}

/// The state object, read back through S3.
pub async fn state(w: &World, f: &Function) -> Result<StoredState> {
    let key = f.config().state_key();
    let out = w.emu.s3().await.get_object().bucket(STATE_BUCKET).key(&key).send().await.context("GetObject state")?;
    Ok(serde_json::from_slice(&out.body.collect().await?.into_bytes())?)
}

/// Every ledger object, read back through S3 ListObjectsV2 + GetObject.
pub async fn ledger_objects(w: &World) -> Result<Vec<Incident>> {
    let s3 = w.emu.s3().await;
    let list = s3.list_objects_v2().bucket(STATE_BUCKET).prefix("kbha/failover/incidents/").send().await?;
    let mut out = Vec::new();
    for o in list.contents() {
        let got = s3.get_object().bucket(STATE_BUCKET).key(o.key().unwrap_or_default()).send().await?;
        out.push(serde_json::from_slice(&got.body.collect().await?.into_bytes())?);
    }
    Ok(out)
}

/// `severity | summary` of each notice.
pub fn summaries(notices: &[Value]) -> Vec<String> {
    notices.iter().map(|n| format!("{} | {}", n["severity"].as_str().unwrap_or(""), n["summary"].as_str().unwrap_or(""))).collect()
}
