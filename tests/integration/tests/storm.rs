//! The storm: 10 000 mixed events (first deliveries, duplicates with the same or a new
//! message id, late copies of old transitions, flapping alarms, lost transitions whose
//! only trace is CloudWatch's state, health flaps no alarm sees, ticks, bursts of 8
//! concurrent invocations) across the failover function, the replication verifier and the alert
//! router, each against its own emulator. The outcome is read back through the AWS
//! APIs (Route 53 records, SQS queues subscribed to the topics, S3 listings) and compared
//! with a model computed here, a plain re-statement of the rules that calls no kbha
//! decision code. Route 53 changes are counted by a pass-through [`Dns`] that counts the
//! change batches Route 53 accepted.
//!
//! `KBHA_STORM_SEED` replays a run (the seed is printed); `KBHA_STORM_EVENTS` changes the
//! number of events (default 10 000).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kbha_alert_router::{AlertRouter, RouterConfig};
use kbha_aws::{AwsError, CloudWatchAlarms, Dns, Route53Dns, S3Store, SnsNotifier, WeightedRecord};
use kbha_failover::FailoverFunction;
use kbha_integration::replication::{BACKUPS, REPLICA, ReplicationWorld, S3Shape, STATE, Uploaded, manifest_for, s3_event, tar_gz};
use kbha_integration::{PRIMARY_ALARM, Shape, World, alarm_event, t0, tick, weights};
use kbha_lambda::record::Invocation;
use kbha_policy_lifecycle::{Alerting, Failover, Policies, builtin};
use kbha_test_harness::{Emulator, TopicQueue};
use serde_json::{Value, json};
use tokio::task::JoinSet;

const SEC: i64 = 1000;
/// Simulated time between rounds.
const ROUND: i64 = 60 * SEC;
const ROUNDS: usize = 120;
const CONCURRENCY: usize = 8;
const DEFAULT_SEED: u64 = 0x5EED_2026_1126;
/// The failover function's KBHA_COOLDOWN_SECONDS and KBHA_HYSTERESIS_SECONDS (half their
/// defaults, so that returns start and complete within the storm's calm spells), set
/// explicitly so the model and the function agree by construction. Equal, as the model's
/// "a return never meets the cooldown" needs the hysteresis to be at least the cooldown.
const COOLDOWN: i64 = 300 * SEC;
const HYSTERESIS: i64 = 300 * SEC;
/// The failover function's return steps (its default, KBHA_RETURN_STEPS), percent on the
/// primary, and a bake (KBHA_RETURN_BAKE_SECONDS) shorter than its default so that returns
/// complete within the storm's calm spells as well as being rolled back in its restless ones.
const RETURN_STEPS: [u32; 5] = [10, 25, 50, 75, 100];
const RETURN_BAKE: i64 = 120 * SEC;
/// Replication policy default `rpo_s`.
const RPO: i64 = 3600 * SEC;
const ROUTER_BUCKET: &str = "kbha-alert-state";
/// Functions whose first delivery of a transition races a concurrent twin in the same
/// burst (for any left out, the twin would come in the next burst). All three: the
/// storm found the failover function and the verifier each sending a second notice for
/// one transition / one backup, fixed by a claim on the notice (RELIABILITY.md).
const TWINS_AT_ONCE: [&str; 3] = ["alert-router", "failover", "replication-verifier"];

// ------------------------------------------------------------------ randomness

/// SplitMix64: small, seedable, good enough to shuffle a storm.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

// ---------------------------------------------------------------- the events

/// An alarm transition as the world produced it: the model's unit.
#[derive(Debug, Clone)]
struct Transition {
    alarm: String,
    alarm_state: &'static str,
    at_ms: i64,
    /// Router alarms: the severity their description asks for.
    severity: &'static str,
}

