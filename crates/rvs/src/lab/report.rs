//! Latency statistics, the side-by-side result table, JSON, and the progress
//! display of `rvs lab`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::{LabResult, Sample};

/// The percentiles every report shows.
pub(crate) const PERCENTILES: [f64; 4] = [50.0, 90.0, 99.0, 99.9];
/// Totals above these count as stalls: 1 s is one lost SYN at the client's
/// initial RTO, 3 s one at the classic balancer's fixed retransmit timer.
pub(crate) const STALL_THRESHOLDS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `p` % of all values at or below it (`p` to 0.001). `None` for no values.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    // In integers, with `p` in thousandths of a percent: in floating point
    // 99.9 / 100 * 1000 is 999.0000000000001, whose ceiling is one rank too high.
    let p_milli = (p * 1000.0).round().max(0.0) as u128;
    let rank = (p_milli * sorted.len() as u128).div_ceil(100_000) as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Percentiles and maximum of one latency series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dist {
    /// `PERCENTILES` in order, then the maximum.
    pub(crate) points: Vec<Option<Duration>>,
}

impl Dist {
    pub(crate) fn of(mut values: Vec<Duration>) -> Self {
        values.sort_unstable();
        let mut points: Vec<_> = PERCENTILES.iter().map(|&p| percentile(&values, p)).collect();
        points.push(values.last().copied());
        Self { points }
    }
}

/// The figures of one result that the table and JSON print.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    pub(crate) connect: Dist,
    pub(crate) first_byte: Dist,
    pub(crate) total: Dist,
    /// Successful requests whose total exceeded each of `STALL_THRESHOLDS`.
    pub(crate) over: [usize; 2],
}

impl Summary {
    pub(crate) fn of(r: &LabResult) -> Self {
        let series = |f: fn(&super::http::Timing) -> Duration| Dist::of(r.timings.iter().map(f).collect());
        let over = STALL_THRESHOLDS.map(|t| r.timings.iter().filter(|s| s.total > t).count());
        Self {
            connect: series(|t| t.connect),
            first_byte: series(|t| t.first_byte),
            total: series(|t| t.total),
            over,
        }
    }
}

/// The requests that started within one second of the run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Second {
    /// Whole seconds from the start of the requests.
    pub(crate) second: u64,
    pub(crate) requests: usize,
    pub(crate) failed: usize,
    /// p50 and p99 of the successful requests' totals, then their maximum.
    pub(crate) total: [Option<Duration>; 3],
    /// The kills and revivals within this second.
    pub(crate) events: Vec<String>,
}

/// One [`Second`] per second from the first request to the last request or
/// event, empty seconds included, so a stall or a dead real shows as a gap.
pub(crate) fn per_second(r: &LabResult) -> Vec<Second> {
    let last_request = r.samples.iter().map(|s| s.start.as_secs()).max();
    let last_event = r.events.iter().map(|e| e.at.as_secs()).max();
    let Some(last) = last_request.max(last_event) else { return Vec::new() };
    let mut seconds: Vec<(Vec<&Sample>, Vec<String>)> = vec![(Vec::new(), Vec::new()); last as usize + 1];
    for s in &r.samples {
        seconds[s.start.as_secs() as usize].0.push(s);
    }
    for e in &r.events {
        seconds[e.at.as_secs() as usize].1.push(e.to_string());
    }
    seconds
        .into_iter()
        .enumerate()
        .map(|(second, (samples, events))| {
            let mut ok: Vec<Duration> = samples.iter().filter_map(|s| s.total).collect();
            ok.sort_unstable();
            Second {
                second: second as u64,
                requests: samples.len(),
                failed: samples.iter().filter(|s| s.total.is_none()).count(),
                total: [percentile(&ok, 50.0), percentile(&ok, 99.0), ok.last().copied()],
                events,
            }
        })
        .collect()
}

