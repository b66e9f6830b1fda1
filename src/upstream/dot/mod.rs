//! One pipelined DNS connection to an upstream, over TLS (RFC 7858) or plain TCP (RFC 7766).
//!
//! Owns the framing (2-octet length prefix), the per-connection message IDs, matching
//! answers to queries by ID *and* question, or by ID alone for an error answer without a
//! question (RFC 7858 §3.3), in any order, the connection's
//! health (RTT, unanswered streaks, silence) and its idle life (RFC 7766 §6.2.3, RFC 7828
//! keepalive). It never decides where to connect or whether to retry: a query not answered
//! before the connection closed fails with [`QueryError::Closed`] and the pool retries it.

// pub(crate) for src/fuzz.rs, which fuzzes the framing.
pub(crate) mod framing;
mod task;

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{Notify, mpsc, oneshot},
    time::Instant,
};

use super::{
    health::{DeadPolicy, RttEstimate},
    race::Transport,
};

/// Why a query on a connection got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The connection closed (by either side) before the answer came; safe to retry once.
    #[error("connection closed before the answer")]
    Closed,
    /// The query is not a well-formed DNS query with exactly one question.
    #[error("malformed query")]
    Malformed,
    /// The upstream answered with an error and no question (RFC 7858 §3.3: matched by ID
    /// alone): it could not read the query, refused it, or does not implement it. Not an
    /// answer for the client; another try on the same connection would get the same.
    #[error("upstream {peer} answered {} without a question", rcode_name(*.rcode))]
    NoQuestion { rcode: u8, peer: SocketAddr },
}

/// The mnemonic of a 4-bit RCODE (RFC 1035 §4.1.1, RFC 2136 §2.2), for messages.
pub(crate) fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => format!("RCODE {other}"),
    }
}

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Close the connection after this long with nothing in flight (RFC 7766 §6.2.3).
    pub idle_timeout: Duration,
    /// At most this many queries in flight; further ones wait for a slot.
    pub max_inflight: usize,
    /// When the connection is declared dead and closed.
    pub dead: DeadPolicy,
}

/// Who a connection talks to, for logs and selection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Index of the upstream in the config.
    pub upstream: usize,
    pub upstream_name: Arc<str>,
    pub peer: SocketAddr,
    pub transport: Transport,
    /// The server was authenticated (TLS with pins or CA + name). False for plain text and
    /// for encrypt-only TLS: an on-path attacker could have written its answers, so their
    /// AD bit is cleared and they are cached only briefly (see the pipeline).
    pub authenticated: bool,
    /// The race attempt id that produced this connection (unique per daemon).
    pub attempt: u64,
}

impl fmt::Display for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.upstream_name, self.peer, self.transport)
    }
}

/// Why a connection task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Nothing in flight for the idle timeout (or the server's keepalive): a normal close,
    /// nothing to replace.
    Idle,
    /// Every handle was dropped (a race loser, or a replaced connection).
    Unused,
    /// The upstream closed it with nothing in flight: servers close idle connections when
    /// they need the slots (RFC 7766 §6.2.3, §6.2.5). Not a failure: nothing is lost, and
    /// re-opening at once would only be closed again (RFC 7766 §6.2.2: few connections).
    PeerIdle,
    /// The upstream closed it, I/O failed, or it stopped answering: replace it at once.
    Failed(&'static str),
    /// The pool closed it (suspect after a suspend, or replaced).
    Closed,
}

impl CloseReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::Unused => "unused",
            CloseReason::PeerIdle => "closed by upstream while idle",
            CloseReason::Failed(why) => why,
            CloseReason::Closed => "closed by the pool",
        }
    }
}

/// What the handle and the task share.
struct Shared {
    in_flight: AtomicUsize,
    close_reason: OnceLock<CloseReason>,
    state: Mutex<SharedState>,
    /// Wakes the task when `state` changed in a way that moves its deadlines.
    changed: Notify,
}

