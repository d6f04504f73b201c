//! Pager storm (issue 17): a condition that persists pages once, then repeats per the
//! alert router's repeat interval, through the failover function and the alert router
//! together. Every notice the failover function publishes is read back from its notice
//! topic's queue and fed, in time order, into an alert router with the default alert
//! policy (the router's now is the notice's time); pages are read back from the queue
//! subscribed to the critical destination topic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use kbha_alert_router::{AlertRouter, Outcome, RouterConfig};
use kbha_aws::{S3Store, SnsNotifier};
use kbha_core::time::parse_timestamp;
use kbha_core::{FailoverDecision, FailoverInput};
use kbha_failover::{ActionTaken, Policies};
use kbha_integration::*;
use kbha_lambda::record::Invocation;
use kbha_policy_lifecycle::{Alerting, Decider, Failover, PolicyFault, builtin as builtin_policy, load_artifact};
use kbha_test_harness::{SnsEnvelope, TopicQueue};
use serde_json::{Value, json};

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const ROUTER_BUCKET: &str = "kbha-alert-state";

type Router = AlertRouter<S3Store, SnsNotifier>;

/// The failover world plus the router's destination topics (each with a queue) and bucket.
struct Pager {
    w: World,
    topics: BTreeMap<&'static str, TopicQueue>,
}

impl Pager {
    async fn start() -> Result<Pager> {
        let w = world_with_alarms().await?;
        w.emu.create_bucket(ROUTER_BUCKET).await?;
        let mut topics = BTreeMap::new();
        for name in ["critical", "warning", "info"] {
            topics.insert(name, w.emu.create_topic_with_queue(&format!("kbha-alerts-{name}")).await?);
        }
        Ok(Pager { w, topics })
    }

    /// A router with the default alert policy and its default configuration, plus `extra`.
    async fn router(&self, extra: &[(&str, &str)]) -> Result<Router> {
        let destinations: BTreeMap<&str, &str> = self.topics.iter().map(|(k, t)| (*k, t.topic_arn.as_str())).collect();
        let mut env = BTreeMap::from([
            ("KBHA_DESTINATIONS".to_owned(), serde_json::to_string(&destinations)?),
            ("KBHA_STATE_BUCKET".to_owned(), ROUTER_BUCKET.to_owned()),
        ]);
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let cfg = RouterConfig::from_lookup(|k| env.get(k).cloned())?;
        let conf = self.w.emu.sdk_config().await;
        let policies = kbha_policy_lifecycle::Policies::<Alerting>::new(builtin_policy::<Alerting>()?, None);
        Ok(AlertRouter::new(cfg, S3Store::from_conf(&conf), SnsNotifier::from_conf(&conf), policies))
    }

    /// Every notice the failover function published since the last call, oldest first.
    async fn notices(&self) -> Result<Vec<SnsEnvelope>> {
        let mut got = self.w.emu.drain_messages(&self.w.notices, 10_000, Duration::from_secs(3)).await?;
        got.sort_by_key(notice_at);
        Ok(got)
    }

    /// The failover's notices since the last call, routed through `r` each at its own time,
    /// and the pages that made on the critical topic; prints the first notices under `label`.
    async fn route_and_page(&self, r: &Router, label: &str) -> Result<(Vec<SnsEnvelope>, Vec<Outcome>, Vec<SnsEnvelope>)> {
        let notices = self.notices().await?;
        println!("{label}: {} notices from the failover function", notices.len());
        for n in notices.iter().take(3) {
            println!("  {}", summary(n));
        }
        let outcomes = route(r, &notices, &self.w.notices.topic_arn).await?;
        let pages = self.deliveries("critical").await?;
        println!("{label}: {} pages on the critical topic", pages.len());
        Ok((notices, outcomes, pages))
    }

    /// Deliveries on a destination topic since the last call.
    async fn deliveries(&self, topic: &str) -> Result<Vec<SnsEnvelope>> {
        let tq = self.topics.get(topic).context("no such topic")?;
        self.w.emu.drain_messages(tq, 10_000, Duration::from_secs(3)).await
    }
}

/// The notice's own time (`at`), which is when the failover function decided.
fn notice_at(n: &SnsEnvelope) -> i64 {
    serde_json::from_str::<Value>(&n.message).ok().and_then(|m| m["at"].as_str().and_then(|t| parse_timestamp(t).ok())).unwrap_or_default()
}

fn summary(n: &SnsEnvelope) -> String {
    let m: Value = serde_json::from_str(&n.message).unwrap_or_default();
    format!(
        "{} {} | {} | {}",
        m["at"].as_str().unwrap_or(""),
        m["severity"].as_str().unwrap_or(""),
        m["type"].as_str().unwrap_or(""),
        m["summary"].as_str().unwrap_or("")
    )
}