#[derive(Debug, Clone)]
enum Work {
    /// The world changes, before the round's deliveries: the primary alarm's state in
    /// CloudWatch (state, since), and/or the primary's health check.
    World { alarm: Option<(&'static str, i64)>, healthy: Option<bool> },
    /// Failover: an alarm transition, delivered in `shape` with message id `id`.
    Failover { t: usize, shape: Shape, id: String },
    /// Failover: a scheduled tick.
    Tick { id: String },
    /// Router: an alarm transition, delivered through SNS with message id `id`.
    Router { t: usize, id: String },
    /// Verifier: an ObjectCreated notification for backup `b`.
    Verify { b: usize, shape: S3Shape },
}

#[derive(Debug, Clone)]
struct Event {
    work: Work,
    now_ms: i64,
}

/// The storm, in bursts of at most [`CONCURRENCY`] events run at once; bursts run in order.
struct Storm {
    failover_transitions: Vec<Transition>,
    router_transitions: Vec<Transition>,
    backups_planned: Vec<(i64, bool)>,
    bursts: Vec<Vec<Event>>,
}

const ROUTER_ALARMS: [(&str, &str); 6] = [
    ("storm-api-latency", "critical"),
    ("storm-db-connections", "critical"),
    ("storm-queue-depth", "warning"),
    ("storm-disk-usage", "warning"),
    ("storm-cache-evictions", "info"),
    ("storm-canary-slow", "info"),
];

fn failover_shape(rng: &mut Rng) -> Shape {
    [Shape::Sns, Shape::EventBridge, Shape::AlarmAction][rng.below(3)]
}

fn s3_shape(rng: &mut Rng) -> S3Shape {
    [S3Shape::Direct, S3Shape::Sns, S3Shape::EventBridge][rng.below(3)]
}

/// Plans the storm: per round of simulated time, a burst of first deliveries (each new
/// item possibly with a concurrent twin), then a tick, then bursts of copies of anything
/// seen so far (same or new message id, any shape, in shuffled order) up to the round's
/// share of `total` events.
fn plan(seed: u64, total: usize) -> Storm {
    let mut rng = Rng(seed);
    let mut s = Storm { failover_transitions: vec![], router_transitions: vec![], backups_planned: vec![], bursts: vec![] };
    let mut primary_alarm = "OK";
    let mut health_flap = false;
    let mut router_state = [false; ROUTER_ALARMS.len()];
    let mut emitted = 0usize;
    let mut uniq = 0u64;
    let mut next_id = |prefix: &str| {
        uniq += 1;
        format!("{prefix}-{uniq:06}")
    };
    // First deliveries made so far, for copies.
    let mut seen: Vec<Work> = Vec::new();
    for round in 0..ROUNDS {
        let t = t0() + round as i64 * ROUND;
        // Flapping comes in spells: 15 rounds of a restless primary alarm, 15 calm ones.
        let flap_p = if (round / 15) % 2 == 0 { 0.45 } else { 0.06 };
        let mut first: Vec<Work> = Vec::new();
        let mut world = Work::World { alarm: None, healthy: None };
        if health_flap {
            // A health flap lasts one round.
            health_flap = false;
            world = Work::World { alarm: None, healthy: Some(true) };
        } else if round > 0 && rng.chance(flap_p) {
            primary_alarm = if primary_alarm == "OK" { "ALARM" } else { "OK" };
            s.failover_transitions.push(Transition { alarm: PRIMARY_ALARM.into(), alarm_state: primary_alarm, at_ms: t, severity: "" });
            world = Work::World { alarm: Some((primary_alarm, t)), healthy: None };
            // One transition in seven is lost on the way (a dead-letter queue, throttled
            // delivery): only CloudWatch knows, and the ticks read it.
            if !rng.chance(1.0 / 7.0) {
                first.push(Work::Failover { t: s.failover_transitions.len() - 1, shape: failover_shape(&mut rng), id: next_id("fo") });
            }
        } else if round > 0 && primary_alarm == "OK" && flap_p > 0.1 && rng.chance(0.15) {
            // In restless spells, the health check fails for one round without the alarm
            // noticing (calm spells stay calm, so traffic gets to return).
            health_flap = true;
            world = Work::World { alarm: None, healthy: Some(false) };
        }
        if let Work::World { alarm: Some(_), .. } | Work::World { healthy: Some(_), .. } = world {
            emitted += 1;
            s.bursts.push(vec![Event { work: world, now_ms: t }]);
        }
        for (i, (name, severity)) in ROUTER_ALARMS.iter().enumerate() {
            if rng.chance(0.12) {
                router_state[i] = !router_state[i];
                let alarm_state = if router_state[i] { "ALARM" } else { "OK" };
                s.router_transitions.push(Transition { alarm: (*name).into(), alarm_state, at_ms: t, severity });
                first.push(Work::Router { t: s.router_transitions.len() - 1, id: next_id("ar") });
            }
        }
        if rng.chance(0.4) {
            // One in five corrupt, one in six taken two hours ago (past the RPO).
            let corrupt = rng.chance(0.2);
            let created = if rng.chance(0.17) { t - 2 * RPO } else { t - 90 * SEC };
            s.backups_planned.push((created, corrupt));
            first.push(Work::Verify { b: s.backups_planned.len() - 1, shape: s3_shape(&mut rng) });
        }
        // Twins: the same transition delivered again, with a new id, at once (in the
        // same burst) or right after (see `TWINS_AT_ONCE`).
        let mut burst: Vec<Work> = Vec::new();
        let mut after: Vec<Work> = Vec::new();
        for w in &first {
            burst.push(w.clone());
            if rng.chance(0.5) {
                let twin = match w {
                    Work::Failover { t, .. } => Work::Failover { t: *t, shape: failover_shape(&mut rng), id: next_id("fo") },
                    Work::Router { t, .. } => Work::Router { t: *t, id: next_id("ar") },
                    Work::Verify { b, .. } => Work::Verify { b: *b, shape: s3_shape(&mut rng) },
                    Work::Tick { .. } | Work::World { .. } => unreachable!("only deliveries are first deliveries"),
                };
                if TWINS_AT_ONCE.contains(&function_of(w)) { burst.push(twin) } else { after.push(twin) }
            }
        }
        rng.shuffle(&mut burst);
        seen.extend(first);
        for chunk in burst.chunks(CONCURRENCY).chain(after.chunks(CONCURRENCY)) {
            emitted += chunk.len();
            s.bursts.push(chunk.iter().map(|w| Event { work: w.clone(), now_ms: t + 5 * SEC }).collect());
        }
        // The tick, alone for the failover function, with copies for the other two.
        let mut copies = Vec::new();
        let share = (total.saturating_sub(emitted)) / (ROUNDS - round);
        let mut tick_burst = vec![Event { work: Work::Tick { id: next_id("tick") }, now_ms: t + 30 * SEC }];
        while copies.len() < share.saturating_sub(1) && !seen.is_empty() {
            // Mostly recent items, sometimes any old one (a late, reordered copy).
            let idx = if rng.chance(0.7) { seen.len() - 1 - rng.below(seen.len().min(12)) } else { rng.below(seen.len()) };
            let copy = match &seen[idx] {
                // Half are redeliveries of the same message, half other deliveries.
                Work::Failover { t, shape, id } if rng.chance(0.5) => Work::Failover { t: *t, shape: *shape, id: id.clone() },
                Work::Failover { t, .. } => Work::Failover { t: *t, shape: failover_shape(&mut rng), id: next_id("fo") },
                Work::Router { t, id } if rng.chance(0.5) => Work::Router { t: *t, id: id.clone() },
                Work::Router { t, .. } => Work::Router { t: *t, id: next_id("ar") },
                Work::Verify { b, .. } => Work::Verify { b: *b, shape: s3_shape(&mut rng) },
                Work::Tick { .. } | Work::World { .. } => continue,
            };
            copies.push(copy);
        }
        rng.shuffle(&mut copies);
        let mut copies = copies.into_iter();
        // Copies of router/verifier items may share the tick's burst; failover copies
        // may too (they change nothing the tick reads).
        tick_burst.extend(copies.by_ref().take(CONCURRENCY - 1).map(|w| Event { work: w, now_ms: t + 30 * SEC }));
        emitted += tick_burst.len();
        s.bursts.push(tick_burst);
        let rest: Vec<Work> = copies.collect();
        for chunk in rest.chunks(CONCURRENCY) {
            emitted += chunk.len();
            s.bursts.push(chunk.iter().map(|w| Event { work: w.clone(), now_ms: t + 40 * SEC }).collect());
        }
    }
    s
}

// ------------------------------------------------------------------- the model

#[derive(Debug, Default, PartialEq, Eq)]
struct FailoverExpect {
    /// The primary's share of the traffic, percent (the secondary has the rest).
    primary: u32,
    /// The stepped return under way: its step (1-based), when that step was taken, and
    /// when the return started.
    plan: Option<(usize, i64, i64)>,
    changes: usize,
    /// Notices by `type`.
    notices: BTreeMap<String, usize>,
    /// Stepped returns started, completed and rolled back.
    returns: usize,
    completed: usize,
    rolled_back: usize,
}

/// The failover rules, restated (docs/failover.md, policies/failover-default,
/// the guardrails' module docs, `kbha_core::plan`):
/// - the truth is what AWS says when an invocation runs: the primary alarm's state in
///   CloudWatch and the primary's health check (the secondary stays healthy). The primary
///   is down while either says so;
/// - a delivery whose transition is the one recorded (or older), or older than the last
///   change, is skipped without a notice. What is recorded is the newest transition an
///   invocation saw, delivered or read from CloudWatch; every other delivery is judged
///   and gets exactly one notice;
/// - every judged invocation (delivery or tick) is an observation: down now, or, for an
///   alarm seen leaving ALARM (every OK here follows an ALARM), down until its transition.
///   The primary is proven up once the last such time is a hysteresis ago;
/// - judging, no return under way: down and carrying traffic: evacuate to the secondary
///   at once (evacuations are not held by the cooldown, and the 5 s minimum interval never
///   binds here). Up, without traffic and proven up: start a stepped return, its first
///   step at once ([`RETURN_STEPS`] percent on the primary). A return can never meet the
///   cooldown: it comes a hysteresis (= cooldown) after the last failure, which is no
///   earlier than the evacuation. So nothing is refused;
/// - judging, a return under way: the primary down now or seen down since the return
///   started: roll back to all on the secondary at once (a change). Else, once the step in
///   place has baked [`RETURN_BAKE`], the next step (a change), or after the last one, the
///   return ends (no change, but a notice). Else nothing;
/// - a tick sends a notice only when it changed something or ended a return (it raises no
///   new alert).
fn failover_model(s: &Storm) -> FailoverExpect {
    #[derive(Default)]
    struct Truth {
        alarm: (&'static str, i64),
        healthy: bool,
        recorded: Option<i64>,
        last_down: Option<i64>,
        last_change: Option<i64>,
    }
    fn judge(w: &mut Truth, now: i64, e: &mut FailoverExpect) -> &'static str {
        // Observe: the alarm as CloudWatch has it now, and the health check.
        if w.recorded.is_none_or(|r| r < w.alarm.1) {
            w.recorded = Some(w.alarm.1);
            if w.alarm.0 == "OK" && w.alarm.1 > t0() {
                w.last_down = w.last_down.max(Some(w.alarm.1));
            }
        }
        let down = w.alarm.0 == "ALARM" || !w.healthy;
        if down {
            w.last_down = Some(now);
        }
        fn change(w: &mut Truth, e: &mut FailoverExpect, now: i64, primary: u32) -> &'static str {
            e.primary = primary;
            e.changes += 1;
            w.last_change = Some(now);
            "applied"
        }
        if let Some((step, step_at, started)) = e.plan {
            if down || w.last_down.is_some_and(|d| d >= started) {
                e.plan = None;
                e.rolled_back += 1;
                return change(w, e, now, 0);
            }
            if now < step_at + RETURN_BAKE {
                return "no_change";
            }
            if step == RETURN_STEPS.len() {
                e.plan = None;
                e.completed += 1;
                return "plan_ended";
            }
            e.plan = Some((step + 1, now, started));
            return change(w, e, now, RETURN_STEPS[step]);
        }
        if down && e.primary > 0 {
            return change(w, e, now, 0);
        }
        if !down && e.primary == 0 && w.last_down.is_some_and(|d| d + HYSTERESIS <= now) {
            e.plan = Some((1, now, now));
            e.returns += 1;
            return change(w, e, now, RETURN_STEPS[0]);
        }
        "no_change"
    }
    let mut e = FailoverExpect { primary: 100, ..FailoverExpect::default() };
    let mut w = Truth { alarm: ("OK", t0() - 86_400 * SEC), healthy: true, ..Truth::default() };
    for ev in s.bursts.iter().flatten() {
        match &ev.work {
            Work::World { alarm, healthy } => {
                if let Some(a) = alarm {
                    w.alarm = *a;
                }
                if let Some(h) = healthy {
                    w.healthy = *h;
                }
            }
            Work::Failover { t, .. } => {
                let tr = &s.failover_transitions[*t];
                let old = w.recorded.is_some_and(|at| tr.at_ms <= at) || w.last_change.is_some_and(|l| tr.at_ms < l);
                if old {
                    // A stale copy is still recorded: it says the primary was down at its time.
                    w.recorded = w.recorded.max(Some(tr.at_ms));
                    w.last_down = w.last_down.max(Some(tr.at_ms));
                } else {
                    // Recorded as delivered (the previous state was ALARM for an OK).
                    w.recorded = Some(tr.at_ms);
                    w.last_down = w.last_down.max(Some(tr.at_ms));
                    // A return that ends without a change says so in a `no_change` notice.
                    let kind = judge(&mut w, ev.now_ms, &mut e).replace("plan_ended", "no_change");
                    *e.notices.entry(kind).or_default() += 1;
                }
            }
            Work::Tick { .. } => match judge(&mut w, ev.now_ms, &mut e) {
                "no_change" => {}
                "plan_ended" => *e.notices.entry("no_change".into()).or_default() += 1,
                kind => *e.notices.entry(kind.into()).or_default() += 1,
            },
            _ => {}
        }
    }
    e
}

/// The alert router's rules for CloudWatch alarms, restated: alerts are keyed by alarm
/// (and region); a copy of a transition already seen, or of one older than the newest
/// seen for that alarm, delivers nothing. An ALARM opens an incident and is delivered
/// once to the topic of its severity (`severity=` in the alarm description); the OK that
/// ends a delivered incident is delivered once there too. Nothing repeats within the
/// storm (repeat interval one day), nothing is suppressed (no windows, silences or
/// `*region-down*` alarms). Returns (topic, alarm, status) per expected delivery.
fn router_model(s: &Storm) -> Vec<(String, String, String)> {
    let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
    let mut out = Vec::new();
    for ev in s.bursts.iter().flatten() {
        if let Work::Router { t, .. } = &ev.work {
            let tr = &s.router_transitions[*t];
            if newest.get(tr.alarm.as_str()).is_some_and(|n| tr.at_ms <= *n) {
                continue;
            }
            newest.insert(tr.alarm.as_str(), tr.at_ms);
            let status = if tr.alarm_state == "ALARM" { "firing" } else { "resolved" };
            out.push((tr.severity.to_owned(), tr.alarm.clone(), status.to_owned()));
        }
    }
    out.sort();
    out
}

/// The verifier's rules, restated: each backup object is verified once, however many
/// notifications name it, and leaves one verification record. Its verdict: corrupt when
/// its manifest does not match; else breach when it was taken more than the RPO before
/// it was verified; else ok (its copy is present and its size is like the previous
/// one's). Every verdict but ok sends one notice. Returns the verdicts by key.
fn verifier_model(s: &Storm, keys: &[String]) -> BTreeMap<String, &'static str> {
    let mut out = BTreeMap::new();
    for ev in s.bursts.iter().flatten() {
        if let Work::Verify { b, .. } = &ev.work
            && !out.contains_key(&keys[*b])
        {
            let (created, corrupt) = s.backups_planned[*b];
            let verdict = if corrupt {
                "corrupt"
            } else if ev.now_ms - created > RPO {
                "breach"
            } else {
                "ok"
            };
            out.insert(keys[*b].clone(), verdict);
        }
    }
    out
}

