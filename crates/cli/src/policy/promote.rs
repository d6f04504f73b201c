//! `kbha policy promote` and `kbha policy rollback`: make a published policy the live one of
//! a deployed function, and go back.
//!
//! Both read the function's configuration (Lambda `GetFunctionConfiguration`), change only
//! kbha's policy variables in its environment and write the whole environment back
//! (`UpdateFunctionConfiguration`, conditional on the revision read, so a change made
//! meanwhile is never overwritten). Promote keeps what it replaced in
//! `KBHA_POLICY_PREVIOUS` (and `KBHA_POLICY_PREVIOUS_PUBLIC_KEY` when the key changes);
//! rollback swaps the two, so a second rollback undoes the first. Each prints one decision
//! record (`{"record":"kbha.decision","function":"policy-promote",...}`) on stdout; the
//! human summary goes to stderr.
//!
//! A function whose triggers invoke an alias (the SAM stack's `live`, moved by
//! `AutoPublishAlias`) runs a published version, not `$LATEST`: with `--alias`, the change
//! is published as a new version and the alias moved to it; without, such a function is
//! refused, since changing `$LATEST` alone would change nothing its triggers run.
//!
//! The computations (validation, the new environment) are plain functions; the Lambda
//! calls sit behind [`LambdaApi`].

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use kbha_aws::{AwsSettings, Identity, StsIdentity, load_sdk_config};
use kbha_policy_lifecycle::PolicySource;
use serde::Serialize;

/// The policy a function runs.
pub const POLICY: &str = "KBHA_POLICY";
/// The key its S3 policy must be signed with.
pub const PUBLIC_KEY: &str = "KBHA_POLICY_PUBLIC_KEY";
/// What `KBHA_POLICY` was before the last promote (or rollback).
pub const PREVIOUS: &str = "KBHA_POLICY_PREVIOUS";
/// What `KBHA_POLICY_PUBLIC_KEY` was before the last promote that changed it (empty: none).
pub const PREVIOUS_PUBLIC_KEY: &str = "KBHA_POLICY_PREVIOUS_PUBLIC_KEY";

/// A function's environment variables.
pub type EnvMap = BTreeMap<String, String>;

/// The function and how to reach it (shared by promote and rollback).
#[derive(Debug, Clone, clap::Args)]
pub struct FunctionArgs {
    /// The Lambda function: its name or ARN, unqualified (the configuration of `$LATEST`
    /// is changed, then published to `--alias`).
    #[arg(long)]
    pub function: String,
    /// The alias the function's triggers invoke (`live` in the SAM stack): the change is
    /// published as a new version and the alias moved to it. Required when the function
    /// has aliases.
    #[arg(long)]
    pub alias: Option<String>,
    /// Why (carried in the printed record).
    #[arg(long)]
    pub reason: Option<String>,
    /// Print what would change and the record (action `would_promote` /
    /// `would_roll_back`); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Endpoint for the Lambda and STS calls (an emulator); default: `AWS_ENDPOINT_URL`,
    /// else AWS.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Region; default: the environment's (`AWS_REGION`, profile).
    #[arg(long)]
    pub region: Option<String>,
}

/// `kbha policy promote` options.
#[derive(Debug, Clone, clap::Args)]
pub struct PromoteArgs {
    /// The function, why, dry run, endpoint and region.
    #[command(flatten)]
    pub target: FunctionArgs,
    /// The policy to make live: the pinned `KBHA_POLICY=` value `kbha policy publish`
    /// printed (`s3://bucket/key?versionId=<id>#sha256:<hex>`; the whole line is accepted
    /// too), or `builtin` for the embedded policy.
    #[arg(long)]
    pub policy: String,
    /// Set `KBHA_POLICY_PUBLIC_KEY` to this ed25519 public key (the `KBHA_POLICY_PUBLIC_KEY=`
    /// value publish printed: 64 hex digits, or base64); default: keep the function's key.
    #[arg(long)]
    pub public_key: Option<String>,
}

/// `kbha policy rollback` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// The function, why, dry run, endpoint and region.
    #[command(flatten)]
    pub target: FunctionArgs,
}

// ------------------------------------------------------------------ pure parts

/// kbha's policy variables as a record shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVars {
    /// `KBHA_POLICY` (`builtin` when unset).
    pub policy: String,
    /// `KBHA_POLICY_PUBLIC_KEY` (`None` when unset).
    pub public_key: Option<String>,
}

/// A value as the functions read it: trimmed, blank counts as unset.
fn value<'a>(env: &'a EnvMap, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// The policy variables of an environment.
pub fn policy_vars(env: &EnvMap) -> PolicyVars {
    PolicyVars { policy: value(env, POLICY).unwrap_or("builtin").to_owned(), public_key: value(env, PUBLIC_KEY).map(str::to_owned) }
}

