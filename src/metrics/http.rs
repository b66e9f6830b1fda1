//! The metrics endpoint's HTTP/1.0 responder: `GET /metrics` gets the scrape, any other
//! request 404, a malformed one 400. One request per connection, then close.
//!
//! Hand-rolled on purpose: one fixed resource does not need an HTTP stack in the
//! binary. Bounded: a request head of at most 8 KiB, read within 5 s; at most 16
//! connections at once (more are closed at once); the answer is written within 5 s.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinHandle,
    time::timeout,
};
use tracing::{debug, info, warn};

use super::render::{Format, Snapshot, render};

/// Reads the daemon's state at scrape time.
pub type SnapshotFn = Arc<dyn Fn() -> Snapshot + Send + Sync>;

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 16;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("metrics.listen {addr}: cannot listen: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// The running endpoint; dropping it stops it.
pub struct MetricsServer {
    /// The address bound (the real port when the config said 0).
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MetricsServer {
    /// Binds `addr` and serves scrapes of `snapshot`. Must be called inside the runtime.
    pub fn start(addr: SocketAddr, snapshot: SnapshotFn) -> Result<Self, ServeError> {
        let bind_err = |source| ServeError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = std_listener.local_addr().map_err(bind_err)?;
        let listener = TcpListener::from_std(std_listener).map_err(bind_err)?;
        info!(addr = %local_addr, "serving metrics at http://{local_addr}/metrics");
        let task = tokio::spawn(accept_loop(listener, snapshot));
        Ok(Self { local_addr, task })
    }
}

async fn accept_loop(listener: TcpListener, snapshot: SnapshotFn) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refused = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                debug!(%err, "metrics accept error");
                // Out of descriptors, say: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(refused, limit = MAX_CONNECTIONS, %peer, "metrics: too many connections; closing new ones");
            }
            continue;
        };
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            serve_one(stream, &snapshot).await;
            drop(slot);
        });
    }
}

async fn serve_one(mut stream: TcpStream, snapshot: &SnapshotFn) {
    let head = match timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        _ => return,
    };
    let response = respond(&head, snapshot);
    let _ = timeout(WRITE_TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
}

/// Reads until the blank line that ends the request head, or [`MAX_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !ends_head(&head) && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

fn ends_head(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// The whole response to one request head.
fn respond(head: &[u8], snapshot: &SnapshotFn) -> Vec<u8> {
    let Some(request) = parse_head(head) else {
        return response("400 Bad Request", "text/plain; charset=utf-8", "bad request\n");
    };
    let path = request.target.split('?').next().unwrap_or("");
    if request.method != "GET" || path != "/metrics" {
        return response(
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: only GET /metrics is served\n",
        );
    }
    let format = Format::from_accept(request.accept);
    response("200 OK", format.content_type(), &render(&snapshot(), format))
}

struct Request<'a> {
    method: &'a str,
    target: &'a str,
    accept: Option<&'a str>,
}

fn parse_head(head: &[u8]) -> Option<Request<'_>> {
    if !ends_head(head) {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.lines();
    let mut words = lines.next()?.split_ascii_whitespace();
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    if !version.starts_with("HTTP/1.") || words.next().is_some() {
        return None;
    }
    let accept = lines.take_while(|l| !l.is_empty()).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("accept").then(|| value.trim())
    });
    Some(Request { method, target, accept })
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SnapshotFn {
        Arc::new(|| Snapshot { cache_entries: 9, ..Snapshot::default() })
    }

    fn status_and_type(response: &[u8]) -> (String, String) {
        let text = String::from_utf8_lossy(response);
        let status = text.lines().next().unwrap().to_owned();
        let ctype =
            text.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap_or_default().to_owned();
        (status, ctype)
    }

    #[test]
    fn get_metrics_is_served_in_the_format_asked_for() {
        let (status, ctype) =
            status_and_type(&respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &source()));
        assert_eq!(status, "HTTP/1.0 200 OK");
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
        let om = respond(
            b"GET /metrics?x=1 HTTP/1.1\r\nACCEPT: application/openmetrics-text;version=1.0.0\r\n\r\n",
            &source(),
        );
        let (status, ctype) = status_and_type(&om);
        assert_eq!(status, "HTTP/1.0 200 OK");
        assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
        assert!(String::from_utf8_lossy(&om).contains("stubborn_cache_entries 9"));
    }

    #[test]
    fn anything_else_is_404_and_garbage_400() {
        for head in
            [&b"GET / HTTP/1.0\r\n\r\n"[..], b"POST /metrics HTTP/1.0\r\n\r\n", b"GET /metricsx HTTP/1.0\n\n"]
        {
            assert_eq!(status_and_type(&respond(head, &source())).0, "HTTP/1.0 404 Not Found");
        }
        for head in [&b"GET /metrics\r\n\r\n"[..], b"\xff\xfe\r\n\r\n", b"GET /metrics HTTP/1.0\r\n"] {
            assert_eq!(status_and_type(&respond(head, &source())).0, "HTTP/1.0 400 Bad Request");
        }
    }
}