// --------------------------------------------------------------- the functions

/// Real Route 53 access that counts the change batches Route 53 accepted.
struct CountingDns {
    inner: Route53Dns,
    changes: Arc<AtomicUsize>,
}

impl Dns for CountingDns {
    async fn weighted_records(&self, zone_id: &str, name: &str, rtype: &str) -> Result<Vec<WeightedRecord>, AwsError> {
        self.inner.weighted_records(zone_id, name, rtype).await
    }

    async fn swap_records(&self, zone_id: &str, swaps: &[(WeightedRecord, WeightedRecord)], comment: &str) -> Result<String, AwsError> {
        let id = self.inner.swap_records(zone_id, swaps, comment).await?;
        self.changes.fetch_add(1, Ordering::SeqCst);
        Ok(id)
    }

    async fn health_status(&self, health_check_id: &str) -> Result<kbha_core::Health, AwsError> {
        self.inner.health_status(health_check_id).await
    }
    async fn change_status(&self, change_id: &str) -> Result<kbha_aws::ChangeStatus, AwsError> {
        self.inner.change_status(change_id).await
    }
}

type Failovers = FailoverFunction<CountingDns, CloudWatchAlarms, S3Store, SnsNotifier>;
type Router = AlertRouter<S3Store, SnsNotifier>;
type Verifier = kbha_integration::replication::Verifier;

