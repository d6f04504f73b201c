//! Operator control: what a person can do to a live deployment (`kbha ops ...`), and the
//! marks those commands leave in the state object for the function to honour.
//!
//! Every command writes through the state object with the same conditional writes the
//! function uses (the two can race: one write wins, the other re-reads and re-applies), so
//! nothing either does is lost. A command records the caller's identity in the state
//! object, in the open incident's ledger, in a decision record (stdout) and in a notice.
//!
//! | mark | set by | what the function does |
//! |---|---|---|
//! | paused | `pause` / `resume` | observes and records as usual, changes nothing; announces a held change once |
//! | drained | `drain` / `undrain` | never raises a drained target's share ([`kbha_core::guardrails::Refusal::Drained`]) |
//! | failback approval | `approve-failback` | with `KBHA_FAILBACK=manual`, lets the next return through (policy and guardrails see `auto`) until a target fails again |
//! | switched over | `switchover --to <not the primary>` / `switchover --to <primary>`, `abort` | takes the plan's steps; then holds automatic returns (policy and guardrails see `manual`); evacuations still go |

use std::collections::BTreeMap;

use kbha_aws::{Alarms, AwsError, ChangeStatus, Dns, Notifier, ObjectStore};
use kbha_core::guardrails::{GuardrailSettings, GuardrailVerdict, Move, check_failover, refuse_onto_drained};
use kbha_core::state::FailoverState;
use kbha_core::time::format_timestamp;
use kbha_core::{Condition, FailoverAction, FailoverDecision, FailoverInput, FailoverTrigger, LastChange, Target, TimestampMs, Weight};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::handler::{FailoverError, FailoverFunction};
use crate::journal::StoredState;
use crate::ledger::{self, ChangeEntry, Incident, IncidentFigures, OperatorAction};
use crate::observe;
use crate::plan::PlanUpdate;
use kbha_core::PlanStep;
use kbha_core::plan::{ActivePlan, PlanKind, PlanOutcome};

/// Recent changes and operator actions the state object keeps for `kbha ops status`.
pub(crate) const RECENT: usize = 20;

/// An operator's mark: who, why, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Caller identity (ARN).
    pub by: String,
    /// The reason given.
    pub reason: String,
    /// When.
    pub at_ms: TimestampMs,
}

/// The operators' marks in the state object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpsState {
    /// Paused: the function changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Mark>,
    /// Drained targets, by set identifier.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drained: BTreeMap<String, Mark>,
    /// An approval of the next failback (manual failback mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_approval: Option<Mark>,
    /// An operator switched traffic over to a target that is not the primary (`kbha ops
    /// switchover`): no automatic return until they switch back or abort. Evacuations go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched: Option<Mark>,
}

impl OpsState {
    /// Nothing set (so an untouched state object does not grow an `ops` field).
    pub fn is_empty(&self) -> bool {
        *self == OpsState::default()
    }

    /// The drained targets' set identifiers.
    pub fn drained_ids(&self) -> Vec<&str> {
        self.drained.keys().map(String::as_str).collect()
    }

    /// The failback approval if it still stands: it lapses when any target is seen down
    /// after it was given (the operator approved returning to a target that has since
    /// failed again: they must look again).
    pub fn approval<'a>(&'a self, history: &FailoverState) -> Option<&'a Mark> {
        self.failback_approval.as_ref().filter(|a| history.history.values().all(|h| h.last_down_at_ms.is_none_or(|d| d <= a.at_ms)))
    }
}

/// One operator command, as `kbha ops` asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Stop all automatic changes.
    Pause {
        /// Why.
        reason: String,
    },
    /// Let the function change weights again.
    Resume,
    /// Maintenance: move traffic off the target (if it has any) and never give it traffic
    /// automatically.
    Drain {
        /// Set identifier.
        target: String,
        /// Why.
        reason: String,
    },
    /// End a drain (traffic comes back through the function's usual return rules).
    Undrain {
        /// Set identifier.
        target: String,
    },
    /// With manual failback: let the next evaluation return traffic.
    ApproveFailback,
    /// A manual change through the guardrails and compare-and-swap.
    Shift {
        /// Move all traffic to this target (weight: the largest current weight, or 100).
        to: Option<String>,
        /// Or these weights (every target not named keeps its weight).
        weights: Vec<Weight>,
        /// Onto a target whose health check fails: needs `KBHA_BREAK_GLASS=true`.
        force: bool,
        /// Why.
        reason: String,
    },
    /// Close the open incident by hand.
    CloseIncident {
        /// Why.
        reason: String,
    },
    /// A planned switchover: move all traffic to a target observed up, in steps, through
    /// the same machinery as a stepped return (bake, rollback, RPO gate before the first
    /// step). To a target that is not the primary, automatic returns are then held until an
    /// operator switches back.
    Switchover {
        /// Destination (set identifier).
        to: String,
        /// Steps (percent, rising to 100) and their bake times.
        steps: Vec<PlanStep>,
        /// Why.
        reason: String,
    },
    /// Stop the stepped shift under way and put the weights back to where it started.
    /// Automatic returns are then held until an operator switches over again.
    Abort {
        /// Why.
        reason: String,
    },
}

impl Command {
    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Pause { .. } => "pause",
            Command::Resume => "resume",
            Command::Drain { .. } => "drain",
            Command::Switchover { .. } => "switchover",
            Command::Abort { .. } => "abort",
            Command::Undrain { .. } => "undrain",
            Command::ApproveFailback => "approve-failback",
            Command::Shift { .. } => "shift",
            Command::CloseIncident { .. } => "close-incident",
        }
    }
}

