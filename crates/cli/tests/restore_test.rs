//! `kbha restore-test --file` through the binary: a local backup restores and its files
//! open, or the command fails naming the file and the problem.

use std::io::Write;
use std::process::{Command, Output};

use anyhow::{Context, Result};

fn kbha(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_kbha")).args(args).output().context("run kbha")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A valid RDB: header, select-db, EOF, then Redis's CRC-64 of all of it.
fn rdb() -> Vec<u8> {
    let mut body = b"REDIS0010".to_vec();
    body.extend_from_slice(&[0xFE, 0x00, 0xFF]);
    let crc = kbha_replication_verifier::datastores::crc64(0, &body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

fn tar_gz(files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, *data)?;
    }
    let mut gz = b.into_inner()?;
    gz.flush()?;
    Ok(gz.finish()?)
}

#[test]
fn a_local_backup_restores_or_the_command_fails_naming_the_file() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("kbha-restore-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let good = dir.join("redis-good.tar.gz");
    std::fs::write(&good, tar_gz(&[("dump.rdb", &rdb())])?)?;
    let out = kbha(&["restore-test", "--file", good.to_str().context("path")?])?;
    assert!(out.status.success(), "{}", text(&out));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!((outcome["verdict"].as_str(), outcome["files"][0]["store"].as_str()), (Some("ok"), Some("redis_rdb")), "{outcome}");

    let mut cut = rdb();
    cut.truncate(cut.len() - 3);
    let bad = dir.join("redis-bad.tar.gz");
    std::fs::write(&bad, tar_gz(&[("dump.rdb", &cut)])?)?;
    let out = kbha(&["restore-test", "--file", bad.to_str().context("path")?])?;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("dump.rdb: ") && text(&out).contains("did not pass (corrupt)"), "{}", text(&out));

    let out = kbha(&["restore-test", "--file", good.to_str().context("path")?, "--max-bytes", "10"])?;
    assert!(!out.status.success() && text(&out).contains("too_large"), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