/// Feeds the notices into the router as SNS delivers them to its Lambda, each at its
/// own time; returns the router's outcomes.
async fn route(r: &Router, notices: &[SnsEnvelope], topic_arn: &str) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for n in notices {
        let ev = json!({"Records": [{
            "EventSource": "aws:sns", "EventVersion": "1.0",
            "EventSubscriptionArn": format!("{topic_arn}:router"),
            "Sns": n.raw,
        }]});
        out.extend(r.handle(&ev, Invocation::at(notice_at(n))).await?.into_iter().map(|d| d.action));
    }
    Ok(out)
}

/// The pages the router's rule gives for a condition announced at the notices' times:
/// the first, then one each time a notice comes `repeat_ms` or more after the last page.
fn pages_by_the_rule(notices: &[SnsEnvelope], repeat_ms: i64) -> usize {
    let mut last: Option<i64> = None;
    let mut pages = 0;
    for at in notices.iter().map(notice_at) {
        if last.is_none_or(|l| at - l >= repeat_ms) {
            pages += 1;
            last = Some(at);
        }
    }
    pages
}

/// The pages a condition announced at `start` and standing over one-minute ticks until
/// `start + span_ms` gives, restated from the rules: the failover function announces it
/// once, then reminds at the first tick `remind_ms` or more after it last said it (never
/// when 0); the router pages at the first notice and repeats at the first notice
/// `repeat_ms` or more after its last page.
fn pages_for(start: i64, span_ms: i64, remind_ms: i64, repeat_ms: i64) -> usize {
    let (mut said, mut paged, mut pages) = (start, start, 1);
    let first_tick = (start / MIN + 1) * MIN;
    for tick in (first_tick..=start + span_ms).step_by(MIN as usize) {
        if remind_ms > 0 && tick - said >= remind_ms {
            said = tick;
            if tick - paged >= repeat_ms {
                paged = tick;
                pages += 1;
            }
        }
    }
    pages
}

fn status(d: &SnsEnvelope) -> String {
    d.attributes.get("status").cloned().unwrap_or_default()
}

/// The RPO gate holds a failover for an hour of one-minute ticks: one page (plus one repeat
/// per repeat interval the hour spans, none with the default four hours). Then the rest of
/// the rule: a fresh backup arrives and the failover happens (announced, and the page
/// resolves), the primary recovers and traffic returns, and a second failure held by the
/// gate pages again.
#[tokio::test]
async fn an_hour_of_the_rpo_gate_holding_pages_once() -> Result<()> {
    let p = Pager::start().await?;
    let f = p.w.function(&[("KBHA_RETURN_STEPS", "100")], builtin()).await?;
    let r = p.router(&[]).await?;
    let repeat_ms = r.config().repeat_interval_s as i64 * SEC;
    let rpo_ms = f.config().rpo_s as i64 * SEC;
    p.w.set_replication("us-east-1", t0()).await?;
    p.w.set_replication("us-west-2", t0() - rpo_ms - 10 * MIN).await?;

    let held = fail(&p.w, &f, "primary", t0()).await?;
    assert_eq!(held.action, ActionTaken::NoChange, "the RPO gate holds: {:?}", held.policy);
    for m in 1..=60 {
        let rec = tick_at(&f, t0() + m * MIN).await?;
        assert_eq!(rec.action, ActionTaken::NoChange, "minute {m}");
    }
    assert_eq!(p.w.weights().await?, weights(100, 0), "traffic stays: the gate holds");
    let notices = p.notices().await?;
    println!("rpo gate, an hour: {} notices from the failover function", notices.len());
    for n in &notices {
        println!("  {}", summary(n));
    }
    let outcomes = route(&r, &notices, &p.w.notices.topic_arn).await?;
    let pages = p.deliveries("critical").await?;
    println!("rpo gate, an hour: {} pages on the critical topic; router outcomes {outcomes:?}", pages.len());
    let remind_ms = f.config().remind_s as i64 * SEC;
    let want = pages_for(t0() + 5 * SEC, HOUR - 5 * SEC, remind_ms, repeat_ms);
    println!("  (the rules: {want} page(s) with a repeat interval of {} s and reminders every {} s)", repeat_ms / SEC, remind_ms / SEC);
    assert_eq!(
        pages.len(),
        want,
        "one page, then one per repeat interval: {:?}",
        pages.iter().map(|d| d.subject.clone()).collect::<Vec<_>>()
    );
    assert_eq!(pages.len(), pages_by_the_rule(&notices, repeat_ms));
    assert!(notices.len() <= 2, "an unchanged hold is not re-announced every tick: {} notices", notices.len());
    let record = p.w.fx.record_name.trim_end_matches('.');
    let key = format!("kbha/failover/{record}/kbha: failover to `secondary` blocked by RPO");
    assert_eq!(pages[0].attributes.get("dedup_key"), Some(&key), "what the condition is, no ages");

    // A fresh backup arrives: the failover happens, is announced, and the page resolves.
    p.w.set_replication("us-west-2", t0() + 61 * MIN).await?;
    let moved = tick_at(&f, t0() + 62 * MIN).await?;
    assert_eq!(moved.action, ActionTaken::Applied, "{:?}", moved.guardrail);
    assert_eq!(p.w.weights().await?, weights(0, 100));
    let notices = p.notices().await?;
    for n in &notices {
        println!("  {}", summary(n));
    }
    assert!(notices.iter().any(|n| n.message.contains("\"applied\"")), "the failover is announced");
    route(&r, &notices, &p.w.notices.topic_arn).await?;
    let critical = p.deliveries("critical").await?;
    assert_eq!(critical.iter().map(status).collect::<Vec<_>>(), ["resolved"], "the RPO page resolves");
    let warning = p.deliveries("warning").await?;
    assert_eq!(warning.len(), 1, "the shift itself: {:?}", warning.iter().map(|d| d.subject.clone()).collect::<Vec<_>>());

    // The primary recovers; traffic returns after the hysteresis.
    recover(&p.w, &f, "primary", t0() + 70 * MIN).await?;
    let back = tick_at(&f, t0() + 90 * MIN).await?;
    assert_eq!(back.action, ActionTaken::Applied, "{:?}", back.guardrail);
    assert_eq!(p.w.weights().await?, weights(100, 0));
    route(&r, &p.notices().await?, &p.w.notices.topic_arn).await?;
    assert!(p.deliveries("critical").await?.is_empty(), "nothing critical about a recovery");

    // Two hours later the secondary's last backup is past the RPO again, and the primary
    // fails again: the gate holds, and that pages again.
    let again = t0() + 4 * HOUR;
    let held = fail(&p.w, &f, "primary", again).await?;
    assert_eq!(held.action, ActionTaken::NoChange, "{:?}", held.policy);
    for m in 1..=10 {
        tick_at(&f, again + m * MIN).await?;
    }
    route(&r, &p.notices().await?, &p.w.notices.topic_arn).await?;
    let pages = p.deliveries("critical").await?;
    assert_eq!(pages.iter().map(status).collect::<Vec<_>>(), ["firing"], "a new incident pages again");
    Ok(())
}

