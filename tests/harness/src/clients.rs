//! AWS SDK configuration and clients pointed at the emulator.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use kbha_aws::AwsSettings;

use crate::Emulator;

impl Emulator {
    /// kbha's production settings pointed at the emulator, with short backoffs so
    /// retry tests stay quick.
    pub fn aws_settings(&self) -> AwsSettings {
        AwsSettings {
            endpoint_url: Some(self.endpoint_url()),
            region: Some("us-east-1".into()),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..AwsSettings::default()
        }
    }

    /// SDK configuration for the emulator: static test credentials, us-east-1, the
    /// endpoint override, and kbha's HTTP client, retries and timeouts.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.sdk_config_with(&self.aws_settings()).await
    }

    /// Like [`Emulator::sdk_config`] with other settings (keep the endpoint).
    pub async fn sdk_config_with(&self, settings: &AwsSettings) -> SdkConfig {
        kbha_aws::config_loader(settings).credentials_provider(Credentials::new("testing", "testing", None, None, "kbha-test")).load().await
    }

    /// A Route 53 client for the emulator.
    pub async fn route53(&self) -> aws_sdk_route53::Client {
        aws_sdk_route53::Client::new(&self.sdk_config().await)
    }

    /// An SNS client for the emulator.
    pub async fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.sdk_config().await)
    }

    /// An SQS client for the emulator.
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config().await)
    }

    /// A CloudWatch client for the emulator in `region` (CloudWatch is regional; the
    /// emulator keeps each region's alarms apart).
    pub async fn cloudwatch(&self, region: &str) -> aws_sdk_cloudwatch::Client {
        let conf = self.sdk_config().await;
        aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(&conf).region(aws_sdk_cloudwatch::config::Region::new(region.to_owned())).build(),
        )
    }

    /// An S3 client for the emulator (path-style addressing).
    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let conf = self.sdk_config().await;
        aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&conf).force_path_style(true).build())
    }
}
