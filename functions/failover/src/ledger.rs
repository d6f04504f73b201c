//! The incident ledger: what happened to traffic during each incident, measured from what
//! the function observed, so `kbha report` can say afterwards whether the promises held
//! (availability, RPO, RTO).
//!
//! An incident opens at the first observed failure of a target carrying traffic and closes
//! when traffic is back on a healthy primary (or an operator closes it). The open incident
//! lives in the state object, changed by the same conditional writes as everything else
//! there; each revision is then copied to its own ledger object
//! (`<KBHA_STATE_PREFIX>incidents/<id>.json`) by a conditional write that never replaces a
//! newer revision. The state object keeps the incident until its last revision is in the
//! ledger object, so a crash between the two writes loses nothing: the next invocation
//! writes it.
//!
//! Everything here is pure; the handler and the operator commands do the I/O.

use kbha_core::guardrails::{Move, share_changes};
use kbha_core::{Condition, Target, TimestampMs, Weight};
use serde::{Deserialize, Serialize};

/// Ledger objects live under this sub-prefix of the state prefix.
pub const LEDGER_DIR: &str = "incidents/";
/// Changes an incident keeps (oldest dropped first; a flapping incident cannot grow the
/// object without bound).
const MAX_CHANGES: usize = 64;
/// Alarm transitions an incident keeps.
const MAX_ALARMS: usize = 64;
/// Operator actions an incident keeps.
const MAX_ACTIONS: usize = 64;

/// One Route 53 change as the ledger and the status page show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEntry {
    /// When it was submitted.
    pub at_ms: TimestampMs,
    /// Route 53 change id (`None` when its answer was lost).
    pub change_id: Option<String>,
    /// Who made it: `kbha` or the operator's AWS identity (ARN).
    pub by: String,
    /// Event or command that asked for it.
    pub event_id: String,
    /// Evacuation, return or rebalance (see [`kbha_core::guardrails::Move`]).
    #[serde(rename = "move")]
    pub kind: Move,
    /// Weights before.
    pub from: Vec<Weight>,
    /// Weights after.
    pub to: Vec<Weight>,
    /// Why.
    pub reason: String,
    /// Replication age of the targets it gave traffic to, at the change (the achieved
    /// RPO of an evacuation); `None` when unknown.
    #[serde(default)]
    pub rpo_ms: Option<u64>,
    /// When Route 53 was first seen to report the change INSYNC (GetChange, read on the
    /// invocation that made it or a later one; so an upper bound).
    #[serde(default)]
    pub insync_at_ms: Option<TimestampMs>,
    /// An alert that the change was not INSYNC in time has been staged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late_alerted: bool,
    /// The stepped shift it belongs to: `<plan id>: step k of n (p %)` or `<plan id>: rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Part of an operator's planned switchover: a planned event, not an incident.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub planned: bool,
}

/// One alarm transition seen during an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmMark {
    /// Alarm name.
    pub name: String,
    /// Target it speaks for.
    pub target: String,
    /// State it moved into (`ALARM`, `OK`, `INSUFFICIENT_DATA`).
    pub state: String,
    /// When CloudWatch says it moved.
    pub at_ms: TimestampMs,
}

/// A period during which a down target carried traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnhealthyPeriod {
    /// The target.
    pub target: String,
    /// From (the incident's first failure for its first target, else the observation).
    pub from_ms: TimestampMs,
    /// Until traffic was off it (the change's INSYNC when known) or it recovered; `None`
    /// while it lasts.
    pub until_ms: Option<TimestampMs>,
}

/// An operator command, as the ledger and the state object record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAction {
    /// When.
    pub at_ms: TimestampMs,
    /// Caller identity (ARN from STS GetCallerIdentity).
    pub by: String,
    /// The command (`pause`, `shift`, `drain`, ...).
    pub command: String,
    /// What it did, in words.
    pub detail: String,
}