/// Parses the `--policy` of a promote: a pinned S3 source (`#sha256:` digest and/or
/// `?versionId=`) or `builtin`. A pasted `KBHA_POLICY=` prefix is dropped.
pub fn parse_target(raw: &str) -> Result<PolicySource> {
    let raw = raw.trim();
    let raw = raw.strip_prefix("KBHA_POLICY=").unwrap_or(raw);
    let source: PolicySource = raw
        .parse()
        .map_err(|e| anyhow::anyhow!("--policy {e}; pass the `KBHA_POLICY=` line `kbha policy publish` printed (or `builtin`)"))?;
    if let PolicySource::S3 { version_id: None, sha256: None, .. } = source {
        bail!(
            "--policy `{raw}` is not pinned: a function would run whatever that key holds later; pass the \
             `KBHA_POLICY=` line `kbha policy publish` printed (`...?versionId=<id>#sha256:<hex>`)"
        );
    }
    Ok(source)
}

/// Checks `--public-key` as the functions will read it.
pub fn parse_public_key(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let raw = raw.strip_prefix("KBHA_POLICY_PUBLIC_KEY=").unwrap_or(raw);
    kbha_policy_lifecycle::verify::parse_public_key(raw)
        .map_err(|e| anyhow::anyhow!("--public-key {e}; pass the `KBHA_POLICY_PUBLIC_KEY=` value `kbha policy publish` printed"))?;
    Ok(raw.to_owned())
}

/// Refuses a qualified function (`name:alias`, an ARN with a version): only `$LATEST`'s
/// configuration can be updated.
pub fn check_function(function: &str) -> Result<()> {
    let parts = function.split(':').count();
    let qualified = if function.starts_with("arn:") { parts > 7 } else { parts == 2 || parts == 4 };
    if function.trim().is_empty() || qualified {
        bail!(
            "--function `{function}`: pass the function's name or unqualified ARN (the configuration of \
             `$LATEST` is what changes; versions are immutable and an alias follows a version)"
        );
    }
    Ok(())
}

/// Two `KBHA_POLICY` values name the same policy (same parsed source, e.g. the digest in
/// another case).
fn same_policy(a: &str, b: &str) -> bool {
    match (a.parse::<PolicySource>(), b.parse::<PolicySource>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Two public keys are the same key (hex or base64 of the same bytes).
fn same_key(a: Option<&str>, b: Option<&str>) -> bool {
    let parse = |k: &str| kbha_policy_lifecycle::verify::parse_public_key(k).ok().map(|k| k.to_bytes());
    match (a, b) {
        (Some(a), Some(b)) => a == b || parse(a).is_some_and(|x| Some(x) == parse(b)),
        (None, None) => true,
        _ => false,
    }
}

/// A computed change of a function's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The policy variables before.
    pub from: PolicyVars,
    /// The policy variables after.
    pub to: PolicyVars,
    /// The whole environment after (every other variable as it was).
    pub env: EnvMap,
}

/// The environment that makes `policy` (and `public_key`, when given) live. Unchanged when
/// the function already runs that policy with that key.
pub fn promoted(env: &EnvMap, policy: &PolicySource, public_key: Option<&str>) -> Plan {
    let from = policy_vars(env);
    let new_policy = policy.to_string();
    let key_changes = public_key.is_some_and(|k| !same_key(from.public_key.as_deref(), Some(k)));
    if same_policy(&from.policy, &new_policy) && !key_changes {
        return Plan { to: from.clone(), from, env: env.clone() };
    }
    let mut next = env.clone();
    next.insert(POLICY.into(), new_policy.clone());
    next.insert(PREVIOUS.into(), from.policy.clone());
    let to_key = match public_key {
        Some(k) if key_changes => {
            next.insert(PUBLIC_KEY.into(), k.to_owned());
            next.insert(PREVIOUS_PUBLIC_KEY.into(), from.public_key.clone().unwrap_or_default());
            Some(k.to_owned())
        }
        _ => {
            // The previous policy ran with the key that stays: a recorded older key no
            // longer belongs to it.
            next.remove(PREVIOUS_PUBLIC_KEY);
            from.public_key.clone()
        }
    };
    Plan { from, to: PolicyVars { policy: new_policy, public_key: to_key }, env: next }
}

/// The environment that restores `KBHA_POLICY_PREVIOUS` (and the previous key, when one
/// was recorded), keeping what it replaces as the new previous values.
pub fn rolled_back(env: &EnvMap, function: &str) -> Result<Plan> {
    let Some(previous) = value(env, PREVIOUS) else {
        bail!(
            "nothing to roll back to: `{function}` has no {PREVIOUS}, so its policy was never promoted with \
             kbha policy promote; promote the policy you want with `kbha policy promote --function {function} --policy ...`"
        );
    };
    if let Err(e) = previous.parse::<PolicySource>() {
        bail!("{PREVIOUS} of `{function}` {e}; set {POLICY} with `kbha policy promote` instead");
    }
    let from = policy_vars(env);
    let mut next = env.clone();
    next.insert(POLICY.into(), previous.to_owned());
    next.insert(PREVIOUS.into(), from.policy.clone());
    let to_key = match env.get(PREVIOUS_PUBLIC_KEY).map(|k| k.trim()) {
        None => from.public_key.clone(),
        Some(restored) => {
            if restored.is_empty() {
                next.remove(PUBLIC_KEY);
            } else {
                next.insert(PUBLIC_KEY.into(), restored.to_owned());
            }
            next.insert(PREVIOUS_PUBLIC_KEY.into(), from.public_key.clone().unwrap_or_default());
            Some(restored.to_owned()).filter(|k| !k.is_empty())
        }
    };
    Ok(Plan { from, to: PolicyVars { policy: previous.to_owned(), public_key: to_key }, env: next })
}

/// The variables whose values differ, as `NAME: old -> new` lines (`unset` for absent).
pub fn describe_changes(before: &EnvMap, after: &EnvMap) -> Vec<String> {
    let show = |v: Option<&String>| v.map_or_else(|| "unset".to_owned(), |v| format!("`{v}`"));
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .map(|n| format!("{n}: {} -> {}", show(before.get(n)), show(after.get(n))))
        .collect()
}

/// The decision record printed on stdout.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Always `kbha.decision`.
    pub record: &'static str,
    /// Always `policy-promote` (promote and rollback).
    pub function: &'static str,
    /// A fresh id for this record (UUID v4).
    pub event_id: String,
    /// When, ISO 8601.
    pub now: String,
    /// The function's ARN.
    pub subject: String,
    /// `promoted`, `rolled_back`, `no_change`, `would_promote`, `would_roll_back`.
    pub action: &'static str,
    /// The caller's ARN (STS), or `unknown`.
    pub by: String,
    /// `--reason`.
    pub reason: Option<String>,
    /// The policy variables before.
    pub from: PolicyVars,
    /// The policy variables after (or that would be).
    pub to: PolicyVars,
    /// Lambda's `RevisionId` of the configuration after the change (before it, when
    /// nothing changed); `null` when Lambda gives none.
    pub revision_id: Option<String>,
    /// With `--alias`: the alias, the version it pointed at and the one it points at now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<AliasMove>,
}

