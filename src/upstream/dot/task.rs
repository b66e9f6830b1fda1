//! The task that owns one upstream connection's socket: writes queries, reads answers,
//! watches health, and closes the connection when it idles out or dies.

use std::{collections::HashMap, time::Duration};

use bytes::BytesMut;
use prometheus_client::metrics::histogram::Histogram;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::oneshot,
    time::{Instant, sleep_until},
};
use tracing::debug;

use super::framing::{push_frame, question_bytes, questionless_error, same_question, take_frame};
use crate::{
    metrics::metrics,
    upstream::{
        connection::{
            CloseReason, ConnectionInfo, ConnectionLimits, NEVER, QueryError, SWEEP_EVERY, Snapshot,
            Submission, TaskSide, sweep_abandoned,
        },
        health::ConnectionHealth,
    },
};

/// Queries waiting in the channel are written together, up to about this many octets:
/// one TLS record and one system call for a burst instead of one per query.
const WRITE_BATCH: usize = 16 * 1024;

struct Pending {
    client_id: u16,
    /// The query as sent (its question is matched against the answer's).
    query: Vec<u8>,
    sent_at: Instant,
    reply: oneshot::Sender<Result<Vec<u8>, QueryError>>,
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

pub(super) async fn run<S>(stream: S, mut side: TaskSide, limits: ConnectionLimits)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut pending: HashMap<u16, Pending> = HashMap::new();
    let mut health = ConnectionHealth::default();
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let info = side.info.clone();
    let mut last_activity = Instant::now();
    let started = last_activity;
    let mut next_sweep = started + SWEEP_EVERY;
    let mut answered = 0u64;
    // Taken once: observing it per answer is then one short lock, no label lookup.
    let rtt_histogram = metrics().upstream_rtt(&info.upstream_name);
    // One timer for every deadline, moved rather than rebuilt on each turn.
    let timer = sleep_until(started + NEVER);
    tokio::pin!(timer);

    let reason = loop {
        let now = Instant::now();
        if now >= next_sweep {
            next_sweep = now + SWEEP_EVERY;
            sweep_abandoned(&mut pending, &mut health, |p| &p.reply, |_| {});
        }
        if let Some(dead) = side.dead(&health, limits, now) {
            break dead;
        }
        let Snapshot { keepalive, touched, closing } = side.snapshot(pending.len());
        if closing {
            break CloseReason::Closed;
        }
        // RFC 7828 §3.2.2: TIMEOUT 0 means no new queries; close once answers are in. A
        // server TIMEOUT otherwise shortens our idle timeout, closing a little before it.
        let draining = keepalive == Some(Duration::ZERO);
        let idle_timeout = keepalive.map_or(limits.idle_timeout, |k| limits.idle_timeout.min(k * 9 / 10));
        let idle_deadline = last_activity.max(touched) + idle_timeout;
        if pending.is_empty() && (draining || now >= idle_deadline) {
            break CloseReason::Idle;
        }
        let has_room = !draining && pending.len() < limits.max_inflight;
        let silence_check = health.next_check(limits.dead).unwrap_or(now + NEVER);
        let wake = if pending.is_empty() { idle_deadline } else { next_sweep }.min(silence_check);
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) if pending.is_empty() => break CloseReason::PeerIdle,
                Ok(0) => break CloseReason::Failed("closed by upstream"),
                Err(_) => break CloseReason::Failed("read error"),
                Ok(_) => {
                    let now = Instant::now();
                    last_activity = now;
                    while let Some(message) = take_frame(&mut buf) {
                        if deliver(&mut pending, message, &mut health, &rtt_histogram, now, &info) {
                            answered += 1;
                        } else {
                            // Not a query in flight (a late answer to an abandoned one):
                            // still proof of life.
                            health.on_heard(now, pending.len());
                        }
                    }
                    side.set_rtt(health.rtt);
                }
            },
            submission = side.rx.recv(), if has_room => {
                let Some(first) = submission else { break CloseReason::Unused };
                // Everything already queued goes out with it, in one write; yielding once
                // first lets the tasks that are about to submit (woken by the same burst
                // of client queries) queue theirs.
                tokio::task::yield_now().await;
                let now = Instant::now();
                out.clear();
                let mut next = Some(first);
                while let Some(Submission { mut wire, reply }) = next {
                    if !reply.is_closed() {
                        let id = fresh_id(&pending);
                        let client_id = u16::from_be_bytes([wire[0], wire[1]]);
                        wire[..2].copy_from_slice(&id.to_be_bytes());
                        push_frame(&mut out, &wire);
                        pending.insert(id, Pending { client_id, query: wire, sent_at: now, reply });
                        health.on_sent(now, pending.len());
                    }
                    let room = pending.len() < limits.max_inflight && out.len() < WRITE_BATCH;
                    next = if room { side.rx.try_recv().ok() } else { None };
                }
                if out.is_empty() {
                    continue;
                }
                // Each length prefix and its message in one write (RFC 7858 §3.3, RFC
                // 7766 §8), and every message of the batch in the same one.
                if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
                    break CloseReason::Failed("write error");
                }
                last_activity = now;
            },
            _ = &mut timer => {}
            _ = side.shared.changed.notified() => {}
        }
    };

    side.finish(reason, pending.into_values().map(|p| p.reply), answered);
    if matches!(reason, CloseReason::Idle | CloseReason::Unused) {
        // Best effort close_notify; the peer may already be gone.
        let _ = tokio::time::timeout(Duration::from_millis(200), writer.shutdown()).await;
    }
}

/// Hands an answer to its waiter; returns whether it matched a query in flight. An
/// answer with a question matches by ID and question; an error answer without one by ID
/// alone (RFC 7858 §3.3), and its waiter learns at once that there is no answer rather
/// than waiting out its timeout.
fn deliver(
    pending: &mut HashMap<u16, Pending>,
    mut message: BytesMut,
    health: &mut ConnectionHealth,
    rtt_histogram: &Histogram,
    now: Instant,
    info: &ConnectionInfo,
) -> bool {
    let id = match question_bytes(&message) {
        Some(question) => {
            let id = u16::from_be_bytes([message[0], message[1]]);
            match pending.get(&id) {
                Some(p) if question_bytes(&p.query).is_some_and(|q| same_question(q, question)) => id,
                Some(_) => {
                    debug!(id, "ignoring an upstream answer whose question does not match");
                    return false;
                }
                None => {
                    debug!(id, "ignoring an upstream answer for no query in flight");
                    return false;
                }
            }
        }
        None => match questionless_error(&message) {
            Some(_) if pending.contains_key(&u16::from_be_bytes([message[0], message[1]])) => {
                u16::from_be_bytes([message[0], message[1]])
            }
            _ => {
                debug!(len = message.len(), "ignoring an upstream message without one question");
                return false;
            }
        },
    };
    let p = pending.remove(&id).expect("checked above");
    let rtt = now.saturating_duration_since(p.sent_at);
    health.on_answer(rtt, now, pending.len());
    rtt_histogram.observe(rtt.as_secs_f64());
    if let Some(rcode) = questionless_error(&message) {
        let _ = p.reply.send(Err(QueryError::NoQuestion { rcode, peer: info.peer }));
        return true;
    }
    message[..2].copy_from_slice(&p.client_id.to_be_bytes());
    let _ = p.reply.send(Ok(message.to_vec()));
    true
}
