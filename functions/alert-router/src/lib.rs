//! kbha-alert-router: the alert router Lambda's logic, as a library so `kbha replay
//! alerting` and the tests drive the same handler the binary runs.
//!
//! Flow per SNS message: normalise (CloudWatch alarm, kbha notice, anything else) ->
//! gather the firing alerts (S3 state objects) -> alert policy (wasm component) ->
//! claim the delivery in the alert's state object (conditional write) -> SNS publish
//! per destination -> confirm -> decision record.

pub mod config;
pub mod dedup;
pub mod handler;
pub mod normalise;
mod start;
pub mod subject;

pub use config::{ConfigError, RouterConfig};
pub use handler::{AlertRouter, DecisionRecord, Delivery, Outcome, RouterError};
pub use kbha_lambda::record::Invocation;
pub use start::{LambdaRouter, start};

impl From<RouterError> for lambda_runtime::Diagnostic {
    /// The error type says whether retrying can help, so retries are a decision.
    fn from(e: RouterError) -> Self {
        let class = if e.retryable() { "Retryable" } else { "NonRetryable" };
        let kind = match &e {
            RouterError::Aws(_) => "Aws",
            RouterError::Delivery { .. } => "Delivery",
            RouterError::Busy { .. } => "Busy",
            RouterError::ConflictExhausted { .. } => "ConflictExhausted",
        };
        lambda_runtime::Diagnostic { error_type: format!("kbha.{class}.{kind}"), error_message: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_for_lambda() {
        let busy: lambda_runtime::Diagnostic = RouterError::Busy { dedup_key: "k".into() }.into();
        assert_eq!(busy.error_type, "kbha.Retryable.Busy");
        let throttled = RouterError::Delivery {
            dedup_key: "k".into(),
            destination: "critical".into(),
            topic_arn: "arn:aws:sns:us-east-1:1:c".into(),
            source: kbha_aws::AwsError::Timeout { operation: "Publish" },
        };
        assert!(throttled.to_string().contains("destination `critical`"));
        assert_eq!(lambda_runtime::Diagnostic::from(throttled).error_type, "kbha.Retryable.Delivery");
        let missing = RouterError::Delivery {
            dedup_key: "k".into(),
            destination: "critical".into(),
            topic_arn: "arn".into(),
            source: kbha_aws::AwsError::NotFound { operation: "Publish", code: "NotFound".into(), message: String::new() },
        };
        assert_eq!(lambda_runtime::Diagnostic::from(missing).error_type, "kbha.NonRetryable.Delivery");
    }
}
