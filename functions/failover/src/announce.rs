//! Step "announce": one notice per decision worth a human's attention, staged in the
//! state object's outbox by the write that records the decision and published by the
//! invocation holding its claim (see [`kbha_lambda::claim`]). A condition that lasts
//! (every target down, the RPO gate holding, a policy fault, a manual failback pending, a
//! refused return) is announced when it starts, not on every tick: as one alert with a
//! dedup key made of what the condition is and what it is about, never of the numbers that
//! describe it now (an age, a count), so the alert router pages for it once. While it
//! lasts it is reminded every `KBHA_REMIND_SECONDS` under the same key (the router repeats
//! per its repeat interval), and when it ends a `resolved` notice with that key closes it.

use std::collections::BTreeMap;
use std::time::Instant;

use kbha_aws::{Alarms, Dns, Notifier, ObjectStore};
use kbha_core::dedup::without_numbers;
use kbha_core::events::EventError;
use kbha_core::guardrails::{GuardrailVerdict, Move};
use kbha_core::time::format_timestamp;
use kbha_core::{Alarm, Alert, Severity, TimestampMs};
use kbha_lambda::claim::{self, Claim, Holder};
use sha2::Digest as _;

use crate::handler::{ActionTaken, DecisionRecord, FailoverError, FailoverFunction};
use crate::journal::{Notice, Outgoing, Standing, StoredState};
use crate::ledger::ChangeEntry;

/// Event ids of "change not INSYNC" notices start with this.
pub const LATE_PREFIX: &str = "late-change-";

/// Event ids of a standing condition's own notices (a second condition starting with a
/// decision, a reminder, a resolution) start with this.
pub const CONDITION_PREFIX: &str = "condition-";

/// The key under which an alert stands in the state object (`severity: summary`, without
/// the numbers in the summary that are not part of a name: a policy that puts the data's
/// age in its summary still describes one condition).
pub fn standing_key(a: &Alert) -> String {
    format!("{}: {}", a.severity.as_str(), without_numbers(&a.summary))
}

/// A condition a decision reports: an alert, a guardrail refusal, a change held by a pause
/// or a dry run. `id` names it without its numbers (the last part of its dedup key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// What it is and what it is about: an alert's summary without its numbers,
    /// `refused: <kind>`, `held: <weights>`, `dry run: <weights>`.
    pub id: String,
    /// Its key among the standing keys ([`standing_keys`]).
    pub standing: String,
    /// How urgent.
    pub severity: Severity,
    /// In words, as of this decision.
    pub summary: String,
}

/// The conditions a decision reports, one per id (the most severe when an id repeats).
/// The alerts of a policy that holds are conditions of their own; those of a policy that
/// asks for a change are about that change, and go with it (or with what holds it: a
/// refusal, a pause, a dry run, whose severity they raise).
pub fn conditions(rec: &DecisionRecord) -> Vec<Condition> {
    let mut out: Vec<Condition> = Vec::new();
    let mut add = |c: Condition| match out.iter_mut().find(|o| o.id == c.id) {
        Some(o) if c.severity > o.severity => *o = c,
        Some(_) => {}
        None => out.push(c),
    };
    let alerts: Vec<&Alert> = rec.policy.iter().flat_map(|d| d.decision.alerts.iter()).collect();
    let policy_holds = rec.policy.as_ref().is_none_or(|d| matches!(d.decision.action, kbha_core::FailoverAction::Hold));
    if policy_holds {
        for a in &alerts {
            add(Condition { id: without_numbers(&a.summary), standing: standing_key(a), severity: a.severity, summary: a.summary.clone() });
        }
    }
    let with_change = |base: Severity| if policy_holds { base } else { alerts.iter().map(|a| a.severity).fold(base, Severity::max) };
    if let Some(GuardrailVerdict::Refused { refusals }) = &rec.guardrail {
        for r in refusals {
            let key = refusal_key(r);
            add(Condition {
                id: key.clone(),
                standing: key,
                severity: with_change(Severity::Warning),
                summary: format!("failover decision refused by guardrails: {r}"),
            });
        }
    }
    let moved = crate::ops::describe(&rec.new_weights);
    if rec.action == ActionTaken::Paused {
        let evacuation = matches!(rec.guardrail, Some(GuardrailVerdict::Apply { kind: Move::Evacuation, .. }));
        let key = format!("held: {moved}");
        add(Condition {
            id: key.clone(),
            standing: key,
            severity: with_change(if evacuation { Severity::Critical } else { Severity::Warning }),
            summary: format!("paused by an operator: change held: {moved}"),
        });
    }
    if rec.action == ActionTaken::DryRun {
        let key = format!("dry run: {moved}");
        add(Condition {
            id: key.clone(),
            standing: key,
            severity: with_change(Severity::Warning),
            summary: format!("dry-run: would shift traffic: {moved}"),
        });
    }
    out
}