/// The per-second series of each result that killed or revived a real,
/// under its label.
pub(crate) fn timelines(results: &[LabResult]) -> String {
    let mut out = String::new();
    for r in results.iter().filter(|r| !r.events.is_empty()) {
        let events: Vec<String> =
            r.events.iter().map(|e| format!("{e} at {:.2} s", e.at.as_secs_f64())).collect();
        out.push_str(&format!("\n{}: {}\n", r.label, events.join(", ")));
        out.push_str(&format!(
            "{:>6}  {:>8}  {:>6}  {:>10}  {:>10}  {:>10}  events\n",
            "second", "requests", "failed", "p50 ms", "p99 ms", "max ms"
        ));
        for s in per_second(r) {
            let line = format!(
                "{:>6}  {:>8}  {:>6}  {:>10}  {:>10}  {:>10}  {}",
                s.second,
                s.requests,
                s.failed,
                ms(s.total[0]),
                ms(s.total[1]),
                ms(s.total[2]),
                s.events.join(", ")
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
}

fn point_name(i: usize) -> String {
    match PERCENTILES.get(i) {
        Some(p) => format!("p{p}"),
        None => "max".to_owned(),
    }
}

/// Renders results side by side: one column per result, one row per figure.
pub(crate) fn table(results: &[LabResult]) -> String {
    let summaries: Vec<Summary> = results.iter().map(Summary::of).collect();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&LabResult, &Summary) -> String| {
        rows.push((name.to_owned(), results.iter().zip(&summaries).map(|(r, s)| f(r, s)).collect()));
    };
    row("requests", &|r, _| {
        if r.completed < r.requested {
            format!("{} of {}", r.completed, r.requested)
        } else {
            r.completed.to_string()
        }
    });
    row("succeeded", &|r, _| r.timings.len().to_string());
    row("errors", &|r, _| r.error_count().to_string());
    row("loss LB-real", &|r, _| r.loss_text());
    row("wall time s", &|r, _| format!("{:.1}", r.wall.as_secs_f64()));
    for (label, pick) in [
        ("connect", (|s: &Summary| &s.connect) as fn(&Summary) -> &Dist),
        ("first byte", |s| &s.first_byte),
        ("total", |s| &s.total),
    ] {
        for i in 0..=PERCENTILES.len() {
            row(&format!("{label} {} ms", point_name(i)), &|_, s| ms(pick(s).points[i]));
        }
    }
    for (i, t) in STALL_THRESHOLDS.iter().enumerate() {
        row(&format!("over {} s", t.as_secs()), &|_, s| s.over[i].to_string());
    }
    let mut error_kinds: Vec<&str> = results.iter().flat_map(|r| r.errors.keys().copied()).collect();
    error_kinds.sort_unstable();
    error_kinds.dedup();
    for kind in error_kinds {
        row(&format!("error {kind}"), &|r, _| r.errors.get(kind).copied().unwrap_or(0).to_string());
    }
    let mut reals: Vec<&str> = results.iter().flat_map(|r| r.per_real.keys().map(String::as_str)).collect();
    reals.sort_unstable();
    reals.dedup();
    for real in reals {
        row(&format!("answered by {real}"), &|r, _| r.per_real.get(real).copied().unwrap_or(0).to_string());
    }

    let headers: Vec<&str> = results.iter().map(|r| r.label.as_str()).collect();
    let name_w = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let col_w: Vec<usize> = (0..results.len())
        .map(|c| rows.iter().map(|(_, v)| v[c].len()).chain([headers[c].len()]).max().unwrap_or(0))
        .collect();
    let mut out = format!("{:name_w$}", "");
    for (h, w) in headers.iter().zip(&col_w) {
        out.push_str(&format!("  {h:>w$}"));
    }
    out.push('\n');
    for (name, values) in &rows {
        out.push_str(&format!("{name:name_w$}"));
        for (v, w) in values.iter().zip(&col_w) {
            out.push_str(&format!("  {v:>w$}"));
        }
        out.push('\n');
    }
    out
}

fn dist_json(d: &Dist) -> Value {
    let mut m = serde_json::Map::new();
    for (i, p) in d.points.iter().enumerate() {
        m.insert(
            format!("{}_ms", point_name(i).replace('.', "_")),
            json!(p.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)),
        );
    }
    Value::Object(m)
}

/// Results as a JSON array, one object per result.
pub(crate) fn json(results: &[LabResult]) -> Value {
    Value::Array(
        results
            .iter()
            .map(|r| {
                let s = Summary::of(r);
                json!({
                    "label": r.label,
                    "requested": r.requested,
                    "completed": r.completed,
                    "succeeded": r.timings.len(),
                    "errors": r.errors,
                    "synproxy": r.synproxy.is_some(),
                    "retransmit_mode": r.synproxy.map(|m| m.name()),
                    "family": r.family.name(),
                    "loss_pct": r.loss_pct,
                    "syn_loss_pct": r.syn_loss_pct,
                    "loss_method": r.loss_method.label(),
                    "loss_dropped_packets": r.loss_dropped,
                    "wall_s": r.wall.as_secs_f64(),
                    "connect": dist_json(&s.connect),
                    "first_byte": dist_json(&s.first_byte),
                    "total": dist_json(&s.total),
                    "over_1s": s.over[0],
                    "over_3s": s.over[1],
                    "per_real": r.per_real,
                    "events": r.events.iter().map(|e| json!({
                        "at_s": e.at.as_secs_f64(),
                        "real": format!("real{}", e.real + 1),
                        "action": e.to_string(),
                    })).collect::<Vec<_>>(),
                    "per_second": per_second(r).iter().map(|s| json!({
                        "second": s.second,
                        "requests": s.requests,
                        "failed": s.failed,
                        "p50_ms": s.total[0].map(|d| d.as_secs_f64() * 1e3),
                        "p99_ms": s.total[1].map(|d| d.as_secs_f64() * 1e3),
                        "max_ms": s.total[2].map(|d| d.as_secs_f64() * 1e3),
                        "events": s.events,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// Progress of the request loop on stderr: a redrawn bar on a terminal, else
/// a line at every 10 %.
#[derive(Debug)]
pub(crate) struct Progress {
    total: usize,
    tty: bool,
    last_tenth: usize,
}

impl Progress {
    pub(crate) fn new(total: usize) -> Self {
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(libc::STDERR_FILENO) } == 1;
        Self { total, tty, last_tenth: 0 }
    }

    pub(crate) fn update(&mut self, done: usize, errors: usize, slow: usize) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{}", bar_line(done, self.total, errors, slow));
            let _ = err.flush();
        } else {
            let tenth = (done * 10).checked_div(self.total).unwrap_or(10);
            if tenth > self.last_tenth {
                self.last_tenth = tenth;
                let _ = writeln!(err, "{}", status_line(done, self.total, errors, slow));
            }
        }
    }

    pub(crate) fn finish(&mut self) {
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

fn status_line(done: usize, total: usize, errors: usize, slow: usize) -> String {
    format!("{done}/{total} requests, {errors} errors, {slow} over 1 s")
}

/// `[#####.....] 50/100 requests, ...`, 30 cells wide.
fn bar_line(done: usize, total: usize, errors: usize, slow: usize) -> String {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH).min(WIDTH);
    format!(
        "[{}{}] {}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        status_line(done, total, errors, slow)
    )
}

/// Counts per key, for error kinds and per-real answers.
pub(crate) fn bump<K: Ord>(map: &mut BTreeMap<K, usize>, key: K) {
    *map.entry(key).or_insert(0) += 1;
}

#[cfg(test)]
mod tests {
    use super::super::LossMethod;
    use super::super::http::Timing;
    use super::*;

    fn ms_list(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        // The textbook example: 15, 20, 35, 40, 50.
        let v = ms_list(&[15, 20, 35, 40, 50]);
        let p = |x| percentile(&v, x).unwrap().as_millis();
        assert_eq!(p(5.0), 15); // rank ceil(0.25) = 1
        assert_eq!(p(30.0), 20); // rank ceil(1.5) = 2
        assert_eq!(p(40.0), 20); // rank 2 exactly
        assert_eq!(p(50.0), 35); // rank ceil(2.5) = 3
        assert_eq!(p(100.0), 50);
        assert_eq!(p(0.0), 15); // clamped to the first rank
        assert_eq!(percentile(&[], 50.0), None);

        // 1..=1000 ms: p99.9 is rank 999, p99 rank 990, p90 rank 900.
        let v: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let p = |x| percentile(&v, x).unwrap().as_millis();
        assert_eq!((p(50.0), p(90.0), p(99.0), p(99.9)), (500, 900, 990, 999));

        // 2000 samples with two 6 s stalls: p99.9 (rank 1998) is still fast,
        // only the max shows them; with three stalls p99.9 is a stall.
        let mut v = vec![Duration::from_millis(1); 1998];
        v.extend([Duration::from_secs(6); 2]);
        let d = Dist::of(v.clone());
        assert_eq!(d.points[3], Some(Duration::from_millis(1)));
        assert_eq!(d.points[4], Some(Duration::from_secs(6)));
        v[0] = Duration::from_secs(6);
        assert_eq!(Dist::of(v).points[3], Some(Duration::from_secs(6)));
    }

    fn result(label: &str, totals_ms: &[u64]) -> LabResult {
        let timings = totals_ms
            .iter()
            .map(|&t| Timing {
                connect: Duration::from_millis(t / 4),
                first_byte: Duration::from_millis(t / 2),
                total: Duration::from_millis(t),
            })
            .collect::<Vec<_>>();
        let mut r = LabResult::new(label.to_owned(), totals_ms.len() + 1, 0.0, LossMethod::None);
        r.completed = totals_ms.len() + 1;
        r.timings = timings;
        bump(&mut r.errors, "connect_timeout");
        bump(&mut r.per_real, "real1".to_owned());
        r
    }

    #[test]
    fn table_puts_results_side_by_side() {
        let a = result("loss 0%", &[4, 8, 1200, 3500]);
        let mut b = result("loss 5%", &[2, 2]);
        b.requested = 10;
        let t = table(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("loss 0%  loss 5%"), "{t}");
        let row = |name: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(name))
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .unwrap()
        };
        assert_eq!(row("requests"), ["requests", "5", "3", "of", "10"]);
        assert_eq!(row("errors"), ["errors", "1", "1"]);
        assert_eq!(row("total p50 ms"), ["total", "p50", "ms", "8.00", "2.00"]);
        assert_eq!(row("total max ms"), ["total", "max", "ms", "3500.00", "2.00"]);
        assert_eq!(row("connect p90 ms"), ["connect", "p90", "ms", "875.00", "0.00"]);
        assert_eq!(row("over 1 s"), ["over", "1", "s", "2", "0"]);
        assert_eq!(row("over 3 s"), ["over", "3", "s", "1", "0"]);
        assert_eq!(row("error connect_timeout"), ["error", "connect_timeout", "1", "1"]);
        assert_eq!(row("answered by real1"), ["answered", "by", "real1", "1", "1"]);
        // Every line is as wide as the header: the columns line up.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{t}");
    }

    #[test]
    fn empty_result_prints_dashes() {
        let r = LabResult::new("x".to_owned(), 0, 0.0, LossMethod::None);
        let t = table(&[r]);
        assert!(t.lines().any(|l| l.starts_with("total p99.9 ms") && l.ends_with('-')), "{t}");
    }

    #[test]
    fn json_has_the_figures() {
        let v = json(&[result("a", &[10, 20, 30, 40])]);
        let o = &v[0];
        assert_eq!(o["label"], "a");
        assert_eq!(o["succeeded"], 4);
        assert_eq!(o["errors"]["connect_timeout"], 1);
        assert_eq!(o["total"]["p50_ms"], 20.0);
        assert_eq!(o["total"]["p99_9_ms"], 40.0);
        assert_eq!(o["total"]["max_ms"], 40.0);
        assert_eq!(o["per_real"]["real1"], 1);
        assert_eq!(o["over_1s"], 0);
        assert_eq!(
            (&o["synproxy"], &o["retransmit_mode"], &o["syn_loss_pct"]),
            (&json!(false), &Value::Null, &json!(0.0))
        );
        let mut r = result("b", &[1]);
        r.synproxy = Some(rvs_control::config::RetransmitMode::Classic);
        r.syn_loss_pct = 5.0;
        let o = &json(&[r])[0];
        assert_eq!(
            (&o["synproxy"], &o["retransmit_mode"], &o["syn_loss_pct"]),
            (&json!(true), &json!("classic"), &json!(5.0))
        );
    }

    #[test]
    fn per_second_series_marks_kills_and_counts_failures() {
        use super::super::kill::{Action, Applied, KillMode};
        let at = |ms| Duration::from_millis(ms);
        let mut r = LabResult::new("rvs".to_owned(), 6, 0.0, LossMethod::None);
        for (start, total) in
            [(100, Some(2)), (900, Some(4)), (1200, None), (1300, Some(40)), (3100, Some(1))]
        {
            r.samples.push(Sample { start: at(start), total: total.map(at) });
        }
        let kill = Applied { at: at(1100), real: 1, action: Action::Kill, mode: KillMode::Stop };
        r.events = vec![kill, Applied { at: at(4500), action: Action::Revive, ..kill }];
        let s = per_second(&r);
        assert_eq!(s.len(), 5, "up to the revival at 4.5 s: {s:?}");
        assert_eq!((s[0].requests, s[0].failed, s[0].total), (2, 0, [Some(at(2)), Some(at(4)), Some(at(4))]));
        assert_eq!((s[1].requests, s[1].failed, s[1].total[2]), (2, 1, Some(at(40))));
        assert_eq!(s[1].events, ["kill real2 (stop)"]);
        assert_eq!((s[2].requests, s[2].total), (0, [None; 3]));
        assert_eq!(s[4].events, ["revive real2"]);

        let t = timelines(std::slice::from_ref(&r));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1], "rvs: kill real2 (stop) at 1.10 s, revive real2 at 4.50 s", "{t}");
        assert!(lines[2].starts_with("second  requests  failed"), "{t}");
        let row: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(row, ["1", "2", "1", "40.00", "40.00", "40.00", "kill", "real2", "(stop)"], "{t}");
        assert!(timelines(&[LabResult::new("x".into(), 0, 0.0, LossMethod::None)]).is_empty());

        let o = &json(&[r])[0];
        assert_eq!(o["events"][0]["action"], "kill real2 (stop)");
        assert_eq!(o["events"][0]["real"], "real2");
        assert_eq!(o["per_second"][1]["failed"], 1);
        assert_eq!(o["per_second"][1]["events"][0], "kill real2 (stop)");
        assert_eq!(o["per_second"][2]["p50_ms"], Value::Null);
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            bar_line(0, 100, 0, 0),
            format!("[{}] 0/100 requests, 0 errors, 0 over 1 s", ".".repeat(30))
        );
        assert_eq!(
            bar_line(50, 100, 1, 2),
            format!("[{}{}] 50/100 requests, 1 errors, 2 over 1 s", "#".repeat(15), ".".repeat(15))
        );
        assert!(bar_line(5, 0, 0, 0).starts_with(&format!("[{}]", "#".repeat(30))));
    }
}
