//! `kbha replay failover|replication|alerting --event <file>`: runs a function's handler once,
//! locally, with the same `KBHA_*` configuration variables the Lambda reads, against
//! whatever endpoint `AWS_ENDPOINT_URL` names (the local emulator, or real AWS).

use std::path::PathBuf;

use anyhow::{Context, Result};
use kbha_lambda::lambda::{InitTimer, now_ms};
use kbha_lambda::record::Invocation;

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
    // Started exactly as the Lambda `main` starts it (policy pin, signature, shadow, fallback).
    let function = kbha_failover::start(&mut InitTimer::start()).await?.function;
    let records = function.handle(&event, invocation).await.map_err(|e| failed(&e, e.retryable()))?;
    eprintln!("{} decision(s); actions: {:?}", records.len(), records.iter().map(|r| r.action).collect::<Vec<_>>());
    Ok(())
}

/// Runs the alert router on one event (an SNS event, or anything: it becomes a generic
/// alert); decision records go to stdout, deliveries to the configured topics.
pub async fn alerting(args: &ReplayArgs) -> Result<()> {
    let (event, invocation) = event_and_invocation(args)?;
    let router = kbha_alert_router::start(&mut InitTimer::start()).await?.function;
    let records = router.handle(&event, invocation).await.map_err(|e| failed(&e, e.retryable()))?;
    eprintln!("{} alert(s); outcomes: {:?}", records.len(), records.iter().map(|r| r.action).collect::<Vec<_>>());
    Ok(())
}

/// Runs the replication verifier on one event (S3 ObjectCreated direct, in SNS or via
/// EventBridge, or a schedule for the dead-man check); decision records go to stdout.
pub async fn replication(args: &ReplayArgs) -> Result<()> {
    let (event, invocation) = event_and_invocation(args)?;
    let function = kbha_replication_verifier::start(&mut InitTimer::start()).await?.function;
    let records = function.handle(&event, invocation).await.map_err(|e| failed(&e, e.retryable()))?;
    eprintln!("{} decision(s); verdicts: {:?}", records.len(), records.iter().map(|r| (r.action, r.verdict)).collect::<Vec<_>>());
    Ok(())
}

/// The function's error, and whether Lambda would retry it.
fn failed(e: &dyn std::fmt::Display, retryable: bool) -> anyhow::Error {
    let class = if retryable { "retryable" } else { "not retryable" };
    anyhow::anyhow!("{e} ({class})")
}
