//! `kbha replay failover` runs the real handler against the emulator named by
//! `AWS_ENDPOINT_URL`, configured only through the function's `KBHA_*` variables.

use std::process::Command;

use anyhow::Result;
use kbha_integration::{World, fixture, weights};

#[tokio::test]
async fn replay_failover_applies_a_recorded_alarm_against_the_emulator() -> Result<()> {
    let w = World::start().await?;
    w.set_health("primary", false).await?;
    let event = kbha_test_harness::repo_root().join("samples/events/cloudwatch-alarm-eventbridge.json");
    fixture("cloudwatch-alarm-eventbridge.json")?; // the file parses
    let out = Command::new(env!("CARGO_BIN_EXE_kbha"))
        .args(["replay", "failover", "--event"])
        .arg(&event)
        .args(["--now", "2026-11-26T10:00:05Z"])
        .envs(w.env(&[]))
        .env("AWS_ENDPOINT_URL", w.emu.endpoint_url())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let record: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())?;
    assert_eq!(record["record"], "kbha.decision");
    assert_eq!(record["action"], "applied");
    assert_eq!(w.weights().await?, weights(0, 100));
    Ok(())
}

#[tokio::test]
async fn replay_with_bad_configuration_names_the_variable() -> Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_kbha"))
        .args(["replay", "failover", "--event"])
        .arg(kbha_test_harness::repo_root().join("samples/events/cloudwatch-alarm-sns.json"))
        .env_remove("KBHA_TARGETS")
        .env("KBHA_HOSTED_ZONE_ID", "Z1")
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`KBHA_TARGETS` is not set"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn replay_alerting_delivers_a_recorded_notice_through_the_emulator() -> Result<()> {
    let emu = kbha_test_harness::Emulator::start()?;
    emu.create_bucket("alert-state").await?;
    let warning = emu.create_topic_with_queue("kbha-warning").await?;
    let critical = emu.create_topic_with_queue("kbha-critical").await?;
    let destinations = serde_json::json!({"warning": warning.topic_arn, "critical": critical.topic_arn}).to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_kbha"))
        .args(["replay", "alerting", "--event"])
        .arg(kbha_test_harness::repo_root().join("samples/events/kbha-notice-sns.json"))
        .args(["--now", "2026-11-26T10:00:06Z"])
        .env("KBHA_DESTINATIONS", destinations)
        .env("KBHA_STATE_BUCKET", "alert-state")
        .env("AWS_ENDPOINT_URL", emu.endpoint_url())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let record: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())?;
    assert_eq!((record["function"].as_str(), record["outcome"].as_str()), (Some("alert-router"), Some("delivered")));
    let got = emu.drain_messages(&warning, 2, std::time::Duration::from_secs(3)).await?;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attributes["source"], "kbha");
    Ok(())
}