fn refusal_key(r: &kbha_core::guardrails::Refusal) -> String {
    let kind = serde_json::to_value(r).ok().and_then(|v| v["kind"].as_str().map(str::to_owned)).unwrap_or_default();
    format!("refused: {kind}")
}

/// The keys of everything a decision says that should be said once while it lasts: its
/// alerts, a refusal by the guardrails (by kind, so a refused return that keeps being
/// asked for is announced once), and a change held by a pause or a dry run (one notice
/// per held change, not one per tick).
pub fn standing_keys(rec: &DecisionRecord) -> Vec<String> {
    let mut keys: Vec<String> = conditions(rec).into_iter().map(|c| c.standing).collect();
    // An alert of another severity than the condition's kept one is a key of its own.
    keys.extend(rec.policy.iter().flat_map(|d| d.decision.alerts.iter()).map(standing_key));
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
            let now = kbha_lambda::lambda::now_ms();
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
    ///
    /// Its `dedup_key` (in the message and as an attribute): a change is an event of its
    /// own (`kbha/failover/<record>/<type>/<event id>`); any other notice that starts a
    /// condition is that condition's alert (the most severe one it starts,
    /// [`Self::condition_key`]); anything else (a plan's end, an alarm transition) is an
    /// event again.
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
        let keys = standing_keys(rec);
        let news = |prefix: &str| keys.iter().any(|k| k.starts_with(prefix) && !standing.contains(k));
        let (refusal_is_news, held_is_news, dry_run_is_news) = (news("refused: "), news("held: "), news("dry run: "));
        let changed = rec.action == ActionTaken::Applied;
        let moved = matches!(rec.action, ActionTaken::Applied | ActionTaken::DryRun);
        // A stepped shift that ended without a change (completed, abandoned, overtaken).
        let plan_ended = rec.plan.as_ref().and_then(|n| n.outcome).filter(|_| !moved);
        let notable = plan_ended.is_some()
            || alarm.is_some()
            || changed
            || (rec.action == ActionTaken::DryRun && dry_run_is_news)
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
        if moved {
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
        let kind = action_name(rec.action);
        // The condition this notice is the alert of: the most severe one it starts (the
        // first of equals), unless it announces a change.
        let headline = if changed {
            None
        } else {
            conditions(rec).into_iter().filter(|c| !standing.contains(&c.standing)).rev().max_by_key(|c| c.severity)
        };
        let dedup_key = headline.map_or_else(|| self.event_key(&kind, &rec.event_id), |c| self.condition_key(&c.id));
        let notice = serde_json::json!({
            "kind": "kbha.notice",
            "function": "failover",
            "type": rec.action,
            "severity": severity,
            "summary": summary,
            "dedup_key": dedup_key,
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
            ("kind".to_owned(), kind),
            ("dry_run".to_owned(), self.cfg.dry_run.to_string()),
            ("dedup_key".to_owned(), dedup_key),
        ]);
        Some(Notice { subject, message: notice, attributes })
    }

    /// The dedup key of a condition (`id` from [`conditions`]): the record set and what
    /// the condition is, no numbers.
    pub(crate) fn condition_key(&self, id: &str) -> String {
        format!("kbha/failover/{}/{id}", self.cfg.record_name.trim_end_matches('.'))
    }

    /// The dedup key of a notice that reports an event (a change, a plan's end): its own.
    fn event_key(&self, kind: &str, event_id: &str) -> String {
        format!("kbha/failover/{}/{kind}/{event_id}", self.cfg.record_name.trim_end_matches('.'))
    }

    /// Keeps the state object's standing conditions ([`StoredState::conditions`]) in step
    /// with a decision's (`current`, from [`conditions`]) and returns the notices that go
    /// with it, each under its condition's dedup key: `resolved` for each condition that
    /// ended; for a decision that holds (no change made), the start of each condition the
    /// decision's own notice (`headline`, its dedup key) does not announce, a severity
    /// that rose, and a reminder of one last announced `KBHA_REMIND_SECONDS` ago or more.
    /// A change's alerts are said with the change, and are not conditions of their own.
    pub(crate) fn track_conditions(
        &self,
        s: &mut StoredState,
        rec: &DecisionRecord,
        current: &[Condition],
        headline: Option<&str>,
        claim: &Claim,
        now_ms: TimestampMs,
    ) -> Vec<Outgoing> {
        let current: BTreeMap<String, &Condition> = current.iter().map(|c| (self.condition_key(&c.id), c)).collect();
        let mut out = Vec::new();
        let ended: Vec<String> = s.conditions.keys().filter(|k| !current.contains_key(*k)).cloned().collect();
        for key in ended {
            if let Some(c) = s.conditions.remove(&key) {
                out.push(self.condition_notice(&key, &c, Said::Resolved, &rec.event_id, claim, now_ms));
            }
        }
        if !matches!(rec.action, ActionTaken::NoChange | ActionTaken::Refused | ActionTaken::Paused | ActionTaken::DryRun) {
            return out;
        }
        let remind_ms = self.cfg.remind_ms();
        for (key, c) in current {
            let announced_here = headline == Some(key.as_str());
            let said = match s.conditions.get_mut(&key) {
                None => {
                    let st = Standing {
                        severity: c.severity,
                        summary: c.summary.clone(),
                        kind: action_name(rec.action),
                        since_ms: now_ms,
                        announced_ms: now_ms,
                    };
                    s.conditions.insert(key.clone(), st);
                    (!announced_here).then_some(Said::Started)
                }
                Some(st) => {
                    let rose = c.severity > st.severity;
                    st.severity = c.severity;
                    st.summary = c.summary.clone();
                    if announced_here {
                        st.announced_ms = now_ms;
                        None
                    } else if rose {
                        st.announced_ms = now_ms;
                        Some(Said::Started)
                    } else if remind_ms > 0 && now_ms.saturating_sub(st.announced_ms) >= remind_ms {
                        st.announced_ms = now_ms;
                        Some(Said::Reminder)
                    } else {
                        None
                    }
                }
            };
            if let (Some(said), Some(st)) = (said, s.conditions.get(&key)) {
                out.push(self.condition_notice(&key, st, said, &rec.event_id, claim, now_ms));
            }
        }
        out
    }

    /// A standing condition's own notice, under its dedup key: its start (when the
    /// decision's notice is another condition's alert), a reminder, or its resolution.
    fn condition_notice(&self, key: &str, c: &Standing, said: Said, event_id: &str, claim: &Claim, now_ms: TimestampMs) -> Outgoing {
        let record = self.cfg.record_name.trim_end_matches('.');
        let since = format_timestamp(c.since_ms);
        let (kind, status, summary, reason, subject) = match said {
            Said::Started => (
                c.kind.clone(),
                "firing",
                c.summary.clone(),
                "started".to_owned(),
                format!("[kbha {}] {record}: {}", c.severity.as_str(), c.summary),
            ),
            Said::Reminder => (
                c.kind.clone(),
                "firing",
                c.summary.clone(),
                format!("still standing, since {since}"),
                format!("[kbha {}, reminder] {record}: {}", c.severity.as_str(), c.summary),
            ),
            Said::Resolved => (
                "resolved".to_owned(),
                "resolved",
                format!("resolved: {}", c.summary),
                format!("stood from {since} until this decision"),
                format!("[kbha resolved] {record}: {}", c.summary),
            ),
        };
        let message = serde_json::json!({
            "kind": "kbha.notice",
            "function": "failover",
            "type": kind,
            "status": status,
            "severity": c.severity,
            "summary": summary,
            "dedup_key": key,
            "reason": reason,
            "record_name": self.cfg.record_name,
            "event_id": event_id,
            "at": format_timestamp(now_ms),
            "since": since,
            "reminder": said == Said::Reminder,
            "dry_run": self.cfg.dry_run,
        });
        let attributes = BTreeMap::from([
            ("severity".to_owned(), c.severity.as_str().to_owned()),
            ("source".to_owned(), "kbha.failover".to_owned()),
            ("region".to_owned(), self.primary_region().to_owned()),
            ("kind".to_owned(), kind),
            ("dry_run".to_owned(), self.cfg.dry_run.to_string()),
            ("dedup_key".to_owned(), key.to_owned()),
        ]);
        let digest = hex::encode(&sha2::Sha256::digest(key.as_bytes())[..8]);
        Outgoing {
            event_id: format!("{CONDITION_PREFIX}{}-{digest}-{event_id}", said.as_str()),
            alarm: None,
            action: ActionTaken::NoChange,
            change_id: None,
            notice: Notice { subject, message, attributes },
            claim: claim.clone(),
        }
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
            "dedup_key": self.event_key("change_not_insync", id),
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
            ("dedup_key".to_owned(), self.event_key("change_not_insync", id)),
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

/// What a condition's own notice says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    Started,
    Reminder,
    Resolved,
}

impl Said {
    fn as_str(self) -> &'static str {
        match self {
            Said::Started => "started",
            Said::Reminder => "reminder",
            Said::Resolved => "resolved",
        }
    }
}

