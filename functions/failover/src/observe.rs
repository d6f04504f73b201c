//! Step "observe": read the truth as AWS says it now, on every event and tick. Route 53
//! records and health checks, the mapped alarms' current state from CloudWatch, the
//! replication status of each region; then merge them with the history in the state
//! object (when each target was last down, since when it has been up) so the policy sees
//! both. Events only say "look now": a lost, late or repeated one stops mattering here.

use std::collections::BTreeMap;

use kbha_aws::{AlarmStatus, Alarms, Dns, Notifier, ObjectStore, WeightedRecord};
use kbha_core::state::FailoverState;
use kbha_core::{Alarm, AlarmState, Freshness, Health, Target, TimestampMs};
use serde::Serialize;

use crate::handler::{FailoverError, FailoverFunction, ReplicationStatus};

/// What one invocation read, ready to be noted in the state object and shown to the policy.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The weighted records, as read (the compare-and-swap deletes exactly these).
    pub records: Vec<WeightedRecord>,
    /// Per configured target, in configuration order: health and replication age.
    pub reads: Vec<TargetRead>,
    /// The mapped alarms CloudWatch reported, with the target each speaks for.
    pub alarms: Vec<(AlarmStatus, String)>,
    /// Mapped alarms CloudWatch does not know: their last delivered transition stands in.
    pub unknown_alarms: Vec<String>,
    /// When it was read (decision time).
    pub at_ms: TimestampMs,
}

/// What was read for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetRead {
    /// SetIdentifier.
    pub set_identifier: String,
    /// Current weight.
    pub weight: u32,
    /// Health-check verdict.
    pub health: Health,
    /// Replication age at decision time.
    pub replication_age_ms: Option<u64>,
    /// The source that age is of (the oldest needed), or the needed source with no
    /// verified backup in the region (then the age is unknown).
    pub replication_source: Option<String>,
}

/// One target's replication freshness as read, in the decision record: which source the
/// RPO gate went by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicationRead {
    /// SetIdentifier.
    pub set_identifier: String,
    /// Age of the oldest needed source's newest verified backup; `None`: unknown.
    pub age_ms: Option<u64>,
    /// That source, or the needed source with no verified backup there.
    pub source: Option<String>,
}

impl Observed {
    /// What the RPO gate read for each target.
    pub fn replication(&self) -> Vec<ReplicationRead> {
        self.reads
            .iter()
            .map(|r| ReplicationRead {
                set_identifier: r.set_identifier.clone(),
                age_ms: r.replication_age_ms,
                source: r.replication_source.clone(),
            })
            .collect()
    }

    /// Notes the alarm transition that triggered this invocation and the alarm states
    /// CloudWatch reported in `state`. Idempotent, like [`Observed::note_conditions`], so
    /// the state write re-applies both to whatever state it finds.
    pub fn note_alarms(&self, state: &mut FailoverState, trigger: Option<&Alarm>) {
        if let Some(a) = trigger {
            state.record_alarm(a);
        }
        for (status, target) in &self.alarms {
            state.record_alarm_state(&status.name, status.state, status.since_ms, Some(target), false);
        }
    }

    /// Notes each target's condition, as observed now, in `state`'s history.
    pub fn note_conditions(&self, state: &mut FailoverState, targets: &[Target]) {
        state.observe(targets.iter().map(|t| (t.set_identifier.as_str(), t.condition())), self.at_ms);
    }
}

impl<D: Dns, A: Alarms, S: ObjectStore, N: Notifier> FailoverFunction<D, A, S, N> {
    /// Reads records, health checks, alarms and replication status; every target's health
    /// check, replication status and every region's alarms at once (independent reads, each
    /// a network round trip).
    pub(crate) async fn observe(&self, now_ms: TimestampMs) -> Result<Observed, FailoverError> {
        let records = self.dns.weighted_records(&self.cfg.hosted_zone_id, &self.cfg.record_name, &self.cfg.record_type).await?;
        if let Some(extra) = records.iter().find(|r| !self.cfg.targets.iter().any(|t| t.set_identifier == r.set_identifier)) {
            return Err(FailoverError::RecordSet {
                name: self.cfg.record_name.clone(),
                problem: format!("has a record with SetIdentifier `{}` that KBHA_TARGETS does not list", extra.set_identifier),
            });
        }
        let reads = futures::future::try_join_all(self.cfg.targets.iter().map(|tc| async {
            let rec = records.iter().find(|r| r.set_identifier == tc.set_identifier).ok_or_else(|| FailoverError::RecordSet {
                name: self.cfg.record_name.clone(),
                problem: format!("has no {} record with SetIdentifier `{}`", self.cfg.record_type, tc.set_identifier),
            })?;
            let health = async {
                match tc.health_check_id.as_ref().or(rec.health_check_id.as_ref()) {
                    Some(id) => Ok(self.dns.health_status(id).await?),
                    None => Ok::<_, FailoverError>(Health::Unknown),
                }
            };
            let (health, (replication_age_ms, replication_source)) =
                futures::future::try_join(health, self.replication_age(&tc.region, now_ms)).await?;
            Ok::<_, FailoverError>(TargetRead {
                set_identifier: tc.set_identifier.clone(),
                weight: rec.weight,
                health,
                replication_age_ms,
                replication_source,
            })
        }));
        let (reads, alarms) = futures::future::try_join(reads, self.read_alarms()).await?;
        let unknown_alarms = self
            .cfg
            .targets
            .iter()
            .flat_map(|t| t.alarm_refs())
            .filter(|(_, name)| !alarms.iter().any(|(s, _)| s.name == *name))
            .map(|(_, name)| name.to_owned())
            .collect();
        Ok(Observed { records, reads, alarms, unknown_alarms, at_ms: now_ms })
    }

