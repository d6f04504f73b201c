//! Cost of running (issue 19): what the stack costs a month when nothing happens.
//!
//! Measured: the failover function's idle schedule tick against the bench's loopback AWS
//! stub (its AWS calls, counted by the stub; its warm duration; the bytes it logs). Read from
//! `infra/template.yaml`: the tick and dead-man schedules, the functions' memory, the log
//! retention, the alarms and health checks it creates. Priced at us-east-1 list prices
//! (below, dated), without the free tier, at 730 hours a month.
//!
//! Not measured: the AWS latency a real tick waits for (the stub answers at once), so each
//! call is billed [`ASSUMED_CALL_MS`] as if the calls ran one after another (an upper bound:
//! the handler makes its reads concurrently); the verifier's dead-man tick is not run against
//! the stub and is costed as a failover tick.

use std::path::Path;

use super::overhead::IdleTicks;
use super::{Row, row};

/// us-east-1 list prices, read 2026-12 (USD).
mod price {
    /// Lambda on arm64, per GB-second.
    pub const LAMBDA_GB_S: f64 = 0.000_013_333_4;
    /// Lambda, per request.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// S3 Standard GET and HEAD, per request.
    pub const S3_GET: f64 = 0.0004 / 1e3;
    /// S3 Standard PUT, COPY, POST, LIST, per request.
    pub const S3_PUT: f64 = 0.005 / 1e3;
    /// CloudWatch API requests other than GetMetricData (DescribeAlarms), per request.
    pub const CLOUDWATCH_API: f64 = 0.01 / 1e3;
    /// CloudWatch Logs ingestion, per GB.
    pub const LOGS_INGEST_GB: f64 = 0.50;
    /// CloudWatch Logs storage, per GB-month (charged on compressed size: an upper bound here).
    pub const LOGS_STORE_GB_MONTH: f64 = 0.03;
    /// A standard-resolution metric alarm, per month.
    pub const ALARM: f64 = 0.10;
    /// A Route 53 health check of an AWS endpoint, per month.
    pub const HEALTH_CHECK: f64 = 0.50;
    /// EC2 t4g.nano on demand, per hour, and an 8 GB gp3 root volume per month: the smallest
    /// instance the guide's always-on polling script could run on.
    pub const T4G_NANO_HOUR: f64 = 0.0042;
    /// gp3, per GB-month.
    pub const GP3_GB_MONTH: f64 = 0.08;
}

/// Route 53 API calls are free; invocations of EventBridge rules on a schedule are free.
const HOURS_A_MONTH: f64 = 730.0;
/// Billed per AWS call a tick makes, for the latency the stub does not have.
const ASSUMED_CALL_MS: f64 = 20.0;

/// What the template says about the idle stack.
struct Template {
    tick_minutes: f64,
    dead_man_minutes: f64,
    memory_gb: f64,
    retention_days: f64,
    alarms: usize,
    health_checks: usize,
}

fn minutes_of(rate: &str) -> Option<f64> {
    let inner = rate.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.split_once(' ')?;
    let n: f64 = n.parse().ok()?;
    Some(match unit.trim_end_matches('s') {
        "minute" => n,
        "hour" => n * 60.0,
        "day" => n * 1440.0,
        _ => return None,
    })
}

/// The line after `key:` inside the block that starts at `anchor`.
fn value_after(text: &str, anchor: &str, key: &str) -> Option<String> {
    let from = text.find(anchor)?;
    text[from..].lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
}

fn read_template(path: &Path) -> anyhow::Result<Template> {
    let text = std::fs::read_to_string(path)?;
    let need = |what: &str, v: Option<f64>| v.ok_or_else(|| anyhow::anyhow!("{what} not found in {}", path.display()));
    let count = |ty: &str| text.lines().filter(|l| l.trim() == format!("Type: {ty}")).count();
    Ok(Template {
        tick_minutes: need(
            "the failover tick (Schedule: rate(...))",
            value_after(&text, "  FailoverFunction:", "Schedule: rate(").and_then(|v| minutes_of(&format!("rate({v}"))),
        )?,
        dead_man_minutes: need(
            "DeadManSchedule's default",
            value_after(&text, "  DeadManSchedule:", "Default:").and_then(|v| minutes_of(&v)),
        )?,
        memory_gb: need(
            "the failover function's MemorySize",
            value_after(&text, "  FailoverFunction:", "MemorySize:").and_then(|v| v.parse::<f64>().ok()),
        )? / 1024.0,
        retention_days: need(
            "LogRetentionDays' default",
            value_after(&text, "  LogRetentionDays:", "Default:").and_then(|v| v.parse().ok()),
        )?,
        alarms: count("AWS::CloudWatch::Alarm"),
        health_checks: count("AWS::Route53::HealthCheck"),
    })
}

/// USD a month of one function ticking every `minutes` with the failover tick's figures,
/// the GB-seconds of one tick, and the share of the CloudWatch API requests in the USD.
fn monthly(idle: &IdleTicks, minutes: f64, memory_gb: f64, retention_days: f64) -> (f64, f64, f64) {
    let ticks = HOURS_A_MONTH * 60.0 / minutes;
    let p50_ms = super::overhead::p50_p99(&idle.whole_us).0 / 1e3;
    let billed_ms = (p50_ms + idle.ops.len() as f64 * ASSUMED_CALL_MS).ceil();
    let gb_s = memory_gb * billed_ms / 1e3;
    let per = |prefix: &str| idle.ops.iter().filter(|o| o.starts_with(prefix)).count() as f64;
    let requests = (per("s3:GetObject") + per("s3:HeadObject")) * price::S3_GET
        + per("s3:PutObject") * price::S3_PUT
        + per("cloudwatch:") * price::CLOUDWATCH_API;
    let logs_gb = idle.log_bytes as f64 * ticks / 1e9;
    let logs = logs_gb * price::LOGS_INGEST_GB + logs_gb * (retention_days / 30.4) * price::LOGS_STORE_GB_MONTH;
    (
        ticks * (gb_s * price::LAMBDA_GB_S + price::LAMBDA_REQUEST + requests) + logs,
        gb_s,
        ticks * per("cloudwatch:") * price::CLOUDWATCH_API,
    )
}

