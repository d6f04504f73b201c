//! Own overhead (issue 9, item 3): event received to the Route 53 change request
//! arriving at a loopback AWS stub that answers every call at once, so only kbha's work
//! (and the SDK's) is timed.
//!
//! The real failover function (`kbha_failover::FailoverFunction` with the built-in
//! component policy and real SDK clients, built as `tests/integration` builds them against
//! the emulator, endpoint URL pointed at the stub) handles a primary-alarm event that
//! shifts traffic. The stub answers Route 53 (records, health checks, the change batch,
//! GetChange: always INSYNC), CloudWatch DescribeAlarms (every asked alarm `OK`), S3 and
//! SNS, and records when `ChangeResourceRecordSets` arrives; any other call fails the
//! bench. The baseline, in the same process and run, makes the same AWS calls (same
//! arguments, same object bodies) in the order the handler's last invocation made them, one
//! after the other, through the same kbha-aws adapters without the handler (no event
//! parsing, state logic, policy or guardrails), so the difference is the handler's own
//! work. (The handler makes its reads concurrently, so their order varies between
//! invocations; the baseline's sequential replay of one such order is checked against it
//! call for call.)
//!
//! The handler prints a decision record per event on stdout (as in Lambda), so this runs
//! in a child process (`xtask bench --overhead-child N`) whose stdout the parent reads;
//! the child's last line is a `kbha.bench.overhead` record with the timings.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kbha_aws::{Alarms, AwsSettings, CloudWatchAlarms, Dns, Notifier, ObjectStore, PutCondition, Route53Dns, S3Store, SnsNotifier};
use kbha_failover::{ActionTaken, FailoverConfig, FailoverFunction};
use kbha_lambda::record::Invocation;
use kbha_policy_lifecycle::Failover;
use serde_json::{Value, json};

const ZONE: &str = "Z0BENCH";
const RECORD: &str = "api.example.com";
const BUCKET: &str = "kbha-state";
const PRIMARY_ALARM: &str = "kbha-api-primary-unhealthy";

/// What the stub saw: requests in order (S3 ones with their `bucket/key`, health checks
/// with their id, DescribeAlarms with its region and alarm names), when the change batch
/// arrived, the bodies of the objects written in order, and the objects as they stand
/// (the state object, and any other the function writes and reads back).
#[derive(Default)]
struct Seen {
    ops: Vec<String>,
    change_at: Option<Instant>,
    puts: Vec<Vec<u8>>,
    objects: HashMap<String, (Vec<u8>, u64)>,
    etags: u64,
    /// Health checks all report success (the idle ticks); otherwise the primary's fails.
    all_healthy: bool,
}

/// A loopback AWS endpoint for the calls the failover function makes. One thread per
/// connection (the SDK keeps one or two alive); every answer is canned and immediate.
struct Stub {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

impl Stub {
    fn start() -> Result<Stub> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let seen = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = conn.set_nodelay(true);
                    let _ = serve_connection(conn, &seen);
                });
            }
        });
        Ok(Stub { url, seen })
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the state object and the log: each invocation starts as the first event
    /// of a fresh deployment (no cooldown, no remembered events).
    fn reset(&self) {
        let mut s = self.seen();
        s.ops.clear();
        s.change_at = None;
        s.puts.clear();
        s.objects.clear();
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    /// The region of the SigV4 credential scope (`Credential=<key>/<date>/<region>/...`).
    region: String,
    body: Vec<u8>,
    arrived: Instant,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let arrived = Instant::now();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let (mut length, mut chunked, mut aws_chunked, mut expect) = (0usize, false, false, false);
    let mut region = String::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((h, ""));
        let value = value.trim().to_ascii_lowercase();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().context("content-length")?,
            "transfer-encoding" => chunked = value.contains("chunked"),
            "content-encoding" => aws_chunked = value.contains("aws-chunked"),
            "expect" => expect = value == "100-continue",
            "authorization" => {
                let scope = value.split("credential=").nth(1).unwrap_or_default();
                region = scope.split('/').nth(2).unwrap_or_default().to_owned();
            }
            _ => {}
        }
    }
    if expect {
        r.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = if chunked {
        read_chunks(r)?
    } else {
        let mut b = vec![0; length];
        r.read_exact(&mut b)?;
        b
    };
    if aws_chunked {
        // S3's aws-chunked framing (checksum trailer): keep the payload only.
        body = read_chunks(&mut BufReader::new(&body[..]))?;
    }
    Ok(Some(Request { method, path, region, body, arrived }))
}