/// One incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// `inc-<opened, UTC>-<target>`: sorts by time in the ledger.
    pub id: String,
    /// Record set.
    pub record_name: String,
    /// The target that failed while carrying traffic.
    pub target: String,
    /// The first failure: the earliest evidence of it (the alarm's transition into ALARM,
    /// or the observation of a failing health check).
    pub opened_at_ms: TimestampMs,
    /// When kbha first observed it.
    pub detected_at_ms: TimestampMs,
    /// Alarm transitions of the mapped alarms while the incident was open.
    #[serde(default)]
    pub alarms: Vec<AlarmMark>,
    /// Route 53 changes while it was open, oldest first.
    #[serde(default)]
    pub changes: Vec<ChangeEntry>,
    /// Operator commands while it was open.
    #[serde(default)]
    pub operator_actions: Vec<OperatorAction>,
    /// When the failed target stopped carrying traffic or came back up, whichever first
    /// (service restored: the end of the RTO). `None` while it lasts.
    #[serde(default)]
    pub unhealthy_until_ms: Option<TimestampMs>,
    /// Every period a down target carried traffic during the incident (the failed target's
    /// first, then any other target that failed while carrying traffic).
    #[serde(default)]
    pub unhealthy: Vec<UnhealthyPeriod>,
    /// When traffic was back on a healthy primary (or an operator closed it).
    #[serde(default)]
    pub closed_at_ms: Option<TimestampMs>,
    /// Who closed it: `kbha` or an operator's identity.
    #[serde(default)]
    pub closed_by: Option<String>,
    /// Bumped on every change; the ledger object is only ever replaced by a higher revision.
    pub revision: u64,
    /// The revision last written to the ledger object.
    #[serde(default)]
    pub written_revision: u64,
    /// A planned event (an operator's switchover), not an incident: opened when the
    /// switchover started, closed when it ended. A target failing while carrying traffic
    /// during it makes it an incident.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub planned: bool,
}

/// The figures `kbha report` and `kbha drill` print for one incident, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IncidentFigures {
    /// First failure -> kbha observed it.
    pub detect_ms: i64,
    /// First failure -> the first evacuation change.
    pub evacuate_ms: Option<i64>,
    /// First failure -> Route 53 reported that change INSYNC.
    pub insync_ms: Option<i64>,
    /// Time traffic was served by an unhealthy region: the sum of the incident's unhealthy
    /// periods (the first from the first failure to traffic off it INSYNC or its recovery),
    /// each until now while it lasts.
    pub unhealthy_ms: i64,
    /// Achieved RPO: age of the newest verified backup of the region that took the traffic,
    /// at the evacuation.
    pub rpo_ms: Option<u64>,
    /// RTO: first failure -> service restored (the evacuation INSYNC, or the target back up
    /// when it recovered where it was).
    pub rto_ms: Option<i64>,
    /// First failure -> closed.
    pub duration_ms: Option<i64>,
}

impl Incident {
    /// The first evacuation change (traffic off the failed target).
    pub fn evacuation(&self) -> Option<&ChangeEntry> {
        self.changes.iter().find(|c| c.kind == Move::Evacuation)
    }

    /// The figures of this incident as of `now_ms` (for one still open).
    pub fn figures(&self, now_ms: TimestampMs) -> IncidentFigures {
        let since = |t: TimestampMs| t.saturating_sub(self.opened_at_ms);
        let evac = self.evacuation();
        IncidentFigures {
            detect_ms: since(self.detected_at_ms),
            evacuate_ms: evac.map(|c| since(c.at_ms)),
            insync_ms: evac.and_then(|c| c.insync_at_ms).map(since),
            unhealthy_ms: self.unhealthy_within(i64::MIN, now_ms, now_ms),
            rpo_ms: evac.and_then(|c| c.rpo_ms),
            rto_ms: self.unhealthy_until_ms.map(since),
            duration_ms: self.closed_at_ms.map(since),
        }
    }

    /// Milliseconds of unhealthy periods within `[from_ms, to_ms)`, open ones until `now_ms`.
    pub fn unhealthy_within(&self, from_ms: TimestampMs, to_ms: TimestampMs, now_ms: TimestampMs) -> i64 {
        self.unhealthy.iter().map(|p| (p.until_ms.unwrap_or(now_ms).min(to_ms) - p.from_ms.max(from_ms)).max(0)).sum()
    }

    /// The ledger object key under `prefix` (the state prefix).
    pub fn key(&self, prefix: &str) -> String {
        format!("{prefix}{LEDGER_DIR}{}.json", self.id)
    }

