//! Opening one upstream connection: TCP connect, then — for TLS candidates — the handshake
//! with the key verified. The result is a running [`Connection`].
//!
//! Owns the classification of failures (RST, unreachable, TLS alert, pin mismatch) that
//! the racer's timing depends on, and the one log line per attempt. It never decides which
//! candidate to try or when: that is the racer's job.

use std::{io, net::SocketAddr, sync::Arc};

use tokio::{net::TcpSocket, net::TcpStream, time::Instant};
use tracing::{info, warn};

use super::{
    dot::{Connection, ConnectionInfo, ConnectionLimits},
    race::{Candidate, FailReason, Transport},
};
use crate::tls::{TlsConnectError, UpstreamTls};

/// What one attempt needs to know besides its candidate.
#[derive(Clone)]
pub struct AttemptContext {
    pub upstream_name: Arc<str>,
    pub tls: UpstreamTls,
    pub limits: ConnectionLimits,
}

/// A failed attempt: the racer's class of failure plus the detail for the log.
#[derive(Debug)]
pub struct AttemptFailure {
    pub reason: FailReason,
    pub detail: String,
}

/// Connects TCP to `addr` with Nagle off, so each length-prefixed query leaves at once.
pub async fn tcp_connect(addr: SocketAddr) -> Result<TcpStream, AttemptFailure> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io_failure)?;
    socket.set_nodelay(true).map_err(io_failure)?;
    socket.connect(addr).await.map_err(io_failure)
}

fn io_failure(err: io::Error) -> AttemptFailure {
    let reason = match err.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => FailReason::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            FailReason::Unreachable
        }
        io::ErrorKind::TimedOut => FailReason::Timeout,
        _ => FailReason::Io,
    };
    AttemptFailure {
        reason,
        detail: err.to_string(),
    }
}

/// Completes an attempt on a connected socket: the TLS handshake (for TLS candidates) and
/// the start of the connection task.
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
        attempt: id,
    };
    match candidate.transport {
        Transport::Plain => Ok(Connection::spawn(tcp, info, ctx.limits)),
        Transport::Tls => match ctx.tls.handshake(tcp).await {
            Ok(stream) => Ok(Connection::spawn(stream, info, ctx.limits)),
            Err(TlsConnectError::PinMismatch { presented }) => {
                // A refusal, never a warning-and-continue (RFC 7858 §4.2). Name what the
                // server presented so the user can re-pin if the change is legitimate.
                warn!(
                    attempt = id,
                    upstream = %ctx.upstream_name,
                    ip = %candidate.addr.ip(),
                    port = candidate.addr.port(),
                    presented = %presented,
                    "pin mismatch: connection refused"
                );
                Err(AttemptFailure {
                    reason: FailReason::PinMismatch,
                    detail: format!("server presented {presented}"),
                })
            }
            Err(TlsConnectError::Tls(detail)) => Err(AttemptFailure {
                reason: FailReason::TlsAlert,
                detail,
            }),
            Err(TlsConnectError::Io(err)) => Err(io_failure(err)),
        },
    }
}

/// Logs the one line every attempt gets: id, upstream, address, port, transport, outcome
/// and elapsed time.
pub fn log_attempt(
    id: u64,
    candidate: Candidate,
    upstream: &str,
    outcome: &str,
    started: Instant,
    detail: Option<&str>,
) {
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
