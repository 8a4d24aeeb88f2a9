//! Scenario c: the seed experiment's latency distribution, SYNProxy's
//! classic retransmit timer against the adaptive default, under 5 %
//! SYN/SYN-ACK loss toward the reals, by the rvs binary itself
//! (`rvs lab --compare --svg`), which builds and removes its own lab.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::Opts;
use crate::lab::run_bounded;
use crate::report::Table;

/// Percentile columns, as `rvs lab --json` names them.
const POINTS: [(&str, &str); 5] =
    [("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p99_9_ms", "p99.9"), ("max_ms", "max")];

pub(crate) fn run(rvs: &Path, o: &Opts) -> anyhow::Result<(Table, Value)> {
    let n = o.latency_requests.to_string();
    let svg = o.svg.to_string_lossy().into_owned();
    let mut cmd = Command::new(rvs);
    cmd.args(["lab", "--compare", "-n", &n, "--timeout", "10", "--svg", &svg, "--json"]);
    // Classic stalls cost 3 s or more each: about 10 % of requests stall.
    let limit = Duration::from_secs(60 + o.latency_requests as u64 * 2);
    let out = run_bounded(&mut cmd, limit).context("rvs lab --compare")?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("rvs lab's JSON: {out}"))?;
    let runs = v.as_array().context("rvs lab's JSON is not a list")?;
    let mut header = vec!["mode", "requests ok"];
    header.extend(POINTS.iter().map(|(_, h)| *h));
    header.extend(["over 1 s", "over 3 s"]);
    let mut t = Table::new(
        &format!(
            "Seed experiment: total request time, {} sequential requests per mode, 5 % SYN/SYN-ACK loss toward the reals",
            o.latency_requests
        ),
        &header,
    );
    let ms = |x: &Value| x.as_f64().map_or("—".to_owned(), |m| format!("{m:.2} ms"));
    for r in runs {
        let mut row = vec![
            r["retransmit_mode"].as_str().unwrap_or("?").to_owned(),
            format!("{} / {}", r["succeeded"], r["requested"]),
        ];
        row.extend(POINTS.iter().map(|(k, _)| ms(&r["total"][k])));
        row.extend([r["over_1s"].to_string(), r["over_3s"].to_string()]);
        t.row(row);
    }
    let p99 = |i: usize| runs.get(i).and_then(|r| r["total"]["p99_ms"].as_f64()).unwrap_or(0.0);
    if p99(1) > 0.0 {
        t.note(format!("p99 classic / adaptive: {:.1}×", p99(0) / p99(1)));
    }
    t.note(format!("latency CDFs plotted in {svg} (`rvs lab --compare -n {n} --svg {svg}`)"));
    Ok((t, json!({ "runs": v, "svg": svg })))
}
