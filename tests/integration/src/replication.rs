//! A replication verifier wired to a fresh emulator: backup buckets in two regions, the
//! state bucket, a notice topic with a queue; backups built as real `.tar.gz` archives
//! with manifests; S3 events in the three shapes AWS delivers.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use kbha_aws::{S3Store, SnsNotifier};
use kbha_core::ReplicationStatus;
use kbha_core::backup_events::encode_key;
use kbha_core::time::format_timestamp;
use kbha_policy_lifecycle::{Policies, Replication, builtin};
use kbha_replication_verifier::{VerificationRecord, VerifierConfig, VerifierFunction};
use kbha_test_harness::{Emulator, TopicQueue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Backups land here (us-east-1).
pub const BACKUPS: &str = "kbha-backups-us-east-1";
/// Cross-region copies land here (us-west-2).
pub const REPLICA: &str = "kbha-backups-us-west-2";
/// Verification records and status objects.
pub const STATE: &str = "kbha-state";

/// The verifier under test.
pub type Verifier = VerifierFunction<S3Store, SnsNotifier>;

/// How an S3 notification is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Shape {
    /// S3 -> Lambda.
    Direct,
    /// S3 -> SNS -> Lambda.
    Sns,
    /// S3 -> EventBridge -> Lambda.
    EventBridge,
}

/// One uploaded object, as an event describes it.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// Bucket.
    pub bucket: String,
    /// Key (not encoded).
    pub key: String,
    /// Size.
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// LastModified, ms.
    pub last_modified_ms: i64,
}

/// An emulator seeded for the replication verifier.
pub struct ReplicationWorld {
    /// The emulator.
    pub emu: Emulator,
    /// Notice topic and its queue.
    pub notices: TopicQueue,
}

