//! Test support for kbha: a local AWS emulator per test, and fixtures seeded through
//! the real AWS APIs.
//!
//! [`Emulator::start`] runs `tests/emulator/kbha_emulator.py` (moto's server plus
//! kbha's strict Route 53 layer) on a free loopback port; each test owns its own
//! process, so tests run in parallel and never see each other's state. Set up the
//! Python side once with `bash tests/emulator/setup.sh`.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let emu = kbha_test_harness::Emulator::start()?;
//! let conf = emu.sdk_config().await;
//! let fx = emu.create_weighted_fixture(&Default::default()).await?;
//! emu.set_health(&fx.targets[0].health_check_id, false).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, HealthCheckConfig, HealthCheckType};
use kbha_aws::{AwsSettings, WeightedRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the emulator may take to print its READY line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Most of the emulator's stderr kept for error messages.
const STDERR_KEEP: usize = 16 * 1024;

/// The repository root (this crate lives in `tests/harness`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The Python that runs the emulator: `$KBHA_PYTHON`, else `<repo>/.venv/bin/python`.
pub fn emulator_python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KBHA_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        Ok(venv)
    } else {
        bail!(
            "no python for the AWS emulator at `{}`: run `bash tests/emulator/setup.sh` first \
             (or set KBHA_PYTHON to a python with moto[server] installed)",
            venv.display()
        )
    }
}

/// A running emulator process; killed when dropped.
pub struct Emulator {
    child: Child,
    // Held open: the emulator exits when its stdin closes, so even a test killed
    // without running destructors leaves no orphan.
    _stdin: ChildStdin,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keep_tail(buf: &Mutex<String>, line: &str) {
    if let Ok(mut b) = buf.lock() {
        b.push_str(line);
        if b.len() > STDERR_KEEP {
            let cut = b.len() - STDERR_KEEP;
            let cut = (cut..b.len()).find(|i| b.is_char_boundary(*i)).unwrap_or(cut);
            b.drain(..cut);
        }
    }
}

impl Emulator {
    /// Starts a fresh emulator on a free loopback port and waits until it is ready.
    pub fn start() -> Result<Emulator> {
        let python = emulator_python()?;
        let script = repo_root().join("tests/emulator/kbha_emulator.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--port")
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run `{}`", python.display()))?;
        let stdin = child.stdin.take().context("emulator stdin")?;
        let stdout = child.stdout.take().context("emulator stdout")?;
        let mut stderr_pipe = child.stderr.take().context("emulator stderr")?;

        // Drain stderr for the process's whole life: a full pipe would block the emulator.
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                keep_tail(&sink, &String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if !sent && let Some(port) = line.strip_prefix("KBHA_EMULATOR_READY ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                    sent = true;
                }
            }
        });

