//! The restore test's work on one backup: stream-extract it into a scratch directory
//! under a byte budget, then open every file as its data store would
//! ([`crate::datastores`]) and compare the files with the manifest, when there is one.
//!
//! Synchronous and free of AWS (the handler bridges the S3 body onto a blocking thread),
//! so `kbha restore-test --file` and the tests run exactly this on local files.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::datastores::{self, Store};
use crate::manifest::Manifest;
use crate::stream::{Layout, ReadError};

/// The restore test's finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreVerdict {
    /// Every file opened as its data store would open it.
    Ok,
    /// The archive or a file in it cannot be restored.
    Corrupt,
    /// The restored data would not fit the scratch space (`KBHA_RESTORE_MAX_BYTES`): not
    /// tested, which is itself worth a warning (raise the function's ephemeral storage).
    TooLarge,
}

impl RestoreVerdict {
    /// `ok`, `corrupt` or `too_large`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreVerdict::Ok => "ok",
            RestoreVerdict::Corrupt => "corrupt",
            RestoreVerdict::TooLarge => "too_large",
        }
    }
}

/// One restored file and what opening it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredFile {
    /// Path inside the archive (or the file's name for a single-file backup).
    pub path: String,
    /// Bytes restored.
    pub size: u64,
    /// What kind of file it was taken for.
    pub store: Store,
    /// Whether it passed.
    pub ok: bool,
    /// What the check found (or what is wrong).
    pub detail: String,
}

/// What a restore test found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOutcome {
    /// The finding.
    pub verdict: RestoreVerdict,
    /// Why, in one line.
    pub reason: String,
    /// Bytes of the backup object read.
    pub archive_bytes: u64,
    /// Bytes written to the scratch directory.
    pub restored_bytes: u64,
    /// Time to extract, in milliseconds.
    pub extract_ms: u64,
    /// Time to open and check the files, in milliseconds.
    pub check_ms: u64,
    /// Every restored file, in archive order.
    pub files: Vec<RestoredFile>,
}

/// Where to restore and how much room there is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scratch {
    /// Directory the backup is extracted into (created, and removed afterwards).
    pub dir: PathBuf,
    /// Most bytes the restored files may take.
    pub max_bytes: u64,
}

/// A local failure that says nothing about the backup (the scratch directory cannot be
/// written): the test is retried, not judged.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Reading the backup object failed part way.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The scratch directory failed.
    #[error("the scratch directory {dir} failed: {source}; check KBHA_RESTORE_DIR")]
    Scratch {
        /// The directory.
        dir: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// Counts the bytes read and keeps the transport's error, so a failure to read the object
/// is told apart from a damaged archive (both surface as `io::Error` through gzip and tar).
struct Counted<R> {
    inner: R,
    bytes: u64,
    failed: Option<io::Error>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                Err(copy)
            }
        }
    }
}

/// Why extraction stopped early.
enum Stop {
    /// The archive is damaged or unsafe: the verdict is `corrupt`.
    Corrupt(String),
    /// The budget ran out (or the disk filled).
    TooLarge(String),
    /// The scratch directory failed.
    Scratch(io::Error),
}

/// Restores `reader` (the backup object, laid out as `layout`; `name` is the key's last
/// part) into `scratch` and checks what came out. The scratch directory is emptied before
/// and removed after, whatever happens.
pub fn restore_test(
    reader: impl Read,
    layout: Layout,
    name: &str,
    manifest: Option<&Manifest>,
    scratch: &Scratch,
) -> Result<RestoreOutcome, RestoreError> {
    let scratch_err = |source: io::Error| RestoreError::Scratch { dir: scratch.dir.display().to_string(), source };
    // A warm instance may hold a previous test's files (a timeout ends it mid-way).
    remove_dir(&scratch.dir).map_err(scratch_err)?;
    fs::create_dir_all(&scratch.dir).map_err(scratch_err)?;
    let result = run(reader, layout, name, manifest, scratch);
    let cleaned = remove_dir(&scratch.dir);
    let outcome = result?;
    if let Err(e) = cleaned {
        // The outcome stands; the next test empties the directory first.
        tracing::warn!(dir = %scratch.dir.display(), "restore scratch directory not removed: {e}");
    }
    Ok(outcome)
}

