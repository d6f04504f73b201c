//! The routing path, top to bottom: normalise the message -> gather the firing alerts
//! (state objects) -> policy -> claim the delivery in the alert's state object ->
//! publish to each destination -> confirm -> decision record. One function per step.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use kbha_aws::{AwsError, Notifier, ObjectStore, PutCondition};
use kbha_core::time::format_timestamp;
use kbha_core::{AlertDecision, AlertInput, AlertSource, AlertStatus, IncomingAlert, Severity, Suppression, TimestampMs};
use kbha_lambda::record::{Invocation, RecordHeader, RecordedInput, ms};
use kbha_policy_lifecycle::{Alerting, Decided, Policies};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::RouterConfig;
use crate::dedup::{self, AlertEntry, DeliveryKind, Plan, Skip, Timing};
use crate::normalise::{IncomingMessage, normalise_event};
use crate::subject::subject;

/// Attempts at writing a state object when other invocations write it meanwhile.
const STATE_WRITE_ATTEMPTS: u32 = 8;
/// Most of the raw message kept in a delivery; SNS messages are at most 256 KiB.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why an invocation failed. [`RouterError::retryable`] tells SNS/Lambda whether
/// delivering the same message again can succeed.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// An AWS call on the state objects failed after the SDK's retries.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// Publishing to a destination failed after the SDK's retries.
    #[error(
        "cannot deliver alert `{dedup_key}` to destination `{destination}` ({topic_arn}): {source}; \
         destinations already reached are remembered and the message will be retried"
    )]
    Delivery {
        /// The alert's dedup key.
        dedup_key: String,
        /// Logical destination.
        destination: String,
        /// Its topic.
        topic_arn: String,
        /// The publish error.
        source: AwsError,
    },
    /// Another invocation is delivering another transition of the same alert.
    #[error("alert `{dedup_key}` is being delivered by another invocation; the message will be retried")]
    Busy {
        /// The alert's dedup key.
        dedup_key: String,
    },
    /// The state object kept changing under us.
    #[error("state object s3://{bucket}/{key} changed between read and write {attempts} times in a row; the message will be retried")]
    ConflictExhausted {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
}

impl RouterError {
    /// Whether SNS (or Lambda's async retry) should deliver the message again.
    pub fn retryable(&self) -> bool {
        match self {
            RouterError::Aws(e) | RouterError::Delivery { source: e, .. } => e.retryable(),
            RouterError::Busy { .. } | RouterError::ConflictExhausted { .. } => true,
        }
    }
}

/// What became of one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// First notification of a firing alert sent.
    Delivered,
    /// Sent again after the repeat interval.
    Repeated,
    /// Its resolution sent; the dedup entry is closed.
    Resolved,
    /// Suppressed by the policy (window, silence, inhibition).
    Suppressed,
    /// Already delivered within the repeat interval, or already resolved.
    Duplicate,
    /// Another invocation is delivering it.
    InFlight,
    /// Resolved before anything was sent: closed silently.
    ResolvedUnsent,
    /// A resolution for an alert never seen firing.
    ResolvedUnknown,
}

impl From<Skip> for Outcome {
    fn from(s: Skip) -> Self {
        match s {
            Skip::Duplicate => Outcome::Duplicate,
            Skip::InFlight => Outcome::InFlight,
            Skip::Suppressed => Outcome::Suppressed,
            Skip::ResolvedUnsent => Outcome::ResolvedUnsent,
            Skip::ResolvedUnknown => Outcome::ResolvedUnknown,
        }
    }
}

impl From<DeliveryKind> for Outcome {
    fn from(k: DeliveryKind) -> Self {
        match k {
            DeliveryKind::Firing => Outcome::Delivered,
            DeliveryKind::Repeat => Outcome::Repeated,
            DeliveryKind::Resolved => Outcome::Resolved,
        }
    }
}

/// One SNS publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Logical destination.
    pub destination: String,
    /// Topic published to.
    pub topic_arn: String,
    /// SNS message id.
    pub message_id: String,
}

/// The incoming alert, as the decision record names it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRef {
    /// Origin.
    pub source: AlertSource,
    /// Name.
    pub name: String,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Region.
    pub region: Option<String>,
    /// Summary.
    pub summary: String,
}

pub use kbha_lambda::record::Durations;