/// A random UUID v4 (the OS generator, rand_core's `OsRng`, as `kbha policy keygen` uses).
fn uuid_v4() -> Result<String> {
    let mut b = [0u8; 16];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut b)
        .map_err(|e| anyhow::anyhow!("the operating system gave no random bytes for the record id: {e}"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

// ------------------------------------------------------------------ Lambda

/// What kbha reads of a function's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionState {
    /// `FunctionArn`.
    pub arn: String,
    /// `Environment.Variables` (empty when it has none).
    pub env: EnvMap,
    /// `RevisionId`.
    pub revision_id: Option<String>,
    /// `State` (`Pending`, `Active`, `Inactive`, `Failed`).
    pub state: Option<String>,
    /// `LastUpdateStatus` (`InProgress`, `Successful`, `Failed`).
    pub last_update_status: Option<String>,
    /// `LastUpdateStatusReason`.
    pub last_update_reason: Option<String>,
}

impl FunctionState {
    /// Lambda is still applying an update (or creating the function).
    fn busy(&self) -> bool {
        self.last_update_status.as_deref() == Some("InProgress") || self.state.as_deref() == Some("Pending")
    }
}

/// Where an alias points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasState {
    /// `FunctionVersion`.
    pub version: String,
    /// The alias's `RevisionId`, so moving it is conditional on what was read.
    pub revision_id: Option<String>,
}

/// The Lambda calls kbha makes.
pub trait LambdaApi {
    /// `GetFunctionConfiguration` (of `$LATEST`, or of `qualifier`: an alias or version).
    async fn read_qualified(&self, function: &str, qualifier: Option<&str>) -> Result<FunctionState>;
    /// `GetFunctionConfiguration` of `$LATEST`.
    async fn read(&self, function: &str) -> Result<FunctionState> {
        self.read_qualified(function, None).await
    }
    /// `ListAliases`: the names of the function's aliases.
    async fn aliases(&self, function: &str) -> Result<Vec<String>>;
    /// `GetAlias`.
    async fn alias(&self, function: &str, alias: &str) -> Result<AliasState>;
    /// `PublishVersion` of `$LATEST`, only if it is still at `revision_id`: the version.
    async fn publish(&self, function: &str, revision_id: Option<&str>) -> Result<String>;
    /// `UpdateAlias` to `version`, only if the alias is still at `revision_id`.
    async fn point_alias(&self, function: &str, alias: &str, version: &str, revision_id: Option<&str>) -> Result<()>;
    /// `UpdateFunctionConfiguration` with the whole environment, only if the configuration
    /// is still at `revision_id` (when given).
    async fn write(&self, function: &str, env: &EnvMap, revision_id: Option<&str>) -> Result<FunctionState>;
}

/// Reads an `EnvironmentResponse`, refusing one Lambda could not decrypt: writing back a
/// map kbha cannot see would delete every variable.
fn env_of(function: &str, env: Option<&aws_sdk_lambda::types::EnvironmentResponse>) -> Result<EnvMap> {
    let Some(env) = env else { return Ok(EnvMap::new()) };
    if let Some(e) = env.error() {
        bail!(
            "lambda cannot show the environment of `{function}` ({}: {}); kbha will not rewrite variables it cannot \
             read: fix the function's KMS access first",
            e.error_code().unwrap_or("error"),
            e.message().unwrap_or("")
        );
    }
    Ok(env.variables().map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default())
}