fn remove_dir(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn run(
    reader: impl Read,
    layout: Layout,
    name: &str,
    manifest: Option<&Manifest>,
    scratch: &Scratch,
) -> Result<RestoreOutcome, RestoreError> {
    let started = Instant::now();
    let mut src = Counted { inner: reader, bytes: 0, failed: None };
    let mut files: Vec<(String, u64)> = Vec::new();
    let mut restored = 0u64;
    let single = name.strip_suffix(".gz").or_else(|| name.strip_suffix(".GZ")).unwrap_or(name);
    let stopped = match layout {
        Layout::TarGz => extract_tar(
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 << 10, &mut src)),
            scratch,
            &mut files,
            &mut restored,
        ),
        Layout::Tar => extract_tar(BufReader::with_capacity(256 << 10, &mut src), scratch, &mut files, &mut restored),
        Layout::Gz => extract_one(
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 << 10, &mut src)),
            single,
            scratch,
            &mut files,
            &mut restored,
        ),
        Layout::Opaque => extract_one(&mut src, name, scratch, &mut files, &mut restored),
    };
    // Whatever the walk made of it, a transport failure is a read error, not a verdict.
    if let Some(source) = src.failed.take() {
        return Err(ReadError { bytes: src.bytes, source }.into());
    }
    let extract_ms = elapsed_ms(started);
    let done = |verdict, reason: String, files: Vec<RestoredFile>, check_ms| RestoreOutcome {
        verdict,
        reason,
        archive_bytes: src.bytes,
        restored_bytes: restored,
        extract_ms,
        check_ms,
        files,
    };
    match stopped {
        Err(Stop::Scratch(source)) => return Err(RestoreError::Scratch { dir: scratch.dir.display().to_string(), source }),
        Err(Stop::Corrupt(problem)) => return Ok(done(RestoreVerdict::Corrupt, problem, Vec::new(), 0)),
        Err(Stop::TooLarge(problem)) => return Ok(done(RestoreVerdict::TooLarge, problem, Vec::new(), 0)),
        Ok(()) => {}
    }
    let checking = Instant::now();
    let mut results = Vec::with_capacity(files.len());
    for (path, size) in &files {
        let on_disk = scratch.dir.join(path);
        let head = read_head(&on_disk).map_err(|source| RestoreError::Scratch { dir: scratch.dir.display().to_string(), source })?;
        let file_name = Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or(path);
        let store = datastores::classify(file_name, &head);
        let (ok, detail) = match datastores::check(store, &on_disk) {
            Ok(detail) => (true, detail),
            Err(problem) => (false, problem),
        };
        results.push(RestoredFile { path: path.clone(), size: *size, store, ok, detail });
    }
    if let Some(m) = manifest {
        compare_with_manifest(m, &mut results);
    }
    let check_ms = elapsed_ms(checking);
    let failed: Vec<&RestoredFile> = results.iter().filter(|f| !f.ok).collect();
    let (verdict, reason) = if results.is_empty() {
        (RestoreVerdict::Corrupt, "the backup holds no file to restore".to_owned())
    } else if let Some(first) = failed.first() {
        let more = if failed.len() > 1 { format!(" (and {} more)", failed.len() - 1) } else { String::new() };
        (RestoreVerdict::Corrupt, format!("{}: {}{more}", first.path, first.detail))
    } else {
        let opened = results.iter().filter(|f| f.store != Store::Other).count();
        (RestoreVerdict::Ok, format!("{} files restored ({} bytes), {opened} opened as their data store would", results.len(), restored))
    };
    Ok(done(verdict, reason, results, check_ms))
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Up to the first 16 bytes of a file: enough for every magic number the checks know.
fn read_head(path: &Path) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(16);
    File::open(path)?.take(16).read_to_end(&mut head)?;
    Ok(head)
}

/// Files the manifest lists must have been restored with its size; a file it does not
/// list is reported, as the backup is not what its manifest says.
fn compare_with_manifest(m: &Manifest, results: &mut Vec<RestoredFile>) {
    let norm = |p: &str| p.trim_start_matches("./").to_owned();
    for f in results.iter_mut() {
        match m.files.iter().find(|mf| norm(&mf.path) == norm(&f.path)) {
            Some(mf) if mf.size != f.size => {
                f.ok = false;
                f.detail = format!("restored {} bytes where the manifest says {}", f.size, mf.size);
            }
            Some(_) => {}
            None => {
                f.ok = false;
                f.detail = "not listed in the backup's manifest".into();
            }
        }
    }
    for mf in &m.files {
        if !results.iter().any(|f| norm(&f.path) == norm(&mf.path)) {
            results.push(RestoredFile {
                path: norm(&mf.path),
                size: 0,
                store: Store::Other,
                ok: false,
                detail: format!("listed in the manifest ({} bytes) but not in the backup", mf.size),
            });
        }
    }
}

