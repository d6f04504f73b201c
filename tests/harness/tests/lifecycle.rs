//! The emulator process: isolated per test, gone when dropped.

use std::time::Duration;

use anyhow::Result;
use kbha_test_harness::Emulator;

#[tokio::test]
async fn each_emulator_is_isolated_and_dropped_ones_are_gone() -> Result<()> {
    let a = Emulator::start()?;
    let b = Emulator::start()?;
    assert_ne!(a.port(), b.port());
    assert_eq!(a.control("GET", "/_kbha/ping", None).await?, "ok");

    a.create_bucket("only-in-a").await?;
    let in_b = b.s3().await.list_buckets().send().await?;
    assert!(in_b.buckets().is_empty(), "state leaked between emulators");

    let port = a.port();
    drop(a);
    // The process is killed and reaped in drop; nothing listens there any more.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err());
    assert_eq!(b.control("GET", "/_kbha/ping", None).await?, "ok");
    Ok(())
}

#[tokio::test]
async fn control_api_rejects_bad_requests() -> Result<()> {
    let emu = Emulator::start()?;
    let err = emu.control("PUT", "/_kbha/health-checks/x", Some(&serde_json::json!({"status": "meh"}))).await.expect_err("unknown status");
    assert!(err.to_string().contains("400"), "{err}");
    assert!(emu.control("GET", "/_kbha/nope", None).await.is_err());
    Ok(())
}
