//! Hot swap: a policy in S3 that is replaced, while the function stays warm, when its
//! object changes, and only by a component that passed every check.
//!
//! At most every `KBHA_POLICY_CHECK_SECONDS` one conditional GET (`If-None-Match` with
//! the ETag last seen) asks whether the object changed. A changed object is checked
//! ([`crate::verify`]: pinned digest, signature, world, imports, limits, smoke
//! evaluation) before it replaces the running one; decisions already under way keep the
//! `Arc` they resolved. A refused object leaves the last good policy in place and queues
//! one alert (object, digest, why) that goes out with the next decision. S3 unreachable
//! during a check changes nothing.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use ed25519_dalek::VerifyingKey;
use kbha_aws::{Fetched, ObjectStore};
use kbha_core::{Alert, Severity};

use crate::hosted::load_checked;
use crate::verify::{VerifyError, check_object};
use crate::{Decider, Kind, PolicyFault};

/// How a policy object is trusted and how often it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    /// `KBHA_POLICY_PUBLIC_KEY`: when set, every object needs a valid `<key>.sig`.
    pub public_key: Option<VerifyingKey>,
    /// `KBHA_POLICY_CHECK_SECONDS` (default 30); 0 checks on every invocation.
    pub check_every_s: u64,
    /// `KBHA_SHADOW_POLICY`: a second policy asked on the same input and never applied
    /// (verified like the configured one; loaded at init).
    pub shadow: Option<crate::PolicySource>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle { public_key: None, check_every_s: 30, shadow: None }
    }
}

/// What a configured S3 policy answers while no usable object was ever loaded: a fault,
/// so the configured fallback (built-in or hold) decides and each decision's alert names
/// the object, its digest and why.
struct Unavailable {
    source: String,
    digest: String,
    why: String,
}

impl<K: Kind> Decider<K> for Unavailable {
    fn source(&self) -> &str {
        &self.source
    }
    fn digest(&self) -> &str {
        &self.digest
    }
    fn decide(&self, _input: &K::Input) -> Result<K::Decision, PolicyFault> {
        Err(PolicyFault { kind: "unavailable".into(), message: self.why.clone() })
    }
}

struct Slot<K: Kind> {
    current: Arc<dyn Decider<K>>,
    /// ETag of the object last judged (accepted, or refused for its content).
    etag: Option<String>,
    next_check_ms: i64,
    /// The last refusal alerted, so one bad object alerts once.
    last_refusal: Option<String>,
}

/// A policy object in S3 that is swapped while warm; a [`Decider`], so functions hold it
/// in [`crate::Policies`] like any other and call [`SwappablePolicy::refresh`] before deciding.
pub struct SwappablePolicy<K: Kind> {
    name: String,
    bucket: String,
    key: String,
    version_id: Option<String>,
    sha256: Option<String>,
    lifecycle: Lifecycle,
    initial_digest: String,
    slot: RwLock<Slot<K>>,
    notices: Mutex<Vec<Alert>>,
}

/// The outcome of one check, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Not due yet, or a pinned version (which never changes).
    NotDue,
    /// The object has the ETag last seen.
    Unchanged,
    /// A new object now decides (its digest).
    Swapped(String),
    /// A new object was refused; the last good policy stays (object digest, why).
    Refused(String, String),
    /// S3 could not be asked or the object is gone; the last good policy stays.
    Unreachable(String),
}

impl<K: Kind> SwappablePolicy<K> {
    /// Loads the object at cold start. An unusable one (unreadable, refused) does not
    /// fail init: the fallback decides, with an alert, until a usable object appears.
    pub async fn open<S: ObjectStore>(
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        sha256: Option<&str>,
        lifecycle: Lifecycle,
        store: &S,
        now_ms: i64,
    ) -> Self {
        let name = crate::PolicySource::S3 {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: version_id.map(str::to_owned),
            sha256: sha256.map(str::to_owned),
        }
        .to_string();
        let unavailable = Arc::new(Unavailable { source: name.clone(), digest: "unavailable".into(), why: String::new() });
        let policy = SwappablePolicy {
            name,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: version_id.map(str::to_owned),
            sha256: sha256.map(str::to_owned),
            lifecycle,
            initial_digest: String::new(),
            slot: RwLock::new(Slot { current: unavailable, etag: None, next_check_ms: i64::MIN, last_refusal: None }),
            notices: Mutex::new(Vec::new()),
        };
        let outcome = policy.check(store, now_ms).await;
        let (digest, why) = match &outcome {
            Checked::Swapped(d) => (d.clone(), None),
            // Not the object's digest: the refused object is not what decides, and a
            // built-in fallback with that digest must still be asked.
            Checked::Refused(d, why) => ("unavailable".into(), Some(format!("object {d} refused: {why}"))),
            Checked::Unreachable(why) => ("unavailable".into(), Some(why.clone())),
            Checked::NotDue | Checked::Unchanged => ("unavailable".into(), Some("not loaded".into())),
        };
        // The per-decision fault alert reports a cold-start failure; no separate notice.
        policy.notices.lock().unwrap_or_else(PoisonError::into_inner).clear();
        if let Some(why) = why {
            tracing::error!(policy = %policy.name, %digest, "policy unusable at cold start, the fallback decides: {why}");
            policy.slot.write().unwrap_or_else(PoisonError::into_inner).current =
                Arc::new(Unavailable { source: policy.name.clone(), digest: digest.clone(), why });
        }
        SwappablePolicy { initial_digest: digest, ..policy }
    }