/// An SDK error in one line: AWS's code and message, or what failed on the way.
fn sdk_message<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(s) = e.as_service_error() {
        return format!("{}: {}", s.code().unwrap_or("error"), s.message().unwrap_or("no message"));
    }
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// The [`FunctionState`] in a GetFunctionConfiguration or UpdateFunctionConfiguration
/// output: two SDK types with the same accessors.
macro_rules! state_of {
    ($out:expr, $function:expr) => {{
        let out = $out;
        Ok(FunctionState {
            arn: out.function_arn().unwrap_or($function).to_owned(),
            env: env_of($function, out.environment())?,
            revision_id: out.revision_id().map(str::to_owned),
            state: out.state().map(|s| s.as_str().to_owned()),
            last_update_status: out.last_update_status().map(|s| s.as_str().to_owned()),
            last_update_reason: out.last_update_status_reason().map(str::to_owned),
        })
    }};
}

impl LambdaApi for aws_sdk_lambda::Client {
    async fn read_qualified(&self, function: &str, qualifier: Option<&str>) -> Result<FunctionState> {
        let out =
            self.get_function_configuration().function_name(function).set_qualifier(qualifier.map(str::to_owned)).send().await.map_err(
                |e| {
                    let hint =
                        if e.code() == Some("ResourceNotFoundException") { "; check the name and the region (--region)" } else { "" };
                    let q = qualifier.map(|q| format!(":{q}")).unwrap_or_default();
                    anyhow::anyhow!(
                        "cannot read the configuration of `{function}{q}` (lambda GetFunctionConfiguration): {}{hint}",
                        sdk_message(&e)
                    )
                },
            )?;
        state_of!(out, function)
    }

    async fn aliases(&self, function: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut pages = self.list_aliases().function_name(function).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| anyhow::anyhow!("cannot list the aliases of `{function}` (lambda ListAliases): {}", sdk_message(&e)))?;
            names.extend(page.aliases().iter().filter_map(|a| a.name().map(str::to_owned)));
        }
        Ok(names)
    }

    async fn alias(&self, function: &str, alias: &str) -> Result<AliasState> {
        let out = self
            .get_alias()
            .function_name(function)
            .name(alias)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the alias `{alias}` of `{function}` (lambda GetAlias): {}", sdk_message(&e)))?;
        let version = out.function_version().ok_or_else(|| anyhow::anyhow!("lambda GetAlias gave no version for `{function}:{alias}`"))?;
        Ok(AliasState { version: version.to_owned(), revision_id: out.revision_id().map(str::to_owned) })
    }

    async fn publish(&self, function: &str, revision_id: Option<&str>) -> Result<String> {
        let out = self
            .publish_version()
            .function_name(function)
            .description("kbha policy promote/rollback")
            .set_revision_id(revision_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot publish a version of `{function}` (lambda PublishVersion): {}; its $LATEST has the new \
                     environment: run the command again to publish it",
                    sdk_message(&e)
                )
            })?;
        out.version().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("lambda PublishVersion gave no version for `{function}`"))
    }

    async fn point_alias(&self, function: &str, alias: &str, version: &str, revision_id: Option<&str>) -> Result<()> {
        self.update_alias()
            .function_name(function)
            .name(alias)
            .function_version(version)
            .set_revision_id(revision_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot point the alias `{alias}` of `{function}` at version {version} (lambda UpdateAlias): {}; the \
                     version is published: run the command again",
                    sdk_message(&e)
                )
            })?;
        Ok(())
    }

    async fn write(&self, function: &str, env: &EnvMap, revision_id: Option<&str>) -> Result<FunctionState> {
        let vars = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let environment = aws_sdk_lambda::types::Environment::builder().set_variables(Some(vars)).build();
        let out = self
            .update_function_configuration()
            .function_name(function)
            .environment(environment)
            .set_revision_id(revision_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| {
                let hint = match e.code() {
                    Some("PreconditionFailedException") => "; the configuration changed since kbha read it: run the command again",
                    Some("ResourceConflictException") => {
                        "; another update of the function is under way: run the command again when it is done"
                    }
                    _ => "",
                };
                anyhow::anyhow!(
                    "cannot update the configuration of `{function}` (lambda UpdateFunctionConfiguration): {}{hint}",
                    sdk_message(&e)
                )
            })?;
        state_of!(out, function)
    }
}

/// How long to wait for Lambda to apply an update, and how often to ask.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// Give up after this long.
    pub timeout: Duration,
    /// Between two reads.
    pub poll: Duration,
}

impl Default for Wait {
    fn default() -> Self {
        Wait { timeout: Duration::from_secs(60), poll: Duration::from_secs(1) }
    }
}

