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
    assert_eq!(kbha_hosting::record::shape_problems(&record), Vec::<String>::new(), "{record}");
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
    assert_eq!(kbha_hosting::record::shape_problems(&record), Vec::<String>::new(), "{record}");
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
    assert_eq!(kbha_hosting::record::shape_problems(&record), Vec::<String>::new(), "{record}");
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
