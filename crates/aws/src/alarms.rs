//! CloudWatch: the current state of named alarms (metric and composite), in any region.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use aws_config::{Region, SdkConfig};
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::{AlarmType, StateValue};
use aws_smithy_types::DateTime;
use kbha_core::{AlarmState, TimestampMs};

use crate::AwsError;

/// Most alarm names DescribeAlarms accepts in one call (`AlarmNames` holds at most 100).
pub const MAX_ALARM_NAMES_PER_CALL: usize = 100;

/// One CloudWatch alarm's current state, as DescribeAlarms reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmStatus {
    /// Alarm name.
    pub name: String,
    /// Current state.
    pub state: AlarmState,
    /// When the alarm entered that state (CloudWatch's StateUpdatedTimestamp), ms since epoch.
    pub since_ms: TimestampMs,
}

/// What the failover function needs from CloudWatch.
pub trait Alarms: Send + Sync {
    /// The current state of each named alarm (metric and composite) in `region`. Names
    /// CloudWatch does not know are simply absent from the result (the caller decides what
    /// that means). An empty `names` makes no call.
    ///
    /// The result holds one entry per alarm, sorted by name; duplicate names are asked once.
    fn alarm_states(&self, region: &str, names: &[String]) -> impl Future<Output = Result<Vec<AlarmStatus>, AwsError>> + Send;
}

/// [`Alarms`] over the AWS SDK: one client per region, made from the shared SdkConfig (same
/// endpoint override, credentials, retry and timeout settings as the other clients).
///
/// Clients are built on first use of a region and kept: a warm Lambda reads the same few
/// regions on every invocation, and building a client re-runs the config validation and
/// plugin setup each time for nothing. The regions' clients share the SdkConfig's
/// credentials cache and HTTP client (so its connection pool). Clones share the client
/// cache (and a client clone is an `Arc`), and the lock is never held across an await.
#[derive(Debug, Clone)]
pub struct CloudWatchAlarms {
    conf: SdkConfig,
    clients: Arc<Mutex<HashMap<String, Client>>>,
}

impl CloudWatchAlarms {
    /// Keeps the shared SDK configuration; clients are made per region from it on first use.
    pub fn from_conf(conf: &SdkConfig) -> Self {
        CloudWatchAlarms { conf: conf.clone(), clients: Arc::default() }
    }

    /// The client for `region`, built from the shared configuration on first use.
    pub fn client(&self, region: &str) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                Client::from_conf(aws_sdk_cloudwatch::config::Builder::from(&self.conf).region(Region::new(region.to_owned())).build())
            })
            .clone()
    }
}

const DESCRIBE: &str = "DescribeAlarms";

/// The distinct names, in order of first appearance, in batches DescribeAlarms accepts.
fn name_batches(names: &[String]) -> Vec<Vec<String>> {
    let mut seen = BTreeSet::new();
    let unique: Vec<String> = names.iter().filter(|n| seen.insert(n.as_str())).cloned().collect();
    unique.chunks(MAX_ALARM_NAMES_PER_CALL).map(<[String]>::to_vec).collect()
}

/// One alarm of an answer; CloudWatch always sends all three fields, so a missing one
/// (or a state this code does not know) is an unexpected exchange, not an absent alarm.
fn status(name: Option<&str>, state: Option<&StateValue>, since: Option<&DateTime>) -> Result<AlarmStatus, AwsError> {
    let name = name.ok_or_else(|| AwsError::invalid(DESCRIBE, "an alarm without a name"))?;
    let missing = |what: &str| AwsError::invalid(DESCRIBE, format!("alarm `{name}` without {what}"));
    let state = state.ok_or_else(|| missing("a state"))?;
    let state = AlarmState::from_cloudwatch(state.as_str())
        .ok_or_else(|| AwsError::invalid(DESCRIBE, format!("alarm `{name}` in unknown state `{}`", state.as_str())))?;
    let since_ms = since
        .ok_or_else(|| missing("a state timestamp"))?
        .to_millis()
        .map_err(|e| AwsError::invalid(DESCRIBE, format!("alarm `{name}`: {e}")))?;
    Ok(AlarmStatus { name: name.to_owned(), state, since_ms })
}

impl Alarms for CloudWatchAlarms {
    async fn alarm_states(&self, region: &str, names: &[String]) -> Result<Vec<AlarmStatus>, AwsError> {
        let batches = name_batches(names);
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client(region);
        let mut found = BTreeMap::new();
        for batch in batches {
            let mut token: Option<String> = None;
            loop {
                let page = client
                    .describe_alarms()
                    .set_alarm_names(Some(batch.clone()))
                    // Without AlarmTypes CloudWatch returns metric alarms only.
                    .alarm_types(AlarmType::MetricAlarm)
                    .alarm_types(AlarmType::CompositeAlarm)
                    .max_records(100)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk(DESCRIBE, e))?;
                for a in page.metric_alarms() {
                    let s = status(a.alarm_name(), a.state_value(), a.state_updated_timestamp())?;
                    found.insert(s.name.clone(), s);
                }
                for a in page.composite_alarms() {
                    let s = status(a.alarm_name(), a.state_value(), a.state_updated_timestamp())?;
                    found.insert(s.name.clone(), s);
                }
                let next = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
                if next.is_none() {
                    break;
                }
                // A service that hands the same token back would page forever.
                if next == token {
                    return Err(AwsError::invalid(DESCRIBE, "pagination did not advance; the service returned the same next token"));
                }
                token = next;
            }
        }
        // Only what was asked: a service that ignored AlarmNames must not add alarms.
        let asked: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        found.retain(|name, _| asked.contains(name.as_str()));
        Ok(found.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deduplicated_and_batched_by_100() {
        let names: Vec<String> = (0..250).map(|i| format!("alarm-{i:03}")).collect();
        let mut with_dups = names.clone();
        with_dups.extend(names[..10].iter().cloned());
        let batches = name_batches(&with_dups);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![100, 100, 50]);
        assert_eq!(batches.concat(), names, "each name once, in order");
        assert!(name_batches(&[]).is_empty());
        assert_eq!(name_batches(&["a".into(), "a".into()]), vec![vec!["a".to_owned()]]);
    }

    #[test]
    fn statuses_are_read_strictly() {
        let t = DateTime::from_millis(1_700_000_000_123);
        assert_eq!(
            status(Some("a"), Some(&StateValue::Alarm), Some(&t)).expect("complete"),
            AlarmStatus { name: "a".into(), state: AlarmState::Alarm, since_ms: 1_700_000_000_123 }
        );
        let ins = status(Some("b"), Some(&StateValue::InsufficientData), Some(&t));
        assert_eq!(ins.expect("complete").state, AlarmState::InsufficientData);
        assert!(status(Some("a"), None, Some(&t)).is_err());
        assert!(status(Some("a"), Some(&StateValue::Ok), None).is_err());
        assert!(status(None, Some(&StateValue::Ok), Some(&t)).is_err());
        let odd = status(Some("a"), Some(&StateValue::from("SNOOZED")), Some(&t)).expect_err("unknown state");
        assert!(!odd.retryable(), "{odd}");
    }
}
