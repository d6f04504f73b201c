//! `kbha replay failover` runs the real handler against the emulator named by
//! `AWS_ENDPOINT_URL`, configured only through the function's `KBHA_*` variables.

use std::process::Command;

use anyhow::{Context, Result};
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
    assert_eq!(kbha_lambda::record::shape_problems(&record), Vec::<String>::new(), "{record}");
    assert_eq!(record["request_id"], serde_json::Value::Null, "no Lambda ran it, so no request id: {record}");
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
    assert_eq!(kbha_lambda::record::shape_problems(&record), Vec::<String>::new(), "{record}");
    assert_eq!(record["request_id"], serde_json::Value::Null, "no Lambda ran it, so no request id: {record}");
    assert_eq!((record["function"].as_str(), record["action"].as_str()), (Some("alert-router"), Some("delivered")));
    let got = emu.drain_messages(&warning, 2, std::time::Duration::from_secs(3)).await?;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attributes["source"], "kbha");
    Ok(())
}

/// Peak resident memory of a running process (VmHWM), in KiB; `None` once it exited.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Writes a `.tar.gz` of at least `bytes` of incompressible content to `path`, streaming
/// (the test itself never holds it in memory).
fn write_large_backup(path: &std::path::Path, bytes: u64) -> Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    // Stored (level 0) deflate: a valid gzip as large as its content, written fast.
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::none()));
    let parts = 4u64;
    let per_part = bytes / parts + 1;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..parts {
        let mut header = tar::Header::new_gnu();
        header.set_size(per_part);
        header.set_mode(0o644);
        header.set_cksum();
        // xorshift bytes, produced as tar reads them.
        let reader = std::io::Read::take(
            std::iter::repeat_with(move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            })
            .flat_map(u64::to_le_bytes)
            .collect_reader(),
            per_part,
        );
        builder.append_data(&mut header, format!("segment-{i}.bin"), reader)?;
    }
    builder.into_inner()?.finish()?;
    Ok(())
}

/// An iterator of bytes as a reader.
trait CollectReader: Iterator<Item = u8> + Sized {
    fn collect_reader(self) -> IterReader<Self> {
        IterReader(self)
    }
}
impl<I: Iterator<Item = u8>> CollectReader for I {}
struct IterReader<I>(I);
impl<I: Iterator<Item = u8>> std::io::Read for IterReader<I> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        for (slot, b) in buf.iter_mut().zip(&mut self.0) {
            *slot = b;
            n += 1;
        }
        Ok(n)
    }
}