    /// The current state of every mapped alarm, read in the region of the target it
    /// speaks for (CloudWatch alarms are regional), one call per region.
    async fn read_alarms(&self) -> Result<Vec<(AlarmStatus, String)>, FailoverError> {
        let mut by_region: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (region, name) in self.cfg.targets.iter().flat_map(|t| t.alarm_refs()) {
            by_region.entry(region).or_default().push(name.to_owned());
        }
        let per_region = futures::future::try_join_all(
            by_region
                .into_iter()
                .filter(|(_, names)| !names.is_empty())
                .map(|(region, names)| async move { self.alarms.alarm_states(region, &names).await }),
        )
        .await?;
        Ok(per_region
            .into_iter()
            .flatten()
            .filter_map(|s| self.cfg.target_of_alarm(&s.name).map(|t| (s.clone(), t.set_identifier.clone())))
            .collect())
    }

    /// Replication age of `region` at `now_ms`, from the verifier's status object: the age
    /// of the oldest source the region needs (`KBHA_RPO_SOURCES`), with that source's name.
    async fn replication_age(&self, region: &str, now_ms: TimestampMs) -> Result<(Option<u64>, Option<String>), FailoverError> {
        let Some(loc) = &self.cfg.replication_status else { return Ok((None, None)) };
        let key = format!("{}{region}.json", loc.prefix);
        let Some(obj) = self.store.get(&loc.bucket, &key).await? else { return Ok((None, None)) };
        match serde_json::from_slice::<ReplicationStatus>(&obj.bytes) {
            Ok(s) => Ok(match s.oldest_of(&self.cfg.rpo_sources) {
                Freshness::Oldest { at_ms, source } => (Some(now_ms.saturating_sub(at_ms).max(0) as u64), source),
                Freshness::Missing(source) => {
                    // Never verified there (or a name the verifier does not use): unknown,
                    // like a missing status object; the policy decides what that means.
                    tracing::warn!(region, source = %source, "no verified backup of a needed source in the region; replication age unknown");
                    (None, Some(source))
                }
            }),
            Err(e) => {
                // A broken status object must not block a failover; the age is reported
                // unknown and the policy decides what unknown means.
                tracing::error!(bucket = %loc.bucket, key = %key, "replication status unreadable, age unknown: {e}");
                Ok((None, None))
            }
        }
    }
}

/// The targets as the policy sees them: what was read, each target's alarm state (from
/// CloudWatch, or for an alarm it does not know the last delivered transition, as noted
/// in `seen`), and its history from `seen` once this observation is noted in it.
pub fn targets(cfg: &crate::FailoverConfig, obs: &Observed, seen: &FailoverState) -> Vec<Target> {
    cfg.targets
        .iter()
        .zip(&obs.reads)
        .map(|(tc, read)| {
            let states = tc.alarm_refs().filter_map(|(_, name)| match obs.alarms.iter().find(|(s, _)| s.name == name) {
                Some((live, _)) => Some((live.state, live.since_ms)),
                None => seen.alarms.get(name).map(|r| (r.state, r.changed_at_ms)),
            });
            let (alarm_state, alarm_state_since_ms) = worst(states);
            let history = seen.history_of(&tc.set_identifier);
            Target {
                set_identifier: tc.set_identifier.clone(),
                region: tc.region.clone(),
                primary: tc.primary,
                weight: read.weight,
                health: read.health,
                alarm_state,
                alarm_state_since_ms,
                up_since_ms: history.up_since_ms,
                last_down_at_ms: history.last_down_at_ms,
                replication_age_ms: read.replication_age_ms,
            }
        })
        .collect()
}

/// The combined state of a target's alarms and since when it holds: ALARM if any is
/// (since the earliest), else INSUFFICIENT_DATA if any is, else OK since the latest
/// transition. No alarm: OK, since unknown.
fn worst(states: impl Iterator<Item = (AlarmState, TimestampMs)>) -> (AlarmState, Option<TimestampMs>) {
    let states: Vec<_> = states.collect();
    for bad in [AlarmState::Alarm, AlarmState::InsufficientData] {
        if let Some(since) = states.iter().filter(|(s, _)| *s == bad).map(|(_, t)| *t).min() {
            return (bad, Some(since));
        }
    }
    (AlarmState::Ok, states.iter().map(|(_, t)| *t).max())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_alarm_wins_and_ok_holds_since_the_latest_transition() {
        use AlarmState::*;
        assert_eq!(worst([].into_iter()), (Ok, None));
        assert_eq!(worst([(Ok, 5), (Ok, 9)].into_iter()), (Ok, Some(9)));
        assert_eq!(worst([(Ok, 5), (InsufficientData, 7), (Alarm, 9), (Alarm, 8)].into_iter()), (Alarm, Some(8)));
        assert_eq!(worst([(Ok, 5), (InsufficientData, 7)].into_iter()), (InsufficientData, Some(7)));
    }
}