/// The same with a repeat interval shorter than the hour: one page, then one repeat per
/// interval (the failover function's reminders of a standing condition come often enough).
#[tokio::test]
async fn a_hold_longer_than_the_repeat_interval_repeats_once_per_interval() -> Result<()> {
    let p = Pager::start().await?;
    let f = p.w.function(&[("KBHA_REMIND_SECONDS", "600")], builtin()).await?;
    let r = p.router(&[("KBHA_REPEAT_INTERVAL_SECONDS", "1200")]).await?;
    let repeat_ms = r.config().repeat_interval_s as i64 * SEC;
    let rpo_ms = f.config().rpo_s as i64 * SEC;
    p.w.set_replication("us-west-2", t0() - rpo_ms - 10 * MIN).await?;
    fail(&p.w, &f, "primary", t0()).await?;
    for m in 1..=60 {
        tick_at(&f, t0() + m * MIN).await?;
    }
    let notices = p.notices().await?;
    for n in &notices {
        println!("  {}", summary(n));
    }
    route(&r, &notices, &p.w.notices.topic_arn).await?;
    let pages = p.deliveries("critical").await?;
    println!("rpo gate, an hour, repeat every {} s: {} notices, {} pages", repeat_ms / SEC, notices.len(), pages.len());
    let remind_ms = f.config().remind_s as i64 * SEC;
    let want = pages_for(t0() + 5 * SEC, HOUR - 5 * SEC, remind_ms, repeat_ms);
    assert!(want > 1, "the hour spans repeat intervals: {want}");
    assert_eq!(pages.len(), want, "{:?}", pages.iter().map(|d| d.subject.clone()).collect::<Vec<_>>());
    assert_eq!(pages.len(), pages_by_the_rule(&notices, repeat_ms));
    let repeats: Vec<_> = pages.iter().skip(1).map(|d| d.subject.clone().unwrap_or_default()).collect();
    assert!(repeats.iter().all(|s| s.starts_with("[kbha critical, repeat]")), "{repeats:?}");
    assert!(notices.len() as i64 <= 1 + HOUR / remind_ms, "reminders, not one notice per tick: {}", notices.len());
    Ok(())
}

