//! Opening one upstream connection: TCP connect, then — for TLS candidates — the handshake
//! with the key verified. The result is a running [`Connection`].
//!
//! Owns the classification of failures (RST, unreachable, TLS alert, pin mismatch) that
//! the racer's timing depends on, and the one log line per attempt. It never decides which
//! candidate to try or when: that is the racer's job.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::{
    net::{TcpSocket, TcpStream},
    sync::mpsc,
    task::AbortHandle,
    time::{Instant, sleep_until},
};
use tracing::{info, warn};

use super::{
    connection::{Connection, ConnectionInfo, ConnectionLimits},
    doh, dot,
    race::{Action, AttemptId, Candidate, Event, FailReason, Race, Transport},
};
use crate::{
    config::UpstreamConfig,
    metrics::metrics,
    tls::{TlsConnectError, TlsSetupError, UpstreamTls},
};

/// Unacknowledged data this old kills a connection (TCP_USER_TIMEOUT, RFC 5482).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// What one attempt needs to know besides its candidate.
#[derive(Clone)]
pub struct AttemptContext {
    pub upstream_name: Arc<str>,
    pub tls: UpstreamTls,
    pub limits: ConnectionLimits,
    /// The `tls_name`, the `:authority` of DoH requests when set.
    pub tls_name: Option<String>,
    /// The upstream's `https_path`, when it serves DNS over HTTPS.
    pub https_path: Option<Arc<str>>,
}

/// A failed attempt: the racer's class of failure plus the detail for the log.
#[derive(Debug)]
pub struct AttemptFailure {
    pub reason: FailReason,
    pub detail: String,
}

/// Connects TCP to `addr` with Nagle off, so each length-prefixed query leaves at once.
pub async fn tcp_connect(addr: SocketAddr) -> Result<TcpStream, AttemptFailure> {
    let socket =
        if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(io_failure)?;
    socket.set_nodelay(true).map_err(io_failure)?;
    // A peer that vanished (suspend, NAT state lost, blackhole) must not keep a socket
    // alive for the kernel's default 15-minute retransmission budget: bound unacknowledged
    // data and probe idle connections.
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
    let _ = sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(15))
            .with_interval(Duration::from_secs(5))
            .with_retries(3),
    );
    let _ = sock.set_keepalive(true);
    socket.connect(addr).await.map_err(io_failure)
}

fn io_failure(err: io::Error) -> AttemptFailure {
    let reason = match err.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => FailReason::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => FailReason::Unreachable,
        io::ErrorKind::TimedOut => FailReason::Timeout,
        _ => FailReason::Io,
    };
    AttemptFailure { reason, detail: err.to_string() }
}

/// Completes an attempt on a connected socket: the TLS handshake (for TLS and HTTPS
/// candidates), the HTTP/2 handshake (for HTTPS), and the start of the connection task.
pub async fn secure(
    tcp: TcpStream,
    id: u64,
    candidate: Candidate,
    ctx: &AttemptContext,
) -> Result<Connection, AttemptFailure> {
    let info = ConnectionInfo {
        upstream: candidate.upstream,
        upstream_name: ctx.upstream_name.clone(),
        peer: candidate.addr,
        transport: candidate.transport,
        authenticated: candidate.transport.is_encrypted() && ctx.tls.authenticates(),
        attempt: id,
    };
    match candidate.transport {
        Transport::Plain => Ok(dot::spawn(tcp, info, ctx.limits)),
        Transport::Tls => {
            let stream = ctx.tls.handshake(tcp).await.map_err(|e| refusal(e, id, candidate, ctx))?;
            Ok(dot::spawn(stream, info, ctx.limits))
        }
        Transport::Https => {
            let stream = ctx.tls.handshake_https(tcp).await.map_err(|e| refusal(e, id, candidate, ctx))?;
            let endpoint = ctx
                .https_endpoint(candidate.addr)
                .map_err(|detail| AttemptFailure { reason: FailReason::Io, detail })?;
            doh::start(stream, endpoint, info, ctx.limits).await.map_err(|e| AttemptFailure {
                reason: if e.is_io() { FailReason::Io } else { FailReason::TlsAlert },
                detail: format!("HTTP/2 handshake: {e}"),
            })
        }
    }
}

impl AttemptContext {
    /// What every attempt to `upstream` needs: its TLS settings (and so its session
    /// caches, shared by every connection to it), its limits and its DoH endpoint.
    pub fn new(upstream: &UpstreamConfig, limits: ConnectionLimits) -> Result<Self, TlsSetupError> {
        Ok(Self {
            upstream_name: Arc::from(upstream.name.as_str()),
            tls: UpstreamTls::new(upstream)?,
            limits,
            tls_name: upstream.tls_name.clone(),
            https_path: upstream.https.as_ref().map(|h| Arc::from(h.path.as_str())),
        })
    }

