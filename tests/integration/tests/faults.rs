//! Fault tests: every AWS call each function makes, failing through the emulator's fault
//! layer (`tests/harness` `Fault`: throttling, `PriorRequestNotComplete`, 503 `SlowDown`,
//! 500, connection reset before or after the request was handled, stalls).
//!
//! * Failing N times then succeeding (one table per function, one case per call and
//!   fault): the SDK's bounded retries get through and the end state, read back through
//!   the AWS APIs, is right, with exactly one Route 53 change (counted by the emulator)
//!   and exactly one SNS delivery (drained from the SQS queue on the topic).
//! * Failing for good: the invocation fails with a retryable error, nothing is left
//!   half-applied, and the same event redelivered once the fault is gone finishes the
//!   job exactly once (the crash between the Route 53 change and the state write or the
//!   notice included).
//! * A stalled endpoint ends the invocation with a retryable timeout, in bounded time.
//!
//! Each table test prints the number of faults it injected (`--nocapture`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kbha_alert_router::{AlertRouter, Outcome, RouterConfig};
use kbha_aws::{AwsSettings, CloudWatchAlarms, Route53Dns, S3Store, SnsNotifier};
use kbha_core::Verdict;
use kbha_failover::{ActionTaken, FailoverConfig, FailoverFunction, Policies, StoredState};
use kbha_integration::replication::{S3Shape, head_object, manifest_for, s3_event, tar_gz};
use kbha_integration::{PRIMARY_ALARM, Shape, World, alarm_event, fixture, t0, weights};
use kbha_lambda::record::Invocation;
use kbha_policy_lifecycle::{Alerting, Failover, Replication, builtin};
use kbha_replication_verifier::{ActionTaken as VerifierAction, VerificationRecord, VerifierConfig, VerifierFunction};
use kbha_test_harness::{Emulator, Fault, TopicQueue};
use serde_json::{Value, json};

const SEC: i64 = 1000;
/// Failures before the call goes through; the test clients make 5 attempts per call.
const N: u32 = 2;
/// Enough failures to exhaust every retry of an invocation: "failing for good".
const FOREVER: u32 = 1000;
/// How long to wait for a second (unexpected) SNS delivery. moto delivers to SQS
/// inside the Publish call, so anything sent is already queued.
const EXTRA_WAIT: Duration = Duration::from_millis(300);

/// How a call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 400 `Throttling` (Route 53, SNS).
    Throttling,
    /// 400 `PriorRequestNotComplete` (Route 53 change batches).
    PriorRequest,
    /// 503 `SlowDown` (S3).
    SlowDown,
    /// 500.
    Internal,
    /// TCP reset before the request reaches the service.
    Reset,
    /// TCP reset after the service handled the request: the change is made, the answer lost.
    ResetAfter,
}

impl Kind {
    fn fault(self, service: &str) -> Fault {
        match self {
            Kind::Throttling => Fault::error(service, 400, "Throttling"),
            Kind::PriorRequest => Fault::error(service, 400, "PriorRequestNotComplete"),
            Kind::SlowDown => Fault::error(service, 503, "SlowDown"),
            Kind::Internal => Fault::error(service, 500, "InternalError"),
            Kind::Reset => Fault::reset(service),
            Kind::ResetAfter => Fault::reset_after(service),
        }
    }
}

/// One AWS call of a function, as the fault layer matches it.
#[derive(Debug, Clone)]
struct Call {
    name: &'static str,
    service: &'static str,
    method: &'static str,
    path: String,
    kinds: &'static [Kind],
    /// Matching requests let through first (the second write of an object).
    skip: u32,
}

impl Call {
    fn new(name: &'static str, service: &'static str, method: &'static str, path: String, kinds: &'static [Kind]) -> Call {
        Call { name, service, method, path, kinds, skip: 0 }
    }

    fn after(mut self, k: u32) -> Call {
        self.skip = k;
        self
    }

    fn fault(&self, kind: Kind, times: u32) -> Fault {
        kind.fault(self.service).method(self.method).path(&self.path).after(self.skip).times(times)
    }
}

const R53: &[Kind] = &[Kind::Throttling, Kind::Internal, Kind::Reset];
const R53_CHANGE: &[Kind] = &[Kind::Throttling, Kind::PriorRequest, Kind::Internal, Kind::Reset, Kind::ResetAfter];
const S3_READ: &[Kind] = &[Kind::SlowDown, Kind::Internal, Kind::Reset];
const S3_WRITE: &[Kind] = &[Kind::SlowDown, Kind::Internal, Kind::Reset, Kind::ResetAfter];
// A lost Publish answer is not in the table: SNS standard topics cannot deduplicate, so
// the SDK's retry delivers twice (see RELIABILITY.md).
const SNS: &[Kind] = &[Kind::Throttling, Kind::Internal, Kind::Reset];