/// One JSON line per alert in the log, and the invocation's response. Its first fields
/// are the ones every function's record has ([`kbha_lambda::record`]).
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    /// The fields every function's record starts with ([`RecordHeader`]): `event_id` is
    /// the SNS message id, `subject` the alert (`<source>:<name>`), `action` what became of
    /// it, `guardrail` always null (the router has no guardrails).
    #[serde(flatten)]
    pub header: RecordHeader<Decided<AlertDecision>, Outcome>,
    /// The alert.
    pub alert: AlertRef,
    /// Why it was not delivered, when suppressed.
    pub suppression: Option<Suppression>,
    /// Publishes made.
    pub deliveries: Vec<Delivery>,
    /// Destinations the policy named that `KBHA_DESTINATIONS` does not know (sent to
    /// the default destination instead).
    pub unknown_destinations: Vec<String>,
    /// The alert's state object.
    pub state_key: String,
    /// State write attempts.
    pub attempts: u32,
    /// Outcome of the policy-fault notice, when the policy faulted.
    pub fault_notice: Option<Outcome>,
}

kbha_lambda::record_header!(DecisionRecord, Decided<AlertDecision>, Outcome);

/// The alert router, generic over its AWS dependencies.
pub struct AlertRouter<S, N> {
    cfg: RouterConfig,
    store: S,
    notifier: N,
    policies: Policies<Alerting>,
    /// State objects by key, with their ETag: listing tells which changed, so a warm
    /// function reads only those.
    cache: Mutex<HashMap<String, (String, AlertEntry)>>,
}

/// What one alert delivery needs besides the alert.
struct Routed<'a> {
    event_id: &'a str,
    alert: &'a IncomingAlert,
    decision: &'a AlertDecision,
    topics: Vec<(String, String)>,
    group: Vec<Value>,
    decided_by: &'a str,
    policy_digest: &'a str,
}

/// What became of one delivery attempt.
struct Acted {
    outcome: Outcome,
    deliveries: Vec<Delivery>,
    attempts: u32,
}

impl<S: ObjectStore, N: Notifier> AlertRouter<S, N> {
    /// Wires configuration, AWS adapters and policies.
    pub fn new(cfg: RouterConfig, store: S, notifier: N, policies: Policies<Alerting>) -> Self {
        AlertRouter { cfg, store, notifier, policies, cache: Mutex::new(HashMap::new()) }
    }

    /// The configuration in use.
    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// Handles one invocation at time `inv.now_ms`: every alert in the event, in order; the
    /// records carry `inv.request_id`.
    pub async fn handle(&self, event: &Value, inv: Invocation) -> Result<Vec<DecisionRecord>, RouterError> {
        let mut records = Vec::new();
        for message in normalise_event(event, inv.now_ms) {
            records.push(self.route(message, &inv).await?);
        }
        Ok(records)
    }

    async fn route(&self, m: IncomingMessage, inv: &Invocation) -> Result<DecisionRecord, RouterError> {
        let now_ms = inv.now_ms;
        let t_gather = Instant::now();
        let firing = self.firing_entries().await?;
        let gather_ms = ms(t_gather);

        let t_decide = Instant::now();
        let input = AlertInput {
            now_ms,
            event_id: m.event_id.clone(),
            alert: m.alert.clone(),
            active: firing.iter().filter_map(AlertEntry::active).collect(),
            config: self.cfg.policy_config.clone(),
        };
        let recorded = RecordedInput::of(&input);
        let decided = self.policies.decide(&input);
        let decide_ms = ms(t_decide);

        let t_act = Instant::now();
        let decision = &decided.decision;
        let (topics, unknown) = self.topics(&decision.destinations);
        if !unknown.is_empty() {
            tracing::error!(unknown = ?unknown, "policy named destinations KBHA_DESTINATIONS does not know; sending to `{}`", self.cfg.default_destination);
        }
        let group = firing
            .iter()
            .filter(|e| e.group_key == decision.group_key && e.dedup_key != decision.dedup_key)
            .map(|e| json!({"name": e.name, "region": e.region, "severity": e.severity, "since": format_timestamp(e.since_ms)}))
            .collect();
        let acted = self
            .act(
                Routed {
                    event_id: &m.event_id,
                    alert: &m.alert,
                    decision,
                    topics,
                    group,
                    decided_by: &decided.decided_by,
                    policy_digest: &decided.digest,
                },
                now_ms,
            )
            .await?;
        let fault_notice = match &decided.fault_alert {
            Some(fault) => Some(self.announce_fault(&m.event_id, fault, &decided, now_ms).await?),
            None => None,
        };
        let subject = format!("{}:{}", m.alert.source.as_str(), m.alert.name);
        let mut header = RecordHeader::new("alert-router", &m.event_id, inv, subject, decided.clone(), acted.outcome);
        header.input = recorded;
        header.durations = Durations { gather_ms, decide_ms, act_ms: ms(t_act) };
        let rec = DecisionRecord {
            header,
            alert: AlertRef {
                source: m.alert.source,
                name: m.alert.name.clone(),
                status: m.alert.status,
                region: m.alert.region.clone(),
                summary: m.alert.summary.clone(),
            },
            suppression: if acted.outcome == Outcome::Suppressed { decision.suppress.clone() } else { None },
            state_key: self.entry_key(&decision.dedup_key),
            deliveries: acted.deliveries,
            unknown_destinations: unknown,
            attempts: acted.attempts,
            fault_notice,
        };
        log_record(&rec);
        Ok(rec)
    }

