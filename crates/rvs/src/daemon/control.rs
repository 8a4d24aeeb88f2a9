//! The control socket: a Unix stream socket, mode 0600, carrying one JSON
//! request line and one JSON response line per connection.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rvs_control::protocol::{Request, Response};

use super::Daemon;
use crate::log::{info, warning};

/// Largest request accepted: a restore of many thousand lines fits.
const MAX_REQUEST: u64 = 64 << 20;

/// Bind the socket and serve it on its own thread.
pub(super) fn serve(path: &Path, daemon: Arc<Mutex<Daemon>>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if UnixStream::connect(path).is_ok() {
        anyhow::bail!("another daemon answers on {}", path.display());
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| anyhow::anyhow!("bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new().name("rvs-control".into()).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    if let Err(e) = handle(s, &daemon) {
                        warning!("control connection failed", error = e);
                    }
                }
                Err(e) => warning!("control accept failed", error = e),
            }
        }
    })?;
    Ok(())
}

fn handle(stream: UnixStream, daemon: &Mutex<Daemon>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    if BufReader::new(io::Read::take(&stream, MAX_REQUEST)).read_line(&mut line)? == 0 {
        // A connect-and-close, as a liveness probe does: nothing to answer.
        return Ok(());
    }
    let response = match Request::from_line(&line) {
        Ok(req) => execute(req, daemon),
        Err(e) => Response::error(2, format!("bad request: {e}")),
    };
    (&stream).write_all(response.to_line().as_bytes())
}

fn execute(req: Request, daemon: &Mutex<Daemon>) -> Response {
    let mut d = daemon.lock().unwrap_or_else(|p| p.into_inner());
    match req {
        Request::Adm { argv, stdin } => {
            let Daemon { plane, dp, .. } = &mut *d;
            let before = plane.model().clone();
            let mut reply = plane.adm(&argv, &stdin, dp);
            if *plane.model() != before {
                info!("adm", command = argv.join(" "));
                for w in d.sync_routes() {
                    reply.stderr.push_str(&format!("warning: {w}\n"));
                }
            }
            reply
        }
        Request::Reload => match d.reload() {
            Ok(()) => {
                info!("config reloaded", path = d.config_path.display());
                Response::ok("")
            }
            Err(e) => Response::error(1, format!("reload rejected: {e}")),
        },
        Request::Version => Response::ok(format!("rvs {}\n", env!("CARGO_PKG_VERSION"))),
    }
}
