//! The failover function as its Lambda `main` starts it, shared with `kbha replay` so a local
//! replay is a faithful run: the same configuration, SDK clients and policy lifecycle (pin,
//! signature, shadow, WASI, fallback).

use std::sync::Arc;

use kbha_aws::sdk::aws_config::SdkConfig;
use kbha_aws::{AwsSettings, CloudWatchAlarms, Route53Dns, S3Store, SnsNotifier, load_sdk_config};
use kbha_lambda::lambda::{self, InitError, InitTimer, Started};
use kbha_lambda::{Env, settings};
use kbha_policy_lifecycle::{Failover, load_swappable};

use crate::{FailoverConfig, FailoverFunction};

/// The failover function on the AWS SDK's clients.
pub type LambdaFailover = FailoverFunction<Route53Dns, CloudWatchAlarms, S3Store, SnsNotifier>;

/// Starts the function from the process environment, timing each step in `init`.
pub async fn start(init: &mut InitTimer) -> Result<Started<LambdaFailover, Failover, S3Store>, InitError> {
    let get = |k: &str| std::env::var(k).ok();
    // Configuration errors fail init, naming the variable; checked before any client is made.
    FailoverConfig::from_lookup(get)?;
    init.mark("config");
    let conf = load_sdk_config(&AwsSettings::default()).await;
    start_with(get, &conf, init).await
}

/// Starts the function from the variables `get` finds (`kbha ops --config` reads them from a
/// file) with the SDK clients `conf` makes.
pub async fn start_with(
    get: impl Fn(&str) -> Option<String>,
    conf: &SdkConfig,
    init: &mut InitTimer,
) -> Result<Started<LambdaFailover, Failover, S3Store>, InitError> {
    let env = Env::new(&get);
    let cfg = FailoverConfig::from_lookup(&get)?;
    let lifecycle = env.policy_lifecycle()?;
    settings::configure_engine(env.policy_limits()?)?;
    let store = S3Store::from_conf(conf);
    let (dns, alarms, notifier) = (Route53Dns::from_conf(conf), CloudWatchAlarms::from_conf(conf), SnsNotifier::from_conf(conf));
    init.mark("sdk");
    // An S3 policy is re-checked while warm (KBHA_POLICY_CHECK_SECONDS) and swapped once verified.
    let (policies, swap) = load_swappable::<Failover, _>(&cfg.policy, cfg.fallback, &lifecycle, &store, lambda::now_ms()).await?;
    init.mark("policy");
    let function = Arc::new(FailoverFunction::new(cfg, dns, alarms, store.clone(), notifier, policies));
    Ok(Started { function, swap, store })
}
