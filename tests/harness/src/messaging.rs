//! SNS and SQS: a topic with a subscribed queue, and the notifications it receives.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::Emulator;

impl Emulator {
    /// Creates an SNS topic and an SQS queue subscribed to it without raw delivery,
    /// so each queued message is the SNS envelope (Subject, MessageAttributes).
    pub async fn create_topic_with_queue(&self, name: &str) -> Result<TopicQueue> {
        let sns = self.sns().await;
        let sqs = self.sqs().await;
        let topic_arn = sns.create_topic().name(name).send().await.context("CreateTopic")?.topic_arn().context("topic arn")?.to_owned();
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{name}-inbox"))
            .send()
            .await
            .context("CreateQueue")?
            .queue_url()
            .context("queue url")?
            .to_owned();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .context("GetQueueAttributes")?;
        let queue_arn =
            attrs.attributes().and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)).context("queue arn")?.clone();
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .attributes("RawMessageDelivery", "false")
            .send()
            .await
            .context("Subscribe")?;
        Ok(TopicQueue { topic_arn, queue_url })
    }

    /// Receives (and deletes) messages from the queue until `n` arrived or `timeout`
    /// passed; returns what arrived, possibly fewer than `n`, so tests can assert
    /// "exactly one" by asking for more.
    pub async fn drain_messages(&self, tq: &TopicQueue, n: usize, timeout: Duration) -> Result<Vec<SnsEnvelope>> {
        let sqs = self.sqs().await;
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = i32::try_from(left.as_secs().clamp(0, 1)).unwrap_or(1);
            let res = sqs
                .receive_message()
                .queue_url(&tq.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(wait)
                .send()
                .await
                .context("ReceiveMessage")?;
            let msgs = res.messages();
            if msgs.is_empty() && wait == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for m in msgs {
                let body = m.body().unwrap_or_default();
                out.push(SnsEnvelope::parse(body)?);
                if let Some(h) = m.receipt_handle() {
                    sqs.delete_message().queue_url(&tq.queue_url).receipt_handle(h).send().await.context("DeleteMessage")?;
                }
            }
        }
        Ok(out)
    }
}

/// An SNS topic with an SQS queue subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicQueue {
    /// Topic ARN.
    pub topic_arn: String,
    /// URL of the subscribed queue.
    pub queue_url: String,
}

/// An SNS notification as delivered to SQS (non-raw delivery).
#[derive(Debug, Clone, PartialEq)]
pub struct SnsEnvelope {
    /// `Subject`, when the publisher set one.
    pub subject: Option<String>,
    /// `Message`.
    pub message: String,
    /// `MessageAttributes`, name -> value (string values; binary ones as given).
    pub attributes: BTreeMap<String, String>,
    /// The whole envelope.
    pub raw: serde_json::Value,
}

impl SnsEnvelope {
    /// Parses an SQS body holding an SNS envelope.
    pub fn parse(body: &str) -> Result<SnsEnvelope> {
        let raw: serde_json::Value = serde_json::from_str(body).with_context(|| format!("SQS body is not an SNS envelope: {body}"))?;
        let subject = raw.get("Subject").and_then(|s| s.as_str()).map(str::to_owned);
        let message =
            raw.get("Message").and_then(|s| s.as_str()).with_context(|| format!("SNS envelope without Message: {body}"))?.to_owned();
        let attributes = raw
            .get("MessageAttributes")
            .and_then(|a| a.as_object())
            .map(|a| {
                a.iter()
                    .map(|(k, v)| {
                        let val = v.get("Value").and_then(|x| x.as_str()).unwrap_or_default();
                        (k.clone(), val.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(SnsEnvelope { subject, message, attributes, raw })
    }
}