/// An emulator with the router's severity topics (each with a queue) and state bucket.
struct RouterWorld {
    emu: Emulator,
    topics: BTreeMap<&'static str, TopicQueue>,
}

impl RouterWorld {
    async fn start() -> Result<RouterWorld> {
        let emu = Emulator::start()?;
        emu.create_bucket(ROUTER_BUCKET).await?;
        let mut topics = BTreeMap::new();
        for name in ["critical", "warning", "info"] {
            topics.insert(name, emu.create_topic_with_queue(&format!("kbha-{name}")).await?);
        }
        Ok(RouterWorld { emu, topics })
    }

    async fn router(&self) -> Result<Router> {
        let destinations: BTreeMap<&str, &str> = self.topics.iter().map(|(k, t)| (*k, t.topic_arn.as_str())).collect();
        let env = BTreeMap::from([
            ("KBHA_DESTINATIONS".to_owned(), serde_json::to_string(&destinations)?),
            ("KBHA_STATE_BUCKET".to_owned(), ROUTER_BUCKET.to_owned()),
            ("KBHA_REPEAT_INTERVAL_SECONDS".to_owned(), "86400".to_owned()),
        ]);
        let cfg = RouterConfig::from_lookup(|k| env.get(k).cloned())?;
        let conf = self.emu.sdk_config().await;
        Ok(AlertRouter::new(
            cfg,
            S3Store::from_conf(&conf),
            SnsNotifier::from_conf(&conf),
            Policies::<Alerting>::new(builtin::<Alerting>()?, None),
        ))
    }
}

