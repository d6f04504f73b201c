//! What the failover function remembers between invocations, as a pure value.
//!
//! The function keeps one [`FailoverState`] per record set in an S3 object written
//! with conditional writes (If-Match on its ETag), so it survives cold starts and
//! concurrent invocations serialise on it. Route 53, its health checks and CloudWatch
//! stay the truth, read on every invocation; this object holds only history they cannot
//! give: the alarm transitions seen (for stale and duplicate detection, and the state of
//! an alarm CloudWatch does not know), each target's observed up/down history (for the
//! hysteresis), the last change kbha made (for the cooldown) and the alerts standing
//! (so a condition that lasts is announced once).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Alarm, AlarmState, Condition, LastChange, TimestampMs};

/// How many handled event ids are remembered for duplicate detection.
pub const REMEMBERED_EVENTS: usize = 256;

/// One alarm's last recorded transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedAlarm {
    /// State it moved into.
    pub state: AlarmState,
    /// When.
    pub changed_at_ms: TimestampMs,
    /// Target it speaks for.
    #[serde(default)]
    pub target: Option<String>,
}

/// The failover function's memory for one record set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverState {
    /// Last transition of every alarm seen, by alarm name.
    #[serde(default)]
    pub alarms: BTreeMap<String, RecordedAlarm>,
    /// The last change kbha applied.
    #[serde(default)]
    pub last_change: Option<LastChange>,
    /// Ids of recently handled events, oldest first.
    #[serde(default)]
    pub handled_events: Vec<String>,
    /// Observed up/down history of each target, by set identifier.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub history: BTreeMap<String, TargetHistory>,
    /// The alerts of the last decision (`severity: summary`), so an alert that stands
    /// tick after tick is announced once, not on every tick.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standing_alerts: Vec<String>,
}

/// What kbha has observed of one target over time. Hysteresis counts from the last
/// observed failure, not from alarm transitions: a health-check flap that never tripped an
/// alarm still counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHistory {
    /// The last time it was seen down: an observation (health check failing or an alarm
    /// in ALARM), or the end of an ALARM period that an event or CloudWatch reported.
    #[serde(default)]
    pub last_down_at_ms: Option<TimestampMs>,
    /// The last time it was seen unproven (an alarm with insufficient data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_unproven_at_ms: Option<TimestampMs>,
    /// Since when it has been up: the last time it was seen down or unproven, provided
    /// every observation since found it up; the first observation when there is no such
    /// time. `None` while it is not up.
    #[serde(default)]
    pub up_since_ms: Option<TimestampMs>,
}

impl TargetHistory {
    /// Notes that the target was down at `at_ms` (possibly in the past: an alarm period
    /// that ended then). An up period that started before it is broken.
    pub fn down_at(&mut self, at_ms: TimestampMs) {
        self.last_down_at_ms = Some(self.last_down_at_ms.map_or(at_ms, |t| t.max(at_ms)));
        if self.up_since_ms.is_some_and(|s| s < at_ms) {
            self.up_since_ms = None;
        }
    }

    /// Notes the target's condition observed at `now_ms`.
    pub fn observe(&mut self, condition: Condition, now_ms: TimestampMs) {
        match condition {
            Condition::Down => {
                self.down_at(now_ms);
                self.up_since_ms = None;
            }
            Condition::Unproven => {
                self.last_unproven_at_ms = Some(self.last_unproven_at_ms.map_or(now_ms, |t| t.max(now_ms)));
                self.up_since_ms = None;
            }
            Condition::Up => {
                let last_not_up = self.last_down_at_ms.max(self.last_unproven_at_ms);
                let start = self.up_since_ms.or(last_not_up).unwrap_or(now_ms);
                // A replay earlier than the recorded start: up since `now` at the latest.
                self.up_since_ms = Some(start.min(now_ms));
            }
        }
    }
}

/// How an alarm event relates to what was already recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// A transition newer than anything recorded for this alarm.
    New,
    /// This event (or this very transition) was handled already.
    Duplicate,
    /// Older than the alarm's recorded transition or than the last applied change.
    Stale,
}

impl FailoverState {
    /// Classifies `alarm` (delivered as `event_id`) against the recorded state.
    pub fn freshness(&self, event_id: &str, alarm: &Alarm) -> Freshness {
        if self.handled_events.iter().any(|e| e == event_id) {
            return Freshness::Duplicate;
        }
        if let Some(rec) = self.alarms.get(&alarm.name) {
            if rec.changed_at_ms == alarm.state_changed_at_ms && rec.state == alarm.state {
                return Freshness::Duplicate;
            }
            if alarm.state_changed_at_ms < rec.changed_at_ms {
                return Freshness::Stale;
            }
        }
        if self.last_change.as_ref().is_some_and(|last| alarm.state_changed_at_ms < last.at_ms) {
            return Freshness::Stale;
        }
        Freshness::New
    }

