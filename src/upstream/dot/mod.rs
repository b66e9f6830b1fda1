//! DNS over TLS (RFC 7858) or plain TCP (RFC 7766): one pipelined connection's task.
//!
//! Owns the framing (2-octet length prefix), the per-connection message IDs, matching
//! answers to queries by ID *and* question, or by ID alone for an error answer without a
//! question (RFC 7858 §3.3), in any order, the connection's health (RTT, unanswered
//! streaks, silence) and its idle life (RFC 7766 §6.2.3, RFC 7828 keepalive). The handle
//! the pool holds is [`Connection`], the same for every transport.

// pub(crate) for src/fuzz.rs, which fuzzes the framing.
pub(crate) mod framing;
mod task;

use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::{Connection, ConnectionInfo, ConnectionLimits};

/// Starts the task that owns `stream` and returns its handle. The stream must be fully set
/// up (TCP connected; for TLS, the handshake done and the key verified).
pub fn spawn<S>(stream: S, info: ConnectionInfo, limits: ConnectionLimits) -> Connection
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (conn, side) = Connection::new(info, limits);
    tokio::spawn(task::run(stream, side, limits));
    conn
}
