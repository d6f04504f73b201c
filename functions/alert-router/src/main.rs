//! The alert router Lambda binary.
//!
//! Locally: `cargo lambda watch -p kbha-alert-router` with the `KBHA_*` variables set
//! (see docs/alerting.md), then `cargo lambda invoke kbha-alert-router --data-file
//! samples/events/cloudwatch-alarm-sns.json`. Or without a runtime:
//! `cargo kbha replay alerting --event samples/events/cloudwatch-alarm-sns.json`.

use std::sync::Arc;

use kbha_alert_router::{AlertRouter, RouterConfig};
use kbha_aws::{AwsSettings, S3Store, SnsNotifier, load_sdk_config};
use kbha_hosting::{Alerting, lambda, load_swappable};
use serde_json::Value;

/// The name in the init record and the metrics' `Function` dimension.
const FUNCTION: &str = "alert-router";

// Without its built-in policy the function would only fail at init, in AWS: refuse to build.
const _: () = assert!(kbha_hosting::BUILTINS_EMBEDDED, "no built-in policies to embed: run `cargo kbha policy build`, then build again");

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let mut init = lambda::InitTimer::start();
    // Configuration errors fail init, naming the variable.
    let cfg = RouterConfig::from_env()?;
    let lifecycle = kbha_hosting::Env::process().policy_lifecycle()?;
    init.mark("config");
    let conf = load_sdk_config(&AwsSettings::default()).await;
    let store = S3Store::from_conf(&conf);
    let notifier = SnsNotifier::from_conf(&conf);
    init.mark("sdk");
    // An S3 policy is re-checked while warm (KBHA_POLICY_CHECK_SECONDS) and swapped once verified.
    let (policies, swap) = load_swappable::<Alerting, _>(&cfg.policy, cfg.fallback, &lifecycle, &store, lambda::now_ms()).await?;
    init.mark("policy");
    let router = Arc::new(AlertRouter::new(cfg, store.clone(), notifier, policies));
    println!("{}", init.record(FUNCTION));
    lambda::serve(FUNCTION, swap, store, move |event: Value, inv| {
        let router = Arc::clone(&router);
        async move { router.handle(&event, inv).await }
    })
    .await
}