/// `<hex size>[;ext]\r\n<data>\r\n ... 0\r\n<trailers>\r\n`.
fn read_chunks(r: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let hex = size.trim().split(';').next().unwrap_or_default();
        let n = usize::from_str_radix(hex, 16).with_context(|| format!("chunk size {size:?}"))?;
        if n == 0 {
            // Trailers until the empty line (or the end of an in-memory body).
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(out);
                }
            }
        }
        let start = out.len();
        out.resize(start + n, 0);
        r.read_exact(&mut out[start..])?;
        let mut crlf = String::new();
        r.read_line(&mut crlf)?;
    }
}

fn serve_connection(conn: TcpStream, seen: &Mutex<Seen>) -> Result<()> {
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r)? {
        let (status, headers, body) = answer(&req, seen);
        let mut out =
            format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nx-amz-request-id: stub\r\nx-amzn-RequestId: stub\r\n", body.len());
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let stream = r.get_mut();
        stream.write_all(out.as_bytes())?;
        stream.write_all(&body)?;
    }
    Ok(())
}

const R53: &str = "https://route53.amazonaws.com/doc/2013-04-01/";
const CLOUDWATCH: &str = "http://monitoring.amazonaws.com/doc/2010-08-01/";

/// The parameters of an `application/x-www-form-urlencoded` body (an AWS query
/// protocol request: SNS, CloudWatch), in order.
fn form(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut bytes = s.bytes();
        while let Some(b) = bytes.next() {
            match b {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                    match std::str::from_utf8(&hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(v) => out.push(v),
                        None => {
                            out.push(b'%');
                            out.extend(hex);
                        }
                    }
                }
                b => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The `Action` of an AWS query protocol request, and DescribeAlarms' `AlarmNames`.
fn query_action(body: &[u8]) -> (String, Vec<String>) {
    let params = form(body);
    let action = params.iter().find(|(k, _)| k == "Action").map(|(_, v)| v.clone()).unwrap_or_default();
    let names = params.into_iter().filter(|(k, _)| k.starts_with("AlarmNames.member.")).map(|(_, v)| v).collect();
    (action, names)
}

/// The canned answer to one request (status line, extra headers, body).
fn answer(req: &Request, seen: &Mutex<Seen>) -> (&'static str, Vec<(&'static str, String)>, Vec<u8>) {
    let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let path = req.path.split('?').next().unwrap_or_default();
    let xml = |body: String| ("200 OK", vec![("Content-Type", "text/xml".to_owned())], body.into_bytes());
    if let Some(rest) = path.strip_prefix("/2013-04-01/") {
        if let Some(check) = rest.strip_prefix("healthcheck/") {
            let id = check.split('/').next().unwrap_or_default();
            s.ops.push(format!("route53:GetHealthCheckStatus {id}"));
            let status = if rest.contains("primary") && !s.all_healthy {
                "Failure: HTTP Status Code 503"
            } else {
                "Success: HTTP Status Code 200, OK"
            };
            let obs: String = ["us-east-1", "eu-west-1", "ap-southeast-1"]
                .iter()
                .map(|r| format!("<HealthCheckObservation><Region>{r}</Region><IPAddress>192.0.2.1</IPAddress><StatusReport><Status>{status}</Status><CheckedTime>2026-11-26T10:00:00Z</CheckedTime></StatusReport></HealthCheckObservation>"))
                .collect();
            return xml(format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><GetHealthCheckStatusResponse xmlns="{R53}"><HealthCheckObservations>{obs}</HealthCheckObservations></GetHealthCheckStatusResponse>"#
            ));
        }
        if let Some(id) = rest.strip_prefix("change/") {
            // The ledger asks whether the change is INSYNC yet.
            s.ops.push(format!("route53:GetChange {id}"));
            return xml(format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><GetChangeResponse xmlns="{R53}"><ChangeInfo><Id>/change/{id}</Id><Status>INSYNC</Status><SubmittedAt>2026-11-26T10:00:00.000Z</SubmittedAt></ChangeInfo></GetChangeResponse>"#
            ));
        }
        if req.method == "POST" {
            s.ops.push("route53:ChangeResourceRecordSets".into());
            s.change_at = Some(req.arrived);
            return xml(format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsResponse xmlns="{R53}"><ChangeInfo><Id>/change/C0BENCH</Id><Status>PENDING</Status><SubmittedAt>2026-11-26T10:00:00.000Z</SubmittedAt><Comment>bench</Comment></ChangeInfo></ChangeResourceRecordSetsResponse>"#
            ));
        }
        s.ops.push("route53:ListResourceRecordSets".into());
        let rrs: String = [("primary", 100, "192.0.2.10"), ("secondary", 0, "198.51.100.10")]
            .iter()
            .map(|(id, w, ip)| format!("<ResourceRecordSet><Name>{RECORD}.</Name><Type>A</Type><SetIdentifier>{id}</SetIdentifier><Weight>{w}</Weight><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>{ip}</Value></ResourceRecord></ResourceRecords><HealthCheckId>hc-{id}</HealthCheckId></ResourceRecordSet>"))
            .collect();
        return xml(format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><ListResourceRecordSetsResponse xmlns="{R53}"><ResourceRecordSets>{rrs}</ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>300</MaxItems></ListResourceRecordSetsResponse>"#
        ));
    }
    if req.method == "POST" && path == "/" {
        // The AWS query protocol (SNS, CloudWatch): the action is in the form body.
        let (action, names) = query_action(&req.body);
        match action.as_str() {
            "Publish" => {
                s.ops.push("sns:Publish".into());
                return xml(r#"<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult><MessageId>0b5e7c1e-bench-4c6e-9d0a-000000000001</MessageId></PublishResult><ResponseMetadata><RequestId>stub</RequestId></ResponseMetadata></PublishResponse>"#.to_owned());
            }
            "DescribeAlarms" => {
                // Every asked alarm is a metric alarm in OK since the stub started, an hour
                // before (a fixed time, as CloudWatch reports it: a moving one would look like
                // a new transition on every tick).
                s.ops.push(format!("cloudwatch:DescribeAlarms {} {}", req.region, names.join(" ")));
                static STARTED_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
                let since_ms = *STARTED_MS.get_or_init(|| kbha_lambda::lambda::now_ms() - 3_600_000);
                let since = aws_sdk_s3::primitives::DateTime::from_millis(since_ms)
                    .fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime)
                    .unwrap_or_default();
                let members: String = names
                    .iter()
                    .map(|n| format!("<member><AlarmName>{n}</AlarmName><AlarmArn>arn:aws:cloudwatch:{}:111122223333:alarm:{n}</AlarmArn><StateValue>OK</StateValue><StateReason>bench</StateReason><StateUpdatedTimestamp>{since}</StateUpdatedTimestamp></member>", req.region))
                    .collect();
                return xml(format!(
                    r#"<DescribeAlarmsResponse xmlns="{CLOUDWATCH}"><DescribeAlarmsResult><MetricAlarms>{members}</MetricAlarms><CompositeAlarms/></DescribeAlarmsResult><ResponseMetadata><RequestId>stub</RequestId></ResponseMetadata></DescribeAlarmsResponse>"#
                ));
            }
            other => {
                // A call the bench does not know: recorded (the baseline then refuses
                // it) and answered with an error, so the handler fails too.
                s.ops.push(format!("query:{other}"));
                return (
                    "400 Bad Request",
                    vec![("Content-Type", "text/xml".to_owned())],
                    format!(r#"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>the kbha bench stub does not answer `{other}`</Message></Error><RequestId>stub</RequestId></ErrorResponse>"#).into_bytes(),
                );
            }
        }
    }
    // S3, path style: /<bucket>/<key>. Objects the function wrote are served back; a
    // replication status is canned; anything else is absent.
    let object = path.trim_start_matches('/').to_owned();
    let key = object.split_once('/').map(|(_, k)| k).unwrap_or_default().to_owned();
    let name = match req.method.as_str() {
        "PUT" => "PutObject",
        "HEAD" => "HeadObject",
        "DELETE" => "DeleteObject",
        _ => "GetObject",
    };
    s.ops.push(format!("s3:{name} {object}"));
    match name {
        "PutObject" => {
            s.etags += 1;
            let tag = s.etags;
            s.puts.push(req.body.clone());
            s.objects.insert(object, (req.body.clone(), tag));
            return ("200 OK", vec![("ETag", format!("\"{tag}\""))], vec![]);
        }
        "DeleteObject" => {
            s.objects.remove(&object);
            return ("204 No Content", vec![], vec![]);
        }
        _ => {}
    }
    let found = match s.objects.get(&object) {
        Some((body, tag)) => Some((body.clone(), format!("\"{tag}\""))),
        None => key.strip_prefix("replication/").and_then(|k| k.strip_suffix(".json")).map(|region| {
            let now = kbha_lambda::lambda::now_ms();
            let body = json!({"region": region, "newest_verified_backup_at_ms": now - 60_000, "key": "chromadb/backup.tar.gz", "source": "chromadb"});
            (body.to_string().into_bytes(), "\"r1\"".to_owned())
        }),
    };
    match (found, name) {
        // HEAD: the headers a GET would have, no body (Content-Length then says 0, which
        // the SDK's HeadObject does not read).
        (Some((_, etag)), "HeadObject") => ("200 OK", vec![("ETag", etag)], vec![]),
        (Some((body, etag)), _) => ("200 OK", vec![("Content-Type", "application/json".into()), ("ETag", etag)], body),
        (None, "HeadObject") => ("404 Not Found", vec![], vec![]),
        (None, _) => (
            "404 Not Found",
            vec![("Content-Type", "application/xml".into())],
            format!(r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>{key}</Key><RequestId>stub</RequestId></Error>"#).into_bytes(),
        ),
    }
}

/// Timings of one path, in microseconds, sorted.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    /// Start to the change request's arrival at the stub.
    pub to_change_us: Vec<f64>,
    /// Start to the end of the invocation.
    pub whole_us: Vec<f64>,
    /// Requests the stub saw before the change batch, and after it.
    pub ops: Vec<String>,
}

