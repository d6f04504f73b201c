//! The replication verifier Lambda binary.
//!
//! Locally: `cargo lambda watch -p kbha-replication-verifier` with the `KBHA_*` variables
//! set (see docs/replication.md), then `cargo lambda invoke kbha-replication-verifier --data-file
//! samples/events/s3-object-created.json`. Or without a runtime:
//! `cargo kbha replay replication --event samples/events/s3-object-created.json`.

use std::sync::Arc;

use kbha_aws::{AwsSettings, S3Store, SnsNotifier, load_sdk_config};
use kbha_hosting::{Replication, lambda, load_swappable};
use kbha_replication_verifier::{VerifierConfig, VerifierFunction};
use serde_json::Value;

/// The name in the init record and the metrics' `Function` dimension.
const FUNCTION: &str = "replication-verifier";

// Without its built-in policy the function would only fail at init, in AWS: refuse to build.
const _: () = assert!(kbha_hosting::BUILTINS_EMBEDDED, "no built-in policies to embed: run `cargo kbha policy build`, then build again");

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let mut init = lambda::InitTimer::start();
    // Configuration errors fail init, naming the variable.
    let cfg = VerifierConfig::from_env()?;
    let lifecycle = kbha_hosting::Env::process().policy_lifecycle()?;
    init.mark("config");
    let conf = load_sdk_config(&AwsSettings::default()).await;
    let store = S3Store::from_conf(&conf);
    let notifier = SnsNotifier::from_conf(&conf);
    // Cross-region copies are read through a client of their own region (S3 redirects).
    let region_stores: Vec<_> = cfg
        .copy_regions()
        .into_iter()
        .map(|r| {
            let s = S3Store::from_conf_in_region(&conf, &r);
            (r, s)
        })
        .collect();
    init.mark("sdk");
    // An S3 policy is re-checked while warm (KBHA_POLICY_CHECK_SECONDS) and swapped once verified.
    let (policies, swap) = load_swappable::<Replication, _>(&cfg.policy, cfg.fallback, &lifecycle, &store, lambda::now_ms()).await?;
    init.mark("policy");
    let mut function = VerifierFunction::new(cfg, store.clone(), notifier, policies);
    for (region, region_store) in region_stores {
        function = function.with_region_store(&region, region_store);
    }
    let function = Arc::new(function);
    println!("{}", init.record(FUNCTION));
    lambda::serve(FUNCTION, swap, store, move |event: Value, inv| {
        let function = Arc::clone(&function);
        async move { function.handle(&event, inv).await }
    })
    .await
}
