//! Every drill in `samples/drills/` runs against the emulator through the `xtask` binary (`cargo xtask drill`)
//! and must pass; a scenario with a wrong expectation must fail with an expected-vs-got diff.

use std::process::Command;

use anyhow::{Context, Result};

fn kbha(args: &[&str]) -> Result<(bool, String)> {
    let root = kbha_test_harness::repo_root();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).current_dir(&root).output().context("run xtask")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

#[test]
fn every_drill_in_samples_passes_and_writes_its_report() -> Result<()> {
    let (ok, out) = kbha(&["drill", "--all", "samples/drills"])?;
    assert!(ok, "a drill failed:\n{out}");
    let root = kbha_test_harness::repo_root();
    let mut n = 0;
    for entry in std::fs::read_dir(root.join("samples/drills"))? {
        let path = entry?.path();
        let name = path.file_stem().and_then(|s| s.to_str()).context("file name")?.to_owned();
        let report = std::fs::read_to_string(root.join("target/drill").join(&name).join("report.html"))
            .with_context(|| format!("report of {name}"))?;
        assert!(report.contains("<svg") && report.contains("PASSED"), "{name}: report lacks the picture or the verdict");
        assert!(out.contains(&format!("drill {name}:")), "{name} did not run");
        n += 1;
    }
    assert!(n >= 4, "expected at least 4 scenarios, found {n}");
    assert!(out.contains(&format!("all {n} drill(s) passed")), "{out}");
    Ok(())
}

#[test]
fn a_wrong_expectation_fails_the_drill_with_a_diff() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("kbha-drill-wrong-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("wrong.toml");
    // The primary alarm moves traffic to the secondary; this scenario claims it does not.
    std::fs::write(
        &path,
        r#"name = "wrong-expectation"
[[step]]
at = "0m"
backup = { kind = "good" }
[[step]]
at = "1m"
health = { target = "primary", healthy = false }
[[step]]
at = "2m"
alarm = { target = "primary", state = "ALARM" }
expect = { weights = { primary = 100, secondary = 0 }, action = "NoChange" }
"#,
    )?;
    let (ok, out) = kbha(&["drill", path.to_str().context("path")?])?;
    assert!(!ok, "a wrong expectation must fail the run:\n{out}");
    assert!(out.contains("expectation failed at +00:02:00"), "{out}");
    assert!(out.contains("- expected {primary: 100, secondary: 0}") && out.contains("+ got      {primary: 0, secondary: 100}"), "{out}");
    assert!(out.contains("- expected NoChange") && out.contains("+ got      Applied"), "{out}");
    assert!(out.contains("FAILED: 2 expectation(s)"), "{out}");
    Ok(())
}

#[test]
fn a_lost_alarm_is_read_from_cloudwatch_and_an_exceeded_unhealthy_traffic_bound_fails() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("kbha-drill-bound-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bound.toml");
    // The primary's ALARM reaches CloudWatch only: the tick reads it there and evacuates.
    // Then the secondary fails too and keeps all the traffic (nowhere to go) from 3m to the
    // end of the timeline (the last step, 4m, plus 5 min): 360 traffic-seconds, over the 60
    // allowed.
    std::fs::write(
        &path,
        r#"name = "unhealthy-traffic-bound"
[expect]
max_unhealthy_traffic = "1m"
[[step]]
at = "0m"
backup = { kind = "good" }
[[step]]
at = "1m"
alarm = { target = "primary", state = "ALARM", lost = true }
expect = { weights = { primary = 100, secondary = 0 } }
[[step]]
at = "2m"
tick = true
expect = { action = "Applied", weights = { primary = 0, secondary = 100 } }
[[step]]
at = "3m"
health = { target = "secondary", healthy = false }
[[step]]
at = "4m"
tick = true
expect = { weights = { primary = 0, secondary = 100 } }
"#,
    )?;
    let (ok, out) = kbha(&["drill", path.to_str().context("path")?])?;
    assert!(!ok, "an exceeded bound must fail the run:\n{out}");
    assert!(out.contains("alarm primary ALARM (lost: CloudWatch only)"), "{out}");
    assert!(out.contains("expectation failed over the drill: traffic-seconds served by an unhealthy region"), "{out}");
    assert!(out.contains("- expected at most 60") && out.contains("+ got      360.0"), "{out}");
    assert!(out.contains("FAILED: 1 expectation(s)"), "{out}");
    let report = std::fs::read_to_string(kbha_test_harness::repo_root().join("target/drill/unhealthy-traffic-bound/report.html"))?;
    assert!(report.contains("traffic-seconds served by an unhealthy region") && report.contains("360 (&gt; 60!)"), "{report}");
    Ok(())
}