/// The notice `type` of an action (`no_change`, `applied`, ...).
fn action_name(a: ActionTaken) -> String {
    serde_json::to_value(a).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbha_core::guardrails::Refusal;
    use kbha_core::{FailoverAction, FailoverDecision, Weight};
    use kbha_lambda::record::RecordHeader;

    fn record(action: ActionTaken, alerts: Vec<Alert>, verdict: GuardrailVerdict) -> DecisionRecord {
        let decision = FailoverDecision { action: FailoverAction::Hold, reason: "holding".into(), alerts };
        let policy = Some(crate::Decided {
            decision,
            decided_by: "builtin".into(),
            digest: "sha256:x".into(),
            policy_source: "builtin".into(),
            policy_digest: "sha256:x".into(),
            faults: vec![],
            fault_alert: None,
            shadow_digest: None,
            shadow_agrees: None,
        });
        let inv = kbha_lambda::record::Invocation::at(kbha_core::time::parse_timestamp("2026-11-26T10:00:00Z").unwrap_or_default());
        let mut header = RecordHeader::new("failover", "tick-1", &inv, "app.example.com. A".into(), policy, action);
        header.guardrail = Some(verdict);
        DecisionRecord {
            header,
            alarm: None,
            guardrail_context: None,
            plan: None,
            replication: vec![],
            old_weights: vec![],
            new_weights: vec![
                Weight { set_identifier: "primary".into(), weight: 0 },
                Weight { set_identifier: "secondary".into(), weight: 100 },
            ],
            change_id: None,
            attempts: 1,
            notice_id: None,
        }
    }

    fn alert(severity: Severity, summary: &str) -> Alert {
        Alert { severity, summary: summary.into(), detail: format!("{summary}, in detail") }
    }

    #[test]
    fn a_condition_is_what_it_is_about_not_its_numbers() {
        let at = |age: &str| {
            record(
                ActionTaken::NoChange,
                vec![alert(Severity::Critical, &format!("failover to `secondary` blocked by RPO: data {age} old"))],
                GuardrailVerdict::NoChange,
            )
        };
        let (first, later) = (at("1h 10m"), at("1h 11m"));
        assert_eq!(standing_keys(&first), standing_keys(&later), "the same condition a minute later");
        assert_eq!(conditions(&first)[0].id, "failover to `secondary` blocked by RPO: data #h #m old");
        assert_eq!(conditions(&later)[0].summary, "failover to `secondary` blocked by RPO: data 1h 11m old", "the words keep the numbers");
        let other = record(
            ActionTaken::NoChange,
            vec![alert(Severity::Critical, "failover to `replica-2` blocked by RPO")],
            GuardrailVerdict::NoChange,
        );
        assert_ne!(conditions(&other)[0].id, conditions(&first)[0].id);
    }

    #[test]
    fn refusals_held_and_dry_run_changes_are_conditions_by_kind_and_weights() {
        let refused = record(
            ActionTaken::Refused,
            vec![],
            GuardrailVerdict::Refused { refusals: vec![Refusal::Cooldown { last_change_at_ms: 1_000, allowed_from_ms: 601_000 }] },
        );
        let c = conditions(&refused);
        assert_eq!((c[0].id.as_str(), c[0].severity), ("refused: cooldown", Severity::Warning), "{c:?}");
        let dry = record(ActionTaken::DryRun, vec![], GuardrailVerdict::NoChange);
        assert_eq!(conditions(&dry)[0].id, "dry run: primary=0, secondary=100");
        assert_eq!(standing_keys(&dry), ["dry run: primary=0, secondary=100"]);
        let paused = record(ActionTaken::Paused, vec![], GuardrailVerdict::NoChange);
        assert_eq!(conditions(&paused)[0].id, "held: primary=0, secondary=100");
    }

    #[test]
    fn the_alerts_of_a_change_go_with_the_change_or_what_holds_it() {
        let mut paused = record(
            ActionTaken::Paused,
            vec![alert(Severity::Warning, "replication age of `secondary` unknown")],
            GuardrailVerdict::NoChange,
        );
        if let Some(d) = paused.header.policy.as_mut() {
            d.decision.action = FailoverAction::ShiftWeights { weights: paused.new_weights.clone(), force: false };
        }
        let c = conditions(&paused);
        assert_eq!(c.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["held: primary=0, secondary=100"], "{c:?}");
        assert!(standing_keys(&paused).contains(&"warning: replication age of `secondary` unknown".to_owned()), "said once all the same");
    }

    #[test]
    fn one_condition_per_id_the_most_severe() {
        let rec = record(
            ActionTaken::NoChange,
            vec![alert(Severity::Warning, "every target is down (2 of 2)"), alert(Severity::Critical, "every target is down (2 of 2)")],
            GuardrailVerdict::NoChange,
        );
        let c = conditions(&rec);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].severity, Severity::Critical);
        // Both severities stand: a warning that becomes critical is news.
        assert_eq!(standing_keys(&rec), ["critical: every target is down (# of #)", "warning: every target is down (# of #)"]);
    }
}
