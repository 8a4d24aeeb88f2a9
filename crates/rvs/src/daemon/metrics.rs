//! Prometheus text exposition over plain HTTP/1.1 (`GET /metrics`).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Daemon;
use crate::log::warning;

/// Bind `addr` and serve it on its own thread.
pub(super) fn serve(addr: SocketAddr, daemon: Arc<Mutex<Daemon>>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("metrics listen {addr}: {e}"))?;
    std::thread::Builder::new().name("rvs-metrics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(e) = handle(stream, &daemon) {
                warning!("metrics request failed", error = e);
            }
        }
    })?;
    Ok(())
}

/// The engines' metrics, and with the xdp driver its programs' counts.
fn render(daemon: &Mutex<Daemon>) -> Result<String, String> {
    let mut d = daemon.lock().unwrap_or_else(|p| p.into_inner());
    let Daemon { plane, dp, .. } = &mut *d;
    let mut snap = plane.snapshot(dp, false).map_err(|e| e.to_string())?;
    let xdp = d.config.driver.kind == rvs_control::config::DriverKind::Xdp;
    let steered = d.dp.steering.as_ref().filter(|_| xdp).map(|s| s.counts());
    drop(d);
    snap.steered = steered.transpose().map_err(|e| e.to_string())?;
    Ok(rvs_control::metrics::render(&snap))
}

fn handle(stream: TcpStream, daemon: &Mutex<Daemon>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(io::Read::take(&stream, 16 * 1024));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Headers are read and ignored, up to the blank line.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = if !request_line.starts_with("GET ") {
        ("405 Method Not Allowed", "text/plain", "only GET\n".to_owned())
    } else if path == "/metrics" {
        match render(daemon) {
            Ok(text) => ("200 OK", "text/plain; version=0.0.4", text),
            Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
        }
    } else {
        ("404 Not Found", "text/plain", "see /metrics\n".to_owned())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut w = &stream;
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())
}
