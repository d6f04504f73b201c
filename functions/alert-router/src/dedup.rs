//! What the router remembers about one alert (one dedup key), and the transitions of
//! that memory, as pure functions.
//!
//! One [`AlertEntry`] per dedup key lives in its own S3 object, written with If-Match
//! (If-None-Match for the first write). A delivery is *claimed* in the entry before it
//! is published and *confirmed* after, so of several concurrent invocations only the
//! one whose claim write won publishes. A claim whose publish failed is released (the
//! retry takes over at once); a claim whose holder vanished expires after the lease.
//! The claim itself is the one the other functions use for their notices
//! ([`kbha_lambda::claim::Claim`]), with the router's lease; the [`Delivery`] around it
//! adds what is delivered and where it already got through.

use kbha_core::{ActiveAlert, AlertDecision, AlertStatus, IncomingAlert, Severity, Suppression, TimestampMs};
use kbha_lambda::claim::{Claim, Holder};
use serde::{Deserialize, Serialize};

/// Why a delivery is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// First notification of a firing alert.
    Firing,
    /// Still firing after the repeat interval.
    Repeat,
    /// A delivered alert resolved.
    Resolved,
}

impl DeliveryKind {
    /// The status the entry has once this delivery is confirmed.
    fn status_after(self) -> AlertStatus {
        match self {
            DeliveryKind::Resolved => AlertStatus::Resolved,
            _ => AlertStatus::Firing,
        }
    }
}

/// The lease the previous version of the router gave a claim by default
/// (`KBHA_CLAIM_SECONDS`): its records kept the claim time, not the lease's end.
const PREVIOUS_DEFAULT_LEASE_MS: i64 = 120_000;

/// A delivery in progress: the claim on it, and what the router keeps next to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredDelivery", into = "StoredDelivery")]
pub struct Delivery {
    /// What is being delivered.
    pub kind: DeliveryKind,
    /// Who claimed it: event id and claim time, unique per attempt. Always `lease.by`
    /// (set together; stored once, as the lease's): the handler reads it here.
    pub token: String,
    /// The claim: held by `token` until the lease ends; released after a failed publish.
    pub lease: Claim,
    /// Destinations already published to (kept across a release, so a retry does not
    /// send twice to the ones that worked).
    pub delivered_to: Vec<String>,
}

impl Delivery {
    /// Whether the claim still keeps others off at `now` (neither released nor expired).
    fn is_live(&self, now: TimestampMs) -> bool {
        self.lease.holder(&self.token, now) != Holder::Free
    }
}

/// A [`Delivery`] as stored: `{"kind", "lease": {"by", "until_ms"}, "delivered_to"}` plus the
/// previous version's `token` and `claimed_at_ms` (null once released), which it reads
/// alone; a record of the previous version has only those, and its lease is derived.
#[derive(Clone, Serialize, Deserialize)]
struct StoredDelivery {
    kind: DeliveryKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<Claim>,
    /// Previous version: who claimed it. Still written, with `claimed_at_ms`, so a router
    /// rolled back to the previous version (`live` alias) reads the records this one wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// Previous version: when it was claimed, `None` once released.
    #[serde(default)]
    claimed_at_ms: Option<TimestampMs>,
    #[serde(default)]
    delivered_to: Vec<String>,
}

impl TryFrom<StoredDelivery> for Delivery {
    type Error = String;

    fn try_from(s: StoredDelivery) -> Result<Self, String> {
        let lease = match (s.lease, s.token) {
            (Some(lease), _) => lease,
            // The previous version's claim: its lease ends the default lease after the
            // claim time (a released one, `claimed_at_ms` null, is free at once).
            (None, Some(token)) => {
                Claim { by: token, until_ms: s.claimed_at_ms.map_or(0, |at| at.saturating_add(PREVIOUS_DEFAULT_LEASE_MS)) }
            }
            (None, None) => return Err("a delivery claim without a lease or a token".into()),
        };
        Ok(Delivery { kind: s.kind, token: lease.by.clone(), lease, delivered_to: s.delivered_to })
    }
}

