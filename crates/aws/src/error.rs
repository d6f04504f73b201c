//! One error type for every adapter, classified so callers decide about retries.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Error codes AWS uses for throttling; the SDK's standard retry already retried these
/// (it lists the same codes, `PriorRequestNotComplete` included), so seeing one here
/// means the retry budget ran out.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// Error codes meaning "the thing named does not exist".
const NOT_FOUND_CODES: &[&str] =
    &["NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchHostedZone", "NoSuchHealthCheck", "NotFoundException", "ResourceNotFoundException"];

/// Fragments of Route 53 `InvalidChangeBatch` messages that mean the records changed
/// since they were read (the compare-and-swap lost), as opposed to a malformed batch.
const R53_CONFLICT_MESSAGES: &[&str] =
    &["values provided do not match the current values", "but it already exists", "but it was not found"];

/// What went wrong talking to AWS.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// A conditional write lost: Route 53 rejected a change batch because the records
    /// changed since they were read, or S3 answered 412 Precondition Failed (or 409
    /// ConditionalRequestConflict). Re-read, decide again, and retry.
    #[error("conflict in {operation}: {message}; the data changed since it was read, re-read and decide again")]
    Conflict {
        /// The API operation, e.g. `ChangeResourceRecordSets`.
        operation: &'static str,
        /// AWS's message.
        message: String,
    },
    /// The named resource does not exist.
    #[error("not found in {operation} ({code}): {message}; check the configured names and ids")]
    NotFound {
        /// The API operation.
        operation: &'static str,
        /// AWS's error code.
        code: String,
        /// AWS's message.
        message: String,
    },
    /// AWS kept throttling after the SDK's bounded retries.
    #[error("throttled in {operation} ({code}) after retries: {message}; try again later or lower the call rate")]
    Throttled {
        /// The API operation.
        operation: &'static str,
        /// AWS's error code (`Throttling`, `PriorRequestNotComplete`, `SlowDown`, ...).
        code: String,
        /// AWS's message.
        message: String,
    },
    /// No answer within the configured timeouts.
    #[error("{operation} timed out; check network access to the AWS endpoint")]
    Timeout {
        /// The API operation.
        operation: &'static str,
    },
    /// The request never got an HTTP answer (DNS, connect, TLS, I/O).
    #[error("cannot reach AWS for {operation}: {message}; check network access to the AWS endpoint")]
    Transport {
        /// The API operation.
        operation: &'static str,
        /// What failed.
        message: String,
    },
    /// AWS answered with an error not covered above.
    #[error("aws rejected {operation} ({code}, http {status}): {message}")]
    Service {
        /// The API operation.
        operation: &'static str,
        /// AWS's error code, or `unknown`.
        code: String,
        /// HTTP status.
        status: u16,
        /// AWS's message.
        message: String,
    },
    /// The answer could not be understood, or the request could not be built.
    #[error("unexpected exchange in {operation}: {message}")]
    Invalid {
        /// The API operation.
        operation: &'static str,
        /// What was wrong.
        message: String,
    },
}

impl AwsError {
    /// Whether trying the same call again later can succeed: throttling, timeouts,
    /// transport failures and 5xx answers. A [`AwsError::Conflict`] counts as
    /// retryable too, but only after re-reading the current state.
    pub fn retryable(&self) -> bool {
        match self {
            AwsError::Conflict { .. } | AwsError::Throttled { .. } | AwsError::Timeout { .. } | AwsError::Transport { .. } => true,
            AwsError::Service { status, .. } => *status >= 500,
            AwsError::NotFound { .. } | AwsError::Invalid { .. } => false,
        }
    }

    /// Whether this is a lost compare-and-swap.
    pub fn is_conflict(&self) -> bool {
        matches!(self, AwsError::Conflict { .. })
    }

    /// Whether the named resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AwsError::NotFound { .. })
    }

    pub(crate) fn invalid(operation: &'static str, message: impl Into<String>) -> Self {
        AwsError::Invalid { operation, message: message.into() }
    }

    /// Classifies an SDK error. Every SDK crate shares `SdkError`, so one function serves all.
    pub(crate) fn from_sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if let SdkError::ServiceError(s) = &err {
            let status = s.raw().status().as_u16();
            let e = s.err();
            let code = e.code().unwrap_or("unknown").to_owned();
            let message = e.message().unwrap_or("").to_owned();
            return classify_service(operation, code, status, message);
        }
        // The useful part of these lives in the error's sources.
        let detail = source_chain(&err);
        match &err {
            SdkError::TimeoutError(_) => AwsError::Timeout { operation },
            SdkError::DispatchFailure(f) if f.is_timeout() => AwsError::Timeout { operation },
            SdkError::DispatchFailure(_) => AwsError::Transport { operation, message: detail },
            SdkError::ResponseError(r) => {
                AwsError::Invalid { operation, message: format!("unreadable response (http {}): {detail}", r.raw().status().as_u16()) }
            }
            _ => AwsError::invalid(operation, detail),
        }
    }
}

fn classify_service(operation: &'static str, code: String, status: u16, message: String) -> AwsError {
    let is_cas_loss = code == "InvalidChangeBatch" && R53_CONFLICT_MESSAGES.iter().any(|m| message.contains(m));
    if is_cas_loss || status == 412 || code == "PreconditionFailed" || code == "ConditionalRequestConflict" {
        return AwsError::Conflict { operation, message };
    }
    if THROTTLING_CODES.contains(&code.as_str()) || status == 429 {
        return AwsError::Throttled { operation, code, message };
    }
    if NOT_FOUND_CODES.contains(&code.as_str()) || status == 404 {
        return AwsError::NotFound { operation, code, message };
    }
    AwsError::Service { operation, code, status, message }
}

/// The error and its sources on one line: SDK errors put the useful part in `source()`.
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_change_batch_is_a_conflict_only_when_records_changed() {
        let lost = classify_service(
            "ChangeResourceRecordSets",
            "InvalidChangeBatch".into(),
            400,
            "[Tried to delete resource record set [name='a.example.com.', type='A', set-identifier='p'] but the values provided do not match the current values]".into(),
        );
        assert!(lost.is_conflict());
        let malformed = classify_service(
            "ChangeResourceRecordSets",
            "InvalidChangeBatch".into(),
            400,
            "[RRSet with DNS name a.other.com. is not permitted in zone example.com.]".into(),
        );
        assert!(!malformed.is_conflict());
        assert!(!malformed.retryable());
    }

    #[test]
    fn s3_precondition_and_throttling_are_classified() {
        assert!(classify_service("PutObject", "PreconditionFailed".into(), 412, String::new()).is_conflict());
        let slow = classify_service("PutObject", "SlowDown".into(), 503, String::new());
        assert!(matches!(slow, AwsError::Throttled { .. }) && slow.retryable());
        let prior = classify_service("ChangeResourceRecordSets", "PriorRequestNotComplete".into(), 400, String::new());
        assert!(matches!(prior, AwsError::Throttled { .. }));
        assert!(classify_service("GetObject", "InternalError".into(), 500, String::new()).retryable());
        assert!(!classify_service("Publish", "InvalidParameter".into(), 400, String::new()).retryable());
    }
}
