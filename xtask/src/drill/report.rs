//! The drill report: figures (kbha and the seed's Route 53 polling approach on the same
//! timeline) and a self-contained HTML page with a hand-written SVG timeline.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::scenario::offset;
use super::{Outcome, Row};
use kbha::timeline::{Band, Lane, Mark, MarkRow, Shape, Timeline, esc};

/// The seed's approach: Route 53 health checks polled every 30 s, failure threshold 3,
/// failover routing (the secondary answers while the primary is marked unhealthy).
const POLL_MS: i64 = 30_000;
const THRESHOLD: u32 = 3;
/// The timeline runs this long past the last step.
const TAIL_MS: i64 = 5 * 60_000;

/// One approach's figures.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// From the primary's first ALARM (or health failure, for polling) to the first
    /// Route 53 change away from it, seconds.
    pub detect_s: Option<f64>,
    /// From the primary's first health-check failure to that change, seconds.
    pub from_failure_s: Option<f64>,
    /// Sum over regions of traffic share x seconds while the region's health check failed
    /// (traffic-seconds served by an unhealthy region).
    pub unhealthy_traffic_s: f64,
    /// Per health-check failure (a target's check going from passing to failing): the
    /// target and the seconds until the failover function first looked (an event or a
    /// tick) after it. kbha only.
    pub detections: Vec<(String, f64)>,
    /// Age of the newest verified backup of the secondary at the failover, seconds.
    pub rpo_s: Option<f64>,
    /// The last restore test: verdict and duration (ms), the restore part of the RTO.
    pub restore: Option<(String, u64)>,
    /// Number of Route 53 changes.
    pub changes: usize,
    /// Primary share (0..=100) over time: (offset ms, share).
    pub series: Vec<(i64, f64)>,
}

/// Both approaches.
#[derive(Debug, Clone)]
pub struct Both {
    /// kbha, as driven.
    pub kbha: Figures,
    /// Route 53 polling, simulated on the same health timeline.
    pub polling: Figures,
    /// End of the timeline, ms.
    pub end: i64,
    /// Alerts kbha's alert router delivered.
    pub alerts: usize,
    /// The scenario's bound on kbha's unhealthy traffic-seconds (`max_unhealthy_traffic`).
    pub bound_s: Option<f64>,
}

/// The primary's share of traffic (0..=100) under weights `w`: Route 53 answers in
/// proportion to the weights, and evenly when every weight is 0.
fn share(w: &BTreeMap<String, u32>) -> f64 {
    let total: u32 = w.values().sum();
    if w.is_empty() {
        return 100.0;
    }
    if total == 0 {
        return if w.contains_key("primary") { 100.0 / w.len() as f64 } else { 0.0 };
    }
    f64::from(w.get("primary").copied().unwrap_or_default()) * 100.0 / f64::from(total)
}

/// Health of `target` at offset `t` (state after the last step at or before `t`).
fn healthy_at(rows: &[Row], target: &str, t: i64) -> bool {
    rows.iter().take_while(|r| r.at <= t).last().and_then(|r| r.health.get(target).copied()).unwrap_or(true)
}

fn newest_at(rows: &[Row], t: i64) -> Option<i64> {
    rows.iter().take_while(|r| r.at <= t).last().and_then(|r| r.newest_verified_ms)
}

/// Traffic-seconds served by a failing region, for a primary-share series: the integral
/// over `0..end` of the share sent to targets whose health check fails at the time.
fn unhealthy_traffic(rows: &[Row], series: &[(i64, f64)], end: i64) -> f64 {
    let mut cuts: Vec<i64> = series.iter().map(|s| s.0).chain(rows.iter().map(|r| r.at)).chain([0, end]).filter(|t| *t <= end).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut total = 0.0;
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let p = series.iter().take_while(|s| s.0 <= a).last().map(|s| s.1).unwrap_or(100.0);
        let secs = (b - a) as f64 / 1000.0;
        if !healthy_at(rows, "primary", a) {
            total += secs * p / 100.0;
        }
        if !healthy_at(rows, "secondary", a) {
            total += secs * (100.0 - p) / 100.0;
        }
    }
    total
}