        let mut emu = Emulator { child, _stdin: stdin, port: 0, stderr };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(port)) => {
                emu.port = port;
                Ok(emu)
            }
            Ok(None) => bail!("emulator printed a malformed READY line; stderr:\n{}", emu.stderr_tail()),
            Err(_) => {
                let status = emu.child.try_wait().ok().flatten();
                std::thread::sleep(Duration::from_millis(200));
                bail!(
                    "emulator did not become ready within {START_TIMEOUT:?} (exit: {status:?}); \
                     if moto is missing run `bash tests/emulator/setup.sh`; stderr:\n{}",
                    emu.stderr_tail()
                )
            }
        }
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: the endpoint override for every service.
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the emulator wrote to stderr lately (for failure messages).
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// kbha's production settings pointed at the emulator, with short backoffs so
    /// retry tests stay quick.
    pub fn aws_settings(&self) -> AwsSettings {
        AwsSettings {
            endpoint_url: Some(self.endpoint_url()),
            region: Some("us-east-1".into()),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..AwsSettings::default()
        }
    }

    /// SDK configuration for the emulator: static test credentials, us-east-1, the
    /// endpoint override, and kbha's HTTP client, retries and timeouts.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.sdk_config_with(&self.aws_settings()).await
    }

    /// Like [`Emulator::sdk_config`] with other settings (keep the endpoint).
    pub async fn sdk_config_with(&self, settings: &AwsSettings) -> SdkConfig {
        kbha_aws::config_loader(settings).credentials_provider(Credentials::new("testing", "testing", None, None, "kbha-test")).load().await
    }

    /// A Route 53 client for the emulator.
    pub async fn route53(&self) -> aws_sdk_route53::Client {
        aws_sdk_route53::Client::new(&self.sdk_config().await)
    }

    /// An SNS client for the emulator.
    pub async fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.sdk_config().await)
    }

    /// An SQS client for the emulator.
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config().await)
    }

    /// A CloudWatch client for the emulator in `region` (CloudWatch is regional; the
    /// emulator keeps each region's alarms apart).
    pub async fn cloudwatch(&self, region: &str) -> aws_sdk_cloudwatch::Client {
        let conf = self.sdk_config().await;
        aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(&conf).region(aws_sdk_cloudwatch::config::Region::new(region.to_owned())).build(),
        )
    }

    /// An S3 client for the emulator (path-style addressing).
    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let conf = self.sdk_config().await;
        aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&conf).force_path_style(true).build())
    }

    // ------------------------------------------------------------- control API

    /// Sends one request to the emulator's control API and returns the JSON answer.
    pub async fn control(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Result<serde_json::Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream =
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.context("connecting to the emulator's control API")?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        stream.read_to_end(&mut resp).await?;
        let resp = String::from_utf8_lossy(&resp);
        let (head, payload) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            bail!("control {method} {path} answered {status}: {payload}");
        }
        serde_json::from_str(payload).with_context(|| format!("control answer: {payload}"))
    }

    /// Makes every checker of `health_check_id` report success (`true`) or failure.
    pub async fn set_health(&self, health_check_id: &str, healthy: bool) -> Result<()> {
        let status = if healthy { "healthy" } else { "unhealthy" };
        self.control("PUT", &format!("/_kbha/health-checks/{health_check_id}"), Some(&serde_json::json!({ "status": status })))
            .await
            .map(drop)
    }

    /// Makes `failing` of the emulator's 8 checkers report failure for the health check.
    pub async fn set_failing_checkers(&self, health_check_id: &str, failing: u32) -> Result<()> {
        self.control("PUT", &format!("/_kbha/health-checks/{health_check_id}"), Some(&serde_json::json!({ "failing_checkers": failing })))
            .await
            .map(drop)
    }

    /// How many GetChange reads report a change PENDING before INSYNC, for changes made
    /// afterwards (the emulator's default is 1; 0: INSYNC at once).
    pub async fn set_change_pending_reads(&self, n: u32) -> Result<()> {
        self.control("PUT", "/_kbha/change-propagation", Some(&serde_json::json!({ "pending_reads": n }))).await.map(drop)
    }

    /// Arms a fault: the next matching requests fail or stall (see [`Fault`]).
    pub async fn inject(&self, fault: &Fault) -> Result<()> {
        self.control("POST", "/_kbha/faults", Some(&fault.to_json())).await.map(drop)
    }

    /// Drops every fault not yet consumed.
    pub async fn clear_faults(&self) -> Result<()> {
        self.control("DELETE", "/_kbha/faults", None).await.map(drop)
    }

    /// Faults not yet consumed.
    pub async fn pending_faults(&self) -> Result<Vec<serde_json::Value>> {
        let v = self.control("GET", "/_kbha/faults", None).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Comments of every change batch `zone_id` accepted, in order: counts changes,
    /// which the records' end state cannot (a repeated change leaves the same weights).
    pub async fn change_comments(&self, zone_id: &str) -> Result<Vec<String>> {
        let v = self.control("GET", &format!("/_kbha/changes/{zone_id}"), None).await?;
        Ok(v["comments"].as_array().map(|a| a.iter().map(|c| c.as_str().unwrap_or_default().to_owned()).collect()).unwrap_or_default())
    }

    // ---------------------------------------------------------------- Route 53

    /// Creates a hosted zone, a health check per target and the weighted records.
    pub async fn create_weighted_fixture(&self, spec: &WeightedSpec) -> Result<WeightedFixture> {
        let r53 = self.route53().await;
        let zone = r53
            .create_hosted_zone()
            .name(&spec.zone_name)
            .caller_reference(format!("kbha-{}", spec.zone_name))
            .send()
            .await
            .context("CreateHostedZone")?;
        let zone_id = zone.hosted_zone().map(|z| z.id().trim_start_matches("/hostedzone/").to_owned()).context("zone id")?;
        let record_name = kbha_aws::normalize_name(&spec.record_name);

        let mut targets = Vec::new();
        let mut changes = Vec::new();
        for t in &spec.targets {
            let hc = r53
                .create_health_check()
                .caller_reference(format!("kbha-hc-{}", t.set_identifier))
                .health_check_config(
                    HealthCheckConfig::builder()
                        .r#type(HealthCheckType::Https)
                        .fully_qualified_domain_name(format!("{}.{}", t.set_identifier, spec.zone_name.trim_end_matches('.')))
                        .port(443)
                        .resource_path("/health")
                        .build()?,
                )
                .send()
                .await
                .context("CreateHealthCheck")?;
            let hc_id = hc.health_check().map(|h| h.id().to_owned()).context("health check id")?;
            let record = WeightedRecord {
                name: record_name.clone(),
                rtype: spec.rtype.clone(),
                set_identifier: t.set_identifier.clone(),
                weight: t.weight,
                ttl: Some(spec.ttl),
                values: vec![t.value.clone()],
                alias: None,
                health_check_id: Some(hc_id.clone()),
            };
            changes.push(Change::builder().action(ChangeAction::Create).resource_record_set(kbha_aws::to_sdk_record(&record)?).build()?);
            targets.push(FixtureTarget {
                set_identifier: t.set_identifier.clone(),
                region: t.region.clone(),
                health_check_id: hc_id,
                record,
            });
        }
        r53.change_resource_record_sets()
            .hosted_zone_id(&zone_id)
            .change_batch(ChangeBatch::builder().set_changes(Some(changes)).build()?)
            .send()
            .await
            .context("ChangeResourceRecordSets (fixture)")?;
        Ok(WeightedFixture { zone_id, record_name, rtype: spec.rtype.clone(), targets })
    }

    /// The weighted records of `name`/`rtype`, read straight through
    /// ListResourceRecordSets (independently of kbha-aws's reader).
    pub async fn read_weighted_records(&self, zone_id: &str, name: &str, rtype: &str) -> Result<Vec<WeightedRecord>> {
        let r53 = self.route53().await;
        let out = r53.list_resource_record_sets().hosted_zone_id(zone_id).max_items(300).send().await.context("ListResourceRecordSets")?;
        let want = kbha_aws::normalize_name(name);
        let mut records: Vec<WeightedRecord> = out
            .resource_record_sets()
            .iter()
            .filter(|r| kbha_aws::normalize_name(r.name()) == want && r.r#type().as_str() == rtype)
            .filter_map(|r| {
                Some(WeightedRecord {
                    name: r.name().to_owned(),
                    rtype: r.r#type().as_str().to_owned(),
                    set_identifier: r.set_identifier()?.to_owned(),
                    weight: u32::try_from(r.weight()?).ok()?,
                    ttl: r.ttl(),
                    values: r.resource_records().iter().map(|v| v.value().to_owned()).collect(),
                    alias: None,
                    health_check_id: r.health_check_id().map(str::to_owned),
                })
            })
            .collect();
        records.sort_by(|a, b| a.set_identifier.cmp(&b.set_identifier));
        Ok(records)
    }

    /// `set identifier -> weight` of the fixture's record set, read back from Route 53.
    pub async fn weights(&self, fx: &WeightedFixture) -> Result<BTreeMap<String, u32>> {
        Ok(self
            .read_weighted_records(&fx.zone_id, &fx.record_name, &fx.rtype)
            .await?
            .into_iter()
            .map(|r| (r.set_identifier, r.weight))
            .collect())
    }

    /// Changes one record's weight the way another operator would (DELETE + CREATE
    /// through the raw SDK), e.g. between a function's read and its write.
    pub async fn set_weight(&self, fx: &WeightedFixture, set_identifier: &str, weight: u32) -> Result<()> {
        let current = self
            .read_weighted_records(&fx.zone_id, &fx.record_name, &fx.rtype)
            .await?
            .into_iter()
            .find(|r| r.set_identifier == set_identifier)
            .with_context(|| format!("no record with set identifier `{set_identifier}`"))?;
        let changes = vec![
            Change::builder().action(ChangeAction::Delete).resource_record_set(kbha_aws::to_sdk_record(&current)?).build()?,
            Change::builder()
                .action(ChangeAction::Create)
                .resource_record_set(kbha_aws::to_sdk_record(&current.with_weight(weight))?)
                .build()?,
        ];
        self.route53()
            .await
            .change_resource_record_sets()
            .hosted_zone_id(&fx.zone_id)
            .change_batch(ChangeBatch::builder().set_changes(Some(changes)).comment("operator").build()?)
            .send()
            .await
            .context("ChangeResourceRecordSets (set_weight)")?;
        Ok(())
    }

    // ------------------------------------------------------------ SNS and SQS

    /// Creates an SNS topic and an SQS queue subscribed to it without raw delivery,
    /// so each queued message is the SNS envelope (Subject, MessageAttributes).
    pub async fn create_topic_with_queue(&self, name: &str) -> Result<TopicQueue> {
        let sns = self.sns().await;
        let sqs = self.sqs().await;
        let topic_arn = sns.create_topic().name(name).send().await.context("CreateTopic")?.topic_arn().context("topic arn")?.to_owned();
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{name}-inbox"))
            .send()
            .await
            .context("CreateQueue")?
            .queue_url()
            .context("queue url")?
            .to_owned();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .context("GetQueueAttributes")?;
        let queue_arn =
            attrs.attributes().and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)).context("queue arn")?.clone();
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .attributes("RawMessageDelivery", "false")
            .send()
            .await
            .context("Subscribe")?;
        Ok(TopicQueue { topic_arn, queue_url })
    }

    /// Receives (and deletes) messages from the queue until `n` arrived or `timeout`
    /// passed; returns what arrived, possibly fewer than `n`, so tests can assert
    /// "exactly one" by asking for more.
    pub async fn drain_messages(&self, tq: &TopicQueue, n: usize, timeout: Duration) -> Result<Vec<SnsEnvelope>> {
        let sqs = self.sqs().await;
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = i32::try_from(left.as_secs().clamp(0, 1)).unwrap_or(1);
            let res = sqs
                .receive_message()
                .queue_url(&tq.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(wait)
                .send()
                .await
                .context("ReceiveMessage")?;
            let msgs = res.messages();
            if msgs.is_empty() && wait == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for m in msgs {
                let body = m.body().unwrap_or_default();
                out.push(SnsEnvelope::parse(body)?);
                if let Some(h) = m.receipt_handle() {
                    sqs.delete_message().queue_url(&tq.queue_url).receipt_handle(h).send().await.context("DeleteMessage")?;
                }
            }
        }
        Ok(out)
    }

    // -------------------------------------------------------------- CloudWatch

    /// Creates a metric alarm in `region` like the template's: `AWS/Route53`
    /// `HealthCheckStatus` (dimension `HealthCheckId` = `name`), Minimum < 1 over 3 periods
    /// of 60 s, missing data breaching. The emulator evaluates no alarm: it starts `OK`
    /// and changes only through [`Emulator::set_alarm_state`].
    pub async fn put_alarm(&self, region: &str, name: &str) -> Result<()> {
        use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
        self.cloudwatch(region)
            .await
            .put_metric_alarm()
            .alarm_name(name)
            .namespace("AWS/Route53")
            .metric_name("HealthCheckStatus")
            .dimensions(Dimension::builder().name("HealthCheckId").value(name).build())
            .statistic(Statistic::Minimum)
            .period(60)
            .evaluation_periods(3)
            .threshold(1.0)
            .comparison_operator(ComparisonOperator::LessThanThreshold)
            .treat_missing_data("breaching")
            .send()
            .await
            .with_context(|| format!("PutMetricAlarm {name} in {region}"))?;
        Ok(())
    }

    /// Creates a composite alarm in `region` with `rule` (e.g. `ALARM("a") OR ALARM("b")`).
    /// The emulator stores the rule but does not evaluate it: set the state with
    /// [`Emulator::set_alarm_state`].
    pub async fn put_composite_alarm(&self, region: &str, name: &str, rule: &str) -> Result<()> {
        self.cloudwatch(region)
            .await
            .put_composite_alarm()
            .alarm_name(name)
            .alarm_rule(rule)
            .send()
            .await
            .with_context(|| format!("PutCompositeAlarm {name} in {region}"))?;
        Ok(())
    }

    /// Sets an alarm's state with SetAlarmState: `state` is `OK`, `ALARM` or
    /// `INSUFFICIENT_DATA`. The alarm's StateUpdatedTimestamp becomes the emulator's real
    /// clock; for simulated time use [`Emulator::set_alarm_state_at`].
    pub async fn set_alarm_state(&self, region: &str, name: &str, state: &str, reason: &str) -> Result<()> {
        self.cloudwatch(region)
            .await
            .set_alarm_state()
            .alarm_name(name)
            .state_value(aws_sdk_cloudwatch::types::StateValue::from(state))
            .state_reason(reason)
            .send()
            .await
            .with_context(|| format!("SetAlarmState {name} {state} in {region}"))?;
        Ok(())
    }

    /// Like [`Emulator::set_alarm_state`], with StateUpdatedTimestamp = `since_ms` (ms
    /// since epoch) instead of the real clock, through the control API (no AWS API sets
    /// the timestamp), for tests that run in simulated time.
    pub async fn set_alarm_state_at(&self, region: &str, name: &str, state: &str, reason: &str, since_ms: i64) -> Result<()> {
        self.control(
            "PUT",
            "/_kbha/alarm-state",
            Some(&serde_json::json!({
                "region": region,
                "name": name,
                "state": state,
                "reason": reason,
                "since_ms": since_ms,
            })),
        )
        .await
        .map(drop)
    }

    // --------------------------------------------------------------------- S3

    /// Creates a bucket.
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        self.s3().await.create_bucket().bucket(name).send().await.with_context(|| format!("CreateBucket {name}"))?;
        Ok(())
    }
}