impl From<Delivery> for StoredDelivery {
    fn from(d: Delivery) -> Self {
        // For the previous version: a live claim as made the default lease before its end.
        let claimed_at_ms = (d.lease.until_ms > 0).then(|| d.lease.until_ms.saturating_sub(PREVIOUS_DEFAULT_LEASE_MS));
        StoredDelivery { kind: d.kind, token: Some(d.token), claimed_at_ms, lease: Some(d.lease), delivered_to: d.delivered_to }
    }
}

/// The router's memory of one alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEntry {
    /// Its dedup key.
    pub dedup_key: String,
    /// Name.
    pub name: String,
    /// Region.
    #[serde(default)]
    pub region: Option<String>,
    /// Severity last decided.
    pub severity: Severity,
    /// Labels last seen.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Group key last decided.
    #[serde(default)]
    pub group_key: String,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// When the current incident started firing.
    pub since_ms: TimestampMs,
    /// When the last copy arrived.
    pub last_seen_ms: TimestampMs,
    /// When a notification for the current incident was last confirmed sent.
    #[serde(default)]
    pub last_sent_ms: Option<TimestampMs>,
    /// Notifications sent for the current incident.
    #[serde(default)]
    pub sent_count: u32,
    /// When it resolved.
    #[serde(default)]
    pub resolved_at_ms: Option<TimestampMs>,
    /// Why the last copy was not delivered, if it was not.
    #[serde(default)]
    pub suppressed: Option<Suppression>,
    /// A delivery in progress.
    #[serde(default)]
    pub claim: Option<Delivery>,
}

impl AlertEntry {
    /// The entry as the policy sees it, when firing.
    pub fn active(&self) -> Option<ActiveAlert> {
        (self.status == AlertStatus::Firing).then(|| ActiveAlert {
            dedup_key: self.dedup_key.clone(),
            name: self.name.clone(),
            region: self.region.clone(),
            severity: self.severity,
            labels: self.labels.clone(),
            since_ms: self.since_ms,
        })
    }

    fn live_claim(&self, now: TimestampMs) -> Option<&Delivery> {
        self.claim.as_ref().filter(|c| c.is_live(now))
    }
}

/// Why nothing is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// Already delivered within the repeat interval (or already resolved).
    Duplicate,
    /// Another invocation is delivering it right now.
    InFlight,
    /// The policy suppressed it.
    Suppressed,
    /// Resolved, but its firing was never delivered: closed silently.
    ResolvedUnsent,
    /// Resolved, but nothing is known of it firing.
    ResolvedUnknown,
}

/// What to do about one incoming alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Write `entry` (holding our claim), then publish to every destination not in
    /// `claim.delivered_to`, then [`confirm`].
    Deliver {
        /// What is delivered.
        kind: DeliveryKind,
        /// The entry to write first.
        entry: AlertEntry,
    },
    /// Deliver nothing; write `entry` when given.
    Skip {
        /// Why.
        why: Skip,
        /// The entry to write, if it changed.
        entry: Option<AlertEntry>,
    },
    /// Another invocation is delivering a different transition of this alert; try
    /// again later (the invocation fails as retryable, so the message comes back).
    Busy,
}

/// The settings transitions depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Decision time.
    pub now_ms: TimestampMs,
    /// A firing alert is delivered again after this long.
    pub repeat_ms: i64,
    /// The lease of a claim made now: one not confirmed within this long is taken over.
    pub lease_ms: i64,
}

fn fresh(alert: &IncomingAlert, d: &AlertDecision, now: TimestampMs) -> AlertEntry {
    AlertEntry {
        dedup_key: d.dedup_key.clone(),
        name: alert.name.clone(),
        region: alert.region.clone(),
        severity: d.severity,
        labels: alert.labels.clone(),
        group_key: d.group_key.clone(),
        status: AlertStatus::Firing,
        since_ms: alert.at_ms.min(now),
        last_seen_ms: now,
        last_sent_ms: None,
        sent_count: 0,
        resolved_at_ms: None,
        suppressed: None,
        claim: None,
    }
}

