//! What the failover function remembers between invocations, as a pure value.
//!
//! The function keeps one [`FailoverState`] per record set in an S3 object written
//! with conditional writes (If-Match on its ETag), so it survives cold starts and
//! concurrent invocations serialise on it. Route 53 stays the truth for weights;
//! this object holds what Route 53 cannot: the alarm states last seen (for stale and
//! duplicate detection, and for scheduled re-evaluation) and the last change kbha
//! made (for the cooldown).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Alarm, AlarmState, LastChange, TimestampMs};

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

    /// Records a transition if it is newer than the one recorded for that alarm.
    pub fn record_alarm(&mut self, alarm: &Alarm) {
        let newer = self.alarms.get(&alarm.name).is_none_or(|r| alarm.state_changed_at_ms >= r.changed_at_ms);
        if newer {
            self.alarms.insert(
                alarm.name.clone(),
                RecordedAlarm { state: alarm.state, changed_at_ms: alarm.state_changed_at_ms, target: alarm.target.clone() },
            );
        }
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
        let mine: Vec<&RecordedAlarm> =
            self.alarms.values().filter(|a| a.target.as_deref() == Some(set_identifier)).collect();
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
    fn remembered_events_are_bounded() {
        let mut s = FailoverState::default();
        for i in 0..(REMEMBERED_EVENTS + 10) {
            s.remember_event(&format!("e{i}"));
        }
        assert_eq!(s.handled_events.len(), REMEMBERED_EVENTS);
        assert_eq!(s.handled_events[0], "e10");
    }
}