/// For each health-check failure, the seconds until the failover function's first
/// invocation (event or tick) at or after it; `None` when none came.
fn detections(rows: &[Row]) -> Vec<(String, Option<f64>)> {
    let mut out = Vec::new();
    let mut prev: BTreeMap<String, bool> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        for (target, healthy) in &r.health {
            if !healthy && prev.get(target).copied().unwrap_or(true) {
                let seen = rows[i..].iter().filter_map(|n| n.decided_at).find(|t| *t >= r.at);
                out.push((target.clone(), seen.map(|t| (t - r.at) as f64 / 1000.0)));
            }
        }
        prev.clone_from(&r.health);
    }
    out
}

/// Computes the figures of both approaches.
pub fn figures(o: &Outcome) -> Both {
    let rows = &o.rows;
    let end = rows.last().map(|r| r.at).unwrap_or_default() + TAIL_MS;
    // kbha: the weights read back after each step.
    let mut kbha = Figures::default();
    let mut failed_over = false;
    let mut last = 100.0;
    kbha.series.push((0, last));
    let first_alarm = rows.iter().find(|r| r.alarms.get("primary") == Some(&true)).map(|r| r.at);
    let first_failure = rows.iter().find(|r| r.health.get("primary") == Some(&false)).map(|r| r.at);
    kbha.restore = rows.iter().rev().find_map(|r| r.restore.clone());
    for r in rows {
        let s = share(&r.weights);
        if s != last {
            // The weights read back after the step hold from when the handler ran.
            let change = r.decided_at.unwrap_or(r.at);
            kbha.changes += 1;
            kbha.series.push((change, s));
            if s < last && !failed_over {
                failed_over = true;
                kbha.detect_s = first_alarm.map(|a| (change - a) as f64 / 1000.0);
                kbha.from_failure_s = first_failure.map(|f| (change - f) as f64 / 1000.0);
                kbha.rpo_s = newest_at(rows, r.at).map(|n| (o.base + change - n) as f64 / 1000.0);
            }
            last = s;
        }
    }
    kbha.unhealthy_traffic_s = unhealthy_traffic(rows, &kbha.series, end);
    kbha.detections = detections(rows).into_iter().filter_map(|(t, d)| d.map(|d| (t, d))).collect();
    // Polling: every 30 s each health check is probed; THRESHOLD results in a row flip it.
    let mut polling = Figures::default();
    let mut polled_over = false;
    let mut marked = BTreeMap::from([("primary", true), ("secondary", true)]);
    let mut streak = BTreeMap::from([("primary", 0u32), ("secondary", 0u32)]);
    let mut last = 100.0;
    polling.series.push((0, last));
    let mut t = 0;
    while t <= end {
        for target in ["primary", "secondary"] {
            let h = healthy_at(rows, target, t);
            let m = marked.get(target).copied().unwrap_or(true);
            let s = streak.entry(target).or_default();
            *s = if h != m { *s + 1 } else { 0 };
            if *s >= THRESHOLD {
                marked.insert(target, h);
                *s = 0;
            }
        }
        let p = marked.get("primary").copied().unwrap_or(true);
        let sec = marked.get("secondary").copied().unwrap_or(true);
        // Failover routing answers with the primary when both are unhealthy.
        let s = if p || !sec { 100.0 } else { 0.0 };
        if s != last {
            polling.changes += 1;
            polling.series.push((t, s));
            if s < last && !polled_over {
                polled_over = true;
                polling.from_failure_s = first_failure.map(|f| (t - f) as f64 / 1000.0);
                polling.rpo_s = newest_at(rows, t).map(|n| (o.base + t - n) as f64 / 1000.0);
            }
            last = s;
        }
        t += POLL_MS;
    }
    polling.unhealthy_traffic_s = unhealthy_traffic(rows, &polling.series, end);
    let bound_s = o
        .scenario
        .expect
        .max_unhealthy_traffic
        .as_deref()
        .and_then(|d| super::scenario::parse_duration(d).ok())
        .map(|ms| ms as f64 / 1000.0);
    Both { kbha, polling, end, alerts: rows.iter().map(|r| r.alerts.len()).sum(), bound_s }
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "none".into(),
        Some(s) if s >= 3600.0 => format!("{:.1} h", s / 3600.0),
        Some(s) if s >= 120.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{s:.0} s"),
    }
}

