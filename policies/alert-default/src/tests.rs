//! One test per rule of [`decide`](super::decide).

use super::*;
use kbha_policy_sdk::types::{ActiveAlert, AlertStatus, ConfigEntry, IncomingAlert};

const NOW: i64 = 1_795_687_200_000; // 2026-11-26T10:00:00Z, a Thursday

fn alarm(name: &str, region: &str, labels: &[(&str, &str)]) -> IncomingAlert {
    IncomingAlert {
        source: AlertSource::Cloudwatch,
        name: name.into(),
        status: AlertStatus::Firing,
        region: Some(region.into()),
        severity_hint: None,
        summary: format!("ALARM: {name}"),
        body: "{}".into(),
        labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        at: NOW - 1000,
    }
}

fn input(alert: IncomingAlert, active: Vec<ActiveAlert>, config: &[(&str, &str)]) -> AlertInput {
    AlertInput {
        now: NOW,
        event_id: "m-1".into(),
        alert,
        active,
        config: config.iter().map(|(k, v)| ConfigEntry { key: (*k).into(), value: (*v).into() }).collect(),
    }
}

fn active(name: &str, region: &str) -> ActiveAlert {
    ActiveAlert {
        dedup_key: format!("cloudwatch/{name}/{region}"),
        name: name.into(),
        region: Some(region.into()),
        severity: Severity::Critical,
        labels: vec![],
        since: NOW - 60_000,
    }
}

fn ok(i: &AlertInput) -> AlertDecision {
    decide(i).unwrap_or_else(|e| panic!("refused: {e:?}"))
}

#[test]
fn hint_sets_severity_and_destination() {
    let mut a = alarm("kbha-api-primary-unhealthy", "us-east-1", &[]);
    a.severity_hint = Some(Severity::Critical);
    let d = ok(&input(a, vec![], &[]));
    assert_eq!(d.severity, Severity::Critical);
    assert_eq!(d.destinations, ["critical"]);
    assert_eq!(d.dedup_key, "cloudwatch/kbha-api-primary-unhealthy/us-east-1");
    assert_eq!(d.group_key, "region=us-east-1");
    assert_eq!(d.suppress, None);
    assert!(d.reason.contains("goes to critical"), "{}", d.reason);
}

#[test]
fn no_hint_takes_the_default_severity() {
    let d = ok(&input(alarm("x", "us-east-1", &[]), vec![], &[]));
    assert_eq!((d.severity, d.destinations.as_slice()), (Severity::Warning, ["warning".to_owned()].as_slice()));
    let d = ok(&input(alarm("x", "us-east-1", &[]), vec![], &[("default_severity", "info")]));
    assert_eq!(d.severity, Severity::Info);
}

#[test]
fn first_matching_route_decides() {
    let routes = r#"[{"name":"db","match":{"service":["chromadb","redis"]},"severity":"critical","destinations":["critical","db-team"]},
                     {"name":"all-db","match":{"service":"*"},"severity":"info"}]"#;
    let d = ok(&input(alarm("x", "us-east-1", &[("service", "redis")]), vec![], &[("routes", routes)]));
    assert_eq!(d.severity, Severity::Critical);
    assert_eq!(d.destinations, ["critical", "db-team"]);
    assert!(d.reason.contains("route `db`"), "{}", d.reason);
    let d = ok(&input(alarm("x", "us-east-1", &[("service", "api")]), vec![], &[("routes", routes)]));
    assert_eq!((d.severity, d.destinations.as_slice()), (Severity::Info, ["info".to_owned()].as_slice()));
}

