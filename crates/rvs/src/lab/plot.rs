//! The latency CDF plot of `rvs lab --svg`: hand-written SVG, so the lab
//! needs no plotting library and the file opens in any browser.
//!
//! The x axis is logarithmic because the interesting part spans decades: a
//! fast request takes well under a millisecond, a stalled one a whole
//! retransmission timeout (0.2, 1, 3 or 6 s), and on a linear axis the first
//! group would be a single vertical line at 0. Each series is drawn as the
//! only `<path>` of its own, a step function rising by `1/n` at each sample.

mod timeline;

use std::fmt::Write;

pub(crate) use self::timeline::{Series, timeline_svg};

/// The canvas, in SVG user units.
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 460.0;
/// The plot area inside the canvas: room for the title above, the tick
/// labels and axis labels left and below.
const LEFT: f64 = 70.0;
const RIGHT: f64 = WIDTH - 20.0;
const TOP: f64 = 45.0;
const BOTTOM: f64 = HEIGHT - 60.0;
/// The axis spans whole decades of milliseconds within these exponents:
/// 10 µs is below any request through namespaces (those take some 50 µs),
/// 100 s above the longest `--timeout` one would plot.
const MIN_DECADE: i32 = -2;
const MAX_DECADE: i32 = 5;
/// Line colours, in series order; distinguishable with common colour blindness.
const COLORS: [&str; 6] = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// An SVG document plotting the empirical CDF of each series (name,
/// samples in ms) on a log-scale x axis, one line per series, with a legend,
/// axis labels and `title`. Samples outside the axis's decades (or not
/// finite) are drawn at its nearest edge; a series without samples appears
/// only in the legend.
pub(crate) fn cdf_svg(series: &[(&str, &[f64])], title: &str) -> String {
    let sorted: Vec<Vec<f64>> = series
        .iter()
        .map(|(_, v)| {
            let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
            v.sort_by(f64::total_cmp);
            v
        })
        .collect();
    let (lo, hi) = decades(sorted.iter().flatten().copied());
    let axes = Axes { lo, hi };
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = (|| -> std::fmt::Result {
        header(&mut s, title)?;
        axes.grid(&mut s)?;
        axes.labels(&mut s)?;
        for (i, v) in sorted.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            writeln!(
                s,
                r#"<path fill="none" stroke="{}" stroke-width="2" d="{}"/>"#,
                COLORS[i % COLORS.len()],
                step_path(v, &|ms| axes.x(ms), &|f| axes.y(f))
            )?;
        }
        legend(&mut s, series, &sorted)?;
        writeln!(s, "</svg>")
    })();
    s
}