/// Checks every injected fault was consumed (the call was made, and made again).
async fn consumed(emu: &Emulator, what: &str) -> Result<()> {
    let left = emu.pending_faults().await?;
    ensure!(left.is_empty(), "{what}: faults not consumed, the call was not made as expected: {left:?}");
    Ok(())
}

fn builtin_failover() -> Result<Policies> {
    Ok(Policies::single(builtin::<Failover>()?))
}

// ------------------------------------------------------------------------ failover

/// Per-case resources of the failover function: its own state bucket and topic, so a
/// case sees nothing of the one before; one zone (weights reset per case).
struct FailoverCase {
    bucket: String,
    notices: TopicQueue,
}

async fn failover_case(w: &World, i: usize) -> Result<FailoverCase> {
    let bucket = format!("kbha-state-f{i}");
    w.emu.create_bucket(&bucket).await?;
    let notices = w.emu.create_topic_with_queue(&format!("kbha-notices-f{i}")).await?;
    // Fresh replication status for both regions, so the RPO gate lets the failover through
    // and the status read is a real GetObject.
    for region in ["us-east-1", "us-west-2"] {
        let body = json!({"region": region, "newest_verified_backup_at_ms": t0() - 10 * 60 * SEC}).to_string();
        w.emu.put_bytes(&bucket, &format!("replication/{region}.json"), body.into_bytes()).await?;
    }
    let current = w.weights().await?;
    if current != weights(100, 0) {
        w.emu.set_weight(&w.fx, "primary", 100).await?;
        w.emu.set_weight(&w.fx, "secondary", 0).await?;
    }
    Ok(FailoverCase { bucket, notices })
}

fn failover_env(c: &FailoverCase) -> Vec<(&'static str, String)> {
    vec![
        ("KBHA_STATE_BUCKET", c.bucket.clone()),
        ("KBHA_NOTIFY_TOPIC_ARN", c.notices.topic_arn.clone()),
        ("KBHA_REPLICATION_STATUS", format!("s3://{}/replication/", c.bucket)),
    ]
}

async fn failover_fn(
    w: &World,
    c: &FailoverCase,
    settings: Option<&AwsSettings>,
) -> Result<FailoverFunction<Route53Dns, CloudWatchAlarms, S3Store, SnsNotifier>> {
    let extra = failover_env(c);
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = w.env(&extra);
    let cfg = FailoverConfig::from_lookup(|k| env.get(k).cloned())?;
    let conf = match settings {
        Some(s) => w.emu.sdk_config_with(s).await,
        None => w.emu.sdk_config().await,
    };
    Ok(FailoverFunction::new(
        cfg,
        Route53Dns::from_conf(&conf),
        CloudWatchAlarms::from_conf(&conf),
        S3Store::from_conf(&conf),
        SnsNotifier::from_conf(&conf),
        builtin_failover()?,
    ))
}

fn failover_calls(w: &World, bucket: &str) -> Vec<Call> {
    let zone = &w.fx.zone_id;
    vec![
        Call::new("route53 ListResourceRecordSets", "route53", "GET", format!("/hostedzone/{zone}/rrset/?$"), R53),
        Call::new("route53 GetHealthCheckStatus", "route53", "GET", "/healthcheck/[^/]+/status$".into(), R53),
        Call::new("route53 ChangeResourceRecordSets", "route53", "POST", format!("/hostedzone/{zone}/rrset/?$"), R53_CHANGE),
        Call::new("s3 GetObject state", "s3", "GET", format!("^/{bucket}/kbha/failover/"), S3_READ),
        Call::new("s3 PutObject state", "s3", "PUT", format!("^/{bucket}/kbha/failover/"), S3_WRITE),
        Call::new("s3 GetObject replication status", "s3", "GET", format!("^/{bucket}/replication/"), S3_READ),
        Call::new("sns Publish", "sns", "POST", "^/$".into(), SNS),
    ]
}