impl Timings {
    fn push(&mut self, start: Instant, change_at: Option<Instant>, end: Instant) -> Result<()> {
        let change_at = change_at.context("the stub saw no ChangeResourceRecordSets")?;
        self.to_change_us.push((change_at - start).as_secs_f64() * 1e6);
        self.whole_us.push((end - start).as_secs_f64() * 1e6);
        Ok(())
    }

    fn finish(&mut self) {
        self.to_change_us.sort_by(f64::total_cmp);
        self.whole_us.sort_by(f64::total_cmp);
    }
}

/// p50 and p99 of sorted microseconds.
pub fn p50_p99(sorted: &[f64]) -> (f64, f64) {
    if sorted.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

/// The child's result record.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Overhead {
    /// The failover handler.
    pub kbha: Timings,
    /// The same calls through the adapters, no handler.
    pub sdk_only: Timings,
    /// Schedule ticks of a healthy deployment (the idle cost).
    pub idle: IdleTicks,
}

/// Schedule ticks with every target healthy and every alarm OK, after the first tick wrote
/// the state: what the function costs when nothing happens.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct IdleTicks {
    /// The AWS calls of the last tick.
    pub ops: Vec<String>,
    /// Whole invocation, sorted microseconds.
    pub whole_us: Vec<f64>,
    /// Bytes the tick printed (decision record and metrics line: the CloudWatch Logs ingestion).
    pub log_bytes: usize,
}

