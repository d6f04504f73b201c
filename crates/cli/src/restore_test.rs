//! `kbha restore-test`: the replication verifier's restore test on demand, against the
//! deployment (`--source`, with the verifier's `KBHA_*` configuration; recorded and
//! notified as a scheduled test is) or on a local backup file (`--file`, nothing recorded).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kbha_lambda::lambda::{InitTimer, now_ms};
use kbha_lambda::record::Invocation;
use kbha_replication_verifier::manifest::Manifest;
use kbha_replication_verifier::restore::{RestoreVerdict, Scratch, restore_test};
use kbha_replication_verifier::stream::Layout;

/// Arguments of `kbha restore-test`.
#[derive(Debug, clap::Args)]
pub struct RestoreTestArgs {
    /// Source to test (a `KBHA_BACKUP_SOURCES` name); without it, every source. The test runs
    /// through the verifier as the Lambda does, against `AWS_ENDPOINT_URL` or AWS.
    #[arg(long, conflicts_with = "file")]
    pub source: Option<String>,
    /// Run id: a second run with the same id finds the first one's record (default: one
    /// made from the time).
    #[arg(long, conflicts_with = "file")]
    pub id: Option<String>,
    /// A local backup file to test instead (tar.gz, tar, gz or a single file such as
    /// `dump.rdb`): nothing is read from or written to AWS.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// With `--file`: its manifest (`<backup>.manifest.json`), to compare the files against.
    #[arg(long, requires = "file")]
    pub manifest: Option<PathBuf>,
    /// With `--file`: most bytes to restore (as `KBHA_RESTORE_MAX_BYTES`).
    #[arg(long, requires = "file", default_value_t = 448 << 20)]
    pub max_bytes: u64,
}

/// Runs the restore test; fails (exit 1) unless every test passed.
pub async fn run(args: &RestoreTestArgs) -> Result<()> {
    match &args.file {
        Some(file) => local(args, file),
        None => deployed(args).await,
    }
}

fn local(args: &RestoreTestArgs, file: &std::path::Path) -> Result<()> {
    let manifest = match &args.manifest {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read `{}`", p.display()))?;
            Some(Manifest::parse(&bytes).map_err(|e| anyhow::anyhow!("`{}`: {e}", p.display()))?)
        }
        None => None,
    };
    let reader = std::fs::File::open(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("backup");
    let scratch = Scratch { dir: std::env::temp_dir().join(format!("kbha-restore-cli-{}", std::process::id())), max_bytes: args.max_bytes };
    let started = std::time::Instant::now();
    let outcome = restore_test(reader, Layout::of_key(name), name, manifest.as_ref(), &scratch)?;
    println!("{}", serde_json::to_string_pretty(&outcome)?);
    eprintln!(
        "restore test of `{}`: {} in {} ms: {}",
        file.display(),
        outcome.verdict.as_str(),
        started.elapsed().as_millis(),
        outcome.reason
    );
    if outcome.verdict != RestoreVerdict::Ok {
        bail!("the restore test did not pass ({})", outcome.verdict.as_str());
    }
    Ok(())
}

async fn deployed(args: &RestoreTestArgs) -> Result<()> {
    let now = now_ms();
    let id = args.id.clone().unwrap_or_else(|| format!("kbha-cli-{now}"));
    let event = serde_json::json!({"kbha": "restore-test", "id": id, "source": args.source});
    // Started exactly as the Lambda `main` starts it.
    let function = kbha_replication_verifier::start(&mut InitTimer::start()).await?.function;
    let records = function.handle(&event, Invocation::at(now)).await.map_err(|e| {
        let class = if e.retryable() { "retryable" } else { "not retryable" };
        anyhow::anyhow!("{e} ({class})")
    })?;
    let mut failed = Vec::new();
    for r in &records {
        let what = match (&r.restore_test, &r.skipped) {
            (Some(t), _) => format!("{} in {} ms ({} bytes) of {}", t.verdict.as_str(), t.duration_ms, t.restored_bytes, t.key),
            (None, Some(why)) => format!("skipped: {why}"),
            (None, None) => "nothing done".into(),
        };
        eprintln!("{}: {what}", r.subject);
        if r.restore_test.as_ref().is_none_or(|t| t.verdict != RestoreVerdict::Ok) {
            failed.push(r.subject.clone());
        }
    }
    if !failed.is_empty() {
        bail!("the restore test did not pass for {}", failed.join(", "));
    }
    Ok(())
}
