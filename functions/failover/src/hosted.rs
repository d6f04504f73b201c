//! Policies hosted in wasmtime (through `kbha-policy-host`, the only crate that touches
//! wasmtime): the built-in default component embedded in this binary, or a component
//! object from S3 loaded at init.

use std::sync::{Arc, OnceLock};

use kbha_aws::ObjectStore;
use kbha_core::{FailoverDecision, FailoverInput};
use kbha_policy_host::{FailoverPolicy, Limits, PolicyEngine};

use crate::config::{Fallback, FailoverConfig, PolicySource};
use crate::policy::{FailoverDecider, Policies, PolicyFault};

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// A policy that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The engine could not be created.
    #[error("cannot create the policy engine: {0}")]
    Engine(String),
    /// The component was rejected.
    #[error("policy {source_name} cannot be loaded: {message}")]
    Component {
        /// Where it came from.
        source_name: String,
        /// Why.
        message: String,
    },
    /// The S3 object could not be read.
    #[error("policy {source_name} cannot be read: {message}")]
    Read {
        /// Where it came from.
        source_name: String,
        /// Why.
        message: String,
    },
}

/// One engine per process: compiled code and the instance pool are shared.
fn engine() -> Result<&'static PolicyEngine, LoadError> {
    static ENGINE: OnceLock<Result<PolicyEngine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| PolicyEngine::new(Limits::default()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| LoadError::Engine(e.clone()))
}

/// A failover component in wasmtime.
pub struct HostedPolicy {
    source: String,
    policy: FailoverPolicy,
}

impl HostedPolicy {
    /// Validates and prepares a component (`source` names it in logs and alerts).
    pub fn from_bytes(source: &str, bytes: &[u8]) -> Result<Self, LoadError> {
        let policy = engine()?
            .load_failover(bytes)
            .map_err(|e| LoadError::Component { source_name: source.to_owned(), message: e.to_string() })?;
        Ok(HostedPolicy { source: source.to_owned(), policy })
    }
}

impl FailoverDecider for HostedPolicy {
    fn source(&self) -> &str {
        &self.source
    }

    fn digest(&self) -> &str {
        self.policy.digest()
    }

    fn decide(&self, input: &FailoverInput) -> Result<FailoverDecision, PolicyFault> {
        match self.policy.decide(input) {
            Ok(eval) => {
                for (level, line) in &eval.logs {
                    tracing::info!(policy = %self.source, ?level, "{line}");
                }
                Ok(eval.decision)
            }
            Err(e) => Err(PolicyFault { kind: e.kind().to_owned(), message: e.to_string() }),
        }
    }
}

/// The built-in default failover policy.
pub fn builtin() -> Result<Arc<dyn FailoverDecider>, LoadError> {
    static BUILTIN: OnceLock<Result<Arc<HostedPolicy>, String>> = OnceLock::new();
    let p = BUILTIN
        .get_or_init(|| match BUILTIN_FAILOVER {
            Some(bytes) => HostedPolicy::from_bytes("builtin", bytes).map(Arc::new).map_err(|e| e.to_string()),
            None => Err(format!(
                "this binary was built without {POLICY_DIR}/failover-default.wasm; run `cargo kbha policy build`, then rebuild"
            )),
        })
        .as_ref()
        .map_err(|e| LoadError::Component { source_name: "builtin".into(), message: e.clone() })?;
    Ok(Arc::clone(p) as Arc<dyn FailoverDecider>)
}

/// A component built by `cargo kbha policy build` (`target/policies/<name>.wasm`), for
/// tests and `kbha replay`; `source` is the name it goes by.
pub fn load_artifact(name: &str, source: &str) -> Result<Arc<dyn FailoverDecider>, LoadError> {
    let path = std::path::Path::new(POLICY_DIR).join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path).map_err(|e| LoadError::Read {
        source_name: path.display().to_string(),
        message: format!("{e}; run `cargo kbha policy build` first"),
    })?;
    Ok(Arc::new(HostedPolicy::from_bytes(source, &bytes)?))
}

/// The configured policy and its fallback. An S3 policy that cannot be read or loaded at
/// init fails init: a wrong configuration must be seen, not papered over.
pub async fn load_policies<S: ObjectStore>(cfg: &FailoverConfig, store: &S) -> Result<Policies, LoadError> {
    let primary: Arc<dyn FailoverDecider> = match &cfg.policy {
        PolicySource::Builtin => builtin()?,
        PolicySource::S3 { bucket, key } => {
            let source = cfg.policy.to_string();
            let obj = store
                .get(bucket, key)
                .await
                .map_err(|e| LoadError::Read { source_name: source.clone(), message: e.to_string() })?
                .ok_or_else(|| LoadError::Read { source_name: source.clone(), message: "no such object".into() })?;
            Arc::new(HostedPolicy::from_bytes(&source, &obj.bytes)?)
        }
    };
    let fallback = match cfg.fallback {
        Fallback::Builtin => Some(builtin()?),
        Fallback::Hold => None,
    };
    Ok(Policies { primary, fallback })
}
