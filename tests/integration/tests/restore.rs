//! The restore test against the emulator, on real data made here: a ChromaDB-shaped SQLite
//! database written through SQLite itself, and a Redis `dump.rdb` plus multi-part AOF
//! written by a real `redis-server` (Debian's package; `.ci/run` installs it) on a
//! loopback port. Damaged variants pass the byte-level verification (the archive is
//! sound, only a file in it is not) and must fail the restore test.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kbha_core::Verdict;
use kbha_integration::replication::{REPLICA, ReplicationWorld, S3Shape, restore_test, s3_event, schedule, tar_gz};
use kbha_lambda::record::Invocation;
use kbha_replication_verifier::ActionTaken;
use serde_json::Value;

const DAY: i64 = 86_400_000;

fn recent() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    (i64::try_from(now).unwrap_or(i64::MAX) - 300) * 1000
}

fn scratch(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kbha-restore-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A ChromaDB-shaped database: its `collections` table, and enough embeddings metadata
/// to span many pages.
fn chroma_sqlite(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join("chroma.sqlite3");
    let db = rusqlite::Connection::open(&path)?;
    db.execute_batch(
        "CREATE TABLE collections (id TEXT PRIMARY KEY, name TEXT NOT NULL, dimension INTEGER);
         INSERT INTO collections VALUES ('c1', 'docs', 384), ('c2', 'faq', 384);
         CREATE TABLE embedding_metadata (id INTEGER, key TEXT, string_value TEXT);
         CREATE INDEX embedding_metadata_key ON embedding_metadata (key);",
    )?;
    let tx = db.unchecked_transaction()?;
    for i in 0..3000 {
        tx.execute("INSERT INTO embedding_metadata VALUES (?1, 'chroma:document', ?2)", (i, format!("document {i} {}", "x".repeat(200))))?;
    }
    tx.commit()?;
    db.close().map_err(|(_, e)| e)?;
    Ok(std::fs::read(&path)?)
}

/// One page of the database overwritten: the file is still a file, the database is not.
fn flip_a_page(mut db: Vec<u8>) -> Vec<u8> {
    let page = 4096 * 20;
    for b in &mut db[page..page + 4096] {
        *b = 0x55;
    }
    db
}

/// A running `redis-server` on a loopback port, in its own directory.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Result<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server is needed for the restore tests: apt-get install redis-server (.ci/run installs it)")?;
        let redis = Redis { child, port, dir: dir.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not listen on 127.0.0.1:{port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    /// Sends one command in RESP and reads the one-line reply.
    fn cmd(&self, args: &[&str]) -> Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        if line.starts_with('-') {
            bail!("redis: {args:?}: {line}");
        }
        Ok(line)
    }

    /// The data directory's files (dump.rdb, appendonlydir/*) as (path, bytes).
    fn files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = vec![("dump.rdb".to_owned(), std::fs::read(self.dir.join("dump.rdb"))?)];
        let aof = self.dir.join("appendonlydir");
        let mut names: Vec<_> =
            std::fs::read_dir(&aof)?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for n in names {
            out.push((format!("appendonlydir/{n}"), std::fs::read(aof.join(&n))?));
        }
        Ok(out)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Real Redis persistence files: a `dump.rdb` from `SAVE`, and the AOF of the writes.
fn redis_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let redis = Redis::start(dir)?;
    redis.cmd(&["SET", "session:1", "alice"])?;
    redis.cmd(&["RPUSH", "queue", "a", "b", "c"])?;
    redis.cmd(&["HSET", "user:1", "name", "alice", "plan", "pro"])?;
    redis.cmd(&["SAVE"])?;
    redis.files()
}

fn refs(files: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    files.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect()
}

/// Uploads both sources' backups and verifies them (the restore test takes verified ones).
async fn verified(w: &ReplicationWorld, stamp: &str, chroma: &[(&str, &[u8])], redis: &[(&str, &[u8])]) -> Result<i64> {
    let a = w.put_backup(&format!("chromadb/{stamp}.tar.gz"), chroma, recent()).await?;
    // chromadb's cross-region copy (same bytes: the archives are deterministic).
    w.emu.put_bytes(REPLICA, &a.key, tar_gz(chroma)?).await?;
    let b = w.put_backup(&format!("redis/{stamp}.tar.gz"), redis, recent()).await?;
    let v = w.verifier(&[]).await?;
    let now = b.last_modified_ms + 60_000;
    let records = v.handle(&s3_event(S3Shape::Direct, &[&a, &b]), Invocation::at(now)).await?;
    assert_eq!(records.iter().map(|r| r.verdict).collect::<Vec<_>>(), vec![Some(Verdict::Ok); 2], "the bytes are sound either way");
    Ok(now)
}

fn attr<'a>(attributes: &'a std::collections::BTreeMap<String, String>, name: &str) -> &'a str {
    attributes.get(name).map_or("", String::as_str)
}

