//! Step "announce": one notice per decision worth a human's attention, staged in the
//! state object's outbox by the write that records the decision and published by the
//! invocation holding its claim (see [`kbha_hosting::claim`]). A condition that lasts
//! (every target down, a manual failback pending, a refused return) is announced when it
//! starts, not on every tick.

use std::collections::BTreeMap;
use std::time::Instant;

use kbha_aws::{Alarms, Dns, Notifier, ObjectStore};
use kbha_core::events::EventError;
use kbha_core::guardrails::{GuardrailVerdict, Move};
use kbha_core::time::format_timestamp;
use kbha_core::{Alarm, Alert, Severity, TimestampMs};
use kbha_hosting::claim::{self, Claim, Holder};

use crate::handler::{ActionTaken, DecisionRecord, FailoverError, FailoverFunction};
use crate::journal::{Notice, Outgoing, StoredState};
use crate::ledger::ChangeEntry;

/// Event ids of "change not INSYNC" notices start with this.
pub const LATE_PREFIX: &str = "late-change-";

/// The key under which an alert stands in the state object (`severity: summary`).
pub fn standing_key(a: &Alert) -> String {
    format!("{}: {}", a.severity.as_str(), a.summary)
}

/// The keys of everything a decision says that should be said once while it lasts: its
/// alerts, and a refusal by the guardrails (by kind, so a refused return that keeps being
/// asked for is announced once).
pub fn standing_keys(rec: &DecisionRecord) -> Vec<String> {
    let mut keys: Vec<String> =
        rec.policy.iter().flat_map(|d| d.decision.alerts.iter()).map(standing_key).collect();
    if let Some(GuardrailVerdict::Refused { refusals }) = &rec.guardrail {
        for r in refusals {
            let kind = serde_json::to_value(r).ok().and_then(|v| v["kind"].as_str().map(str::to_owned)).unwrap_or_default();
            keys.push(format!("refused: {kind}"));
        }
    }
    if rec.action == ActionTaken::Paused {
        // One notice per held change while paused, not one per tick.
        keys.push(format!("held: {}", crate::ops::describe(&rec.new_weights)));
    }
    keys.sort();
    keys.dedup();
    keys
}