/// Reads the function again until Lambda is done updating it. With `ours`, the update is
/// the one kbha just made and `LastUpdateStatus: Failed` is an error.
async fn settle(api: &impl LambdaApi, function: &str, mut state: FunctionState, wait: Wait, ours: bool) -> Result<FunctionState> {
    let deadline = tokio::time::Instant::now() + wait.timeout;
    while state.busy() {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "lambda is still updating `{function}` after {} s (LastUpdateStatus {}); check it with \
                 `aws lambda get-function-configuration --function-name {function}`{}",
                wait.timeout.as_secs(),
                state.last_update_status.as_deref().unwrap_or("-"),
                if ours { " (the new environment was accepted)" } else { " and run the command again" }
            );
        }
        tokio::time::sleep(wait.poll).await;
        state = api.read(function).await?;
    }
    if ours && state.last_update_status.as_deref() == Some("Failed") {
        bail!(
            "lambda reports the update of `{function}` Failed: {}; check `aws lambda get-function-configuration \
             --function-name {function}` and run the command again",
            state.last_update_reason.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(state)
}

/// Promote or rollback.
#[derive(Debug, Clone)]
pub enum Op {
    /// Make this policy (and key) live.
    Promote {
        /// The validated `--policy`.
        policy: PolicySource,
        /// The validated `--public-key`.
        public_key: Option<String>,
    },
    /// Restore the previous policy.
    Rollback,
}

/// What a run did (the record without `by`, `now`, `event_id`).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The record's `action`.
    pub action: &'static str,
    /// The function's ARN.
    pub arn: String,
    /// The computed change.
    pub plan: Plan,
    /// The environment before.
    pub before: EnvMap,
    /// The revision after (or as read, when nothing was written).
    pub revision_id: Option<String>,
    /// The alias moved (or that would be), with `--alias`.
    pub alias: Option<AliasMove>,
}

/// An alias moved to the version that carries the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AliasMove {
    /// The alias.
    pub name: String,
    /// The version it pointed at.
    pub from_version: String,
    /// The version it points at now (`null` in a dry run or when nothing changed).
    pub to_version: Option<String>,
}

/// Reads, computes and (unless `dry_run` or nothing changes) writes and waits; with an
/// alias, then publishes a version and moves the alias to it.
pub async fn execute(api: &impl LambdaApi, function: &str, op: &Op, dry_run: bool, wait: Wait, alias: Option<&str>) -> Result<Outcome> {
    let first = api.read(function).await?;
    // An update under way would refuse ours (and its environment may be replaced).
    let current = settle(api, function, first, wait, false).await?;
    let aliases = api.aliases(function).await?;
    let alias = match alias {
        None if !aliases.is_empty() => bail!(
            "`{function}` has aliases ({}): its triggers invoke an alias, which runs a published version, so \
             changing $LATEST alone would change nothing they run; pass --alias <name> (the SAM stack's is `live`)",
            aliases.join(", ")
        ),
        None => None,
        Some(a) if !aliases.iter().any(|n| n == a) => {
            let has = if aliases.is_empty() { "none".to_owned() } else { aliases.join(", ") };
            bail!("`{function}` has no alias `{a}` (its aliases: {has}); pass one it has, or no --alias when it has none")
        }
        Some(a) => Some((a, api.alias(function, a).await?)),
    };
    let plan = match op {
        Op::Promote { policy, public_key } => promoted(&current.env, policy, public_key.as_deref()),
        Op::Rollback => rolled_back(&current.env, function)?,
    };
    // What the alias runs now: behind when its version has other policy variables than the
    // plan's outcome (e.g. a change made to $LATEST without publishing it).
    let alias_behind = match &alias {
        Some((name, state)) => policy_vars(&api.read_qualified(function, Some(name)).await?.env) != plan.to || state.version == "$LATEST",
        None => false,
    };
    let mut moved =
        alias.as_ref().map(|(name, state)| AliasMove { name: (*name).to_owned(), from_version: state.version.clone(), to_version: None });
    let outcome = |action, revision_id, moved: Option<AliasMove>| Outcome {
        action,
        arn: current.arn.clone(),
        plan: plan.clone(),
        before: current.env.clone(),
        revision_id,
        alias: moved,
    };
    let latest_changes = plan.env != current.env;
    if !latest_changes && !alias_behind {
        return Ok(outcome("no_change", current.revision_id.clone(), moved));
    }
    if dry_run {
        let action = if matches!(op, Op::Promote { .. }) { "would_promote" } else { "would_roll_back" };
        return Ok(outcome(action, current.revision_id.clone(), moved));
    }
    let done = if latest_changes {
        let written = api.write(function, &plan.env, current.revision_id.as_deref()).await?;
        settle(api, function, written, wait, true).await?
    } else {
        current.clone()
    };
    if let (Some((name, state)), Some(m)) = (&alias, moved.as_mut()) {
        let version = api.publish(function, done.revision_id.as_deref()).await?;
        api.point_alias(function, name, &version, state.revision_id.as_deref()).await?;
        m.to_version = Some(version);
    }
    let action = if matches!(op, Op::Promote { .. }) { "promoted" } else { "rolled_back" };
    Ok(outcome(action, done.revision_id, moved))
}

