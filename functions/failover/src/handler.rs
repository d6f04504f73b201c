//! The decision path, top to bottom, one function per step: normalise the event ->
//! finish earlier work -> skip what is not news -> observe ([`crate::observe`]) -> decide
//! (policy + guardrails) -> apply (compare-and-swap) -> record -> announce
//! ([`crate::announce`]). Every step after "skip" runs on every event and every tick.

use std::collections::BTreeMap;
use std::time::Instant;

use kbha_aws::{Alarms, AwsError, Dns, Notifier, ObjectStore, PutCondition, WeightedRecord};
use kbha_core::events::{AlarmEvent, EventError, FailoverEvent, normalise_failover_event};
use kbha_core::guardrails::{GuardrailContext, GuardrailVerdict, Move, check_failover, refuse_onto_drained};
use kbha_core::state::{FailoverState, Freshness};
use kbha_core::{Alarm, Alert, FailoverDecision, FailoverInput, FailoverTrigger, Severity, Target, TimestampMs, Weight};
use kbha_lambda::claim::{self, Claim};
use kbha_lambda::record::{Invocation, RecordHeader, RecordedInput, ms};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::announce;
use crate::config::FailoverConfig;
use crate::journal::{Notice, Outgoing, PendingChange, RIVAL_WINDOW_MS, StoredState};
use crate::ledger::{self, ChangeEntry};
use crate::observe::{self, Observed};
use crate::ops;
use crate::plan::{PlanNote, PlanUpdate, plan_guardrails};
use crate::{Decided, Policies};
use kbha_core::FailoverAction;
use kbha_core::plan::{ActivePlan, PlanKind, PlanOutcome, Progress, complete, progress};

/// Attempts at writing the state object when another invocation wrote it meanwhile
/// (a change takes three writes: intent, applied, done; 8 concurrent copies contend).
const STATE_WRITE_ATTEMPTS: u32 = 16;
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
    /// Would have changed; an operator paused the function (`kbha ops pause`).
    Paused,
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

pub use kbha_lambda::record::Durations;

/// One JSON line per decision in the log, and the invocation's response. Its first
/// fields are the ones every function's record has ([`kbha_lambda::record`]).
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    /// The fields every function's record starts with ([`RecordHeader`]); `subject` is the
    /// record set decided about, `<name> <type>`.
    #[serde(flatten)]
    pub header: RecordHeader<Option<Decided>, ActionTaken>,
    /// Alarm name, for alarm triggers.
    pub alarm: Option<String>,
    /// What the guardrails checked the decision with (after the operators' marks), so
    /// `kbha policy backtest` checks a candidate's decision the same way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guardrail_context: Option<GuardrailContext>,
    /// The stepped shift under way, started or ended by this decision ([`crate::plan`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanNote>,
    /// Each target's replication freshness and the source it is of (the oldest of
    /// `KBHA_RPO_SOURCES`): which source held the RPO gate. Empty without
    /// `KBHA_REPLICATION_STATUS`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replication: Vec<crate::observe::ReplicationRead>,
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
}

kbha_lambda::record_header!(DecisionRecord, Option<Decided>, ActionTaken);

pub use kbha_core::ReplicationStatus;

/// The failover function, generic over its AWS dependencies.
pub struct FailoverFunction<D, A, S, N> {
    pub(crate) cfg: FailoverConfig,
    pub(crate) dns: D,
    pub(crate) alarms: A,
    pub(crate) store: S,
    pub(crate) notifier: N,
    pub(crate) policies: Policies,
}

/// What the "decide" step produced: the policy's input, its answer and the guardrails' verdict.
struct Decision {
    input: FailoverInput,
    decided: Decided,
    verdict: GuardrailVerdict,
    /// The stepped shift's part: its note, the reason a change carries, and what happens to
    /// the stored plan.
    plan: PlanEval,
    /// What the guardrails checked the policy's decision with.
    context: GuardrailContext,
}

/// What one evaluation does with the stepped shift under way (or one the policy starts).
struct PlanEval {
    /// For the decision record and the notice.
    note: Option<PlanNote>,
    /// Why the change is made (the plan's step or rollback, else the policy's reason).
    reason: String,
    /// Plan updates to record whatever happens (a step read off Route 53, an end observed).
    now: Vec<PlanUpdate>,
    /// Plan updates that hold only if the change is made (a step, a start, a rollback).
    with_change: Vec<PlanUpdate>,
}

