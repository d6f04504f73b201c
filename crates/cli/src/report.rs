//! `kbha report --since 30d [--html out.html] [--json]`: whether the promises held, from the
//! incident ledger the failover function writes (availability and error budget against the
//! SLO; per incident the time to detect, to evacuate, to INSYNC, on an unhealthy region, the
//! achieved RPO and the RTO). The HTML page draws the window with the drill report's
//! timeline renderer ([`crate::timeline`]).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kbha_core::time::format_timestamp;
use kbha_failover::ledger::{Objectives, Report, report};
use kbha_lambda::lambda::now_ms;

use crate::ops::{Target, live, mins};
use crate::timeline::{Band, Lane, Mark, MarkRow, Shape, Timeline, esc};

/// `kbha report` arguments.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Configuration and endpoint (as `kbha ops`).
    #[command(flatten)]
    pub target: Target,
    /// The window, ending now: `30d`, `12h`, `90m`.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// The availability SLO, percent.
    #[arg(long, default_value_t = 99.95)]
    pub slo: f64,
    /// The recovery time objective: `4h`.
    #[arg(long, default_value = "4h")]
    pub rto: String,
    /// Also write an HTML page with the timeline picture.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `30d`, `12h`, `90m`, `1h30m` in ms: whole days, or the drill's duration syntax (which
/// has no days: a drill is minutes to hours long).
pub fn parse_span(s: &str) -> Result<i64> {
    let s = s.trim();
    let parsed = match s.strip_suffix('d') {
        Some(days) => days.parse::<i64>().map(|d| d * 86_400_000).map_err(anyhow::Error::from),
        None => parse_duration(s),
    };
    parsed.with_context(|| format!("`{s}` is not a duration like 30d, 12h, 90m"))
}

/// `"1h30m"`, `"10m"`, `"90s"`, `"0"` -> milliseconds: the duration syntax of
/// `kbha ops switchover --bake`, of `kbha report` (with days, [`parse_span`]) and of the
/// drill scenarios (`cargo xtask drill`).
pub fn parse_duration(s: &str) -> Result<i64> {
    let s = s.trim();
    if s == "0" {
        return Ok(0);
    }
    let (mut total, mut num) = (0i64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3_600_000,
            'm' => 60_000,
            's' => 1_000,
            _ => bail!("duration {s:?}: unknown unit {c:?}; use h, m, s (e.g. 1h30m)"),
        };
        let n: i64 = num.parse().with_context(|| format!("duration {s:?}: a number must precede {c:?}"))?;
        total += n * unit;
        num.clear();
    }
    if !num.is_empty() {
        bail!("duration {s:?}: trailing number without unit; use h, m or s");
    }
    Ok(total)
}

/// Runs `kbha report`.
pub async fn run(args: &ReportArgs) -> Result<()> {
    if !(0.0..100.0).contains(&args.slo) {
        bail!("--slo {} must be a percentage below 100, like 99.95", args.slo);
    }
    let (f, _) = live(&args.target).await?;
    let now = now_ms();
    let objectives = Objectives { slo_percent: args.slo, rpo_ms: f.config().rpo_s.saturating_mul(1000), rto_ms: parse_span(&args.rto)? };
    let incidents = f.incidents().await?;
    let r = report(incidents, now - parse_span(&args.since)?, now, objectives);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", text(&r));
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html(&r, &f.config().record_name)).with_context(|| format!("cannot write `{}`", path.display()))?;
        eprintln!("report: {}", path.display());
    }
    Ok(())
}

fn opt(v: Option<i64>) -> String {
    v.map_or("-".into(), mins)
}

fn met(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "unknown",
    }
}

/// The report as text.
pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "window {} .. {}", format_timestamp(r.from_ms), format_timestamp(r.to_ms));
    let _ = writeln!(
        o,
        "availability {:.4}% (SLO {}%: {}); error budget {:.1} min, spent {:.1} min, left {:.1} min",
        r.availability_percent,
        r.objectives.slo_percent,
        if r.slo_met { "met" } else { "MISSED" },
        r.budget_minutes,
        r.unavailable_minutes,
        r.budget_left_minutes
    );
    let _ = writeln!(o, "{} incident(s)", r.incidents.len());
    let _ = writeln!(o, "{}", incident_table(r));
    if !r.planned.is_empty() {
        let _ = writeln!(o, "{} planned event(s), not counted against availability", r.planned.len());
        let _ = writeln!(o, "{}", planned_table(r));
    }
    o
}

