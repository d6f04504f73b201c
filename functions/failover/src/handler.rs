//! The decision path, top to bottom: normalise event -> gather facts -> policy ->
//! guardrails -> act -> record. One function per step.

use std::collections::BTreeMap;
use std::time::Instant;

use kbha_hosting::claim::{self, Claim, Holder};
use kbha_hosting::record::ms;

use kbha_aws::{AwsError, Dns, Notifier, ObjectStore, PutCondition, WeightedRecord};
use kbha_core::events::{AlarmEvent, EventError, FailoverEvent, normalise_failover_event};
use kbha_core::guardrails::{GuardrailSettings, GuardrailVerdict, check_failover};
use kbha_core::state::{FailoverState, Freshness};
use kbha_core::time::format_timestamp;
use kbha_core::{
    Alarm, FailoverDecision, FailoverInput, FailoverTrigger, Health, LastChange, Severity, Target, TimestampMs, Weight,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::FailoverConfig;
use crate::{Decided, Policies};

/// Attempts at writing the state object when another invocation wrote it meanwhile
/// (a change takes three writes: intent, applied, done; 8 concurrent copies contend).
const STATE_WRITE_ATTEMPTS: u32 = 16;
/// Unfinished changes kept in the state object (oldest dropped first).
const MAX_PENDING: usize = 32;
/// Unsent notices kept in the state object (oldest dropped first).
const MAX_OUTBOX: usize = 32;
/// Another invocation's unfinished change this much older than ours is left over from
/// a run that was never retried, not a rival for the same transition.
const RIVAL_WINDOW_MS: TimestampMs = 5 * 60 * 1000;

/// Why an invocation failed. [`FailoverError::retryable`] tells Lambda's caller
/// whether the same event can succeed later.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// The event is not one the function understands.
    #[error(transparent)]
    Event(#[from] EventError),
    /// An AWS call failed after the SDK's retries.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The record set in Route 53 does not match the configuration.
    #[error("record set `{name}` {problem}; check KBHA_RECORD_NAME, KBHA_RECORD_TYPE and KBHA_TARGETS")]
    RecordSet {
        /// Record name.
        name: String,
        /// What does not match.
        problem: String,
    },
    /// Another copy of this event holds the notice and has not finished sending it.
    #[error("another invocation is sending the notice for event `{event_id}` and has not finished; the event will be retried")]
    NoticeInProgress {
        /// Event id.
        event_id: String,
    },
    /// Route 53 kept changing between read and write.
    #[error("the record set changed between read and write {attempts} times in a row; the event will be retried")]
    ConflictExhausted {
        /// Attempts made.
        attempts: u32,
    },
    /// The state object cannot be parsed.
    #[error("state object s3://{bucket}/{key} is not valid: {message}; fix or delete it (it is rebuilt from the next events)")]
    CorruptState {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Parse error.
        message: String,
    },
}

impl FailoverError {
    /// Whether Lambda (or SNS) should deliver the event again.
    pub fn retryable(&self) -> bool {
        match self {
            FailoverError::Event(_) | FailoverError::RecordSet { .. } | FailoverError::CorruptState { .. } => false,
            FailoverError::Aws(e) => e.retryable(),
            FailoverError::ConflictExhausted { .. } | FailoverError::NoticeInProgress { .. } => true,
        }
    }
}

/// What was done about one alarm transition or tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionTaken {
    /// Route 53 changed.
    Applied,
    /// Would have changed; dry-run.
    DryRun,
    /// The policy held or asked for the current weights.
    NoChange,
    /// The guardrails refused the decision.
    Refused,
    /// Already handled.
    SkippedDuplicate,
    /// Older than what is recorded.
    SkippedStale,
    /// The alarm is not mapped to any target.
    SkippedUnmapped,
}

pub use kbha_hosting::record::Durations;

/// One JSON line per decision in the log, and the invocation's response. Its first
/// fields are the ones every function's record has ([`kbha_hosting::record`]).
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    /// Always `kbha.decision`.
    pub record: &'static str,
    /// Always `failover`.
    pub function: &'static str,
    /// Event id.
    pub event_id: String,
    /// Decision time.
    pub now: String,
    /// The record set decided about: `<name> <type>`.
    pub subject: String,
    /// Alarm name, for alarm triggers.
    pub alarm: Option<String>,
    /// `sha256:<hex>` of the policy input JSON, so a decision can be replayed.
    pub input_digest: Option<String>,
    /// The policy's answer and who gave it.
    pub policy: Option<Decided>,
    /// The guardrails' verdict.
    pub guardrail: Option<GuardrailVerdict>,
    /// What was done.
    pub action: ActionTaken,
    /// Weights before.
    pub old_weights: Vec<Weight>,
    /// Weights after (equal to before unless applied).
    pub new_weights: Vec<Weight>,
    /// Route 53 change id, when applied.
    pub change_id: Option<String>,
    /// Decide-and-swap attempts.
    pub attempts: u32,
    /// SNS message id of the notice, when one was sent.
    pub notice_id: Option<String>,
    /// Step durations.
    pub durations: Durations,
}

pub use kbha_core::ReplicationStatus;

/// The state object: kbha-core's [`FailoverState`] plus the journal of changes this
/// function started and has not finished announcing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredState {
    /// Alarms, last change, handled events.
    #[serde(flatten)]
    pub state: FailoverState,
    /// Unfinished changes, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingChange>,
    /// Notices due and not yet sent, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Outgoing>,
}

