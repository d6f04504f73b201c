//! One streaming pass over a backup: SHA-256 of the object's bytes, and, for archives,
//! a walk through gzip and tar that reads every entry (and hashes each file when a
//! manifest wants it). Memory stays bounded by the read buffers whatever the object size.
//!
//! The reader is synchronous (the handler bridges the S3 body onto a blocking thread), so
//! this module is pure apart from reading, and its tests feed it bytes from memory.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use kbha_core::ArchiveCheck;
use sha2::{Digest, Sha256};

/// How to read an object, chosen from its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `.tar.gz` / `.tgz`: gzip around tar.
    TarGz,
    /// `.tar`: plain tar.
    Tar,
    /// `.gz` (not tar): gzip only; the decompressed bytes are read through.
    Gz,
    /// Anything else: only hashed.
    Opaque,
}

impl Layout {
    /// The layout a key's extension announces.
    pub fn of_key(key: &str) -> Layout {
        let k = key.to_ascii_lowercase();
        if k.ends_with(".tar.gz") || k.ends_with(".tgz") {
            Layout::TarGz
        } else if k.ends_with(".tar") {
            Layout::Tar
        } else if k.ends_with(".gz") {
            Layout::Gz
        } else {
            Layout::Opaque
        }
    }
}

/// One file found in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of its content, when files were hashed.
    pub sha256: Option<String>,
}

/// What one pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFacts {
    /// Hex SHA-256 of every byte of the object.
    pub sha256: String,
    /// Bytes read.
    pub bytes: u64,
    /// The archive walk.
    pub archive: ArchiveCheck,
    /// Regular files in the archive by path (empty unless it is a tar).
    pub files: BTreeMap<String, FileDigest>,
}

/// Reading the object itself failed (network, S3): not a verdict on the backup, retry.
#[derive(Debug, thiserror::Error)]
#[error("reading the object failed after {bytes} bytes: {source}")]
pub struct ReadError {
    /// Bytes read before the failure.
    pub bytes: u64,
    /// The I/O error from the transport.
    #[source]
    pub source: io::Error,
}

/// Bytes per chunk handed from the reading thread to the archive walk.
const CHUNK: usize = 256 << 10;
/// Chunks queued for the walk; with the one each side holds, at most
/// `IN_FLIGHT + 2` chunks (1.5 MiB) exist whatever the object size.
const IN_FLIGHT: usize = 4;

/// The walk's side of the pipe: chunks in order, each handed back for reuse once read.
struct Chunks {
    full: Receiver<Vec<u8>>,
    empty: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Chunks {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.cur.len() {
            // The reader hung up: end of object (or a transport error, which `scan`
            // reports itself, so the walk's verdict is not taken for the backup's).
            let Ok(next) = self.full.recv() else { return Ok(&[]) };
            let done = std::mem::replace(&mut self.cur, next);
            self.pos = 0;
            let _ = self.empty.try_send(done);
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.cur.len());
    }
}