/// What the "apply" step did.
enum Applied {
    /// Route 53 holds the new weights; the journal entry to finish.
    Changed(Box<PendingChange>),
    /// Nothing to change, refused, or dry-run.
    Nothing,
    /// The record set changed since it was read: observe and decide again.
    Conflict,
}

impl<D: Dns, A: Alarms, S: ObjectStore, N: Notifier> FailoverFunction<D, A, S, N> {
    /// Wires configuration, AWS adapters and policies.
    pub fn new(cfg: FailoverConfig, dns: D, alarms: A, store: S, notifier: N, policies: Policies) -> Self {
        FailoverFunction { cfg, dns, alarms, store, notifier, policies }
    }

    /// The configuration in use.
    pub fn config(&self) -> &FailoverConfig {
        &self.cfg
    }

    /// Handles one invocation: its event, decided at `inv.now_ms`; the records carry
    /// `inv.request_id`.
    pub async fn handle(&self, event: &Value, inv: Invocation) -> Result<Vec<DecisionRecord>, FailoverError> {
        let now_ms = inv.now_ms;
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
                    records.push(self.handle_one(Some(ev), None, &inv).await?);
                }
            }
            FailoverEvent::Schedule { event_id, .. } => records.push(self.handle_one(None, Some(event_id), &inv).await?),
        }
        Ok(records)
    }

    /// One alarm transition or tick: finish earlier work -> skip what is not news ->
    /// observe -> decide -> apply -> record and announce. A Route 53 conflict starts over
    /// from "observe" with what AWS says then.
    pub(crate) async fn handle_one(
        &self,
        ev: Option<AlarmEvent>,
        tick_id: Option<String>,
        inv: &Invocation,
    ) -> Result<DecisionRecord, FailoverError> {
        let now_ms = inv.now_ms;
        let event_id = ev.as_ref().map(|e| e.event_id.clone()).or(tick_id).unwrap_or_default();
        let alarm: Option<Alarm> = ev.map(|e| {
            let mut a = e.alarm;
            a.target = self.cfg.target_of_alarm(&a.name).map(|t| t.set_identifier.clone());
            a
        });
        let mut rec = self.new_record(&event_id, alarm.as_ref(), inv);
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
            let (stored, etag) = self.load_state().await?;
            if let Some(done) = self.finish_earlier(&stored, &event_id, rec.clone(), &me).await? {
                return Ok(done);
            }
            if let Some(done) = self.skip_if_not_news(&stored, &event_id, alarm.as_ref(), rec.clone(), &me).await? {
                return Ok(done);
            }
            let observed = self.observe(now_ms).await?;
            let mut seen = stored.state.clone();
            observed.note_alarms(&mut seen, alarm.as_ref());
            let conditions = observe::targets(&self.cfg, &observed, &seen);
            observed.note_conditions(&mut seen, &conditions);
            let targets = observe::targets(&self.cfg, &observed, &seen);
            rec.durations.gather_ms = ms(t_gather);
            if self.cfg.replication_status.is_some() {
                rec.replication = observed.replication();
            }
            if !observed.unknown_alarms.is_empty() {
                tracing::warn!(alarms = ?observed.unknown_alarms, "CloudWatch does not know these mapped alarms; using their last delivered transition");
            }

            let t_decide = Instant::now();
            let decision = self.decide(&event_id, alarm.as_ref(), targets, &seen, &stored, now_ms);
            rec.durations.decide_ms = ms(t_decide);
            rec.input = RecordedInput::of(&decision.input);
            rec.guardrail_context = Some(decision.context.clone());

            let t_act = Instant::now();
            rec.old_weights = weights_of(&decision.input.targets);
            rec.new_weights = rec.old_weights.clone();
            let applied = match self.apply(&decision, &observed, alarm.as_ref(), &stored, &mut rec, now_ms).await? {
                Applied::Conflict => continue,
                Applied::Changed(p) => Some(*p),
                Applied::Nothing => None,
            };
            rec.policy = Some(decision.decided);
            rec.guardrail = Some(decision.verdict);
            rec.plan = decision.plan.note;
            let plan_now = decision.plan.now;
            // Without a change nothing was written since the read: the record's write starts
            // from that read (conditional on its ETag).
            let known = applied.is_none().then(|| (stored.clone(), etag));
            let stored =
                self.record(&rec, applied.as_ref(), &plan_now, alarm.as_ref(), &observed, &conditions, &stored, known, &me, now_ms).await?;
            rec.notice_id = self.deliver(&event_id, &me, stored.clone()).await?;
            self.after_record(&stored, &me, now_ms).await;
            rec.durations.act_ms = ms(t_act);
            log_record(&rec);
            return Ok(rec);
        }
        Err(FailoverError::ConflictExhausted { attempts: self.cfg.max_attempts })
    }

    fn new_record(&self, event_id: &str, alarm: Option<&Alarm>, inv: &Invocation) -> DecisionRecord {
        let subject = format!("{} {}", self.cfg.record_name, self.cfg.record_type);
        DecisionRecord {
            header: RecordHeader::new("failover", event_id, inv, subject, None, ActionTaken::NoChange),
            alarm: alarm.map(|a| a.name.clone()),
            guardrail_context: None,
            plan: None,
            replication: vec![],
            old_weights: vec![],
            new_weights: vec![],
            change_id: None,
            attempts: 0,
            notice_id: None,
        }
    }

    /// Step "finish earlier work": a change or a notice this event left unfinished in an
    /// earlier invocation is finished instead of deciding again. `Some`: done.
    async fn finish_earlier(
        &self,
        stored: &StoredState,
        event_id: &str,
        mut rec: DecisionRecord,
        me: &str,
    ) -> Result<Option<DecisionRecord>, FailoverError> {
        if let Some(p) = stored.pending.iter().find(|p| p.event_id == event_id)
            && let Some(done) = self.resume(p, stored, rec.clone(), me).await?
        {
            return Ok(Some(done));
        }
        if let Some(o) = stored.outbox.iter().find(|o| o.event_id == event_id) {
            // An earlier attempt at this event decided and recorded; only its notice
            // is left to send.
            rec.action = o.action;
            rec.change_id = o.change_id.clone();
            rec.notice_id = self.deliver(event_id, me, stored.clone()).await?;
            log_record(&rec);
            return Ok(Some(rec));
        }
        Ok(None)
    }

    /// Step "skip what is not news": an alarm transition already handled, or older than
    /// what is recorded, changes nothing (the next tick reconciles anyway). `Some`: done.
    async fn skip_if_not_news(
        &self,
        stored: &StoredState,
        event_id: &str,
        alarm: Option<&Alarm>,
        mut rec: DecisionRecord,
        me: &str,
    ) -> Result<Option<DecisionRecord>, FailoverError> {
        let Some(a) = alarm else { return Ok(None) };
        let unfinished = stored.pending.iter().any(|p| p.event_id == event_id);
        match stored.state.freshness(event_id, a) {
            Freshness::New => return Ok(None),
            Freshness::Duplicate => {
                if unfinished {
                    // Our change lost to another copy of this transition, which
                    // recorded it: our intent is moot.
                    self.close_pending(event_id).await;
                }
                if let Some(o) = stored.outgoing(event_id, Some(a)) {
                    // Another copy staged the notice: see it sent (take it over
                    // if that copy died), never send a second one.
                    let theirs = o.event_id.clone();
                    rec.notice_id = self.deliver(&theirs, me, stored.clone()).await?;
                }
                rec.action = ActionTaken::SkippedDuplicate;
            }
            Freshness::Stale => {
                self.update_state(|s| {
                    s.state.record_alarm(a);
                    s.state.remember_event(event_id);
                    s.drop_pending(event_id);
                })
                .await?;
                rec.action = ActionTaken::SkippedStale;
            }
        }
        log_record(&rec);
        Ok(Some(rec))
    }

    /// Step "decide": the policy's answer on what was observed, checked by the guardrails
    /// and the operators' marks (a standing failback approval makes failback automatic for
    /// policy and guardrails; a drained target's share never rises).
    fn decide(
        &self,
        event_id: &str,
        alarm: Option<&Alarm>,
        targets: Vec<Target>,
        seen: &FailoverState,
        stored: &StoredState,
        now_ms: TimestampMs,
    ) -> Decision {
        let mut config = self.cfg.policy_parameters();
        let mut settings = self.cfg.guardrails();
        if stored.ops.approval(seen).is_some() {
            config.insert("failback".into(), "auto".into());
            settings.manual_failback = false;
        }
        if stored.ops.switched.is_some() {
            // An operator switched traffic over on purpose: no automatic return until they
            // switch back (`kbha ops switchover --to <primary>`); evacuations still go.
            config.insert("failback".into(), "manual".into());
            settings.manual_failback = true;
        }
        let input = FailoverInput {
            now_ms,
            event_id: event_id.to_owned(),
            trigger: alarm.cloned().map_or(FailoverTrigger::Schedule, FailoverTrigger::Alarm),
            record_name: self.cfg.record_name.clone(),
            targets,
            last_change: seen.last_change.clone(),
            config,
        };
        let mut decided = self.policies.decide(&input);
        let context = GuardrailContext { settings, drained: stored.ops.drained_ids().iter().map(|d| (*d).to_owned()).collect() };
        // The steps of `GuardrailContext::check`, apart, so the checks run once and the
        // verdict before the drain refusal says whether this was an evacuation.
        let checked = check_failover(&input, &decided.decision, settings);
        let evacuation = matches!(checked, GuardrailVerdict::Apply { kind: Move::Evacuation, .. });
        let verdict = refuse_onto_drained(&input.targets, checked, &stored.ops.drained_ids());
        if evacuation && matches!(verdict, GuardrailVerdict::Refused { .. }) {
            // The operator's drain keeps traffic on a down target: someone must choose now.
            let drained = stored.ops.drained_ids().join(", ");
            decided.decision.alerts.push(Alert {
                severity: Severity::Critical,
                summary: format!("kbha: traffic stays on a down target because `{drained}` is drained"),
                detail: format!(
                    "The policy would evacuate onto a drained target. Run `kbha ops undrain <target>` to let it, \
                     or `kbha ops shift` to move the traffic yourself. ({})",
                    decided.decision.reason
                ),
            });
        }
        let plan = self.with_plan(&input, &decided, &verdict, stored, now_ms);
        let verdict = plan.0;
        Decision { input, decided, verdict, plan: plan.1, context }
    }

    /// The stepped shift's part of the decision: with no plan under way, a policy's
    /// `shift-in-steps` that the guardrails let through starts one. With one under way,
    /// [`kbha_core::plan::progress`] says what is due: a rollback (checked by
    /// [`plan_guardrails`], so never held by the cooldown), the next step, waiting, or its
    /// end; a policy's own shift replaces it. Returns the verdict to act on.
    fn with_plan(
        &self,
        input: &FailoverInput,
        decided: &Decided,
        policy_verdict: &GuardrailVerdict,
        stored: &StoredState,
        now_ms: TimestampMs,
    ) -> (GuardrailVerdict, PlanEval) {
        let policy_reason = decided.decision.reason.clone();
        let drained = stored.ops.drained_ids();
        let check = |weights: &[Weight], reason: &str| {
            let d = FailoverDecision {
                action: FailoverAction::ShiftWeights { weights: weights.to_vec(), force: false },
                reason: reason.to_owned(),
                alerts: vec![],
            };
            refuse_onto_drained(&input.targets, check_failover(input, &d, plan_guardrails(self.cfg.guardrails())), &drained)
        };
        let applies = |v: &GuardrailVerdict| matches!(v, GuardrailVerdict::Apply { .. });
        // The policy's answer as it stands; a stepped shift it asks for starts a plan.
        let policy = || -> (GuardrailVerdict, PlanEval) {
            let mut eval = PlanEval { note: None, reason: policy_reason.clone(), now: vec![], with_change: vec![] };
            if let (FailoverAction::ShiftInSteps { weights, steps }, true) = (&decided.decision.action, applies(policy_verdict)) {
                let mut p = ActivePlan::new(
                    PlanKind::Return,
                    "kbha",
                    &policy_reason,
                    &input.targets,
                    complete(&input.targets, weights),
                    steps.clone(),
                    now_ms,
                );
                p.step = 1;
                p.step_at_ms = Some(now_ms);
                eval.reason = format!("{} of the {}: {policy_reason}", p.describe_step(1), p.title());
                eval.note = Some(PlanNote::new(&p, 1, None, eval.reason.clone()));
                eval.with_change.push(PlanUpdate::Set { plan: p });
            }
            (policy_verdict.clone(), eval)
        };
        let Some(plan) = &stored.plan else { return policy() };
        let end = |outcome: PlanOutcome, reason: &str| PlanUpdate::End {
            id: plan.id.clone(),
            outcome,
            reason: reason.to_owned(),
            by: "kbha".to_owned(),
        };
        let ended = |outcome: PlanOutcome, reason: String, on_change: bool| {
            let (v, mut eval) = policy();
            if on_change {
                eval.with_change.insert(0, end(outcome, &reason));
            } else {
                eval.now.push(end(outcome, &reason));
            }
            eval.note.get_or_insert_with(|| PlanNote::new(plan, plan.step, Some(outcome), reason));
            (v, eval)
        };
        let gate = (plan.kind == PlanKind::Switchover).then(|| self.cfg.rpo_s.saturating_mul(1000));
        let progress = progress(plan, &input.targets, gate, now_ms);
        // The policy moving traffic itself (an evacuation, a plan elsewhere) replaces the plan.
        let replaces = applies(policy_verdict)
            && match &decided.decision.action {
                FailoverAction::ShiftWeights { .. } => true,
                FailoverAction::ShiftInSteps { weights, .. } => complete(&input.targets, weights) != plan.to,
                FailoverAction::Hold => false,
            };
        match progress {
            Progress::Rollback { weights, reason } => {
                let v = check(&weights, &reason);
                if applies(&v) {
                    let eval = PlanEval {
                        note: Some(PlanNote::new(plan, 0, Some(PlanOutcome::RolledBack), reason.clone())),
                        with_change: vec![end(PlanOutcome::RolledBack, &reason)],
                        now: vec![],
                        reason,
                    };
                    return (v, eval);
                }
                let why = refusal_text(&v);
                ended(
                    PlanOutcome::Abandoned,
                    format!("{reason}, but the guardrails refused it ({why}); the plan ends and the policy decides"),
                    false,
                )
            }
            Progress::End { outcome, reason } => ended(outcome, reason, false),
            Progress::Wait { .. } | Progress::Advance { .. } if replaces => {
                ended(PlanOutcome::Superseded, format!("{} superseded by the policy: {policy_reason}", plan.title()), true)
            }
            Progress::Wait { step, step_at_ms, reason } => {
                let mut eval = PlanEval {
                    note: Some(PlanNote::new(plan, step, None, reason)),
                    reason: policy_reason,
                    now: vec![],
                    with_change: vec![],
                };
                if step != plan.step || step_at_ms != plan.step_at_ms {
                    let mut p = plan.clone();
                    p.step = step;
                    p.step_at_ms = step_at_ms;
                    eval.now.push(PlanUpdate::Set { plan: p });
                }
                let v = if matches!(policy_verdict, GuardrailVerdict::Refused { .. }) {
                    policy_verdict.clone()
                } else {
                    GuardrailVerdict::NoChange
                };
                (v, eval)
            }
            Progress::Advance { step, weights } => {
                let reason = format!("{} of the {}: {}", plan.describe_step(step), plan.title(), plan.reason);
                let v = check(&weights, &reason);
                let mut p = plan.clone();
                p.step = step;
                p.step_at_ms = Some(now_ms);
                let note = if applies(&v) {
                    PlanNote::new(&p, step, None, reason.clone())
                } else {
                    PlanNote::new(plan, plan.step, None, format!("{reason}: held ({})", refusal_text(&v)))
                };
                (v, PlanEval { note: Some(note), reason, now: vec![], with_change: vec![PlanUpdate::Set { plan: p }] })
            }
        }
    }

    /// Step "apply": the guardrails' verdict as a compare-and-swap over the whole record
    /// set, after journaling the intent (so a retry of this event can finish it whatever
    /// is lost after the batch).
    async fn apply(
        &self,
        decision: &Decision,
        observed: &Observed,
        alarm: Option<&Alarm>,
        stored: &StoredState,
        rec: &mut DecisionRecord,
        now_ms: TimestampMs,
    ) -> Result<Applied, FailoverError> {
        let (weights, forced, kind) = match &decision.verdict {
            GuardrailVerdict::NoChange => {
                rec.action = ActionTaken::NoChange;
                return Ok(Applied::Nothing);
            }
            GuardrailVerdict::Refused { refusals } => {
                tracing::warn!(refusals = ?refusals, "guardrails refused the policy's decision");
                rec.action = ActionTaken::Refused;
                return Ok(Applied::Nothing);
            }
            GuardrailVerdict::Apply { weights, forced, kind } => (weights, *forced, *kind),
        };
        if forced {
            tracing::error!(weights = ?weights, "BREAK-GLASS: moving traffic onto a target whose health check fails");
        }
        rec.new_weights = weights.clone();
        if self.cfg.dry_run {
            rec.action = ActionTaken::DryRun;
            return Ok(Applied::Nothing);
        }
        if let Some(p) = &stored.ops.paused {
            tracing::warn!(by = %p.by, reason = %p.reason, r#move = ?kind, weights = ?weights, "paused by an operator; the change is held");
            rec.action = ActionTaken::Paused;
            return Ok(Applied::Nothing);
        }
        tracing::info!(r#move = ?kind, weights = ?weights, "applying");
        let mut planned = rec.clone();
        planned.action = ActionTaken::Applied;
        planned.policy = Some(decision.decided.clone());
        planned.guardrail = Some(decision.verdict.clone());
        planned.plan = decision.plan.note.clone();
        let notice = self.build_notice(&planned, alarm, &stored.state.standing_alerts, now_ms);
        let reason = decision.plan.reason.clone();
        let plan_mark = decision.plan.note.as_ref().filter(|_| !decision.plan.with_change.is_empty()).map(|n| {
            if n.outcome == Some(PlanOutcome::RolledBack) {
                format!("{}: rollback", n.id)
            } else {
                format!("{}: step {} of {}", n.id, n.step, n.of)
            }
        });
        let entry = ChangeEntry {
            at_ms: now_ms,
            change_id: None,
            by: "kbha".to_owned(),
            event_id: rec.event_id.clone(),
            kind,
            from: rec.old_weights.clone(),
            to: weights.clone(),
            reason: reason.clone(),
            rpo_ms: ledger::rpo_of(&decision.input.targets, &rec.old_weights, weights),
            insync_at_ms: None,
            late_alerted: false,
            planned: plan_mark.is_some() && decision.plan.note.as_ref().is_some_and(|n| n.kind == PlanKind::Switchover),
            plan: plan_mark,
        };
        let intent = PendingChange {
            event_id: rec.event_id.clone(),
            at_ms: now_ms,
            alarm: alarm.cloned(),
            from: rec.old_weights.clone(),
            to: weights.clone(),
            entry: Some(entry),
            plan: decision.plan.with_change.clone(),
            reason: reason.clone(),
            seen_last_change: stored.state.last_change.clone(),
            applied: false,
            change_id: None,
            notice: notice.unwrap_or_else(|| Notice { subject: String::new(), message: Value::Null, attributes: BTreeMap::new() }),
        };
        self.update_state(|s| s.put_pending(intent.clone())).await?;
        match self.swap(&observed.records, weights, &reason, &rec.event_id).await {
            Ok(change_id) => {
                rec.change_id = Some(change_id);
                rec.action = ActionTaken::Applied;
                Ok(Applied::Changed(Box::new(intent)))
            }
            Err(AwsError::Conflict { message, .. }) => {
                // Either another writer changed the records, or our own batch landed and
                // its answer was lost (the SDK's retry then conflicts): the next attempt's
                // journal check tells.
                tracing::info!(attempt = rec.attempts, "route 53 records changed since read ({message}); re-reading and deciding again");
                Ok(Applied::Conflict)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Step "record": one conditional write notes the observations, the decision, the
    /// standing alerts, and stages the notice (so of two copies of this transition only the
    /// first stages one). Returns the state as written.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        rec: &DecisionRecord,
        applied: Option<&PendingChange>,
        plan_now: &[PlanUpdate],
        alarm: Option<&Alarm>,
        observed: &Observed,
        conditions: &[Target],
        stored: &StoredState,
        known: Option<(StoredState, Option<String>)>,
        me: &str,
        now_ms: TimestampMs,
    ) -> Result<StoredState, FailoverError> {
        // A change's notice was built with its intent; any other decision's now.
        let notice = if applied.is_none() { self.build_notice(rec, alarm, &stored.state.standing_alerts, now_ms) } else { None };
        let standing = announce::standing_keys(rec);
        let current = announce::conditions(rec);
        // The condition the decision's own notice is the alert of, if any.
        let headline = notice.as_ref().and_then(|n| n.message["dedup_key"].as_str()).map(str::to_owned);
        let mine = Claim::new(me, kbha_lambda::lambda::now_ms());
        // Route 53's word on earlier changes, for the ledger (read before the write).
        let just_made = applied.and(rec.change_id.as_deref());
        let statuses = self.change_statuses(stored, just_made, now_ms).await;
        let after = ledger::with_weights(conditions, if rec.action == ActionTaken::Applied { &rec.new_weights } else { &rec.old_weights });
        let alarm_marks = self.alarm_marks(observed);
        self.update_state_from(known, |s| {
            // Open the incident on what was seen before this change, so the change that
            // answers a first failure is part of it.
            let under_way = s.plan.is_some();
            ledger::observe_with_plan(&mut s.incident, &self.cfg.record_name, conditions, &alarm_marks, under_way, now_ms);
            for u in plan_now {
                crate::plan::apply(s, u, now_ms);
            }
            match applied {
                Some(p) => s.finish(p, rec.change_id.as_deref(), &mine),
                None => {
                    if let Some(notice) = &notice {
                        let o = Outgoing {
                            event_id: rec.event_id.clone(),
                            alarm: alarm.cloned(),
                            action: rec.action,
                            change_id: None,
                            notice: notice.clone(),
                            claim: mine.clone(),
                        };
                        s.stage(o, false);
                    }
                    s.drop_pending(&rec.event_id);
                }
            }
            for o in self.track_conditions(s, rec, &current, headline.as_deref(), &mine, now_ms) {
                s.stage(o, true);
            }
            observed.note_alarms(&mut s.state, alarm);
            observed.note_conditions(&mut s.state, conditions);
            s.state.standing_alerts = standing.clone();
            if alarm.is_some() {
                s.state.remember_event(&rec.event_id);
            }
            let under_way = s.plan.is_some();
            ledger::observe_with_plan(&mut s.incident, &self.cfg.record_name, &after, &alarm_marks, under_way, now_ms);
            // A switchover's hold on returns ends once traffic is back on the primary alone,
            // so a game day's mark never holds a later incident's failback.
            let primary_alone = after.iter().all(|t| t.primary == (t.weight > 0));
            if !under_way && primary_alone {
                s.ops.switched = None;
            }
            for late in ops::note_statuses(s, &statuses, now_ms, self.cfg.insync_alert_ms()) {
                if let Some(o) = self.late_change_notice(&late, &mine, now_ms) {
                    s.stage(o, true);
                }
            }
        })
        .await
    }

    /// After the decision is recorded and announced: send the "change not INSYNC" notices
    /// and the standing conditions' own notices (start, reminder, resolution) staged by
    /// this invocation, or left by one whose claim ran out, and copy the incident to its
    /// ledger object. Best effort: all stay in the state object for the next invocation if
    /// this fails.
    async fn after_record(&self, stored: &StoredState, me: &str, now_ms: TimestampMs) {
        let wall = kbha_lambda::lambda::now_ms();
        let extra: Vec<String> = stored
            .outbox
            .iter()
            .filter(|o| o.event_id.starts_with(announce::LATE_PREFIX) || o.event_id.starts_with(announce::CONDITION_PREFIX))
            .filter(|o| o.claim.by == me || o.claim.holder(me, wall) == claim::Holder::Free)
            .map(|o| o.event_id.clone())
            .collect();
        for id in extra {
            if let Err(e) = self.deliver(&id, me, stored.clone()).await {
                tracing::warn!(event_id = %id, "could not send the notice; the next invocation retries: {e}");
            }
        }
        if let Err(e) = self.flush_ledger(stored, now_ms).await {
            tracing::warn!("could not write the incident ledger; the next invocation retries: {e}");
        }
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
                || stored.pending.iter().any(|o| o.event_id != p.event_id && o.to == p.to && (o.at_ms - p.at_ms).abs() <= RIVAL_WINDOW_MS);
            if !landed || rival {
                tracing::info!(event_id = %p.event_id, landed, rival, "an earlier attempt's change did not land (or is not ours); deciding again");
                return Ok(None);
            }
            tracing::warn!(event_id = %p.event_id, "an earlier attempt changed route 53 but did not finish; recording it and sending its notice");
        }
        // (A journal entry marked applied comes from a version that kept entries until
        // their notice was out; finishing it stages that notice.)
        let mine = Claim::new(me, kbha_lambda::lambda::now_ms());
        let stored = self.update_state(|s| s.finish(p, None, &mine)).await?;
        rec.change_id = p.change_id.clone();
        rec.notice_id = self.deliver(&p.event_id, me, stored).await?;
        log_record(&rec);
        Ok(Some(rec))
    }

    /// Removes a moot change's journal entry. Best effort: a leftover entry is checked
    /// against Route 53 by a redelivery of its event.
    async fn close_pending(&self, event_id: &str) {
        if let Err(e) = self.update_state(|s| s.drop_pending(event_id)).await {
            tracing::warn!(event_id, "could not clear the finished change from the state object: {e}");
        }
    }

    /// Reads the state object; a missing object is the empty state.
    pub(crate) async fn load_state(&self) -> Result<(StoredState, Option<String>), FailoverError> {
        let key = self.cfg.state_key();
        match self.store.get(&self.cfg.state.bucket, &key).await? {
            None => Ok((StoredState::default(), None)),
            Some(obj) => serde_json::from_slice(&obj.bytes).map(|s| (s, Some(obj.etag))).map_err(|e| FailoverError::CorruptState {
                bucket: self.cfg.state.bucket.clone(),
                key,
                message: e.to_string(),
            }),
        }
    }

    /// Applies `update` to the freshest state and writes it with If-Match (or
    /// If-None-Match for the first write); on a lost race, re-reads and re-applies.
    /// Updates are merges (newest alarm wins, events remembered), so order is immaterial.
    /// Returns the state as written (or found, when the update changed nothing).
    pub(crate) async fn update_state(&self, update: impl Fn(&mut StoredState)) -> Result<StoredState, FailoverError> {
        self.update_state_from(None, update).await
    }

    /// [`Self::update_state`], starting from `known` (a state and its ETag this invocation
    /// read and has not written since) instead of reading it again: the write is conditional
    /// on that ETag, so a state changed meanwhile fails it and the loop re-reads, as before.
    /// Saves one S3 read on every invocation that decides without a change (every idle tick).
    pub(crate) async fn update_state_from(
        &self,
        mut known: Option<(StoredState, Option<String>)>,
        update: impl Fn(&mut StoredState),
    ) -> Result<StoredState, FailoverError> {
        let key = self.cfg.state_key();
        for _ in 0..STATE_WRITE_ATTEMPTS {
            let (mut state, etag) = match known.take() {
                Some(k) => k,
                None => self.load_state().await?,
            };
            let before = state.clone();
            update(&mut state);
            if etag.is_some() && state == before {
                return Ok(state);
            }
            let body = serde_json::to_vec_pretty(&state)
                .map_err(|e| AwsError::Invalid { operation: "PutObject", message: format!("cannot serialise state: {e}") })?;
            let cond = etag.map_or(PutCondition::IfNoneMatch, PutCondition::IfMatch);
            match self.store.put(&self.cfg.state.bucket, &key, body, cond).await {
                Ok(_) => return Ok(state),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(FailoverError::ConflictExhausted { attempts: STATE_WRITE_ATTEMPTS })
    }

    /// One batch: DELETE each changed record exactly as read, CREATE it with its new weight.
    pub(crate) async fn swap(
        &self,
        records: &[WeightedRecord],
        weights: &[Weight],
        reason: &str,
        event_id: &str,
    ) -> Result<String, AwsError> {
        // The guardrails only pass weights for targets of this record set.
        let swaps =
            kbha_aws::swaps_for_weights(records, weights.iter().map(|w| (w.set_identifier.as_str(), w.weight))).map_err(|unknown| {
                AwsError::Invalid { operation: "ChangeResourceRecordSets", message: format!("unknown targets {unknown:?}") }
            })?;
        let mut comment = format!("kbha failover ({event_id}): {reason}");
        // Route 53 limits the batch comment to 256 characters.
        if comment.chars().count() > 256 {
            comment = comment.chars().take(253).collect::<String>() + "...";
        }
        self.dns.swap_records(&self.cfg.hosted_zone_id, &swaps, &comment).await
    }
}

/// A refusal verdict's reasons, in words.
fn refusal_text(v: &GuardrailVerdict) -> String {
    match v {
        GuardrailVerdict::Refused { refusals } => refusals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        GuardrailVerdict::NoChange => "nothing to change".to_owned(),
        GuardrailVerdict::Apply { .. } => String::new(),
    }
}

fn weights_of(targets: &[Target]) -> Vec<Weight> {
    targets.iter().map(|t| Weight { set_identifier: t.set_identifier.clone(), weight: t.weight }).collect()
}

fn log_record(rec: &DecisionRecord) {
    match serde_json::to_string(rec) {
        // One bare JSON line on stdout: CloudWatch Logs keeps it as is, so Logs Insights
        // and the drill can parse it.
        Ok(line) => println!("{line}"),
        Err(e) => tracing::error!("cannot serialise decision record: {e}"),
    }
}