#[tokio::test]
async fn replay_replication_verifies_a_256_mib_backup_with_bounded_memory() -> Result<()> {
    const SIZE: u64 = 256 << 20;
    let emu = kbha_test_harness::Emulator::start()?;
    for b in ["kbha-backups-us-east-1", "kbha-state"] {
        emu.create_bucket(b).await?;
    }
    let notices = emu.create_topic_with_queue("kbha-notices").await?;
    let dir = std::env::temp_dir().join(format!("kbha-large-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("chroma.tar.gz");
    write_large_backup(&path, SIZE)?;
    let key = "chromadb/2026/11/26/large backup.tar.gz";
    emu.put_file("kbha-backups-us-east-1", key, &path, false).await?;
    let object_size = std::fs::metadata(&path)?.len();
    std::fs::remove_dir_all(&dir)?;
    assert!(object_size >= SIZE);

    let event = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-26T10:05:00.000Z", "eventName": "ObjectCreated:CompleteMultipartUpload",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "kbha-backups-us-east-1", "arn": "arn:aws:s3:::kbha-backups-us-east-1"},
               "object": {"key": "chromadb/2026/11/26/large+backup.tar.gz", "size": object_size, "sequencer": "0A1B2C3D4E5F"}}
    }]});
    let event_path = std::env::temp_dir().join(format!("kbha-large-event-{}.json", std::process::id()));
    std::fs::write(&event_path, event.to_string())?;
    let sources =
        serde_json::json!([{"name": "chromadb", "bucket": "kbha-backups-us-east-1", "prefix": "chromadb/", "region": "us-east-1"}]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kbha"))
        .args(["replay", "replication", "--event"])
        .arg(&event_path)
        .env("KBHA_BACKUP_SOURCES", sources.to_string())
        .env("KBHA_STATE_BUCKET", "kbha-state")
        .env("KBHA_NOTIFY_TOPIC_ARN", &notices.topic_arn)
        .env("AWS_ENDPOINT_URL", emu.endpoint_url())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // VmHWM is the high-water mark, so sampling until exit catches the peak.
    let mut peak_kib = 0;
    while child.try_wait()?.is_none() {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    std::fs::remove_file(&event_path)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let record: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())?;
    assert_eq!(kbha_lambda::record::shape_problems(&record), Vec::<String>::new(), "{record}");
    assert_eq!(record["request_id"], serde_json::Value::Null, "no Lambda ran it, so no request id: {record}");
    assert_eq!(record["verdict"], "ok", "{record}");
    assert_eq!(record["facts"]["size_bytes"], object_size);
    assert_eq!(record["facts"]["archive"]["entries"], 4);
    let peak_mib = peak_kib / 1024;
    println!("verified a {} MiB backup with a peak RSS of {peak_mib} MiB", object_size >> 20);
    assert!(peak_mib > 0, "the peak was sampled");
    // Far below the object: a quarter of it, and the whole process (engine, SDK) included.
    assert!(peak_mib * 4 < object_size >> 20, "peak RSS {peak_mib} MiB for a {} MiB object", object_size >> 20);
    Ok(())
}

