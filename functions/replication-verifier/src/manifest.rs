//! Backup manifests and checksum sidecars: what a backup says about itself.
//!
//! A manifest is `<backup key>.manifest.json` next to the backup, listing each file of
//! the archive with its size and SHA-256 (as PostgreSQL's `backup_manifest` does for
//! `pg_verifybackup`), and optionally the archive's own hash and the time the backup was
//! taken:
//!
//! ```json
//! {"version": 1, "created_at": "2026-11-26T10:00:00Z",
//!  "archive": {"sha256": "<hex>", "size": 1048576},
//!  "files": [{"path": "chroma.sqlite3", "size": 524288, "sha256": "<hex>"}]}
//! ```
//!
//! A sidecar is `<backup key>.sha256` in `sha256sum` format (`<hex>  <name>`).

use std::collections::BTreeMap;

use kbha_core::time::parse_timestamp;
use kbha_core::{ManifestCheck, TimestampMs};
use serde::Deserialize;

use crate::stream::FileDigest;

/// Suffix of a manifest next to its backup.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Suffix of a `sha256sum` sidecar next to its backup.
pub const SIDECAR_SUFFIX: &str = ".sha256";

/// Whether `key` is a manifest or sidecar rather than a backup.
pub fn is_companion(key: &str) -> bool {
    key.ends_with(MANIFEST_SUFFIX) || key.ends_with(SIDECAR_SUFFIX)
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version; 1.
    pub version: u32,
    /// When the backup was taken (ISO 8601); the backup's age counts from it.
    #[serde(default)]
    pub created_at: Option<String>,
    /// The archive object itself.
    #[serde(default)]
    pub archive: Option<ArchiveEntry>,
    /// Every file in the archive.
    pub files: Vec<ManifestFile>,
}

/// The archive object's expected hash and size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveEntry {
    /// Hex SHA-256.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
}

/// One file the archive must contain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Path inside the archive (a leading `./` is ignored).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

impl Manifest {
    /// Parses a manifest object; the error says what is wrong, for the verdict.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid: {e}"))?;
        if m.version != 1 {
            return Err(format!("manifest version {} is not supported (expected 1)", m.version));
        }
        Ok(m)
    }

    /// `created_at` as a timestamp, when present and valid.
    pub fn created_at_ms(&self) -> Result<Option<TimestampMs>, String> {
        self.created_at.as_deref().map(|t| parse_timestamp(t).map_err(|e| format!("manifest `created_at`: {e}"))).transpose()
    }

    /// Compares the files found in the archive with the manifest: every listed file with
    /// the same size and hash, and no file the manifest does not list.
    pub fn check(&self, found: &BTreeMap<String, FileDigest>) -> ManifestCheck {
        let mut problems = Vec::new();
        let mut listed = std::collections::BTreeSet::new();
        for f in &self.files {
            let path = f.path.trim_start_matches("./");
            listed.insert(path);
            match found.get(path) {
                None => problems.push(format!("`{path}` is listed but not in the archive")),
                Some(d) if d.size != f.size => problems.push(format!("`{path}` has {} bytes, manifest says {}", d.size, f.size)),
                Some(d) if d.sha256.as_deref() != Some(f.sha256.to_ascii_lowercase().as_str()) => {
                    problems.push(format!("`{path}` checksum differs from the manifest"));
                }
                Some(_) => {}
            }
        }
        for path in found.keys() {
            if !listed.contains(path.as_str()) {
                problems.push(format!("`{path}` is in the archive but not in the manifest"));
            }
        }
        if problems.is_empty() {
            ManifestCheck::Valid { files: u32::try_from(self.files.len()).unwrap_or(u32::MAX) }
        } else {
            ManifestCheck::Invalid { problems }
        }
    }
}

/// The hash in a `sha256sum` sidecar (first field), lowercase.
pub fn parse_sidecar(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "checksum sidecar is not text".to_owned())?;
    let hash = text.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash)
    } else {
        Err(format!("checksum sidecar does not start with a SHA-256 in hex: `{}`", text.chars().take(80).collect::<String>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(entries: &[(&str, u64, &str)]) -> BTreeMap<String, FileDigest> {
        entries.iter().map(|(p, s, h)| ((*p).to_owned(), FileDigest { size: *s, sha256: Some((*h).to_owned()) })).collect()
    }

    fn manifest(files: &[(&str, u64, &str)]) -> Manifest {
        Manifest {
            version: 1,
            created_at: None,
            archive: None,
            files: files.iter().map(|(p, s, h)| ManifestFile { path: (*p).into(), size: *s, sha256: (*h).into() }).collect(),
        }
    }

    #[test]
    fn matching_files_are_valid() {
        let m = manifest(&[("./a", 1, "AA"), ("b", 2, "bb")]);
        assert_eq!(m.check(&found(&[("a", 1, "aa"), ("b", 2, "bb")])), ManifestCheck::Valid { files: 2 });
    }

    #[test]
    fn every_kind_of_difference_is_reported() {
        let m = manifest(&[("a", 1, "aa"), ("b", 2, "bb"), ("c", 3, "cc")]);
        let ManifestCheck::Invalid { problems } = m.check(&found(&[("a", 9, "aa"), ("b", 2, "xx"), ("d", 4, "dd")])) else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("`a` has 9 bytes"));
        assert!(problems[1].contains("`b` checksum"));
        assert!(problems[2].contains("`c` is listed"));
        assert!(problems[3].contains("`d` is in the archive"));
    }

    #[test]
    fn manifests_parse_strictly() {
        let ok = br#"{"version":1,"created_at":"2026-11-26T10:00:00Z","archive":{"sha256":"ab"},"files":[]}"#;
        let m = Manifest::parse(ok).expect("parses");
        assert_eq!(m.created_at_ms(), Ok(Some(kbha_core::time::parse_timestamp("2026-11-26T10:00:00Z").expect("ts"))));
        assert!(Manifest::parse(br#"{"version":2,"files":[]}"#).expect_err("must be rejected").contains("version 2"));
        assert!(Manifest::parse(br#"{"version":1,"files":[],"extra":1}"#).is_err());
        assert!(Manifest::parse(b"not json").is_err());
    }

    #[test]
    fn sidecars_give_the_first_field() {
        let h = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(parse_sidecar(format!("{h}  backup.tar.gz\n").as_bytes()), Ok(h.to_ascii_lowercase()));
        assert!(parse_sidecar(b"nothing here").is_err());
    }

    #[test]
    fn companions_are_not_backups() {
        assert!(is_companion("x/b.tar.gz.manifest.json"));
        assert!(is_companion("x/b.tar.gz.sha256"));
        assert!(!is_companion("x/b.tar.gz"));
    }
}