    /// Every change of this incident is INSYNC (or was submitted `give_up_ms` ago or
    /// more, when waiting longer tells nothing new).
    pub fn changes_settled(&self, now_ms: TimestampMs, give_up_ms: i64) -> bool {
        self.changes.iter().all(|c| c.insync_at_ms.is_some() || c.change_id.is_none() || now_ms - c.at_ms >= give_up_ms)
    }

    fn bump(&mut self) {
        self.revision += 1;
    }

    /// Adds an operator action.
    pub fn add_action(&mut self, a: OperatorAction) {
        push_bounded(&mut self.operator_actions, a, MAX_ACTIONS);
        self.bump();
    }

    /// Adds a change (once per change id / event).
    pub fn add_change(&mut self, c: &ChangeEntry) {
        if self.changes.iter().any(|e| e.event_id == c.event_id && e.at_ms == c.at_ms) {
            return;
        }
        push_bounded(&mut self.changes, c.clone(), MAX_CHANGES);
        self.bump();
    }

    /// Copies what is known of `c` (INSYNC time, late alert) onto the same change here.
    pub fn update_change(&mut self, c: &ChangeEntry) {
        if let Some(mine) = self.changes.iter_mut().find(|e| e.event_id == c.event_id && e.at_ms == c.at_ms)
            && *mine != *c
        {
            *mine = c.clone();
            self.revision += 1;
        }
        // Traffic was off the failed target once Route 53 had the evacuation everywhere.
        if self.evacuation().is_some_and(|e| e.event_id == c.event_id && e.at_ms == c.at_ms)
            && self.unhealthy_until_ms == Some(c.at_ms)
            && let Some(insync) = c.insync_at_ms
        {
            self.unhealthy_until_ms = Some(insync);
            self.revision += 1;
        }
        // The same for any unhealthy period this change ended.
        if let Some(insync) = c.insync_at_ms {
            let shed = |t: &str| {
                c.from.iter().any(|w| w.set_identifier == t && w.weight > 0) && c.to.iter().any(|w| w.set_identifier == t && w.weight == 0)
            };
            for p in self.unhealthy.iter_mut().filter(|p| p.until_ms == Some(c.at_ms) && shed(&p.target)) {
                p.until_ms = Some(insync);
                self.revision += 1;
            }
        }
    }

    /// Closes it (idempotent).
    pub fn close(&mut self, at_ms: TimestampMs, by: &str) {
        if self.closed_at_ms.is_none() {
            self.closed_at_ms = Some(at_ms);
            self.closed_by = Some(by.to_owned());
            if !self.planned {
                self.unhealthy_until_ms.get_or_insert(at_ms);
            }
            for p in self.unhealthy.iter_mut().filter(|p| p.until_ms.is_none()) {
                p.until_ms = Some(at_ms);
            }
            self.bump();
        }
    }
}

/// Whether `t` carries traffic under the weights of `targets` (all-zero: all do).
fn carries(targets: &[Target], t: &Target) -> bool {
    t.weight > 0 || targets.iter().all(|x| x.weight == 0)
}

/// Opens, advances or closes the incident on one observation: `targets` as observed (with
/// the weights in Route 53 after this invocation's change, if any), `alarms` the mapped
/// alarms' current (name, target, state, since). Returns whether anything changed.
pub fn observe(incident: &mut Option<Incident>, record_name: &str, targets: &[Target], alarms: &[AlarmMark], now_ms: TimestampMs) -> bool {
    observe_with_plan(incident, record_name, targets, alarms, false, now_ms)
}

/// A planned event for the switchover `plan_id` to `target`, started by `by` at `now_ms`.
pub fn planned_event(record_name: &str, plan_id: &str, target: &str, now_ms: TimestampMs) -> Incident {
    Incident {
        id: plan_id.to_owned(),
        record_name: record_name.to_owned(),
        target: target.to_owned(),
        opened_at_ms: now_ms,
        detected_at_ms: now_ms,
        alarms: vec![],
        changes: vec![],
        operator_actions: vec![],
        unhealthy_until_ms: None,
        unhealthy: vec![],
        closed_at_ms: None,
        closed_by: None,
        revision: 1,
        written_revision: 0,
        planned: true,
    }
}