    /// Logical destinations -> topics; unknown names go to the default destination, and
    /// an alert with none goes there too (never dropped).
    fn topics(&self, destinations: &[String]) -> (Vec<(String, String)>, Vec<String>) {
        let mut topics: Vec<(String, String)> = Vec::new();
        let mut unknown = Vec::new();
        let add = |name: &str, topics: &mut Vec<(String, String)>| {
            if let Some(arn) = self.cfg.destinations.get(name)
                && !topics.iter().any(|(n, _)| n == name)
            {
                topics.push((name.to_owned(), arn.clone()));
            }
        };
        for d in destinations {
            if self.cfg.destinations.contains_key(d) {
                add(d, &mut topics);
            } else {
                unknown.push(d.clone());
            }
        }
        if topics.is_empty() {
            add(&self.cfg.default_destination, &mut topics);
        }
        (topics, unknown)
    }

    /// The policy faulted: a critical notice to the default destination, deduplicated
    /// per policy digest like any alert, so a broken policy pages once per repeat interval.
    async fn announce_fault(
        &self,
        event_id: &str,
        fault: &kbha_core::Alert,
        decided: &Decided<AlertDecision>,
        now_ms: TimestampMs,
    ) -> Result<Outcome, RouterError> {
        let alert = IncomingAlert {
            source: AlertSource::Kbha,
            name: "kbha.alert-router.policy-fault".into(),
            status: AlertStatus::Firing,
            region: None,
            severity_hint: Some(Severity::Critical),
            summary: fault.summary.clone(),
            body: fault.detail.clone(),
            labels: BTreeMap::from([("policy_digest".to_owned(), decided.policy_digest.clone())]),
            at_ms: now_ms,
        };
        let decision = AlertDecision {
            severity: Severity::Critical,
            destinations: vec![self.cfg.default_destination.clone()],
            dedup_key: format!("kbha/alert-router/policy-fault/{}", decided.policy_digest),
            group_key: "policy".into(),
            suppress: None,
            reason: "the alert policy faulted".into(),
        };
        let (topics, _) = self.topics(&decision.destinations);
        let routed = Routed {
            event_id,
            alert: &alert,
            decision: &decision,
            topics,
            group: vec![],
            decided_by: "alert-router",
            policy_digest: &decided.policy_digest,
        };
        Ok(self.act(routed, now_ms).await?.outcome)
    }

