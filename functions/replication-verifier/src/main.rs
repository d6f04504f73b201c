//! The replication verifier Lambda binary.
//!
//! Locally: `cargo lambda watch -p kbha-replication-verifier` with the `KBHA_*` variables
//! set (see the README), then `cargo lambda invoke kbha-replication-verifier --data-file
//! samples/events/s3-object-created.json`. Or without a runtime:
//! `cargo kbha replay replication --event samples/events/s3-object-created.json`.

use std::sync::Arc;

use kbha_aws::{AwsSettings, S3Store, SnsNotifier, load_sdk_config};
use kbha_hosting::{Replication, load_swappable};
use kbha_replication_verifier::{VerifierConfig, VerifierFunction};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).without_time().init();
    // Configuration errors fail init, naming the variable.
    let cfg = VerifierConfig::from_env()?;
    let conf = load_sdk_config(&AwsSettings::default()).await;
    let store = S3Store::from_conf(&conf);
    // An S3 policy is re-checked while warm (KBHA_POLICY_CHECK_SECONDS) and swapped once verified.
    let lifecycle = kbha_hosting::Env::process().policy_lifecycle()?;
    let (policies, swap) = load_swappable::<Replication, _>(&cfg.policy, cfg.fallback, &lifecycle, &store, now_ms()).await?;
    let policy_store = store.clone();
    let copy_regions = cfg.copy_regions();
    let mut function = VerifierFunction::new(cfg, store, SnsNotifier::from_conf(&conf), policies);
    for region in copy_regions {
        function = function.with_region_store(&region, S3Store::from_conf_in_region(&conf, &region));
    }
    let function = Arc::new(function);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = Arc::clone(&function);
        let (swap, policy_store) = (swap.clone(), policy_store.clone());
        async move {
            if let Some(swap) = &swap {
                swap.refresh(&policy_store, now_ms()).await;
            }
            function.handle(&event.payload, now_ms()).await
        }
    }))
    .await
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
