//! The timeline picture shared by the drill report and `kbha report`: step charts of the
//! traffic share, lanes with red periods (failing, ALARM, unhealthy traffic), rows of marks
//! (backups, alerts, changes, operator actions) and a time axis, as a hand-written SVG.

use std::fmt::Write;

/// Left margin (labels), px.
const L: f64 = 190.0;
/// Width of the plot, px.
const W: f64 = 760.0;
/// Colour of the primary's share.
const PRIMARY: &str = "#1f6fd1";
/// Colour of the rest.
const SECONDARY: &str = "#e07b00";

/// A picture of traffic over time.
pub struct Timeline {
    /// Length of the time axis, ms (times below are offsets from its start, ms).
    pub end_ms: i64,
    /// Step charts of the primary's share (0..=100); the complement is drawn as the secondary.
    pub bands: Vec<Band>,
    /// Lanes with red periods (failing, ALARM...).
    pub lanes: Vec<Lane>,
    /// Rows of point marks (backups, alerts, changes).
    pub marks: Vec<MarkRow>,
    /// Caption under the time axis.
    pub axis_label: String,
    /// Formats an offset for axis ticks (the drill uses hh:mm from its start; the report
    /// uses dates).
    pub tick_label: fn(i64) -> String,
}

/// A step chart of the primary's share.
pub struct Band {
    /// Label on the left.
    pub label: String,
    /// (offset ms, primary share 0..=100), in time order.
    pub series: Vec<(i64, f64)>,
    /// Dashed lines (a simulated comparison).
    pub dashed: bool,
    /// Height in pixels.
    pub height: f64,
}

/// A lane, green with red periods.
pub struct Lane {
    /// Label on the left.
    pub label: String,
    /// (start ms, end ms, tooltip).
    pub periods: Vec<(i64, i64, String)>,
}

/// A row of marks.
pub struct MarkRow {
    /// Label on the left.
    pub label: String,
    /// The marks.
    pub marks: Vec<Mark>,
}

/// One mark.
pub struct Mark {
    /// Offset, ms.
    pub at: i64,
    /// Shape.
    pub shape: Shape,
    /// Fill colour.
    pub colour: String,
    /// Tooltip.
    pub title: String,
    /// Small text under it.
    pub caption: Option<String>,
}

/// A mark's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A circle (backups).
    Circle,
    /// A triangle (alerts, operator actions).
    Triangle,
    /// A square (changes).
    Square,
}