/// Prints the figures side by side.
pub fn print_figures(b: &Both) {
    let rows = rows_of(b);
    let w = rows.iter().map(|(_, k, _)| k.chars().count()).max().unwrap_or_default().max(14);
    println!("  {:<50} {:>w$} {:>18}", "figure", "kbha", "polling 30 s x 3");
    for (name, k, p) in rows {
        println!("  {name:<50} {k:>w$} {p:>18}");
    }
}

fn rows_of(b: &Both) -> Vec<(&'static str, String, String)> {
    let detected: Vec<String> = b.kbha.detections.iter().map(|(t, d)| format!("{t} {}", secs(Some(*d)))).collect();
    let unhealthy = match b.bound_s {
        None => format!("{:.0}", b.kbha.unhealthy_traffic_s),
        Some(max) if b.kbha.unhealthy_traffic_s <= max => format!("{:.0} (<= {max:.0})", b.kbha.unhealthy_traffic_s),
        Some(max) => format!("{:.0} (> {max:.0}!)", b.kbha.unhealthy_traffic_s),
    };
    vec![
        ("health failure -> first kbha invocation", if detected.is_empty() { "none".into() } else { detected.join(", ") }, "-".into()),
        ("primary alarm -> Route 53 change", secs(b.kbha.detect_s), "no alarm used".into()),
        ("primary health failure -> Route 53 change", secs(b.kbha.from_failure_s), secs(b.polling.from_failure_s)),
        ("traffic-seconds served by an unhealthy region", unhealthy, format!("{:.0}", b.polling.unhealthy_traffic_s)),
        ("achieved RPO (newest verified backup at failover)", secs(b.kbha.rpo_s), secs(b.polling.rpo_s)),
        (
            "restore part of the RTO (last restore test)",
            b.kbha.restore.as_ref().map_or_else(|| "not run".into(), |(v, ms)| format!("{ms} ms ({v})")),
            "not tested".into(),
        ),
        ("Route 53 changes", b.kbha.changes.to_string(), b.polling.changes.to_string()),
        ("alerts delivered by the alert router", b.alerts.to_string(), "-".into()),
    ]
}