impl ReplicationWorld {
    /// Starts an emulator and creates the buckets and the topic.
    pub async fn start() -> Result<ReplicationWorld> {
        let emu = Emulator::start()?;
        for b in [BACKUPS, STATE] {
            emu.create_bucket(b).await?;
        }
        // The copy lives in the other region, as in production.
        let west = aws_sdk_s3::types::CreateBucketConfiguration::builder()
            .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::UsWest2)
            .build();
        emu.s3().await.create_bucket().bucket(REPLICA).create_bucket_configuration(west).send().await.context("CreateBucket replica")?;
        let notices = emu.create_topic_with_queue("kbha-notices").await?;
        Ok(ReplicationWorld { emu, notices })
    }

    /// The verifier's environment: `chromadb/` (manifest optional, copied to the replica
    /// bucket) and `redis/` (no manifest, no copy), plus `extra`.
    pub fn env(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let sources = json!([
            {"name": "chromadb", "bucket": BACKUPS, "prefix": "chromadb/", "region": "us-east-1",
             "copy": {"bucket": REPLICA, "region": "us-west-2"}},
            {"name": "redis", "bucket": BACKUPS, "prefix": "redis/", "region": "us-east-1", "manifest": "none"},
        ]);
        let mut env = BTreeMap::from([
            ("KBHA_BACKUP_SOURCES".to_owned(), sources.to_string()),
            ("KBHA_STATE_BUCKET".to_owned(), STATE.to_owned()),
            ("KBHA_NOTIFY_TOPIC_ARN".to_owned(), self.notices.topic_arn.clone()),
        ]);
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        env
    }

    /// A verifier with the built-in policy.
    pub async fn verifier(&self, extra: &[(&str, &str)]) -> Result<Verifier> {
        let env = self.env(extra);
        let cfg = VerifierConfig::from_lookup(|k| env.get(k).cloned())?;
        let conf = self.emu.sdk_config().await;
        let policies: Policies<Replication> = Policies::single(builtin::<Replication>()?);
        // The copy region gets its own client, as in the Lambda's main.
        Ok(VerifierFunction::new(cfg, S3Store::from_conf(&conf), SnsNotifier::from_conf(&conf), policies)
            .with_region_store("us-west-2", S3Store::from_conf_in_region(&conf, "us-west-2")))
    }

    /// Uploads bytes and reads back what S3 reports about them.
    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<Uploaded> {
        self.emu.put_bytes(bucket, key, bytes).await?;
        self.head(bucket, key).await
    }

    /// What S3 reports about an object.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Uploaded> {
        head_object(&self.emu, bucket, key).await
    }

    /// Uploads a `.tar.gz` of `files` with a matching manifest (taken at `created_at_ms`).
    pub async fn put_backup(&self, key: &str, files: &[(&str, &[u8])], created_at_ms: i64) -> Result<Uploaded> {
        let archive = tar_gz(files)?;
        let manifest = manifest_for(files, &archive, created_at_ms);
        self.emu.put_bytes(BACKUPS, &format!("{key}.manifest.json"), manifest.to_string().into_bytes()).await?;
        self.put(BACKUPS, key, archive).await
    }

    /// The verification record of `bucket/key`, read back through S3.
    pub async fn record(&self, bucket: &str, key: &str) -> Result<Option<VerificationRecord>> {
        let k = format!("kbha/replication/records/{bucket}/{key}.json");
        Ok(self.get_json(&k).await?.map(serde_json::from_value).transpose()?)
    }

    /// The status object of `region`, read back through S3.
    pub async fn status(&self, region: &str) -> Result<Option<ReplicationStatus>> {
        Ok(self.get_json(&format!("kbha/replication/status/{region}.json")).await?.map(serde_json::from_value).transpose()?)
    }

    /// The list of copies the scheduled check still looks for, read back through S3.
    pub async fn pending_copies(&self, source: &str) -> Result<Option<Value>> {
        self.get_json(&format!("kbha/replication/status/pending-copies/{source}.json")).await
    }

    /// The record of restore test `id` of `source`, read back through S3.
    pub async fn restore_record(&self, source: &str, id: &str) -> Result<Option<Value>> {
        self.get_json(&format!("kbha/replication/records/restore-tests/{source}/{id}.json")).await
    }

    /// The last restore test of `source`, read back through S3.
    pub async fn restore_status(&self, source: &str) -> Result<Option<Value>> {
        self.get_json(&format!("kbha/replication/status/restore-tests/{source}.json")).await
    }

    async fn get_json(&self, key: &str) -> Result<Option<Value>> {
        match self.emu.s3().await.get_object().bucket(STATE).key(key).send().await {
            Ok(out) => {
                let bytes = out.body.collect().await?.into_bytes();
                Ok(Some(serde_json::from_slice(&bytes)?))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(e).context("GetObject"),
        }
    }

    /// Notices delivered so far (waits up to `secs` for at least `n`).
    pub async fn notices(&self, n: usize, secs: u64) -> Result<Vec<(Value, BTreeMap<String, String>, String)>> {
        let msgs = self.emu.drain_messages(&self.notices, n, std::time::Duration::from_secs(secs)).await?;
        msgs.into_iter()
            .map(|m| Ok((serde_json::from_str(&m.message).context("notice is JSON")?, m.attributes, m.subject.unwrap_or_default())))
            .collect()
    }
}