/// The planned events (operator switchovers): when, to where, the changes made, how it ended.
pub fn planned_table(r: &Report) -> String {
    let mut o = String::new();
    if r.planned.is_empty() {
        return o;
    }
    let _ = writeln!(o, "  {:<44} {:<9} {:<20} {:>7} ended", "planned event", "to", "started", "changes");
    for p in &r.planned {
        let i = &p.incident;
        let _ = writeln!(
            o,
            "  {:<44} {:<9} {:<20} {:>7} {}",
            i.id,
            i.target,
            format_timestamp(i.opened_at_ms),
            i.changes.len(),
            match (&i.closed_at_ms, &i.closed_by) {
                (Some(t), Some(by)) => format!("{} by {by}", format_timestamp(*t)),
                _ => "UNDER WAY".into(),
            }
        );
    }
    o
}

/// The per-incident table (also printed by `cargo xtask drill`).
pub fn incident_table(r: &Report) -> String {
    let mut o = String::new();
    if r.incidents.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "  {:<44} {:<9} {:>8} {:>9} {:>8} {:>10} {:>13} {:>13} closed",
        "incident", "target", "detect", "evacuate", "INSYNC", "unhealthy", "RPO", "RTO"
    );
    for i in &r.incidents {
        let f = &i.figures;
        let _ = writeln!(
            o,
            "  {:<44} {:<9} {:>8} {:>9} {:>8} {:>10} {:>13} {:>13} {}",
            i.incident.id,
            i.incident.target,
            mins(f.detect_ms),
            opt(f.evacuate_ms),
            opt(f.insync_ms),
            mins(f.unhealthy_ms),
            format!("{} {}", f.rpo_ms.map_or("-".into(), |v| mins(v as i64)), met(i.rpo_met)),
            format!("{} {}", opt(f.rto_ms), met(i.rto_met)),
            match (&i.incident.closed_at_ms, &i.incident.closed_by) {
                (Some(t), Some(by)) => format!("{} by {by}", format_timestamp(*t)),
                _ => "OPEN".into(),
            }
        );
    }
    o
}

/// The primary's share (0..=100) of `weights`.
fn primary_share(weights: &[kbha_core::Weight], primary: &str) -> f64 {
    let total: u32 = weights.iter().map(|w| w.weight).sum();
    if total == 0 {
        return 100.0 / weights.len().max(1) as f64;
    }
    f64::from(weights.iter().find(|w| w.set_identifier == primary).map_or(0, |w| w.weight)) * 100.0 / f64::from(total)
}

/// The timeline of a report: primary share from the recorded changes, the unhealthy
/// period of each incident, its changes and operator actions.
pub fn picture(r: &Report) -> Timeline {
    let from = r.from_ms;
    let at = |t: i64| (t - from).max(0);
    let primary = r
        .incidents
        .iter()
        .flat_map(|i| i.incident.changes.iter())
        .flat_map(|c| c.to.iter().map(|w| w.set_identifier.clone()))
        .next()
        .unwrap_or_else(|| "primary".into());
    // Planned events move traffic too: their changes belong on the traffic line.
    let mut changes: Vec<&kbha_failover::ledger::ChangeEntry> =
        r.incidents.iter().chain(&r.planned).flat_map(|i| i.incident.changes.iter()).collect();
    changes.sort_by_key(|c| c.at_ms);
    let mut series = vec![(0, changes.first().map_or(100.0, |c| primary_share(&c.from, &primary)))];
    for c in &changes {
        series.push((at(c.at_ms), primary_share(&c.to, &primary)));
    }
    let lanes = vec![Lane {
        label: "unhealthy traffic".into(),
        periods: r
            .incidents
            .iter()
            .flat_map(|i| {
                i.incident.unhealthy.iter().map(|p| {
                    let until = p.until_ms.unwrap_or(r.to_ms);
                    (at(p.from_ms), at(until), format!("{}: `{}` down while carrying traffic", i.incident.id, p.target))
                })
            })
            .collect(),
    }];
    let marks = vec![
        MarkRow {
            label: "route 53 changes".into(),
            marks: changes
                .iter()
                .map(|c| Mark {
                    at: at(c.at_ms),
                    shape: Shape::Square,
                    colour: if c.by == "kbha" { "#1f6fd1".into() } else { "#7a3db8".into() },
                    title: format!("{} {:?} by {}: {}", format_timestamp(c.at_ms), c.kind, c.by, kbha_failover::ops::describe(&c.to)),
                    caption: None,
                })
                .collect(),
        },
        MarkRow {
            label: "operator actions".into(),
            marks: r
                .incidents
                .iter()
                .chain(&r.planned)
                .flat_map(|i| i.incident.operator_actions.iter())
                .map(|a| Mark {
                    at: at(a.at_ms),
                    shape: Shape::Triangle,
                    colour: "#7a3db8".into(),
                    title: format!("{} {} by {}: {}", format_timestamp(a.at_ms), a.command, a.by, a.detail),
                    caption: None,
                })
                .collect(),
        },
    ];
    Timeline {
        end_ms: (r.to_ms - from).max(1),
        bands: vec![Band { label: "traffic".into(), series, dashed: false, height: 100.0 }],
        lanes,
        marks,
        axis_label: format!("UTC, from {}", format_timestamp(from)),
        tick_label: |t| format!("+{}", mins(t)),
    }
}