/// A policy that faults on every decision (the fallback decides) for an hour of ticks:
/// one page.
#[tokio::test]
async fn an_hour_of_a_policy_faulting_on_every_decision_pages_once() -> Result<()> {
    let p = Pager::start().await?;
    let trap = load_artifact::<Failover>("hostile", "s3://policies/trap.wasm")?;
    let policies = Policies::new(trap, Some(builtin_policy::<Failover>()?));
    let f = p.w.function(&[("KBHA_POLICY_CONFIG", r#"{"mode":"unreachable"}"#)], policies).await?;
    let r = p.router(&[]).await?;
    let repeat_ms = r.config().repeat_interval_s as i64 * SEC;
    for m in 0..=60 {
        let rec = tick_at(&f, t0() + m * MIN).await?;
        assert_eq!(rec.policy.as_ref().map(|d| d.decided_by.as_str()), Some("builtin"), "minute {m}");
    }
    let (notices, outcomes, pages) = p.route_and_page(&r, "policy fault, an hour").await?;
    println!("router outcomes {outcomes:?}");
    let want = pages_for(t0(), HOUR, f.config().remind_s as i64 * SEC, repeat_ms);
    assert_eq!(pages.len(), want, "{:?}", pages.iter().map(|d| d.subject.clone()).collect::<Vec<_>>());
    assert!(notices.len() <= 2, "a fault on every decision is announced once: {} notices", notices.len());
    Ok(())
}

/// The same with the `hold` fallback (`KBHA_POLICY_FALLBACK=hold`: nothing decides).
#[tokio::test]
async fn an_hour_of_a_policy_faulting_with_the_hold_fallback_pages_once() -> Result<()> {
    let p = Pager::start().await?;
    let trap = load_artifact::<Failover>("hostile", "s3://policies/trap.wasm")?;
    let f = p.w.function(&[("KBHA_POLICY_CONFIG", r#"{"mode":"unreachable"}"#)], Policies::new(trap, None)).await?;
    let r = p.router(&[]).await?;
    let repeat_ms = r.config().repeat_interval_s as i64 * SEC;
    for m in 0..=60 {
        tick_at(&f, t0() + m * MIN).await?;
    }
    let (notices, _, pages) = p.route_and_page(&r, "policy fault (hold), an hour").await?;
    assert_eq!(pages.len(), pages_for(t0(), HOUR, f.config().remind_s as i64 * SEC, repeat_ms));
    assert!(notices.len() <= 2, "{} notices", notices.len());
    Ok(())
}

/// A policy as a third party might write it: the built-in's decisions, with the data's age
/// in the "blocked by RPO" alert's summary (`... blocked by RPO: data 1h 10m old`).
struct AgeInSummary(Arc<dyn Decider<Failover>>);

impl Decider<Failover> for AgeInSummary {
    fn source(&self) -> &str {
        "s3://policies/age-in-summary.wasm"
    }
    fn digest(&self) -> &str {
        "sha256:age-in-summary"
    }
    fn decide(&self, input: &FailoverInput) -> Result<FailoverDecision, PolicyFault> {
        let mut d = self.0.decide(input)?;
        let age = input.targets.iter().filter_map(|t| t.replication_age_ms).max().unwrap_or_default() / 1000;
        for a in &mut d.alerts {
            if a.summary.contains("blocked by RPO") {
                a.summary = format!("{}: data {}h {}m old", a.summary, age / 3600, age % 3600 / 60);
            }
        }
        Ok(d)
    }
}

/// The same hour with a policy whose alert summary carries the data's age: still one page
/// (the failover function does not take a new age for a new condition).
#[tokio::test]
async fn an_hour_of_the_rpo_gate_holding_pages_once_whatever_numbers_the_policy_puts_in_its_summary() -> Result<()> {
    let p = Pager::start().await?;
    let policies = Policies::single(Arc::new(AgeInSummary(builtin_policy::<Failover>()?)));
    let f = p.w.function(&[], policies).await?;
    let r = p.router(&[]).await?;
    let repeat_ms = r.config().repeat_interval_s as i64 * SEC;
    let rpo_ms = f.config().rpo_s as i64 * SEC;
    p.w.set_replication("us-west-2", t0() - rpo_ms - 10 * MIN).await?;
    fail(&p.w, &f, "primary", t0()).await?;
    for m in 1..=60 {
        tick_at(&f, t0() + m * MIN).await?;
    }
    let (notices, _, pages) = p.route_and_page(&r, "rpo gate, numbers in the policy's summary, an hour").await?;
    for d in pages.iter().take(3) {
        println!("  page: {:?} dedup_key {:?}", d.subject, d.attributes.get("dedup_key"));
    }
    assert_eq!(pages.len(), pages_for(t0() + 5 * SEC, HOUR - 5 * SEC, f.config().remind_s as i64 * SEC, repeat_ms));
    assert!(notices.len() <= 2, "{} notices", notices.len());
    Ok(())
}