/// A notice due for one event, and who sends it. Staged in the same conditional write
/// that records the decision, so two copies of one transition stage it once, and only
/// the claim's holder publishes it (see [`kbha_hosting::claim`]); removed once sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// Event whose decision it announces.
    pub event_id: String,
    /// The alarm transition, so a copy with another event id finds it.
    pub alarm: Option<Alarm>,
    /// What the decision did (a retry that only sends the notice reports it).
    pub action: ActionTaken,
    /// Route 53 change id, for a change whose answer arrived.
    pub change_id: Option<String>,
    /// The message.
    pub notice: Notice,
    /// Who sends it.
    pub claim: Claim,
}

/// A Route 53 change in flight: written before the change batch, replaced by its notice
/// in the outbox by the state write after it. A redelivered event that finds
/// its own entry finishes the job (records the change, sends the notice) instead of
/// deciding again on records it already changed, so a crash or lost answer between
/// the steps neither loses the notice nor changes Route 53 twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingChange {
    /// Event that asked for the change.
    pub event_id: String,
    /// Decision time.
    pub at_ms: TimestampMs,
    /// The alarm transition, recorded when the change is finished.
    pub alarm: Option<Alarm>,
    /// Weights before.
    pub from: Vec<Weight>,
    /// Weights asked for.
    pub to: Vec<Weight>,
    /// The policy's reason.
    pub reason: String,
    /// `last_change` when the intent was written: if it moved since, another invocation
    /// made a change, and matching records may be its work, not ours.
    pub seen_last_change: Option<LastChange>,
    /// The change batch is known to have landed and the state records it. (Only versions
    /// that kept entries until the notice was out wrote `true`; finishing now closes the
    /// entry and stages the notice in the outbox.)
    pub applied: bool,
    /// Route 53 change id, when its answer arrived (same versions).
    pub change_id: Option<String>,
    /// The notice to send once the change is made.
    pub notice: Notice,
}

/// One SNS message, built before it is needed so a retry sends the same one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Subject.
    pub subject: String,
    /// Body (JSON).
    pub message: Value,
    /// Message attributes.
    pub attributes: BTreeMap<String, String>,
}

impl StoredState {
    /// Replaces the entry of `p.event_id` (if any) with `p`.
    fn put_pending(&mut self, p: PendingChange) {
        self.pending.retain(|e| e.event_id != p.event_id);
        self.pending.push(p);
        if self.pending.len() > MAX_PENDING {
            let extra = self.pending.len() - MAX_PENDING;
            self.pending.drain(..extra);
        }
    }

    fn drop_pending(&mut self, event_id: &str) {
        self.pending.retain(|e| e.event_id != event_id);
    }

    /// Records a finished change (alarm, event, last change), stages its notice (a change
    /// is always announced) and closes its journal entry.
    fn finish(&mut self, p: &PendingChange, change_id: Option<&str>, claim: &Claim) {
        let mut notice = p.notice.clone();
        let change_id = change_id.map(str::to_owned).or(p.change_id.clone());
        if change_id.is_some() && !notice.message.is_null() {
            notice.message["change_id"] = serde_json::json!(change_id);
        }
        let o = Outgoing {
            event_id: p.event_id.clone(),
            alarm: p.alarm.clone(),
            action: ActionTaken::Applied,
            change_id,
            notice,
            claim: claim.clone(),
        };
        self.stage(o, true);
        if let Some(a) = &p.alarm {
            self.state.record_alarm(a);
        }
        self.state.remember_event(&p.event_id);
        if self.state.last_change.as_ref().is_none_or(|l| l.at_ms <= p.at_ms) {
            self.state.last_change = Some(LastChange { at_ms: p.at_ms, weights: p.to.clone(), reason: p.reason.clone() });
        }
        self.drop_pending(&p.event_id);
    }

    /// Puts a notice in the outbox, unless it is staged already (by an earlier attempt,
    /// or a copy of the event with the same id) or, when not `always`, its transition is
    /// handled elsewhere: recorded by another copy, or the subject of another copy's
    /// unfinished change (whose notice announces it). Call it before recording the
    /// alarm, which makes the transition a duplicate.
    fn stage(&mut self, o: Outgoing, always: bool) {
        if o.notice.message.is_null() || self.outbox.iter().any(|e| e.event_id == o.event_id) {
            return;
        }
        if !always
            && let Some(a) = &o.alarm
            && (self.state.freshness(&o.event_id, a) == Freshness::Duplicate
                || self.pending.iter().any(|p| p.event_id != o.event_id && p.alarm.as_ref().is_some_and(|pa| same_transition(pa, a))))
        {
            return;
        }
        self.outbox.push(o);
        if self.outbox.len() > MAX_OUTBOX {
            let extra = self.outbox.len() - MAX_OUTBOX;
            self.outbox.drain(..extra);
        }
    }

    /// The staged notice for this event, or for another copy of its transition.
    fn outgoing(&self, event_id: &str, alarm: Option<&Alarm>) -> Option<&Outgoing> {
        self.outbox.iter().find(|o| o.event_id == event_id).or_else(|| {
            let a = alarm?;
            self.outbox.iter().find(|o| o.alarm.as_ref().is_some_and(|oa| same_transition(oa, a)))
        })
    }
}

