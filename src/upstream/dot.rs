//! One pipelined DNS connection to an upstream, over TLS (RFC 7858) or plain TCP (RFC 7766).
//!
//! Owns the framing (2-octet length prefix), the per-connection message IDs, and matching
//! answers to queries by ID *and* question (RFC 7858 §3.3), in any order. It never decides
//! where to connect or whether to retry: a query that was not answered before the connection
//! closed fails with [`QueryError::Closed`] and the pool retries it elsewhere.

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{Buf, BytesMut};
use hickory_proto::{
    op::{Header, Query},
    serialize::binary::{BinDecodable, BinDecoder},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot},
    time::{Instant, sleep_until},
};
use tracing::{debug, info};

use super::race::Transport;

/// Why a query on a connection got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The connection closed (by either side) before the answer came; safe to retry once.
    #[error("connection closed before the answer")]
    Closed,
    /// The query is not a well-formed DNS query with exactly one question.
    #[error("malformed query")]
    Malformed,
}

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Close the connection after this long with nothing in flight (RFC 7766 §6.2.3).
    pub idle_timeout: Duration,
    /// At most this many queries in flight; further ones wait for a slot.
    pub max_inflight: usize,
}

/// Who a connection talks to, for logs and selection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Index of the upstream in the config.
    pub upstream: usize,
    pub upstream_name: Arc<str>,
    pub peer: SocketAddr,
    pub transport: Transport,
    /// The race attempt id that produced this connection (unique per daemon).
    pub attempt: u64,
}

impl fmt::Display for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {:?}",
            self.upstream_name, self.peer, self.transport
        )
    }
}

/// A cheap, cloneable handle to a live connection task.
#[derive(Clone)]
pub struct Connection {
    submit: mpsc::Sender<Submission>,
    info: Arc<ConnectionInfo>,
    in_flight: Arc<AtomicUsize>,
    close_reason: Arc<OnceLock<CloseReason>>,
}

/// Why a connection task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Nothing in flight for the idle timeout: a normal close, nothing to replace.
    Idle,
    /// Every handle was dropped (a race loser, or a replaced connection).
    Unused,
    /// The upstream closed it, or reading or writing failed: replace it at once.
    Failed(&'static str),
}

impl CloseReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::Unused => "unused",
            CloseReason::Failed(why) => why,
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("info", &self.info)
            .finish()
    }
}

struct Submission {
    wire: Vec<u8>,
    question: Query,
    reply: oneshot::Sender<Result<Vec<u8>, QueryError>>,
}

struct Pending {
    client_id: u16,
    question: Query,
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
        let in_flight = Arc::new(AtomicUsize::new(0));
        let close_reason = Arc::new(OnceLock::new());
        let task = run(
            stream,
            rx,
            info.clone(),
            limits,
            in_flight.clone(),
            close_reason.clone(),
        );
        tokio::spawn(task);
        Self {
            submit,
            info,
            in_flight,
            close_reason,
        }
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// True once the connection task has ended; a closed connection never reopens.
    pub fn is_closed(&self) -> bool {
        self.submit.is_closed()
    }

    /// Resolves when the connection task has ended, with the reason.
    pub async fn closed(&self) -> CloseReason {
        self.submit.closed().await;
        self.close_reason
            .get()
            .copied()
            .unwrap_or(CloseReason::Failed("ended"))
    }

    /// Queries in flight on this connection now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Sends `wire` (a DNS query with exactly one question) and waits for its answer. The
    /// query goes out under a fresh random ID; the answer comes back with the caller's ID.
    /// The caller bounds the wait: dropping this future abandons the query.
    pub async fn query(&self, wire: Vec<u8>) -> Result<Vec<u8>, QueryError> {
        let question = question_of(&wire).ok_or(QueryError::Malformed)?;
        let (reply, answer) = oneshot::channel();
        self.submit
            .send(Submission {
                wire,
                question,
                reply,
            })
            .await
            .map_err(|_| QueryError::Closed)?;
        answer.await.unwrap_or(Err(QueryError::Closed))
    }
}

/// The header ID and the single question of a DNS message, if it has exactly one.
fn question_of(wire: &[u8]) -> Option<Query> {
    let mut decoder = BinDecoder::new(wire);
    let header = Header::read(&mut decoder).ok()?;
    if header.counts.queries != 1 {
        return None;
    }
    Query::read(&mut decoder).ok()
}

/// Matching per RFC 7766 §7: name (hickory's `Name` equality ignores case), type and class.
fn same_question(a: &Query, b: &Query) -> bool {
    a.query_type() == b.query_type() && a.query_class() == b.query_class() && a.name() == b.name()
}

