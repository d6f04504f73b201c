//! The alert router as its Lambda `main` starts it, shared with `kbha replay` so a local
//! replay is a faithful run: the same configuration, SDK clients and policy lifecycle (pin,
//! signature, shadow, WASI, fallback).

use std::sync::Arc;

use kbha_aws::{AwsSettings, S3Store, SnsNotifier, load_sdk_config};
use kbha_lambda::lambda::{self, InitError, InitTimer, Started};
use kbha_lambda::{Env, settings};
use kbha_policy_lifecycle::{Alerting, load_swappable};

use crate::{AlertRouter, RouterConfig};

/// The router on the AWS SDK's clients.
pub type LambdaRouter = AlertRouter<S3Store, SnsNotifier>;

/// Starts the function from the process environment, timing each step in `init`.
pub async fn start(init: &mut InitTimer) -> Result<Started<LambdaRouter, Alerting, S3Store>, InitError> {
    // Configuration errors fail init, naming the variable.
    let env = Env::process();
    let cfg = RouterConfig::from_env()?;
    let lifecycle = env.policy_lifecycle()?;
    settings::configure_engine(env.policy_limits()?)?;
    init.mark("config");
    let conf = load_sdk_config(&AwsSettings::default()).await;
    let store = S3Store::from_conf(&conf);
    let notifier = SnsNotifier::from_conf(&conf);
    init.mark("sdk");
    // An S3 policy is re-checked while warm (KBHA_POLICY_CHECK_SECONDS) and swapped once verified.
    let (policies, swap) = load_swappable::<Alerting, _>(&cfg.policy, cfg.fallback, &lifecycle, &store, lambda::now_ms()).await?;
    init.mark("policy");
    Ok(Started { function: Arc::new(AlertRouter::new(cfg, store.clone(), notifier, policies)), swap, store })
}