/// `n` idle ticks against the stub.
async fn idle_ticks<D, A, S, N>(function: &FailoverFunction<D, A, S, N>, stub: &Stub, n: usize) -> Result<IdleTicks>
where
    D: Dns,
    A: Alarms,
    S: ObjectStore,
    N: Notifier,
{
    stub.reset();
    stub.seen().all_healthy = true;
    let mut idle = IdleTicks::default();
    for i in 0..n + 1 {
        let now = kbha_lambda::lambda::now_ms();
        let bytes = serde_json::to_vec(&kbha_integration::tick(now, &format!("idle-{i}"))?)?;
        stub.seen().ops.clear();
        let start = Instant::now();
        let event: Value = serde_json::from_slice(&bytes)?;
        let records = function
            .handle(&event, Invocation::at(now))
            .await
            .map_err(|e| anyhow::anyhow!("an idle tick failed against the stub: {e} (the stub saw {:?})", stub.seen().ops))?;
        let lines = format!(
            "{}\n{}\n",
            serde_json::to_string(&records)?,
            kbha_lambda::emf::metrics_line("failover", &serde_json::to_value(&records)?, now)
        );
        print!("{lines}");
        let elapsed = start.elapsed();
        if records.iter().any(|r| r.action == ActionTaken::Applied) {
            bail!("an idle tick moved traffic: {}", serde_json::to_string(&records)?);
        }
        // The first tick writes the state object for the first time; the rest are steady.
        if i > 0 {
            idle.whole_us.push(elapsed.as_secs_f64() * 1e6);
            idle.ops = stub.seen().ops.clone();
            idle.log_bytes = lines.len();
        }
    }
    idle.whole_us.sort_by(f64::total_cmp);
    stub.seen().all_healthy = false;
    Ok(idle)
}