/// [`observe`], knowing whether a stepped shift is under way (`plan_under_way`): an
/// incident stays open until its stepped return ends (its steps and a rollback belong to
/// it), and a planned event closes when its switchover ends.
pub fn observe_with_plan(
    incident: &mut Option<Incident>,
    record_name: &str,
    targets: &[Target],
    alarms: &[AlarmMark],
    plan_under_way: bool,
    now_ms: TimestampMs,
) -> bool {
    let down_carrier = targets.iter().find(|t| t.condition() == Condition::Down && carries(targets, t));
    if let (Some(inc), Some(t)) = (incident.as_mut().filter(|i| i.closed_at_ms.is_none() && i.planned), down_carrier) {
        // A target failed during a planned switchover: from here it is an incident.
        let alarm_since = alarms.iter().filter(|a| a.target == t.set_identifier && a.state == "ALARM").map(|a| a.at_ms).min();
        inc.planned = false;
        inc.target = t.set_identifier.clone();
        inc.opened_at_ms = alarm_since.map_or(now_ms, |s| s.min(now_ms));
        inc.detected_at_ms = now_ms;
        inc.unhealthy.push(UnhealthyPeriod { target: t.set_identifier.clone(), from_ms: inc.opened_at_ms, until_ms: None });
        inc.bump();
    }
    let Some(inc) = incident.as_mut().filter(|i| i.closed_at_ms.is_none()) else {
        if incident.is_some() {
            // A closed incident still being written to its ledger object: a new failure
            // waits for the next invocation, which finds it written and gone.
            return false;
        }
        let Some(t) = down_carrier else { return false };
        // The earliest evidence: an alarm of this target in ALARM since before now.
        let alarm_since = alarms.iter().filter(|a| a.target == t.set_identifier && a.state == "ALARM").map(|a| a.at_ms).min();
        let opened = alarm_since.map_or(now_ms, |s| s.min(now_ms));
        let mut inc = Incident {
            id: format!("inc-{}-{}", kbha_core::time::format_timestamp(opened).replace(':', ""), t.set_identifier),
            record_name: record_name.to_owned(),
            target: t.set_identifier.clone(),
            opened_at_ms: opened,
            detected_at_ms: now_ms,
            alarms: vec![],
            changes: vec![],
            operator_actions: vec![],
            unhealthy_until_ms: None,
            unhealthy: vec![UnhealthyPeriod { target: t.set_identifier.clone(), from_ms: opened, until_ms: None }],
            closed_at_ms: None,
            closed_by: None,
            revision: 1,
            written_revision: 0,
            planned: false,
        };
        note_alarms(&mut inc, alarms);
        *incident = Some(inc);
        return true;
    };
    let before = inc.revision;
    note_alarms(inc, alarms);
    if inc.planned {
        if !plan_under_way {
            inc.close(now_ms, "kbha");
        }
        return inc.revision != before;
    }
    if inc.unhealthy_until_ms.is_none() {
        let failed = targets.iter().find(|t| t.set_identifier == inc.target);
        let off = failed.is_none_or(|t| !carries(targets, t) || t.condition() == Condition::Up);
        if off {
            // Traffic left it (from the change's INSYNC when known) or it recovered in place.
            let evac_insync = inc.evacuation().and_then(|c| c.insync_at_ms.or(Some(c.at_ms)));
            inc.unhealthy_until_ms = Some(evac_insync.unwrap_or(now_ms).min(now_ms));
            inc.bump();
        }
    }
    // Unhealthy periods: one per down target carrying traffic, ended when it stops (from
    // the change's INSYNC, filled in by `update_change`) or recovers.
    for p in inc.unhealthy.iter_mut().filter(|p| p.until_ms.is_none()) {
        let off =
            targets.iter().find(|t| t.set_identifier == p.target).is_none_or(|t| !carries(targets, t) || t.condition() != Condition::Down);
        if off {
            let shed_by =
                inc.changes.iter().rev().find(|c| c.at_ms <= now_ms && c.to.iter().any(|w| w.set_identifier == p.target && w.weight == 0));
            p.until_ms = Some(shed_by.map_or(now_ms, |c| c.insync_at_ms.unwrap_or(c.at_ms)).max(p.from_ms).min(now_ms));
            inc.revision += 1;
        }
    }
    for t in targets.iter().filter(|t| t.condition() == Condition::Down && carries(targets, t)) {
        if !inc.unhealthy.iter().any(|p| p.target == t.set_identifier && p.until_ms.is_none()) {
            // As when an incident opens: from the alarm's transition into ALARM when it came
            // before this observation, but never before this target's previous period ended
            // (a failure during a stepped return, the other side failing).
            let ended = inc.unhealthy.iter().filter(|p| p.target == t.set_identifier).filter_map(|p| p.until_ms).max();
            let alarm_since = alarms
                .iter()
                .filter(|a| a.target == t.set_identifier && a.state == "ALARM" && ended.is_none_or(|e| a.at_ms >= e))
                .map(|a| a.at_ms)
                .min();
            let from_ms = alarm_since.map_or(now_ms, |s| s.min(now_ms));
            inc.unhealthy.push(UnhealthyPeriod { target: t.set_identifier.clone(), from_ms, until_ms: None });
            inc.revision += 1;
        }
    }
    let primary_back = targets.iter().any(|t| t.primary && t.condition() == Condition::Up && carries(targets, t));
    let no_down_carrier = down_carrier.is_none();
    if primary_back && no_down_carrier && !plan_under_way {
        inc.close(now_ms, "kbha");
    }
    inc.revision != before
}