    /// Where DoH queries go on `peer`: `:authority` is the `tls_name` (the name the
    /// certificate is checked against), or the address itself when only pins
    /// authenticate; the port is written only when it is not 443.
    fn https_endpoint(&self, peer: SocketAddr) -> Result<doh::Endpoint, String> {
        let path = self.https_path.as_deref().ok_or("no https_path for a DoH candidate")?;
        let host = match (&self.tls_name, peer.ip()) {
            (Some(name), _) => name.clone(),
            (None, IpAddr::V4(ip)) => ip.to_string(),
            (None, IpAddr::V6(ip)) => format!("[{ip}]"),
        };
        let authority = if peer.port() == 443 { host } else { format!("{host}:{}", peer.port()) };
        doh::Endpoint::new(&authority, path).map_err(|e| format!("DoH endpoint {authority}{path}: {e}"))
    }
}

/// A failed TLS handshake as the racer sees it. A pin that does not match, or a CA pin
/// whose leaf fails a check, is a refusal logged as a warning and never a
/// warning-and-continue (RFC 7858 §4.2).
fn refusal(err: TlsConnectError, id: u64, candidate: Candidate, ctx: &AttemptContext) -> AttemptFailure {
    match err {
        TlsConnectError::PinMismatch { presented } => {
            metrics().pin_mismatch(&ctx.upstream_name);
            // Name what the server presented so the user can re-pin if the change is
            // legitimate.
            warn!(
                attempt = id,
                upstream = %ctx.upstream_name,
                ip = %candidate.addr.ip(),
                port = candidate.addr.port(),
                transport = %candidate.transport,
                presented = %presented,
                "pin mismatch: connection refused"
            );
            AttemptFailure {
                reason: FailReason::PinMismatch,
                detail: format!("server presented {presented}"),
            }
        }
        TlsConnectError::CaPinRefused(refusal) => {
            metrics().pin_mismatch(&ctx.upstream_name);
            // A pin matched a CA, and the leaf failed one of a web PKI client's checks
            // under it (or there is no tls_name to check it against): the line says which
            // check and why.
            warn!(
                attempt = id,
                upstream = %ctx.upstream_name,
                ip = %candidate.addr.ip(),
                port = candidate.addr.port(),
                transport = %candidate.transport,
                depth = refusal.depth,
                check = %refusal.check,
                detail = %refusal.detail,
                "CA pin refused the server's certificate: connection refused"
            );
            AttemptFailure { reason: FailReason::CaPinRefused(refusal.check), detail: refusal.to_string() }
        }
        TlsConnectError::Tls(detail) => AttemptFailure { reason: FailReason::TlsAlert, detail },
        TlsConnectError::Io(err) => io_failure(err),
    }
}

/// Logs the one line every attempt gets (id, upstream, address, port, transport, outcome
/// and elapsed time), and counts the attempt by outcome.
pub fn log_attempt(
    id: u64,
    candidate: Candidate,
    upstream: &str,
    outcome: &str,
    started: Instant,
    detail: Option<&str>,
) {
    metrics().attempt(outcome, candidate.transport.as_str());
    info!(
        attempt = id,
        %upstream,
        ip = %candidate.addr.ip(),
        port = candidate.addr.port(),
        transport = %candidate.transport.as_str(),
        %outcome,
        elapsed_ms = started.elapsed().as_millis() as u64,
        detail = %detail.unwrap_or("-"),
        "connection attempt"
    );
}

/// How a driven race ended.
pub struct RaceResult {
    /// The winning connection, or every attempt's failure.
    pub outcome: Result<Connection, Vec<(AttemptId, Candidate, FailReason)>>,
    /// Endpoints whose key did not match: the pool backs them off.
    pub pin_mismatches: Vec<Candidate>,
    /// The next attempt id, so ids keep growing across races.
    pub next_id: u64,
}

/// What an attempt task reports back to the driver.
enum AttemptEvent {
    TcpUp,
    Ready(Connection),
    Failed(AttemptFailure),
}

/// The handle an attempt uses to tell the driver how it is doing.
pub struct AttemptReporter {
    id: AttemptId,
    tx: mpsc::UnboundedSender<(AttemptId, AttemptEvent)>,
}

impl AttemptReporter {
    /// TCP is connected; the TLS handshake (if any) is under way.
    pub fn tcp_up(&self) {
        let _ = self.tx.send((self.id, AttemptEvent::TcpUp));
    }
    /// The connection is usable (TLS done, key verified).
    pub fn ready(self, conn: Connection) {
        let _ = self.tx.send((self.id, AttemptEvent::Ready(conn)));
    }
    pub fn failed(self, failure: AttemptFailure) {
        let _ = self.tx.send((self.id, AttemptEvent::Failed(failure)));
    }
}