/// A CloudWatch alarm notification through SNS whose description carries `severity=`.
fn router_event(tr: &Transition, id: &str) -> Result<Value> {
    let mut ev = alarm_event(Shape::Sns, &tr.alarm, "us-east-1", tr.alarm_state, tr.at_ms, id)?;
    let sns = &mut ev["Records"][0]["Sns"];
    let mut msg: Value = serde_json::from_str(sns["Message"].as_str().unwrap_or("{}"))?;
    msg["AlarmDescription"] = json!(format!("storm alarm severity={} service=storm", tr.severity));
    sns["Message"] = json!(msg.to_string());
    Ok(ev)
}

/// The three functions and what the driver needs to build their events.
struct Functions {
    /// The failover function's emulator, for the world's changes.
    world: Arc<World>,
    failover: Arc<Failovers>,
    router: Arc<Router>,
    verifier: Arc<Verifier>,
    backups: Arc<Vec<Uploaded>>,
    storm: Arc<Storm>,
}

/// What running one event produced, for the figures.
#[derive(Debug, Default)]
struct Tally {
    by_function: BTreeMap<&'static str, usize>,
    /// Invocations that failed retryably and were delivered again.
    retries: BTreeMap<&'static str, usize>,
    applied_records: usize,
}

fn function_of(w: &Work) -> &'static str {
    match w {
        Work::World { .. } => "world",
        Work::Failover { .. } | Work::Tick { .. } => "failover",
        Work::Router { .. } => "alert-router",
        Work::Verify { .. } => "replication-verifier",
    }
}