/// A relative path inside the scratch directory, or why the entry's path is refused
/// (absolute, or climbing out with `..`: never written outside the directory).
fn safe_path(raw: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!("archive entry `{}` would be written outside the restore directory", raw.display()));
            }
        }
    }
    Ok(out)
}

fn extract_tar(reader: impl Read, scratch: &Scratch, files: &mut Vec<(String, u64)>, restored: &mut u64) -> Result<(), Stop> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| Stop::Corrupt(format!("tar: {e}")))?;
    for (i, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| Stop::Corrupt(format!("tar entry {i}: {e}")))?;
        let raw = entry.path().map_err(|e| Stop::Corrupt(format!("tar entry {i}: {e}")))?.into_owned();
        let rel = safe_path(&raw).map_err(Stop::Corrupt)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(scratch.dir.join(&rel)).map_err(Stop::Scratch)?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let path = rel.to_string_lossy().into_owned();
            write_file(&mut entry, &rel, &path, scratch, files, restored)?;
        }
        // Links and special files are not data a store opens; they are not restored.
    }
    Ok(())
}

fn extract_one(reader: impl Read, name: &str, scratch: &Scratch, files: &mut Vec<(String, u64)>, restored: &mut u64) -> Result<(), Stop> {
    let rel = safe_path(Path::new(name)).map_err(Stop::Corrupt)?;
    let rel = if rel.as_os_str().is_empty() { PathBuf::from("backup") } else { rel };
    let path = rel.to_string_lossy().into_owned();
    write_file(reader, &rel, &path, scratch, files, restored)
}

/// Copies one file under the budget. Reading errors are the archive's (corrupt); writing
/// errors are the scratch directory's, except a full disk, which is `too_large`.
fn write_file(
    mut from: impl Read,
    rel: &Path,
    path: &str,
    scratch: &Scratch,
    files: &mut Vec<(String, u64)>,
    restored: &mut u64,
) -> Result<(), Stop> {
    let dest = scratch.dir.join(rel);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(Stop::Scratch)?;
    }
    let mut out = File::create(&dest).map_err(Stop::Scratch)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut size = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stop::Corrupt(format!("{path}: {e}"))),
        };
        if *restored + n as u64 > scratch.max_bytes {
            return Err(Stop::TooLarge(format!(
                "the restored files pass KBHA_RESTORE_MAX_BYTES ({} bytes) while writing {path}; raise the function's ephemeral storage and the setting",
                scratch.max_bytes
            )));
        }
        out.write_all(&buf[..n]).map_err(|e| full_or_scratch(e, path))?;
        size += n as u64;
        *restored += n as u64;
    }
    out.flush().map_err(|e| full_or_scratch(e, path))?;
    files.push((path.to_owned(), size));
    Ok(())
}

