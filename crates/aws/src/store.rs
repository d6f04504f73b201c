//! S3: small state objects with conditional writes, listings, and streamed reads of
//! large backups.

use std::future::Future;
use std::pin::Pin;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, ChecksumType};
use tokio::io::AsyncBufRead;

use crate::AwsError;

/// An object read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The content.
    pub bytes: Vec<u8>,
    /// Its ETag, quotes included as S3 sends it; pass it to [`PutCondition::IfMatch`].
    pub etag: String,
}

/// The answer to a conditional read ([`ObjectStore::get_if_changed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The object still has the ETag given (HTTP 304).
    NotModified,
    /// No object has the key (or the version).
    Missing,
    /// The object, changed or read for the first time.
    Object(StoredObject),
}

/// When a write may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// Unconditionally.
    Always,
    /// Only if no object has the key (`If-None-Match: *`): create-once.
    IfNoneMatch,
    /// Only if the current object has this ETag (`If-Match`): compare-and-swap.
    IfMatch(String),
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSummary {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, ms since the Unix epoch.
    pub last_modified_ms: i64,
    /// ETag.
    pub etag: String,
}

/// Metadata of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    /// Size in bytes.
    pub size: u64,
    /// Last modification, ms since the Unix epoch.
    pub last_modified_ms: i64,
    /// ETag.
    pub etag: String,
    /// The SHA-256 of the whole object in lowercase hex, when S3 stored a full-object
    /// SHA-256 checksum. `None` when absent or composite (multipart `...-N` checksums
    /// are digests of part digests, not of the object).
    pub sha256_checksum: Option<String>,
}

/// A streamed object body.
pub type ObjectReader = Pin<Box<dyn AsyncBufRead + Send>>;

/// An object opened for streaming.
pub struct ObjectStream {
    /// Size in bytes, from Content-Length.
    pub size: Option<u64>,
    /// ETag.
    pub etag: String,
    /// The body; read it to the end (errors surface as `std::io::Error`).
    pub reader: ObjectReader,
}

impl std::fmt::Debug for ObjectStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStream").field("size", &self.size).field("etag", &self.etag).finish_non_exhaustive()
    }
}

/// What the functions need from S3.
pub trait ObjectStore: Send + Sync {
    /// The object read whole (small objects only); `None` if the key does not exist.
    fn get(&self, bucket: &str, key: &str) -> impl Future<Output = Result<Option<StoredObject>, AwsError>> + Send;

    /// The object unless it still has ETag `etag` (`If-None-Match`; `None` reads
    /// unconditionally); `version_id` reads that version. One request, so polling a
    /// policy object costs no body transfer while it is unchanged.
    fn get_if_changed(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Fetched, AwsError>> + Send;

    /// Writes the object if `cond` holds; returns the new ETag.
    /// [`AwsError::Conflict`] when the condition failed (HTTP 412). A conditional
    /// write whose answer was lost and was retried can report a conflict with its own
    /// earlier attempt: on conflict, read the object and compare before deciding.
    fn put(&self, bucket: &str, key: &str, body: Vec<u8>, cond: PutCondition) -> impl Future<Output = Result<String, AwsError>> + Send;

    /// Every object under `prefix`, all pages read, in key order.
    fn list(&self, bucket: &str, prefix: &str) -> impl Future<Output = Result<Vec<ObjectSummary>, AwsError>> + Send;

    /// Metadata, with the stored checksum asked for; `None` if the object does not exist.
    fn head(&self, bucket: &str, key: &str) -> impl Future<Output = Result<Option<ObjectHead>, AwsError>> + Send;

    /// Opens the object for streaming, so large objects are hashed or unpacked without
    /// being held in memory; `None` if the key does not exist.
    fn open(&self, bucket: &str, key: &str) -> impl Future<Output = Result<Option<ObjectStream>, AwsError>> + Send;
}

/// [`ObjectStore`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
}

impl S3Store {
    /// Wraps an S3 client.
    pub fn new(client: Client) -> Self {
        S3Store { client }
    }