fn note_alarms(inc: &mut Incident, alarms: &[AlarmMark]) {
    for a in alarms {
        // A transition at or after the first failure, not yet noted.
        if a.at_ms + 60_000 >= inc.opened_at_ms && !inc.alarms.contains(a) {
            push_bounded(&mut inc.alarms, a.clone(), MAX_ALARMS);
            inc.bump();
        }
    }
}

/// The weights after a change, applied to the observed targets (so the incident sees the
/// traffic where this invocation put it).
pub fn with_weights(targets: &[Target], weights: &[Weight]) -> Vec<Target> {
    targets
        .iter()
        .map(|t| {
            let mut t = t.clone();
            if let Some(w) = weights.iter().find(|w| w.set_identifier == t.set_identifier) {
                t.weight = w.weight;
            }
            t
        })
        .collect()
}

/// Replication age (ms) of the targets whose share rises from `from` to `to`: the worst of
/// them, `None` if any is unknown or none rises.
pub fn rpo_of(targets: &[Target], from: &[Weight], to: &[Weight]) -> Option<u64> {
    let old: Vec<u32> = from.iter().map(|w| w.weight).collect();
    let new: Vec<u32> = to.iter().map(|w| w.weight).collect();
    let mut worst: Option<u64> = None;
    for (w, c) in to.iter().zip(share_changes(&old, &new)) {
        if c.is_gt() {
            let age = targets.iter().find(|t| t.set_identifier == w.set_identifier)?.replication_age_ms?;
            worst = Some(worst.map_or(age, |x: u64| x.max(age)));
        }
    }
    worst
}

/// The promises a report checks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Objectives {
    /// Availability SLO, percent (99.95).
    pub slo_percent: f64,
    /// Recovery point objective, ms.
    pub rpo_ms: u64,
    /// Recovery time objective, ms.
    pub rto_ms: i64,
}

/// One incident in a report.
#[derive(Debug, Clone, Serialize)]
pub struct ReportedIncident {
    /// The ledger entry.
    pub incident: Incident,
    /// Its figures.
    pub figures: IncidentFigures,
    /// Achieved RPO within the objective (`None`: unknown).
    pub rpo_met: Option<bool>,
    /// RTO within the objective (`None`: not restored yet).
    pub rto_met: Option<bool>,
}