/// The real attempt: TCP connect, then the handshake for TLS candidates.
async fn attempt(id: AttemptId, candidate: Candidate, ctx: AttemptContext, report: AttemptReporter) {
    match tcp_connect(candidate.addr).await {
        Err(failure) => report.failed(failure),
        Ok(tcp) => {
            report.tcp_up();
            match secure(tcp, id.0, candidate, &ctx).await {
                Ok(conn) => report.ready(conn),
                Err(failure) => report.failed(failure),
            }
        }
    }
}

struct Running {
    task: AbortHandle,
    candidate: Candidate,
    started: Instant,
}

/// Drives one [`Race`] to its end over real sockets. `contexts` is indexed by the
/// candidates' `upstream`.
pub async fn drive_race(race: Race, contexts: Arc<[AttemptContext]>) -> RaceResult {
    let names = contexts.iter().map(|c| c.upstream_name.clone()).collect();
    drive_race_with(race, names, move |id, candidate, report| {
        attempt(id, candidate, contexts[candidate.upstream].clone(), report)
    })
    .await
}

/// Drives one [`Race`] with `start` making each attempt: one task per attempt,
/// cancellation by abort (which drops, and so closes, the attempt's socket), and sleeping
/// exactly until the race's next `poll_timeout`. Tests pass fake attempts here.
pub async fn drive_race_with<F, Fut>(mut race: Race, names: Vec<Arc<str>>, start: F) -> RaceResult
where
    F: Fn(AttemptId, Candidate, AttemptReporter) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<(AttemptId, AttemptEvent)>();
    let mut running: HashMap<AttemptId, Running> = HashMap::new();
    let mut ready: HashMap<AttemptId, Connection> = HashMap::new();
    let mut outcome = None;
    let mut attempts = 0u32;
    let log = |id: AttemptId, r: &Running, outcome: &str, detail: Option<&str>| {
        log_attempt(id.0, r.candidate, &names[r.candidate.upstream], outcome, r.started, detail);
    };
    loop {
        let now = Instant::now();
        while let Some(action) = race.poll_action(now) {
            match action {
                Action::Connect { id, candidate } => {
                    attempts += 1;
                    let report = AttemptReporter { id, tx: tx.clone() };
                    let task = tokio::spawn(start(id, candidate, report));
                    running.insert(id, Running { task: task.abort_handle(), candidate, started: now });
                }
                Action::Cancel { id } => {
                    // Before a winner, a cancel is the attempt's own deadline passing.
                    let outcome_name = if outcome.is_some() { "cancelled" } else { "timeout" };
                    if let Some(r) = running.remove(&id) {
                        r.task.abort();
                        log(id, &r, outcome_name, None);
                    }
                    ready.remove(&id);
                }
                Action::Won { id } => {
                    if let (Some(r), Some(conn)) = (running.remove(&id), ready.remove(&id)) {
                        log(id, &r, "ready", None);
                        info!(
                            attempt = id.0,
                            upstream = %names[r.candidate.upstream],
                            ip = %r.candidate.addr.ip(),
                            port = r.candidate.addr.port(),
                            transport = %r.candidate.transport,
                            attempts,
                            time_to_win_ms = started.elapsed().as_millis() as u64,
                            "race won"
                        );
                        outcome = Some(Ok(conn));
                    }
                }
                Action::GaveUp { reasons } => {
                    let summary: Vec<String> = reasons
                        .iter()
                        .map(|(id, c, r)| format!("#{id} {} {} {r}", c.addr, c.transport))
                        .collect();
                    info!(
                        attempts,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        reasons = %summary.join(", "),
                        "race gave up"
                    );
                    outcome = Some(Err(reasons));
                }
            }
        }
        if race.is_finished() {
            break;
        }
        let wake = race.poll_timeout().unwrap_or_else(|| now + Duration::from_secs(3600));
        tokio::select! {
            Some((id, event)) = rx.recv() => {
                let now = Instant::now();
                match event {
                    AttemptEvent::TcpUp => race.handle(Event::TcpUp(id), now),
                    AttemptEvent::Ready(conn) => {
                        ready.insert(id, conn);
                        race.handle(Event::Ready(id), now);
                    }
                    AttemptEvent::Failed(failure) => {
                        if let Some(r) = running.remove(&id) {
                            log(id, &r, failure.reason.as_str(), Some(&failure.detail));
                        }
                        race.handle(Event::Failed(id, failure.reason), now);
                    }
                }
            }
            _ = sleep_until(wake) => {}
        }
    }
    // Anything still running lost: abort closes its socket.
    for (id, r) in running.drain() {
        r.task.abort();
        log(id, &r, "cancelled", None);
    }
    RaceResult {
        outcome: outcome.unwrap_or_else(|| Err(Vec::new())),
        pin_mismatches: race.pin_mismatches().collect(),
        next_id: race.next_id(),
    }
}

#[cfg(test)]
#[path = "connector_tests.rs"]
mod tests;