/// Why a command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The function's own error (AWS, state object, record set).
    #[error(transparent)]
    Failover(#[from] FailoverError),
    /// The command names a target that is not configured.
    #[error("no target `{0}` in KBHA_TARGETS; `kbha ops status` lists them")]
    UnknownTarget(String),
    /// The guardrails refused the manual change.
    #[error("the guardrails refused the change: {0}")]
    Refused(String),
    /// The command makes no sense in the current state.
    #[error("{0}")]
    Invalid(String),
}

impl From<AwsError> for OpsError {
    fn from(e: AwsError) -> Self {
        OpsError::Failover(e.into())
    }
}

/// What a command did.
#[derive(Debug, Clone, Serialize)]
pub struct OpsRecord {
    /// Always `kbha.decision`.
    pub record: &'static str,
    /// Always `ops`.
    pub function: &'static str,
    /// The command.
    pub command: String,
    /// Caller identity.
    pub by: String,
    /// When.
    pub now: String,
    /// The record set.
    pub subject: String,
    /// What it did, in words.
    pub detail: String,
    /// Weights before and after, for a change.
    pub old_weights: Vec<Weight>,
    /// Weights after.
    pub new_weights: Vec<Weight>,
    /// Route 53 change id, for a change.
    pub change_id: Option<String>,
    /// Forced onto a failing target under break-glass.
    pub forced: bool,
    /// SNS message id of the notice.
    pub notice_id: Option<String>,
}

/// One target as `kbha ops status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    /// Set identifier.
    pub set_identifier: String,
    /// Region.
    pub region: String,
    /// The primary.
    pub primary: bool,
    /// Weight in Route 53.
    pub weight: u32,
    /// Share of traffic, percent.
    pub share_percent: f64,
    /// Up, down or unproven, as the function sees it.
    pub condition: Condition,
    /// The whole target as the policy sees it (health, alarm state, history, replication age).
    pub detail: Target,
    /// Drained by an operator.
    pub drained: Option<Mark>,
}

/// One mapped alarm as `kbha ops status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmView {
    /// Alarm name.
    pub name: String,
    /// Target.
    pub target: String,
    /// State.
    pub state: String,
    /// Since.
    pub since: String,
}

/// What `kbha ops status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The record set.
    pub record_name: String,
    /// When read.
    pub now: String,
    /// Targets, in configuration order.
    pub targets: Vec<TargetStatus>,
    /// The mapped alarms, as CloudWatch reports them now.
    pub alarms: Vec<AlarmView>,
    /// Paused, by whom and why.
    pub paused: Option<Mark>,
    /// The failback approval, if it stands.
    pub failback_approval: Option<Mark>,
    /// Manual failback configured.
    pub manual_failback: bool,
    /// Dry-run configured.
    pub dry_run: bool,
    /// Recent changes, newest last, with who made them.
    pub recent_changes: Vec<ChangeEntry>,
    /// Recent operator actions, newest last.
    pub recent_actions: Vec<OperatorAction>,
    /// The open incident, and its figures so far.
    pub incident: Option<(Incident, IncidentFigures)>,
    /// Changes whose notice is staged and not yet sent (should be 0).
    pub unsent_notices: usize,
    /// The last decision's standing alerts.
    pub standing_alerts: Vec<String>,
    /// The stepped shift under way (a return or a switchover).
    pub plan: Option<ActivePlan>,
    /// Automatic returns held after a switchover or an abort, by whom and why.
    pub switched: Option<Mark>,
}

/// Route 53 share of each weight, percent (all-zero: even).
fn shares(weights: &[u32]) -> Vec<f64> {
    let total: u32 = weights.iter().sum();
    weights.iter().map(|w| if total == 0 { 100.0 / weights.len() as f64 } else { f64::from(*w) * 100.0 / f64::from(total) }).collect()
}

impl<D: Dns, A: Alarms, S: ObjectStore, N: Notifier> FailoverFunction<D, A, S, N> {
    /// What kbha sees now: read from AWS and the state object, nothing written.
    pub async fn status(&self, now_ms: TimestampMs) -> Result<Status, FailoverError> {
        let (stored, _) = self.load_state().await?;
        let observed = self.observe(now_ms).await?;
        let (seen, targets) = self.view(&stored, &observed);
        let sh = shares(&targets.iter().map(|t| t.weight).collect::<Vec<_>>());
        Ok(Status {
            record_name: self.cfg.record_name.clone(),
            now: format_timestamp(now_ms),
            targets: targets
                .iter()
                .zip(sh)
                .map(|(t, share)| TargetStatus {
                    set_identifier: t.set_identifier.clone(),
                    region: t.region.clone(),
                    primary: t.primary,
                    weight: t.weight,
                    share_percent: share,
                    condition: t.condition(),
                    detail: t.clone(),
                    drained: stored.ops.drained.get(&t.set_identifier).cloned(),
                })
                .collect(),
            alarms: observed
                .alarms
                .iter()
                .map(|(a, target)| AlarmView {
                    name: a.name.clone(),
                    target: target.clone(),
                    state: a.state.as_cloudwatch().to_owned(),
                    since: format_timestamp(a.since_ms),
                })
                .collect(),
            paused: stored.ops.paused.clone(),
            failback_approval: stored.ops.approval(&seen).cloned(),
            manual_failback: self.cfg.failback == crate::config::Failback::Manual,
            dry_run: self.cfg.dry_run,
            recent_changes: stored.changes.clone(),
            recent_actions: stored.actions.clone(),
            incident: stored.incident.clone().filter(|i| i.closed_at_ms.is_none()).map(|i| {
                let f = i.figures(now_ms);
                (i, f)
            }),
            unsent_notices: stored.outbox.len(),
            standing_alerts: stored.state.standing_alerts.clone(),
            plan: stored.plan.clone(),
            switched: stored.ops.switched.clone(),
        })
    }