/// Runs one event; `Ok(Err(_))` is a retryable failure (Lambda would deliver it again),
/// `Err(_)` a failure the storm must not cause.
async fn run(f: &Functions, ev: &Event) -> Result<std::result::Result<usize, String>> {
    Ok(match &ev.work {
        Work::World { alarm, healthy } => {
            let w = &f.world;
            if let Some((state, since)) = alarm {
                w.emu.set_alarm_state_at("us-east-1", PRIMARY_ALARM, state, "storm", *since).await?;
            }
            if let Some(h) = healthy {
                w.set_health("primary", *h).await?;
            }
            Ok(0)
        }
        Work::Failover { t, shape, id } => {
            let tr = &f.storm.failover_transitions[*t];
            let body = alarm_event(*shape, &tr.alarm, "us-east-1", tr.alarm_state, tr.at_ms, id)?;
            match f.failover.handle(&body, Invocation::at(ev.now_ms)).await {
                Ok(recs) => Ok(recs.iter().filter(|r| r.action == kbha_failover::ActionTaken::Applied).count()),
                Err(e) if e.retryable() => Err(e.to_string()),
                Err(e) => bail!("failover {id}: {e}"),
            }
        }
        Work::Tick { id } => match f.failover.handle(&tick(ev.now_ms, id)?, Invocation::at(ev.now_ms)).await {
            Ok(recs) => Ok(recs.iter().filter(|r| r.action == kbha_failover::ActionTaken::Applied).count()),
            Err(e) if e.retryable() => Err(e.to_string()),
            Err(e) => bail!("tick {id}: {e}"),
        },
        Work::Router { t, id } => {
            match f.router.handle(&router_event(&f.storm.router_transitions[*t], id)?, Invocation::at(ev.now_ms)).await {
                Ok(_) => Ok(0),
                Err(e) if e.retryable() => Err(e.to_string()),
                Err(e) => bail!("router {id}: {e}"),
            }
        }
        Work::Verify { b, shape } => match f.verifier.handle(&s3_event(*shape, &[&f.backups[*b]]), Invocation::at(ev.now_ms)).await {
            Ok(_) => Ok(0),
            Err(e) if e.retryable() => Err(e.to_string()),
            Err(e) => bail!("verifier {}: {e}", f.backups[*b].key),
        },
    })
}

/// Runs the bursts in order, each burst's events at once; a retryable failure is
/// delivered again after its burst, as Lambda's retry would (at most 5 times).
async fn drive(f: Arc<Functions>) -> Result<Tally> {
    let mut tally = Tally::default();
    for burst in &f.storm.bursts {
        let mut pending: Vec<Event> = burst.clone();
        for attempt in 0..6 {
            if pending.is_empty() {
                break;
            }
            ensure!(attempt < 5, "still failing after 5 deliveries: {pending:?}");
            let mut set = JoinSet::new();
            for ev in pending.drain(..) {
                let f = Arc::clone(&f);
                set.spawn(async move {
                    let out = run(&f, &ev).await;
                    (ev, out)
                });
            }
            while let Some(joined) = set.join_next().await {
                let (ev, out) = joined.context("invocation panicked")?;
                let name = function_of(&ev.work);
                match out? {
                    Ok(applied) => {
                        *tally.by_function.entry(name).or_default() += 1;
                        tally.applied_records += applied;
                    }
                    Err(why) => {
                        eprintln!("storm: retrying {name} event after a retryable failure: {why}");
                        *tally.retries.entry(name).or_default() += 1;
                        pending.push(ev);
                    }
                }
            }
        }
    }
    Ok(tally)
}