    /// Records a transition if it is newer than the one recorded for that alarm, and
    /// what it says of its target's history: down at the transition when it entered
    /// ALARM, down until the transition when it left ALARM.
    pub fn record_alarm(&mut self, alarm: &Alarm) {
        let was_alarm = alarm.previous_state == Some(AlarmState::Alarm);
        self.record_alarm_state(&alarm.name, alarm.state, alarm.state_changed_at_ms, alarm.target.as_deref(), was_alarm);
    }

    /// Records an alarm's state as of `changed_at_ms` (from an event, or read from
    /// CloudWatch) if newer than the recorded one. `left_alarm`: the state before was
    /// ALARM (when the caller knows; a recorded ALARM counts too).
    pub fn record_alarm_state(
        &mut self,
        name: &str,
        state: AlarmState,
        changed_at_ms: TimestampMs,
        target: Option<&str>,
        left_alarm: bool,
    ) {
        let recorded = self.alarms.get(name);
        let newer = recorded.is_none_or(|r| changed_at_ms >= r.changed_at_ms);
        let left_alarm = left_alarm || recorded.is_some_and(|r| r.state == AlarmState::Alarm && changed_at_ms > r.changed_at_ms);
        if let Some(t) = target
            && (state == AlarmState::Alarm || left_alarm)
        {
            self.history.entry(t.to_owned()).or_default().down_at(changed_at_ms);
        }
        if newer {
            self.alarms.insert(name.to_owned(), RecordedAlarm { state, changed_at_ms, target: target.map(str::to_owned) });
        }
    }

