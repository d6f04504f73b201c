//! The drill report: figures (kbha and the seed's Route 53 polling approach on the same
//! timeline) and a self-contained HTML page with a hand-written SVG timeline.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::scenario::offset;
use super::{Outcome, Row};

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
    let bound_s = o.scenario.expect.max_unhealthy_traffic.as_deref().and_then(|d| super::scenario::parse_duration(d).ok()).map(|ms| ms as f64 / 1000.0);
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
        ("Route 53 changes", b.kbha.changes.to_string(), b.polling.changes.to_string()),
        ("alerts delivered by the alert router", b.alerts.to_string(), "-".into()),
    ]
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
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
    h.push_str("<h2>Steps</h2><table><tr><th>at</th><th>step</th><th>outcome</th><th>weights</th><th>notices</th><th>alerts routed</th><th>expectations</th></tr>");
    for r in &o.rows {
        let w: Vec<String> = r.weights.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let e = if r.failures.is_empty() { "<span class=\"pass\">ok</span>".to_owned() } else { format!("<span class=\"fail\">{}</span>", esc(&r.failures.join("\n"))) };
        let alerts: Vec<String> = r.alerts.iter().map(|(sev, subj)| format!("{sev}: {subj}")).collect();
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>+{}</td><td>{}</td><td>{e}</td></tr>", offset(r.at), esc(&r.what), esc(&r.outcome), w.join(" "), r.new_notices, esc(&alerts.join("; ")));
    }
    h.push_str("</table></body></html>\n");
    h
}