impl Emulator {
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

/// A fault the emulator applies to the next `count` matching requests, before moto
/// sees them.
///
/// ```
/// # use kbha_test_harness::Fault;
/// let f = Fault::error("route53", 400, "PriorRequestNotComplete").method("POST").path("/rrset/?$").times(2);
/// assert_eq!(f.count, 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    /// Signing name of the service (`route53`, `s3`, `sns`, `sqs`, `monitoring` for
    /// CloudWatch); `None`: any.
    pub service: Option<String>,
    /// HTTP method; `None`: any.
    pub method: Option<String>,
    /// Regex searched in the request path; `None`: any.
    pub path_regex: Option<String>,
    /// Exact `X-Amz-Target` header (JSON protocols); `None`: any.
    pub target: Option<String>,
    /// HTTP status of the error answer (default 400).
    pub status: Option<u16>,
    /// Error code to answer with; `None`: pass the request on after the delay.
    pub code: Option<String>,
    /// Error message.
    pub message: Option<String>,
    /// Hold the request this long first.
    pub delay_ms: Option<u64>,
    /// Reset the connection (TCP RST, no answer): `before` moto sees the request, or
    /// `after` it handled it (the change is made, the answer is lost).
    pub reset: Option<String>,
    /// How many requests it applies to.
    pub count: u32,
    /// Matching requests let through untouched before it applies.
    pub skip: u32,
}

