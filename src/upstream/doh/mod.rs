//! DNS over HTTPS (RFC 8484) over HTTP/2 (RFC 9113): one multiplexed connection's task.
//!
//! The connector has already made the TLS connection with ALPN `h2` and verified the key
//! exactly as for DoT (`crate::tls`). Here: the HTTP/2 handshake, then one task that sends
//! each query as a POST on a stream of its own under message ID 0 (RFC 8484 §4.1), with as
//! many streams in flight as the server's SETTINGS_MAX_CONCURRENT_STREAMS and
//! `max_inflight` allow. The pure rules of one exchange are in [`exchange`]; the handle
//! the pool holds is the [`Connection`] every transport shares.

pub mod exchange;
mod task;

use tokio::io::{AsyncRead, AsyncWrite};

pub use exchange::{Endpoint, StreamFailure};

use super::connection::{Connection, ConnectionInfo, ConnectionLimits};

/// Header lists over this from the server fail the stream rather than grow memory
/// (RFC 9113 §6.5.2 SETTINGS_MAX_HEADER_LIST_SIZE); a DoH response needs a few hundred.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Runs the HTTP/2 handshake over `stream` and starts the connection's task.
pub async fn start<S>(
    stream: S,
    endpoint: Endpoint,
    info: ConnectionInfo,
    limits: ConnectionLimits,
) -> Result<Connection, h2::Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        // A DoH client has no use for server push (RFC 8484 §5.2 allows it; we refuse it).
        .enable_push(false)
        .max_header_list_size(MAX_HEADER_LIST)
        .handshake(stream)
        .await?;
    let driver = tokio::spawn(connection);
    let (conn, side) = Connection::new(info, limits);
    tokio::spawn(task::run(send, driver, endpoint, side, limits));
    Ok(conn)
}