fn env() -> BTreeMap<String, String> {
    let targets = json!([
        {"set_identifier": "primary", "region": "us-east-1", "primary": true, "alarms": [PRIMARY_ALARM]},
        {"set_identifier": "secondary", "region": "us-west-2", "alarms": ["kbha-api-secondary-unhealthy"]},
    ]);
    [
        ("KBHA_HOSTED_ZONE_ID", ZONE.to_owned()),
        ("KBHA_RECORD_NAME", RECORD.to_owned()),
        ("KBHA_NOTIFY_TOPIC_ARN", "arn:aws:sns:us-east-1:111122223333:kbha-notices".to_owned()),
        ("KBHA_STATE_BUCKET", BUCKET.to_owned()),
        ("KBHA_REPLICATION_STATUS", format!("s3://{BUCKET}/replication/")),
        ("KBHA_TARGETS", targets.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The child: runs `n` invocations of each path (after a warm-up) and prints the
/// `kbha.bench.overhead` record as its last stdout line.
pub fn child(n: usize) -> Result<()> {
    // As the Lambda binary runs (`#[tokio::main]`: multi-thread).
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let out = rt.block_on(measure(n))?;
    println!("{}", json!({"record": "kbha.bench.overhead", "result": out}));
    Ok(())
}

async fn measure(n: usize) -> Result<Overhead> {
    let stub = Stub::start()?;
    let settings = AwsSettings { endpoint_url: Some(stub.url.clone()), region: Some("us-east-1".into()), ..AwsSettings::default() };
    let conf = kbha_aws::config_loader(&settings)
        .credentials_provider(aws_sdk_s3::config::Credentials::new("bench", "bench", None, None, "kbha-bench"))
        .load()
        .await;
    let env = env();
    let cfg = FailoverConfig::from_lookup(|k| env.get(k).cloned())?;
    let policies = kbha_failover::Policies::single(kbha_policy_lifecycle::builtin::<Failover>()?);
    let (dns, store, notifier) = (Route53Dns::from_conf(&conf), S3Store::from_conf(&conf), SnsNotifier::from_conf(&conf));
    let alarms = CloudWatchAlarms::from_conf(&conf);
    let function = FailoverFunction::new(cfg, dns.clone(), alarms.clone(), store.clone(), notifier.clone(), policies);

    let mut kbha = Timings::default();
    // The bodies of the objects the handler's last invocation wrote, in order.
    let mut puts = Vec::new();
    let warm = n.min(50);
    for i in 0..warm + n {
        let now = kbha_lambda::lambda::now_ms();
        let event = kbha_integration::alarm_event(
            kbha_integration::Shape::Sns,
            PRIMARY_ALARM,
            "us-east-1",
            "ALARM",
            now - 5_000,
            &format!("bench-{i}"),
        )?;
        // The event as Lambda hands it over: bytes, parsed in the timed part.
        let bytes = serde_json::to_vec(&event)?;
        stub.reset();
        let start = Instant::now();
        let event: Value = serde_json::from_slice(&bytes)?;
        let records = match function.handle(&event, Invocation::at(kbha_lambda::lambda::now_ms())).await {
            Ok(records) => records,
            Err(e) => bail!("the failover function failed against the stub: {e} (the stub saw {:?})", stub.seen().ops),
        };
        // What `kbha_lambda::lambda::serve` does after the handler: the metrics line.
        println!("{}", kbha_lambda::emf::metrics_line("failover", &serde_json::to_value(&records)?, now));
        let end = Instant::now();
        if records.first().map(|r| r.action) != Some(ActionTaken::Applied) {
            bail!("the failover function did not shift traffic against the stub: {}", serde_json::to_string(&records)?);
        }
        let seen = stub.seen();
        if i >= warm {
            kbha.push(start, seen.change_at, end)?;
        }
        kbha.ops = seen.ops.clone();
        puts = seen.puts.clone();
    }
    kbha.finish();

    // Baseline: the same calls, in the same order, through the same adapters.
    let (before, after) = kbha.ops.split_at(kbha.ops.iter().position(|o| o.ends_with("ChangeResourceRecordSets")).unwrap_or(0));
    let mut sdk_only = Timings::default();
    let message = json!({"kind": "kbha.notice", "summary": "traffic shifted: primary 0, secondary 100"}).to_string();
    let attributes = BTreeMap::from([("severity".to_owned(), "warning".to_owned()), ("source".to_owned(), "kbha.failover".to_owned())]);
    for i in 0..warm + n {
        stub.reset();
        let start = Instant::now();
        let mut records = Vec::new();
        let mut etags: HashMap<&str, String> = HashMap::new();
        let mut bodies = puts.iter();
        for op in before.iter().chain(after) {
            let (name, object) = op.split_once(' ').unwrap_or((op.as_str(), ""));
            let (bucket, key) = object.split_once('/').unwrap_or((BUCKET, object));
            match name {
                "s3:GetObject" => {
                    if let Some(o) = store.get(bucket, key).await? {
                        etags.insert(object, o.etag);
                    }
                }
                "s3:HeadObject" => {
                    store.head(bucket, key).await?;
                }
                "s3:PutObject" => {
                    // Create-once, then compare-and-swap on the ETag last read or written,
                    // as the handler writes the state object.
                    let cond = etags.remove(object).map_or(PutCondition::IfNoneMatch, PutCondition::IfMatch);
                    let body = bodies.next().cloned().unwrap_or_else(|| b"{}".to_vec());
                    let etag = store.put(bucket, key, body, cond).await?;
                    etags.insert(object, etag);
                }
                "route53:ListResourceRecordSets" => records = dns.weighted_records(ZONE, RECORD, "A").await?,
                "route53:GetHealthCheckStatus" => {
                    dns.health_status(object).await?;
                }
                "route53:GetChange" => {
                    dns.change_status(object).await?;
                }
                "cloudwatch:DescribeAlarms" => {
                    let mut words = object.split_whitespace();
                    let region = words.next().unwrap_or_default();
                    let names: Vec<String> = words.map(str::to_owned).collect();
                    let states = alarms.alarm_states(region, &names).await?;
                    if states.len() != names.len() {
                        bail!("the stub answered {} of the {} alarms asked in {region}", states.len(), names.len());
                    }
                }
                "route53:ChangeResourceRecordSets" => {
                    let swaps = kbha_aws::swaps_for_weights(&records, [("primary", 0), ("secondary", 100)])
                        .map_err(|u| anyhow::anyhow!("unknown targets {u:?}"))?;
                    dns.swap_records(ZONE, &swaps, "kbha failover (bench): primary alarm").await?;
                }
                "sns:Publish" => {
                    notifier
                        .publish(
                            "arn:aws:sns:us-east-1:111122223333:kbha-notices",
                            "[kbha warning] api: traffic shifted",
                            &message,
                            &attributes,
                        )
                        .await?;
                }
                other => bail!("no baseline call for {other} (the failover handler makes a call the bench does not know)"),
            }
        }
        let end = Instant::now();
        let seen = stub.seen();
        if i >= warm {
            sdk_only.push(start, seen.change_at, end)?;
        }
        sdk_only.ops = seen.ops.clone();
    }
    sdk_only.finish();
    if sdk_only.ops != kbha.ops {
        bail!("the baseline made other calls than the handler: {:?} vs {:?}", sdk_only.ops, kbha.ops);
    }
    let idle = idle_ticks(&function, &stub, n).await?;
    Ok(Overhead { kbha, sdk_only, idle })
}

/// Runs the child (`current_exe bench --overhead-child n`) and returns its record.
pub fn run_child(n: usize) -> Result<Overhead> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(&exe)
        .args(["bench", "--overhead-child", &n.to_string()])
        .env("RUST_LOG", "off")
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| exe.display().to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("overhead child failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let line = stdout.lines().rev().find(|l| l.contains("\"kbha.bench.overhead\"")).context("no kbha.bench.overhead record")?;
    let v: Value = serde_json::from_str(line)?;
    Ok(serde_json::from_value(v["result"].clone())?)
}
