//! The timeline plot of `rvs lab --kill-real ... --svg`: each request's
//! total time against when it started, so a kill shows where it happened
//! (a CDF would mix the requests before, during and after it).
//!
//! The y axis is logarithmic, like the CDF's x axis, for the same reason.
//! Failed requests sit in a band above the plot area, one mark each; kills
//! and revivals are dashed vertical lines labelled at the top.

use std::fmt::Write;

use super::{BOTTOM, COLORS, LEFT, RIGHT, TOP, axis_titles, decade_label, decades, escape, header};

/// One run's requests on the timeline.
pub(crate) struct Series<'a> {
    pub(crate) label: &'a str,
    /// Per request: its start in seconds and its total time in ms, or `None`
    /// when it failed.
    pub(crate) points: Vec<(f64, Option<f64>)>,
    /// Kills and revivals: when (seconds) and what.
    pub(crate) events: Vec<(f64, String)>,
}

/// Where the failed requests' marks go, above the plot area.
const FAILED_Y: f64 = TOP - 8.0;

/// The axes: seconds `0..=secs` (x, linear), milliseconds over decades
/// `lo..=hi` (y, log scale).
struct Axes {
    secs: f64,
    lo: i32,
    hi: i32,
}

impl Axes {
    fn x(&self, s: f64) -> f64 {
        LEFT + (s / self.secs).clamp(0.0, 1.0) * (RIGHT - LEFT)
    }

    fn y(&self, ms: f64) -> f64 {
        let (lo, hi) = (f64::from(self.lo), f64::from(self.hi));
        let e = if ms > 0.0 { ms.log10().clamp(lo, hi) } else { lo };
        BOTTOM - (e - lo) / (hi - lo) * (BOTTOM - TOP)
    }

    fn draw(&self, s: &mut String) -> std::fmt::Result {
        writeln!(s, r##"<g stroke="#e4e4e4" stroke-width="1">"##)?;
        for d in self.lo..=self.hi {
            let y = self.y(10f64.powi(d));
            writeln!(s, r#"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}"/>"#)?;
        }
        writeln!(s, "</g>")?;
        writeln!(s, r#"<g stroke="black" stroke-width="1">"#)?;
        writeln!(s, r#"<line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}"/>"#)?;
        writeln!(s, r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{BOTTOM}"/>"#)?;
        writeln!(s, "</g>")?;
        for d in self.lo..=self.hi {
            let y = self.y(10f64.powi(d)) + 4.0;
            let label = decade_label(d);
            writeln!(
                s,
                r#"<text class="ytick" x="{}" y="{y:.1}" text-anchor="end">{label}</text>"#,
                LEFT - 6.0
            )?;
        }
        let step = tick_step(self.secs);
        let mut t = 0.0;
        while t <= self.secs + 1e-9 {
            writeln!(
                s,
                r#"<text class="xtick" x="{:.1}" y="{}" text-anchor="middle">{t}</text>"#,
                self.x(t),
                BOTTOM + 18.0
            )?;
            t += step;
        }
        axis_titles(
            s,
            "request start (s); failed requests marked above the plot",
            "total request time (ms, log scale)",
        )
    }
}

/// Seconds between x tick labels: about ten labels, at 1, 2 or 5 times a power of ten.
fn tick_step(secs: f64) -> f64 {
    let raw = (secs / 10.0).max(1e-3);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * pow).find(|&s| s >= raw).unwrap_or(10.0 * pow)
}

/// An SVG document with every series' requests over time and its events.
pub(crate) fn timeline_svg(series: &[Series<'_>], title: &str) -> String {
    let times = series.iter().flat_map(|s| s.points.iter().filter_map(|p| p.1));
    let (lo, hi) = decades(times);
    let last = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0).chain(s.events.iter().map(|e| e.0)))
        .fold(0.0f64, f64::max);
    let axes = Axes { secs: last.ceil().max(1.0), lo, hi };
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = (|| -> std::fmt::Result {
        header(&mut s, title)?;
        axes.draw(&mut s)?;
        for (i, series) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            writeln!(s, r#"<g class="requests" fill="{color}">"#)?;
            for &(at, ms) in &series.points {
                let (x, mark) = (axes.x(at), ms.map(|ms| axes.y(ms)));
                match mark {
                    Some(y) => writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="1.5"/>"#)?,
                    None => writeln!(
                        s,
                        r#"<rect class="failed" x="{:.1}" y="{:.1}" width="2" height="8"/>"#,
                        x - 1.0,
                        FAILED_Y - 4.0
                    )?,
                };
            }
            writeln!(s, "</g>")?;
            for (at, what) in &series.events {
                let x = axes.x(*at);
                writeln!(
                    s,
                    r#"<line class="event" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{BOTTOM}" stroke="{color}" stroke-dasharray="4 3"/>"#
                )?;
                writeln!(
                    s,
                    r#"<text class="event" x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
                    x + 3.0,
                    TOP + 12.0 + 14.0 * i as f64,
                    escape(what)
                )?;
            }
        }
        for (i, run) in series.iter().enumerate() {
            let y = BOTTOM - 10.0 - 16.0 * (series.len() - 1 - i) as f64;
            let failed = run.points.iter().filter(|p| p.1.is_none()).count();
            let label = format!("{} (n = {}, {failed} failed)", run.label, run.points.len());
            writeln!(
                s,
                r#"<text class="legend" x="{}" y="{y:.1}" text-anchor="end" fill="{}">{}</text>"#,
                RIGHT - 8.0,
                COLORS[i % COLORS.len()],
                escape(&label)
            )?;
        }
        writeln!(s, "</svg>")
    })();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(label: &str) -> Series<'_> {
        Series {
            label,
            points: vec![(0.1, Some(0.2)), (1.2, None), (1.3, Some(30.0)), (3.9, Some(0.3))],
            events: vec![(1.0, "kill real2 (stop)".to_owned()), (3.0, "revive real2".to_owned())],
        }
    }

    #[test]
    fn marks_requests_failures_and_events() {
        let doc = timeline_svg(&[series("rvs")], "t <&>");
        assert!(doc.starts_with("<?xml") && doc.trim_end().ends_with("</svg>"), "{doc}");
        assert!(doc.contains("<title>t &lt;&amp;&gt;</title>"), "{doc}");
        assert_eq!(doc.matches("<circle ").count(), 3, "{doc}");
        assert_eq!(doc.matches(r#"class="failed""#).count(), 1, "{doc}");
        assert_eq!(doc.matches(r#"<line class="event""#).count(), 2, "{doc}");
        assert!(doc.contains(">kill real2 (stop)</text>") && doc.contains(">revive real2</text>"), "{doc}");
        assert!(doc.contains(">rvs (n = 4, 1 failed)</text>"), "{doc}");
        // The x axis runs 0..=4 s: the kill at 1 s is a quarter of the way.
        let x1 = LEFT + 0.25 * (RIGHT - LEFT);
        assert!(doc.contains(&format!(r#"x1="{x1:.1}" y1="{TOP}""#)), "{doc}");
        // Every mark stays on the canvas.
        for v in doc.split('"').filter_map(|v| v.parse::<f64>().ok()) {
            assert!(
                (-1.0..=super::super::HEIGHT.max(super::super::WIDTH)).contains(&v),
                "{v} off the canvas"
            );
        }
    }

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(10.0), 1.0);
        assert_eq!(tick_step(30.0), 5.0);
        assert_eq!(tick_step(4.0), 0.5);
        assert_eq!(tick_step(120.0), 20.0);
    }
}