    /// Checks the object if due (`now_ms` is the invocation's clock) and swaps in a new,
    /// verified one. Never fails: every problem keeps the last good policy.
    pub async fn refresh<S: ObjectStore>(&self, store: &S, now_ms: i64) -> Checked {
        let outcome = self.check(store, now_ms).await;
        match &outcome {
            Checked::Swapped(d) => tracing::info!(policy = %self.name, digest = %d, "new policy object in use"),
            Checked::Refused(d, why) => {
                tracing::error!(policy = %self.name, digest = %d, "new policy object refused, keeping the last good one: {why}")
            }
            Checked::Unreachable(why) => tracing::warn!(policy = %self.name, "policy check failed, keeping the last good one: {why}"),
            Checked::NotDue | Checked::Unchanged => {}
        }
        outcome
    }

    async fn check<S: ObjectStore>(&self, store: &S, now_ms: i64) -> Checked {
        let etag = {
            let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
            let pinned_and_loaded = self.version_id.is_some() && slot.etag.is_some();
            if now_ms < slot.next_check_ms || pinned_and_loaded {
                return Checked::NotDue;
            }
            // Claimed before the request, so concurrent invocations do not all ask.
            let every = i64::try_from(self.lifecycle.check_every_s.saturating_mul(1000)).unwrap_or(i64::MAX);
            slot.next_check_ms = now_ms.saturating_add(every);
            slot.etag.clone()
        };
        let object = match store.get_if_changed(&self.bucket, &self.key, self.version_id.as_deref(), etag.as_deref()).await {
            Ok(Fetched::NotModified) => return Checked::Unchanged,
            Ok(Fetched::Missing) => return Checked::Unreachable(format!("{} does not exist", self.name)),
            Err(e) => return Checked::Unreachable(e.to_string()),
            Ok(Fetched::Object(o)) => o,
        };
        let digest = kbha_policy_host::digest(&object.bytes);
        let sig_keys = crate::verify::signature_keys(&self.key, &digest);
        let sig_name = format!("s3://{}/{} (or {})", self.bucket, sig_keys[0], sig_keys[1]);
        let mut signature = None;
        if self.lifecycle.public_key.is_some() {
            for key in &sig_keys {
                match store.get(&self.bucket, key).await {
                    Ok(Some(s)) => {
                        signature = Some(s.bytes);
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => return Checked::Unreachable(format!("reading s3://{}/{key}: {e}", self.bucket)),
                }
            }
        }
        let verdict =
            check_object(&object.bytes, self.sha256.as_deref(), self.lifecycle.public_key.as_ref(), signature.as_deref(), &sig_name)
                .and_then(|verified| load_checked::<K>(&self.name, &verified));
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        match verdict {
            Ok(hosted) => {
                slot.current = Arc::new(hosted);
                slot.etag = Some(object.etag);
                slot.last_refusal = None;
                Checked::Swapped(digest)
            }
            Err(e) => {
                // A signature may be published just after its component: check that
                // object again next time instead of remembering it as judged.
                if !matches!(e, VerifyError::Unsigned(_) | VerifyError::BadSignature | VerifyError::MalformedSignature) {
                    slot.etag = Some(object.etag);
                }
                let why = e.to_string();
                let key = format!("{digest} {why}");
                if slot.last_refusal.as_deref() != Some(key.as_str()) {
                    slot.last_refusal = Some(key);
                    let kept = format!("{} ({})", slot.current.source(), slot.current.digest());
                    self.notices.lock().unwrap_or_else(PoisonError::into_inner).push(Alert {
                        severity: Severity::Critical,
                        summary: format!("{} policy object {} refused; the last good policy stays", K::NAME, self.name),
                        detail: format!(
                            "policy object {} (digest {digest}) was refused: {why}. Still deciding: {kept}. Publish a fixed object or roll back.",
                            self.name
                        ),
                    });
                }
                Checked::Refused(digest, why)
            }
        }
    }

    /// Whether a verified object decides (false while the fallback stands in).
    pub fn usable(&self) -> bool {
        let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
        slot.etag.is_some() && slot.last_refusal.is_none()
    }

    /// `sha256:<hex>` of the policy deciding now (`unavailable` when none is usable).
    pub fn current_digest(&self) -> String {
        self.slot.read().unwrap_or_else(PoisonError::into_inner).current.digest().to_owned()
    }
}

impl<K: Kind> Decider<K> for SwappablePolicy<K> {
    fn source(&self) -> &str {
        &self.name
    }
    /// The digest loaded at cold start; [`crate::Policies::decide`] reports the one that
    /// decided, through [`Decider::current`].
    fn digest(&self) -> &str {
        &self.initial_digest
    }
    fn decide(&self, input: &K::Input) -> Result<K::Decision, PolicyFault> {
        let current = Arc::clone(&self.slot.read().unwrap_or_else(PoisonError::into_inner).current);
        current.decide(input)
    }
    fn current(&self) -> Option<Arc<dyn Decider<K>>> {
        Some(Arc::clone(&self.slot.read().unwrap_or_else(PoisonError::into_inner).current))
    }
    fn take_notices(&self) -> Vec<Alert> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