    /// Every incident in the ledger (the state object's copy where it is newer, so an
    /// incident not yet written shows too), oldest first.
    pub async fn incidents(&self) -> Result<Vec<Incident>, FailoverError> {
        let prefix = format!("{}{}", self.cfg.state.prefix, ledger::LEDGER_DIR);
        let bucket = &self.cfg.state.bucket;
        let mut out: Vec<Incident> = Vec::new();
        for key in self.store.list(bucket, &prefix).await? {
            let key = key.key;
            let Some(obj) = self.store.get(bucket, &key).await? else { continue };
            let inc: Incident = serde_json::from_slice(&obj.bytes).map_err(|e| FailoverError::CorruptState {
                bucket: bucket.clone(),
                key: key.clone(),
                message: format!("ledger object: {e}"),
            })?;
            out.push(inc);
        }
        let (stored, _) = self.load_state().await?;
        if let Some(mine) = stored.incident {
            match out.iter_mut().find(|i| i.id == mine.id) {
                Some(i) if i.revision < mine.revision => *i = mine,
                Some(_) => {}
                None => out.push(mine),
            }
        }
        out.sort_by_key(|i| i.opened_at_ms);
        Ok(out)
    }

    /// Runs one operator command as `by` (the caller's identity) at `now_ms`: writes the
    /// state object (and Route 53 for a change), the ledger, sends a notice, and returns
    /// what it did (also printed as a decision record on stdout).
    pub async fn operate(&self, by: &str, command: &Command, now_ms: TimestampMs) -> Result<OpsRecord, OpsError> {
        let mut rec = OpsRecord {
            record: "kbha.decision",
            function: "ops",
            command: command.name().to_owned(),
            by: by.to_owned(),
            now: format_timestamp(now_ms),
            subject: format!("{} {}", self.cfg.record_name, self.cfg.record_type),
            detail: String::new(),
            old_weights: vec![],
            new_weights: vec![],
            change_id: None,
            forced: false,
            notice_id: None,
        };
        let mark = |reason: &str| Mark { by: by.to_owned(), reason: reason.to_owned(), at_ms: now_ms };
        let known = |t: &str| {
            if self.cfg.targets.iter().any(|c| c.set_identifier == t) { Ok(()) } else { Err(OpsError::UnknownTarget(t.to_owned())) }
        };
        let mut change: Option<ChangeEntry> = None;
        let detail = match command {
            Command::Pause { reason } => {
                let m = mark(reason);
                self.update_state(|s| {
                    s.ops.paused.get_or_insert_with(|| m.clone());
                })
                .await?;
                format!("paused: the function changes nothing until `kbha ops resume` ({reason})")
            }
            Command::Resume => {
                self.update_state(|s| s.ops.paused = None).await?;
                "resumed: the function decides and changes weights again".to_owned()
            }
            Command::Drain { target, reason } => {
                known(target)?;
                let m = mark(reason);
                self.update_state(|s| {
                    s.ops.drained.entry(target.clone()).or_insert_with(|| m.clone());
                })
                .await?;
                // Move its traffic off now, through the guardrails. The mark is set first, so
                // the function cannot hand traffic back meanwhile; if the move fails, the mark
                // stays, and the failure is recorded and announced like the drain itself.
                let moved = match self.drain_shift(target, now_ms).await {
                    Ok(Some(w)) => {
                        self.manual_change(by, command, &w, false, &format!("drain `{target}`: {reason}"), now_ms, &mut rec).await.map(Some)
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                };
                match moved {
                    Ok(Some(c)) => {
                        change = Some(c);
                        format!("drained `{target}`: its traffic moved off and it gets none automatically ({reason})")
                    }
                    Ok(None) => format!("drained `{target}`: it carried no traffic and gets none automatically ({reason})"),
                    Err(e) => {
                        rec.detail = format!(
                            "drained `{target}` ({reason}), but its traffic could not be moved off: {e}; \
                             it gets no traffic automatically, `kbha ops shift` or `kbha ops undrain {target}`"
                        );
                        self.finish_command(by, command, &rec, None, now_ms).await?;
                        return Err(e);
                    }
                }
            }
            Command::Undrain { target } => {
                known(target)?;
                self.update_state(|s| {
                    s.ops.drained.remove(target);
                })
                .await?;
                format!("undrained `{target}`: the function may give it traffic again, by its usual return rules")
            }
            Command::ApproveFailback => {
                if self.cfg.failback != crate::config::Failback::Manual {
                    return Err(OpsError::Invalid("failback is automatic (KBHA_FAILBACK=auto); there is nothing to approve".to_owned()));
                }
                let m = mark("approved");
                self.update_state(|s| s.ops.failback_approval = Some(m.clone())).await?;
                "failback approved: the next evaluation returns traffic if the primary is still up (the approval lapses if a target fails first)".to_owned()
            }
            Command::Shift { to, weights, force, reason } => {
                let w = self.shift_weights(to.as_deref(), weights).await?;
                let c = self.manual_change(by, command, &w, *force, reason, now_ms, &mut rec).await?;
                let d = format!("shifted by hand: {} ({reason})", describe(&c.to));
                change = Some(c);
                d
            }
            Command::Switchover { to, steps, reason } => {
                known(to)?;
                let (d, c) = self.switchover(by, to, steps, reason, now_ms, &mut rec).await?;
                change = c;
                d
            }
            Command::Abort { reason } => {
                let (stored, _) = self.load_state().await?;
                let Some(plan) = stored.plan.clone() else {
                    return Err(OpsError::Invalid("no stepped shift is under way; there is nothing to abort".to_owned()));
                };
                let title = plan.title();
                let end = PlanUpdate::End {
                    id: plan.id.clone(),
                    outcome: PlanOutcome::Aborted,
                    reason: format!("{title} aborted at {}: {reason}", plan.describe_step(plan.step)),
                    by: by.to_owned(),
                };
                // End it first, so the function takes no further step meanwhile; returns are
                // held until an operator moves traffic on purpose.
                let m = mark(&format!("{title} aborted: {reason}"));
                self.update_state(|s| {
                    crate::plan::apply(s, &end, now_ms);
                    s.ops.switched = Some(m.clone());
                })
                .await?;
                let observed = self.observe(now_ms).await?;
                let current: Vec<Weight> =
                    observed.records.iter().map(|r| Weight { set_identifier: r.set_identifier.clone(), weight: r.weight }).collect();
                let back = plan.from.iter().all(|w| current.iter().any(|c| c.set_identifier == w.set_identifier && c.weight == w.weight));
                if back {
                    format!("{title} aborted before it moved traffic; automatic returns held until `kbha ops switchover` ({reason})")
                } else {
                    match self.manual_change(by, command, &plan.from, false, &format!("abort: {reason}"), now_ms, &mut rec).await {
                        Ok(c) => {
                            let d = format!(
                                "{title} aborted: weights back to {} as before it; automatic returns held until `kbha ops switchover` ({reason})",
                                describe(&c.to)
                            );
                            change = Some(c);
                            d
                        }
                        Err(e) => {
                            rec.detail = format!(
                                "{title} aborted (no further steps), but the weights could not go back to {}: {e}; `kbha ops shift` moves them",
                                describe(&plan.from)
                            );
                            self.finish_command(by, command, &rec, None, now_ms).await?;
                            return Err(e);
                        }
                    }
                }
            }
            Command::CloseIncident { reason } => {
                let (stored, _) = self.load_state().await?;
                if stored.incident.as_ref().is_none_or(|i| i.closed_at_ms.is_some()) {
                    return Err(OpsError::Invalid("there is no open incident to close".to_owned()));
                }
                self.update_state(|s| {
                    if let Some(i) = s.incident.as_mut() {
                        i.close(now_ms, by);
                    }
                })
                .await?;
                format!("incident closed by hand ({reason})")
            }
        };
        rec.detail = detail;
        rec.notice_id = self.finish_command(by, command, &rec, change.as_ref(), now_ms).await?;
        Ok(rec)
    }

    /// `kbha ops switchover`: stores the plan (and a planned event in the ledger when no
    /// incident is open), then runs one evaluation at once, as a tick would, which takes the
    /// first step if the RPO gate and the guardrails allow. Later steps come with the ticks.
    async fn switchover(
        &self,
        by: &str,
        to: &str,
        steps: &[PlanStep],
        reason: &str,
        now_ms: TimestampMs,
        rec: &mut OpsRecord,
    ) -> Result<(String, Option<ChangeEntry>), OpsError> {
        kbha_core::plan::validate_steps(steps).map_err(|e| OpsError::Invalid(format!("--steps: {e}")))?;
        let (stored, _) = self.load_state().await?;
        if let Some(p) = &stored.plan {
            return Err(OpsError::Invalid(format!("a {} is under way ({}); `kbha ops abort` it first", p.title(), p.id)));
        }
        if stored.ops.drained.contains_key(to) {
            return Err(OpsError::Invalid(format!("`{to}` is drained; `kbha ops undrain {to}` first")));
        }
        let observed = self.observe(now_ms).await?;
        let (_, targets) = self.view(&stored, &observed);
        let Some(dest) = targets.iter().find(|t| t.set_identifier == to) else {
            return Err(OpsError::UnknownTarget(to.to_owned()));
        };
        if dest.condition() != Condition::Up {
            return Err(OpsError::Invalid(
                format!("`{to}` is {:?} now; a switchover goes only to a target observed up", dest.condition()).to_lowercase(),
            ));
        }
        let weight = targets.iter().map(|t| t.weight).max().filter(|w| *w > 0).unwrap_or(100);
        let dest_weights: Vec<Weight> = targets
            .iter()
            .map(|t| Weight { set_identifier: t.set_identifier.clone(), weight: if t.set_identifier == to { weight } else { 0 } })
            .collect();
        if targets.iter().zip(&dest_weights).all(|(t, w)| t.weight == w.weight) {
            return Err(OpsError::Invalid(format!("all traffic is on `{to}` already; nothing to switch over")));
        }
        let plan = ActivePlan::new(PlanKind::Switchover, by, reason, &targets, dest_weights, steps.to_vec(), now_ms);
        let to_primary = dest.primary;
        let m = Mark { by: by.to_owned(), reason: format!("switchover to `{to}`: {reason}"), at_ms: now_ms };
        let written = self
            .update_state(|s| {
                if s.plan.is_some() {
                    return;
                }
                s.plan = Some(plan.clone());
                s.ops.switched = if to_primary { None } else { Some(m.clone()) };
                if s.incident.is_none() {
                    s.incident = Some(ledger::planned_event(&self.cfg.record_name, &plan.id, to, now_ms));
                }
            })
            .await?;
        if written.plan.as_ref().is_none_or(|p| p.id != plan.id) {
            return Err(OpsError::Invalid("another stepped shift started meanwhile; see `kbha ops status`".to_owned()));
        }
        let tick = json!({
            "source": "kbha.ops",
            "detail-type": "Scheduled Event",
            "id": format!("ops-switchover-{now_ms}"),
            "time": format_timestamp(now_ms),
        });
        // Run by `kbha ops switchover`, not by Lambda: no request id.
        let first = self.handle(&tick, kbha_lambda::record::Invocation::at(now_ms)).await?;
        let first = first.into_iter().next();
        let summary = format!(
            "{} in {} steps ({}); {}",
            plan.title(),
            plan.steps.len(),
            plan.steps.iter().map(|s| format!("{} %", s.percent)).collect::<Vec<_>>().join(", "),
            reason
        );
        let (stored, _) = self.load_state().await?;
        let change = first
            .as_ref()
            .filter(|r| r.change_id.is_some())
            .and_then(|r| stored.changes.iter().rev().find(|c| c.change_id == r.change_id).cloned());
        if let Some(r) = &first {
            rec.old_weights = r.old_weights.clone();
            rec.new_weights = r.new_weights.clone();
            rec.change_id = r.change_id.clone();
        }
        let state = match (&change, first.as_ref().and_then(|r| r.plan.as_ref())) {
            (Some(c), _) => format!("first step taken: {}", describe(&c.to)),
            (None, Some(n)) => format!("first step not taken yet: {}", n.reason),
            (None, None) => "first step not taken yet".to_owned(),
        };
        Ok((format!("{summary}: {state}"), change))
    }

    /// Records a command's action in the state object and the open incident, writes the
    /// ledger, announces it and prints its decision record. Returns the notice's id.
    async fn finish_command(
        &self,
        by: &str,
        command: &Command,
        rec: &OpsRecord,
        change: Option<&ChangeEntry>,
        now_ms: TimestampMs,
    ) -> Result<Option<String>, OpsError> {
        let mut rec = rec.clone();
        let action = OperatorAction { at_ms: now_ms, by: by.to_owned(), command: command.name().to_owned(), detail: rec.detail.clone() };
        let stored = self.update_state(|s| record_action(s, &action)).await?;
        self.flush_ledger(&stored, now_ms).await?;
        rec.notice_id = self.announce_operator(&rec, change, now_ms).await;
        match serde_json::to_string(&rec) {
            Ok(line) => println!("{line}"),
            Err(e) => tracing::error!("cannot serialise the operator record: {e}"),
        }
        Ok(rec.notice_id)
    }

    /// Weights that take all traffic off `target`, or `None` if it carries none. The
    /// traffic goes to the up, undrained target the default policy would pick: the primary
    /// if it qualifies, else the first in configuration order.
    async fn drain_shift(&self, target: &str, now_ms: TimestampMs) -> Result<Option<Vec<Weight>>, OpsError> {
        let (stored, _) = self.load_state().await?;
        let observed = self.observe(now_ms).await?;
        let (_, targets) = self.view(&stored, &observed);
        let Some(t) = targets.iter().find(|t| t.set_identifier == target) else { return Ok(None) };
        if t.weight == 0 && targets.iter().any(|x| x.weight > 0) {
            return Ok(None);
        }
        let drained = stored.ops.drained_ids();
        let mut candidates: Vec<&Target> = targets
            .iter()
            .filter(|x| x.set_identifier != target && x.condition() == Condition::Up && !drained.contains(&x.set_identifier.as_str()))
            .collect();
        candidates.sort_by_key(|x| !x.primary);
        let Some(to) = candidates.first() else {
            return Err(OpsError::Invalid(format!(
                "cannot drain `{target}`: no other undrained target is up to take its traffic (the drain mark is set; \
                 `kbha ops undrain {target}` removes it)"
            )));
        };
        let active = targets.iter().map(|x| x.weight).max().filter(|w| *w > 0).unwrap_or(100);
        Ok(Some(
            targets
                .iter()
                .map(|x| Weight {
                    set_identifier: x.set_identifier.clone(),
                    weight: if x.set_identifier == to.set_identifier { active } else { 0 },
                })
                .collect(),
        ))
    }

    /// The weights `shift` asks for.
    async fn shift_weights(&self, to: Option<&str>, weights: &[Weight]) -> Result<Vec<Weight>, OpsError> {
        for w in weights {
            if !self.cfg.targets.iter().any(|c| c.set_identifier == w.set_identifier) {
                return Err(OpsError::UnknownTarget(w.set_identifier.clone()));
            }
        }
        match (to, weights.is_empty()) {
            (Some(to), true) => {
                if !self.cfg.targets.iter().any(|c| c.set_identifier == to) {
                    return Err(OpsError::UnknownTarget(to.to_owned()));
                }
                let records = self.dns.weighted_records(&self.cfg.hosted_zone_id, &self.cfg.record_name, &self.cfg.record_type).await?;
                let active = records.iter().map(|r| r.weight).max().filter(|w| *w > 0).unwrap_or(100);
                Ok(self
                    .cfg
                    .targets
                    .iter()
                    .map(|c| Weight { set_identifier: c.set_identifier.clone(), weight: if c.set_identifier == to { active } else { 0 } })
                    .collect())
            }
            (None, false) => Ok(weights.to_vec()),
            _ => Err(OpsError::Invalid("give either --to <target> or --weights id=w,...".to_owned())),
        }
    }

    /// A manual change: observe, check with the guardrails an operator is held to, swap
    /// (re-reading when Route 53 changed meanwhile), record it.
    #[allow(clippy::too_many_arguments)]
    async fn manual_change(
        &self,
        by: &str,
        command: &Command,
        asked: &[Weight],
        force: bool,
        reason: &str,
        now_ms: TimestampMs,
        rec: &mut OpsRecord,
    ) -> Result<ChangeEntry, OpsError> {
        let event_id = format!("ops-{}-{}", command.name(), now_ms);
        for _ in 0..self.cfg.max_attempts {
            let (stored, _) = self.load_state().await?;
            let observed = self.observe(now_ms).await?;
            let (seen, targets) = self.view(&stored, &observed);
            let input = FailoverInput {
                now_ms,
                event_id: event_id.clone(),
                trigger: FailoverTrigger::Schedule,
                record_name: self.cfg.record_name.clone(),
                targets: targets.clone(),
                last_change: seen.last_change.clone(),
                config: self.cfg.policy_parameters(),
            };
            let decision = FailoverDecision {
                action: FailoverAction::ShiftWeights { weights: asked.to_vec(), force },
                reason: format!("operator {by}: {reason}"),
                alerts: vec![],
            };
            let verdict = check_failover(&input, &decision, operator_guardrails(self.cfg.guardrails()));
            let verdict = refuse_onto_drained(&targets, verdict, &stored.ops.drained_ids());
            let (weights, forced, kind) = match verdict {
                GuardrailVerdict::NoChange => {
                    return Err(OpsError::Invalid(format!("the weights are already {}; nothing to change", describe(asked))));
                }
                GuardrailVerdict::Refused { refusals } => {
                    let why: Vec<String> = refusals.iter().map(ToString::to_string).collect();
                    return Err(OpsError::Refused(why.join("; ")));
                }
                GuardrailVerdict::Apply { weights, forced, kind } => (weights, forced, kind),
            };
            if forced {
                tracing::error!(by, weights = ?weights, "BREAK-GLASS: an operator moves traffic onto a target whose health check fails");
                eprintln!("BREAK-GLASS: moving traffic onto a target whose health check fails (KBHA_BREAK_GLASS=true, --force)");
            }
            rec.old_weights = targets.iter().map(|t| Weight { set_identifier: t.set_identifier.clone(), weight: t.weight }).collect();
            rec.new_weights = weights.clone();
            rec.forced = forced;
            if self.cfg.dry_run {
                return Err(OpsError::Invalid(format!("dry-run (KBHA_DRY_RUN=true): would shift to {}", describe(&weights))));
            }
            match self.swap(&observed.records, &weights, &decision.reason, &event_id).await {
                Ok(change_id) => {
                    rec.change_id = Some(change_id.clone());
                    let entry = ChangeEntry {
                        at_ms: now_ms,
                        change_id: Some(change_id),
                        by: by.to_owned(),
                        event_id: event_id.clone(),
                        kind,
                        from: rec.old_weights.clone(),
                        to: weights.clone(),
                        reason: decision.reason.clone(),
                        rpo_ms: ledger::rpo_of(&targets, &rec.old_weights, &weights),
                        insync_at_ms: None,
                        late_alerted: false,
                        plan: None,
                        planned: false,
                    };
                    let after = ledger::with_weights(&targets, &weights);
                    let alarms = self.alarm_marks(&observed);
                    self.update_state(|s| {
                        record_change(s, &entry);
                        if s.state.last_change.as_ref().is_none_or(|l| l.at_ms <= now_ms) {
                            s.state.last_change =
                                Some(LastChange { at_ms: now_ms, weights: weights.clone(), reason: entry.reason.clone() });
                        }
                        ledger::observe(&mut s.incident, &self.cfg.record_name, &after, &alarms, now_ms);
                    })
                    .await?;
                    return Ok(entry);
                }
                Err(e) if e.is_conflict() => {
                    tracing::info!("route 53 records changed since read; re-reading and checking again");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(OpsError::Failover(FailoverError::ConflictExhausted { attempts: self.cfg.max_attempts }))
    }

    /// Publishes the notice of an operator command. Best effort: the command is done and
    /// recorded; a failed publish is reported, not fatal.
    async fn announce_operator(&self, rec: &OpsRecord, change: Option<&ChangeEntry>, now_ms: TimestampMs) -> Option<String> {
        let severity = if rec.forced || matches!(rec.command.as_str(), "pause" | "shift" | "drain") { "warning" } else { "info" };
        let summary = format!("operator {}: {}", rec.command, rec.detail);
        let msg = json!({
            "kind": "kbha.notice",
            "function": "failover",
            "type": "operator",
            "severity": severity,
            "summary": summary,
            "reason": rec.detail,
            "record_name": self.cfg.record_name,
            "command": rec.command,
            "by": rec.by,
            "at": format_timestamp(now_ms),
            "old_weights": rec.old_weights,
            "new_weights": rec.new_weights,
            "change_id": rec.change_id,
            "forced": rec.forced,
            "change": change,
        });
        let subject = format!("[kbha {severity}] {}: operator {}", self.cfg.record_name.trim_end_matches('.'), rec.command);
        let attributes = BTreeMap::from([
            ("severity".to_owned(), severity.to_owned()),
            ("source".to_owned(), "kbha.failover".to_owned()),
            ("region".to_owned(), self.primary_region().to_owned()),
            ("kind".to_owned(), "operator".to_owned()),
            ("dry_run".to_owned(), self.cfg.dry_run.to_string()),
        ]);
        match self.notifier.publish(&self.cfg.notify_topic_arn, &subject, &msg.to_string(), &attributes).await {
            Ok(id) => Some(id),
            Err(e) => {
                eprintln!("warning: the command is done and recorded, but its notice could not be sent: {e}");
                None
            }
        }
    }

    /// The state's history with this observation noted, and the targets as the policy
    /// would see them (the same merge the function makes).
    fn view(&self, stored: &StoredState, observed: &observe::Observed) -> (FailoverState, Vec<Target>) {
        let mut seen = stored.state.clone();
        observed.note_alarms(&mut seen, None);
        let conditions = observe::targets(&self.cfg, observed, &seen);
        observed.note_conditions(&mut seen, &conditions);
        let targets = observe::targets(&self.cfg, observed, &seen);
        (seen, targets)
    }

    /// The mapped alarms as the ledger records them.
    pub(crate) fn alarm_marks(&self, observed: &observe::Observed) -> Vec<ledger::AlarmMark> {
        observed
            .alarms
            .iter()
            .map(|(a, target)| ledger::AlarmMark {
                name: a.name.clone(),
                target: target.clone(),
                state: a.state.as_cloudwatch().to_owned(),
                at_ms: a.since_ms,
            })
            .collect()
    }

    /// Reads Route 53's status of every recent change not yet seen INSYNC (and younger
    /// than the give-up age), and of `just_made`: (change id, status). A failed read is logged and skipped, so
    /// measuring never blocks deciding.
    pub(crate) async fn change_statuses(
        &self,
        stored: &StoredState,
        just_made: Option<&str>,
        now_ms: TimestampMs,
    ) -> Vec<(String, ChangeStatus)> {
        let give_up = self.cfg.insync_give_up_ms();
        let mut ids: Vec<String> = stored
            .changes
            .iter()
            .filter(|c| c.insync_at_ms.is_none() && now_ms - c.at_ms < give_up)
            .filter_map(|c| c.change_id.clone())
            .collect();
        // The change this invocation made: INSYNC already is worth knowing now.
        ids.extend(just_made.map(str::to_owned));
        ids.dedup();
        let reads = futures::future::join_all(ids.iter().map(|id| self.dns.change_status(id))).await;
        ids.into_iter()
            .zip(reads)
            .filter_map(|(id, r)| match r {
                Ok(s) => Some((id, s)),
                Err(e) => {
                    tracing::warn!(change_id = %id, "cannot read the change's status; trying again next time: {e}");
                    None
                }
            })
            .collect()
    }

    /// Writes the incident's newest revision to its ledger object (conditional: never over
    /// a newer one), then notes that in the state object and drops a closed incident whose
    /// changes are settled. Best effort: the state object keeps the revision until written.
    pub(crate) async fn flush_ledger(&self, stored: &StoredState, now_ms: TimestampMs) -> Result<(), FailoverError> {
        let Some(inc) = stored.incident.as_ref().filter(|i| i.revision > i.written_revision) else {
            return self.drop_settled(stored, now_ms).await;
        };
        let key = inc.key(&self.cfg.state.prefix);
        let bucket = &self.cfg.state.bucket;
        for _ in 0..4 {
            let current = self.store.get(bucket, &key).await?;
            let cond = match &current {
                Some(obj) => {
                    let theirs: Option<Incident> = serde_json::from_slice(&obj.bytes).ok();
                    if theirs.is_some_and(|t| t.revision >= inc.revision) {
                        break;
                    }
                    kbha_aws::PutCondition::IfMatch(obj.etag.clone())
                }
                None => kbha_aws::PutCondition::IfNoneMatch,
            };
            let mut body = inc.clone();
            body.written_revision = inc.revision;
            let bytes = serde_json::to_vec_pretty(&body)
                .map_err(|e| AwsError::Invalid { operation: "PutObject", message: format!("cannot serialise incident: {e}") })?;
            match self.store.put(bucket, &key, bytes, cond).await {
                Ok(_) => break,
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let (id, revision) = (inc.id.clone(), inc.revision);
        let stored = self
            .update_state(|s| {
                if let Some(i) = s.incident.as_mut().filter(|i| i.id == id && i.written_revision < revision) {
                    i.written_revision = revision;
                }
            })
            .await?;
        self.drop_settled(&stored, now_ms).await
    }

    /// Drops a closed incident from the state object once it is written and its changes
    /// are settled (INSYNC, or given up on).
    async fn drop_settled(&self, stored: &StoredState, now_ms: TimestampMs) -> Result<(), FailoverError> {
        let give_up = self.cfg.insync_give_up_ms();
        let done = |i: &Incident| i.closed_at_ms.is_some() && i.written_revision >= i.revision && i.changes_settled(now_ms, give_up);
        if stored.incident.as_ref().is_some_and(done) {
            self.update_state(|s| {
                if s.incident.as_ref().is_some_and(done) {
                    s.incident = None;
                }
            })
            .await?;
        }
        Ok(())
    }
}

/// The guardrails an operator's change is held to: the safety rules (known targets, some
/// traffic left, never onto a failing target without break-glass, the minimum interval),
/// not the anti-flapping rules meant for automation (cooldown, hysteresis, manual
/// failback): a person deciding is what those wait for.
pub fn operator_guardrails(mut g: GuardrailSettings) -> GuardrailSettings {
    g.cooldown_ms = 0;
    g.hysteresis_ms = 0;
    g.manual_failback = false;
    g
}

/// Records a change in the state object's recent changes and the open incident.
pub(crate) fn record_change(s: &mut StoredState, c: &ChangeEntry) {
    if !s.changes.iter().any(|e| e.event_id == c.event_id && e.at_ms == c.at_ms) {
        s.changes.push(c.clone());
        trim(&mut s.changes);
    }
    if let Some(i) = s.incident.as_mut() {
        i.add_change(c);
    }
    if c.kind != Move::Evacuation {
        // Traffic moved back (a return, or a rebalance onto a target proven up): the
        // approval, if any, is used up.
        s.ops.failback_approval = None;
    }
}

/// Records an action (an operator's command, or a plan's end) in the state object's recent
/// actions and the open incident (once).
pub(crate) fn record_action(s: &mut StoredState, action: &OperatorAction) {
    if !s.actions.contains(action) {
        s.actions.push(action.clone());
        trim(&mut s.actions);
    }
    if let Some(i) = s.incident.as_mut()
        && !i.operator_actions.contains(action)
    {
        i.add_action(action.clone());
    }
}

/// Notes Route 53's answers: INSYNC times, and which changes are late (not INSYNC after
/// `alert_after_ms`). Returns the changes that became late now (to announce once).
pub(crate) fn note_statuses(
    s: &mut StoredState,
    statuses: &[(String, ChangeStatus)],
    now_ms: TimestampMs,
    alert_after_ms: i64,
) -> Vec<ChangeEntry> {
    let mut late = Vec::new();
    for c in s.changes.iter_mut() {
        let Some(id) = c.change_id.as_deref() else { continue };
        match statuses.iter().find(|(i, _)| i == id).map(|(_, st)| *st) {
            Some(ChangeStatus::InSync) if c.insync_at_ms.is_none() => c.insync_at_ms = Some(now_ms),
            Some(ChangeStatus::Pending) if !c.late_alerted && now_ms - c.at_ms >= alert_after_ms => {
                c.late_alerted = true;
                late.push(c.clone());
            }
            _ => continue,
        }
        if let Some(i) = s.incident.as_mut() {
            i.update_change(c);
        }
    }
    late
}

fn trim<T>(v: &mut Vec<T>) {
    if v.len() > RECENT {
        let extra = v.len() - RECENT;
        v.drain(..extra);
    }
}

/// `a=1, b=2`.
pub fn describe(weights: &[Weight]) -> String {
    weights.iter().map(|w| format!("{}={}", w.set_identifier, w.weight)).collect::<Vec<_>>().join(", ")
}

/// Parses `--weights primary=100,secondary=0`.
pub fn parse_weights(s: &str) -> Result<Vec<Weight>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (id, w) = p.split_once('=').ok_or_else(|| format!("`{p}` is not `target=weight`"))?;
            let weight = w.trim().parse::<u32>().map_err(|_| format!("weight `{w}` of `{id}` is not a whole number"))?;
            Ok(Weight { set_identifier: id.trim().to_owned(), weight })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbha_core::state::TargetHistory;

    #[test]
    fn an_approval_lapses_when_a_target_fails_after_it() {
        let mut ops = OpsState::default();
        let mut h = FailoverState::default();
        h.history.insert("primary".into(), TargetHistory { last_down_at_ms: Some(1_000), ..Default::default() });
        ops.failback_approval = Some(Mark { by: "me".into(), reason: "ok".into(), at_ms: 2_000 });
        assert!(ops.approval(&h).is_some());
        h.history.insert("primary".into(), TargetHistory { last_down_at_ms: Some(3_000), ..Default::default() });
        assert!(ops.approval(&h).is_none(), "failed again after the approval");
    }

    #[test]
    fn weights_parse_with_clear_errors() {
        let w = parse_weights("primary=100, secondary=0").expect("parses");
        assert_eq!(describe(&w), "primary=100, secondary=0");
        assert!(parse_weights("primary").expect_err("no =").contains("target=weight"));
        assert!(parse_weights("primary=lots").expect_err("nan").contains("whole number"));
    }

    #[test]
    fn a_late_change_is_announced_once_and_insync_is_noted_in_the_incident() {
        let mut s = StoredState::default();
        let c = ChangeEntry {
            at_ms: 0,
            change_id: Some("C1".into()),
            by: "kbha".into(),
            event_id: "e".into(),
            kind: Move::Evacuation,
            from: vec![],
            to: vec![],
            reason: String::new(),
            rpo_ms: None,
            insync_at_ms: None,
            late_alerted: false,
            plan: None,
            planned: false,
        };
        s.incident = Some(Incident {
            id: "inc".into(),
            record_name: "api.".into(),
            target: "primary".into(),
            opened_at_ms: 0,
            detected_at_ms: 0,
            alarms: vec![],
            changes: vec![],
            operator_actions: vec![],
            unhealthy_until_ms: Some(0),
            unhealthy: vec![],
            closed_at_ms: None,
            closed_by: None,
            revision: 1,
            written_revision: 0,
            planned: false,
        });
        record_change(&mut s, &c);
        let pending = [("C1".to_owned(), ChangeStatus::Pending)];
        assert!(note_statuses(&mut s, &pending, 1_000, 5_000).is_empty(), "not late yet");
        assert_eq!(note_statuses(&mut s, &pending, 6_000, 5_000).len(), 1);
        assert!(note_statuses(&mut s, &pending, 7_000, 5_000).is_empty(), "announced once");
        note_statuses(&mut s, &[("C1".to_owned(), ChangeStatus::InSync)], 8_000, 5_000);
        let i = s.incident.as_ref().expect("incident");
        assert_eq!(i.changes[0].insync_at_ms, Some(8_000));
        assert_eq!(i.unhealthy_until_ms, Some(8_000), "traffic was off the failed target once INSYNC");
    }
}