struct SharedState {
    rtt: RttEstimate,
    /// The pool used this connection's pair: keep a warm spare from idling out meanwhile.
    touched: Instant,
    /// The server's edns-tcp-keepalive TIMEOUT (RFC 7828), once it sent one.
    keepalive: Option<Duration>,
    /// The pool asked the connection to close now.
    closing: bool,
}

/// A cheap, cloneable handle to a live connection task.
#[derive(Clone)]
pub struct Connection {
    submit: mpsc::Sender<Submission>,
    info: Arc<ConnectionInfo>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("info", &self.info).finish()
    }
}

struct Submission {
    /// A query with exactly one, uncompressed question (checked by [`Connection::query`]).
    wire: Vec<u8>,
    reply: oneshot::Sender<Result<Vec<u8>, QueryError>>,
}

impl Connection {
    /// Starts the task that owns `stream`. The stream must be fully set up (TCP connected,
    /// TLS handshake done and the key verified).
    pub fn spawn<S>(stream: S, info: ConnectionInfo, limits: ConnectionLimits) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (submit, rx) = mpsc::channel(limits.max_inflight.max(1));
        let info = Arc::new(info);
        let shared = Arc::new(Shared {
            in_flight: AtomicUsize::new(0),
            close_reason: OnceLock::new(),
            state: Mutex::new(SharedState {
                rtt: RttEstimate::default(),
                touched: Instant::now(),
                keepalive: None,
                closing: false,
            }),
            changed: Notify::new(),
        });
        tokio::spawn(task::run(stream, rx, info.clone(), limits, shared.clone()));
        Self { submit, info, shared }
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The connection's info, shared (it outlives the connection in logs).
    pub fn shared_info(&self) -> Arc<ConnectionInfo> {
        self.info.clone()
    }

    /// True once the connection task has ended, or the server asked us (keepalive 0) to
    /// send nothing more; such a connection is never used again.
    pub fn is_closed(&self) -> bool {
        self.submit.is_closed() || self.lock().keepalive == Some(Duration::ZERO)
    }

    /// Resolves when the connection task has ended, with the reason.
    pub async fn closed(&self) -> CloseReason {
        self.submit.closed().await;
        self.shared.close_reason.get().copied().unwrap_or(CloseReason::Failed("ended"))
    }

    /// Queries in flight on this connection now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// The round-trip estimate of this connection.
    pub fn rtt(&self) -> RttEstimate {
        self.lock().rtt
    }

    /// Keeps the connection from idling out for another idle timeout, though nothing is
    /// sent on it: the warm spare lives as long as its primary is used.
    pub fn touch(&self) {
        self.lock().touched = Instant::now();
    }

    /// Closes the connection now: queries in flight fail as [`QueryError::Closed`].
    pub fn close(&self) {
        self.lock().closing = true;
        self.shared.changed.notify_one();
    }

    /// Applies the server's edns-tcp-keepalive TIMEOUT (RFC 7828 §3.2.2): close before it
    /// expires; 0 means send nothing more and close once the answers are in.
    pub fn honour_keepalive(&self, timeout: Duration) {
        let mut st = self.lock();
        if st.keepalive != Some(timeout) {
            st.keepalive = Some(timeout);
            drop(st);
            self.shared.changed.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `wire` (a DNS query with exactly one question) and waits for its answer. The
    /// query goes out under a fresh random ID; the answer comes back with the caller's ID.
    /// The caller bounds the wait: dropping this future abandons the query, which counts
    /// towards declaring the connection dead.
    pub async fn query(&self, wire: Vec<u8>) -> Result<Vec<u8>, QueryError> {
        framing::question_bytes(&wire).ok_or(QueryError::Malformed)?;
        let (reply, answer) = oneshot::channel();
        self.submit.send(Submission { wire, reply }).await.map_err(|_| QueryError::Closed)?;
        answer.await.unwrap_or(Err(QueryError::Closed))
    }
}