    /// Notes each target's condition observed at `now_ms`.
    pub fn observe<'a>(&mut self, observed: impl IntoIterator<Item = (&'a str, Condition)>, now_ms: TimestampMs) {
        for (set_identifier, condition) in observed {
            self.history.entry(set_identifier.to_owned()).or_default().observe(condition, now_ms);
        }
    }

    /// A target's history (empty when never observed).
    pub fn history_of(&self, set_identifier: &str) -> TargetHistory {
        self.history.get(set_identifier).cloned().unwrap_or_default()
    }

    /// Remembers an event id as handled (bounded).
    pub fn remember_event(&mut self, event_id: &str) {
        if !self.handled_events.iter().any(|e| e == event_id) {
            self.handled_events.push(event_id.to_owned());
        }
        let excess = self.handled_events.len().saturating_sub(REMEMBERED_EVENTS);
        self.handled_events.drain(..excess);
    }

    /// The combined alarm state of a target and since when it holds: ALARM if any of
    /// its alarms is in ALARM (since the earliest of those), else INSUFFICIENT_DATA if
    /// any is, else OK since the latest transition (all its alarms have been OK since
    /// then). No recorded alarm: OK, since unknown.
    pub fn target_alarm_state(&self, set_identifier: &str) -> (AlarmState, Option<TimestampMs>) {
        let mine: Vec<&RecordedAlarm> = self.alarms.values().filter(|a| a.target.as_deref() == Some(set_identifier)).collect();
        for worst in [AlarmState::Alarm, AlarmState::InsufficientData] {
            if let Some(since) = mine.iter().filter(|a| a.state == worst).map(|a| a.changed_at_ms).min() {
                return (worst, Some(since));
            }
        }
        (AlarmState::Ok, mine.iter().map(|a| a.changed_at_ms).max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(name: &str, state: AlarmState, at: TimestampMs, target: &str) -> Alarm {
        Alarm {
            name: name.into(),
            region: "us-east-1".into(),
            state,
            previous_state: None,
            reason: String::new(),
            state_changed_at_ms: at,
            target: Some(target.into()),
            tags: Default::default(),
        }
    }

    #[test]
    fn duplicates_and_stale_transitions_are_told_apart() {
        let mut s = FailoverState::default();
        let a = alarm("a", AlarmState::Alarm, 1000, "primary");
        assert_eq!(s.freshness("e1", &a), Freshness::New);
        s.record_alarm(&a);
        s.remember_event("e1");
        assert_eq!(s.freshness("e1", &a), Freshness::Duplicate, "same event id");
        assert_eq!(s.freshness("e2", &a), Freshness::Duplicate, "same transition, other delivery");
        assert_eq!(s.freshness("e3", &alarm("a", AlarmState::Ok, 900, "primary")), Freshness::Stale);
        assert_eq!(s.freshness("e4", &alarm("a", AlarmState::Ok, 1100, "primary")), Freshness::New);
        s.last_change = Some(LastChange { at_ms: 1200, weights: vec![], reason: String::new() });
        assert_eq!(s.freshness("e5", &alarm("b", AlarmState::Ok, 1150, "primary")), Freshness::Stale, "older than the change");
    }

    #[test]
    fn record_keeps_the_newest_transition() {
        let mut s = FailoverState::default();
        s.record_alarm(&alarm("a", AlarmState::Ok, 2000, "primary"));
        s.record_alarm(&alarm("a", AlarmState::Alarm, 1000, "primary"));
        assert_eq!(s.alarms["a"].state, AlarmState::Ok);
    }

    #[test]
    fn target_state_is_the_worst_of_its_alarms() {
        let mut s = FailoverState::default();
        assert_eq!(s.target_alarm_state("primary"), (AlarmState::Ok, None));
        s.record_alarm(&alarm("api", AlarmState::Ok, 500, "primary"));
        s.record_alarm(&alarm("db", AlarmState::Ok, 700, "primary"));
        assert_eq!(s.target_alarm_state("primary"), (AlarmState::Ok, Some(700)));
        s.record_alarm(&alarm("db", AlarmState::InsufficientData, 800, "primary"));
        assert_eq!(s.target_alarm_state("primary"), (AlarmState::InsufficientData, Some(800)));
        s.record_alarm(&alarm("api", AlarmState::Alarm, 900, "primary"));
        assert_eq!(s.target_alarm_state("primary"), (AlarmState::Alarm, Some(900)));
        assert_eq!(s.target_alarm_state("secondary"), (AlarmState::Ok, None));
    }

    #[test]
    fn an_up_period_counts_from_the_last_observed_failure() {
        let mut h = TargetHistory::default();
        h.observe(Condition::Up, 1_000);
        assert_eq!(h.up_since_ms, Some(1_000), "first sight, nothing known before");
        h.observe(Condition::Up, 2_000);
        assert_eq!(h.up_since_ms, Some(1_000), "continuous");
        h.observe(Condition::Down, 3_000);
        assert_eq!((h.up_since_ms, h.last_down_at_ms), (None, Some(3_000)));
        h.observe(Condition::Up, 4_000);
        assert_eq!(h.up_since_ms, Some(3_000), "from the last observed failure");
        h.observe(Condition::Unproven, 5_000);
        assert_eq!(h.up_since_ms, None, "insufficient data is not up");
        h.observe(Condition::Up, 6_000);
        assert_eq!(h.up_since_ms, Some(5_000));
    }

    #[test]
    fn a_failure_reported_afterwards_breaks_the_up_period_it_falls_in() {
        let mut h = TargetHistory::default();
        h.observe(Condition::Up, 1_000);
        // An alarm that went ALARM at 1 500 and back OK at 2 500, both between ticks.
        h.down_at(2_500);
        assert_eq!((h.up_since_ms, h.last_down_at_ms), (None, Some(2_500)));
        h.observe(Condition::Up, 3_000);
        assert_eq!(h.up_since_ms, Some(2_500));
        // A failure older than the current period leaves it alone.
        h.down_at(2_000);
        assert_eq!((h.up_since_ms, h.last_down_at_ms), (Some(2_500), Some(2_500)));
    }

    #[test]
    fn alarm_transitions_feed_the_history_of_their_target() {
        let mut s = FailoverState::default();
        s.observe([("primary", Condition::Up)], 500);
        s.record_alarm(&alarm("api", AlarmState::Alarm, 1_000, "primary"));
        assert_eq!(s.history_of("primary").last_down_at_ms, Some(1_000));
        s.observe([("primary", Condition::Down)], 1_200);
        // CloudWatch later says OK since 2 000 (the OK event itself was lost): down until then.
        s.record_alarm_state("api", AlarmState::Ok, 2_000, Some("primary"), false);
        assert_eq!(s.history_of("primary").last_down_at_ms, Some(2_000));
        s.observe([("primary", Condition::Up)], 2_100);
        assert_eq!(s.history_of("primary").up_since_ms, Some(2_000));
        // The same OK read again on the next tick changes nothing.
        s.record_alarm_state("api", AlarmState::Ok, 2_000, Some("primary"), false);
        s.observe([("primary", Condition::Up)], 2_200);
        assert_eq!(s.history_of("primary").up_since_ms, Some(2_000));
    }

    #[test]
    fn remembered_events_are_bounded() {
        let mut s = FailoverState::default();
        for i in 0..(REMEMBERED_EVENTS + 10) {
            s.remember_event(&format!("e{i}"));
        }
        assert_eq!(s.handled_events.len(), REMEMBERED_EVENTS);
        assert_eq!(s.handled_events[0], "e10");
    }
}
