//! kbha's AWS adapters: small traits for what the functions do with Route 53, CloudWatch
//! alarms, S3 and SNS (and [`Identity`]: who is calling, from STS), and their
//! implementations over the AWS SDK.
//!
//! Handlers are generic over [`Dns`], [`Alarms`], [`ObjectStore`] and [`Notifier`]; `main`
//! builds the SDK clients once from [`load_sdk_config`] and hands them in:
//!
//! ```no_run
//! # async fn init() {
//! use kbha_aws::{AwsSettings, CloudWatchAlarms, Route53Dns, S3Store, SnsNotifier, load_sdk_config};
//! let conf = load_sdk_config(&AwsSettings::default()).await;
//! let (dns, alarms, store, notifier) = (
//!     Route53Dns::from_conf(&conf),
//!     CloudWatchAlarms::from_conf(&conf),
//!     S3Store::from_conf(&conf),
//!     SnsNotifier::from_conf(&conf),
//! );
//! # let _ = (dns, alarms, store, notifier);
//! # }
//! ```
//!
//! Every call retries throttling (`Throttling`, Route 53's `PriorRequestNotComplete`,
//! S3's `SlowDown`), 5xx answers and transport failures with bounded exponential
//! backoff, and is bounded by timeouts ([`AwsSettings`]). What is left surfaces as an
//! [`AwsError`], classified by [`AwsError::retryable`], with lost compare-and-swaps as
//! [`AwsError::Conflict`].

mod alarms;
mod config;
mod dns;
mod error;
mod identity;
#[cfg(feature = "logs")]
mod logs;
mod notify;
mod store;

pub use alarms::{AlarmStatus, Alarms, CloudWatchAlarms, MAX_ALARM_NAMES_PER_CALL};
pub use config::{AwsSettings, config_loader, https_client, load_sdk_config};
pub use dns::{
    AliasTarget, ChangeStatus, Dns, HEALTHY_CHECKER_FRACTION, Route53Dns, WeightedRecord, aggregate_health, normalize_name,
    swaps_for_weights, to_sdk_record,
};
pub use error::AwsError;
pub use identity::{Identity, StsIdentity};
#[cfg(feature = "logs")]
pub use logs::{CloudWatchLogEvents, LogEvents, LogPage, LogQuery};
pub use notify::{MAX_SUBJECT_CHARS, Notifier, SnsNotifier, sns_subject};
pub use store::{Fetched, ObjectHead, ObjectReader, ObjectStore, ObjectStream, ObjectSummary, PutCondition, S3Store, StoredObject};

/// The SDK crates, so callers use the same versions.
pub mod sdk {
    pub use aws_config;
    pub use aws_sdk_cloudwatch as cloudwatch;
    #[cfg(feature = "logs")]
    pub use aws_sdk_cloudwatchlogs as cloudwatchlogs;
    pub use aws_sdk_route53 as route53;
    pub use aws_sdk_s3 as s3;
    pub use aws_sdk_sns as sns;
    pub use aws_sdk_sts as sts;
}
