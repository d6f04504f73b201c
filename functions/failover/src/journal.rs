//! The state object and its journal: what the function remembers between invocations
//! beside kbha-core's [`FailoverState`] (alarms, history, last change): the changes it
//! started and has not finished, and the notices due and not yet sent, each with the
//! claim of the invocation that sends it.

use std::collections::BTreeMap;

use kbha_core::state::{FailoverState, Freshness};
use kbha_core::{Alarm, LastChange, Severity, TimestampMs, Weight};
use kbha_lambda::claim::Claim;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::handler::ActionTaken;
use crate::ledger::{ChangeEntry, Incident, OperatorAction};
use crate::ops::OpsState;
use crate::plan::PlanUpdate;
use kbha_core::plan::ActivePlan;

/// Unfinished changes kept in the state object (oldest dropped first).
pub(crate) const MAX_PENDING: usize = 32;
/// Unsent notices kept in the state object (oldest dropped first).
pub(crate) const MAX_OUTBOX: usize = 32;
/// Another invocation's unfinished change this much older than ours is left over from
/// a run that was never retried, not a rival for the same transition.
pub(crate) const RIVAL_WINDOW_MS: TimestampMs = 5 * 60 * 1000;
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
    /// Operators' marks: pause, drains, failback approval ([`crate::ops`]).
    #[serde(default, skip_serializing_if = "OpsState::is_empty")]
    pub ops: OpsState,
    /// Recent Route 53 changes, kbha's and operators', oldest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ChangeEntry>,
    /// Recent operator commands, oldest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<OperatorAction>,
    /// The open incident (and a closed one until it is in its ledger object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<Incident>,
    /// The stepped shift under way ([`crate::plan`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ActivePlan>,
    /// Ids of the last plans that ended, so a late copy of a step does not revive one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended_plans: Vec<String>,
    /// The conditions announced as alerts of their own and standing since, by dedup key
    /// ([`crate::announce`]): reminded while they last, resolved when they end.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, Standing>,
}

/// A standing condition, as last announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// How urgent.
    pub severity: Severity,
    /// In words, as last seen.
    pub summary: String,
    /// The notice `type` it was announced with (`no_change`, `refused`, `paused`, `dry_run`).
    pub kind: String,
    /// Since when it stands.
    pub since_ms: TimestampMs,
    /// When a notice last said it (first, escalation or reminder).
    pub announced_ms: TimestampMs,
}

/// A notice due for one event, and who sends it. Staged in the same conditional write
/// that records the decision, so two copies of one transition stage it once, and only
/// the claim's holder publishes it (see [`kbha_lambda::claim`]); removed once sent.
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
    /// The change as the ledger records it once made (entries written before the
    /// ledger existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<ChangeEntry>,
    /// What the change does to the stepped shift under way, applied when it is recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlanUpdate>,
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
    pub(crate) fn put_pending(&mut self, p: PendingChange) {
        self.pending.retain(|e| e.event_id != p.event_id);
        self.pending.push(p);
        if self.pending.len() > MAX_PENDING {
            let extra = self.pending.len() - MAX_PENDING;
            self.pending.drain(..extra);
        }
    }

    pub(crate) fn drop_pending(&mut self, event_id: &str) {
        self.pending.retain(|e| e.event_id != event_id);
    }

    /// Records a finished change (alarm, event, last change), stages its notice (a change
    /// is always announced) and closes its journal entry.
    pub(crate) fn finish(&mut self, p: &PendingChange, change_id: Option<&str>, claim: &Claim) {
        let mut notice = p.notice.clone();
        let change_id = change_id.map(str::to_owned).or(p.change_id.clone());
        if change_id.is_some() && !notice.message.is_null() {
            notice.message["change_id"] = serde_json::json!(change_id);
        }
        let o = Outgoing {
            event_id: p.event_id.clone(),
            alarm: p.alarm.clone(),
            action: ActionTaken::Applied,
            change_id: change_id.clone(),
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
        if let Some(mut e) = p.entry.clone() {
            e.change_id = change_id;
            crate::ops::record_change(self, &e);
        }
        for u in &p.plan {
            crate::plan::apply(self, u, p.at_ms);
        }
        self.drop_pending(&p.event_id);
    }

    /// Puts a notice in the outbox, unless it is staged already (by an earlier attempt,
    /// or a copy of the event with the same id) or, when not `always`, its transition is
    /// handled elsewhere: recorded by another copy, or the subject of another copy's
    /// unfinished change (whose notice announces it). Call it before recording the
    /// alarm, which makes the transition a duplicate.
    pub(crate) fn stage(&mut self, o: Outgoing, always: bool) {
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
    pub(crate) fn outgoing(&self, event_id: &str, alarm: Option<&Alarm>) -> Option<&Outgoing> {
        self.outbox.iter().find(|o| o.event_id == event_id).or_else(|| {
            let a = alarm?;
            self.outbox.iter().find(|o| o.alarm.as_ref().is_some_and(|oa| same_transition(oa, a)))
        })
    }
}

/// Two alarms describe the same transition (copies of one CloudWatch state change).
pub(crate) fn same_transition(a: &Alarm, b: &Alarm) -> bool {
    a.name == b.name && a.state == b.state && a.state_changed_at_ms == b.state_changed_at_ms
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
            entry: None,
            plan: vec![],
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
    pub(crate) fn finishing_a_change_records_it_stages_its_notice_with_the_change_id_and_closes_the_journal_entry() {
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