fn full_or_scratch(e: io::Error, path: &str) -> Stop {
    if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded {
        Stop::TooLarge(format!("the scratch directory filled up while writing {path}: {e}; raise the function's ephemeral storage"))
    } else {
        Stop::Scratch(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str, max_bytes: u64) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kbha-restore-unit-{tag}-{}", std::process::id()));
        Scratch { dir, max_bytes }
    }

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).expect("append");
        }
        b.into_inner().expect("tar").finish().expect("gzip")
    }

    fn rdb() -> Vec<u8> {
        let mut body = b"REDIS0010".to_vec();
        body.extend_from_slice(&[0xFE, 0x00, 0xFF]);
        let crc = datastores::crc64(0, &body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    #[test]
    fn a_sound_archive_restores_and_its_files_open() {
        let s = scratch("ok", 1 << 20);
        let archive = tar_gz(&[("redis/dump.rdb", &rdb()), ("./notes.txt", b"hello")]);
        let out = restore_test(&archive[..], Layout::TarGz, "b.tar.gz", None, &s).expect("restored");
        assert_eq!(out.verdict, RestoreVerdict::Ok, "{out:?}");
        assert_eq!(out.archive_bytes, archive.len() as u64);
        assert_eq!(out.restored_bytes, rdb().len() as u64 + 5);
        assert_eq!(out.files[0].store, Store::RedisRdb);
        assert_eq!(out.files[1].path, "notes.txt");
        assert!(!s.dir.exists(), "the scratch directory is removed");
    }

    #[test]
    fn a_damaged_file_or_archive_is_corrupt() {
        let s = scratch("bad", 1 << 20);
        let mut bad = rdb();
        bad[10] ^= 1;
        let out = restore_test(&tar_gz(&[("dump.rdb", &bad)])[..], Layout::TarGz, "b.tgz", None, &s).expect("ran");
        assert_eq!(out.verdict, RestoreVerdict::Corrupt);
        assert!(out.reason.starts_with("dump.rdb: "), "{}", out.reason);
        let mut cut = tar_gz(&[("dump.rdb", &rdb()), ("big", &[7u8; 100_000])]);
        cut.truncate(cut.len() / 2);
        let out = restore_test(&cut[..], Layout::TarGz, "b.tgz", None, &s).expect("ran");
        assert_eq!(out.verdict, RestoreVerdict::Corrupt, "{out:?}");
    }

    #[test]
    fn more_than_the_budget_is_too_large_not_a_crash() {
        let s = scratch("big", 10_000);
        let out = restore_test(&tar_gz(&[("a", &[1u8; 6000]), ("b", &[2u8; 6000])])[..], Layout::TarGz, "b.tgz", None, &s).expect("ran");
        assert_eq!(out.verdict, RestoreVerdict::TooLarge);
        assert!(out.reason.contains("KBHA_RESTORE_MAX_BYTES"), "{}", out.reason);
        assert!(!s.dir.exists());
    }

    #[test]
    fn the_manifest_must_match_what_was_restored() {
        let s = scratch("manifest", 1 << 20);
        let archive = tar_gz(&[("a.txt", b"12345"), ("extra.txt", b"x")]);
        let m = Manifest::parse(
            br#"{"version":1,"files":[{"path":"a.txt","size":4,"sha256":"00"},{"path":"gone.txt","size":1,"sha256":"00"}]}"#,
        )
        .expect("manifest");
        let out = restore_test(&archive[..], Layout::TarGz, "b.tgz", Some(&m), &s).expect("ran");
        assert_eq!(out.verdict, RestoreVerdict::Corrupt);
        let detail = |p: &str| out.files.iter().find(|f| f.path == p).map(|f| f.detail.clone()).unwrap_or_default();
        assert!(detail("a.txt").contains("manifest says 4"), "{out:?}");
        assert!(detail("extra.txt").contains("not listed"), "{out:?}");
        assert!(detail("gone.txt").contains("not in the backup"), "{out:?}");
    }

    #[test]
    fn entries_cannot_escape_the_directory() {
        assert!(safe_path(Path::new("../etc/passwd")).is_err());
        assert!(safe_path(Path::new("/etc/passwd")).is_err());
        assert_eq!(safe_path(Path::new("./a/./b")), Ok(PathBuf::from("a/b")));
    }

    #[test]
    fn single_file_backups_restore_under_their_name() {
        let s = scratch("single", 1 << 20);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&rdb()).expect("gzip");
        let out = restore_test(&gz.finish().expect("gzip")[..], Layout::Gz, "dump.rdb.gz", None, &s).expect("ran");
        assert_eq!(out.verdict, RestoreVerdict::Ok, "{out:?}");
        assert_eq!(out.files[0].path, "dump.rdb");
        let out = restore_test(&rdb()[..], Layout::Opaque, "dump.rdb", None, &s).expect("ran");
        assert_eq!((out.verdict, out.files[0].store), (RestoreVerdict::Ok, Store::RedisRdb));
    }

    #[test]
    fn a_transport_failure_is_a_read_error_not_a_verdict() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
            }
        }
        let s = scratch("broken", 1 << 20);
        assert!(matches!(restore_test(Broken, Layout::TarGz, "b.tgz", None, &s), Err(RestoreError::Read(_))));
    }
}