/// The cost-of-running rows, from the idle ticks the overhead child measured.
pub fn rows(idle: &IdleTicks, template: &Path, rows: &mut Vec<Row>) {
    let t = match read_template(template) {
        Ok(t) => t,
        Err(e) => {
            rows.push(row("cost of running", format!("skipped: {e}"), "-".into(), "-".into(), "-"));
            return;
        }
    };
    let mut by_service = std::collections::BTreeMap::<&str, usize>::new();
    for op in &idle.ops {
        *by_service.entry(op.split(':').next().unwrap_or("?")).or_default() += 1;
    }
    let calls: Vec<String> = by_service.iter().map(|(s, n)| format!("{s} {n}")).collect();
    let usd = |v: f64| format!("{v:.2} USD");
    let (failover, gb_s, failover_cw) = monthly(idle, t.tick_minutes, t.memory_gb, t.retention_days);
    let (verifier, _, verifier_cw) = monthly(idle, t.dead_man_minutes, t.memory_gb, t.retention_days);
    rows.push(row(
        &format!("AWS calls per idle tick, failover (every {} min; counted by the stub)", t.tick_minutes),
        format!("{} ({})", idle.ops.len(), calls.join(", ")),
        "-".into(),
        "-".into(),
        "-",
    ));
    rows.push(row(
        "AWS calls per invocation, alert router when idle / verifier dead-man tick",
        "0 (not invoked) / not run against the stub: costed as a failover tick".into(),
        "-".into(),
        "-".into(),
        "-",
    ));
    rows.push(row(
        &format!(
            "Lambda GB-s per idle tick ({:.0} MB; billed: warm p50 + {ASSUMED_CALL_MS:.0} ms per call for AWS latency)",
            t.memory_gb * 1024.0
        ),
        format!("{gb_s:.4} GB-s"),
        "-".into(),
        "-".into(),
        "-",
    ));
    let polling = HOURS_A_MONTH * price::T4G_NANO_HOUR + 8.0 * price::GP3_GB_MONTH;
    let functions = failover + verifier;
    let goal = "whole stack < 1 USD a month";
    rows.push(row(
        &format!(
            "idle monthly, the functions (failover ticks, dead-man every {} min, router 0: Lambda, S3/CloudWatch requests, {} B of logs a tick kept {} days)",
            t.dead_man_minutes, idle.log_bytes, t.retention_days
        ),
        format!(
            "{} ({} of it DescribeAlarms, which CloudWatch's always-free 1 M API requests a month cover)",
            usd(functions),
            usd(failover_cw + verifier_cw)
        ),
        format!("always-on polling script on t4g.nano + 8 GB gp3 {}", usd(polling)),
        format!("{:.2}x", functions / polling),
        goal,
    ));
    let monitoring = t.alarms as f64 * price::ALARM + t.health_checks as f64 * price::HEALTH_CHECK;
    rows.push(row(
        &format!("idle monthly, the template's {} alarms and {} Route 53 health checks", t.alarms, t.health_checks),
        usd(monitoring),
        "-".into(),
        "-".into(),
        "-",
    ));
    rows.push(row(
        "idle monthly, whole stack",
        usd(functions + monitoring),
        usd(polling),
        format!("{:.2}x", (functions + monitoring) / polling),
        goal,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_minutes() {
        assert_eq!(minutes_of("rate(1 minute)"), Some(1.0));
        assert_eq!(minutes_of("rate(15 minutes)"), Some(15.0));
        assert_eq!(minutes_of("rate(1 day)"), Some(1440.0));
        assert_eq!(minutes_of("cron(0 * * * ? *)"), None);
    }

    #[test]
    fn the_repository_template_is_read() {
        let t = read_template(&super::super::workspace().join("infra/template.yaml")).expect("template");
        assert_eq!(t.tick_minutes, 1.0);
        assert!(t.dead_man_minutes >= 1.0 && t.memory_gb > 0.0 && t.alarms > 0, "{} {} {}", t.dead_man_minutes, t.memory_gb, t.alarms);
    }

    #[test]
    fn a_tick_a_minute_is_priced_from_its_calls_duration_and_logs() {
        let idle = IdleTicks {
            ops: vec!["s3:GetObject state".into(), "route53:ListResourceRecordSets".into()],
            whole_us: vec![2_000.0],
            log_bytes: 1_000,
        };
        let (usd, gb_s, cloudwatch) = monthly(&idle, 1.0, 0.25, 30.4);
        assert_eq!(cloudwatch, 0.0);
        // 2 ms + 2 calls x 20 ms = 42 ms at 0.25 GB.
        assert!((gb_s - 0.0105).abs() < 1e-9, "{gb_s}");
        let ticks = 43_800.0;
        let want = ticks * (0.0105 * price::LAMBDA_GB_S + price::LAMBDA_REQUEST + price::S3_GET) + 0.0438 * (0.5 + 0.03);
        assert!((usd - want).abs() < 1e-9, "{usd} vs {want}");
    }
}