/// Takes one length-prefixed message off the front of `buf`, if a whole one is there.
fn take_frame(buf: &mut BytesMut) -> Option<BytesMut> {
    if buf.len() < 2 {
        return None;
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    if buf.len() < 2 + len {
        buf.reserve(2 + len - buf.len());
        return None;
    }
    buf.advance(2);
    Some(buf.split_to(len))
}

fn fresh_id(pending: &HashMap<u16, Pending>) -> u16 {
    // RFC 7766 §6.2.1: never reuse an ID in flight on this connection. Random, so an
    // on-path observer of a plain connection cannot predict it (RFC 5452 §9.2).
    loop {
        let id: u16 = rand::random();
        if !pending.contains_key(&id) {
            return id;
        }
    }
}

async fn run<S>(
    stream: S,
    mut rx: mpsc::Receiver<Submission>,
    info: Arc<ConnectionInfo>,
    limits: ConnectionLimits,
    in_flight: Arc<AtomicUsize>,
    close_reason: Arc<OnceLock<CloseReason>>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut pending: HashMap<u16, Pending> = HashMap::new();
    let mut buf = BytesMut::with_capacity(4096);
    let mut frame = Vec::with_capacity(512);
    let mut last_activity = Instant::now();
    let started = last_activity;
    let mut answered = 0u64;

    let reason = loop {
        if pending.len() >= limits.max_inflight {
            // Abandoned queries (their client timed out) must not hold slots forever.
            pending.retain(|_, p| !p.reply.is_closed());
        }
        in_flight.store(pending.len(), Ordering::Relaxed);
        let has_room = pending.len() < limits.max_inflight;
        let idle_deadline = last_activity + limits.idle_timeout;
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break CloseReason::Failed("closed by upstream"),
                Err(_) => break CloseReason::Failed("read error"),
                Ok(_) => {
                    last_activity = Instant::now();
                    while let Some(message) = take_frame(&mut buf) {
                        if deliver(&mut pending, message) {
                            answered += 1;
                        }
                    }
                }
            },
            submission = rx.recv(), if has_room => match submission {
                None => break CloseReason::Unused,
                Some(sub) if sub.reply.is_closed() => {}
                Some(Submission { mut wire, question, reply }) => {
                    let id = fresh_id(&pending);
                    let client_id = u16::from_be_bytes([wire[0], wire[1]]);
                    wire[..2].copy_from_slice(&id.to_be_bytes());
                    frame.clear();
                    frame.extend_from_slice(&(wire.len() as u16).to_be_bytes());
                    frame.extend_from_slice(&wire);
                    // Length and message in one write (RFC 7858 §3.3, RFC 7766 §8).
                    if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                        let _ = reply.send(Err(QueryError::Closed));
                        break CloseReason::Failed("write error");
                    }
                    pending.insert(id, Pending { client_id, question, reply });
                    last_activity = Instant::now();
                }
            },
            _ = sleep_until(idle_deadline), if pending.is_empty() => break CloseReason::Idle,
        }
    };

    // Closing: everything not answered fails as Closed, so the pool can retry it. The
    // reason is set before the receiver closes, so `closed()` always sees it.
    let _ = close_reason.set(reason);
    rx.close();
    while let Ok(sub) = rx.try_recv() {
        let _ = sub.reply.send(Err(QueryError::Closed));
    }
    let unanswered = pending.len();
    for (_, p) in pending.drain() {
        let _ = p.reply.send(Err(QueryError::Closed));
    }
    in_flight.store(0, Ordering::Relaxed);
    if matches!(reason, CloseReason::Idle | CloseReason::Unused) {
        // Best effort close_notify; the peer may already be gone.
        let _ = tokio::time::timeout(Duration::from_millis(200), writer.shutdown()).await;
    }
    info!(
        attempt = info.attempt,
        upstream = %info.upstream_name,
        ip = %info.peer.ip(),
        port = info.peer.port(),
        transport = %info.transport.as_str(),
        reason = reason.as_str(),
        answered,
        unanswered,
        lifetime_ms = started.elapsed().as_millis() as u64,
        "upstream connection closed"
    );
}

/// Hands an answer to its waiter; returns whether it matched a query in flight.
fn deliver(pending: &mut HashMap<u16, Pending>, mut message: BytesMut) -> bool {
    let Some(question) = question_of(&message) else {
        debug!(
            len = message.len(),
            "ignoring an upstream message without one question"
        );
        return false;
    };
    let id = u16::from_be_bytes([message[0], message[1]]);
    match pending.get(&id) {
        Some(p) if same_question(&p.question, &question) => {}
        Some(_) => {
            debug!(
                id,
                "ignoring an upstream answer whose question does not match"
            );
            return false;
        }
        None => {
            debug!(id, "ignoring an upstream answer for no query in flight");
            return false;
        }
    }
    let p = pending.remove(&id).expect("checked above");
    message[..2].copy_from_slice(&p.client_id.to_be_bytes());
    let _ = p.reply.send(Ok(message.to_vec()));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 3, 1, 2]);
        assert!(take_frame(&mut buf).is_none());
        buf.extend_from_slice(&[3, 0, 1, 9]);
        assert_eq!(&take_frame(&mut buf).unwrap()[..], &[1, 2, 3]);
        assert_eq!(&take_frame(&mut buf).unwrap()[..], &[9]);
        assert!(take_frame(&mut buf).is_none());
    }

    #[test]
    fn questions_compare_case_insensitively() {
        use hickory_proto::rr::{Name, RecordType};
        let a = Query::query(Name::from_ascii("Example.TEST.").unwrap(), RecordType::A);
        let b = Query::query(Name::from_ascii("example.test.").unwrap(), RecordType::A);
        let c = Query::query(Name::from_ascii("example.test.").unwrap(), RecordType::AAAA);
        assert!(same_question(&a, &b));
        assert!(!same_question(&a, &c));
    }
}
