//! The task that owns one HTTP/2 connection to a DoH server: one stream per query, many
//! at once, answers matched by their stream; health, idle life and closing as for DoT.
//!
//! h2's connection future runs in a task of its own (it reads and writes the socket);
//! each stream's response is awaited in a task of the `streams` set, so a stream the pool
//! gave up on is aborted alone (dropping it sends RST_STREAM CANCEL, RFC 9113 §8.4).

use std::{
    collections::HashMap,
    future::poll_fn,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use tokio::{
    sync::oneshot,
    task::{AbortHandle, JoinHandle, JoinSet},
    time::{Instant, sleep_until},
};
use tracing::debug;

use super::exchange::{Answer, Endpoint, MAX_ANSWER, StreamFailure, accept_answer, age, check_head, zero_id};
use crate::{
    metrics::metrics,
    upstream::{
        connection::{
            CloseReason, ConnectionLimits, NEVER, QueryError, SWEEP_EVERY, Snapshot, Submission, TaskSide,
            sweep_abandoned,
        },
        dot::framing::question_bytes,
        health::ConnectionHealth,
    },
};

/// How long a closing connection may take to say GOAWAY before its socket is dropped.
const GOODBYE: Duration = Duration::from_millis(200);

struct Pending {
    sent_at: Instant,
    reply: oneshot::Sender<Result<Vec<u8>, QueryError>>,
    stream: AbortHandle,
}

type StreamResult = (u64, Result<Answer, QueryError>);

pub(super) async fn run(
    mut send: SendRequest<Bytes>,
    mut driver: JoinHandle<Result<(), h2::Error>>,
    endpoint: Endpoint,
    mut side: TaskSide,
    limits: ConnectionLimits,
) {
    let info = side.info.clone();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut streams: JoinSet<StreamResult> = JoinSet::new();
    let mut health = ConnectionHealth::default();
    let mut next_seq = 0u64;
    let mut answered = 0u64;
    let mut last_activity = Instant::now();
    let mut next_sweep = last_activity + SWEEP_EVERY;
    // Set once the server said GOAWAY (or the connection can open no stream): no new
    // queries, the ones in flight may still finish. Whether any were in flight then.
    let mut going_away: Option<bool> = None;
    let mut ready = false;
    // Since when queries have waited for a stream the server's SETTINGS do not allow
    // (SETTINGS_MAX_CONCURRENT_STREAMS, RFC 9113 §5.1.2): a server that never makes room
    // is as dead as a silent one, though nothing is in flight to time out.
    let mut no_room_since: Option<Instant> = None;
    let rtt_histogram = metrics().upstream_rtt(&info.upstream_name);
    let timer = sleep_until(last_activity + NEVER);
    tokio::pin!(timer);

    let reason = loop {
        let now = Instant::now();
        if now >= next_sweep {
            next_sweep = now + SWEEP_EVERY;
            sweep_abandoned(&mut pending, &mut health, |p| &p.reply, |p| p.stream.abort());
        }
        if let Some(dead) = side.dead(&health, limits, now) {
            break dead;
        }
        let Snapshot { touched, closing, .. } = side.snapshot(pending.len());
        if closing {
            break CloseReason::Closed;
        }
        if pending.is_empty() {
            match going_away {
                Some(true) => break CloseReason::Failed("GOAWAY from upstream"),
                Some(false) => break CloseReason::PeerIdle,
                None => {}
            }
        }
        let idle_deadline = last_activity.max(touched) + limits.idle_timeout;
        if pending.is_empty() && now >= idle_deadline {
            break CloseReason::Idle;
        }
        let has_room = going_away.is_none() && pending.len() < limits.max_inflight;
        no_room_since = (has_room && !ready && !side.rx.is_empty()).then(|| no_room_since.unwrap_or(now));
        if no_room_since.is_some_and(|since| now >= since + limits.dead.silence) {
            break CloseReason::Failed("no stream allowed by the server");
        }
        let silence_check = health.next_check(limits.dead).unwrap_or(now + NEVER);
        let room_check = no_room_since.map_or(now + NEVER, |since| since + limits.dead.silence);
        let wake =
            if pending.is_empty() { idle_deadline } else { next_sweep }.min(silence_check).min(room_check);
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            ended = &mut driver => {
                let detail = match ended {
                    Ok(Ok(())) => "closed by upstream".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "connection task ended".to_string(),
                };
                debug!(attempt = info.attempt, %detail, "HTTP/2 connection ended");
                break if pending.is_empty() { CloseReason::PeerIdle } else { CloseReason::Failed("closed by upstream") };
            }
            Some(joined) = streams.join_next(), if !streams.is_empty() => {
                // An aborted stream (its waiter left) reports nothing.
                let Ok((seq, result)) = joined else { continue };
                let Some(p) = pending.remove(&seq) else { continue };
                let now = Instant::now();
                last_activity = now;
                match result {
                    Ok(answer) => {
                        let rtt = now.saturating_duration_since(p.sent_at);
                        health.on_answer(rtt, now, pending.len());
                        rtt_histogram.observe(rtt.as_secs_f64());
                        side.set_rtt(health.rtt);
                        answered += 1;
                        let _ = p.reply.send(match answer {
                            Answer::Message(wire) => Ok(wire),
                            Answer::Questionless(rcode) => Err(QueryError::NoQuestion { rcode, peer: info.peer }),
                        });
                    }
                    Err(err) => {
                        if let QueryError::Http(failure) = err {
                            debug!(attempt = info.attempt, upstream = %info.upstream_name, %failure, "DoH stream failed");
                            health.on_failed(now, pending.len());
                        }
                        let _ = p.reply.send(Err(err));
                    }
                }
            }
            result = poll_fn(|cx| send.poll_ready(cx)), if has_room && !ready => match result {
                Ok(()) => ready = true,
                Err(e) => {
                    debug!(attempt = info.attempt, error = %e, "HTTP/2 connection takes no new streams");
                    going_away = Some(!pending.is_empty());
                }
            },
            submission = side.rx.recv(), if has_room && ready => {
                let Some(first) = submission else { break CloseReason::Unused };
                let now = Instant::now();
                let mut next = Some(first);
                while let Some(Submission { wire, reply }) = next.take() {
                    ready = false;
                    if reply.is_closed() {
                        ready = true;
                    } else {
                        match open_stream(&mut send, &endpoint, wire) {
                            Ok((response, question, client_id)) => {
                                let seq = next_seq;
                                next_seq += 1;
                                let stream = streams.spawn(async move { (seq, exchange(response, question, client_id).await) });
                                pending.insert(seq, Pending { sent_at: now, reply, stream });
                                health.on_sent(now, pending.len());
                                last_activity = now;
                            }
                            Err(e) => {
                                let _ = reply.send(Err(QueryError::Closed));
                                debug!(attempt = info.attempt, error = %e, "HTTP/2 stream could not be opened");
                                going_away = Some(!pending.is_empty());
                                break;
                            }
                        }
                        // Another stream at once if h2 has room for it now, without a turn.
                        ready = matches!(send.poll_ready(&mut Context::from_waker(Waker::noop())), Poll::Ready(Ok(())));
                    }
                    if ready && pending.len() < limits.max_inflight {
                        next = side.rx.try_recv().ok();
                    }
                }
            },
            _ = &mut timer => {}
            _ = side.shared.changed.notified() => {}
        }
    };

    streams.abort_all();
    side.finish(reason, pending.into_values().map(|p| p.reply), answered);
    drop(send);
    if matches!(reason, CloseReason::Idle | CloseReason::Unused) {
        // With no handle and no stream left, h2 says GOAWAY and closes; bounded, because
        // the peer may already be gone.
        if tokio::time::timeout(GOODBYE, &mut driver).await.is_err() {
            driver.abort();
        }
    } else {
        driver.abort();
    }
}

