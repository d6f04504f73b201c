//! `kbha replay failover|replication|alerting --event <file>`: runs a function's handler once,
//! locally, with the same `KBHA_*` configuration variables the Lambda reads, against
//! whatever endpoint `AWS_ENDPOINT_URL` names (the local emulator, or real AWS).

use std::path::PathBuf;

use anyhow::{Context, Result};
use kbha_aws::{AwsSettings, CloudWatchAlarms, Route53Dns, S3Store, SnsNotifier, load_sdk_config};
use kbha_failover::{FailoverConfig, FailoverFunction};
use kbha_hosting::lambda::now_ms;
use kbha_hosting::record::Invocation;
use kbha_hosting::{Alerting, Failover, Replication, load_policies};

/// Arguments of `kbha replay failover` and `kbha replay alerting`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The event JSON, as the Lambda would receive it (for failover: SNS, EventBridge,
    /// alarm action or schedule; for alerting: an SNS event, or anything).
    #[arg(long)]
    pub event: PathBuf,
    /// Decision time (RFC 3339, e.g. `2026-11-26T10:00:05Z`); default: now.
    #[arg(long)]
    pub now: Option<String>,
}

/// The event file of `args`, and the invocation: at the decision time of `args`, with no
/// request id (no Lambda ran it: the records say `"request_id": null`).
fn event_and_invocation(args: &ReplayArgs) -> Result<(serde_json::Value, Invocation)> {
    let text = std::fs::read_to_string(&args.event).with_context(|| format!("cannot read `{}`", args.event.display()))?;
    let event: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("`{}` is not JSON", args.event.display()))?;
    let now = match &args.now {
        Some(t) => kbha_core::time::parse_timestamp(t)?,
        None => now_ms(),
    };
    Ok((event, Invocation::at(now)))
}

/// Runs the failover handler on one event; decision records go to stdout.
pub async fn failover(args: &ReplayArgs) -> Result<()> {
    let (event, invocation) = event_and_invocation(args)?;
    let cfg = FailoverConfig::from_env()?;
    let conf = load_sdk_config(&AwsSettings::default()).await;
    let store = S3Store::from_conf(&conf);
    let policies = load_policies::<Failover, _>(&cfg.policy, cfg.fallback, &store).await?;
    let function = FailoverFunction::new(
        cfg,
        Route53Dns::from_conf(&conf),
        CloudWatchAlarms::from_conf(&conf),
        store,
        SnsNotifier::from_conf(&conf),
        policies,
    );
    let records = function.handle(&event, invocation).await.map_err(|e| {
        let class = if e.retryable() { "retryable" } else { "not retryable" };
        anyhow::anyhow!("{e} ({class})")
    })?;
    eprintln!("{} decision(s); actions: {:?}", records.len(), records.iter().map(|r| r.action).collect::<Vec<_>>());
    Ok(())
}

/// Runs the alert router on one event (an SNS event, or anything: it becomes a generic
/// alert); decision records go to stdout, deliveries to the configured topics.
pub async fn alerting(args: &ReplayArgs) -> Result<()> {
    let (event, invocation) = event_and_invocation(args)?;
    let cfg = kbha_alert_router::RouterConfig::from_env()?;
    let conf = load_sdk_config(&AwsSettings::default()).await;
    let store = S3Store::from_conf(&conf);
    let policies = load_policies::<Alerting, _>(&cfg.policy, cfg.fallback, &store).await?;
    let router = kbha_alert_router::AlertRouter::new(cfg, store, SnsNotifier::from_conf(&conf), policies);
    let records = router.handle(&event, invocation).await.map_err(|e| {
        let class = if e.retryable() { "retryable" } else { "not retryable" };
        anyhow::anyhow!("{e} ({class})")
    })?;
    eprintln!("{} alert(s); outcomes: {:?}", records.len(), records.iter().map(|r| r.outcome).collect::<Vec<_>>());
    Ok(())
}

/// Runs the replication verifier on one event (S3 ObjectCreated direct, in SNS or via
/// EventBridge, or a schedule for the dead-man check); decision records go to stdout.
pub async fn replication(args: &ReplayArgs) -> Result<()> {
    let (event, invocation) = event_and_invocation(args)?;
    let cfg = kbha_replication_verifier::VerifierConfig::from_env()?;
    let conf = load_sdk_config(&AwsSettings::default()).await;
    let store = S3Store::from_conf(&conf);
    let policies = load_policies::<Replication, _>(&cfg.policy, cfg.fallback, &store).await?;
    let copy_regions = cfg.copy_regions();
    let mut function = kbha_replication_verifier::VerifierFunction::new(cfg, store, SnsNotifier::from_conf(&conf), policies);
    for region in copy_regions {
        function = function.with_region_store(&region, S3Store::from_conf_in_region(&conf, &region));
    }
    let records = function.handle(&event, invocation).await.map_err(|e| {
        let class = if e.retryable() { "retryable" } else { "not retryable" };
        anyhow::anyhow!("{e} ({class})")
    })?;
    eprintln!("{} decision(s); verdicts: {:?}", records.len(), records.iter().map(|r| (r.action, r.verdict)).collect::<Vec<_>>());
    Ok(())
}
