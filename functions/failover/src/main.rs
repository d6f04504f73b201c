//! The failover Lambda binary.
//!
//! Locally: `cargo lambda watch -p kbha-failover` with the `KBHA_*` variables set (see
//! docs/failover.md), then `cargo lambda invoke kbha-failover --data-file
//! samples/events/cloudwatch-alarm-sns.json`. Or without a runtime:
//! `cargo kbha replay failover --event samples/events/cloudwatch-alarm-sns.json`.

use std::sync::Arc;

use kbha_aws::{AwsSettings, CloudWatchAlarms, Route53Dns, S3Store, SnsNotifier, load_sdk_config};
use kbha_failover::{FailoverConfig, FailoverFunction};
use kbha_hosting::{Failover, lambda, load_swappable};
use serde_json::Value;

/// The name in the init record and the metrics' `Function` dimension.
const FUNCTION: &str = "failover";

// Without its built-in policy the function would only fail at init, in AWS: refuse to build.
const _: () = assert!(kbha_hosting::BUILTINS_EMBEDDED, "no built-in policies to embed: run `cargo kbha policy build`, then build again");

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let mut init = lambda::InitTimer::start();
    // Configuration errors fail init, naming the variable.
    let cfg = FailoverConfig::from_env()?;
    let lifecycle = kbha_hosting::Env::process().policy_lifecycle()?;
    init.mark("config");
    let conf = load_sdk_config(&AwsSettings::default()).await;
    let store = S3Store::from_conf(&conf);
    let (dns, alarms, notifier) = (Route53Dns::from_conf(&conf), CloudWatchAlarms::from_conf(&conf), SnsNotifier::from_conf(&conf));
    init.mark("sdk");
    // An S3 policy is re-checked while warm (KBHA_POLICY_CHECK_SECONDS) and swapped once verified.
    let (policies, swap) = load_swappable::<Failover, _>(&cfg.policy, cfg.fallback, &lifecycle, &store, lambda::now_ms()).await?;
    init.mark("policy");
    let function = Arc::new(FailoverFunction::new(cfg, dns, alarms, store.clone(), notifier, policies));
    println!("{}", init.record(FUNCTION));
    lambda::serve(FUNCTION, swap, store, move |event: Value, inv| {
        let function = Arc::clone(&function);
        async move { function.handle(&event, inv).await }
    })
    .await
}