/// HTML escaping, shared by both pages.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Timeline {
    fn x(&self, t: i64) -> f64 {
        L + t as f64 / self.end_ms.max(1) as f64 * W
    }

    /// The SVG element, with the default legend ("primary %", "other targets %").
    pub fn svg(&self) -> String {
        self.svg_with_legend("primary %", "other targets %")
    }

    /// The SVG element, with `primary` and `secondary` as the legend of the two colours
    /// (the drill names its regions).
    ///
    /// Layout, top to bottom: the legend, the bands 15 px apart, 20 px, the lanes every
    /// 24 px, the mark rows every 30 px, the time axis and its caption; the height follows.
    pub fn svg_with_legend(&self, primary: &str, secondary: &str) -> String {
        let bands: f64 = self.bands.iter().map(|b| b.height).sum::<f64>() + 15.0 * self.bands.len().saturating_sub(1) as f64;
        let lanes_y = 20.0 + bands + 20.0;
        let marks_y = lanes_y + self.lanes.len() as f64 * 24.0 + 9.0;
        let axis_y = marks_y + self.marks.len() as f64 * 30.0;
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">",
            L + W + 20.0,
            axis_y + 60.0
        );
        let mut y = 20.0;
        for b in &self.bands {
            self.band(&mut s, y, b);
            y += b.height + 15.0;
        }
        let _ = write!(
            s,
            "<text x=\"{L}\" y=\"14\" fill=\"{PRIMARY}\">{}</text><text x=\"{}\" y=\"14\" fill=\"{SECONDARY}\">{}</text>",
            esc(primary),
            L + 170.0,
            esc(secondary)
        );
        let mut y = lanes_y;
        for lane in &self.lanes {
            let _ = write!(s, "<text x=\"4\" y=\"{}\">{}</text>", y + 12.0, esc(&lane.label));
            let _ = write!(s, "<rect x=\"{L}\" y=\"{y}\" width=\"{W}\" height=\"16\" fill=\"#d8f0d8\"/>");
            for (a, z, title) in &lane.periods {
                let _ = write!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"16\" fill=\"#d33\"><title>{}</title></rect>",
                    self.x(*a),
                    (self.x(*z) - self.x(*a)).max(1.0),
                    esc(title)
                );
            }
            y += 24.0;
        }
        let mut y = marks_y;
        for row in &self.marks {
            let _ = write!(s, "<text x=\"4\" y=\"{}\">{}</text>", y + 4.0, esc(&row.label));
            for m in &row.marks {
                let (cx, t) = (self.x(m.at), esc(&m.title));
                match m.shape {
                    Shape::Circle => {
                        let _ =
                            write!(s, "<circle cx=\"{cx:.1}\" cy=\"{y}\" r=\"6\" fill=\"{}\"><title>{t}</title></circle>", esc(&m.colour));
                    }
                    Shape::Triangle => {
                        let _ = write!(
                            s,
                            "<path d=\"M{cx:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z\" fill=\"{}\"><title>{t}</title></path>",
                            y - 6.0,
                            cx - 6.0,
                            y + 6.0,
                            cx + 6.0,
                            y + 6.0,
                            esc(&m.colour)
                        );
                    }
                    Shape::Square => {
                        let _ = write!(
                            s,
                            "<rect x=\"{:.1}\" y=\"{}\" width=\"8\" height=\"8\" fill=\"{}\"><title>{t}</title></rect>",
                            cx - 4.0,
                            y - 4.0,
                            esc(&m.colour)
                        );
                    }
                }
                if let Some(c) = &m.caption {
                    let _ = write!(s, "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\">{}</text>", cx - 10.0, y + 18.0, esc(c));
                }
            }
            y += 30.0;
        }
        // Time axis.
        let ay = axis_y;
        let _ = write!(s, "<line x1=\"{L}\" y1=\"{ay}\" x2=\"{}\" y2=\"{ay}\" stroke=\"#444\"/>", L + W);
        let step = [60_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 6 * 3_600_000, 86_400_000, 7 * 86_400_000]
            .into_iter()
            .find(|st| self.end_ms / st <= 12)
            .unwrap_or(30 * 86_400_000);
        let mut t = 0;
        while t <= self.end_ms {
            let _ = write!(
                s,
                "<line x1=\"{0:.1}\" y1=\"{ay}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#444\"/><text x=\"{2:.1}\" y=\"{3}\" font-size=\"10\">{4}</text>",
                self.x(t),
                ay + 5.0,
                self.x(t) - 14.0,
                ay + 18.0,
                esc(&(self.tick_label)(t))
            );
            t += step;
        }
        let _ = write!(s, "<text x=\"{L}\" y=\"{}\" font-size=\"11\" fill=\"#555\">{}</text></svg>", ay + 40.0, esc(&self.axis_label));
        s
    }

    /// A step chart of the primary share (and its complement) in a band.
    fn band(&self, s: &mut String, y0: f64, b: &Band) {
        let hgt = b.height;
        let _ = write!(s, "<text x=\"4\" y=\"{}\">{}</text>", y0 + hgt / 2.0, esc(&b.label));
        let _ = write!(s, "<rect x=\"{L}\" y=\"{y0}\" width=\"{W}\" height=\"{hgt}\" fill=\"#fafafa\" stroke=\"#ddd\"/>");
        for (colour, primary) in [(PRIMARY, true), (SECONDARY, false)] {
            let mut pts = String::new();
            let mut prev: Option<f64> = None;
            for &(t, p) in &b.series {
                let v = if primary { p } else { 100.0 - p };
                let y = y0 + hgt - v / 100.0 * hgt;
                if let Some(py) = prev {
                    let _ = write!(pts, "{:.1},{py:.1} ", self.x(t));
                }
                let _ = write!(pts, "{:.1},{y:.1} ", self.x(t));
                prev = Some(y);
            }
            if let Some(py) = prev {
                let _ = write!(pts, "{:.1},{py:.1}", self.x(self.end_ms));
            }
            let dash = if b.dashed { " stroke-dasharray=\"5,3\"" } else { "" };
            let _ = write!(s, "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(end_ms: i64) -> Timeline {
        Timeline {
            end_ms,
            bands: vec![Band { label: "traffic".into(), series: vec![(0, 100.0), (500, 0.0)], dashed: false, height: 100.0 }],
            lanes: vec![Lane { label: "health".into(), periods: vec![(250, 500, "failing <now>".into())] }],
            marks: vec![MarkRow {
                label: "changes".into(),
                marks: vec![Mark { at: 500, shape: Shape::Square, colour: "#123456".into(), title: "evacuation".into(), caption: None }],
            }],
            axis_label: "time".into(),
            tick_label: |t| format!("{t}"),
        }
    }

    #[test]
    fn a_timeline_draws_its_band_lane_and_marks_scaled_to_its_length() {
        let svg = timeline(1_000).svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("<polyline"));
        // The failing period runs from a quarter to half of the plot width.
        assert!(svg.contains(&format!("<rect x=\"{:.1}\" y=", L + W / 4.0)), "{svg}");
        assert!(svg.contains(&format!("width=\"{:.1}\" height=\"16\" fill=\"#d33\"", W / 4.0)), "{svg}");
        assert!(svg.contains("failing &lt;now&gt;"), "titles are escaped");
        assert!(svg.contains("<title>evacuation</title>") && svg.contains(&format!("x=\"{:.1}\"", L + W / 2.0 - 4.0)));
        // Twice as long a timeline: the same period and mark sit at half the distance.
        let svg = timeline(2_000).svg();
        assert!(svg.contains(&format!("<rect x=\"{:.1}\" y=", L + W / 8.0)), "{svg}");
        assert!(svg.contains(&format!("width=\"{:.1}\" height=\"16\" fill=\"#d33\"", W / 8.0)), "{svg}");
        assert!(svg.contains(&format!("<rect x=\"{:.1}\" y=", L + W / 4.0 - 4.0)), "{svg}");
    }

    #[test]
    fn the_height_follows_the_bands_lanes_and_mark_rows() {
        let height = |t: &Timeline| {
            let svg = t.svg();
            let h = svg.split("height=\"").nth(1).and_then(|r| r.split('"').next()).map(str::to_owned);
            h.and_then(|h| h.parse::<f64>().ok()).unwrap_or_default()
        };
        let mut t = timeline(1_000);
        // 20 + band 100 + 20 + lane 24 + 9 + row 30 + axis 60.
        assert_eq!(height(&t), 263.0);
        t.bands.push(Band { label: "other".into(), series: vec![(0, 100.0)], dashed: true, height: 60.0 });
        t.lanes.push(Lane { label: "alarm".into(), periods: Vec::new() });
        t.marks.push(MarkRow { label: "alerts".into(), marks: Vec::new() });
        assert_eq!(height(&t), 263.0 + 15.0 + 60.0 + 24.0 + 30.0);
        assert!(t.svg().contains("stroke-dasharray"));
        assert!(t.svg_with_legend("primary (a) %", "b & c").contains("b &amp; c"));
    }

    #[test]
    fn esc_escapes_markup() {
        assert_eq!(esc("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }
}