    /// Builds the client from a shared SDK configuration. With an endpoint override
    /// (an emulator) requests use path-style addressing, which emulators on an IP
    /// address need.
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        let mut b = aws_sdk_s3::config::Builder::from(conf);
        if conf.endpoint_url().is_some() {
            b = b.force_path_style(true);
        }
        S3Store::new(Client::from_conf(b.build()))
    }

    /// The same for buckets in `region`: S3 answers a request for another region's
    /// bucket with a redirect the SDK does not follow, so each region gets its client.
    pub fn from_conf_in_region(conf: &aws_config::SdkConfig, region: &str) -> Self {
        let mut b = aws_sdk_s3::config::Builder::from(conf).region(aws_config::Region::new(region.to_owned()));
        if conf.endpoint_url().is_some() {
            b = b.force_path_style(true);
        }
        S3Store::new(Client::from_conf(b.build()))
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

const GET: &str = "GetObject";
const PUT: &str = "PutObject";
const LIST: &str = "ListObjectsV2";
const HEAD: &str = "HeadObject";

fn millis(t: Option<&aws_sdk_s3::primitives::DateTime>) -> i64 {
    t.and_then(|t| t.to_millis().ok()).unwrap_or(0)
}

fn size(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// `NoSuchKey` on GET, a bare 404 on HEAD: the object is absent (a missing bucket stays an error on GET).
fn is_missing_key(e: &AwsError) -> bool {
    match e {
        AwsError::NotFound { code, .. } => code == "NoSuchKey" || code == "NotFound" || code == "unknown",
        _ => false,
    }
}

fn sha256_hex(checksum: Option<&str>, kind: Option<&ChecksumType>) -> Option<String> {
    let checksum = checksum?;
    if matches!(kind, Some(ChecksumType::Composite)) || checksum.contains('-') {
        return None;
    }
    let raw = aws_smithy_types::base64::decode(checksum).ok()?;
    (raw.len() == 32).then(|| raw.iter().map(|b| format!("{b:02x}")).collect())
}

impl S3Store {
    /// GetObject; `None` when the key does not exist (a missing bucket is an error).
    async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>, AwsError> {
        match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(out) => Ok(Some(out)),
            Err(e) => {
                let e = AwsError::from_sdk(GET, e);
                if is_missing_key(&e) { Ok(None) } else { Err(e) }
            }
        }
    }
}

impl ObjectStore for S3Store {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<StoredObject>, AwsError> {
        let Some(out) = self.get_object(bucket, key).await? else {
            return Ok(None);
        };
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| AwsError::Transport { operation: GET, message: format!("reading the body of `{key}`: {e}") })?
            .into_bytes()
            .to_vec();
        Ok(Some(StoredObject { bytes, etag }))
    }

    async fn get_if_changed(&self, bucket: &str, key: &str, version_id: Option<&str>, etag: Option<&str>) -> Result<Fetched, AwsError> {
        let sent = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .set_if_none_match(etag.map(str::to_owned))
            .send()
            .await;
        let out = match sent {
            Ok(out) => out,
            // S3 answers 304 with no error body; the SDK reports it as a service error.
            Err(aws_sdk_s3::error::SdkError::ServiceError(e)) if e.raw().status().as_u16() == 304 => {
                return Ok(Fetched::NotModified);
            }
            Err(e) => {
                let e = AwsError::from_sdk(GET, e);
                let missing = is_missing_key(&e) || matches!(&e, AwsError::NotFound { code, .. } if code == "NoSuchVersion");
                return if missing { Ok(Fetched::Missing) } else { Err(e) };
            }
        };
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| AwsError::Transport { operation: GET, message: format!("reading the body of `{key}`: {e}") })?
            .into_bytes()
            .to_vec();
        Ok(Fetched::Object(StoredObject { bytes, etag }))
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>, cond: PutCondition) -> Result<String, AwsError> {
        let mut req = self.client.put_object().bucket(bucket).key(key).body(ByteStream::from(body));
        req = match cond {
            PutCondition::Always => req,
            PutCondition::IfNoneMatch => req.if_none_match("*"),
            PutCondition::IfMatch(etag) => req.if_match(etag),
        };
        let out = req.send().await.map_err(|e| AwsError::from_sdk(PUT, e))?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectSummary>, AwsError> {
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk(LIST, e))?;
            for o in page.contents() {
                out.push(ObjectSummary {
                    key: o.key().unwrap_or_default().to_owned(),
                    size: size(o.size()),
                    last_modified_ms: millis(o.last_modified()),
                    etag: o.e_tag().unwrap_or_default().to_owned(),
                });
            }
        }
        Ok(out)
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectHead>, AwsError> {
        let res = self.client.head_object().bucket(bucket).key(key).checksum_mode(ChecksumMode::Enabled).send().await;
        let out = match res {
            Ok(out) => out,
            Err(e) => {
                let e = AwsError::from_sdk(HEAD, e);
                return if is_missing_key(&e) { Ok(None) } else { Err(e) };
            }
        };
        Ok(Some(ObjectHead {
            size: size(out.content_length()),
            last_modified_ms: millis(out.last_modified()),
            etag: out.e_tag().unwrap_or_default().to_owned(),
            sha256_checksum: sha256_hex(out.checksum_sha256(), out.checksum_type()),
        }))
    }

    async fn open(&self, bucket: &str, key: &str) -> Result<Option<ObjectStream>, AwsError> {
        let Some(out) = self.get_object(bucket, key).await? else {
            return Ok(None);
        };
        Ok(Some(ObjectStream {
            size: out.content_length().and_then(|n| u64::try_from(n).ok()),
            etag: out.e_tag().unwrap_or_default().to_owned(),
            reader: Box::pin(out.body.into_async_read()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_object_sha256_checksums_are_reported() {
        // SHA-256 of the empty string.
        let b64 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(
            sha256_hex(Some(b64), Some(&ChecksumType::FullObject)).as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(sha256_hex(Some("abc=-3"), None), None);
        assert_eq!(sha256_hex(Some(b64), Some(&ChecksumType::Composite)), None);
        assert_eq!(sha256_hex(None, None), None);
    }
}