/// Runs promote or rollback against AWS and prints the record.
async fn run(target: &FunctionArgs, op: Op) -> Result<()> {
    check_function(&target.function)?;
    // Drawn before anything changes, so the record of a change is never lost to it.
    let event_id = uuid_v4()?;
    let settings = AwsSettings { endpoint_url: target.endpoint_url.clone(), region: target.region.clone(), ..AwsSettings::default() };
    let conf = load_sdk_config(&settings).await;
    let by = match StsIdentity::from_conf(&conf).caller_arn().await {
        Ok(arn) => arn,
        Err(e) => {
            eprintln!("warning: cannot tell who you are (STS GetCallerIdentity: {e}); recording `unknown`");
            "unknown".to_owned()
        }
    };
    let lambda = aws_sdk_lambda::Client::new(&conf);
    let function = target.function.as_str();
    let out = execute(&lambda, function, &op, target.dry_run, Wait::default(), target.alias.as_deref()).await?;
    let changes = describe_changes(&out.before, &out.plan.env);
    match out.action {
        "no_change" => eprintln!("`{function}` already runs {} (with that key); nothing changed", out.plan.from.policy),
        "would_promote" | "would_roll_back" => {
            eprintln!("dry run: would change `{function}`:");
            for c in &changes {
                eprintln!("  {c}");
            }
        }
        _ => {
            for c in &changes {
                eprintln!("  {c}");
            }
            let via = match &out.alias {
                Some(AliasMove { name, from_version, to_version: Some(v) }) => {
                    format!(" through alias `{name}` (version {from_version} -> {v})")
                }
                _ => String::new(),
            };
            let undo_alias = out.alias.as_ref().map(|a| format!(" --alias {}", a.name)).unwrap_or_default();
            eprintln!(
                "`{function}` now runs {} (was {}){via}; its next invocation loads it. Undo with `kbha policy rollback --function {function}{undo_alias}`",
                out.plan.to.policy, out.plan.from.policy
            );
        }
    }
    let unsigned_s3 = out.plan.to.policy.starts_with("s3://") && out.plan.to.public_key.is_none();
    if unsigned_s3 && out.action != "no_change" {
        eprintln!("note: `{function}` has no {PUBLIC_KEY}: the policy's signature is not checked");
    }
    let record = Record {
        record: "kbha.decision",
        function: "policy-promote",
        event_id,
        now: kbha_core::time::format_timestamp(kbha_lambda::lambda::now_ms()),
        subject: out.arn,
        action: out.action,
        by,
        reason: target.reason.clone(),
        from: out.plan.from,
        to: out.plan.to,
        revision_id: out.revision_id,
        alias: out.alias,
    };
    println!("{}", serde_json::to_string(&record)?);
    Ok(())
}

/// Runs `kbha policy promote`.
pub async fn promote(args: &PromoteArgs) -> Result<()> {
    let policy = parse_target(&args.policy)?;
    let public_key = args.public_key.as_deref().map(parse_public_key).transpose()?;
    run(&args.target, Op::Promote { policy, public_key }).await
}

