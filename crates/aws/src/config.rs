//! One place that decides how every SDK client talks to AWS: HTTP client, retries, timeouts.

use std::path::PathBuf;
use std::time::Duration;

use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// How the SDK clients reach AWS. [`Default`] suits a Lambda invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// Endpoint override for every service (an emulator). `None`: the environment's
    /// `AWS_ENDPOINT_URL*` variables or the real AWS endpoints.
    pub endpoint_url: Option<String>,
    /// Region override. `None`: the environment's (`AWS_REGION` in Lambda).
    pub region: Option<String>,
    /// Attempts per call, the first included. Throttling (`Throttling`,
    /// `PriorRequestNotComplete`, `SlowDown`), 5xx, timeouts and transport errors are
    /// retried by the SDK's standard retry with exponential backoff and jitter.
    pub max_attempts: u32,
    /// First backoff delay; doubles each attempt.
    pub initial_backoff: Duration,
    /// Upper bound of one backoff delay.
    pub max_backoff: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Limit of one HTTP attempt (response headers received).
    pub attempt_timeout: Duration,
    /// Limit of a whole call, retries included, so an invocation never hangs silently.
    pub operation_timeout: Duration,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            endpoint_url: None,
            region: None,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
        }
    }
}

impl AwsSettings {
    /// The SDK retry configuration these settings describe (standard mode).
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    /// The SDK timeout configuration these settings describe.
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }
}

/// An HTTPS client (hyper 1 + rustls with ring): the SDK crates are built without
/// default features, which would have pulled aws-lc-sys and its slow C build.
///
/// Trust roots: the system's, as rustls-native-certs finds them, parsed once per process.
/// Set `SSL_CERT_FILE` to the system bundle (the template does) and only that file is read,
/// instead of the bundle plus every file of the certificate directory (~2.6 ms of a cold
/// start on this Debian machine). If `SSL_CERT_FILE` names a file that cannot be read, the
/// native loading would find no root and every AWS call would fail: the roots then come from
/// the first distribution bundle found, and the error is logged.
pub fn https_client() -> SharedHttpClient {
    let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
    let Some(store) = trust_override(|k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from), BUNDLES) else {
        return builder.build_https();
    };
    match tls::TlsContext::builder().with_trust_store(store).build() {
        Ok(context) => builder.tls_context(context).build_https(),
        Err(e) => {
            tracing::error!("the fallback CA bundle is not usable ({e}); TLS to AWS will fail until SSL_CERT_FILE names a CA bundle");
            builder.build_https()
        }
    }
}

/// The system CA bundle files, each holding every root: Amazon Linux (Lambda's
/// `provided.al2023`), Debian/Ubuntu, Alpine.
const BUNDLES: &[&str] = &["/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem"];

/// A trust store to use instead of the native loading, when `SSL_CERT_FILE` is set to a file
/// that cannot be read; `None` otherwise (the native loading, which honours `SSL_CERT_FILE`).
fn trust_override(get: impl Fn(&str) -> Option<PathBuf>, bundles: &[&str]) -> Option<tls::TrustStore> {
    let file = get("SSL_CERT_FILE")?;
    if std::fs::metadata(&file).is_ok_and(|m| m.is_file() && m.len() > 0) {
        return None;
    }
    let found = bundles.iter().find_map(|path| {
        let kept = usable_roots(&std::fs::read_to_string(path).ok()?);
        (!kept.is_empty()).then_some((path, kept))
    });
    match found {
        Some((path, kept)) => {
            tracing::error!("SSL_CERT_FILE={} cannot be read; trusting the roots of {path} instead: fix SSL_CERT_FILE", file.display());
            Some(tls::TrustStore::empty().with_native_roots(false).with_pem_certificate(kept.into_bytes()))
        }
        None => {
            tracing::error!(
                "SSL_CERT_FILE={} cannot be read and no CA bundle was found: TLS to AWS will fail; fix SSL_CERT_FILE",
                file.display()
            );
            None
        }
    }
}

/// The PEM blocks of `text` that decode to a certificate rustls can add as a trust anchor
/// (the SDK panics on one it cannot add, where its native loading skips it).
fn usable_roots(text: &str) -> String {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut kept = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else { break };
        let block = &rest[start..start + len + END.len()];
        rest = &rest[start + len + END.len()..];
        let usable = CertificateDer::from_pem_slice(block.as_bytes()).is_ok_and(|der| webpki::anchor_from_trusted_cert(&der).is_ok());
        if usable {
            kept.push_str(block);
            kept.push('\n');
        }
    }
    kept
}