/// An S3 ObjectCreated notification for `objects`, in `shape`, keys URL-encoded as S3
/// does. EventBridge carries one object per event; only the first is used there.
pub fn s3_event(shape: S3Shape, objects: &[&Uploaded]) -> Value {
    let record = |o: &Uploaded| {
        json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": format_timestamp(o.last_modified_ms), "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:AROAEXAMPLE:backup"},
            "requestParameters": {"sourceIPAddress": "10.0.4.17"},
            "responseElements": {"x-amz-request-id": "0123456789ABCDEF", "x-amz-id-2": "example"},
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "kbha-backups",
                   "bucket": {"name": o.bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"}, "arn": format!("arn:aws:s3:::{}", o.bucket)},
                   "object": {"key": encode_key(&o.key), "size": o.size, "eTag": o.etag, "sequencer": format!("{:016X}", o.last_modified_ms)}}
        })
    };
    let direct = json!({"Records": objects.iter().map(|o| record(o)).collect::<Vec<_>>()});
    match shape {
        S3Shape::Direct => direct,
        S3Shape::Sns => json!({"Records": [{
            "EventSource": "aws:sns", "EventVersion": "1.0",
            "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:kbha-backup-events:6e1c0b7a",
            "Sns": {"Type": "Notification", "MessageId": "5f0c4b1e-8a2d-5e3f-b6c7-0a9b8c7d6e5f",
                    "TopicArn": "arn:aws:sns:us-east-1:123456789012:kbha-backup-events", "Subject": "Amazon S3 Notification",
                    "Message": direct.to_string(), "Timestamp": "2026-11-26T11:05:02.611Z", "SignatureVersion": "1",
                    "Signature": "EXAMPLE", "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/x.pem",
                    "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe", "MessageAttributes": {}}
        }]}),
        S3Shape::EventBridge => {
            let o = objects[0];
            json!({"version": "0", "id": format!("eb-{}", o.etag), "detail-type": "Object Created", "source": "aws.s3",
                   "account": "123456789012", "time": format_timestamp(o.last_modified_ms), "region": "us-east-1",
                   "resources": [format!("arn:aws:s3:::{}", o.bucket)],
                   "detail": {"version": "0", "bucket": {"name": o.bucket},
                              "object": {"key": encode_key(&o.key), "size": o.size, "etag": o.etag, "sequencer": format!("{:016X}", o.last_modified_ms)},
                              "request-id": "K2M7QW4R9T1X", "requester": "123456789012", "source-ip-address": "10.0.4.17", "reason": "PutObject"}})
        }
    }
}

/// An EventBridge scheduled event at `at_ms` (the dead-man check).
pub fn schedule(at_ms: i64, id: &str) -> Value {
    json!({"version": "0", "id": id, "detail-type": "Scheduled Event", "source": "aws.events", "account": "123456789012",
           "time": format_timestamp(at_ms), "region": "us-east-1",
           "resources": ["arn:aws:events:us-east-1:123456789012:rule/kbha-dead-man"], "detail": {}})
}

/// A restore-test event (as the template's schedule or `kbha restore-test` sends it).
pub fn restore_test(id: &str, source: Option<&str>) -> Value {
    json!({"kbha": "restore-test", "id": id, "source": source})
}

/// A `.tar.gz` of `files`.
pub fn tar_gz(files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, *content)?;
    }
    let mut gz = builder.into_inner()?;
    gz.flush()?;
    Ok(gz.finish()?)
}

/// The manifest of an archive of `files`.
pub fn manifest_for(files: &[(&str, &[u8])], archive: &[u8], created_at_ms: i64) -> Value {
    json!({
        "version": 1,
        "created_at": format_timestamp(created_at_ms),
        "archive": {"sha256": hex::encode(Sha256::digest(archive)), "size": archive.len()},
        "files": files.iter().map(|(p, c)| json!({"path": p, "size": c.len(), "sha256": hex::encode(Sha256::digest(c))})).collect::<Vec<_>>(),
    })
}

/// What S3 reports about an object (HeadObject), for tests without a [`ReplicationWorld`].
pub async fn head_object(emu: &kbha_test_harness::Emulator, bucket: &str, key: &str) -> Result<Uploaded> {
    let h = emu.s3().await.head_object().bucket(bucket).key(key).send().await.with_context(|| format!("HeadObject {key}"))?;
    Ok(Uploaded {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        size: u64::try_from(h.content_length().unwrap_or_default()).unwrap_or_default(),
        etag: h.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
        last_modified_ms: h.last_modified().map(|t| t.to_millis().unwrap_or_default()).unwrap_or_default(),
    })
}