    /// Plans against the alert's state object, claims the delivery with a conditional
    /// write, publishes, confirms. A lost write race re-reads and plans again.
    async fn act(&self, r: Routed<'_>, now_ms: TimestampMs) -> Result<Acted, RouterError> {
        let key = self.entry_key(&r.decision.dedup_key);
        let timing = Timing {
            now_ms,
            repeat_ms: (self.cfg.repeat_interval_s as i64).saturating_mul(1000),
            lease_ms: (self.cfg.claim_lease_s as i64).saturating_mul(1000),
        };
        // The claim's token must tell this invocation from any other, even one handling
        // the same message at the same decision time (a redelivery racing the first
        // delivery): with `event_id@now` alone, the loser of the claim write found the
        // winner's token equal to its own, took the claim for its own and published too.
        let me = format!("{}~{}", r.event_id, kbha_lambda::claim::token());
        for attempt in 1..=STATE_WRITE_ATTEMPTS {
            let (prev, etag) = self.load_entry(&key).await?;
            match dedup::plan(prev.as_ref(), r.alert, r.decision, &me, timing) {
                Plan::Busy => {
                    return Err(RouterError::Busy { dedup_key: r.decision.dedup_key.clone() });
                }
                Plan::Skip { why, entry } => {
                    if let Some(e) = entry {
                        match self.put_entry(&key, &e, etag).await {
                            Ok(_) => {}
                            Err(e) if e.is_conflict() => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    if why == Skip::Suppressed {
                        tracing::info!(dedup_key = %r.decision.dedup_key, suppression = ?r.decision.suppress, "suppressed: {}", r.decision.reason);
                    }
                    return Ok(Acted { outcome: why.into(), deliveries: vec![], attempts: attempt });
                }
                Plan::Deliver { kind, entry } => {
                    let claim_etag = match self.put_entry(&key, &entry, etag).await {
                        Ok(t) => t,
                        Err(e) if e.is_conflict() => match self.own_claim(&key, &entry).await? {
                            // Our claim landed and its answer was lost (the SDK's retry
                            // of the same write then conflicts): it is still ours.
                            Some(t) => t,
                            None => continue,
                        },
                        Err(e) => return Err(e.into()),
                    };
                    let (token, mut reached) = entry.claim.as_ref().map(|c| (c.token.clone(), c.delivered_to.clone())).unwrap_or_default();
                    let mut deliveries = Vec::new();
                    for (destination, topic_arn) in &r.topics {
                        if reached.contains(destination) {
                            continue;
                        }
                        match self.publish(&r, kind, &entry, topic_arn).await {
                            Ok(message_id) => {
                                reached.push(destination.clone());
                                deliveries.push(Delivery { destination: destination.clone(), topic_arn: topic_arn.clone(), message_id });
                            }
                            Err(source) => {
                                self.settle(&key, Some(claim_etag), |e| dedup::release(e, &token, &reached)).await;
                                return Err(RouterError::Delivery {
                                    dedup_key: r.decision.dedup_key.clone(),
                                    destination: destination.clone(),
                                    topic_arn: topic_arn.clone(),
                                    source,
                                });
                            }
                        }
                    }
                    self.settle(&key, Some(claim_etag), |e| dedup::confirm(e, &token, now_ms)).await;
                    return Ok(Acted { outcome: kind.into(), deliveries, attempts: attempt });
                }
            }
        }
        Err(RouterError::ConflictExhausted { bucket: self.cfg.state_bucket.clone(), key, attempts: STATE_WRITE_ATTEMPTS })
    }

    /// The ETag of the state object if it holds exactly `entry` (the claim this
    /// invocation wrote; its token names this event and time), else `None`.
    async fn own_claim(&self, key: &str, entry: &AlertEntry) -> Result<Option<String>, RouterError> {
        Ok(match self.load_entry(key).await? {
            (Some(current), Some(etag)) if current == *entry => Some(etag),
            _ => None,
        })
    }

    /// Writes `change(entry)` after a publish (confirm or release), re-reading on a lost
    /// race. Best effort: the publish already happened (or failed); if this write never
    /// lands, the claim expires after its lease and the next copy finishes the job.
    async fn settle(&self, key: &str, mut etag: Option<String>, change: impl Fn(&AlertEntry) -> Option<AlertEntry>) {
        for _ in 0..STATE_WRITE_ATTEMPTS {
            let current = match etag.take() {
                Some(t) => self.cache_get(key).filter(|(et, _)| *et == t),
                None => None,
            };
            let (entry, tag) = match current {
                Some((t, e)) => (e, Some(t)),
                None => match self.load_entry(key).await {
                    Ok((Some(e), t)) => (e, t),
                    Ok((None, _)) => return,
                    Err(e) => {
                        tracing::error!(key, "cannot read the state object to settle a delivery: {e}");
                        return;
                    }
                },
            };
            let Some(next) = change(&entry) else {
                tracing::warn!(key, "another invocation took over this delivery after the claim's lease ran out");
                return;
            };
            match self.put_entry(key, &next, tag).await {
                Ok(_) => return,
                Err(e) if e.is_conflict() => continue,
                Err(e) => {
                    tracing::error!(key, "cannot settle the delivery in the state object: {e}");
                    return;
                }
            }
        }
        tracing::error!(key, "state object kept changing; the delivery claim stays until its lease runs out");
    }

    async fn publish(&self, r: &Routed<'_>, kind: DeliveryKind, entry: &AlertEntry, topic_arn: &str) -> Result<String, AwsError> {
        let a = r.alert;
        let d = r.decision;
        let mut body = a.body.clone();
        if body.len() > MAX_BODY_BYTES {
            let mut cut = MAX_BODY_BYTES;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push_str("\n[kbha: message cut at 64 KiB]");
        }
        let status = match a.status {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        };
        let message = json!({
            "kind": "kbha.alert",
            "delivery": kind,
            "status": status,
            "severity": d.severity,
            "name": a.name,
            "source": a.source,
            "region": a.region,
            "summary": a.summary,
            "dedup_key": d.dedup_key,
            "group_key": d.group_key,
            "group": r.group,
            "labels": a.labels,
            "at": format_timestamp(a.at_ms),
            "since": format_timestamp(entry.since_ms),
            "notification": entry.sent_count + 1,
            "event_id": r.event_id,
            "reason": d.reason,
            "decided_by": r.decided_by,
            "policy_digest": r.policy_digest,
            "body": body,
        });
        let source = serde_json::to_value(a.source).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let attributes = BTreeMap::from([
            ("severity".to_owned(), d.severity.as_str().to_owned()),
            ("source".to_owned(), source),
            ("region".to_owned(), a.region.clone().unwrap_or_default()),
            ("dedup_key".to_owned(), d.dedup_key.clone()),
            ("status".to_owned(), status.to_owned()),
        ]);
        self.notifier.publish(topic_arn, &subject(kind, d.severity, &a.summary), &message.to_string(), &attributes).await
    }

    /// `<prefix>entries/<sha256 of the dedup key>.json`: any dedup key makes a valid key.
    fn entry_key(&self, dedup_key: &str) -> String {
        format!("{}entries/{}.json", self.cfg.state_prefix, hex::encode(Sha256::digest(dedup_key.as_bytes())))
    }

    fn cache_get(&self, key: &str) -> Option<(String, AlertEntry)> {
        self.cache.lock().ok().and_then(|c| c.get(key).cloned())
    }

    fn cache_put(&self, key: &str, etag: String, entry: AlertEntry) {
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key.to_owned(), (etag, entry));
        }
    }