/// Two alarms describe the same transition (copies of one CloudWatch state change).
fn same_transition(a: &Alarm, b: &Alarm) -> bool {
    a.name == b.name && a.state == b.state && a.state_changed_at_ms == b.state_changed_at_ms
}

/// The failover function, generic over its AWS dependencies.
pub struct FailoverFunction<D, S, N> {
    cfg: FailoverConfig,
    dns: D,
    store: S,
    notifier: N,
    policies: Policies,
}

struct Facts {
    records: Vec<WeightedRecord>,
    targets: Vec<Target>,
}

impl<D: Dns, S: ObjectStore, N: Notifier> FailoverFunction<D, S, N> {
    /// Wires configuration, AWS adapters and policies.
    pub fn new(cfg: FailoverConfig, dns: D, store: S, notifier: N, policies: Policies) -> Self {
        FailoverFunction { cfg, dns, store, notifier, policies }
    }

    /// The configuration in use.
    pub fn config(&self) -> &FailoverConfig {
        &self.cfg
    }

    /// Handles one invocation at decision time `now_ms`.
    pub async fn handle(&self, event: &Value, now_ms: TimestampMs) -> Result<Vec<DecisionRecord>, FailoverError> {
        let normalised = match normalise_failover_event(event) {
            Ok(n) => n,
            Err(e) => {
                self.announce_unrecognised(&e, now_ms).await;
                return Err(e.into());
            }
        };
        let mut records = Vec::new();
        match normalised {
            FailoverEvent::Alarms(alarms) => {
                for ev in alarms {
                    records.push(self.handle_one(Some(ev), None, now_ms).await?);
                }
            }
            FailoverEvent::Schedule { event_id, .. } => records.push(self.handle_one(None, Some(event_id), now_ms).await?),
        }
        Ok(records)
    }

