//! S3: buckets and objects.

use std::path::Path;

use anyhow::{Context, Result};

use crate::Emulator;

impl Emulator {
    /// Creates a bucket.
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        self.s3().await.create_bucket().bucket(name).send().await.with_context(|| format!("CreateBucket {name}"))?;
        Ok(())
    }

    /// Uploads a file, streamed from disk (large backups), optionally asking S3 to
    /// store its SHA-256 checksum. Returns the ETag.
    pub async fn put_file(&self, bucket: &str, key: &str, path: &Path, sha256: bool) -> Result<String> {
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path).await.with_context(|| format!("reading {}", path.display()))?;
        let mut req = self.s3().await.put_object().bucket(bucket).key(key).body(body);
        if sha256 {
            req = req.checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256);
        }
        let out = req.send().await.with_context(|| format!("PutObject {bucket}/{key}"))?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    /// Uploads bytes. Returns the ETag.
    pub async fn put_bytes(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<String> {
        let out = self
            .s3()
            .await
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .with_context(|| format!("PutObject {bucket}/{key}"))?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }
}