/// The state object of a case, read back through GetObject.
async fn failover_state(w: &World, c: &FailoverCase) -> Result<StoredState> {
    let s3 = w.emu.s3().await;
    let list = s3.list_objects_v2().bucket(&c.bucket).prefix("kbha/failover/").send().await?;
    let key = list.contents().first().and_then(|o| o.key()).context("no state object")?.to_owned();
    let body = s3.get_object().bucket(&c.bucket).key(&key).send().await?.body.collect().await?.into_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// kbha's change batches for `event_id`, counted by the emulator.
async fn changes_for(w: &World, event_id: &str) -> Result<usize> {
    Ok(w.emu.change_comments(&w.fx.zone_id).await?.iter().filter(|c| c.contains(&format!("({event_id})"))).count())
}

/// The end state of a failover for `event_id`: traffic on the secondary, one change,
/// one `applied` notice naming the change, the change recorded in the state, the
/// journal empty.
async fn assert_failed_over_once(w: &World, c: &FailoverCase, event_id: &str, change_id: Option<&str>) -> Result<()> {
    ensure!(w.weights().await? == weights(0, 100), "weights {:?}", w.weights().await?);
    let n = changes_for(w, event_id).await?;
    ensure!(n == 1, "{n} route 53 changes for {event_id}");
    let msgs = w.emu.drain_messages(&c.notices, 2, EXTRA_WAIT).await?;
    ensure!(msgs.len() == 1, "{} notices: {:?}", msgs.len(), msgs.iter().map(|m| &m.message).collect::<Vec<_>>());
    let notice: Value = serde_json::from_str(&msgs[0].message)?;
    ensure!(notice["type"] == "applied", "{notice}");
    ensure!(notice["event_id"] == event_id, "{notice}");
    ensure!(notice["change_id"] == json!(change_id), "notice names change {} not {change_id:?}", notice["change_id"]);
    let state = failover_state(w, c).await?;
    ensure!(state.state.handled_events.iter().any(|e| e == event_id), "event not remembered: {state:?}");
    let last = state.state.last_change.as_ref().context("last change not recorded")?;
    ensure!(last.weights.iter().map(|x| x.weight).collect::<Vec<_>>() == [0, 100], "{last:?}");
    ensure!(state.pending.is_empty(), "journal left behind: {:?}", state.pending);
    Ok(())
}

#[tokio::test]
async fn failover_every_call_failing_n_times_then_succeeding_fails_over_once() -> Result<()> {
    let started = Instant::now();
    let w = World::start().await?;
    w.set_health("primary", false).await?;
    let mut injected = 0;
    let mut cases = 0;
    let mut failures = Vec::new();
    let calls = failover_calls(&w, "kbha-state-f[0-9]+");
    for call in &calls {
        for &kind in call.kinds {
            cases += 1;
            let c = failover_case(&w, cases).await?;
            let f = failover_fn(&w, &c, None).await?;
            let event_id = format!("fault-{cases}");
            let ev = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), &event_id)?;
            w.emu.inject(&call.fault(kind, N)).await?;
            let outcome: Result<()> = async {
                let recs = f.handle(&ev, Invocation::at(t0() + 5 * SEC)).await?;
                consumed(&w.emu, call.name).await?;
                ensure!(
                    recs.len() == 1 && recs[0].action == ActionTaken::Applied,
                    "{:?}",
                    recs.iter().map(|r| r.action).collect::<Vec<_>>()
                );
                // A lost ChangeResourceRecordSets answer leaves no change id to report.
                let lost_change_answer = kind == Kind::ResetAfter && call.name.contains("Change");
                ensure!(recs[0].change_id.is_none() == lost_change_answer, "change id {:?}", recs[0].change_id);
                assert_failed_over_once(&w, &c, &event_id, recs[0].change_id.as_deref()).await
            }
            .await;
            w.emu.clear_faults().await?;
            injected += N;
            if let Err(e) = outcome {
                failures.push(format!("{} / {kind:?}: {e:#}", call.name));
            }
        }
    }
    println!("failover: {cases} cases, {injected} faults injected, {:.1} s", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        bail!("{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(())
}

/// The failover invocation meets `fault` for good: it must fail retryably, leave either
/// nothing changed or the change without its notice (`route53_changed`), and the same
/// event redelivered must then fail over exactly once.
async fn failover_fails_for_good_then_recovers(fault: Fault, what: &str, route53_changed: bool) -> Result<()> {
    let w = World::start().await?;
    w.set_health("primary", false).await?;
    let c = failover_case(&w, 1).await?;
    let f = failover_fn(&w, &c, None).await?;
    let event_id = "for-good-1";
    let ev = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), event_id)?;
    w.emu.inject(&fault).await?;
    let err = f.handle(&ev, Invocation::at(t0() + 5 * SEC)).await.expect_err(what);
    ensure!(err.retryable(), "{what}: not retryable: {err}");
    w.emu.clear_faults().await?;
    // Nothing half-applied that a retry could not finish: either nothing changed, or the
    // change stands without its notice and the journal says so.
    let expect = if route53_changed { weights(0, 100) } else { weights(100, 0) };
    ensure!(w.weights().await? == expect, "{what}: weights {:?}", w.weights().await?);
    ensure!(changes_for(&w, event_id).await? == usize::from(route53_changed), "{what}: changes");
    ensure!(w.emu.drain_messages(&c.notices, 1, EXTRA_WAIT).await?.is_empty(), "{what}: a notice went out");

    // The same event again (Lambda's retry), the fault gone.
    let recs = f.handle(&ev, Invocation::at(t0() + 65 * SEC)).await?;
    ensure!(recs[0].action == ActionTaken::Applied, "{what}: retry {:?}", recs[0].action);
    let change_id = recs[0].change_id.clone();
    assert_failed_over_once(&w, &c, event_id, change_id.as_deref()).await.with_context(|| what.to_owned())?;
    // And once more: a duplicate, nothing sent, nothing changed.
    let recs = f.handle(&ev, Invocation::at(t0() + 70 * SEC)).await?;
    ensure!(recs[0].action == ActionTaken::SkippedDuplicate, "{what}: third delivery {:?}", recs[0].action);
    ensure!(w.emu.drain_messages(&c.notices, 1, EXTRA_WAIT).await?.is_empty(), "{what}: third delivery sent a notice");
    ensure!(changes_for(&w, event_id).await? == 1, "{what}: third delivery changed route 53");
    Ok(())
}

