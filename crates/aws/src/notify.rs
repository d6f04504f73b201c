//! SNS: notices with a readable subject and filterable message attributes.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;

use crate::AwsError;

/// SNS requires a subject of fewer than 100 characters.
pub const MAX_SUBJECT_CHARS: usize = 99;

/// Publishes notices.
pub trait Notifier: Send + Sync {
    /// Publishes `message` to `topic_arn` with `subject` (made SNS-safe by
    /// [`sns_subject`]) and string message `attributes`. Returns the message id.
    fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
        attributes: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
}

/// [`Notifier`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: Client,
}

impl SnsNotifier {
    /// Wraps an SNS client.
    pub fn new(client: Client) -> Self {
        SnsNotifier { client }
    }

    /// Builds the client from a shared SDK configuration.
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        SnsNotifier::new(Client::new(conf))
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Makes a subject SNS accepts: ASCII printable only (anything else becomes `?`,
/// line breaks become spaces), must not start with a space, at most
/// [`MAX_SUBJECT_CHARS`] characters (cut with `...`), never empty.
pub fn sns_subject(subject: &str) -> String {
    let cleaned: String = subject
        .chars()
        .map(|c| match c {
            '\r' | '\n' | '\t' => ' ',
            ' '..='~' => c,
            _ => '?',
        })
        .collect();
    let trimmed = cleaned.trim();
    let mut out = if trimmed.len() > MAX_SUBJECT_CHARS {
        // ASCII only by now, so byte indexing is char indexing.
        format!("{}...", trimmed[..MAX_SUBJECT_CHARS - 3].trim_end())
    } else {
        trimmed.to_owned()
    };
    if out.is_empty() {
        out.push_str("kbha notice");
    }
    out
}

const PUBLISH: &str = "Publish";

impl Notifier for SnsNotifier {
    async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<String, AwsError> {
        let mut req = self.client.publish().topic_arn(topic_arn).subject(sns_subject(subject)).message(message);
        for (k, v) in attributes {
            // SNS rejects empty attribute values; an empty label says nothing anyway.
            if v.is_empty() {
                continue;
            }
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| AwsError::invalid(PUBLISH, e.to_string()))?;
            req = req.message_attributes(k, value);
        }
        let out = req.send().await.map_err(|e| AwsError::from_sdk(PUBLISH, e))?;
        out.message_id().map(str::to_owned).ok_or_else(|| AwsError::invalid(PUBLISH, "response carried no message id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_made_sns_safe() {
        assert_eq!(sns_subject("  failover: eu\nnow  "), "failover: eu now");
        assert_eq!(sns_subject("région ✓"), "r?gion ?");
        let long = sns_subject(&"x".repeat(300));
        assert_eq!(long.len(), MAX_SUBJECT_CHARS);
        assert!(long.ends_with("..."));
        assert_eq!(sns_subject("\n"), "kbha notice");
    }
}
