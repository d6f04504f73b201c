//! `kbha ops` and `kbha report` through the binary, against the emulator named by
//! `--endpoint-url`, configured by a `--config` file (the function's `KBHA_*` variables as
//! `aws lambda get-function-configuration` prints them): what a person types at 3 a.m.

use std::process::{Command, Output};

use anyhow::{Context, Result};
use kbha_integration::{World, weights};

fn kbha(w: &World, config: &std::path::Path, args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_kbha"))
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--endpoint-url", &w.emu.endpoint_url()])
        // Only the file configures the function: nothing KBHA_* leaks in from the test.
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .context("run kbha")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test]
async fn status_pause_shift_drain_and_report_through_the_binary() -> Result<()> {
    let w = World::start().await?;
    let dir = std::env::temp_dir().join(format!("kbha-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("failover.json");
    let vars: serde_json::Map<String, serde_json::Value> =
        w.env(&[("KBHA_COOLDOWN_SECONDS", "0"), ("KBHA_MIN_INTERVAL_SECONDS", "0")]).into_iter().map(|(k, v)| (k, v.into())).collect();
    std::fs::write(&config, serde_json::json!({"FunctionName": "kbha-failover", "Environment": {"Variables": vars}}).to_string())?;

    let out = kbha(&w, &config, &["ops", "status"])?;
    assert!(out.status.success(), "{}", text(&out));
    let s = text(&out);
    assert!(s.contains("primary*") && s.contains("100%") && s.contains("no open incident"), "{s}");
    assert!(s.contains("restore tests") && s.contains("(none recorded"), "{s}");

    // The verifier's last restore test, where it keeps it beside the status objects.
    let tested = serde_json::json!({"source": "chromadb", "tested_at_ms": 1_796_000_000_000i64, "verdict": "ok", "duration_ms": 1400,
        "restored_bytes": 1_048_576, "key": "chromadb/b1.tar.gz", "backup_created_at_ms": 1_795_999_000_000i64,
        "record_key": "kbha/replication/records/restore-tests/chromadb/r1.json"});
    w.emu.put_bytes("kbha-state", "replication/restore-tests/chromadb.json", tested.to_string().into_bytes()).await?;
    let s = text(&kbha(&w, &config, &["ops", "status"])?);
    assert!(s.contains("chromadb") && s.contains("1.4 s") && s.contains("chromadb/b1.tar.gz"), "{s}");

    let out = kbha(&w, &config, &["ops", "pause", "--reason", "db migration"])?;
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default())?;
    assert_eq!((record["function"].as_str(), record["command"].as_str()), (Some("ops"), Some("pause")));
    assert!(record["by"].as_str().is_some_and(|b| b.starts_with("arn:aws:")), "the caller, from STS: {record}");
    let out = kbha(&w, &config, &["ops", "status", "--json"])?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(status["paused"]["reason"], "db migration");

    let out = kbha(&w, &config, &["ops", "shift", "--to", "secondary", "--reason", "game day"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.weights().await?, weights(0, 100));
    let out = kbha(&w, &config, &["ops", "shift", "--weights", "primary=lots"])?;
    assert!(!out.status.success() && text(&out).contains("not a whole number"), "{}", text(&out));
    let out = kbha(&w, &config, &["ops", "drain", "tertiary", "--reason", "x"])?;
    assert!(!out.status.success() && text(&out).contains("no target `tertiary`"), "{}", text(&out));
    let out = kbha(&w, &config, &["ops", "drain", "secondary", "--reason", "patching"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.weights().await?, weights(100, 0), "the drain moves the traffic off");
    let s = text(&kbha(&w, &config, &["ops", "status"])?);
    assert!(s.contains("DRAINED") && s.contains("PAUSED"), "{s}");

    let html = dir.join("report.html");
    let out = kbha(&w, &config, &["report", "--since", "1d", "--html", html.to_str().context("path")?])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("availability 100.0000%"), "{}", text(&out));
    assert!(std::fs::read_to_string(&html)?.contains("<svg"));
    let out = kbha(&w, &config, &["report", "--since", "a week"])?;
    assert!(!out.status.success() && text(&out).contains("not a duration"), "{}", text(&out));

    // A configuration file that is not one names the problem.
    std::fs::write(dir.join("bad.env"), "KBHA_RECORD_NAME\n")?;
    let out = kbha(&w, &dir.join("bad.env"), &["ops", "status"])?;
    assert!(!out.status.success() && text(&out).contains("is not KEY=value"), "{}", text(&out));
    Ok(())
}