/// Uploads every planned backup (a `.tar.gz` with its manifest, and its cross-region
/// copy); a corrupt one gets a manifest written for other bytes.
async fn upload_backups(w: &ReplicationWorld, s: &Storm, rng: &mut Rng) -> Result<Vec<Uploaded>> {
    let mut out = Vec::new();
    for (i, (created, corrupt)) in s.backups_planned.iter().enumerate() {
        // Incompressible content of nearly equal size, so no backup looks shrunken.
        let data: Vec<u8> = (0..4096 + rng.below(256)).map(|_| rng.next() as u8).collect();
        let files: [(&str, &[u8]); 1] = [("data/segment.bin", &data)];
        let archive = tar_gz(&files)?;
        let key = format!("chromadb/storm/{i:04}.tar.gz");
        let manifest = if *corrupt {
            let mut other = data.clone();
            other[0] ^= 0xFF;
            let other_files: [(&str, &[u8]); 1] = [("data/segment.bin", &other)];
            manifest_for(&other_files, &tar_gz(&other_files)?, *created)
        } else {
            manifest_for(&files, &archive, *created)
        };
        w.emu.put_bytes(BACKUPS, &format!("{key}.manifest.json"), manifest.to_string().into_bytes()).await?;
        w.emu.put_bytes(REPLICA, &key, archive.clone()).await?;
        out.push(w.put(BACKUPS, &key, archive).await?);
    }
    Ok(out)
}

