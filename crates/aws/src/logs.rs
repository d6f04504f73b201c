//! Reading decision records back from CloudWatch Logs (`kbha policy backtest`): the
//! functions print one JSON line per decision, which Lambda keeps as one log event.
//! Behind the `logs` feature, so the Lambda binaries do not build the Logs SDK.

use std::future::Future;

use aws_sdk_cloudwatchlogs::Client;

use crate::AwsError;

/// One page of log events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    /// The events' messages, oldest first within the page.
    pub messages: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub next_token: Option<String>,
}

/// What to read from a log group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Log group name, e.g. `/aws/lambda/kbha-failover`.
    pub group: String,
    /// Only events at or after this time (ms since the epoch).
    pub start_ms: Option<i64>,
    /// Only events containing this term (a CloudWatch Logs filter pattern).
    pub pattern: Option<String>,
    /// Events per page (FilterLogEvents allows 1 to 10,000).
    pub page_size: i32,
}

/// A source of log events, page by page.
pub trait LogEvents: Send + Sync {
    /// The page of `query` after `token` (`None`: the first page).
    fn page(&self, query: &LogQuery, token: Option<String>) -> impl Future<Output = Result<LogPage, AwsError>> + Send;
}

/// [`LogEvents`] over CloudWatch Logs' FilterLogEvents.
#[derive(Debug, Clone)]
pub struct CloudWatchLogEvents {
    client: Client,
}

impl CloudWatchLogEvents {
    /// Wraps a CloudWatch Logs client.
    pub fn new(client: Client) -> Self {
        CloudWatchLogEvents { client }
    }

    /// Builds the client from a shared SDK configuration.
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        CloudWatchLogEvents::new(Client::new(conf))
    }
}

const FILTER: &str = "FilterLogEvents";

impl LogEvents for CloudWatchLogEvents {
    async fn page(&self, query: &LogQuery, token: Option<String>) -> Result<LogPage, AwsError> {
        let out = self
            .client
            .filter_log_events()
            .log_group_name(&query.group)
            .set_start_time(query.start_ms)
            .set_filter_pattern(query.pattern.clone())
            .limit(query.page_size)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(FILTER, e))?;
        let messages = out.events().iter().filter_map(|e| e.message().map(str::to_owned)).collect();
        Ok(LogPage { messages, next_token: out.next_token().filter(|t| !t.is_empty()).map(str::to_owned) })
    }
}