/// The timeline picture: weight step charts, health, alarms, backups, alerts.
fn svg(o: &Outcome, b: &Both) -> String {
    const L: f64 = 190.0;
    const W: f64 = 760.0;
    let end = b.end.max(1) as f64;
    let x = |t: i64| L + t as f64 / end * W;
    let mut s = String::new();
    let height = 470;
    let _ = write!(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">", L + W + 20.0);
    // A step chart of the primary share (and its complement) in a band.
    let band = |s: &mut String, y0: f64, hgt: f64, series: &[(i64, f64)], label: &str, dashed: bool| {
        let _ = write!(s, "<text x=\"4\" y=\"{}\">{label}</text>", y0 + hgt / 2.0);
        let _ = write!(s, "<rect x=\"{L}\" y=\"{y0}\" width=\"{W}\" height=\"{hgt}\" fill=\"#fafafa\" stroke=\"#ddd\"/>");
        for (colour, primary) in [("#1f6fd1", true), ("#e07b00", false)] {
            let mut pts = String::new();
            let mut prev: Option<f64> = None;
            for &(t, p) in series {
                let v = if primary { p } else { 100.0 - p };
                let y = y0 + hgt - v / 100.0 * hgt;
                if let Some(py) = prev {
                    let _ = write!(pts, "{:.1},{py:.1} ", x(t));
                }
                let _ = write!(pts, "{:.1},{y:.1} ", x(t));
                prev = Some(y);
            }
            if let Some(py) = prev {
                let _ = write!(pts, "{:.1},{py:.1}", x(b.end));
            }
            let dash = if dashed { " stroke-dasharray=\"5,3\"" } else { "" };
            let _ = write!(s, "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>");
        }
    };
    band(&mut s, 20.0, 100.0, &b.kbha.series, "traffic (kbha)", false);
    band(&mut s, 135.0, 60.0, &b.polling.series, "traffic (polling 30s x3)", true);
    let _ = write!(s, "<text x=\"{L}\" y=\"14\" fill=\"#1f6fd1\">primary (us-east-1) %</text><text x=\"{}\" y=\"14\" fill=\"#e07b00\">secondary (us-west-2) %</text>", L + 170.0);
    // State lanes: red while failing / in ALARM.
    let lanes: [(&str, &str, bool); 4] =
        [("health primary", "primary", true), ("health secondary", "secondary", true), ("alarm primary", "primary", false), ("alarm secondary", "secondary", false)];
    for (i, (label, target, health)) in lanes.iter().enumerate() {
        let y = 215.0 + i as f64 * 24.0;
        let _ = write!(s, "<text x=\"4\" y=\"{}\">{label}</text>", y + 12.0);
        let _ = write!(s, "<rect x=\"{L}\" y=\"{y}\" width=\"{W}\" height=\"16\" fill=\"#d8f0d8\"/>");
        let bad = |r: &Row| if *health { r.health.get(*target) == Some(&false) } else { r.alarms.get(*target) == Some(&true) };
        let mut start: Option<i64> = None;
        for (k, r) in o.rows.iter().enumerate() {
            let next = o.rows.get(k + 1).map(|n| n.at).unwrap_or(b.end);
            if bad(r) && start.is_none() {
                start = Some(r.at);
            }
            if start.is_some() && (!bad(r) || k + 1 == o.rows.len()) {
                let a = start.take().unwrap_or_default();
                let z = if bad(r) { next } else { r.at };
                let _ = write!(s, "<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"16\" fill=\"#d33\"><title>{}</title></rect>", x(a), (x(z) - x(a)).max(1.0), if *health { "health check failing" } else { "ALARM" });
            }
        }
    }
    // Backups with verdicts, alerts, kbha Route 53 changes.
    let y = 320.0;
    let _ = write!(s, "<text x=\"4\" y=\"{}\">backups / verdicts</text><text x=\"4\" y=\"{}\">alerts sent</text><text x=\"4\" y=\"{}\">failover actions</text>", y + 4.0, y + 34.0, y + 64.0);
    for r in &o.rows {
        if let Some((kind, verdict)) = &r.backup {
            let colour = match verdict.as_str() {
                "Ok" => "#2a2",
                "Corrupt" => "#d33",
                _ => "#e0a000",
            };
            let _ = write!(s, "<circle cx=\"{:.1}\" cy=\"{y}\" r=\"6\" fill=\"{colour}\"><title>{} backup: {}</title></circle><text x=\"{:.1}\" y=\"{}\" font-size=\"10\">{}</text>", x(r.at), format!("{kind:?}").to_lowercase(), esc(verdict), x(r.at) - 10.0, y + 18.0, esc(verdict));
        }
        if r.new_notices > 0 || !r.alerts.is_empty() {
            let (cx, cy) = (x(r.at), y + 30.0);
            let what: Vec<String> = r.alerts.iter().map(|(sev, subj)| format!("{sev}: {subj}")).collect();
            let _ = write!(s, "<path d=\"M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z\" fill=\"#7a3db8\"><title>{} notice(s), {} alert(s) at {}: {}</title></path>", cx, cy - 6.0, cx - 6.0, cy + 6.0, cx + 6.0, cy + 6.0, r.new_notices, r.alerts.len(), offset(r.at), esc(&what.join("; ")));
        }
        if r.outcome.contains("Applied") || r.outcome.contains("Refused") {
            let colour = if r.outcome.contains("Applied") { "#1f6fd1" } else { "#d33" };
            let _ = write!(s, "<rect x=\"{:.1}\" y=\"{}\" width=\"8\" height=\"8\" fill=\"{colour}\"><title>{} at {}</title></rect>", x(r.at) - 4.0, y + 56.0, esc(&r.outcome), offset(r.at));
        }
    }
    // Time axis.
    let ay = 410.0;
    let _ = write!(s, "<line x1=\"{L}\" y1=\"{ay}\" x2=\"{}\" y2=\"{ay}\" stroke=\"#444\"/>", L + W);
    let step = [60_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000].into_iter().find(|st| b.end / st <= 12).unwrap_or(7_200_000);
    let mut t = 0;
    while t <= b.end {
        let _ = write!(s, "<line x1=\"{0:.1}\" y1=\"{ay}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#444\"/><text x=\"{2:.1}\" y=\"{3}\" font-size=\"10\">{4}</text>", x(t), ay + 5.0, x(t) - 14.0, ay + 18.0, &offset(t)[1..6]);
        t += step;
    }
    let _ = write!(s, "<text x=\"{L}\" y=\"{}\" font-size=\"11\" fill=\"#555\">simulated time (hh:mm from the start of the drill)</text></svg>", ay + 40.0);
    s
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
        let rows = [
            row(60_000, None, 100, [false, true]),
            row(90_000, Some(92_000), 0, [false, true]),
            row(200_000, None, 0, [false, false]),
        ];
        let series = [(0, 100.0), (92_000, 0.0)];
        let got = unhealthy_traffic(&rows, &series, 300_000);
        assert!((got - (32.0 + 100.0)).abs() < 1e-9, "{got}");
        // Even shares (all weights 0) while the primary fails: half of the traffic counts.
        let got = unhealthy_traffic(&rows[..1], &[(0, 50.0)], 120_000);
        assert!((got - 30.0).abs() < 1e-9, "{got}");
        assert_eq!(detections(&rows), vec![("primary".to_owned(), Some(32.0)), ("secondary".to_owned(), None)]);
    }
}
