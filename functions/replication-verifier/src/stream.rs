//! One streaming pass over a backup: SHA-256 of the object's bytes, and, for archives,
//! a walk through gzip and tar that reads every entry (and hashes each file when a
//! manifest wants it). Memory stays bounded by the read buffers whatever the object size.
//!
//! The reader is synchronous (the handler bridges the S3 body onto a blocking thread), so
//! this module is pure apart from reading, and its tests feed it bytes from memory.

use std::collections::BTreeMap;
use std::io::{self, Read};

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

/// Hashes everything that passes through, and remembers a transport error so it is not
/// mistaken for a damaged archive.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    transport_error: Option<io::Error>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                // Keep the original; hand the decoder a copy of its kind and text.
                let copy = io::Error::new(e.kind(), e.to_string());
                self.transport_error = Some(e);
                Err(copy)
            }
        }
    }
}

/// Reads `reader` to its end once. `hash_files` hashes each tar entry (for a manifest).
pub fn scan(reader: impl Read, layout: Layout, hash_files: bool) -> Result<StreamFacts, ReadError> {
    let mut hashing = Hashing { inner: reader, hasher: Sha256::new(), bytes: 0, transport_error: None };
    let mut files = BTreeMap::new();
    let archive = match layout {
        Layout::TarGz => walk_tar(flate2::read::MultiGzDecoder::new(&mut hashing), hash_files, &mut files),
        Layout::Tar => walk_tar(&mut hashing, hash_files, &mut files),
        Layout::Gz => match io::copy(&mut flate2::read::MultiGzDecoder::new(&mut hashing), &mut io::sink()) {
            Ok(_) => ArchiveCheck::Valid { entries: 1 },
            Err(e) => ArchiveCheck::Invalid { problem: format!("gzip: {e}") },
        },
        Layout::Opaque => ArchiveCheck::NotArchive,
    };
    // The hash covers the whole object, including anything after the archive's end.
    let drained = io::copy(&mut hashing, &mut io::sink());
    if let Some(source) = hashing.transport_error.take() {
        return Err(ReadError { bytes: hashing.bytes, source });
    }
    if let Err(source) = drained {
        return Err(ReadError { bytes: hashing.bytes, source });
    }
    Ok(StreamFacts { sha256: hex::encode(hashing.hasher.finalize()), bytes: hashing.bytes, archive, files })
}

fn walk_tar<R: Read>(reader: R, hash_files: bool, files: &mut BTreeMap<String, FileDigest>) -> ArchiveCheck {
    let mut archive = tar::Archive::new(reader);
    let mut entries = 0u64;
    let walk = (|| -> io::Result<()> {
        for entry in archive.entries()? {
            let mut entry = entry?;
            entries += 1;
            let path = entry.path()?.to_string_lossy().trim_start_matches("./").to_owned();
            let is_file = entry.header().entry_type().is_file();
            let mut hasher = hash_files.then(Sha256::new);
            let mut buf = [0u8; 64 * 1024];
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