async fn drain_all(emu: &Emulator, tq: &TopicQueue, expected: usize) -> Result<Vec<kbha_test_harness::SnsEnvelope>> {
    // Ask for one more than expected: the wait for it is what proves "exactly".
    emu.drain_messages(tq, expected + 1, Duration::from_secs(3)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_mixed_events_end_exactly_where_the_model_says() -> Result<()> {
    let seed = std::env::var("KBHA_STORM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED);
    let total = std::env::var("KBHA_STORM_EVENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000usize);
    println!("storm: seed {seed} (replay with KBHA_STORM_SEED={seed}), {total} events");
    let storm = plan(seed, total);
    let events = storm.bursts.iter().map(Vec::len).sum::<usize>();
    let set_up = Instant::now();

    let (fo, rep, al) = tokio::try_join!(World::start(), ReplicationWorld::start(), RouterWorld::start())?;
    let changes = Arc::new(AtomicUsize::new(0));
    let dns = CountingDns { inner: Route53Dns::from_conf(&fo.emu.sdk_config().await), changes: Arc::clone(&changes) };
    // The primary alarm lives in CloudWatch, OK since long before the storm.
    fo.emu.put_alarm("us-east-1", PRIMARY_ALARM).await?;
    fo.emu.set_alarm_state_at("us-east-1", PRIMARY_ALARM, "OK", "storm", t0() - 86_400 * SEC).await?;
    let cooldown = (COOLDOWN / SEC).to_string();
    let hysteresis = (HYSTERESIS / SEC).to_string();
    let bake = (RETURN_BAKE / SEC).to_string();
    let steps = RETURN_STEPS.map(|p| p.to_string()).join(",");
    let failover = fo
        .function_with_dns(
            &[
                ("KBHA_COOLDOWN_SECONDS", cooldown.as_str()),
                ("KBHA_HYSTERESIS_SECONDS", hysteresis.as_str()),
                ("KBHA_RETURN_STEPS", steps.as_str()),
                ("KBHA_RETURN_BAKE_SECONDS", bake.as_str()),
            ],
            Policies::<Failover>::single(builtin::<Failover>()?),
            dns,
        )
        .await?;
    let mut rng = Rng(seed ^ 0xBAC0_0B5E);
    let backups = upload_backups(&rep, &storm, &mut rng).await?;
    let keys: Vec<String> = backups.iter().map(|b| b.key.clone()).collect();
    let fo = Arc::new(fo);
    let f = Arc::new(Functions {
        world: Arc::clone(&fo),
        failover,
        router: Arc::new(al.router().await?),
        verifier: Arc::new(rep.verifier(&[]).await?),
        backups: Arc::new(backups),
        storm: Arc::new(storm),
    });
    println!("storm: set-up {:.1}s", set_up.elapsed().as_secs_f64());

    let started = Instant::now();
    let tally = drive(Arc::clone(&f)).await?;
    let elapsed = started.elapsed();

    // Failover: final weights, changes, notices by type.
    let want = failover_model(&f.storm);
    let got_weights = fo.weights().await?;
    let want_weights = weights(want.primary, 100 - want.primary);
    let want_notices: usize = want.notices.values().sum();
    let notices = drain_all(&fo.emu, &fo.notices, want_notices).await?;
    let mut got_types: BTreeMap<String, usize> = BTreeMap::new();
    for n in &notices {
        let v: Value = serde_json::from_str(&n.message)?;
        *got_types.entry(v["type"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    let got_changes = changes.load(Ordering::SeqCst);

    // Router: every delivery, by topic, alarm and status.
    let want_deliveries = router_model(&f.storm);
    let mut got_deliveries = Vec::new();
    for (topic, tq) in &al.topics {
        let n = want_deliveries.iter().filter(|d| d.0 == *topic).count();
        for d in drain_all(&al.emu, tq, n).await? {
            let m: Value = serde_json::from_str(&d.message)?;
            got_deliveries.push((
                (*topic).to_owned(),
                m["name"].as_str().unwrap_or("?").to_owned(),
                m["status"].as_str().unwrap_or("?").to_owned(),
            ));
        }
    }
    got_deliveries.sort();

    // Verifier: records listed in S3 and their verdicts, notices by kind.
    let want_verdicts = verifier_model(&f.storm, &keys);
    let mut got_verdicts = BTreeMap::new();
    let s3 = rep.emu.s3().await;
    let mut token = None;
    loop {
        let page = s3.list_objects_v2().bucket(STATE).prefix("kbha/replication/records/").set_continuation_token(token).send().await?;
        for o in page.contents() {
            let key = o.key().unwrap_or_default();
            let body = s3.get_object().bucket(STATE).key(key).send().await?.body.collect().await?.into_bytes();
            let rec: Value = serde_json::from_slice(&body)?;
            got_verdicts.insert(rec["key"].as_str().unwrap_or("?").to_owned(), rec["verdict"].as_str().unwrap_or("?").to_owned());
        }
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    let want_notice_kinds: BTreeMap<String, usize> = want_verdicts.values().filter(|v| **v != "ok").fold(BTreeMap::new(), |mut m, v| {
        *m.entry((*v).to_owned()).or_default() += 1;
        m
    });
    let verifier_notices = drain_all(&rep.emu, &rep.notices, want_notice_kinds.values().sum()).await?;
    let mut got_notice_kinds: BTreeMap<String, usize> = BTreeMap::new();
    for n in &verifier_notices {
        *got_notice_kinds.entry(n.attributes.get("kind").cloned().unwrap_or_default()).or_default() += 1;
    }

    println!(
        "storm: {events} events in {:.1}s ({:.0}/s) at concurrency {CONCURRENCY}; by function {:?}; retried {:?}",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        tally.by_function,
        tally.retries
    );
    println!(
        "storm: failover: {} transitions, {} Route 53 changes (model {}), {} notices {:?} (model {:?}), final {:?}",
        f.storm.failover_transitions.len(),
        got_changes,
        want.changes,
        notices.len(),
        got_types,
        want.notices,
        got_weights
    );
    println!(
        "storm: alert router: {} transitions, {} deliveries (model {})",
        f.storm.router_transitions.len(),
        got_deliveries.len(),
        want_deliveries.len()
    );
    println!(
        "storm: verifier: {} backups, {} records (model {}), {} notices {:?} (model {:?})",
        f.backups.len(),
        got_verdicts.len(),
        want_verdicts.len(),
        verifier_notices.len(),
        got_notice_kinds,
        want_notice_kinds
    );

    ensure!(events >= total.min(1000), "the plan made only {events} events");
    let lost = f.storm.failover_transitions.len()
        - f.storm
            .bursts
            .iter()
            .flatten()
            .filter_map(|e| match e.work {
                Work::Failover { t, .. } => Some(t),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len();
    let flaps = f.storm.bursts.iter().flatten().filter(|e| matches!(e.work, Work::World { healthy: Some(false), .. })).count();
    println!(
        "storm: failover world: {lost} lost transitions, {flaps} health flaps; stepped returns: {} started, {} completed, {} rolled back",
        want.returns, want.completed, want.rolled_back
    );
    ensure!(
        want.changes >= 2 && lost > 0 && flaps > 0,
        "the storm must flap, lose transitions and flap health: {want:?}, {lost} lost, {flaps} flaps"
    );
    ensure!(want.completed > 0 && want.rolled_back > 0, "the storm must complete a stepped return and roll one back: {want:?}");
    assert_eq!(got_weights, want_weights, "final Route 53 weights");
    assert_eq!(got_changes, want.changes, "Route 53 change batches accepted");
    assert_eq!(tally.applied_records, want.changes, "decision records saying applied");
    assert_eq!(got_types, want.notices, "failover notices by type");
    assert_eq!(got_deliveries, want_deliveries, "router deliveries (topic, alarm, status)");
    let want_verdicts: BTreeMap<String, String> = want_verdicts.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
    assert_eq!(got_verdicts, want_verdicts, "verification records and their verdicts");
    assert_eq!(got_notice_kinds, want_notice_kinds, "verifier notices by kind");
    Ok(())
}