#[tokio::test]
async fn failover_change_batch_failing_for_good_changes_nothing_and_the_retry_fails_over_once() -> Result<()> {
    let fault = Fault::error("route53", 400, "PriorRequestNotComplete").method("POST").path("/rrset/?$").times(FOREVER);
    failover_fails_for_good_then_recovers(fault, "route 53 change failing for good", false).await
}

#[tokio::test]
async fn failover_crash_between_the_change_and_the_state_write_is_finished_by_the_retry() -> Result<()> {
    // The first state write (the intent) goes through; every later one fails: Route 53
    // is changed, then the invocation dies before it records the change or announces it.
    let fault = Fault::error("s3", 503, "SlowDown").method("PUT").path("/kbha/failover/").after(1).times(FOREVER);
    failover_fails_for_good_then_recovers(fault, "state write after the change failing for good", true).await
}

#[tokio::test]
async fn failover_notice_lost_after_the_change_is_sent_exactly_once_by_the_retry() -> Result<()> {
    let fault = Fault::error("sns", 500, "InternalError").method("POST").times(FOREVER);
    failover_fails_for_good_then_recovers(fault, "notice failing for good after the change", true).await
}

#[tokio::test]
async fn failover_connection_dropping_after_every_change_answer_is_finished_by_the_retry() -> Result<()> {
    // Every Route 53 change answer lost: the first batch lands, the SDK's retries of it
    // conflict unseen, the invocation fails; the retry finds its own change and finishes it.
    let fault = Fault::reset_after("route53").method("POST").path("/rrset/?$").times(FOREVER);
    failover_fails_for_good_then_recovers(fault, "every change answer lost", true).await
}

#[tokio::test]
async fn failover_under_a_stalled_route53_fails_retryably_in_bounded_time() -> Result<()> {
    let w = World::start().await?;
    w.set_health("primary", false).await?;
    let c = failover_case(&w, 1).await?;
    // Production uses 10 s per attempt and 30 s per call under a 60 s Lambda timeout;
    // scaled down 30x here, the shape is the same.
    let settings = AwsSettings {
        attempt_timeout: Duration::from_millis(300),
        operation_timeout: Duration::from_secs(1),
        max_attempts: 3,
        ..w.emu.aws_settings()
    };
    let f = failover_fn(&w, &c, Some(&settings)).await?;
    w.emu.inject(&Fault::delay("route53", 5_000).times(FOREVER)).await?;
    let ev = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "stalled")?;
    let started = Instant::now();
    let err = f.handle(&ev, Invocation::at(t0() + 5 * SEC)).await.expect_err("route 53 stalls");
    let took = started.elapsed();
    w.emu.clear_faults().await?;
    ensure!(err.retryable(), "{err}");
    ensure!(err.to_string().contains("timed out"), "{err}");
    // One stalled call ends the invocation: bounded by the operation timeout (plus the
    // S3 reads before it), far from a 2 s stand-in for the Lambda timeout.
    ensure!(took < Duration::from_millis(1_800), "took {took:?}");
    ensure!(w.weights().await? == weights(100, 0));
    ensure!(w.emu.drain_messages(&c.notices, 1, EXTRA_WAIT).await?.is_empty());
    Ok(())
}

// ------------------------------------------------------------------------ verifier

/// One verifier case: its own backup, replica and state buckets and topic.
struct VerifierCase {
    /// When the backup was taken (the manifest's `created_at`): minutes before the
    /// wall clock, since S3 stamps LastModified with it and the RPO counts from it.
    taken_at: i64,
    backups: String,
    replica: String,
    state: String,
    notices: TopicQueue,
}

const BACKUP_KEY: &str = "chromadb/chroma-10-00.tar.gz";
const BROKEN_KEY: &str = "redis/dump-10-00.tar.gz";

fn backup_files() -> Vec<(&'static str, &'static [u8])> {
    vec![("chroma.sqlite3", &b"SQLite format 3\0 rows and rows"[..]), ("index/segment-0001.bin", &[7u8; 4096][..])]
}

