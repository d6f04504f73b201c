//! `cargo xtask demo`: the region-failure drill of the KnowledgeBeast HA guide ("Scenario 1"),
//! end to end against a local AWS emulator, in simulated time.
//!
//! It starts the emulator, provisions a hosted zone with the weighted records of both
//! regions, their health checks, the notice topic (with a queue to read it back) and the
//! state bucket, then drives the real failover handler with real-shaped alarm events:
//! primary fails -> failover; primary recovers -> failback after the hysteresis, in the
//! default steps (10, 25, 50, 75, 100 % back on the primary, 5 minutes apart). Each
//! step prints the weights read back from Route 53; the report goes to
//! `target/demo/region-failure.json`.

use std::io::Write;

use anyhow::{Context, Result, ensure};
use kbha_core::time::format_timestamp;
use kbha_failover::Policies;
use kbha_integration::{PRIMARY_ALARM, Shape, World, alarm_event, t0, tick};
use kbha_lambda::record::Invocation;
use kbha_policy_lifecycle::{Failover, builtin};
use serde_json::json;

const MIN: i64 = 60_000;

/// Runs the demo; fails if the drill's expectations are not met.
pub async fn run() -> Result<()> {
    println!("xtask demo: region failure, failover, recovery, failback (simulated time)\n");
    let w = World::start().await.context("cannot start the local AWS emulator (run `bash tests/emulator/setup.sh`)")?;
    let policies = Policies::single(builtin::<Failover>()?);
    let f = w.function(&[("KBHA_HYSTERESIS_SECONDS", "600"), ("KBHA_COOLDOWN_SECONDS", "300")], policies).await?;
    w.set_replication("us-west-2", t0() - 12 * MIN).await?;
    println!("  provisioned: zone {} record {} primary=us-east-1 secondary=us-west-2", w.fx.zone_id, w.fx.record_name);
    let mut timeline = Vec::new();
    let mut step = |at: i64, what: &str, action: String, weights: &std::collections::BTreeMap<String, u32>| {
        let line = format!(
            "  {}  {:<44} {:<18} primary={:<3} secondary={}",
            &format_timestamp(at)[11..19],
            what,
            action,
            weights.get("primary").copied().unwrap_or_default(),
            weights.get("secondary").copied().unwrap_or_default()
        );
        println!("{line}");
        let _ = std::io::stdout().flush();
        timeline.push(json!({"at": format_timestamp(at), "event": what, "action": action, "weights": weights}));
    };
    step(t0() - MIN, "steady state", "-".into(), &w.weights().await?);

    w.set_health("primary", false).await?;
    let ev = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "ALARM", t0(), "demo-1")?;
    let r = f.handle(&ev, Invocation::at(t0() + 2_000)).await?;
    let failover_action = r[0].action;
    step(t0(), "primary health check fails: alarm ALARM", format!("{:?}", r[0].action), &w.weights().await?);
    ensure!(w.weights().await?.get("secondary") == Some(&100), "failover did not happen");

    let recovered = t0() + 20 * MIN;
    w.set_health("primary", true).await?;
    let ev = alarm_event(Shape::Sns, PRIMARY_ALARM, "us-east-1", "OK", recovered, "demo-2")?;
    let r = f.handle(&ev, Invocation::at(recovered + 2_000)).await?;
    step(recovered, "primary recovers: alarm OK", format!("{:?}", r[0].action), &w.weights().await?);
    // The return starts after the hysteresis and takes one step per bake (5 minutes).
    let (mut failback_at, mut returned_at) = (None, None);
    for i in 1..=12 {
        let at = recovered + i * 5 * MIN;
        let r = f.handle(&tick(at, &format!("demo-tick-{i}"))?, Invocation::at(at)).await?;
        let weights = w.weights().await?;
        let what = match &r[0].plan {
            Some(p) => format!("re-evaluation: step {} of {}", p.step, p.of),
            None => "scheduled re-evaluation".into(),
        };
        step(at, &what, format!("{:?}", r[0].action), &weights);
        if r[0].action == kbha_failover::ActionTaken::Applied {
            failback_at.get_or_insert(at);
        }
        if weights.get("primary") == Some(&100) {
            returned_at = Some(at);
            break;
        }
    }
    let failback_at = failback_at.context("failback did not start within an hour of recovery")?;
    let returned_at = returned_at.context("the stepped return did not end within an hour of recovery")?;
    ensure!(failback_at - recovered >= 10 * MIN, "failback came before the 10-minute hysteresis");
    let notices = w.notices(8, 5).await?;
    println!("\n  notices published: {}", notices.len());
    for n in &notices {
        println!("    [{}] {}", n["severity"].as_str().unwrap_or("?"), n["_subject"].as_str().unwrap_or(""));
    }
    let report = json!({
        "scenario": "region-failure",
        "failover": format!("{failover_action:?}"),
        "failback_after_recovery_s": (failback_at - recovered) / 1000,
        "returned_after_recovery_s": (returned_at - recovered) / 1000,
        "timeline": timeline,
        "notices": notices,
    });
    let dir = kbha_test_harness::repo_root().join("target/demo");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("region-failure.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    println!(
        "\n  drill passed: failover on the alarm, failback from {} min after recovery, all traffic back after {} min",
        (failback_at - recovered) / MIN,
        (returned_at - recovered) / MIN
    );
    println!("  report: {}", path.display());
    Ok(())
}