impl Fault {
    /// Answer once with HTTP `status` and error `code`.
    pub fn error(service: &str, status: u16, code: &str) -> Fault {
        Fault { service: Some(service.into()), status: Some(status), code: Some(code.into()), count: 1, ..Fault::default() }
    }

    /// Hold one request `ms` milliseconds, then pass it on.
    pub fn delay(service: &str, ms: u64) -> Fault {
        Fault { service: Some(service.into()), delay_ms: Some(ms), count: 1, ..Fault::default() }
    }

    /// Reset the connection of one request before the emulator handles it: the
    /// request never arrives.
    pub fn reset(service: &str) -> Fault {
        Fault { service: Some(service.into()), reset: Some("before".into()), count: 1, ..Fault::default() }
    }

    /// Reset the connection of one request after the emulator handled it: the
    /// change is made but the client never hears so.
    pub fn reset_after(service: &str) -> Fault {
        Fault { service: Some(service.into()), reset: Some("after".into()), count: 1, ..Fault::default() }
    }

    /// Only requests with this HTTP method.
    pub fn method(mut self, method: &str) -> Fault {
        self.method = Some(method.into());
        self
    }

    /// Only requests whose path matches this regex.
    pub fn path(mut self, regex: &str) -> Fault {
        self.path_regex = Some(regex.into());
        self
    }