async fn verifier_case(emu: &Emulator, i: usize) -> Result<VerifierCase> {
    let wall = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis())?;
    let c = VerifierCase {
        taken_at: wall - 5 * 60 * SEC,
        backups: format!("kbha-bk-v{i}"),
        replica: format!("kbha-rp-v{i}"),
        state: format!("kbha-st-v{i}"),
        notices: emu.create_topic_with_queue(&format!("kbha-notices-v{i}")).await?,
    };
    emu.create_bucket(&c.backups).await?;
    emu.create_bucket(&c.state).await?;
    let west = aws_sdk_s3::types::CreateBucketConfiguration::builder()
        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::UsWest2)
        .build();
    emu.s3().await.create_bucket().bucket(&c.replica).create_bucket_configuration(west).send().await?;
    let archive = tar_gz(&backup_files())?;
    let manifest = manifest_for(&backup_files(), &archive, c.taken_at);
    emu.put_bytes(&c.backups, &format!("{BACKUP_KEY}.manifest.json"), manifest.to_string().into_bytes()).await?;
    emu.put_bytes(&c.backups, BACKUP_KEY, archive.clone()).await?;
    emu.put_bytes(&c.replica, BACKUP_KEY, archive.clone()).await?;
    // A damaged one (bytes flipped in the deflate stream) for the notice path.
    let mut broken = archive;
    let mid = broken.len() / 2;
    broken[mid] ^= 0x5a;
    emu.put_bytes(&c.backups, BROKEN_KEY, broken).await?;
    Ok(c)
}

async fn verifier_fn(emu: &Emulator, c: &VerifierCase, settings: Option<&AwsSettings>) -> Result<VerifierFunction<S3Store, SnsNotifier>> {
    let sources = json!([
        {"name": "chromadb", "bucket": c.backups, "prefix": "chromadb/", "region": "us-east-1",
         "copy": {"bucket": c.replica, "region": "us-west-2"}},
        {"name": "redis", "bucket": c.backups, "prefix": "redis/", "region": "us-east-1", "manifest": "none"},
    ]);
    let env = BTreeMap::from([
        ("KBHA_BACKUP_SOURCES".to_owned(), sources.to_string()),
        ("KBHA_STATE_BUCKET".to_owned(), c.state.clone()),
        ("KBHA_NOTIFY_TOPIC_ARN".to_owned(), c.notices.topic_arn.clone()),
    ]);
    let cfg = VerifierConfig::from_lookup(|k| env.get(k).cloned())?;
    let conf = match settings {
        Some(s) => emu.sdk_config_with(s).await,
        None => emu.sdk_config().await,
    };
    Ok(VerifierFunction::new(
        cfg,
        S3Store::from_conf(&conf),
        SnsNotifier::from_conf(&conf),
        kbha_policy_lifecycle::Policies::<Replication>::single(builtin::<Replication>()?),
    )
    .with_region_store("us-west-2", S3Store::from_conf_in_region(&conf, "us-west-2")))
}