/// The incident table, as HTML (also in the drill report).
pub fn incidents_html(r: &Report) -> String {
    let mut h = String::new();
    h.push_str("<h2>Incidents</h2><table><tr><th>incident</th><th>target</th><th>first failure</th><th>detect</th><th>evacuate</th><th>INSYNC</th><th>unhealthy</th><th>achieved RPO</th><th>RTO</th><th>closed</th></tr>");
    for i in &r.incidents {
        let f = &i.figures;
        let cls = |m: Option<bool>| if m == Some(false) { "miss" } else { "met" };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{} ({})</td><td class=\"{}\">{} ({})</td><td>{}</td></tr>",
            esc(&i.incident.id),
            esc(&i.incident.target),
            format_timestamp(i.incident.opened_at_ms),
            mins(f.detect_ms),
            opt(f.evacuate_ms),
            opt(f.insync_ms),
            mins(f.unhealthy_ms),
            cls(i.rpo_met),
            f.rpo_ms.map_or("-".into(), |v| mins(v as i64)),
            met(i.rpo_met),
            cls(i.rto_met),
            opt(f.rto_ms),
            met(i.rto_met),
            i.incident.closed_at_ms.map_or("OPEN".into(), format_timestamp),
        );
    }
    h.push_str("</table>");
    if !r.planned.is_empty() {
        h.push_str("<h2>Planned events</h2><p>Operator switchovers: not incidents, not counted against availability.</p><table><tr><th>planned event</th><th>to</th><th>started</th><th>changes</th><th>ended</th></tr>");
        for p in &r.planned {
            let i = &p.incident;
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&i.id),
                esc(&i.target),
                format_timestamp(i.opened_at_ms),
                i.changes.len(),
                i.closed_at_ms.map_or("under way".into(), format_timestamp),
            );
        }
        h.push_str("</table>");
    }
    h
}

/// The report page.
pub fn html(r: &Report, record_name: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>kbha report: {name}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}}.miss{{color:#b00}}.met{{color:#070}}\
         </style></head><body><h1>kbha report: {name}</h1><p>{from} .. {to}</p>\
         <p class=\"{cls}\">availability {avail:.4}% against an SLO of {slo}%: error budget {budget:.1} min, spent {spent:.1} min, left {left:.1} min</p>",
        name = esc(record_name),
        from = format_timestamp(r.from_ms),
        to = format_timestamp(r.to_ms),
        cls = if r.slo_met { "met" } else { "miss" },
        avail = r.availability_percent,
        slo = r.objectives.slo_percent,
        budget = r.budget_minutes,
        spent = r.unavailable_minutes,
        left = r.budget_left_minutes,
    );
    h.push_str("<h2>Timeline</h2>");
    h.push_str(&picture(r).svg());
    h.push_str(&incidents_html(r));
    h.push_str("<p>Unhealthy: from the first failure until traffic was off the failed region (its change INSYNC) or it recovered. \
                Availability counts that time; RTO is the same span; the achieved RPO is the replication age of the region given the traffic.</p></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_with_clear_errors() -> Result<()> {
        assert_eq!(parse_span("30d")?, 30 * 86_400_000);
        assert_eq!(parse_span("90m")?, 90 * 60_000);
        assert!(parse_span("30 days").is_err());
        assert!(parse_span("d").is_err());
        Ok(())
    }
}