/// What `kbha report` says about a window.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Window start, ms.
    pub from_ms: TimestampMs,
    /// Window end, ms.
    pub to_ms: TimestampMs,
    /// The objectives checked.
    pub objectives: Objectives,
    /// Minutes traffic was served by an unhealthy region within the window.
    pub unavailable_minutes: f64,
    /// Availability over the window, percent.
    pub availability_percent: f64,
    /// Error budget of the window, minutes: (100 - SLO) % of it.
    pub budget_minutes: f64,
    /// Budget left, minutes (negative: overspent).
    pub budget_left_minutes: f64,
    /// Availability met the SLO.
    pub slo_met: bool,
    /// Incidents that overlap the window, oldest first.
    pub incidents: Vec<ReportedIncident>,
    /// Planned events (operator switchovers) that overlap the window, oldest first: not
    /// incidents, and no part of the availability figure.
    #[serde(default)]
    pub planned: Vec<ReportedIncident>,
}

/// Summarises `incidents` over `[from_ms, to_ms)`: availability counts the time traffic was
/// served by an unhealthy region (each incident's `unhealthy_ms`, clipped to the window).
pub fn report(mut incidents: Vec<Incident>, from_ms: TimestampMs, to_ms: TimestampMs, objectives: Objectives) -> Report {
    incidents.sort_by_key(|i| i.opened_at_ms);
    let window_ms = (to_ms - from_ms).max(1);
    let mut unavailable_ms = 0i64;
    let mut reported = Vec::new();
    let mut planned = Vec::new();
    for i in incidents {
        let f = i.figures(to_ms);
        let end = i.closed_at_ms.unwrap_or(to_ms);
        if end < from_ms || i.opened_at_ms >= to_ms {
            continue;
        }
        if i.planned {
            planned.push(ReportedIncident { rpo_met: None, rto_met: None, incident: i, figures: f });
            continue;
        }
        unavailable_ms += i.unhealthy_within(from_ms, to_ms, to_ms);
        reported.push(ReportedIncident {
            rpo_met: f.rpo_ms.map(|r| r <= objectives.rpo_ms),
            rto_met: f.rto_ms.map(|r| r <= objectives.rto_ms),
            incident: i,
            figures: f,
        });
    }
    let minutes = |ms: i64| ms as f64 / 60_000.0;
    let availability_percent = 100.0 * (1.0 - unavailable_ms as f64 / window_ms as f64);
    let budget_minutes = minutes(window_ms) * (100.0 - objectives.slo_percent) / 100.0;
    Report {
        from_ms,
        to_ms,
        objectives,
        unavailable_minutes: minutes(unavailable_ms),
        availability_percent,
        budget_minutes,
        budget_left_minutes: budget_minutes - minutes(unavailable_ms),
        slo_met: availability_percent >= objectives.slo_percent,
        incidents: reported,
        planned,
    }
}