    /// The state object; a missing one is `None`. An unreadable one is logged and
    /// treated as absent, keeping its ETag so the next write replaces it: a broken
    /// object must not stop alerts.
    async fn load_entry(&self, key: &str) -> Result<(Option<AlertEntry>, Option<String>), RouterError> {
        let Some(obj) = self.store.get(&self.cfg.state_bucket, key).await? else {
            return Ok((None, None));
        };
        match serde_json::from_slice::<AlertEntry>(&obj.bytes) {
            Ok(e) => {
                self.cache_put(key, obj.etag.clone(), e.clone());
                Ok((Some(e), Some(obj.etag)))
            }
            Err(err) => {
                tracing::error!(bucket = %self.cfg.state_bucket, key, "state object unreadable, starting it afresh: {err}");
                Ok((None, Some(obj.etag)))
            }
        }
    }

    /// Writes with If-Match on `etag`, or If-None-Match when there was no object.
    async fn put_entry(&self, key: &str, entry: &AlertEntry, etag: Option<String>) -> Result<String, AwsError> {
        let body = serde_json::to_vec_pretty(entry)
            .map_err(|e| AwsError::Invalid { operation: "PutObject", message: format!("cannot serialise state: {e}") })?;
        let cond = etag.map_or(PutCondition::IfNoneMatch, PutCondition::IfMatch);
        let new_etag = self.store.put(&self.cfg.state_bucket, key, body, cond).await?;
        self.cache_put(key, new_etag.clone(), entry.clone());
        Ok(new_etag)
    }

    /// Every firing alert, sorted by dedup key: the listing says which objects changed
    /// since this warm function last read them; only those are read again.
    async fn firing_entries(&self) -> Result<Vec<AlertEntry>, RouterError> {
        let prefix = format!("{}entries/", self.cfg.state_prefix);
        let listing = self.store.list(&self.cfg.state_bucket, &prefix).await?;
        let changed: Vec<_> = {
            let cache = self.cache.lock().map_err(|_| AwsError::Invalid { operation: "cache", message: "poisoned".into() })?;
            listing.iter().filter(|o| cache.get(&o.key).is_none_or(|(etag, _)| *etag != o.etag)).map(|o| o.key.clone()).collect()
        };
        for key in changed {
            self.load_entry(&key).await?;
        }
        let mut cache = self.cache.lock().map_err(|_| AwsError::Invalid { operation: "cache", message: "poisoned".into() })?;
        cache.retain(|k, _| listing.iter().any(|o| &o.key == k));
        let mut firing: Vec<AlertEntry> = cache.values().map(|(_, e)| e).filter(|e| e.status == AlertStatus::Firing).cloned().collect();
        firing.sort_by(|a, b| a.dedup_key.cmp(&b.dedup_key));
        Ok(firing)
    }
}

fn log_record(rec: &DecisionRecord) {
    match serde_json::to_string(rec) {
        // One bare JSON line on stdout: CloudWatch Logs keeps it as is, so Logs Insights
        // can query `outcome`, `policy.decision.dedup_key`, `suppression`.
        Ok(line) => println!("{line}"),
        Err(e) => tracing::error!("cannot serialise decision record: {e}"),
    }
}