fn file<'a>(record: &'a Value, path: &str) -> &'a Value {
    record["outcome"]["files"].as_array().and_then(|fs| fs.iter().find(|f| f["path"] == path)).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn real_chromadb_and_redis_backups_restore_and_the_test_is_recorded_once() -> Result<()> {
    let dir = scratch("ok")?;
    let db = chroma_sqlite(&dir)?;
    let redis = redis_files(&mkdir(dir.join("redis"))?)?;
    let w = ReplicationWorld::start().await?;
    let segment = [3u8; 8192];
    let now = verified(&w, "b1", &[("chroma.sqlite3", &db), ("segment/data_level0.bin", &segment)], &refs(&redis)).await?;
    let restore_dir = dir.join("restore");
    let v = w.verifier(&[("KBHA_RESTORE_DIR", restore_dir.to_str().unwrap_or_default())]).await?;

    let records = v.handle(&restore_test("run-1", None), Invocation::at(now)).await?;
    let got: Vec<_> = records.iter().map(|r| (r.subject.as_str(), r.action, r.verdict)).collect();
    assert_eq!(
        got,
        vec![
            ("restore:chromadb", ActionTaken::RestoreTested, Some(Verdict::Ok)),
            ("restore:redis", ActionTaken::RestoreTested, Some(Verdict::Ok))
        ],
        "{records:?}"
    );
    let chroma = w.restore_record("chromadb", "run-1").await?.context("chromadb record")?;
    assert_eq!(chroma["key"], "chromadb/b1.tar.gz");
    assert_eq!(file(&chroma, "chroma.sqlite3")["store"], "sqlite");
    assert!(file(&chroma, "chroma.sqlite3")["detail"].as_str().unwrap_or_default().contains("2 collections"), "{chroma}");
    assert_eq!(chroma["outcome"]["restored_bytes"], db.len() + segment.len());
    let redis_rec = w.restore_record("redis", "run-1").await?.context("redis record")?;
    assert_eq!(file(&redis_rec, "dump.rdb")["store"], "redis_rdb", "{redis_rec}");
    let stores: Vec<&str> = redis_rec["outcome"]["files"].as_array().into_iter().flatten().filter_map(|f| f["store"].as_str()).collect();
    assert!(stores.contains(&"redis_aof") && stores.contains(&"aof_manifest"), "Redis 7 writes a multi-part AOF: {stores:?}");
    assert!(redis_rec["outcome"]["files"].as_array().into_iter().flatten().all(|f| f["ok"] == true), "{redis_rec}");
    let status = w.restore_status("redis").await?.context("status")?;
    assert_eq!((status["verdict"].as_str(), status["tested_at_ms"].as_i64()), (Some("ok"), Some(now)));
    assert!(!restore_dir.join("kbha-restore").exists(), "the scratch directory is removed");

    // The same run again (a redelivered schedule) finds its records: no second test.
    let again = v.handle(&restore_test("run-1", Some("redis")), Invocation::at(now + 1000)).await?;
    assert_eq!(again.iter().map(|r| r.action).collect::<Vec<_>>(), vec![ActionTaken::Duplicate]);
    assert!(w.notices(1, 1).await?.is_empty(), "passing tests send no notice");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn damaged_files_in_sound_archives_fail_the_restore_test_then_a_good_backup_clears_it() -> Result<()> {
    let dir = scratch("bad")?;
    let db = chroma_sqlite(&dir)?;
    let redis = redis_files(&mkdir(dir.join("redis"))?)?;
    let rdb = &redis[0].1;
    let w = ReplicationWorld::start().await?;
    let v = w.verifier(&[("KBHA_RESTORE_DIR", dir.to_str().unwrap_or_default())]).await?;

    // A flipped SQLite page, and an RDB cut short.
    let now = verified(&w, "b1", &[("chroma.sqlite3", &flip_a_page(db.clone()))], &[("dump.rdb", &rdb[..rdb.len() - 5])]).await?;
    let records = v.handle(&restore_test("run-1", None), Invocation::at(now)).await?;
    assert_eq!(records.iter().map(|r| r.verdict).collect::<Vec<_>>(), vec![Some(Verdict::Corrupt); 2], "{records:?}");
    let notices = w.notices(2, 5).await?;
    let kinds: Vec<_> = notices.iter().map(|(_, a, _)| (attr(a, "kind"), attr(a, "severity"))).collect();
    assert_eq!(kinds, vec![("restore_corrupt", "critical"); 2]);
    let chroma = w.restore_record("chromadb", "run-1").await?.context("record")?;
    assert_eq!(chroma["notified"], true, "the notice is marked sent: {chroma}");
    assert_eq!(file(&chroma, "chroma.sqlite3")["ok"], false, "{chroma}");

    // A bit flipped inside the RDB: its CRC64 no longer matches.
    let mut flipped = rdb.clone();
    flipped[rdb.len() / 2] ^= 0x10;
    let later = now + 3_600_000;
    // redis backups take their time from S3's LastModified (whole seconds): a later second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = w.put_backup("redis/b2.tar.gz", &[("dump.rdb", &flipped)], recent()).await?;
    v.handle(&s3_event(S3Shape::Direct, &[&b]), Invocation::at(later)).await?;
    let records = v.handle(&restore_test("run-2", Some("redis")), Invocation::at(later)).await?;
    assert_eq!(records[0].verdict, Some(Verdict::Corrupt));
    let rec = w.restore_record("redis", "run-2").await?.context("record")?;
    assert!(file(&rec, "dump.rdb")["detail"].as_str().unwrap_or_default().contains("crc64"), "{rec}");

    // The next good backup restores, and the source's status says so.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = w.put_backup("redis/b3.tar.gz", &[("dump.rdb", rdb)], recent()).await?;
    v.handle(&s3_event(S3Shape::Direct, &[&b]), Invocation::at(later + 1000)).await?;
    v.handle(&restore_test("run-3", Some("redis")), Invocation::at(later + 2000)).await?;
    let status = w.restore_status("redis").await?.context("status")?;
    assert_eq!((status["verdict"].as_str(), status["key"].as_str()), (Some("ok"), Some("redis/b3.tar.gz")), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn a_backup_larger_than_the_scratch_space_is_too_large_and_warned_not_a_crash() -> Result<()> {
    let dir = scratch("large")?;
    let w = ReplicationWorld::start().await?;
    let big = vec![9u8; 64 << 10];
    let now = verified(&w, "b1", &[("segment.bin", &big)], &[("dump.bin", &big)]).await?;
    let v = w.verifier(&[("KBHA_RESTORE_DIR", dir.to_str().unwrap_or_default()), ("KBHA_RESTORE_MAX_BYTES", "10000")]).await?;
    let records = v.handle(&restore_test("run-1", Some("chromadb")), Invocation::at(now)).await?;
    assert_eq!(records[0].verdict, Some(Verdict::Warning));
    let rec = w.restore_record("chromadb", "run-1").await?.context("record")?;
    assert_eq!(rec["outcome"]["verdict"], "too_large", "{rec}");
    let notices = w.notices(1, 5).await?;
    assert_eq!(
        notices.iter().map(|(_, a, _)| (attr(a, "kind"), attr(a, "severity"))).collect::<Vec<_>>(),
        vec![("restore_too_large", "warning")]
    );
    // An unknown source is refused, not retried.
    let e = v.handle(&restore_test("run-2", Some("postgres")), Invocation::at(now)).await.expect_err("unknown source");
    assert!(!e.retryable() && e.to_string().contains("known: chromadb, redis"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn the_scheduled_check_warns_when_a_source_has_no_recent_restore_test() -> Result<()> {
    let dir = scratch("age")?;
    let w = ReplicationWorld::start().await?;
    let plain = [("notes.txt", &b"kept"[..])];
    let now = verified(&w, "b1", &plain, &plain).await?;
    let v = w.verifier(&[("KBHA_RESTORE_DIR", dir.to_str().unwrap_or_default()), ("KBHA_RESTORE_MAX_AGE_DAYS", "7")]).await?;
    let stale = |n: &[(Value, std::collections::BTreeMap<String, String>, String)]| {
        let mut sources: Vec<String> = n
            .iter()
            .filter(|(_, a, _)| attr(a, "kind") == "restore_test_stale")
            .map(|(b, ..)| b["source"].as_str().unwrap_or_default().to_owned())
            .collect();
        sources.sort();
        sources
    };

    // Never tested: both sources warned.
    v.handle(&schedule(now, "tick-1"), Invocation::at(now)).await?;
    assert_eq!(stale(&w.notices(2, 5).await?), ["chromadb", "redis"]);

    // Tested: quiet, and the tick's record shows the last test next to the backup verdict.
    v.handle(&restore_test("run-1", None), Invocation::at(now)).await?;
    let records = v.handle(&schedule(now + 60_000, "tick-2"), Invocation::at(now + 60_000)).await?;
    let shown = serde_json::to_value(&records[0])?;
    assert_eq!(shown["restore_test"]["verdict"], "ok", "{shown}");
    assert!(shown["restore_test"]["duration_ms"].is_u64(), "{shown}");
    assert!(stale(&w.notices(1, 1).await?).is_empty());

    // Eight days on, the tests are too old again (the backups too: the dead-man says so apart).
    let later = now + 8 * DAY;
    v.handle(&schedule(later, "tick-3"), Invocation::at(later)).await?;
    assert_eq!(stale(&w.notices(4, 5).await?), ["chromadb", "redis"]);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn mkdir(path: PathBuf) -> Result<PathBuf> {
    std::fs::create_dir_all(&path)?;
    Ok(path)
}
