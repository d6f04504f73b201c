//! Who is calling: the operator commands record the caller's identity (STS
//! GetCallerIdentity) with everything they do.

use std::future::Future;

use aws_sdk_sts::Client;

use crate::AwsError;

/// The caller's AWS identity.
pub trait Identity: Send + Sync {
    /// The caller's ARN (`arn:aws:iam::123456789012:user/alice`,
    /// `arn:aws:sts::123456789012:assumed-role/oncall/alice`).
    fn caller_arn(&self) -> impl Future<Output = Result<String, AwsError>> + Send;
}

/// [`Identity`] over STS.
#[derive(Debug, Clone)]
pub struct StsIdentity {
    client: Client,
}

impl StsIdentity {
    /// Wraps an STS client.
    pub fn new(client: Client) -> Self {
        StsIdentity { client }
    }

    /// Builds the client from a shared SDK configuration.
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        StsIdentity::new(Client::new(conf))
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

const WHO: &str = "GetCallerIdentity";

impl Identity for StsIdentity {
    async fn caller_arn(&self) -> Result<String, AwsError> {
        let out = self.client.get_caller_identity().send().await.map_err(|e| AwsError::from_sdk(WHO, e))?;
        out.arn().map(str::to_owned).ok_or_else(|| AwsError::invalid(WHO, "response carried no ARN"))
    }
}