    async fn handle_one(
        &self,
        ev: Option<AlarmEvent>,
        tick_id: Option<String>,
        now_ms: TimestampMs,
    ) -> Result<DecisionRecord, FailoverError> {
        let event_id = ev.as_ref().map(|e| e.event_id.clone()).or(tick_id).unwrap_or_default();
        let alarm: Option<Alarm> = ev.map(|e| {
            let mut a = e.alarm;
            a.target = self.cfg.target_of_alarm(&a.name).map(|t| t.set_identifier.clone());
            a
        });
        let mut rec = DecisionRecord {
            record: "kbha.decision",
            function: "failover",
            event_id: event_id.clone(),
            now: format_timestamp(now_ms),
            subject: format!("{} {}", self.cfg.record_name, self.cfg.record_type),
            alarm: alarm.as_ref().map(|a| a.name.clone()),
            input_digest: None,
            policy: None,
            guardrail: None,
            action: ActionTaken::NoChange,
            old_weights: vec![],
            new_weights: vec![],
            change_id: None,
            attempts: 0,
            notice_id: None,
            durations: Durations::default(),
        };
        if let Some(a) = alarm.as_ref().filter(|a| a.target.is_none()) {
            tracing::warn!(alarm = %a.name, "alarm is not mapped to any target in KBHA_TARGETS; ignored");
            rec.action = ActionTaken::SkippedUnmapped;
            log_record(&rec);
            return Ok(rec);
        }
        // Tells this invocation's notice claim from another copy's.
        let me = claim::token();
        for attempt in 1..=self.cfg.max_attempts {
            rec.attempts = attempt;
            let t_gather = Instant::now();
            let (stored, _) = self.load_state().await?;
            if let Some(p) = stored.pending.iter().find(|p| p.event_id == event_id)
                && let Some(done) = self.resume(p, &stored, rec.clone(), &me).await?
            {
                return Ok(done);
            }
            if let Some(o) = stored.outbox.iter().find(|o| o.event_id == event_id) {
                // An earlier attempt at this event decided and recorded; only its notice
                // is left to send.
                rec.action = o.action;
                rec.change_id = o.change_id.clone();
                rec.notice_id = self.deliver(&event_id, &me, stored).await?;
                log_record(&rec);
                return Ok(rec);
            }
            let unfinished = stored.pending.iter().any(|p| p.event_id == event_id);
            let state = stored.state.clone();
            if let Some(a) = &alarm {
                match state.freshness(&event_id, a) {
                    Freshness::New => {}
                    Freshness::Duplicate => {
                        if unfinished {
                            // Our change lost to another copy of this transition, which
                            // recorded it: our intent is moot.
                            self.close_pending(&event_id).await;
                        }
                        if let Some(o) = stored.outgoing(&event_id, Some(a)) {
                            // Another copy staged the notice: see it sent (take it over
                            // if that copy died), never send a second one.
                            let theirs = o.event_id.clone();
                            rec.notice_id = self.deliver(&theirs, &me, stored.clone()).await?;
                        }
                        rec.action = ActionTaken::SkippedDuplicate;
                        log_record(&rec);
                        return Ok(rec);
                    }
                    Freshness::Stale => {
                        self.update_state(|s| {
                            s.state.record_alarm(a);
                            s.state.remember_event(&event_id);
                            s.drop_pending(&event_id);
                        })
                        .await?;
                        rec.action = ActionTaken::SkippedStale;
                        log_record(&rec);
                        return Ok(rec);
                    }
                }
            }
            let mut seen = state.clone();
            if let Some(a) = &alarm {
                seen.record_alarm(a);
            }
            let facts = self.gather_facts(&seen, now_ms).await?;
            rec.durations.gather_ms = ms(t_gather);
            let input = FailoverInput {
                now_ms,
                event_id: event_id.clone(),
                trigger: alarm.clone().map_or(FailoverTrigger::Schedule, FailoverTrigger::Alarm),
                record_name: self.cfg.record_name.clone(),
                targets: facts.targets.clone(),
                last_change: seen.last_change.clone(),
                config: self.cfg.policy_parameters(),
            };
            rec.input_digest = Some(digest_json(&input));
            let t_decide = Instant::now();
            let decided = self.policies.decide(&input);
            rec.durations.decide_ms = ms(t_decide);
            let verdict = check_failover(
                &input,
                &decided.decision,
                GuardrailSettings { cooldown_ms: (self.cfg.cooldown_s * 1000) as i64, break_glass: self.cfg.break_glass },
            );
            let t_act = Instant::now();
            rec.old_weights = weights_of(&facts.targets);
            rec.new_weights = rec.old_weights.clone();
            let mut applied: Option<PendingChange> = None;
            match &verdict {
                GuardrailVerdict::NoChange => rec.action = ActionTaken::NoChange,
                GuardrailVerdict::Refused { refusals } => {
                    tracing::warn!(refusals = ?refusals, "guardrails refused the policy's decision");
                    rec.action = ActionTaken::Refused;
                }
                GuardrailVerdict::Apply { weights, forced } => {
                    if *forced {
                        tracing::error!(weights = ?weights, "BREAK-GLASS: moving traffic onto a target whose health check fails");
                    }
                    rec.new_weights = weights.clone();
                    if self.cfg.dry_run {
                        rec.action = ActionTaken::DryRun;
                    } else {
                        // The intent goes to the state object first: whatever is lost
                        // after the change batch, a retry of this event can finish it.
                        let mut planned = rec.clone();
                        planned.action = ActionTaken::Applied;
                        planned.policy = Some(decided.clone());
                        planned.guardrail = Some(verdict.clone());
                        let notice = self.build_notice(&planned, alarm.as_ref(), now_ms);
                        let intent = PendingChange {
                            event_id: event_id.clone(),
                            at_ms: now_ms,
                            alarm: alarm.clone(),
                            from: rec.old_weights.clone(),
                            to: weights.clone(),
                            reason: decided.decision.reason.clone(),
                            seen_last_change: state.last_change.clone(),
                            applied: false,
                            change_id: None,
                            notice: notice.clone().unwrap_or_else(|| Notice {
                                subject: String::new(),
                                message: Value::Null,
                                attributes: BTreeMap::new(),
                            }),
                        };
                        self.update_state(|s| s.put_pending(intent.clone())).await?;
                        match self.swap(&facts.records, weights, &decided.decision, &event_id).await {
                            Ok(change_id) => {
                                rec.change_id = Some(change_id);
                                rec.action = ActionTaken::Applied;
                                applied = Some(intent);
                            }
                            Err(AwsError::Conflict { message, .. }) => {
                                // Either another writer changed the records, or our own
                                // batch landed and its answer was lost (the SDK's retry
                                // then conflicts): the next attempt's journal check tells.
                                tracing::info!(attempt, "route 53 records changed since read ({message}); re-reading and deciding again");
                                continue;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            rec.policy = Some(decided);
            rec.guardrail = Some(verdict);
            // A change's notice was built with its intent; any other decision's now.
            let notice = if applied.is_none() { self.build_notice(&rec, alarm.as_ref(), now_ms) } else { None };
            let mine = Claim::new(&me, kbha_hosting::lambda::now_ms());
            // Recording the decision and staging its notice is one conditional write: of
            // two copies of this transition, only the first stages a notice.
            let stored = self
                .update_state(|s| {
                    match &applied {
                        Some(p) => s.finish(p, rec.change_id.as_deref(), &mine),
                        None => {
                            if let Some(notice) = &notice {
                                let o = Outgoing {
                                    event_id: event_id.clone(),
                                    alarm: alarm.clone(),
                                    action: rec.action,
                                    change_id: None,
                                    notice: notice.clone(),
                                    claim: mine.clone(),
                                };
                                s.stage(o, false);
                            }
                            s.drop_pending(&event_id);
                        }
                    }
                    if let Some(a) = &alarm {
                        s.state.record_alarm(a);
                        s.state.remember_event(&event_id);
                    }
                })
                .await?;
            rec.notice_id = self.deliver(&event_id, &me, stored).await?;
            rec.durations.act_ms = ms(t_act);
            log_record(&rec);
            return Ok(rec);
        }
        Err(FailoverError::ConflictExhausted { attempts: self.cfg.max_attempts })
    }

    /// Finishes a change this event started in an earlier invocation. `Some`: done (the
    /// change is recorded and its notice sent); `None`: the change never landed, decide
    /// afresh.
    async fn resume(
        &self,
        p: &PendingChange,
        stored: &StoredState,
        mut rec: DecisionRecord,
        me: &str,
    ) -> Result<Option<DecisionRecord>, FailoverError> {
        rec.action = ActionTaken::Applied;
        rec.old_weights = p.from.clone();
        rec.new_weights = p.to.clone();
        if !p.applied {
            let records = self.dns.weighted_records(&self.cfg.hosted_zone_id, &self.cfg.record_name, &self.cfg.record_type).await?;
            let landed = p.to.iter().all(|w| records.iter().any(|r| r.set_identifier == w.set_identifier && r.weight == w.weight));
            // Matching records are ours only if no other invocation may have made them.
            let rival = stored.state.last_change != p.seen_last_change
                || stored.pending.iter().any(|o| {
                    o.event_id != p.event_id && o.to == p.to && (o.at_ms - p.at_ms).abs() <= RIVAL_WINDOW_MS
                });
            if !landed || rival {
                tracing::info!(event_id = %p.event_id, landed, rival, "an earlier attempt's change did not land (or is not ours); deciding again");
                return Ok(None);
            }
            tracing::warn!(event_id = %p.event_id, "an earlier attempt changed route 53 but did not finish; recording it and sending its notice");
        }
        // (A journal entry marked applied comes from a version that kept entries until
        // their notice was out; finishing it stages that notice.)
        let mine = Claim::new(me, kbha_hosting::lambda::now_ms());
        let stored = self.update_state(|s| s.finish(p, None, &mine)).await?;
        rec.change_id = p.change_id.clone();
        rec.notice_id = self.deliver(&p.event_id, me, stored).await?;
        log_record(&rec);
        Ok(Some(rec))
    }

    /// Sends the staged notice of `event_id` when this invocation holds its claim, or
    /// can take it over (released, or its holder's lease ran out); waits while another
    /// copy holds it. `None`: nothing staged (sent already, or never due).
    async fn deliver(&self, event_id: &str, me: &str, mut stored: StoredState) -> Result<Option<String>, FailoverError> {
        let started = Instant::now();
        loop {
            let Some(o) = stored.outbox.iter().find(|o| o.event_id == event_id) else { return Ok(None) };
            let now = kbha_hosting::lambda::now_ms();
            match o.claim.holder(me, now) {
                Holder::Mine => {
                    return match self.send(Some(o.notice.clone())).await {
                        Ok(id) => {
                            self.close_outgoing(event_id).await;
                            Ok(id)
                        }
                        Err(e) => {
                            self.release(event_id, me).await;
                            Err(e)
                        }
                    };
                }
                Holder::Free => {
                    let take = Claim::new(me, now);
                    stored = self
                        .update_state(|s| {
                            if let Some(o) = s.outbox.iter_mut().find(|o| o.event_id == event_id)
                                && o.claim.holder(me, now) == Holder::Free
                            {
                                o.claim = take.clone();
                            }
                        })
                        .await?;
                }
                Holder::Other => {
                    if started.elapsed() >= claim::WAIT {
                        return Err(FailoverError::NoticeInProgress { event_id: event_id.to_owned() });
                    }
                    tokio::time::sleep(claim::POLL).await;
                    stored = self.load_state().await?.0;
                }
            }
        }
    }

    /// Removes a sent notice. Best effort: a leftover entry only means a redelivery of
    /// this event, once the lease has run out, sends it once more.
    async fn close_outgoing(&self, event_id: &str) {
        if let Err(e) = self.update_state(|s| s.outbox.retain(|o| o.event_id != event_id)).await {
            tracing::warn!(event_id, "could not clear the sent notice from the state object: {e}");
        }
    }

    /// Gives up this invocation's claim after a failed publish, so the retry need not
    /// wait for the lease. Best effort: otherwise the lease runs out.
    async fn release(&self, event_id: &str, me: &str) {
        let released = self
            .update_state(|s| {
                if let Some(o) = s.outbox.iter_mut().find(|o| o.event_id == event_id && o.claim.by == me) {
                    o.claim.release();
                }
            })
            .await;
        if let Err(e) = released {
            tracing::warn!(event_id, "could not release the notice claim; a retry waits for its lease: {e}");
        }
    }

    /// Removes a moot change's journal entry. Best effort: a leftover entry is checked
    /// against Route 53 by a redelivery of its event.
    async fn close_pending(&self, event_id: &str) {
        if let Err(e) = self.update_state(|s| s.drop_pending(event_id)).await {
            tracing::warn!(event_id, "could not clear the finished change from the state object: {e}");
        }
    }

    /// Reads the state object; a missing object is the empty state.
    async fn load_state(&self) -> Result<(StoredState, Option<String>), FailoverError> {
        let key = self.cfg.state_key();
        match self.store.get(&self.cfg.state.bucket, &key).await? {
            None => Ok((StoredState::default(), None)),
            Some(obj) => serde_json::from_slice(&obj.bytes).map(|s| (s, Some(obj.etag))).map_err(|e| {
                FailoverError::CorruptState { bucket: self.cfg.state.bucket.clone(), key, message: e.to_string() }
            }),
        }
    }

    /// Applies `update` to the freshest state and writes it with If-Match (or
    /// If-None-Match for the first write); on a lost race, re-reads and re-applies.
    /// Updates are merges (newest alarm wins, events remembered), so order is immaterial.
    /// Returns the state as written (or found, when the update changed nothing).
    async fn update_state(&self, update: impl Fn(&mut StoredState)) -> Result<StoredState, FailoverError> {
        let key = self.cfg.state_key();
        for _ in 0..STATE_WRITE_ATTEMPTS {
            let (mut state, etag) = self.load_state().await?;
            let before = state.clone();
            update(&mut state);
            if etag.is_some() && state == before {
                return Ok(state);
            }
            let body = serde_json::to_vec_pretty(&state).map_err(|e| AwsError::Invalid {
                operation: "PutObject",
                message: format!("cannot serialise state: {e}"),
            })?;
            let cond = etag.map_or(PutCondition::IfNoneMatch, PutCondition::IfMatch);
            match self.store.put(&self.cfg.state.bucket, &key, body, cond).await {
                Ok(_) => return Ok(state),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(FailoverError::ConflictExhausted { attempts: STATE_WRITE_ATTEMPTS })
    }

    /// Route 53 records, health checks, replication ages, recorded alarm states.
    async fn gather_facts(&self, state: &FailoverState, now_ms: TimestampMs) -> Result<Facts, FailoverError> {
        let records = self.dns.weighted_records(&self.cfg.hosted_zone_id, &self.cfg.record_name, &self.cfg.record_type).await?;
        // Every target's health check and replication status at once: they are
        // independent, and sequential reads were most of an invocation's own time.
        let targets = futures::future::try_join_all(self.cfg.targets.iter().map(|tc| async {
            let rec = records.iter().find(|r| r.set_identifier == tc.set_identifier).ok_or_else(|| {
                FailoverError::RecordSet {
                    name: self.cfg.record_name.clone(),
                    problem: format!("has no {} record with SetIdentifier `{}`", self.cfg.record_type, tc.set_identifier),
                }
            })?;
            let health = async {
                match tc.health_check_id.as_ref().or(rec.health_check_id.as_ref()) {
                    Some(id) => Ok(self.dns.health_status(id).await?),
                    None => Ok::<_, FailoverError>(Health::Unknown),
                }
            };
            let (health, replication_age_ms) = futures::future::try_join(health, self.replication_age(&tc.region, now_ms)).await?;
            let (alarm_state, since) = state.target_alarm_state(&tc.set_identifier);
            Ok::<_, FailoverError>(Target {
                set_identifier: tc.set_identifier.clone(),
                region: tc.region.clone(),
                primary: tc.primary,
                weight: rec.weight,
                health,
                alarm_state,
                alarm_state_since_ms: since,
                replication_age_ms,
            })
        }))
        .await?;
        if let Some(extra) = records.iter().find(|r| !self.cfg.targets.iter().any(|t| t.set_identifier == r.set_identifier)) {
            return Err(FailoverError::RecordSet {
                name: self.cfg.record_name.clone(),
                problem: format!("has a record with SetIdentifier `{}` that KBHA_TARGETS does not list", extra.set_identifier),
            });
        }
        Ok(Facts { records, targets })
    }

    async fn replication_age(&self, region: &str, now_ms: TimestampMs) -> Result<Option<u64>, FailoverError> {
        let Some(loc) = &self.cfg.replication_status else { return Ok(None) };
        let key = format!("{}{region}.json", loc.prefix);
        let Some(obj) = self.store.get(&loc.bucket, &key).await? else { return Ok(None) };
        match serde_json::from_slice::<ReplicationStatus>(&obj.bytes) {
            Ok(s) => Ok(Some(now_ms.saturating_sub(s.newest_verified_backup_at_ms).max(0) as u64)),
            Err(e) => {
                // A broken status object must not block a failover; the age is reported
                // unknown and the policy decides what unknown means.
                tracing::error!(bucket = %loc.bucket, key = %key, "replication status unreadable, age unknown: {e}");
                Ok(None)
            }
        }
    }

    /// One batch: DELETE each changed record exactly as read, CREATE it with its new weight.
    async fn swap(
        &self,
        records: &[WeightedRecord],
        weights: &[Weight],
        decision: &FailoverDecision,
        event_id: &str,
    ) -> Result<String, AwsError> {
        // The guardrails only pass weights for targets of this record set.
        let swaps = kbha_aws::swaps_for_weights(records, weights.iter().map(|w| (w.set_identifier.as_str(), w.weight)))
            .map_err(|unknown| AwsError::Invalid { operation: "ChangeResourceRecordSets", message: format!("unknown targets {unknown:?}") })?;
        let mut comment = format!("kbha failover ({event_id}): {}", decision.reason);
        // Route 53 limits the batch comment to 256 characters.
        if comment.chars().count() > 256 {
            comment = comment.chars().take(253).collect::<String>() + "...";
        }
        self.dns.swap_records(&self.cfg.hosted_zone_id, &swaps, &comment).await
    }

    /// Publishes a notice built by [`Self::build_notice`].
    async fn send(&self, notice: Option<Notice>) -> Result<Option<String>, FailoverError> {
        let Some(n) = notice.filter(|n| !n.message.is_null()) else { return Ok(None) };
        let id = self.notifier.publish(&self.cfg.notify_topic_arn, &n.subject, &n.message.to_string(), &n.attributes).await?;
        Ok(Some(id))
    }

    /// One notice per decision worth a human's attention: every decision on a new alarm
    /// transition, and any tick that changed something, was refused or alerted.
    fn build_notice(&self, rec: &DecisionRecord, alarm: Option<&Alarm>, now_ms: TimestampMs) -> Option<Notice> {
        let (Some(decided), Some(verdict)) = (&rec.policy, &rec.guardrail) else { return None };
        let alerts = &decided.decision.alerts;
        let notable = alarm.is_some() || rec.action != ActionTaken::NoChange || !alerts.is_empty();
        if !notable {
            return None;
        }
        let mut severity = alerts.iter().map(|a| a.severity).max().unwrap_or(Severity::Info);
        let refusals = match verdict {
            GuardrailVerdict::Refused { refusals } => {
                severity = severity.max(Severity::Warning);
                refusals.iter().map(ToString::to_string).collect()
            }
            _ => vec![],
        };
        if matches!(rec.action, ActionTaken::Applied | ActionTaken::DryRun) {
            severity = severity.max(Severity::Warning);
        }
        let moved = describe_weights(&rec.new_weights);
        let summary = match rec.action {
            ActionTaken::Applied => format!("traffic shifted: {moved}"),
            ActionTaken::DryRun => format!("dry-run: would shift traffic: {moved}"),
            ActionTaken::Refused => "failover decision refused by guardrails".to_owned(),
            _ => format!("holding weights: {}", first_line(&decided.decision.reason)),
        };
        let notice = serde_json::json!({
            "kind": "kbha.notice",
            "function": "failover",
            "type": rec.action,
            "severity": severity,
            "summary": summary,
            "reason": decided.decision.reason,
            "record_name": self.cfg.record_name,
            "event_id": rec.event_id,
            "at": format_timestamp(now_ms),
            "alarm": alarm,
            "old_weights": rec.old_weights,
            "new_weights": rec.new_weights,
            "dry_run": self.cfg.dry_run,
            "change_id": rec.change_id,
            "policy_source": decided.policy_source,
            "policy_digest": decided.policy_digest,
            "decided_by": decided.decided_by,
            "policy_faults": decided.faults,
            "refusals": refusals,
            "alerts": alerts,
        });
        let subject = format!("[kbha {}] {}: {}", severity.as_str(), self.cfg.record_name.trim_end_matches('.'), summary);
        let region = alarm.map(|a| a.region.clone()).unwrap_or_else(|| self.primary_region().to_owned());
        let attributes = BTreeMap::from([
            ("severity".to_owned(), severity.as_str().to_owned()),
            ("source".to_owned(), "kbha.failover".to_owned()),
            ("region".to_owned(), region),
            ("kind".to_owned(), serde_json::to_value(rec.action).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()),
            ("dry_run".to_owned(), self.cfg.dry_run.to_string()),
        ]);
        Some(Notice { subject, message: notice, attributes })
    }

    /// A warning notice for an event the function cannot use; best effort, since the
    /// invocation fails anyway and the log has the whole error.
    async fn announce_unrecognised(&self, err: &EventError, now_ms: TimestampMs) {
        tracing::error!("{err}");
        let notice = serde_json::json!({
            "kind": "kbha.notice",
            "function": "failover",
            "type": "unrecognised_event",
            "severity": "warning",
            "summary": "failover function received an event it cannot use",
            "reason": err.to_string(),
            "record_name": self.cfg.record_name,
            "at": format_timestamp(now_ms),
        });
        let attributes = BTreeMap::from([
            ("severity".to_owned(), "warning".to_owned()),
            ("source".to_owned(), "kbha.failover".to_owned()),
            ("region".to_owned(), self.primary_region().to_owned()),
            ("kind".to_owned(), "unrecognised_event".to_owned()),
        ]);
        let subject = format!("[kbha warning] {}: unrecognised event", self.cfg.record_name.trim_end_matches('.'));
        if let Err(e) = self.notifier.publish(&self.cfg.notify_topic_arn, &subject, &notice.to_string(), &attributes).await {
            tracing::error!("could not announce the unrecognised event: {e}");
        }
    }

    fn primary_region(&self) -> &str {
        self.cfg.targets.iter().find(|t| t.primary).map_or("", |t| t.region.as_str())
    }
}

fn weights_of(targets: &[Target]) -> Vec<Weight> {
    targets.iter().map(|t| Weight { set_identifier: t.set_identifier.clone(), weight: t.weight }).collect()
}

fn describe_weights(weights: &[Weight]) -> String {
    weights.iter().map(|w| format!("{}={}", w.set_identifier, w.weight)).collect::<Vec<_>>().join(", ")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}


/// `sha256:<hex>` of a value's JSON.
pub fn digest_json<T: Serialize>(v: &T) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

fn log_record(rec: &DecisionRecord) {
    match serde_json::to_string(rec) {
        // One bare JSON line on stdout: CloudWatch Logs keeps it as is, so Logs Insights
        // and the drill can parse it.
        Ok(line) => println!("{line}"),
        Err(e) => tracing::error!("cannot serialise decision record: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: u32, s: u32) -> Vec<Weight> {
        vec![Weight { set_identifier: "primary".into(), weight: p }, Weight { set_identifier: "secondary".into(), weight: s }]
    }

    fn pending(event_id: &str, at_ms: TimestampMs) -> PendingChange {
        PendingChange {
            event_id: event_id.into(),
            at_ms,
            alarm: None,
            from: w(100, 0),
            to: w(0, 100),
            reason: "primary down".into(),
            seen_last_change: None,
            applied: false,
            change_id: None,
            notice: Notice { subject: "s".into(), message: serde_json::json!({"change_id": null}), attributes: BTreeMap::new() },
        }
    }

    #[test]
    fn a_state_object_written_before_the_journal_still_parses_and_an_empty_journal_is_not_written() {
        let old = r#"{"alarms":{},"last_change":null,"handled_events":["e-1"]}"#;
        let s: StoredState = serde_json::from_str(old).expect("old state parses");
        assert_eq!(s.state.handled_events, ["e-1"]);
        assert!(s.pending.is_empty());
        let back = serde_json::to_value(&s).expect("serialises");
        assert!(back.get("pending").is_none(), "{back}");
        assert_eq!(back["handled_events"][0], "e-1", "core fields stay at the top level: {back}");
    }

    fn alarm(at_ms: TimestampMs) -> Alarm {
        serde_json::from_value(serde_json::json!({
            "name": "primary-down", "region": "us-east-1", "state": "alarm", "state_changed_at_ms": at_ms
        }))
        .expect("alarm")
    }

    fn notice() -> Notice {
        Notice { subject: "s".into(), message: serde_json::json!({"summary": "x"}), attributes: BTreeMap::new() }
    }

    fn outgoing(event_id: &str, alarm: Option<&Alarm>, by: &str) -> Outgoing {
        Outgoing {
            event_id: event_id.into(),
            alarm: alarm.cloned(),
            action: ActionTaken::NoChange,
            change_id: None,
            notice: notice(),
            claim: Claim::new(by, 0),
        }
    }

    #[test]
    fn finishing_a_change_records_it_stages_its_notice_with_the_change_id_and_closes_the_journal_entry() {
        let mut s = StoredState::default();
        let p = pending("e-1", 1_000);
        s.put_pending(p.clone());
        s.put_pending(p.clone());
        assert_eq!(s.pending.len(), 1, "one entry per event");
        s.finish(&p, Some("C123"), &Claim::new("me", 0));
        assert!(s.state.handled_events.iter().any(|e| e == "e-1"));
        assert_eq!(s.state.last_change.as_ref().map(|l| l.weights.clone()), Some(w(0, 100)));
        assert!(s.pending.is_empty());
        assert_eq!(s.outbox.len(), 1);
        assert_eq!(s.outbox[0].notice.message["change_id"], "C123");
        assert_eq!(s.outbox[0].claim.by, "me");
        // Finishing again (a retry after a lost answer, or a copy with the same id)
        // changes nothing: the first claim stands.
        let before = s.clone();
        s.finish(&p, None, &Claim::new("other", 0));
        assert_eq!(s, before);
    }

    #[test]
    fn of_two_copies_of_one_transition_only_the_first_stages_a_notice() {
        let a = alarm(1_000);
        let mut s = StoredState::default();
        // Copy one records the transition and stages its notice in one write.
        s.stage(outgoing("copy-1", Some(&a), "one"), false);
        s.state.record_alarm(&a);
        s.state.remember_event("copy-1");
        // Copy two, with another event id, re-applies its write on that state.
        s.stage(outgoing("copy-2", Some(&a), "two"), false);
        assert_eq!(s.outbox.len(), 1);
        assert_eq!(s.outbox[0].claim.by, "one");
        // It finds copy one's notice through the transition, to wait for it.
        assert_eq!(s.outgoing("copy-2", Some(&a)).map(|o| o.event_id.as_str()), Some("copy-1"));
        // A later transition of the same alarm is news again.
        s.stage(outgoing("copy-3", Some(&alarm(2_000)), "three"), false);
        assert_eq!(s.outbox.len(), 2);
    }

    #[test]
    fn a_transition_whose_change_another_copy_has_in_flight_is_announced_by_that_copy() {
        let a = alarm(1_000);
        let mut s = StoredState::default();
        s.put_pending(PendingChange { alarm: Some(a.clone()), ..pending("copy-1", 1_000) });
        s.stage(outgoing("copy-2", Some(&a), "two"), false);
        assert!(s.outbox.is_empty(), "copy two decided on records copy one already changed");
        // A change is always announced, whoever staged first.
        s.stage(outgoing("copy-2", Some(&a), "two"), true);
        assert_eq!(s.outbox.len(), 1);
    }

    #[test]
    fn the_outbox_is_bounded_and_a_null_notice_is_never_staged() {
        let mut s = StoredState::default();
        s.stage(Outgoing { notice: Notice { message: Value::Null, ..notice() }, ..outgoing("e-null", None, "me") }, true);
        assert!(s.outbox.is_empty());
        for i in 0..(MAX_OUTBOX + 3) {
            s.stage(outgoing(&format!("e-{i}"), None, "me"), false);
        }
        assert_eq!(s.outbox.len(), MAX_OUTBOX);
        assert_eq!(s.outbox[0].event_id, "e-3", "oldest dropped first");
    }

    #[test]
    fn an_older_change_never_overwrites_a_newer_last_change() {
        let mut s = StoredState::default();
        s.state.last_change = Some(LastChange { at_ms: 5_000, weights: w(100, 0), reason: "failback".into() });
        s.finish(&pending("e-old", 1_000), None, &Claim::new("me", 0));
        assert_eq!(s.state.last_change.as_ref().map(|l| l.at_ms), Some(5_000));
    }

    #[test]
    fn the_journal_is_bounded() {
        let mut s = StoredState::default();
        for i in 0..(MAX_PENDING + 5) {
            s.put_pending(pending(&format!("e-{i}"), i as TimestampMs));
        }
        assert_eq!(s.pending.len(), MAX_PENDING);
        assert_eq!(s.pending[0].event_id, "e-5", "oldest dropped first");
    }
}
