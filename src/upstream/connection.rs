//! One upstream connection as the pool sees it, whatever carries it: submit a query, get
//! its answer or a typed error, read its health. DNS over TLS or TCP (`dot/`) and DNS over
//! HTTPS (`doh/`) are two tasks behind this one handle (docs/design.md, "Transports").
//!
//! Owns the handle, what it shares with the task (queries in flight, RTT, the close
//! reason, the keepalive the server asked for) and how a task ends: every query not
//! answered fails as [`QueryError::Closed`] so that the pool can retry it, and one log line
//! says why the connection closed. It never decides where to connect or whether to retry.

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Notify, mpsc, oneshot},
    time::Instant,
};
use tracing::{info, warn};

use super::{
    dot::framing,
    health::{ConnectionHealth, DeadPolicy, RttEstimate},
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
    /// A DoH stream ended without an answer (RFC 8484 §4.2.1): an HTTP error status, the
    /// wrong content type, a reset, or a body that is not this query's answer.
    #[error("DoH stream failed: {0}")]
    Http(super::doh::StreamFailure),
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
pub(super) struct Shared {
    pub(super) in_flight: AtomicUsize,
    pub(super) close_reason: OnceLock<CloseReason>,
    pub(super) state: Mutex<SharedState>,
    /// Wakes the task when `state` changed in a way that moves its deadlines.
    pub(super) changed: Notify,
}

pub(super) struct SharedState {
    pub(super) rtt: RttEstimate,
    /// The pool used this connection's pair: keep a warm spare from idling out meanwhile.
    pub(super) touched: Instant,
    /// The server's edns-tcp-keepalive TIMEOUT (RFC 7828), once it sent one.
    pub(super) keepalive: Option<Duration>,
    /// The pool asked the connection to close now.
    pub(super) closing: bool,
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

pub(super) struct Submission {
    /// A query with exactly one, uncompressed question (checked by [`Connection::query`]).
    pub(super) wire: Vec<u8>,
    pub(super) reply: oneshot::Sender<Result<Vec<u8>, QueryError>>,
}

impl Connection {
    /// A handle and the [`TaskSide`] its transport's task runs on; the caller spawns that
    /// task ([`super::dot::spawn`], [`super::doh::spawn`]).
    pub(super) fn new(info: ConnectionInfo, limits: ConnectionLimits) -> (Self, TaskSide) {
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
        let task = TaskSide { rx, info: info.clone(), shared: shared.clone(), started: Instant::now() };
        (Self { submit, info, shared }, task)
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
        // RFC 7828 is about DNS's own use of a TCP connection; over HTTP/2 the connection's
        // life is HTTP's (GOAWAY), and a DoH query never asks for the option.
        if self.info.transport == Transport::Https {
            return;
        }
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

/// How often a connection task sweeps the queries whose waiters left, while any are in
/// flight: it walks every one of them, so not per message.
pub(super) const SWEEP_EVERY: Duration = Duration::from_millis(50);
/// Far enough away to mean "never" for a task's deadline that does not apply.
pub(super) const NEVER: Duration = Duration::from_secs(86_400);

/// Drops the queries in flight whose waiters left (answered elsewhere by a hedge, or the
/// client gave up): their slots free, `gone` runs on each (a DoH stream is reset), and
/// they count as unanswered towards the dead policy.
pub(super) fn sweep_abandoned<K, P>(
    pending: &mut HashMap<K, P>,
    health: &mut ConnectionHealth,
    reply: impl Fn(&P) -> &oneshot::Sender<Result<Vec<u8>, QueryError>>,
    mut gone: impl FnMut(&P),
) {
    let before = pending.len();
    pending.retain(|_, p| {
        let keep = !reply(p).is_closed();
        if !keep {
            gone(p);
        }
        keep
    });
    if pending.len() < before {
        health.on_abandoned((before - pending.len()) as u32, pending.len());
    }
}

/// The task's side of a connection: the queries it must send and what it shares with the
/// handle.
pub(super) struct TaskSide {
    pub(super) rx: mpsc::Receiver<Submission>,
    pub(super) info: Arc<ConnectionInfo>,
    pub(super) shared: Arc<Shared>,
    pub(super) started: Instant,
}

/// What the task reads of the shared state on each turn.
pub(super) struct Snapshot {
    pub(super) keepalive: Option<Duration>,
    pub(super) touched: Instant,
    pub(super) closing: bool,
}

impl TaskSide {
    pub(super) fn snapshot(&self, in_flight: usize) -> Snapshot {
        self.shared.in_flight.store(in_flight, Ordering::Relaxed);
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        Snapshot { keepalive: st.keepalive, touched: st.touched, closing: st.closing }
    }

    /// The close reason if `health` says the connection is dead now, logged once.
    pub(super) fn dead(
        &self,
        health: &ConnectionHealth,
        limits: ConnectionLimits,
        now: Instant,
    ) -> Option<CloseReason> {
        let dead = health.dead(limits.dead, now)?;
        let info = &self.info;
        warn!(
            attempt = info.attempt,
            upstream = %info.upstream_name,
            ip = %info.peer.ip(),
            port = info.peer.port(),
            transport = %info.transport,
            reason = dead.as_str(),
            "upstream connection declared dead"
        );
        Some(CloseReason::Failed(dead.as_str()))
    }

    pub(super) fn set_rtt(&self, rtt: RttEstimate) {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).rtt = rtt;
    }

    /// Ends the connection: the reason is set before the channel closes (so `closed()`
    /// always sees it), every query waiting or in flight fails as [`QueryError::Closed`]
    /// (the pool may retry it), and one line says why and what the connection did.
    pub(super) fn finish(
        mut self,
        reason: CloseReason,
        in_flight: impl IntoIterator<Item = oneshot::Sender<Result<Vec<u8>, QueryError>>>,
        answered: u64,
    ) {
        let _ = self.shared.close_reason.set(reason);
        self.rx.close();
        while let Ok(sub) = self.rx.try_recv() {
            let _ = sub.reply.send(Err(QueryError::Closed));
        }
        let mut unanswered = 0u64;
        for reply in in_flight {
            unanswered += 1;
            let _ = reply.send(Err(QueryError::Closed));
        }
        self.shared.in_flight.store(0, Ordering::Relaxed);
        let info = &self.info;
        info!(
            attempt = info.attempt,
            upstream = %info.upstream_name,
            ip = %info.peer.ip(),
            port = info.peer.port(),
            transport = %info.transport,
            reason = reason.as_str(),
            answered,
            unanswered,
            lifetime_ms = self.started.elapsed().as_millis() as u64,
            "upstream connection closed"
        );
    }
}
