//! CloudWatch alarms: created through the AWS API, their state set by the test.

use anyhow::{Context, Result};

use crate::Emulator;

impl Emulator {
    /// Creates a metric alarm in `region` like the template's: `AWS/Route53`
    /// `HealthCheckStatus` (dimension `HealthCheckId` = `name`), Minimum < 1 over 3 periods
    /// of 60 s, missing data breaching. The emulator evaluates no alarm: it starts `OK`
    /// and changes only through [`Emulator::set_alarm_state`].
    pub async fn put_alarm(&self, region: &str, name: &str) -> Result<()> {
        use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
        self.cloudwatch(region)
            .await
            .put_metric_alarm()
            .alarm_name(name)
            .namespace("AWS/Route53")
            .metric_name("HealthCheckStatus")
            .dimensions(Dimension::builder().name("HealthCheckId").value(name).build())
            .statistic(Statistic::Minimum)
            .period(60)
            .evaluation_periods(3)
            .threshold(1.0)
            .comparison_operator(ComparisonOperator::LessThanThreshold)
            .treat_missing_data("breaching")
            .send()
            .await
            .with_context(|| format!("PutMetricAlarm {name} in {region}"))?;
        Ok(())
    }

    /// Creates a composite alarm in `region` with `rule` (e.g. `ALARM("a") OR ALARM("b")`).
    /// The emulator stores the rule but does not evaluate it: set the state with
    /// [`Emulator::set_alarm_state`].
    pub async fn put_composite_alarm(&self, region: &str, name: &str, rule: &str) -> Result<()> {
        self.cloudwatch(region)
            .await
            .put_composite_alarm()
            .alarm_name(name)
            .alarm_rule(rule)
            .send()
            .await
            .with_context(|| format!("PutCompositeAlarm {name} in {region}"))?;
        Ok(())
    }

    /// Sets an alarm's state with SetAlarmState: `state` is `OK`, `ALARM` or
    /// `INSUFFICIENT_DATA`. The alarm's StateUpdatedTimestamp becomes the emulator's real
    /// clock; for simulated time use [`Emulator::set_alarm_state_at`].
    pub async fn set_alarm_state(&self, region: &str, name: &str, state: &str, reason: &str) -> Result<()> {
        self.cloudwatch(region)
            .await
            .set_alarm_state()
            .alarm_name(name)
            .state_value(aws_sdk_cloudwatch::types::StateValue::from(state))
            .state_reason(reason)
            .send()
            .await
            .with_context(|| format!("SetAlarmState {name} {state} in {region}"))?;
        Ok(())
    }

    /// Like [`Emulator::set_alarm_state`], with StateUpdatedTimestamp = `since_ms` (ms
    /// since epoch) instead of the real clock, through the control API (no AWS API sets
    /// the timestamp), for tests that run in simulated time.
    pub async fn set_alarm_state_at(&self, region: &str, name: &str, state: &str, reason: &str, since_ms: i64) -> Result<()> {
        self.control(
            "PUT",
            "/_kbha/alarm-state",
            Some(&serde_json::json!({
                "region": region,
                "name": name,
                "state": state,
                "reason": reason,
                "since_ms": since_ms,
            })),
        )
        .await
        .map(drop)
    }
}