    /// Lets the first `k` matching requests through, then applies (e.g. the second
    /// write of an object, not the first).
    pub fn after(mut self, k: u32) -> Fault {
        self.skip = k;
        self
    }

    /// Applies to `n` requests.
    pub fn times(mut self, n: u32) -> Fault {
        self.count = n;
        self
    }

    fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            if !v.is_null() {
                m.insert(k.into(), v);
            }
        };
        put("service", serde_json::json!(self.service));
        put("method", serde_json::json!(self.method));
        put("path_regex", serde_json::json!(self.path_regex));
        put("target", serde_json::json!(self.target));
        put("status", serde_json::json!(self.status));
        put("code", serde_json::json!(self.code));
        put("message", serde_json::json!(self.message));
        put("delay_ms", serde_json::json!(self.delay_ms));
        put("reset", serde_json::json!(self.reset));
        put("count", serde_json::json!(self.count));
        if self.skip > 0 {
            put("skip", serde_json::json!(self.skip));
        }
        serde_json::Value::Object(m)
    }
}

/// One target of a weighted fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// SetIdentifier.
    pub set_identifier: String,
    /// Region it stands for (informational; the record is a plain weighted record).
    pub region: String,
    /// Initial weight.
    pub weight: u32,
    /// The A/AAAA/CNAME value.
    pub value: String,
}