/// Runs `kbha` with the emulator's credentials and `env`; returns (success, stdout, stderr).
fn kbha_in(w: &World, env: &std::collections::BTreeMap<String, String>, args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_kbha"))
        .args(args)
        .current_dir(kbha_test_harness::repo_root())
        .envs(env)
        .env("AWS_ENDPOINT_URL", w.emu.endpoint_url())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// A world whose policy bucket holds the built-in failover component, published and signed
/// with `key` by `kbha policy publish`; returns the world and the lines the publish printed.
async fn world_with_signed_policy(key: &str) -> Result<(World, Vec<(String, String)>)> {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    let w = World::start().await?;
    w.set_health("primary", false).await?;
    w.emu.create_bucket("policies").await?;
    let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    w.emu.s3().await.put_bucket_versioning().bucket("policies").versioning_configuration(versioning).send().await?;
    let component = kbha_test_harness::repo_root().join("target/policies/failover-default.wasm");
    let component = component.to_str().context("utf-8 path")?;
    let (ok, out, err) =
        kbha_in(&w, &Default::default(), &["policy", "publish", component, "--to", "s3://policies/failover.wasm", "--sign", key])?;
    anyhow::ensure!(ok, "publish failed: {err}\n{out}");
    let lines = out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    Ok((w, lines))
}

/// What a decision record says about who decided and why, for comparing two runs.
fn who_decided(record: &serde_json::Value) -> serde_json::Value {
    let faults: Vec<_> = record["policy"]["faults"].as_array().into_iter().flatten().map(|f| f["kind"].clone()).collect();
    // Each world's bucket gives the published object its own version id.
    let decided_by = record["policy"]["decided_by"].as_str().unwrap_or_default();
    let decided_by = match decided_by.split_once("?versionId=") {
        Some((object, rest)) => format!("{object}?versionId=<v>{}", rest.find('#').map_or("", |i| &rest[i..])),
        None => decided_by.to_owned(),
    };
    serde_json::json!({
        "action": record["action"],
        "decided_by": decided_by,
        "faults": faults,
        "shadow_agrees": record["policy"]["shadow_agrees"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_starts_the_function_as_lambda_does_signed_bad_signature_bad_pin_and_shadow() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("kbha-replay-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (good, other) = (dir.join("good"), dir.join("other"));
    for prefix in [&good, &other] {
        let out = Command::new(env!("CARGO_BIN_EXE_kbha")).args(["policy", "keygen"]).arg(prefix).output()?;
        anyhow::ensure!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    }
    let other_public = std::fs::read_to_string(dir.join("other.pub"))?.trim().to_owned();
    let event = kbha_test_harness::repo_root().join("samples/events/cloudwatch-alarm-eventbridge.json");
    let event_value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&event)?)?;
    let now = kbha_core::time::parse_timestamp("2026-11-26T10:00:05Z")?;

    // Each case: the published configuration changed by `change`; what the record should show.
    type Change = fn(&mut std::collections::BTreeMap<String, String>, &str);
    let cases: [(&str, Change); 4] = [
        ("signed and pinned", |_, _| {}),
        ("signed with another key", |env, other| {
            env.insert("KBHA_POLICY_PUBLIC_KEY".into(), other.to_owned());
        }),
        ("pinned to another digest", |env, _| {
            let policy = env["KBHA_POLICY"].split('#').next().unwrap_or_default().to_owned();
            env.insert("KBHA_POLICY".into(), format!("{policy}#sha256:{}", "0".repeat(64)));
        }),
        ("with a shadow policy", |env, _| {
            let policy = env["KBHA_POLICY"].clone();
            env.insert("KBHA_SHADOW_POLICY".into(), policy);
        }),
    ];
    let mut seen = Vec::new();
    for (case, change) in cases {
        // The Lambda's start, in process, on one world; `kbha replay` on another, alike.
        let key = format!("{}.key", good.display());
        let (lambda_world, printed) = world_with_signed_policy(&key).await?;
        let mut env = lambda_world.env(&[]);
        env.extend(printed.iter().cloned());
        change(&mut env, &other_public);
        let conf = lambda_world.emu.sdk_config().await;
        let lookup = |k: &str| env.get(k).cloned();
        let started = kbha_failover::start_with(lookup, &conf, &mut kbha_lambda::lambda::InitTimer::start()).await?;
        let records = started.function.handle(&event_value, kbha_lambda::record::Invocation::at(now)).await?;
        let lambda = who_decided(&serde_json::to_value(&records[0])?);

        let (replay_world, printed) = world_with_signed_policy(&key).await?;
        let mut env = replay_world.env(&[]);
        env.extend(printed.iter().cloned());
        change(&mut env, &other_public);
        let (ok, out, err) = kbha_in(
            &replay_world,
            &env,
            &["replay", "failover", "--event", event.to_str().context("utf-8")?, "--now", "2026-11-26T10:00:05Z"],
        )?;
        anyhow::ensure!(ok, "{case}: replay failed: {err}\n{out}");
        let replay = who_decided(&serde_json::from_str(out.lines().next().unwrap_or_default())?);
        assert_eq!(replay, lambda, "{case}: replay and the function disagree");
        seen.push((case, replay));
    }
    // And what they agree on is what each case means.
    let s3 = seen[0].1["decided_by"].clone();
    assert!(s3.as_str().is_some_and(|s| s.starts_with("s3://policies/failover.wasm")), "{:?}", seen[0]);
    assert_eq!(seen[0].1["faults"], serde_json::json!([]), "{:?}", seen[0]);
    for (case, got) in &seen[1..3] {
        assert_eq!(got["decided_by"], "builtin", "{case}: the fallback decides: {got}");
        assert_ne!(got["faults"], serde_json::json!([]), "{case}: with the fault named: {got}");
    }
    assert_eq!((seen[3].1["decided_by"].clone(), seen[3].1["shadow_agrees"].clone()), (s3, serde_json::json!(true)), "{:?}", seen[3]);
    assert_eq!(seen[0].1["action"], "applied");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