/// Runs `kbha policy rollback`.
pub async fn rollback(args: &RollbackArgs) -> Result<()> {
    run(&args.target, Op::Rollback).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn pinned() -> String {
        format!("s3://policies/failover.wasm?versionId=v2#sha256:{DIGEST}")
    }

    fn key(byte: u8) -> String {
        hex::encode(ed25519_dalek::SigningKey::from_bytes(&[byte; 32]).verifying_key().to_bytes())
    }

    #[test]
    fn only_pinned_sources_and_builtin_are_promoted() {
        assert_eq!(parse_target("builtin").ok(), Some(PolicySource::Builtin));
        assert!(parse_target(&pinned()).is_ok());
        assert!(parse_target(&format!("KBHA_POLICY={}", pinned())).is_ok(), "the whole printed line");
        assert!(parse_target("s3://b/k?versionId=3").is_ok(), "a version alone pins");
        assert!(parse_target(&format!("s3://b/k#sha256:{DIGEST}")).is_ok(), "a digest alone pins");
        for bad in ["s3://b/k", "http://x/y", "", "Builtin"] {
            let e = parse_target(bad).expect_err(bad).to_string();
            assert!(e.contains("`KBHA_POLICY=` line `kbha policy publish` printed"), "{bad}: {e}");
        }
        assert!(parse_target("s3://b/k").expect_err("unpinned").to_string().contains("not pinned"));
        assert!(parse_public_key(&key(1)).is_ok());
        assert!(parse_public_key("abcd").expect_err("short").to_string().starts_with("--public-key is 2 bytes"));
    }

    #[test]
    fn qualified_functions_are_refused() {
        for ok in ["kbha-failover", "arn:aws:lambda:us-east-1:123456789012:function:kbha-failover", "123456789012:function:f"] {
            assert!(check_function(ok).is_ok(), "{ok}");
        }
        for bad in ["f:live", "arn:aws:lambda:us-east-1:123456789012:function:f:3", "123456789012:function:f:live", " "] {
            assert!(check_function(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn promote_changes_only_the_policy_variables_and_keeps_the_previous_ones() {
        let before = env(&[("KBHA_RECORD_NAME", "x"), ("OTHER", "y")]);
        let plan = promoted(&before, &parse_target(&pinned()).expect("pinned"), None);
        assert_eq!(plan.env, env(&[("KBHA_RECORD_NAME", "x"), ("OTHER", "y"), (POLICY, &pinned()), (PREVIOUS, "builtin")]));
        assert_eq!(plan.from, PolicyVars { policy: "builtin".into(), public_key: None });
        assert_eq!(plan.to, PolicyVars { policy: pinned(), public_key: None });

        // A new key: the old one (none: empty) is kept beside the old policy.
        let plan = promoted(&before, &parse_target(&pinned()).expect("pinned"), Some(&key(1)));
        assert_eq!(plan.env.get(PUBLIC_KEY), Some(&key(1)));
        assert_eq!(plan.env.get(PREVIOUS_PUBLIC_KEY).map(String::as_str), Some(""));
        assert_eq!(plan.to.public_key, Some(key(1)));

        // The same key (even in another encoding) is no key change, and a stale previous
        // key is dropped: the previous policy ran with the key that stays.
        let signed = env(&[(POLICY, "s3://p/old.wasm?versionId=1"), (PUBLIC_KEY, &key(1)), (PREVIOUS_PUBLIC_KEY, &key(9)), ("OTHER", "y")]);
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, hex::decode(key(1)).expect("hex"));
        let plan = promoted(&signed, &parse_target(&pinned()).expect("pinned"), Some(&b64));
        assert_eq!(plan.env.get(PUBLIC_KEY), Some(&key(1)));
        assert_eq!(plan.env.get(PREVIOUS_PUBLIC_KEY), None);
        assert_eq!(plan.env.get(PREVIOUS).map(String::as_str), Some("s3://p/old.wasm?versionId=1"));
    }

    #[test]
    fn promoting_what_runs_changes_nothing() {
        let upper = format!("s3://policies/failover.wasm?versionId=v2#sha256:{}", DIGEST.to_uppercase());
        let live = env(&[(POLICY, &upper), (PREVIOUS, "builtin")]);
        let plan = promoted(&live, &parse_target(&pinned()).expect("pinned"), None);
        assert_eq!(plan.env, live, "the same digest in upper case is the same policy");
        let unset = env(&[("OTHER", "y")]);
        assert_eq!(promoted(&unset, &PolicySource::Builtin, None).env, unset, "unset is builtin");
        // The same policy with another key is a (key) change.
        let plan = promoted(&live, &parse_target(&pinned()).expect("pinned"), Some(&key(2)));
        assert_eq!(plan.env.get(PUBLIC_KEY), Some(&key(2)));
    }

    #[test]
    fn rollback_swaps_and_a_second_rollback_undoes_the_first() -> Result<()> {
        let before = env(&[("OTHER", "y"), (PUBLIC_KEY, &key(1))]);
        let promoted_env = promoted(&before, &parse_target(&pinned())?, Some(&key(2))).env;
        let back = rolled_back(&promoted_env, "f")?;
        assert_eq!(back.env.get(POLICY).map(String::as_str), Some("builtin"));
        assert_eq!(back.env.get(PREVIOUS), Some(&pinned()));
        assert_eq!(back.env.get(PUBLIC_KEY), Some(&key(1)));
        assert_eq!(back.env.get(PREVIOUS_PUBLIC_KEY), Some(&key(2)));
        assert_eq!(back.to, PolicyVars { policy: "builtin".into(), public_key: Some(key(1)) });
        let again = rolled_back(&back.env, "f")?;
        assert_eq!(again.env, promoted_env);

        // A key restored to "none" removes the variable; the swap records the key it replaced.
        let fresh = promoted(&env(&[("OTHER", "y")]), &parse_target(&pinned())?, Some(&key(3))).env;
        let back = rolled_back(&fresh, "f")?;
        assert_eq!((back.env.get(PUBLIC_KEY), back.env.get(PREVIOUS_PUBLIC_KEY)), (None, Some(&key(3))));
        assert_eq!(rolled_back(&back.env, "f")?.env, fresh);
        Ok(())
    }

    #[test]
    fn rollback_without_a_promote_says_so() {
        let e = rolled_back(&env(&[(POLICY, &pinned())]), "kbha-failover").expect_err("no previous").to_string();
        assert!(e.starts_with("nothing to roll back to: `kbha-failover` has no KBHA_POLICY_PREVIOUS"), "{e}");
        assert!(e.contains("never promoted with kbha policy promote"), "{e}");
        let e = rolled_back(&env(&[(PREVIOUS, "ftp://x")]), "f").expect_err("garbage").to_string();
        assert!(e.contains("KBHA_POLICY_PREVIOUS of `f` is `ftp://x`"), "{e}");
    }

    #[test]
    fn changes_are_described_per_variable() {
        let d = describe_changes(&env(&[("A", "1"), ("B", "2")]), &env(&[("A", "1"), ("B", "3"), ("C", "")]));
        assert_eq!(d, vec!["B: `2` -> `3`".to_owned(), "C: unset -> ``".to_owned()]);
    }

    #[test]
    fn record_ids_are_random_uuid_v4() -> Result<()> {
        let id = uuid_v4()?;
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)), "lowercase hex: {id}");
        assert!(groups[2].starts_with('4'), "version 4: {id}");
        assert!(groups[3].starts_with(['8', '9', 'a', 'b']), "RFC 4122 variant: {id}");
        assert_ne!(uuid_v4()?, id, "two ids differ");
        Ok(())
    }

    /// A function in memory: each write is `InProgress` for `busy_reads` reads, then
    /// `final_status`.
    struct Fake {
        state: Mutex<(FunctionState, u32)>,
        busy_reads: u32,
        final_status: &'static str,
        writes: Mutex<Vec<EnvMap>>,
    }

    impl Fake {
        fn new(env: EnvMap, busy_reads: u32, final_status: &'static str) -> Fake {
            let state = FunctionState {
                arn: "arn:f".into(),
                env,
                revision_id: Some("r0".into()),
                state: Some("Active".into()),
                last_update_status: Some("Successful".into()),
                last_update_reason: None,
            };
            Fake { state: Mutex::new((state, 0)), busy_reads, final_status, writes: Mutex::new(vec![]) }
        }
    }

    impl LambdaApi for Fake {
        async fn aliases(&self, _: &str) -> Result<Vec<String>> {
            Ok(vec![])
        }

        async fn alias(&self, _: &str, alias: &str) -> Result<AliasState> {
            anyhow::bail!("no alias {alias}")
        }

        async fn publish(&self, _: &str, _: Option<&str>) -> Result<String> {
            anyhow::bail!("the fake has no versions")
        }

        async fn point_alias(&self, _: &str, _: &str, _: &str, _: Option<&str>) -> Result<()> {
            anyhow::bail!("the fake has no aliases")
        }

        async fn read_qualified(&self, _: &str, _: Option<&str>) -> Result<FunctionState> {
            let mut g = self.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            if g.1 > 0 {
                g.1 -= 1;
                if g.1 == 0 {
                    g.0.last_update_status = Some(self.final_status.into());
                    g.0.last_update_reason = Some("ENI limit".into());
                }
            }
            Ok(g.0.clone())
        }

        async fn write(&self, _: &str, env: &EnvMap, revision_id: Option<&str>) -> Result<FunctionState> {
            let mut g = self.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            anyhow::ensure!(revision_id == g.0.revision_id.as_deref(), "PreconditionFailed");
            self.writes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(env.clone());
            g.0.env = env.clone();
            g.0.revision_id = Some(format!("r{}", self.writes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.len()));
            g.0.last_update_status = Some(if self.busy_reads > 0 { "InProgress" } else { self.final_status }.into());
            g.1 = self.busy_reads;
            Ok(g.0.clone())
        }
    }

    const QUICK: Wait = Wait { timeout: Duration::from_secs(5), poll: Duration::from_millis(1) };

    #[tokio::test]
    async fn promote_waits_for_the_update_and_reports_the_new_revision() -> Result<()> {
        let api = Fake::new(env(&[("OTHER", "y")]), 3, "Successful");
        let op = Op::Promote { policy: parse_target(&pinned())?, public_key: None };
        let out = execute(&api, "f", &op, false, QUICK, None).await?;
        assert_eq!((out.action, out.revision_id.as_deref()), ("promoted", Some("r1")));
        assert_eq!(api.read("f").await?.last_update_status.as_deref(), Some("Successful"));
        // Again: nothing to do, nothing written.
        let out = execute(&api, "f", &op, false, QUICK, None).await?;
        assert_eq!(out.action, "no_change");
        assert_eq!(api.writes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.len(), 1);
        // A dry-run rollback writes nothing either.
        let out = execute(&api, "f", &Op::Rollback, true, QUICK, None).await?;
        assert_eq!((out.action, out.plan.to.policy.as_str()), ("would_roll_back", "builtin"));
        assert_eq!(api.writes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_or_endless_update_is_an_error() -> Result<()> {
        let op = Op::Promote { policy: PolicySource::Builtin, public_key: None };
        let failing = Fake::new(env(&[(POLICY, &pinned())]), 1, "Failed");
        let e = execute(&failing, "f", &op, false, QUICK, None).await.expect_err("failed update").to_string();
        assert!(e.contains("update of `f` Failed: ENI limit"), "{e}");
        let endless = Fake::new(env(&[(POLICY, &pinned())]), u32::MAX, "Successful");
        let wait = Wait { timeout: Duration::from_millis(20), poll: Duration::from_millis(2) };
        let e = execute(&endless, "f", &op, false, wait, None).await.expect_err("never done").to_string();
        assert!(e.contains("still updating `f`"), "{e}");
        Ok(())
    }
}