fn push_bounded<T>(v: &mut Vec<T>, x: T, max: usize) {
    v.push(x);
    if v.len() > max {
        let extra = v.len() - max;
        v.drain(..extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbha_core::{AlarmState, Health};

    const MIN: i64 = 60_000;

    fn t(id: &str, weight: u32, healthy: bool) -> Target {
        Target {
            set_identifier: id.into(),
            region: format!("r-{id}"),
            primary: id == "primary",
            weight,
            health: if healthy { Health::Healthy } else { Health::Unhealthy },
            alarm_state: AlarmState::Ok,
            alarm_state_since_ms: None,
            up_since_ms: None,
            last_down_at_ms: None,
            replication_age_ms: Some(20 * MIN as u64),
        }
    }

    fn alarm(target: &str, state: &str, at: i64) -> AlarmMark {
        AlarmMark { name: format!("{target}-down"), target: target.into(), state: state.into(), at_ms: at }
    }

    fn change(kind: Move, at: i64, insync: Option<i64>) -> ChangeEntry {
        ChangeEntry {
            at_ms: at,
            change_id: Some(format!("C{at}")),
            by: "kbha".into(),
            event_id: format!("e{at}"),
            kind,
            from: vec![],
            to: vec![],
            reason: String::new(),
            rpo_ms: Some(20 * MIN as u64),
            insync_at_ms: insync,
            late_alerted: false,
            plan: None,
            planned: false,
        }
    }

    #[test]
    fn fail_evacuate_recover_return_is_one_incident_with_its_figures() {
        let mut inc = None;
        // The alarm went ALARM at 10:00, kbha saw it at 10:00:02.
        let alarms = [alarm("primary", "ALARM", 100 * MIN)];
        assert!(observe(&mut inc, "api.", &[t("primary", 100, false), t("secondary", 0, true)], &alarms, 100 * MIN + 2_000));
        let i = inc.as_mut().expect("opened");
        assert_eq!((i.opened_at_ms, i.detected_at_ms, i.target.as_str()), (100 * MIN, 100 * MIN + 2_000, "primary"));
        // The evacuation, INSYNC 40 s later.
        i.add_change(&change(Move::Evacuation, 100 * MIN + 2_000, Some(100 * MIN + 42_000)));
        observe(&mut inc, "api.", &[t("primary", 0, false), t("secondary", 100, true)], &alarms, 100 * MIN + 42_000);
        assert_eq!(inc.as_ref().and_then(|i| i.unhealthy_until_ms), Some(100 * MIN + 42_000));
        // Primary up again, still no traffic: open.
        observe(&mut inc, "api.", &[t("primary", 0, true), t("secondary", 100, true)], &[], 120 * MIN);
        assert!(inc.as_ref().is_some_and(|i| i.closed_at_ms.is_none()));
        // Failback: closed.
        inc.as_mut().expect("open").add_change(&change(Move::Return, 130 * MIN, None));
        observe(&mut inc, "api.", &[t("primary", 100, true), t("secondary", 0, true)], &[], 130 * MIN);
        let i = inc.expect("closed, kept until written");
        assert_eq!(i.closed_at_ms, Some(130 * MIN));
        let f = i.figures(200 * MIN);
        assert_eq!(f.detect_ms, 2_000);
        assert_eq!(f.evacuate_ms, Some(2_000));
        assert_eq!(f.insync_ms, Some(42_000));
        assert_eq!(f.unhealthy_ms, 42_000);
        assert_eq!(f.rto_ms, Some(42_000));
        assert_eq!(f.rpo_ms, Some(20 * MIN as u64));
        assert_eq!(f.duration_ms, Some(30 * MIN));
    }

    #[test]
    fn a_failure_of_a_target_without_traffic_is_no_incident_and_a_blip_that_recovers_in_place_is_a_short_one() {
        let mut inc = None;
        assert!(!observe(&mut inc, "api.", &[t("primary", 100, true), t("secondary", 0, false)], &[], MIN));
        assert!(inc.is_none());
        observe(&mut inc, "api.", &[t("primary", 100, false), t("secondary", 0, true)], &[], 2 * MIN);
        observe(&mut inc, "api.", &[t("primary", 100, true), t("secondary", 0, true)], &[], 3 * MIN);
        let i = inc.expect("kept until written");
        assert_eq!((i.closed_at_ms, i.unhealthy_until_ms), (Some(3 * MIN), Some(3 * MIN)));
        assert_eq!(i.figures(9 * MIN).rto_ms, Some(MIN));
        assert_eq!(i.figures(9 * MIN).evacuate_ms, None);
    }

    #[test]
    fn the_other_side_failing_during_an_incident_keeps_it_open_and_a_closed_one_waits_to_be_written() {
        let mut inc = None;
        observe(&mut inc, "api.", &[t("primary", 100, false), t("secondary", 0, true)], &[], MIN);
        inc.as_mut().expect("open").add_change(&change(Move::Evacuation, MIN, Some(MIN + 30_000)));
        // The secondary fails while carrying everything: still the same incident, open.
        observe(&mut inc, "api.", &[t("primary", 0, true), t("secondary", 100, false)], &[], 5 * MIN);
        assert!(inc.as_ref().is_some_and(|i| i.closed_at_ms.is_none() && i.target == "primary"));
        inc.as_mut().expect("open").add_change(&change(Move::Evacuation, 5 * MIN, None));
        observe(&mut inc, "api.", &[t("primary", 100, true), t("secondary", 0, false)], &[], 6 * MIN);
        assert_eq!(inc.as_ref().and_then(|i| i.closed_at_ms), Some(6 * MIN));
        let i = inc.as_ref().expect("kept");
        assert_eq!(
            i.unhealthy.iter().map(|p| p.target.as_str()).collect::<Vec<_>>(),
            ["primary", "secondary"],
            "both sides' time on a down target counts"
        );
        assert!(i.unhealthy.iter().all(|p| p.until_ms.is_some()));
        assert_eq!(i.figures(9 * MIN).unhealthy_ms, (5 * MIN - MIN) + (6 * MIN - 5 * MIN));
        // Closed but not yet written: a new failure does not reopen it.
        assert!(!observe(&mut inc, "api.", &[t("primary", 100, false), t("secondary", 0, false)], &[], 7 * MIN));
    }

    #[test]
    fn a_failure_during_a_stepped_return_counts_from_its_alarm_not_from_its_detection() {
        let mut inc = None;
        observe_with_plan(
            &mut inc,
            "api.",
            &[t("primary", 100, false), t("secondary", 0, true)],
            &[alarm("primary", "ALARM", MIN)],
            false,
            MIN,
        );
        inc.as_mut().expect("open").add_change(&change(Move::Evacuation, MIN, Some(MIN + 30_000)));
        observe_with_plan(&mut inc, "api.", &[t("primary", 0, true), t("secondary", 100, true)], &[], false, 20 * MIN);
        // The return's first step, then the primary's alarm at 30:00, seen at 30:40.
        observe_with_plan(&mut inc, "api.", &[t("primary", 10, true), t("secondary", 90, true)], &[], true, 25 * MIN);
        let late = [alarm("primary", "ALARM", MIN), alarm("primary", "ALARM", 30 * MIN)];
        observe_with_plan(&mut inc, "api.", &[t("primary", 10, false), t("secondary", 90, true)], &late, true, 30 * MIN + 40_000);
        let i = inc.as_ref().expect("open");
        assert!(i.closed_at_ms.is_none(), "a stepped return keeps its incident open");
        let froms: Vec<i64> = i.unhealthy.iter().map(|p| p.from_ms).collect();
        assert_eq!(froms, [MIN, 30 * MIN], "the second period starts at its own alarm, not the first one's");
    }

    #[test]
    fn a_report_spends_the_error_budget_on_unhealthy_time_within_the_window() {
        let mut inc = None;
        observe(&mut inc, "api.", &[t("primary", 100, false), t("secondary", 0, true)], &[], 1_000 * MIN);
        let mut i = inc.expect("open");
        i.add_change(&change(Move::Evacuation, 1_000 * MIN + 60_000, Some(1_000 * MIN + 120_000)));
        i.unhealthy_until_ms = Some(1_000 * MIN + 120_000);
        i.unhealthy[0].until_ms = Some(1_000 * MIN + 120_000);
        i.close(1_100 * MIN, "kbha");
        let obj = Objectives { slo_percent: 99.95, rpo_ms: 3_600_000, rto_ms: 4 * 3_600_000 };
        // 30 days: budget 21.6 min; 2 min spent.
        let r = report(vec![i.clone()], 1_200 * MIN - 30 * 1_440 * MIN, 1_200 * MIN, obj);
        assert!((r.budget_minutes - 21.6).abs() < 1e-9, "{}", r.budget_minutes);
        assert!((r.unavailable_minutes - 2.0).abs() < 1e-9);
        assert!((r.budget_left_minutes - 19.6).abs() < 1e-9);
        assert!(r.slo_met);
        assert_eq!(r.incidents.len(), 1);
        assert_eq!((r.incidents[0].rpo_met, r.incidents[0].rto_met), (Some(true), Some(true)));
        // A window after the incident does not count it.
        let r = report(vec![i], 1_200 * MIN, 1_300 * MIN, obj);
        assert!(r.incidents.is_empty() && r.availability_percent == 100.0);
    }

    #[test]
    fn the_achieved_rpo_is_the_age_of_the_target_given_traffic() {
        let targets = [t("primary", 100, false), t("secondary", 0, true)];
        let w =
            |p, s| vec![Weight { set_identifier: "primary".into(), weight: p }, Weight { set_identifier: "secondary".into(), weight: s }];
        assert_eq!(rpo_of(&targets, &w(100, 0), &w(0, 100)), Some(20 * MIN as u64));
        assert_eq!(rpo_of(&targets, &w(100, 0), &w(100, 0)), None);
    }
}