/// Whether `alert` is a late copy (SNS redelivers at least once, in any order) of a
/// transition older than the incident `prev` records: one from before that incident
/// began, or, once it resolved, the firing that began it. Acting on it would reopen a
/// resolved incident, or resolve a newer one, and page for something already said.
fn is_late_copy(prev: &AlertEntry, alert: &IncomingAlert) -> bool {
    alert.at_ms < prev.since_ms
        || (prev.status == AlertStatus::Resolved && alert.status == AlertStatus::Firing && alert.at_ms <= prev.since_ms)
}

/// Decides what to do about `alert` (decided as `d`, delivered as `event_id`) given the
/// stored entry `prev`.
pub fn plan(prev: Option<&AlertEntry>, alert: &IncomingAlert, d: &AlertDecision, event_id: &str, t: Timing) -> Plan {
    let now = t.now_ms;
    let claim = |kind: DeliveryKind, mut e: AlertEntry| {
        // A released or expired claim of the same kind keeps the destinations it reached.
        let delivered_to = e.claim.take().filter(|c| c.kind == kind).map(|c| c.delivered_to).unwrap_or_default();
        let token = format!("{event_id}@{now}");
        e.claim = Some(Delivery { kind, lease: Claim::with_lease(&token, now, t.lease_ms), token, delivered_to });
        e.suppressed = None;
        Plan::Deliver { kind, entry: e }
    };
    let refresh = |e: &AlertEntry| {
        let mut e = e.clone();
        e.last_seen_ms = now;
        e.severity = d.severity;
        e.group_key = d.group_key.clone();
        e.labels = alert.labels.clone();
        e
    };
    if prev.is_some_and(|p| is_late_copy(p, alert)) {
        return Plan::Skip { why: Skip::Duplicate, entry: None };
    }
    match alert.status {
        AlertStatus::Firing => {
            let Some(prev) = prev.filter(|p| p.status == AlertStatus::Firing) else {
                // New incident (never seen, or resolved before).
                let mut e = fresh(alert, d, now);
                if let Some(s) = &d.suppress {
                    e.suppressed = Some(s.clone());
                    return Plan::Skip { why: Skip::Suppressed, entry: Some(e) };
                }
                return claim(DeliveryKind::Firing, e);
            };
            if let Some(c) = prev.live_claim(now) {
                return if c.kind == DeliveryKind::Resolved { Plan::Busy } else { Plan::Skip { why: Skip::InFlight, entry: None } };
            }
            let mut e = refresh(prev);
            if let Some(s) = &d.suppress {
                if e.suppressed.as_ref() == Some(s) {
                    return Plan::Skip { why: Skip::Suppressed, entry: None };
                }
                e.suppressed = Some(s.clone());
                return Plan::Skip { why: Skip::Suppressed, entry: Some(e) };
            }
            if let Some(c) = &prev.claim {
                // A released or expired claim: finish what it started.
                return claim(c.kind, e);
            }
            match prev.last_sent_ms {
                None => claim(DeliveryKind::Firing, e),
                // Worse than what was last sent (a warning became a breach): say so now.
                Some(_) if d.severity > prev.severity => claim(DeliveryKind::Firing, e),
                Some(sent) if now - sent >= t.repeat_ms => claim(DeliveryKind::Repeat, e),
                Some(_) => Plan::Skip { why: Skip::Duplicate, entry: None },
            }
        }
        AlertStatus::Resolved => {
            let Some(prev) = prev else {
                return Plan::Skip { why: Skip::ResolvedUnknown, entry: None };
            };
            if prev.status == AlertStatus::Resolved {
                return Plan::Skip { why: Skip::Duplicate, entry: None };
            }
            if let Some(c) = prev.live_claim(now) {
                return if c.kind == DeliveryKind::Resolved { Plan::Skip { why: Skip::InFlight, entry: None } } else { Plan::Busy };
            }
            let mut e = refresh(prev);
            let close = |mut e: AlertEntry, why: Skip| {
                e.status = AlertStatus::Resolved;
                e.resolved_at_ms = Some(now);
                e.claim = None;
                Plan::Skip { why, entry: Some(e) }
            };
            // Nothing was ever sent for this incident (or only a firing claim that never
            // reached anyone): close it without a word.
            let reached_anyone = prev.last_sent_ms.is_some()
                || prev.claim.as_ref().is_some_and(|c| c.kind == DeliveryKind::Resolved || !c.delivered_to.is_empty());
            if !reached_anyone {
                return close(e, Skip::ResolvedUnsent);
            }
            if let Some(s) = &d.suppress {
                e.suppressed = Some(s.clone());
                return close(e, Skip::Suppressed);
            }
            claim(DeliveryKind::Resolved, e)
        }
    }
}