/// The report page.
pub fn html(o: &Outcome, b: &Both) -> String {
    let mut h = String::new();
    let failures = o.failures();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>kbha drill: {name}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}}.fail{{color:#b00;white-space:pre}}\
         .pass{{color:#070}}</style></head><body><h1>kbha drill: {name}</h1><p>{desc}</p><p class=\"{cls}\">{verdict}</p>",
        name = esc(&o.scenario.name),
        desc = esc(o.scenario.description.trim()),
        cls = if failures == 0 { "pass" } else { "fail" },
        verdict = if failures == 0 { "PASSED: every expectation held".to_owned() } else { format!("FAILED: {failures} expectation(s)") },
    );
    h.push_str("<h2>Figures</h2><table><tr><th>figure</th><th>kbha</th><th>seed: Route 53 polling (30 s, threshold 3)</th></tr>");
    for (name, k, p) in rows_of(b) {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", esc(name), esc(&k), esc(&p));
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<p>Traffic-seconds served by an unhealthy region: the share of traffic (Route 53 weights read back after each step, \
         from when the handler ran; even shares when every weight is 0) sent to targets whose health check was failing, \
         integrated over the drill and {} min past its last step.{}</p>",
        TAIL_MS / 60_000,
        match b.bound_s {
            Some(max) => format!(" The scenario allows at most {max:.0}."),
            None => String::new(),
        }
    );
    if !o.drill_failures.is_empty() {
        let _ = write!(h, "<p class=\"fail\">{}</p>", esc(&o.drill_failures.join("\n")));
    }
    h.push_str("<h2>Timeline</h2>");
    h.push_str(&svg(o, b));
    if let Some(l) = &o.ledger {
        // The failover function's own incident ledger, as `kbha report` shows it.
        h.push_str(&kbha::report::incidents_html(l));
    }
    h.push_str("<h2>Steps</h2><table><tr><th>at</th><th>step</th><th>outcome</th><th>weights</th><th>notices</th><th>alerts routed</th><th>stepped shift / command</th><th>expectations</th></tr>");
    for r in &o.rows {
        let w: Vec<String> = r.weights.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let e = if r.failures.is_empty() {
            "<span class=\"pass\">ok</span>".to_owned()
        } else {
            format!("<span class=\"fail\">{}</span>", esc(&r.failures.join("\n")))
        };
        let alerts: Vec<String> = r.alerts.iter().map(|(sev, subj)| format!("{sev}: {subj}")).collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>+{}</td><td>{}</td><td>{}</td><td>{e}</td></tr>",
            offset(r.at),
            esc(&r.what),
            esc(&r.outcome),
            w.join(" "),
            r.new_notices,
            esc(&alerts.join("; ")),
            esc(r.note.as_deref().unwrap_or_default())
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// The timeline picture: weight step charts, health, alarms, backups, alerts, kbha's
/// changes ([`kbha::timeline`], the renderer `kbha report` uses too).
fn svg(o: &Outcome, b: &Both) -> String {
    let lanes = [
        ("health primary", "primary", true),
        ("health secondary", "secondary", true),
        ("alarm primary", "primary", false),
        ("alarm secondary", "secondary", false),
    ]
    .into_iter()
    .map(|(label, target, health)| {
        let bad = |r: &Row| if health { r.health.get(target) == Some(&false) } else { r.alarms.get(target) == Some(&true) };
        let mut periods = Vec::new();
        let mut start: Option<i64> = None;
        for (k, r) in o.rows.iter().enumerate() {
            let next = o.rows.get(k + 1).map(|n| n.at).unwrap_or(b.end);
            if bad(r) && start.is_none() {
                start = Some(r.at);
            }
            if start.is_some() && (!bad(r) || k + 1 == o.rows.len()) {
                let a = start.take().unwrap_or_default();
                let z = if bad(r) { next } else { r.at };
                periods.push((a, z, if health { "health check failing".to_owned() } else { "ALARM".to_owned() }));
            }
        }
        Lane { label: label.to_owned(), periods }
    })
    .collect();
    let mut backups = Vec::new();
    let mut alerts = Vec::new();
    let mut actions = Vec::new();
    for r in &o.rows {
        if let Some((kind, verdict)) = &r.backup {
            let colour = match verdict.as_str() {
                "Ok" => "#2a2",
                "Corrupt" => "#d33",
                _ => "#e0a000",
            };
            backups.push(Mark {
                at: r.at,
                shape: Shape::Circle,
                colour: colour.to_owned(),
                title: format!("{} backup: {verdict}", format!("{kind:?}").to_lowercase()),
                caption: Some(verdict.clone()),
            });
        }
        if let Some((verdict, ms)) = &r.restore {
            backups.push(Mark {
                at: r.at,
                shape: Shape::Circle,
                colour: if verdict == "ok" { "#2a2" } else { "#d33" }.to_owned(),
                title: format!("restore test: {verdict} in {ms} ms"),
                caption: Some(format!("restore {verdict}")),
            });
        }
        if r.new_notices > 0 || !r.alerts.is_empty() {
            let what: Vec<String> = r.alerts.iter().map(|(sev, subj)| format!("{sev}: {subj}")).collect();
            alerts.push(Mark {
                at: r.at,
                shape: Shape::Triangle,
                colour: "#7a3db8".to_owned(),
                title: format!("{} notice(s), {} alert(s) at {}: {}", r.new_notices, r.alerts.len(), offset(r.at), what.join("; ")),
                caption: None,
            });
        }
        if r.outcome.contains("Applied") || r.outcome.contains("Refused") {
            let colour = if r.outcome.contains("Applied") { "#1f6fd1" } else { "#d33" };
            actions.push(Mark {
                at: r.at,
                shape: Shape::Square,
                colour: colour.to_owned(),
                title: format!("{} at {}", r.outcome, offset(r.at)),
                caption: None,
            });
        }
    }
    Timeline {
        end_ms: b.end.max(1),
        bands: vec![
            Band { label: "traffic (kbha)".into(), series: b.kbha.series.clone(), dashed: false, height: 100.0 },
            Band { label: "traffic (polling 30s x3)".into(), series: b.polling.series.clone(), dashed: true, height: 60.0 },
        ],
        lanes,
        marks: vec![
            MarkRow { label: "backups / verdicts".into(), marks: backups },
            MarkRow { label: "alerts sent".into(), marks: alerts },
            MarkRow { label: "failover actions".into(), marks: actions },
        ],
        axis_label: "simulated time (hh:mm from the start of the drill)".into(),
        tick_label: |t| offset(t)[1..6].to_owned(),
    }
    .svg_with_legend("primary (us-east-1) %", "secondary (us-west-2) %")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: i64, decided_at: Option<i64>, primary: u32, healthy: [bool; 2]) -> Row {
        Row {
            at,
            what: String::new(),
            decided_at,
            outcome: String::new(),
            weights: BTreeMap::from([("primary".to_owned(), primary), ("secondary".to_owned(), 100 - primary.min(100))]),
            health: BTreeMap::from([("primary".to_owned(), healthy[0]), ("secondary".to_owned(), healthy[1])]),
            alarms: BTreeMap::new(),
            new_notices: 0,
            alerts: Vec::new(),
            newest_verified_ms: None,
            backup: None,
            restore: None,
            plan: None,
            note: None,
            failures: Vec::new(),
        }
    }

    #[test]
    fn shares_follow_the_weights_and_spread_evenly_when_all_are_zero() {
        let w = |p: u32, s: u32| BTreeMap::from([("primary".to_owned(), p), ("secondary".to_owned(), s)]);
        assert_eq!(share(&w(100, 0)), 100.0);
        assert_eq!(share(&w(0, 100)), 0.0);
        assert_eq!(share(&w(100, 300)), 25.0);
        assert_eq!(share(&w(0, 0)), 50.0);
    }

    #[test]
    fn unhealthy_traffic_integrates_the_share_on_failing_targets_from_when_the_handler_ran() {
        // Primary fails at 60 s; the handler runs at 92 s and moves everything away; the
        // secondary fails at 200 s with nowhere to go; the timeline ends at 300 s.
        let rows =
            [row(60_000, None, 100, [false, true]), row(90_000, Some(92_000), 0, [false, true]), row(200_000, None, 0, [false, false])];
        let series = [(0, 100.0), (92_000, 0.0)];
        let got = unhealthy_traffic(&rows, &series, 300_000);
        assert!((got - (32.0 + 100.0)).abs() < 1e-9, "{got}");
        // Even shares (all weights 0) while the primary fails: half of the traffic counts.
        let got = unhealthy_traffic(&rows[..1], &[(0, 50.0)], 120_000);
        assert!((got - 30.0).abs() < 1e-9, "{got}");
        assert_eq!(detections(&rows), vec![("primary".to_owned(), Some(32.0)), ("secondary".to_owned(), None)]);
    }

    #[test]
    fn the_drill_timeline_keeps_its_layout() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/drills/region-failure.toml");
        let scenario = super::super::scenario::Scenario::load(std::path::Path::new(path)).expect("sample scenario");
        let mut failing = row(60_000, None, 100, [false, true]);
        failing.alarms.insert("primary".into(), true);
        failing.new_notices = 1;
        let mut evacuated = row(90_000, Some(92_000), 0, [false, true]);
        evacuated.outcome = "Applied evacuate".into();
        let o = Outcome {
            scenario,
            base: 0,
            rows: vec![failing, evacuated],
            report: "report.html".into(),
            drill_failures: Vec::new(),
            ledger: None,
        };
        let svg = svg(&o, &figures(&o));
        // Two bands, four lanes, three mark rows: the picture drawn before the renderer was shared.
        assert!(svg.contains("height=\"470\""), "{svg}");
        assert!(svg.contains("primary (us-east-1) %") && svg.contains("secondary (us-west-2) %"));
        assert!(svg.contains(">traffic (kbha)<") && svg.contains(">traffic (polling 30s x3)<") && svg.contains("stroke-dasharray"));
        assert!(svg.contains("<rect x=\"190\" y=\"215\" width=\"760\" height=\"16\""), "the first lane");
        assert!(svg.contains("fill=\"#7a3db8\"") && svg.contains("fill=\"#1f6fd1\"><title>Applied evacuate at +00:01:30"));
        assert!(svg.contains("<line x1=\"190\" y1=\"410\"") && svg.contains("simulated time (hh:mm from the start of the drill)"));
    }
}
