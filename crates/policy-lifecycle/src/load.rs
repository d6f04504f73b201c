//! The one way every function (and `kbha replay`, `kbha ops`) loads its policies: the
//! configured source, its fallback and the shadow.

use std::sync::Arc;

use kbha_aws::ObjectStore;

use crate::hosted::{LoadError, builtin};
use crate::{Decider, Fallback, Kind, Lifecycle, Policies, PolicySource, SwappablePolicy};

/// The configured policy and its fallback, with an S3 policy swapped while warm: call
/// [`SwappablePolicy::refresh`] on the second value before each decision. An unusable S3
/// object does not fail init: the fallback decides, each decision carries an alert, and
/// the next check may find a usable object. The one way every function (and `kbha replay`,
/// `kbha ops`) loads its policies.
pub async fn load_swappable<K: Kind, S: ObjectStore>(
    source: &PolicySource,
    fallback: Fallback,
    lifecycle: &Lifecycle,
    store: &S,
    now_ms: i64,
) -> Result<(Policies<K>, Option<Arc<SwappablePolicy<K>>>), LoadError> {
    let fallback = match fallback {
        Fallback::Builtin => Some(builtin::<K>()?),
        Fallback::Hold => None,
    };
    match source {
        PolicySource::Builtin => Ok((with_shadow(Policies::new(builtin::<K>()?, fallback), lifecycle, store).await, None)),
        PolicySource::S3 { bucket, key, version_id, sha256 } => {
            let swap = Arc::new(
                SwappablePolicy::<K>::open(bucket, key, version_id.as_deref(), sha256.as_deref(), lifecycle.clone(), store, now_ms).await,
            );
            let primary: Arc<dyn Decider<K>> = Arc::clone(&swap) as Arc<dyn Decider<K>>;
            Ok((with_shadow(Policies::new(primary, fallback), lifecycle, store).await, Some(swap)))
        }
    }
}

/// Adds the shadow policy (`KBHA_SHADOW_POLICY`); one that cannot be loaded or verified
/// is logged and left out, since a shadow never changes a decision.
async fn with_shadow<K: Kind, S: ObjectStore>(mut policies: Policies<K>, lifecycle: &Lifecycle, store: &S) -> Policies<K> {
    let Some(source) = &lifecycle.shadow else { return policies };
    let loaded: Result<Arc<dyn Decider<K>>, String> = match source {
        PolicySource::Builtin => builtin::<K>().map_err(|e| e.to_string()),
        PolicySource::S3 { bucket, key, version_id, sha256 } => {
            let swap = SwappablePolicy::<K>::open(bucket, key, version_id.as_deref(), sha256.as_deref(), lifecycle.clone(), store, 0).await;
            match swap.current() {
                Some(current) if swap.usable() => Ok(current),
                _ => Err("the object is unusable (see the log above)".to_owned()),
            }
        }
    };
    match loaded {
        Ok(shadow) => policies.shadow = Some(shadow),
        Err(e) => tracing::error!(shadow = %source, "shadow policy not loaded, running without it: {e}"),
    }
    policies
}
