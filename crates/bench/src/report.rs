//! Medians with their spread, ratios between paths, and the tables and JSON
//! they are printed as.

use serde_json::{Value, json};

/// Repeated measurements of one figure.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples(pub Vec<f64>);

impl Samples {
    pub(crate) fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median (mean of the middle two for an even count); 0 when empty.
    pub(crate) fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub(crate) fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(0.0)
    }

    pub(crate) fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(0.0)
    }

    /// `median (min–max)` in the unit `fmt` writes.
    pub(crate) fn show(&self, fmt: fn(f64) -> String) -> String {
        if self.0.len() < 2 {
            return fmt(self.median());
        }
        format!("{} ({}–{})", fmt(self.median()), fmt(self.min()), fmt(self.max()))
    }

    pub(crate) fn json(&self) -> Value {
        json!({ "median": self.median(), "min": self.min(), "max": self.max(), "samples": self.0 })
    }

    /// Per-round ratios `self[i] / other[i]` (rounds interleave the paths, so
    /// each pair was measured side by side).
    pub(crate) fn ratio_to(&self, other: &Self) -> Self {
        Self(self.0.iter().zip(&other.0).filter(|(_, b)| **b > 0.0).map(|(a, b)| a / b).collect())
    }
}

/// Millions, two decimals.
pub(crate) fn mega(v: f64) -> String {
    format!("{:.2} M", v / 1e6)
}

/// Thousands, one decimal.
pub(crate) fn kilo(v: f64) -> String {
    format!("{:.1} k", v / 1e3)
}

/// A printed table: header, rows, then free lines (ratios, notes).
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub(crate) fn new(title: &str, header: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            header: header.iter().map(|s| (*s).to_owned()).collect(),
            ..Self::default()
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn note(&mut self, s: String) {
        self.notes.push(s);
    }

    /// A Markdown table (readable as text, pasteable into docs).
    pub(crate) fn render(&self) -> String {
        let cols = self.header.len();
        let mut w = vec![3; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |r: &[String]| {
            let cells: Vec<String> = (0..cols)
                .map(|i| {
                    let c = r.get(i).map_or("", String::as_str);
                    format!("{c}{}", " ".repeat(w[i] - c.chars().count()))
                })
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut s = format!("## {}\n\n", self.title);
        s.push_str(&line(&self.header));
        let dashes: Vec<String> = w.iter().map(|n| "-".repeat(*n)).collect();
        s.push_str(&format!("|-{}-|\n", dashes.join("-|-")));
        for r in &self.rows {
            s.push_str(&line(r));
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        s
    }
}

/// `a / b` as a printed ratio with its per-round spread, and whether it
/// meets `target` when one is given.
pub(crate) fn ratio_line(what: &str, a: &Samples, b: &Samples, target: Option<f64>) -> (String, Value) {
    let per_round = a.ratio_to(b);
    let med = if b.median() > 0.0 { a.median() / b.median() } else { 0.0 };
    let mut s = format!("{what}: {med:.2}× (per round {:.2}–{:.2})", per_round.min(), per_round.max());
    if let Some(t) = target {
        // One decimal unless the target needs two (1/1.15 = 0.87).
        let shown =
            if ((t * 10.0).round() - t * 10.0).abs() < 1e-9 { format!("{t:.1}") } else { format!("{t:.2}") };
        s.push_str(&format!(", target ≥ {shown}×: {}", if med >= t { "met" } else { "MISSED" }));
    }
    let v = json!({ "ratio": what, "value": med, "per_round": per_round.json(), "target": target, "met": target.map(|t| med >= t) });
    (s, v)
}

/// The ratio lines `pairs` name, (numerator, denominator, target) by row
/// name, as notes of `t`; pairs naming a row that is not there are left
/// out. Returns their JSON.
pub(crate) fn ratio_notes(
    t: &mut Table,
    names: &[String],
    figures: &[&Samples],
    pairs: &[(&str, &str, Option<f64>)],
) -> Vec<Value> {
    let find = |name: &str| names.iter().position(|n| n == name);
    let mut out = Vec::new();
    for &(a, b, target) in pairs {
        let (Some(i), Some(j)) = (find(a), find(b)) else { continue };
        let (s, v) = ratio_line(&format!("{a} / {b}"), figures[i], figures[j], target);
        t.note(s);
        out.push(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain2(v: f64) -> String {
        format!("{v:.2}")
    }

    #[test]
    fn median_and_spread() {
        let s = Samples(vec![3.0, 1.0, 2.0, 10.0, 4.0]);
        assert_eq!((s.median(), s.min(), s.max()), (3.0, 1.0, 10.0));
        assert_eq!(Samples(vec![1.0, 3.0]).median(), 2.0);
        assert_eq!(s.show(plain2), "3.00 (1.00–10.00)");
        assert_eq!(Samples(vec![2e6]).show(mega), "2.00 M");
    }

    #[test]
    fn ratios_per_round_and_targets() {
        let a = Samples(vec![10.0, 20.0, 30.0]);
        let b = Samples(vec![10.0, 10.0, 10.0]);
        let (s, v) = ratio_line("a / b", &a, &b, Some(1.6));
        assert!(s.starts_with("a / b: 2.00× (per round 1.00–3.00), target ≥ 1.6×: met"), "{s}");
        assert_eq!(v["met"], true);
        let (s, _) = ratio_line("b / a", &b, &a, Some(1.0));
        assert!(s.ends_with("MISSED"), "{s}");
    }

    #[test]
    fn table_renders_aligned() {
        let mut t = Table::new("x", &["path", "rate"]);
        t.row(vec!["a".into(), "1".into()]);
        t.note("n".into());
        assert_eq!(t.render(), "## x\n\n| path | rate |\n|------|------|\n| a    | 1    |\n\n- n\n");
    }
}
