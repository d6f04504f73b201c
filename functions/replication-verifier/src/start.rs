//! The replication verifier as its Lambda `main` starts it, shared with `kbha replay` so a
//! local replay is a faithful run: the same configuration, SDK clients (one S3 client per
//! copy region) and policy lifecycle (pin, signature, shadow, WASI, fallback).

use std::sync::Arc;

use kbha_aws::{AwsSettings, S3Store, SnsNotifier, load_sdk_config};
use kbha_lambda::lambda::{self, InitError, InitTimer, Started};
use kbha_lambda::{Env, settings};
use kbha_policy_lifecycle::{Replication, load_swappable};

use crate::{VerifierConfig, VerifierFunction};

/// The verifier on the AWS SDK's clients.
pub type LambdaVerifier = VerifierFunction<S3Store, SnsNotifier>;

/// Starts the function from the process environment, timing each step in `init`.
pub async fn start(init: &mut InitTimer) -> Result<Started<LambdaVerifier, Replication, S3Store>, InitError> {
    // Configuration errors fail init, naming the variable.
    let env = Env::process();
    let cfg = VerifierConfig::from_env()?;
    let lifecycle = env.policy_lifecycle()?;
    settings::configure_engine(env.policy_limits()?)?;
    init.mark("config");
    let conf = load_sdk_config(&AwsSettings::default()).await;
    let store = S3Store::from_conf(&conf);
    let notifier = SnsNotifier::from_conf(&conf);
    // Cross-region copies are read through a client of their own region (S3 redirects).
    let region_stores: Vec<_> = cfg.copy_regions().into_iter().map(|r| (S3Store::from_conf_in_region(&conf, &r), r)).collect();
    init.mark("sdk");
    // An S3 policy is re-checked while warm (KBHA_POLICY_CHECK_SECONDS) and swapped once verified.
    let (policies, swap) = load_swappable::<Replication, _>(&cfg.policy, cfg.fallback, &lifecycle, &store, lambda::now_ms()).await?;
    init.mark("policy");
    let mut function = VerifierFunction::new(cfg, store.clone(), notifier, policies);
    for (region_store, region) in region_stores {
        function = function.with_region_store(&region, region_store);
    }
    Ok(Started { function: Arc::new(function), swap, store })
}