/// A config loader with kbha's HTTP client, retries and timeouts; add credentials or
/// anything else before `.load()`.
pub fn config_loader(settings: &AwsSettings) -> ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .retry_config(settings.retry_config())
        .timeout_config(settings.timeout_config());
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    lambda_shortcuts(loader, |k| std::env::var(k).ok().filter(|v| !v.is_empty()), settings.region.is_none())
}

/// Where the environment already answers, take the answer directly instead of building the
/// SDK's default chains, which cost cold-start time (the credentials chain constructs its
/// profile, web-identity (an STS client), ECS and IMDS providers; the region chain an IMDS
/// client). Lambda always sets `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`
/// and `AWS_REGION`. The chains try the environment first, so the result is the same: when
/// the variables are absent (a laptop with a profile or SSO), the chains stay.
fn lambda_shortcuts(mut loader: ConfigLoader, get: impl Fn(&str) -> Option<String>, region_from_env: bool) -> ConfigLoader {
    if get("AWS_ACCESS_KEY_ID").is_some() && get("AWS_SECRET_ACCESS_KEY").is_some() {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    if region_from_env && let Some(region) = get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")) {
        loader = loader.region(Region::new(region));
    }
    loader
}

/// Loads the shared SDK configuration (credentials and region from the environment).
/// Call once at init and build every client from it.
pub async fn load_sdk_config(settings: &AwsSettings) -> SdkConfig {
    config_loader(settings).load().await
}

#[cfg(test)]
mod tests {
    use aws_config::{BehaviorVersion, Region};

    use super::*;

    async fn loaded(vars: &[(&str, &str)], region_from_env: bool) -> SdkConfig {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
        let loader = if region_from_env { loader } else { loader.region(Region::new("eu-west-1")) };
        lambda_shortcuts(loader, |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()), region_from_env).load().await
    }

    #[test]
    fn an_unreadable_ssl_cert_file_falls_back_to_a_distribution_bundle() {
        let Some(bundle) = BUNDLES.iter().copied().find(|p| std::path::Path::new(p).exists()) else {
            return; // no bundle on this machine to fall back to
        };
        let set = |v: &'static str| move |k: &str| (k == "SSL_CERT_FILE").then(|| PathBuf::from(v));
        assert!(trust_override(|_| None, &[bundle]).is_none(), "unset: the native loading");
        assert!(trust_override(set(bundle), &[bundle]).is_none(), "a readable file: the native loading reads it");
        assert!(trust_override(set("/nonexistent/ca.pem"), &[bundle]).is_some(), "unreadable: the bundle");
        assert!(trust_override(set("/nonexistent/ca.pem"), &["/nonexistent/other.pem"]).is_none(), "nothing to fall back to");
        let text = std::fs::read_to_string(bundle).expect("bundle");
        let kept = usable_roots(&format!("junk\n{text}\n-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"));
        let count = |s: &str| s.matches("-----BEGIN CERTIFICATE-----").count();
        assert!(count(&kept) > 10 && count(&kept) <= count(&text), "{} of {}", count(&kept), count(&text));
    }

    #[tokio::test]
    async fn lambda_variables_give_credentials_and_region_without_the_chains() {
        let conf = loaded(&[("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_SECRET_ACCESS_KEY", "secret"), ("AWS_REGION", "us-west-2")], true).await;
        assert_eq!(conf.region().map(|r| r.as_ref()), Some("us-west-2"));
        let provider = conf.credentials_provider();
        let provider = provider.as_ref().map(|p| format!("{p:?}"));
        assert!(provider.as_deref().is_some_and(|p| p.contains("EnvironmentVariableCredentialsProvider")), "{provider:?}");
    }

    #[tokio::test]
    async fn an_explicit_region_wins_and_without_keys_the_default_chain_stays() {
        let conf = loaded(&[("AWS_REGION", "us-west-2")], false).await;
        assert_eq!(conf.region().map(|r| r.as_ref()), Some("eu-west-1"));
        let provider = conf.credentials_provider().map(|p| format!("{p:?}"));
        assert!(provider.as_deref().is_some_and(|p| !p.contains("EnvironmentVariableCredentialsProvider")), "{provider:?}");
    }
}
