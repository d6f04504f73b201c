//! Components in wasmtime (through `kbha-policy-host`): the built-in defaults embedded in
//! the binary, artifacts built by `cargo xtask policies`, or objects in S3.

use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use kbha_policy_host::{Limits, PolicyEngine};

use crate::cache::Cache;
use crate::embedded;
use crate::verify::{Verified, VerifyError};
use crate::{Decider, Kind, PolicyFault};

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
    /// The object or file could not be read.
    #[error("policy {source_name} cannot be read: {message}")]
    Read {
        /// Where it came from.
        source_name: String,
        /// Why.
        message: String,
    },
}

/// The limits the process's engine is created with: `KBHA_POLICY_WASI` as the function's
/// start-up read it (`kbha_lambda::Env::policy_limits`) and handed to [`configure_engine`];
/// the defaults (WASI refused) when nothing configured it before the first load.
static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Sets the limits of the process's policy engine, before any policy loads: one engine
/// serves every policy of the process (compiled code and the instance pool are shared), so
/// its limits are fixed once. The same limits again are accepted (a process may start more
/// than one function, as `kbha replay` does); others, once the engine's are fixed, are
/// refused rather than silently ignored.
pub fn configure_engine(limits: Limits) -> Result<(), LoadError> {
    let fixed = LIMITS.get_or_init(|| limits.clone());
    if *fixed == limits {
        return Ok(());
    }
    let wasi = |l: &Limits| if l.wasi { "on" } else { "off" };
    Err(LoadError::Engine(format!(
        "the policy engine already runs with other limits (KBHA_POLICY_WASI {}, now asked for {}); one engine serves the whole process",
        wasi(fixed),
        wasi(&limits)
    )))
}

/// One engine per process: compiled code and the instance pool are shared. Its limits are
/// those given to [`configure_engine`] (`KBHA_POLICY_WASI`).
fn engine() -> Result<&'static PolicyEngine, LoadError> {
    static ENGINE: OnceLock<Result<PolicyEngine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| PolicyEngine::new(LIMITS.get_or_init(Limits::default).clone()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| LoadError::Engine(e.clone()))
}

/// A component of world `K` in wasmtime.
pub struct Hosted<K: Kind> {
    source: String,
    digest: String,
    component: Arc<K::Component>,
    _kind: PhantomData<fn() -> K>,
}

impl<K: Kind> Hosted<K> {
    /// Validates and prepares a component (`source` names it in logs and alerts). The
    /// caller has verified `bytes` (pin or signature); compiled code is cached by their
    /// digest ([`Cache`]).
    pub fn from_bytes(source: &str, bytes: &[u8]) -> Result<Self, LoadError> {
        Self::from_parts(source, bytes, None)
    }

    /// [`Hosted::from_bytes`] with the artifact precompiled for this binary's architecture,
    /// when there is one (the built-ins).
    fn from_parts(source: &str, bytes: &[u8], embedded: Option<&[u8]>) -> Result<Self, LoadError> {
        let digest = kbha_policy_host::digest(bytes);
        let start = std::time::Instant::now();
        let (component, origin) = Cache::process()
            .load_with::<K>(engine()?, bytes, &digest, embedded)
            .map_err(|e| LoadError::Component { source_name: source.to_owned(), message: e.to_string() })?;
        tracing::debug!(policy = %source, %digest, ?origin, ms = start.elapsed().as_secs_f64() * 1e3, "policy loaded");
        Ok(Hosted { source: source.to_owned(), digest, component, _kind: PhantomData })
    }
}

impl<K: Kind> Decider<K> for Hosted<K> {
    fn source(&self) -> &str {
        &self.source
    }

    fn digest(&self) -> &str {
        &self.digest
    }

    fn decide(&self, input: &K::Input) -> Result<K::Decision, PolicyFault> {
        match K::evaluate(&self.component, input) {
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

/// The built-in default policy of world `K`, loaded once per process. Kept by world name
/// (type-erased, as Rust has no generic statics), so the worlds need not know this module.
pub fn builtin<K: Kind>() -> Result<Arc<dyn Decider<K>>, LoadError> {
    type Loaded = Result<Arc<dyn Any + Send + Sync>, String>;
    static BUILTINS: Mutex<BTreeMap<&'static str, Loaded>> = Mutex::new(BTreeMap::new());
    let mut builtins = BUILTINS.lock().unwrap_or_else(PoisonError::into_inner);
    let loaded = builtins.entry(K::NAME).or_insert_with(|| {
        let bytes = K::builtin_bytes().ok_or_else(|| {
            format!(
                "this binary was built without {}/{}.wasm; run `cargo xtask policies`, then rebuild",
                embedded::POLICY_DIR,
                K::DEFAULT_ARTIFACT
            )
        })?;
        let hosted: Arc<dyn Any + Send + Sync> =
            Arc::new(Hosted::<K>::from_parts("builtin", bytes, K::builtin_precompiled()).map_err(|e| e.to_string())?);
        Ok(hosted)
    });
    let hosted = loaded.clone().map_err(|message| LoadError::Component { source_name: "builtin".into(), message })?;
    let hosted = hosted
        .downcast::<Hosted<K>>()
        .map_err(|_| LoadError::Engine(format!("the built-in {} policy is stored as another world; two worlds share a name", K::NAME)))?;
    Ok(hosted as Arc<dyn Decider<K>>)
}

/// Loads a verified object (see [`crate::verify::check_object`]) and runs it once on the
/// world's canned input: a policy that traps or runs out of fuel there never replaces a
/// working one. A refusal passes: the canned input's parameters need not suit every policy.
pub fn load_checked<K: Kind>(source: &str, verified: &Verified<'_>) -> Result<Hosted<K>, VerifyError> {
    let hosted = Hosted::<K>::from_bytes(source, verified.bytes).map_err(|e| match e {
        LoadError::Component { message, .. } => VerifyError::Component { kind: "component".into(), message },
        other => VerifyError::Component { kind: "engine".into(), message: other.to_string() },
    })?;
    let input = K::smoke_input().map_err(|message| VerifyError::Smoke { world: K::NAME, kind: "input".into(), message })?;
    match hosted.decide(&input) {
        Ok(_) => Ok(hosted),
        Err(f) if f.kind == "refused" => Ok(hosted),
        Err(f) => Err(VerifyError::Smoke { world: K::NAME, kind: f.kind, message: f.message }),
    }
}

/// A component built by `cargo xtask policies` (`target/policies/<name>.wasm`), for
/// tests, drills and `kbha replay`; `source` is the name it goes by.
pub fn load_artifact<K: Kind>(name: &str, source: &str) -> Result<Arc<dyn Decider<K>>, LoadError> {
    let path = std::path::Path::new(embedded::POLICY_DIR).join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path).map_err(|e| LoadError::Read {
        source_name: path.display().to_string(),
        message: format!("{e}; run `cargo xtask policies` first"),
    })?;
    Ok(Arc::new(Hosted::<K>::from_bytes(source, &bytes)?))
}