/// The entry after the claim `token` was delivered everywhere; `None` when the claim
/// is no longer ours (another invocation took it over after our lease ran out).
pub fn confirm(entry: &AlertEntry, token: &str, now: TimestampMs) -> Option<AlertEntry> {
    let c = entry.claim.as_ref().filter(|c| c.token == token)?;
    let mut e = entry.clone();
    e.status = c.kind.status_after();
    if e.status == AlertStatus::Resolved {
        e.resolved_at_ms = Some(now);
    }
    e.last_sent_ms = Some(now);
    e.sent_count += 1;
    e.claim = None;
    Some(e)
}

/// The entry after the claim `token` failed to publish: released at once for the retry,
/// remembering where it did get through. `None` when the claim is no longer ours.
pub fn release(entry: &AlertEntry, token: &str, delivered_to: &[String]) -> Option<AlertEntry> {
    let mut e = entry.clone();
    let c = e.claim.as_mut().filter(|c| c.token == token)?;
    c.lease.release();
    for d in delivered_to {
        if !c.delivered_to.contains(d) {
            c.delivered_to.push(d.clone());
        }
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbha_core::AlertSource;

    const MIN: i64 = 60_000;
    const T: Timing = Timing { now_ms: 1_000 * MIN, repeat_ms: 60 * MIN, lease_ms: 2 * MIN };

    fn alert(status: AlertStatus) -> IncomingAlert {
        IncomingAlert {
            source: AlertSource::Cloudwatch,
            name: "a".into(),
            status,
            region: Some("us-east-1".into()),
            severity_hint: None,
            summary: "s".into(),
            body: String::new(),
            labels: Default::default(),
            at_ms: T.now_ms - MIN,
        }
    }

    fn decision(suppress: Option<Suppression>) -> AlertDecision {
        AlertDecision {
            severity: Severity::Critical,
            destinations: vec!["critical".into()],
            dedup_key: "cloudwatch/a/us-east-1".into(),
            group_key: "region=us-east-1".into(),
            suppress,
            reason: "r".into(),
        }
    }

    fn at(t: Timing, now_ms: TimestampMs) -> Timing {
        Timing { now_ms, ..t }
    }

    /// Plans, and when it delivers, confirms: the entry as stored afterwards.
    fn deliver(prev: Option<&AlertEntry>, status: AlertStatus, t: Timing) -> (Option<DeliveryKind>, AlertEntry) {
        match plan(prev, &alert(status), &decision(None), "e", t) {
            Plan::Deliver { kind, entry } => {
                let token = entry.claim.as_ref().map(|c| c.token.clone()).unwrap_or_default();
                (Some(kind), confirm(&entry, &token, t.now_ms).expect("our claim"))
            }
            Plan::Skip { entry, .. } => (None, entry.or_else(|| prev.cloned()).expect("an entry")),
            Plan::Busy => panic!("busy"),
        }
    }

    #[test]
    fn first_firing_delivers_then_duplicates_until_the_repeat_interval() {
        let (kind, e) = deliver(None, AlertStatus::Firing, T);
        assert_eq!(kind, Some(DeliveryKind::Firing));
        assert_eq!((e.sent_count, e.last_sent_ms, e.claim.is_none()), (1, Some(T.now_ms), true));
        assert_eq!(
            plan(Some(&e), &alert(AlertStatus::Firing), &decision(None), "e2", at(T, T.now_ms + 59 * MIN)),
            Plan::Skip { why: Skip::Duplicate, entry: None }
        );
        let (kind, e) = deliver(Some(&e), AlertStatus::Firing, at(T, T.now_ms + 60 * MIN));
        assert_eq!((kind, e.sent_count), (Some(DeliveryKind::Repeat), 2));
    }

    #[test]
    fn an_escalation_is_delivered_at_once_a_de_escalation_waits() {
        let (_, e) = deliver(None, AlertStatus::Firing, T);
        let mut lower = decision(None);
        lower.severity = Severity::Warning;
        let later = at(T, T.now_ms + MIN);
        assert_eq!(plan(Some(&e), &alert(AlertStatus::Firing), &lower, "e2", later), Plan::Skip { why: Skip::Duplicate, entry: None });
        let mut warned = e.clone();
        warned.severity = Severity::Warning;
        assert!(matches!(
            plan(Some(&warned), &alert(AlertStatus::Firing), &decision(None), "e3", later),
            Plan::Deliver { kind: DeliveryKind::Firing, .. }
        ));
    }

    #[test]
    fn a_live_claim_makes_copies_skip_and_an_expired_one_is_taken_over() {
        let Plan::Deliver { entry: claimed, .. } = plan(None, &alert(AlertStatus::Firing), &decision(None), "e1", T) else {
            panic!("deliver")
        };
        let copy = plan(Some(&claimed), &alert(AlertStatus::Firing), &decision(None), "e2", at(T, T.now_ms + MIN));
        assert_eq!(copy, Plan::Skip { why: Skip::InFlight, entry: None });
        match plan(Some(&claimed), &alert(AlertStatus::Firing), &decision(None), "e3", at(T, T.now_ms + 3 * MIN)) {
            Plan::Deliver { kind: DeliveryKind::Firing, entry } => {
                assert!(entry.claim.as_ref().is_some_and(|c| c.token.starts_with("e3@")));
                let old_token = claimed.claim.as_ref().map(|c| c.token.clone()).unwrap_or_default();
                assert_eq!(confirm(&entry, &old_token, T.now_ms), None, "the old holder cannot confirm");
            }
            other => panic!("expected takeover, got {other:?}"),
        }
    }

    #[test]
    fn a_released_claim_is_retried_at_once_skipping_destinations_reached() {
        let Plan::Deliver { entry: claimed, .. } = plan(None, &alert(AlertStatus::Firing), &decision(None), "e1", T) else {
            panic!("deliver")
        };
        let token = claimed.claim.as_ref().map(|c| c.token.clone()).unwrap_or_default();
        let released = release(&claimed, &token, &["critical".into()]).expect("ours");
        match plan(Some(&released), &alert(AlertStatus::Firing), &decision(None), "e1", at(T, T.now_ms + 1000)) {
            Plan::Deliver { kind: DeliveryKind::Firing, entry } => {
                assert_eq!(entry.claim.map(|c| c.delivered_to), Some(vec!["critical".to_owned()]));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    /// An entry as the previous version of the router stored it: its claim kept the claim
    /// time (`claimed_at_ms`, null once released), not a lease.
    fn previous_version_entry(claimed_at_ms: &str, delivered_to: &str) -> AlertEntry {
        let json = format!(
            r#"{{"dedup_key":"cloudwatch/a/us-east-1","name":"a","region":"us-east-1","severity":"critical","labels":{{}},
                "group_key":"region=us-east-1","status":"firing","since_ms":59940000,"last_seen_ms":59940000,
                "last_sent_ms":null,"sent_count":0,"resolved_at_ms":null,"suppressed":null,
                "claim":{{"kind":"firing","token":"old~x@59940000","claimed_at_ms":{claimed_at_ms},"delivered_to":{delivered_to}}}}}"#
        );
        serde_json::from_str(&json).expect("a record of the previous version parses")
    }

    #[test]
    fn a_claim_stored_by_the_previous_version_holds_its_default_lease_then_is_taken_over() {
        let old = previous_version_entry("59940000", "[]");
        let claim = old.claim.clone().expect("a claim");
        assert_eq!((claim.token.as_str(), claim.lease.by.as_str()), ("old~x@59940000", "old~x@59940000"));
        assert_eq!(claim.lease.until_ms, 59_940_000 + 2 * MIN, "claimed a minute before T, for the 2 min the previous version gave");
        // Live: a copy skips.
        let copy = plan(Some(&old), &alert(AlertStatus::Firing), &decision(None), "e2", T);
        assert_eq!(copy, Plan::Skip { why: Skip::InFlight, entry: None });
        // Expired: taken over, and the old holder can no longer confirm.
        match plan(Some(&old), &alert(AlertStatus::Firing), &decision(None), "e3", at(T, T.now_ms + MIN)) {
            Plan::Deliver { kind: DeliveryKind::Firing, entry } => {
                let c = entry.claim.as_ref().expect("our claim");
                assert!(c.token.starts_with("e3@") && c.lease.by == c.token, "{c:?}");
                assert_eq!(confirm(&entry, "old~x@59940000", T.now_ms + MIN), None);
                assert!(confirm(&entry, &c.token, T.now_ms + MIN).is_some());
            }
            other => panic!("expected takeover, got {other:?}"),
        }
    }

    #[test]
    fn a_claim_released_by_the_previous_version_is_retried_at_once() {
        let old = previous_version_entry("null", r#"["critical"]"#);
        assert_eq!(old.claim.as_ref().map(|c| c.lease.until_ms), Some(0));
        match plan(Some(&old), &alert(AlertStatus::Firing), &decision(None), "e2", T) {
            Plan::Deliver { kind: DeliveryKind::Firing, entry } => {
                assert_eq!(entry.claim.map(|c| c.delivered_to), Some(vec!["critical".to_owned()]));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
        // A record without a claim at all, as the previous version wrote it.
        let mut idle = old.clone();
        idle.claim = None;
        let json = serde_json::to_value(&idle).expect("serialise");
        assert_eq!(json["claim"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<AlertEntry>(json).expect("parse"), idle);
    }

    #[test]
    fn a_claim_is_stored_as_the_shared_lease_and_reads_back_the_same() {
        let Plan::Deliver { entry, .. } = plan(None, &alert(AlertStatus::Firing), &decision(None), "e1", T) else { panic!("deliver") };
        let json = serde_json::to_value(&entry).expect("serialise");
        let token = format!("e1@{}", T.now_ms);
        assert_eq!(
            json["claim"],
            serde_json::json!({"kind": "firing", "lease": {"by": token, "until_ms": T.now_ms + T.lease_ms}, "delivered_to": [],
                "token": token, "claimed_at_ms": T.now_ms + T.lease_ms - PREVIOUS_DEFAULT_LEASE_MS})
        );
        assert_eq!(serde_json::from_value::<AlertEntry>(json).expect("parse"), entry);
        let released = release(&entry, &token, &[]).expect("ours");
        let json = serde_json::to_value(&released).expect("serialise");
        assert_eq!(json["claim"]["lease"]["until_ms"], 0);
        assert_eq!(json["claim"]["claimed_at_ms"], serde_json::Value::Null, "released, as the previous version reads it");
        assert_eq!(serde_json::from_value::<AlertEntry>(json).expect("parse"), released);
        let broken = serde_json::json!({"kind": "firing", "delivered_to": []});
        assert!(serde_json::from_value::<Delivery>(broken).is_err(), "a claim with no holder is refused");
    }

    #[test]
    fn ok_after_a_delivered_alarm_is_delivered_and_closes_the_entry() {
        let (_, fired) = deliver(None, AlertStatus::Firing, T);
        let (kind, closed) = deliver(Some(&fired), AlertStatus::Resolved, at(T, T.now_ms + 5 * MIN));
        assert_eq!(kind, Some(DeliveryKind::Resolved));
        assert_eq!((closed.status, closed.resolved_at_ms), (AlertStatus::Resolved, Some(T.now_ms + 5 * MIN)));
        assert_eq!(closed.active(), None);
        let again = plan(Some(&closed), &alert(AlertStatus::Resolved), &decision(None), "e", at(T, T.now_ms + 6 * MIN));
        assert_eq!(again, Plan::Skip { why: Skip::Duplicate, entry: None });
        // A new ALARM transition (later than the one that began the closed incident).
        let mut again = alert(AlertStatus::Firing);
        again.at_ms = T.now_ms + 6 * MIN;
        let Plan::Deliver { kind, entry: reopened } = plan(Some(&closed), &again, &decision(None), "e", at(T, T.now_ms + 7 * MIN)) else {
            panic!("a new incident is delivered")
        };
        assert_eq!((kind, reopened.sent_count, reopened.since_ms), (DeliveryKind::Firing, 0, T.now_ms + 6 * MIN));
    }

    /// Late copies of old transitions (as the storm in tests/integration/tests/storm.rs
    /// delivers them) used to reopen a resolved incident (a second "firing" page for an
    /// alarm that is OK) and resolve a newer one (a "resolved" page for an alarm in ALARM).
    #[test]
    fn late_copies_of_older_transitions_change_nothing() {
        let (_, fired) = deliver(None, AlertStatus::Firing, T);
        let (_, closed) = deliver(Some(&fired), AlertStatus::Resolved, at(T, T.now_ms + 5 * MIN));
        let skip = Plan::Skip { why: Skip::Duplicate, entry: None };
        // The ALARM that began the closed incident, delivered again after its OK.
        let late = plan(Some(&closed), &alert(AlertStatus::Firing), &decision(None), "copy", at(T, T.now_ms + 6 * MIN));
        assert_eq!(late, skip);
        // A newer incident is firing; a late OK (and ALARM) of the old one arrive.
        let mut newer = alert(AlertStatus::Firing);
        newer.at_ms = T.now_ms + 10 * MIN;
        let Plan::Deliver { entry, .. } = plan(Some(&closed), &newer, &decision(None), "new", at(T, T.now_ms + 10 * MIN)) else {
            panic!("the new incident is delivered")
        };
        let firing =
            confirm(&entry, &entry.claim.as_ref().map(|c| c.token.clone()).unwrap_or_default(), T.now_ms + 10 * MIN).expect("ours");
        let mut old_ok = alert(AlertStatus::Resolved);
        old_ok.at_ms = T.now_ms + 4 * MIN;
        assert_eq!(plan(Some(&firing), &old_ok, &decision(None), "late-ok", at(T, T.now_ms + 11 * MIN)), skip);
        assert_eq!(plan(Some(&firing), &alert(AlertStatus::Firing), &decision(None), "late-alarm", at(T, T.now_ms + 11 * MIN)), skip);
        // The newer incident's own OK still resolves it.
        let mut ok = alert(AlertStatus::Resolved);
        ok.at_ms = T.now_ms + 12 * MIN;
        assert!(matches!(
            plan(Some(&firing), &ok, &decision(None), "ok", at(T, T.now_ms + 12 * MIN)),
            Plan::Deliver { kind: DeliveryKind::Resolved, .. }
        ));
    }

    #[test]
    fn suppressed_alerts_are_remembered_and_delivered_once_unsuppressed() {
        let sup = Some(Suppression::MaintenanceWindow("w".into()));
        let Plan::Skip { why: Skip::Suppressed, entry: Some(e) } = plan(None, &alert(AlertStatus::Firing), &decision(sup.clone()), "e", T)
        else {
            panic!("suppressed")
        };
        assert!(e.active().is_some(), "a suppressed alert still fires (and can inhibit)");
        assert_eq!(plan(Some(&e), &alert(AlertStatus::Firing), &decision(sup), "e", T), Plan::Skip { why: Skip::Suppressed, entry: None });
        let (kind, _) = deliver(Some(&e), AlertStatus::Firing, at(T, T.now_ms + MIN));
        assert_eq!(kind, Some(DeliveryKind::Firing), "window closed: delivered");
        let closed = plan(Some(&e), &alert(AlertStatus::Resolved), &decision(None), "e", T);
        assert!(matches!(closed, Plan::Skip { why: Skip::ResolvedUnsent, entry: Some(ref x) } if x.status == AlertStatus::Resolved));
    }

    #[test]
    fn resolution_of_an_unknown_alert_is_skipped_and_transitions_never_overlap() {
        assert_eq!(
            plan(None, &alert(AlertStatus::Resolved), &decision(None), "e", T),
            Plan::Skip { why: Skip::ResolvedUnknown, entry: None }
        );
        let Plan::Deliver { entry: firing_claim, .. } = plan(None, &alert(AlertStatus::Firing), &decision(None), "e", T) else {
            panic!("deliver")
        };
        assert_eq!(plan(Some(&firing_claim), &alert(AlertStatus::Resolved), &decision(None), "ok", T), Plan::Busy);
    }
}