/// Opens one stream for the query `wire` (ID set to 0) and sends it whole: the request
/// head, then the body with END_STREAM.
fn open_stream(
    send: &mut SendRequest<Bytes>,
    endpoint: &Endpoint,
    mut wire: Vec<u8>,
) -> Result<(ResponseFuture, Vec<u8>, u16), h2::Error> {
    let client_id = zero_id(&mut wire);
    let question = question_bytes(&wire).map(<[u8]>::to_vec).unwrap_or_default();
    let (response, mut body) = send.send_request(endpoint.request(wire.len()), false)?;
    body.send_data(Bytes::from(wire), true)?;
    Ok((response, question, client_id))
}

/// Waits for one stream's response and reads its body, at most a DNS message long.
async fn exchange(response: ResponseFuture, question: Vec<u8>, client_id: u16) -> Result<Answer, QueryError> {
    let response = response.await.map_err(stream_error)?;
    check_head(response.status(), response.headers()).map_err(QueryError::Http)?;
    let age = age(response.headers());
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(stream_error)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if buf.len() + chunk.len() > MAX_ANSWER {
            return Err(QueryError::Http(StreamFailure::TooLarge));
        }
        buf.extend_from_slice(&chunk);
    }
    accept_answer(buf.freeze(), &question, client_id, age).map_err(QueryError::Http)
}

/// What an h2 error on a stream means for its query: the connection's end (retry
/// elsewhere), or a failure of this query. A stream reset, REFUSED_STREAM included, is the
/// server's word on this query: it fails at once (the pool asks the other connection, if
/// one is up) and counts against the connection, so a server refusing every stream is
/// replaced rather than asked again and again.
fn stream_error(e: h2::Error) -> QueryError {
    match e.reason() {
        _ if e.is_io() => QueryError::Closed,
        Some(reason) if e.is_go_away() => {
            if u32::from(reason) == 0 {
                QueryError::Closed
            } else {
                QueryError::Http(StreamFailure::Reset(reason.into()))
            }
        }
        Some(reason) if e.is_reset() => QueryError::Http(StreamFailure::Reset(reason.into())),
        _ => QueryError::Http(StreamFailure::Protocol),
    }
}