/// The SVG's opening, background and title.
fn header(s: &mut String, title: &str) -> std::fmt::Result {
    writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(s, "<title>{}</title>", escape(title))?;
    writeln!(s, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#)?;
    writeln!(
        s,
        r#"<text x="{}" y="25" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    )
}

/// The plot's axes: milliseconds on a log scale over decades `lo..=hi`
/// (x), the fraction of requests done (y).
struct Axes {
    lo: i32,
    hi: i32,
}

impl Axes {
    fn x(&self, ms: f64) -> f64 {
        let (lo, hi) = (f64::from(self.lo), f64::from(self.hi));
        let e = if ms > 0.0 { ms.log10().clamp(lo, hi) } else { lo };
        LEFT + (e - lo) / (hi - lo) * (RIGHT - LEFT)
    }

    fn y(&self, fraction: f64) -> f64 {
        BOTTOM - fraction * (BOTTOM - TOP)
    }

    /// Grid: every decade and every tenth of the fraction, faint; then the
    /// axes with minor ticks at 2..9 times each decade.
    fn grid(&self, s: &mut String) -> std::fmt::Result {
        let (lo, hi) = (self.lo, self.hi);
        writeln!(s, r##"<g stroke="#e4e4e4" stroke-width="1">"##)?;
        for d in lo..=hi {
            let x = self.x(10f64.powi(d));
            writeln!(s, r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{BOTTOM}"/>"#)?;
        }
        for i in 0..=10 {
            let y = self.y(f64::from(i) / 10.0);
            writeln!(s, r#"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}"/>"#)?;
        }
        writeln!(s, "</g>")?;
        writeln!(s, r#"<g stroke="black" stroke-width="1">"#)?;
        writeln!(s, r#"<line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}"/>"#)?;
        writeln!(s, r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{BOTTOM}"/>"#)?;
        for d in lo..hi {
            for m in 1..10 {
                let x = self.x(f64::from(m) * 10f64.powi(d));
                let len = if m == 1 { 6.0 } else { 3.0 };
                writeln!(s, r#"<line x1="{x:.1}" y1="{BOTTOM}" x2="{x:.1}" y2="{:.1}"/>"#, BOTTOM + len)?;
            }
        }
        let x = self.x(10f64.powi(hi));
        writeln!(s, r#"<line x1="{x:.1}" y1="{BOTTOM}" x2="{x:.1}" y2="{:.1}"/>"#, BOTTOM + 6.0)?;
        for i in 0..=5 {
            let y = self.y(f64::from(i) / 5.0);
            writeln!(s, r#"<line x1="{:.1}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}"/>"#, LEFT - 6.0)?;
        }
        writeln!(s, "</g>")
    }

    /// Tick labels and axis titles.
    fn labels(&self, s: &mut String) -> std::fmt::Result {
        for d in self.lo..=self.hi {
            writeln!(
                s,
                r#"<text class="xtick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                self.x(10f64.powi(d)),
                BOTTOM + 20.0,
                decade_label(d)
            )?;
        }
        for i in 0..=5 {
            writeln!(
                s,
                r#"<text class="ytick" x="{}" y="{:.1}" text-anchor="end">{:.1}</text>"#,
                LEFT - 9.0,
                self.y(f64::from(i) / 5.0) + 4.0,
                f64::from(i) / 5.0
            )?;
        }
        axis_titles(s, "total request time (ms, log scale)", "fraction of requests done")
    }
}

/// The x axis's title under the plot and the y axis's along its left side.
fn axis_titles(s: &mut String, x: &str, y: &str) -> std::fmt::Result {
    let (cx, cy) = ((LEFT + RIGHT) / 2.0, (TOP + BOTTOM) / 2.0);
    writeln!(s, r#"<text x="{cx}" y="{}" text-anchor="middle">{x}</text>"#, HEIGHT - 18.0)?;
    writeln!(s, r#"<text transform="translate(20 {cy}) rotate(-90)" text-anchor="middle">{y}</text>"#)
}

/// The legend, in the lower right, where a CDF leaves the plot empty.
fn legend(s: &mut String, series: &[(&str, &[f64])], sorted: &[Vec<f64>]) -> std::fmt::Result {
    let labels: Vec<String> = series
        .iter()
        .zip(sorted)
        .map(|((name, _), v)| match v.len() {
            0 => format!("{name} (no samples)"),
            n => format!("{name} (n = {n})"),
        })
        .collect();
    let rows = series.len() as f64;
    // About 7 units per character at font size 12, plus the line sample.
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64;
    let width = (longest * 7.0 + 56.0).min(RIGHT - LEFT - 20.0);
    let (lx, ly) = (RIGHT - 10.0 - width, BOTTOM - 12.0 - 20.0 * rows);
    writeln!(
        s,
        r##"<rect x="{lx}" y="{ly}" width="{width}" height="{}" fill="white" stroke="#999"/>"##,
        20.0 * rows + 4.0
    )?;
    for (i, label) in labels.iter().enumerate() {
        let y = ly + 14.0 + 20.0 * i as f64;
        writeln!(
            s,
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"/>"#,
            lx + 8.0,
            lx + 36.0,
            COLORS[i % COLORS.len()]
        )?;
        writeln!(s, r#"<text class="legend" x="{}" y="{}">{}</text>"#, lx + 44.0, y + 4.0, escape(label))?;
    }
    Ok(())
}

/// The decades of milliseconds the x axis spans: from the one holding the
/// smallest positive sample to the one at or above the largest, at least
/// one, within `MIN_DECADE..=MAX_DECADE`; 0.1 to 10 ms without samples.
fn decades(samples: impl Iterator<Item = f64>) -> (i32, i32) {
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in samples.filter(|v| *v > 0.0 && v.is_finite()) {
        min = min.min(v);
        max = max.max(v);
    }
    if min > max {
        return (-1, 1);
    }
    // Exponents are small integers, so the casts cannot overflow.
    let lo = (min.log10().floor() as i32).clamp(MIN_DECADE, MAX_DECADE - 1);
    let hi = (max.log10().ceil() as i32).clamp(lo + 1, MAX_DECADE);
    (lo, hi)
}

/// `10^d` ms as a tick label: 0.1, 1, 10, ...
fn decade_label(d: i32) -> String {
    if d < 0 {
        format!("{:.*}", d.unsigned_abs() as usize, 10f64.powi(d))
    } else {
        10u64.pow(d as u32).to_string()
    }
}

/// The CDF of sorted samples as absolute moves: up `1/n` at each sample,
/// right to the next, and on to the right edge after the last, so the
/// coordinates never go left or down (in SVG's y, never up).
fn step_path(sorted: &[f64], x_of: &dyn Fn(f64) -> f64, y_of: &dyn Fn(f64) -> f64) -> String {
    let n = sorted.len() as f64;
    let mut d = format!("M{:.1},{:.1}", x_of(sorted[0]), y_of(0.0));
    for (i, &v) in sorted.iter().enumerate() {
        if i > 0 {
            let _ = write!(d, "H{:.1}", x_of(v));
        }
        let _ = write!(d, "V{:.1}", y_of((i + 1) as f64 / n));
    }
    let _ = write!(d, "H{RIGHT:.1}");
    d
}

/// Text made safe for element content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the document is one well-nested `svg` element: every tag
    /// closed in order, attribute values quoted, no stray `<` or `&`.
    /// Returns the names of the elements, in document order.
    fn check_xml(doc: &str) -> Vec<String> {
        let body = doc.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n").expect("XML declaration");
        let mut open: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = body;
        while let Some(start) = rest.find('<') {
            check_text(&rest[..start]);
            let end = rest[start..].find('>').expect("unclosed tag") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "{tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "misnested </{name}>");
            } else {
                let name = tag.split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
                assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
                assert!(!open.is_empty() || names.is_empty(), "a second root element {name}");
                assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in {tag}");
                check_text(tag);
                names.push(name.clone());
                if !tag.ends_with('/') {
                    open.push(name);
                }
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
        assert!(rest.trim().is_empty());
        assert_eq!(names.first().map(String::as_str), Some("svg"));
        names
    }

    fn check_text(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| entity.starts_with(e)),
                "bare & in {text:?}"
            );
        }
    }

    /// The `d` attributes of all paths.
    fn paths(doc: &str) -> Vec<&str> {
        doc.lines()
            .filter(|l| l.starts_with("<path "))
            .map(|l| l.split(" d=\"").nth(1).unwrap().trim_end_matches("\"/>"))
            .collect()
    }

    /// The absolute points a path of M/H/V moves visits.
    fn points(d: &str) -> Vec<(f64, f64)> {
        let mut pts = Vec::new();
        let (mut x, mut y) = (f64::NAN, f64::NAN);
        let mut i = 0;
        let b = d.as_bytes();
        while i < b.len() {
            let cmd = b[i];
            let end = d[i + 1..].find(['M', 'H', 'V']).map_or(d.len(), |e| e + i + 1);
            let arg = &d[i + 1..end];
            match cmd {
                b'M' => {
                    let (a, c) = arg.split_once(',').unwrap();
                    (x, y) = (a.parse().unwrap(), c.parse().unwrap());
                }
                b'H' => x = arg.parse().unwrap(),
                b'V' => y = arg.parse().unwrap(),
                other => panic!("unexpected command {}", other as char),
            }
            pts.push((x, y));
            i = end;
        }
        pts
    }

    fn xticks(doc: &str) -> Vec<String> {
        doc.lines()
            .filter(|l| l.starts_with("<text class=\"xtick\""))
            .map(|l| l.rsplit_once("\">").unwrap().1.trim_end_matches("</text>").to_owned())
            .collect()
    }

    #[test]
    fn two_series_make_a_well_formed_document_with_two_monotone_paths() {
        let classic = [0.4, 0.5, 0.45, 3000.8, 0.6, 6001.0];
        let adaptive = [0.4, 0.5, 200.5, 0.45, 0.55];
        let doc = cdf_svg(
            &[("classic", &classic), ("adaptive <new> & \"better\"", &adaptive)],
            "2000 requests, 5% SYN loss <LB-real>",
        );
        let names = check_xml(&doc);
        assert_eq!(names.iter().filter(|n| *n == "path").count(), 2);
        assert!(doc.contains("<title>2000 requests, 5% SYN loss &lt;LB-real&gt;</title>"));
        assert!(doc.contains("adaptive &lt;new&gt; &amp; &quot;better&quot; (n = 5)"));
        assert!(doc.contains("classic (n = 6)"));
        assert!(doc.contains("total request time (ms, log scale)"));
        assert!(doc.contains("fraction of requests done"));
        for (d, n) in paths(&doc).into_iter().zip([6, 5]) {
            let pts = points(d);
            // Starts on the x axis, ends at the top right corner.
            assert_eq!(pts[0].1, BOTTOM);
            assert_eq!(*pts.last().unwrap(), (RIGHT, TOP));
            for w in pts.windows(2) {
                assert!(w[1].0 >= w[0].0 && w[1].1 <= w[0].1, "{d}");
            }
            // One rise per sample.
            assert_eq!(d.matches('V').count(), n);
        }
        assert_eq!(xticks(&doc), ["0.1", "1", "10", "100", "1000", "10000"]);
    }

    #[test]
    fn axis_spans_only_the_decades_needed() {
        assert_eq!(decades([0.5, 20.0].into_iter()), (-1, 2));
        assert_eq!(decades([1.0, 10.0].into_iter()), (0, 1));
        assert_eq!(decades([2.0].into_iter()), (0, 1));
        assert_eq!(decades([0.001, 2e7].into_iter()), (MIN_DECADE, MAX_DECADE));
        assert_eq!(decades([0.0, -1.0, f64::INFINITY].into_iter()), (-1, 1));
        assert_eq!(decades(std::iter::empty()), (-1, 1));
        let doc = cdf_svg(&[("a", &[1.5, 2.5, 35.0])], "t");
        assert_eq!(xticks(&doc), ["1", "10", "100"]);
        let doc = cdf_svg(&[("a", &[0.25, 4000.0])], "t");
        assert_eq!(xticks(&doc), ["0.1", "1", "10", "100", "1000", "10000"]);
        let doc = cdf_svg(&[("a", &[0.05, 0.5])], "t");
        assert_eq!(xticks(&doc), ["0.01", "0.1", "1"]);
        assert_eq!(decade_label(-2), "0.01");
        assert_eq!(decade_label(-1), "0.1");
        assert_eq!(decade_label(3), "1000");
    }

    #[test]
    fn empty_and_single_sample_series() {
        let doc = cdf_svg(&[("none", &[]), ("one", &[3.0])], "t");
        check_xml(&doc);
        assert!(doc.contains("none (no samples)"));
        assert!(doc.contains("one (n = 1)"));
        let p = paths(&doc);
        assert_eq!(p.len(), 1, "only the series with samples is drawn");
        let pts = points(p[0]);
        assert_eq!(pts.len(), 3, "{}", p[0]);
        assert_eq!(pts[0].0, pts[1].0);
        assert_eq!((pts[0].1, pts[1].1), (BOTTOM, TOP));
        assert_eq!(pts[2], (RIGHT, TOP));

        let doc = cdf_svg(&[], "nothing");
        check_xml(&doc);
        assert!(paths(&doc).is_empty());
        assert_eq!(xticks(&doc), ["0.1", "1", "10"]);
        let doc = cdf_svg(&[("nan", &[f64::NAN])], "t");
        check_xml(&doc);
        assert!(doc.contains("nan (no samples)"));
    }

    #[test]
    fn samples_off_the_axis_sit_on_its_edges() {
        let doc = cdf_svg(&[("a", &[0.0, 0.001, 1e9])], "t");
        check_xml(&doc);
        let pts = points(paths(&doc)[0]);
        assert!(pts.iter().all(|&(x, y)| (LEFT..=RIGHT).contains(&x) && (TOP..=BOTTOM).contains(&y)));
        assert_eq!(pts[0].0, LEFT);
    }
}