async fn get_json(emu: &Emulator, bucket: &str, key: &str) -> Result<Option<Value>> {
    match emu.s3().await.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(Some(serde_json::from_slice(&out.body.collect().await?.into_bytes())?)),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn verification_record(emu: &Emulator, c: &VerifierCase, key: &str) -> Result<Option<VerificationRecord>> {
    Ok(get_json(emu, &c.state, &format!("kbha/replication/records/{}/{key}.json", c.backups))
        .await?
        .map(serde_json::from_value)
        .transpose()?)
}

async fn status_at(emu: &Emulator, c: &VerifierCase, region: &str) -> Result<Option<i64>> {
    Ok(get_json(emu, &c.state, &format!("kbha/replication/status/{region}.json"))
        .await?
        .and_then(|v| v["newest_verified_backup_at_ms"].as_i64()))
}

/// The good backup verified once: record `ok`, both regions' status at its time, no notice.
async fn assert_verified_ok(emu: &Emulator, c: &VerifierCase) -> Result<()> {
    let rec = verification_record(emu, c, BACKUP_KEY).await?.context("no verification record")?;
    ensure!(rec.verdict == Verdict::Ok, "{:?}: {}", rec.verdict, rec.reason);
    for region in ["us-east-1", "us-west-2"] {
        ensure!(status_at(emu, c, region).await? == Some(c.taken_at), "{region} status {:?}", status_at(emu, c, region).await?);
    }
    let msgs = emu.drain_messages(&c.notices, 1, EXTRA_WAIT).await?;
    ensure!(msgs.is_empty(), "an ok backup sent {} notices", msgs.len());
    Ok(())
}

/// The broken backup verified once: record `corrupt`, notified, exactly one notice.
async fn assert_corrupt_once(emu: &Emulator, c: &VerifierCase) -> Result<()> {
    let rec = verification_record(emu, c, BROKEN_KEY).await?.context("no verification record")?;
    ensure!(rec.verdict == Verdict::Corrupt, "{:?}: {}", rec.verdict, rec.reason);
    ensure!(rec.notified, "record says the notice was not sent");
    let msgs = emu.drain_messages(&c.notices, 2, EXTRA_WAIT).await?;
    ensure!(msgs.len() == 1, "{} notices", msgs.len());
    let notice: Value = serde_json::from_str(&msgs[0].message)?;
    ensure!(notice["type"] == "corrupt" && notice["key"] == BROKEN_KEY, "{notice}");
    Ok(())
}

fn verifier_calls() -> Vec<(Call, &'static str)> {
    let bk = "^/kbha-bk-v[0-9]+";
    let st = "^/kbha-st-v[0-9]+";
    let backup = format!("{bk}/chromadb/[^/]+\\.tar\\.gz$");
    vec![
        (Call::new("s3 HeadObject backup", "s3", "HEAD", backup.clone(), S3_READ), BACKUP_KEY),
        (Call::new("s3 GetObject verification record", "s3", "GET", format!("{st}/kbha/replication/records/"), S3_READ), BACKUP_KEY),
        (Call::new("s3 GetObject manifest", "s3", "GET", "\\.manifest\\.json$".into(), S3_READ), BACKUP_KEY),
        (Call::new("s3 GetObject sidecar", "s3", "GET", "\\.sha256$".into(), S3_READ), BACKUP_KEY),
        (Call::new("s3 GetObject backup (streamed)", "s3", "GET", backup, S3_READ), BACKUP_KEY),
        (Call::new("s3 ListObjectsV2 source", "s3", "GET", format!("{bk}/?$"), S3_READ), BACKUP_KEY),
        (Call::new("s3 HeadObject cross-region copy", "s3", "HEAD", "^/kbha-rp-v[0-9]+/".into(), S3_READ), BACKUP_KEY),
        (Call::new("s3 PutObject verification record", "s3", "PUT", format!("{st}/kbha/replication/records/"), S3_WRITE), BACKUP_KEY),
        (Call::new("s3 GetObject status", "s3", "GET", format!("{st}/kbha/replication/status/"), S3_READ), BACKUP_KEY),
        (Call::new("s3 PutObject status", "s3", "PUT", format!("{st}/kbha/replication/status/"), S3_WRITE), BACKUP_KEY),
        (
            Call::new("s3 PutObject record (notified)", "s3", "PUT", format!("{st}/kbha/replication/records/"), S3_WRITE).after(1),
            BROKEN_KEY,
        ),
        (Call::new("sns Publish", "sns", "POST", "^/$".into(), SNS), BROKEN_KEY),
    ]
}

#[tokio::test]
async fn verifier_every_call_failing_n_times_then_succeeding_verifies_once() -> Result<()> {
    let started = Instant::now();
    let emu = Emulator::start()?;
    let mut injected = 0;
    let mut cases = 0;
    let mut failures = Vec::new();
    for (call, key) in verifier_calls() {
        for &kind in call.kinds {
            cases += 1;
            let c = verifier_case(&emu, cases).await?;
            let v = verifier_fn(&emu, &c, None).await?;
            let up = head_object(&emu, &c.backups, key).await?;
            let ev = s3_event(S3Shape::Direct, &[&up]);
            emu.inject(&call.fault(kind, N)).await?;
            let outcome: Result<()> = async {
                let recs = v.handle(&ev, Invocation::at(up.last_modified_ms + 60 * SEC)).await?;
                consumed(&emu, call.name).await?;
                // A lost answer to the create-once record write: the SDK's retry meets the
                // record already there, which the verifier cannot tell from a concurrent
                // copy's, so it reports a duplicate (and still finishes the status).
                let lost_record_answer = kind == Kind::ResetAfter && call.name == "s3 PutObject verification record";
                let want = if lost_record_answer { VerifierAction::Duplicate } else { VerifierAction::Recorded };
                ensure!(recs.len() == 1 && recs[0].action == want, "{:?}", recs.iter().map(|r| r.action).collect::<Vec<_>>());
                if key == BACKUP_KEY { assert_verified_ok(&emu, &c).await } else { assert_corrupt_once(&emu, &c).await }
            }
            .await;
            emu.clear_faults().await?;
            injected += N;
            if let Err(e) = outcome {
                failures.push(format!("{} / {kind:?}: {e:#}", call.name));
            }
        }
    }
    println!("verifier: {cases} cases, {injected} faults injected, {:.1} s", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        bail!("{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(())
}

#[tokio::test]
async fn verifier_status_write_failing_for_good_is_finished_by_the_retry() -> Result<()> {
    let emu = Emulator::start()?;
    let c = verifier_case(&emu, 1).await?;
    let v = verifier_fn(&emu, &c, None).await?;
    let up = head_object(&emu, &c.backups, BACKUP_KEY).await?;
    let ev = s3_event(S3Shape::Direct, &[&up]);
    emu.inject(&Fault::error("s3", 503, "SlowDown").method("PUT").path("/kbha/replication/status/").times(FOREVER)).await?;
    let err = v.handle(&ev, Invocation::at(up.last_modified_ms + 60 * SEC)).await.expect_err("status write fails");
    ensure!(err.retryable(), "{err}");
    emu.clear_faults().await?;
    // The record is written (create-once), the status is not: the retry must raise it.
    ensure!(verification_record(&emu, &c, BACKUP_KEY).await?.is_some());
    ensure!(status_at(&emu, &c, "us-east-1").await?.is_none());
    let recs = v.handle(&ev, Invocation::at(up.last_modified_ms + 120 * SEC)).await?;
    ensure!(recs[0].action == VerifierAction::Duplicate, "{:?}", recs[0].action);
    ensure!(recs[0].status_updated == ["us-east-1", "us-west-2"], "{:?}", recs[0].status_updated);
    assert_verified_ok(&emu, &c).await
}

#[tokio::test]
async fn verifier_notice_failing_for_good_is_sent_exactly_once_by_the_retry() -> Result<()> {
    let emu = Emulator::start()?;
    let c = verifier_case(&emu, 1).await?;
    let v = verifier_fn(&emu, &c, None).await?;
    let up = head_object(&emu, &c.backups, BROKEN_KEY).await?;
    let ev = s3_event(S3Shape::Direct, &[&up]);
    emu.inject(&Fault::error("sns", 500, "InternalError").times(FOREVER)).await?;
    let err = v.handle(&ev, Invocation::at(up.last_modified_ms + 60 * SEC)).await.expect_err("publish fails");
    ensure!(err.retryable(), "{err}");
    emu.clear_faults().await?;
    let rec = verification_record(&emu, &c, BROKEN_KEY).await?.context("record")?;
    ensure!(rec.verdict == Verdict::Corrupt && !rec.notified, "{rec:?}");
    let recs = v.handle(&ev, Invocation::at(up.last_modified_ms + 120 * SEC)).await?;
    ensure!(recs[0].action == VerifierAction::Duplicate && recs[0].notice_id.is_some(), "{:?}", recs[0].action);
    assert_corrupt_once(&emu, &c).await?;
    // A third delivery sends nothing more.
    let recs = v.handle(&ev, Invocation::at(up.last_modified_ms + 180 * SEC)).await?;
    ensure!(recs[0].notice_id.is_none());
    ensure!(emu.drain_messages(&c.notices, 1, EXTRA_WAIT).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn verifier_under_a_stalled_s3_fails_retryably_in_bounded_time() -> Result<()> {
    let emu = Emulator::start()?;
    let c = verifier_case(&emu, 1).await?;
    let settings = AwsSettings {
        attempt_timeout: Duration::from_millis(300),
        operation_timeout: Duration::from_secs(1),
        max_attempts: 3,
        ..emu.aws_settings()
    };
    let v = verifier_fn(&emu, &c, Some(&settings)).await?;
    let up = head_object(&emu, &c.backups, BACKUP_KEY).await?;
    emu.inject(&Fault::delay("s3", 5_000).method("HEAD").times(FOREVER)).await?;
    let started = Instant::now();
    let err = v.handle(&s3_event(S3Shape::Direct, &[&up]), Invocation::at(up.last_modified_ms + 60 * SEC)).await.expect_err("s3 stalls");
    let took = started.elapsed();
    emu.clear_faults().await?;
    ensure!(err.retryable() && err.to_string().contains("timed out"), "{err}");
    ensure!(took < Duration::from_millis(1_800), "took {took:?}");
    ensure!(verification_record(&emu, &c, BACKUP_KEY).await?.is_none(), "nothing recorded");
    Ok(())
}

// -------------------------------------------------------------------------- router

/// One router case: its own state bucket and destination topic.
struct RouterCase {
    bucket: String,
    critical: TopicQueue,
}

async fn router_case(emu: &Emulator, i: usize) -> Result<RouterCase> {
    let c = RouterCase { bucket: format!("kbha-al-r{i}"), critical: emu.create_topic_with_queue(&format!("kbha-critical-r{i}")).await? };
    emu.create_bucket(&c.bucket).await?;
    Ok(c)
}

async fn router_fn(emu: &Emulator, c: &RouterCase, settings: Option<&AwsSettings>) -> Result<AlertRouter<S3Store, SnsNotifier>> {
    let env = BTreeMap::from([
        ("KBHA_DESTINATIONS".to_owned(), json!({"critical": c.critical.topic_arn}).to_string()),
        ("KBHA_STATE_BUCKET".to_owned(), c.bucket.clone()),
    ]);
    let cfg = RouterConfig::from_lookup(|k| env.get(k).cloned())?;
    let conf = match settings {
        Some(s) => emu.sdk_config_with(s).await,
        None => emu.sdk_config().await,
    };
    Ok(AlertRouter::new(
        cfg,
        S3Store::from_conf(&conf),
        SnsNotifier::from_conf(&conf),
        kbha_policy_lifecycle::Policies::<Alerting>::new(builtin::<Alerting>()?, None),
    ))
}

/// A critical CloudWatch alarm as SNS delivers it to the router.
fn critical_alarm(message_id: &str) -> Result<Value> {
    let mut ev = fixture("cloudwatch-alarm-sns.json")?;
    let sns = &mut ev["Records"][0]["Sns"];
    let mut msg: Value = serde_json::from_str(sns["Message"].as_str().unwrap_or("{}"))?;
    msg["AlarmName"] = json!("kbha-api-primary-unhealthy");
    msg["AlarmDescription"] = json!("API health severity=critical service=api");
    msg["NewStateValue"] = json!("ALARM");
    sns["Message"] = json!(msg.to_string());
    sns["MessageId"] = json!(message_id);
    Ok(ev)
}

/// One delivery on the topic, and the alert's state object confirmed (sent once, no claim).
async fn assert_delivered_once(emu: &Emulator, c: &RouterCase) -> Result<()> {
    let msgs = emu.drain_messages(&c.critical, 2, EXTRA_WAIT).await?;
    ensure!(msgs.len() == 1, "{} deliveries", msgs.len());
    let s3 = emu.s3().await;
    let list = s3.list_objects_v2().bucket(&c.bucket).send().await?;
    ensure!(list.contents().len() == 1, "{} state objects", list.contents().len());
    let key = list.contents()[0].key().context("key")?;
    let entry = get_json(emu, &c.bucket, key).await?.context("entry")?;
    ensure!(entry["sent_count"] == 1 && entry["claim"].is_null(), "{entry}");
    Ok(())
}

fn router_calls() -> Vec<Call> {
    let st = "^/kbha-al-r[0-9]+";
    vec![
        Call::new("s3 ListObjectsV2 entries", "s3", "GET", format!("{st}/?$"), S3_READ),
        Call::new("s3 GetObject entry", "s3", "GET", format!("{st}/kbha/alerts/entries/"), S3_READ),
        Call::new("s3 PutObject entry (claim, confirm)", "s3", "PUT", format!("{st}/kbha/alerts/entries/"), S3_WRITE),
        Call::new("sns Publish", "sns", "POST", "^/$".into(), SNS),
    ]
}

#[tokio::test]
async fn router_every_call_failing_n_times_then_succeeding_delivers_once() -> Result<()> {
    let started = Instant::now();
    let emu = Emulator::start()?;
    let mut injected = 0;
    let mut cases = 0;
    let mut failures = Vec::new();
    for call in router_calls() {
        for &kind in call.kinds {
            cases += 1;
            let c = router_case(&emu, cases).await?;
            let r = router_fn(&emu, &c, None).await?;
            let ev = critical_alarm(&format!("fault-{cases}"))?;
            emu.inject(&call.fault(kind, N)).await?;
            let outcome: Result<()> = async {
                let recs = r.handle(&ev, Invocation::at(t0())).await?;
                consumed(&emu, call.name).await?;
                ensure!(recs.len() == 1 && recs[0].action == Outcome::Delivered, "{:?}", recs.iter().map(|r| r.action).collect::<Vec<_>>());
                assert_delivered_once(&emu, &c).await
            }
            .await;
            emu.clear_faults().await?;
            injected += N;
            if let Err(e) = outcome {
                failures.push(format!("{} / {kind:?}: {e:#}", call.name));
            }
        }
    }
    println!("router: {cases} cases, {injected} faults injected, {:.1} s", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        bail!("{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(())
}

#[tokio::test]
async fn router_claim_write_failing_for_good_delivers_nothing_and_the_retry_delivers_once() -> Result<()> {
    let emu = Emulator::start()?;
    let c = router_case(&emu, 1).await?;
    let r = router_fn(&emu, &c, None).await?;
    let ev = critical_alarm("claim-for-good")?;
    emu.inject(&Fault::error("s3", 503, "SlowDown").method("PUT").times(FOREVER)).await?;
    let err = r.handle(&ev, Invocation::at(t0())).await.expect_err("claim fails");
    ensure!(err.retryable(), "{err}");
    emu.clear_faults().await?;
    ensure!(emu.drain_messages(&c.critical, 1, EXTRA_WAIT).await?.is_empty(), "delivered without a claim");
    let recs = r.handle(&ev, Invocation::at(t0() + SEC)).await?;
    ensure!(recs[0].action == Outcome::Delivered, "{:?}", recs[0].action);
    assert_delivered_once(&emu, &c).await
}

#[tokio::test]
async fn router_under_a_stalled_s3_fails_retryably_in_bounded_time() -> Result<()> {
    let emu = Emulator::start()?;
    let c = router_case(&emu, 1).await?;
    let settings = AwsSettings {
        attempt_timeout: Duration::from_millis(300),
        operation_timeout: Duration::from_secs(1),
        max_attempts: 3,
        ..emu.aws_settings()
    };
    let r = router_fn(&emu, &c, Some(&settings)).await?;
    emu.inject(&Fault::delay("s3", 5_000).times(FOREVER)).await?;
    let started = Instant::now();
    let err = r.handle(&critical_alarm("stalled")?, Invocation::at(t0())).await.expect_err("s3 stalls");
    let took = started.elapsed();
    emu.clear_faults().await?;
    ensure!(err.retryable() && err.to_string().contains("timed out"), "{err}");
    ensure!(took < Duration::from_millis(1_800), "took {took:?}");
    ensure!(emu.drain_messages(&c.critical, 1, EXTRA_WAIT).await?.is_empty());
    Ok(())
}