impl<D: Dns, A: Alarms, S: ObjectStore, N: Notifier> FailoverFunction<D, A, S, N> {
    /// Sends the staged notice of `event_id` when this invocation holds its claim, or
    /// can take it over (released, or its holder's lease ran out); waits while another
    /// copy holds it. `None`: nothing staged (sent already, or never due).
    pub(crate) async fn deliver(&self, event_id: &str, me: &str, mut stored: StoredState) -> Result<Option<String>, FailoverError> {
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
    pub(crate) async fn close_outgoing(&self, event_id: &str) {
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

    /// Publishes a notice built by [`Self::build_notice`].
    async fn send(&self, notice: Option<Notice>) -> Result<Option<String>, FailoverError> {
        let Some(n) = notice.filter(|n| !n.message.is_null()) else { return Ok(None) };
        let id = self.notifier.publish(&self.cfg.notify_topic_arn, &n.subject, &n.message.to_string(), &n.attributes).await?;
        Ok(Some(id))
    }

    /// One notice per decision worth a human's attention: every decision on a new alarm
    /// transition, and any tick that changed something, was refused or alerted.
    /// `standing`: what the state object says was announced and still stands; alerts and
    /// refusals among them are repeated in the notice but neither make one nor raise its
    /// severity, so "every target is down" pages once however the failures arrived.
    pub(crate) fn build_notice(
        &self,
        rec: &DecisionRecord,
        alarm: Option<&Alarm>,
        standing: &[String],
        now_ms: TimestampMs,
    ) -> Option<Notice> {
        let (Some(decided), Some(verdict)) = (&rec.policy, &rec.guardrail) else { return None };
        let (alerts, repeated): (Vec<&Alert>, Vec<&Alert>) =
            decided.decision.alerts.iter().partition(|a| !standing.contains(&standing_key(a)));
        let refusal_is_news = standing_keys(rec).iter().any(|k| k.starts_with("refused: ") && !standing.contains(k));
        let held_is_news = standing_keys(rec).iter().any(|k| k.starts_with("held: ") && !standing.contains(k));
        let changed = matches!(rec.action, ActionTaken::Applied | ActionTaken::DryRun);
        // A stepped shift that ended without a change (completed, abandoned, overtaken).
        let plan_ended = rec.plan.as_ref().and_then(|n| n.outcome).filter(|_| !changed);
        let notable = plan_ended.is_some()
            || alarm.is_some()
            || changed
            || (rec.action == ActionTaken::Refused && refusal_is_news)
            || (rec.action == ActionTaken::Paused && held_is_news)
            || !alerts.is_empty();
        if !notable {
            return None;
        }
        let mut severity = alerts.iter().map(|a| a.severity).max().unwrap_or(Severity::Info);
        let refusals: Vec<String> = match verdict {
            GuardrailVerdict::Refused { refusals } => {
                if refusal_is_news {
                    severity = severity.max(Severity::Warning);
                }
                refusals.iter().map(ToString::to_string).collect()
            }
            _ => vec![],
        };
        if changed {
            severity = severity.max(Severity::Warning);
        }
        if plan_ended.is_some_and(|o| o != kbha_core::plan::PlanOutcome::Completed) {
            severity = severity.max(Severity::Warning);
        }
        if rec.action == ActionTaken::Paused && held_is_news {
            // Traffic stays on a down target because of the pause: someone must look now.
            let evacuation = matches!(verdict, GuardrailVerdict::Apply { kind: Move::Evacuation, .. });
            severity = severity.max(if evacuation { Severity::Critical } else { Severity::Warning });
        }
        let moved = crate::ops::describe(&rec.new_weights);
        let plan = rec.plan.as_ref();
        let summary = match rec.action {
            ActionTaken::Applied if plan.is_some_and(|n| n.outcome == Some(kbha_core::plan::PlanOutcome::RolledBack)) => {
                format!("{} rolled back: traffic shifted: {moved}", plan.map_or("", |n| n.title.as_str()))
            }
            ActionTaken::Applied if let Some(n) = plan => format!("{}, step {} of {}: traffic shifted: {moved}", n.title, n.step, n.of),
            _ if let (Some(n), Some(_)) = (plan, plan_ended) => n.reason.clone(),
            ActionTaken::Applied => format!("traffic shifted: {moved}"),
            ActionTaken::DryRun => format!("dry-run: would shift traffic: {moved}"),
            ActionTaken::Refused => "failover decision refused by guardrails".to_owned(),
            ActionTaken::Paused => format!("paused by an operator: change held: {moved}; `kbha ops resume` lets it through"),
            _ => format!("holding weights: {}", first_line(&decided.decision.reason)),
        };
        let notice = serde_json::json!({
            "kind": "kbha.notice",
            "function": "failover",
            "type": rec.action,
            "severity": severity,
            "summary": summary,
            "reason": plan.filter(|_| changed || plan_ended.is_some()).map_or(decided.decision.reason.as_str(), |n| n.reason.as_str()),
            "plan": plan,
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
            "standing_alerts": repeated,
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

    /// The notice for a change Route 53 has not reported INSYNC in time, staged once per
    /// change under its own event id.
    pub(crate) fn late_change_notice(&self, c: &ChangeEntry, claim: &Claim, now_ms: TimestampMs) -> Option<Outgoing> {
        let id = c.change_id.as_deref()?;
        let summary = format!(
            "route 53 change {id} is not INSYNC {} minutes after it was made; DNS answers may still send traffic to the old weights",
            self.cfg.insync_alert_minutes
        );
        let message = serde_json::json!({
            "kind": "kbha.notice",
            "function": "failover",
            "type": "change_not_insync",
            "severity": "critical",
            "summary": summary,
            "reason": format!("made at {} by {}: {}", format_timestamp(c.at_ms), c.by, c.reason),
            "record_name": self.cfg.record_name,
            "at": format_timestamp(now_ms),
            "change": c,
        });
        let attributes = BTreeMap::from([
            ("severity".to_owned(), "critical".to_owned()),
            ("source".to_owned(), "kbha.failover".to_owned()),
            ("region".to_owned(), self.primary_region().to_owned()),
            ("kind".to_owned(), "change_not_insync".to_owned()),
            ("dry_run".to_owned(), self.cfg.dry_run.to_string()),
        ]);
        let subject = format!("[kbha critical] {}: route 53 change not INSYNC", self.cfg.record_name.trim_end_matches('.'));
        Some(Outgoing {
            event_id: format!("{LATE_PREFIX}{id}"),
            alarm: None,
            action: ActionTaken::NoChange,
            change_id: Some(id.to_owned()),
            notice: Notice { subject, message, attributes },
            claim: claim.clone(),
        })
    }

    /// A warning notice for an event the function cannot use; best effort, since the
    /// invocation fails anyway and the log has the whole error.
    pub(crate) async fn announce_unrecognised(&self, err: &EventError, now_ms: TimestampMs) {
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

    pub(crate) fn primary_region(&self) -> &str {
        self.cfg.targets.iter().find(|t| t.primary).map_or("", |t| t.region.as_str())
    }
}


fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