#[test]
fn destinations_map_is_configurable() {
    let mut a = alarm("x", "us-east-1", &[]);
    a.severity_hint = Some(Severity::Critical);
    let d = ok(&input(a, vec![], &[("destinations", r#"{"critical":["critical","pager"]}"#)]));
    assert_eq!(d.destinations, ["critical", "pager"]);
}

#[test]
fn notices_dedup_on_their_summary_and_senders_can_choose_the_key() {
    let mut n = alarm("kbha.failover.applied", "us-east-1", &[]);
    n.source = AlertSource::Kbha;
    n.summary = "traffic shifted: primary=0, secondary=100".into();
    let d = ok(&input(n.clone(), vec![], &[]));
    assert_eq!(d.dedup_key, "kbha/kbha.failover.applied/us-east-1/traffic shifted: primary=0, secondary=100");
    n.labels.push(("dedup_key".into(), "mine".into()));
    assert_eq!(ok(&input(n, vec![], &[])).dedup_key, "mine");
}

#[test]
fn open_maintenance_window_suppresses_matching_alerts_only() {
    let windows = r#"[{"name":"east-upgrade","start":"2026-11-26T09:00:00Z","end":"2026-11-26T11:00:00Z","match":{"region":"us-east-1"}}]"#;
    let cfg = [("maintenance_windows", windows)];
    let d = ok(&input(alarm("x", "us-east-1", &[]), vec![], &cfg));
    assert_eq!(d.suppress, Some(Suppression::MaintenanceWindow("east-upgrade".into())));
    assert!(d.reason.contains("maintenance window `east-upgrade`"), "{}", d.reason);
    assert_eq!(ok(&input(alarm("x", "us-west-2", &[]), vec![], &cfg)).suppress, None);
    let mut later = input(alarm("x", "us-east-1", &[]), vec![], &cfg);
    later.now = NOW + 2 * 3_600_000;
    assert_eq!(ok(&later).suppress, None, "closed at 11:00");
}

#[test]
fn weekly_window_opens_on_its_days() {
    let cfg = [("maintenance_windows", r#"[{"name":"thursday-patch","weekly":{"days":["thu"],"start":"09:30","end":"10:30"}}]"#)];
    assert_eq!(ok(&input(alarm("x", "r", &[]), vec![], &cfg)).suppress, Some(Suppression::MaintenanceWindow("thursday-patch".into())));
    let cfg = [("maintenance_windows", r#"[{"name":"friday-patch","weekly":{"days":["fri"],"start":"09:30","end":"10:30"}}]"#)];
    assert_eq!(ok(&input(alarm("x", "r", &[]), vec![], &cfg)).suppress, None);
}

#[test]
fn silence_applies_between_starts_and_until() {
    let cfg = [("silences", r#"[{"name":"canary","match":{"name":"kbha-canary-*"},"until":"2026-11-26T10:00:01Z"}]"#)];
    let d = ok(&input(alarm("kbha-canary-login", "r", &[]), vec![], &cfg));
    assert_eq!(d.suppress, Some(Suppression::Silence("canary".into())));
    assert_eq!(ok(&input(alarm("kbha-api", "r", &[]), vec![], &cfg)).suppress, None);
    let cfg = [("silences", r#"[{"name":"canary","match":{"name":"kbha-canary-*"},"until":"2026-11-26T10:00:00Z"}]"#)];
    assert_eq!(ok(&input(alarm("kbha-canary-login", "r", &[]), vec![], &cfg)).suppress, None, "expired");
}

#[test]
fn region_down_inhibits_alerts_of_its_region_only() {
    let down = active("kbha-primary-region-down", "us-east-1");
    let d = ok(&input(alarm("kbha-chromadb-latency", "us-east-1", &[]), vec![down.clone()], &[]));
    assert_eq!(d.suppress, Some(Suppression::InhibitedBy("cloudwatch/kbha-primary-region-down/us-east-1".into())));
    assert!(d.reason.contains("rule `region-down`"), "{}", d.reason);
    let other = ok(&input(alarm("kbha-chromadb-latency", "us-west-2", &[]), vec![down.clone()], &[]));
    assert_eq!(other.suppress, None);
    let itself = ok(&input(alarm("kbha-primary-region-down", "us-east-1", &[]), vec![down.clone()], &[]));
    assert_eq!(itself.suppress, None, "an alert never inhibits itself");
    let off = ok(&input(alarm("kbha-chromadb-latency", "us-east-1", &[]), vec![down], &[("inhibit_rules", "[]")]));
    assert_eq!(off.suppress, None);
}

#[test]
fn a_non_matching_active_alert_inhibits_nothing() {
    let d = ok(&input(alarm("kbha-chromadb-latency", "us-east-1", &[]), vec![active("kbha-api-primary-unhealthy", "us-east-1")], &[]));
    assert_eq!(d.suppress, None);
}

#[test]
fn custom_inhibit_rule_with_label_equality() {
    let rules = r#"[{"name":"db-down","source":{"name":"*-down","service":"*"},"target":{"severity":"warning"},"equal":["service"]}]"#;
    let mut src = active("chroma-down", "us-east-1");
    src.labels.push(("service".into(), "chromadb".into()));
    let cfg = [("inhibit_rules", rules)];
    let d = ok(&input(alarm("chroma-slow", "us-west-2", &[("service", "chromadb")]), vec![src.clone()], &cfg));
    assert!(matches!(d.suppress, Some(Suppression::InhibitedBy(_))));
    let d = ok(&input(alarm("redis-slow", "us-west-2", &[("service", "redis")]), vec![src], &cfg));
    assert_eq!(d.suppress, None);
}

#[test]
fn group_by_builds_the_group_key() {
    let d = ok(&input(alarm("x", "us-east-1", &[("service", "api")]), vec![], &[("group_by", "source, service, nothing")]));
    assert_eq!(d.group_key, "source=cloudwatch,service=api,nothing=-");
}

#[test]
fn malformed_config_is_refused_naming_the_key() {
    for (key, value, expect) in [
        ("routes", "[{\"severity\":\"loud\"}]", "`loud`"),
        ("routes", "[{\"matc\":{}}]", "unknown field"),
        ("destinations", "{\"urgent\":[\"x\"]}", "`urgent`"),
        ("silences", "[{\"name\":\"s\",\"until\":\"tomorrow\"}]", "`tomorrow`"),
        ("default_severity", "loud", "`default_severity`"),
        ("inhibit_rules", "{}", "expected JSON like"),
    ] {
        match decide(&input(alarm("x", "r", &[]), vec![], &[(key, value)])) {
            Err(PolicyError::InvalidConfig(m)) => {
                assert!(m.contains(&format!("`{key}`")), "{key}: {m}");
                assert!(m.contains(expect), "{key}: {m}");
            }
            other => panic!("{key}: expected invalid-config, got {other:?}"),
        }
    }
}

#[test]
fn nameless_alert_is_invalid_input() {
    assert!(matches!(decide(&input(alarm("", "r", &[]), vec![], &[])), Err(PolicyError::InvalidInput(_))));
}