/// Reads `reader` to its end once. `hash_files` hashes each tar entry (for a manifest).
///
/// Archives are walked on a second thread: this one reads and hashes the object's bytes
/// and hands them over in chunks, so SHA-256 and inflating run side by side (kbha bench:
/// verification throughput). Every byte is hashed whatever the walk finds, including
/// anything after the archive's end.
pub fn scan(mut reader: impl Read, layout: Layout, hash_files: bool) -> Result<StreamFacts, ReadError> {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut files = BTreeMap::new();
    let mut failed = None;
    let archive = std::thread::scope(|s| {
        let (full_tx, full) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (empty, empty_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
        let files = &mut files;
        let walk = (layout != Layout::Opaque).then(|| {
            s.spawn(move || {
                let chunks = Chunks { full, empty, cur: Vec::new(), pos: 0 };
                match layout {
                    Layout::TarGz => walk_tar(flate2::bufread::MultiGzDecoder::new(chunks), hash_files, files),
                    Layout::Tar => walk_tar(chunks, hash_files, files),
                    Layout::Gz => match io::copy(&mut flate2::bufread::MultiGzDecoder::new(chunks), &mut io::sink()) {
                        Ok(_) => ArchiveCheck::Valid { entries: 1 },
                        Err(e) => ArchiveCheck::Invalid { problem: format!("gzip: {e}") },
                    },
                    Layout::Opaque => ArchiveCheck::NotArchive,
                }
            })
        });
        let mut to_walk = walk.is_some().then_some(full_tx);
        let mut spare = vec![0u8; CHUNK];
        loop {
            let mut buf = std::mem::take(&mut spare);
            buf.resize(CHUNK, 0);
            let (n, error) = fill(&mut reader, &mut buf);
            if let Some(e) = error {
                // Counted, not walked: the verdict is the transport's.
                hasher.update(&buf[..n]);
                bytes += n as u64;
                failed = Some(e);
                break;
            }
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
            buf.truncate(n);
            // A walk that has finished (a damaged archive ends it early) takes no more;
            // the rest is still hashed.
            spare = match &to_walk {
                Some(tx) => match tx.send(buf) {
                    Ok(()) => empty_rx.try_recv().unwrap_or_default(),
                    Err(std::sync::mpsc::SendError(back)) => {
                        to_walk = None;
                        back
                    }
                },
                None => buf,
            };
        }
        // Hanging up is the walk's end of input.
        drop(to_walk);
        match walk.map(|w| w.join()) {
            None => ArchiveCheck::NotArchive,
            Some(Ok(check)) => check,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
        }
    });
    if let Some(source) = failed {
        return Err(ReadError { bytes, source });
    }
    Ok(StreamFacts { sha256: hex::encode(hasher.finalize()), bytes, archive, files })
}

/// Reads until `buf` is full or the object ends (fewer, larger chunks for the walk);
/// on a transport error, also how many bytes arrived before it.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

fn walk_tar<R: Read>(reader: R, hash_files: bool, files: &mut BTreeMap<String, FileDigest>) -> ArchiveCheck {
    let mut archive = tar::Archive::new(reader);
    let mut entries = 0u64;
    // One buffer for every entry; large reads let the inflater write long runs.
    let mut buf = vec![0u8; CHUNK];
    let walk = (|| -> io::Result<()> {
        for entry in archive.entries()? {
            let mut entry = entry?;
            entries += 1;
            let path = entry.path()?.to_string_lossy().trim_start_matches("./").to_owned();
            let is_file = entry.header().entry_type().is_file();
            let mut hasher = hash_files.then(Sha256::new);
            let mut size = 0u64;
            loop {
                let n = entry.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                size += n as u64;
                if let Some(h) = hasher.as_mut() {
                    h.update(&buf[..n]);
                }
            }
            if size != entry.size() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("`{path}` ends after {size} of {} bytes", entry.size())));
            }
            if is_file {
                files.insert(path, FileDigest { size, sha256: hasher.map(|h| hex::encode(h.finalize())) });
            }
        }
        Ok(())
    })();
    if let Err(e) = walk {
        return ArchiveCheck::Invalid { problem: format!("tar entry {}: {e}", entries.max(1)) };
    }
    if entries == 0 {
        return ArchiveCheck::Invalid { problem: "the archive has no entries".into() };
    }
    // Read what follows the end-of-archive marker so gzip checks its CRC and length.
    let mut rest = archive.into_inner();
    match io::copy(&mut rest, &mut io::sink()) {
        Ok(_) => ArchiveCheck::Valid { entries },
        Err(e) => ArchiveCheck::Invalid { problem: format!("after {entries} tar entries: {e}") },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    /// A `.tar.gz` holding `files` (path, content).
    pub(crate) fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (path, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *content).expect("append");
        }
        builder.into_inner().and_then(|gz| gz.finish()).expect("finish")
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    #[test]
    fn a_good_archive_is_valid_and_hashed_whole() {
        let bytes = tar_gz(&[("chroma.sqlite3", b"rows"), ("index/seg-1.bin", b"vectors")]);
        let facts = scan(&bytes[..], Layout::TarGz, true).expect("reads");
        assert_eq!(facts.archive, ArchiveCheck::Valid { entries: 2 });
        assert_eq!(facts.sha256, sha(&bytes));
        assert_eq!(facts.bytes, bytes.len() as u64);
        assert_eq!(facts.files["index/seg-1.bin"], FileDigest { size: 7, sha256: Some(sha(b"vectors")) });
    }

    #[test]
    fn a_truncated_archive_is_invalid() {
        let bytes = tar_gz(&[("a", &[7u8; 100_000][..])]);
        let cut = &bytes[..bytes.len() / 2];
        let facts = scan(cut, Layout::TarGz, false).expect("reads");
        assert!(matches!(facts.archive, ArchiveCheck::Invalid { .. }), "{:?}", facts.archive);
        assert_eq!(facts.sha256, sha(cut));
    }

    #[test]
    fn flipped_bytes_are_caught_by_gzip() {
        let mut bytes = tar_gz(&[("a", b"some content that compresses"), ("b", b"more")]);
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        let facts = scan(&bytes[..], Layout::TarGz, false).expect("reads");
        assert!(matches!(facts.archive, ArchiveCheck::Invalid { .. }), "{:?}", facts.archive);
    }

    #[test]
    fn not_gzip_at_all_is_invalid() {
        let facts = scan(&b"this is not gzip"[..], Layout::TarGz, false).expect("reads");
        assert!(matches!(facts.archive, ArchiveCheck::Invalid { .. }));
        let facts = scan(&b""[..], Layout::TarGz, false).expect("reads");
        assert!(matches!(facts.archive, ArchiveCheck::Invalid { .. }), "empty: {:?}", facts.archive);
    }

    #[test]
    fn opaque_objects_are_only_hashed() {
        let facts = scan(&b"redis dump"[..], Layout::Opaque, false).expect("reads");
        assert_eq!(facts.archive, ArchiveCheck::NotArchive);
        assert_eq!(facts.sha256, sha(b"redis dump"));
    }

    #[test]
    fn layouts_come_from_the_extension() {
        assert_eq!(Layout::of_key("a/b.TAR.GZ"), Layout::TarGz);
        assert_eq!(Layout::of_key("a/b.tgz"), Layout::TarGz);
        assert_eq!(Layout::of_key("a/b.tar"), Layout::Tar);
        assert_eq!(Layout::of_key("a/dump.rdb.gz"), Layout::Gz);
        assert_eq!(Layout::of_key("a/dump.rdb"), Layout::Opaque);
    }

    /// Incompressible bytes, so the archive spans many of the pipe's chunks.
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn an_archive_damaged_early_is_still_hashed_to_its_last_byte() {
        // Larger than all chunks in flight: the walk stops at the damage while the
        // reader still has most of the object to hash.
        let big = noise((IN_FLIGHT + 4) * CHUNK);
        let mut bytes = tar_gz(&[("a.bin", &big[..]), ("b.bin", b"tail")]);
        let good = scan(&bytes[..], Layout::TarGz, true).expect("reads");
        assert_eq!(good.archive, ArchiveCheck::Valid { entries: 2 });
        assert_eq!(good.files["a.bin"].sha256.as_deref(), Some(sha(&big).as_str()));
        bytes[4096] ^= 0xff;
        let facts = scan(&bytes[..], Layout::TarGz, false).expect("reads");
        assert!(matches!(facts.archive, ArchiveCheck::Invalid { .. }), "{:?}", facts.archive);
        assert_eq!(facts.sha256, sha(&bytes));
        assert_eq!(facts.bytes, bytes.len() as u64);
    }

    /// A reader that fails like a reset connection half way.
    struct Resetting(Vec<u8>, usize);
    impl Read for Resetting {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1 >= self.0.len() / 2 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer"));
            }
            let n = buf.len().min(self.0.len() / 2 - self.1).min(1024);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn a_transport_failure_is_an_error_not_a_corrupt_archive() {
        let bytes = tar_gz(&[("a", &[1u8; 50_000][..])]);
        let e = scan(Resetting(bytes, 0), Layout::TarGz, false).expect_err("must be rejected");
        assert_eq!(e.source.kind(), io::ErrorKind::ConnectionReset);
    }
}