/// What [`Emulator::create_weighted_fixture`] creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedSpec {
    /// Hosted zone name.
    pub zone_name: String,
    /// Record name inside it.
    pub record_name: String,
    /// Record type.
    pub rtype: String,
    /// TTL of every record.
    pub ttl: i64,
    /// The targets, each with its own health check.
    pub targets: Vec<TargetSpec>,
}

impl Default for WeightedSpec {
    /// `app.example.com.` A, TTL 60: `primary` (us-east-1, weight 100, 192.0.2.10) and
    /// `secondary` (us-west-2, weight 0, 198.51.100.10).
    fn default() -> Self {
        WeightedSpec {
            zone_name: "example.com.".into(),
            record_name: "app.example.com.".into(),
            rtype: "A".into(),
            ttl: 60,
            targets: vec![
                TargetSpec { set_identifier: "primary".into(), region: "us-east-1".into(), weight: 100, value: "192.0.2.10".into() },
                TargetSpec { set_identifier: "secondary".into(), region: "us-west-2".into(), weight: 0, value: "198.51.100.10".into() },
            ],
        }
    }
}

/// A target as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureTarget {
    /// SetIdentifier.
    pub set_identifier: String,
    /// Region it stands for.
    pub region: String,
    /// Its Route 53 health check.
    pub health_check_id: String,
    /// The record as created.
    pub record: WeightedRecord,
}

/// A zone with a weighted record set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedFixture {
    /// Hosted zone id, without the `/hostedzone/` prefix.
    pub zone_id: String,
    /// Record name, fully qualified.
    pub record_name: String,
    /// Record type.
    pub rtype: String,
    /// The targets, in spec order.
    pub targets: Vec<FixtureTarget>,
}

impl WeightedFixture {
    /// The target with this set identifier.
    pub fn target(&self, set_identifier: &str) -> Option<&FixtureTarget> {
        self.targets.iter().find(|t| t.set_identifier == set_identifier)
    }
}

/// An SNS topic with an SQS queue subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicQueue {
    /// Topic ARN.
    pub topic_arn: String,
    /// URL of the subscribed queue.
    pub queue_url: String,
}

/// An SNS notification as delivered to SQS (non-raw delivery).
#[derive(Debug, Clone, PartialEq)]
pub struct SnsEnvelope {
    /// `Subject`, when the publisher set one.
    pub subject: Option<String>,
    /// `Message`.
    pub message: String,
    /// `MessageAttributes`, name -> value (string values; binary ones as given).
    pub attributes: BTreeMap<String, String>,
    /// The whole envelope.
    pub raw: serde_json::Value,
}

impl SnsEnvelope {
    /// Parses an SQS body holding an SNS envelope.
    pub fn parse(body: &str) -> Result<SnsEnvelope> {
        let raw: serde_json::Value = serde_json::from_str(body).with_context(|| format!("SQS body is not an SNS envelope: {body}"))?;
        let subject = raw.get("Subject").and_then(|s| s.as_str()).map(str::to_owned);
        let message =
            raw.get("Message").and_then(|s| s.as_str()).with_context(|| format!("SNS envelope without Message: {body}"))?.to_owned();
        let attributes = raw
            .get("MessageAttributes")
            .and_then(|a| a.as_object())
            .map(|a| {
                a.iter()
                    .map(|(k, v)| {
                        let val = v.get("Value").and_then(|x| x.as_str()).unwrap_or_default();
                        (k.clone(), val.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(SnsEnvelope { subject, message, attributes, raw })
    }
}
