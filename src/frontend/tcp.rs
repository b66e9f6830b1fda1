//! Serving TCP clients (RFC 7766): length-prefixed frames, each connection's queries
//! answered concurrently (in any order, as §6.2.1.1 allows), idle connections closed.
//!
//! No client can wedge it: a client outside `allow` is closed at accept, before it takes
//! a connection slot; one address may hold only `max_tcp_per_client` connections; every
//! write to a client has a deadline, and a connection that misses one is closed (the
//! reader stops with it, so a client that never reads is gone in bounded time); a
//! query's in-flight slot is given back once its answer exists, never held while the
//! answer waits for the client's socket; at the in-flight cap a query waits briefly and
//! is then answered SERVFAIL, never dropped (§6.2.1.1: every request gets a response).

use std::{net::SocketAddr, sync::Arc, sync::atomic::Ordering, time::Duration};

use hickory_proto::op::ResponseCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch},
    time::{sleep, timeout},
};
use tracing::{debug, warn};

use super::{
    Context, TCP_PIPELINE_DEPTH,
    admission::{AcceptBackoff, SourceSlot},
    framing,
    request::{Verdict, classify},
};
use crate::{
    metrics::ClientTransport::Tcp,
    pipeline::{Answer, Source},
};

/// How long a TCP query waits for an in-flight slot at `server.max_inflight` before it
/// is answered SERVFAIL.
const ADMIT_WAIT: Duration = Duration::from_millis(500);

pub(super) async fn serve(listener: TcpListener, ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    let (mut full, mut outside, mut crowded) = (0u64, 0u64, 0u64);
    let mut backoff = AcceptBackoff::default();
    loop {
        let Some((stream, src)) = accept_next(|| listener.accept(), &mut backoff, &mut stop).await else {
            return;
        };
        // Dropping `stream` closes it. A client outside `allow` takes no slot at all.
        if !ctx.acl().allows(src.ip()) {
            outside += 1;
            if outside.is_power_of_two() {
                debug!(closed = outside, %src, "tcp client outside server.allow; closed at accept");
            }
            continue;
        }
        let Some(per_source) = ctx.per_source.try_open(src.ip()) else {
            crowded += 1;
            if crowded.is_power_of_two() {
                warn!(
                    closed = crowded,
                    client = %src.ip(),
                    limit = ctx.limits.max_tcp_per_client,
                    "server.max_tcp_per_client reached; closing this client's new connections"
                );
            }
            continue;
        };
        let Ok(slot) = ctx.tcp_clients.clone().try_acquire_owned() else {
            full += 1;
            if full.is_power_of_two() {
                warn!(
                    refused = full,
                    limit = ctx.limits.max_tcp_clients,
                    "server.max_tcp_clients reached; closing new connections"
                );
            }
            continue;
        };
        tokio::spawn(connection(stream, src, ctx.clone(), stop.clone(), (slot, per_source)));
    }
}

/// The next connection `accept` gives, or None once `stop` changes. After a failed
/// accept it pauses as `backoff` says: out of descriptors the listener stays readable,
/// and accepting again at once would spin.
async fn accept_next<T, Fut>(
    mut accept: impl FnMut() -> Fut,
    backoff: &mut AcceptBackoff,
    stop: &mut watch::Receiver<bool>,
) -> Option<T>
where
    Fut: Future<Output = std::io::Result<T>>,
{
    loop {
        let accepted = tokio::select! {
            accepted = accept() => accepted,
            _ = stop.changed() => return None,
        };
        let err = match accepted {
            Ok(accepted) => {
                backoff.accepted();
                return Some(accepted);
            }
            Err(err) => err,
        };
        let Some(pause) = backoff.failed(&err) else {
            debug!(%err, "tcp accept error");
            continue;
        };
        if backoff.failures().is_power_of_two() {
            warn!(
                %err,
                failures = backoff.failures(),
                pause_ms = pause.as_millis() as u64,
                "tcp accept failing; pausing before the next"
            );
        }
        tokio::select! {
            _ = sleep(pause) => {}
            _ = stop.changed() => return None,
        }
    }
}

async fn read_frame(reader: &mut OwnedReadHalf) -> std::io::Result<Vec<u8>> {
    let len = reader.read_u16().await?;
    let mut message = vec![0u8; usize::from(len)];
    reader.read_exact(&mut message).await?;
    Ok(message)
}

/// Writes queued answers to the client, each within `deadline`; returns (dropping the
/// queue, which stops the reader and every answer still to come) when one misses it or
/// the client is gone.
async fn write_answers(
    mut writer: OwnedWriteHalf,
    mut outbox: mpsc::Receiver<Vec<u8>>,
    ctx: Arc<Context>,
    src: SocketAddr,
) {
    let mut frame = Vec::with_capacity(512);
    while let Some(wire) = outbox.recv().await {
        framing::frame(wire, &mut frame);
        // Length and message in one write (RFC 7766 §8).
        match timeout(ctx.limits.tcp_write_timeout, writer.write_all(&frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                let n = ctx.slow_readers.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    warn!(
                        closed = n,
                        %src,
                        "tcp client did not read its answers within server.tcp_write_timeout_ms; closed"
                    );
                }
                return;
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    src: SocketAddr,
    ctx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
    _slots: (OwnedSemaphorePermit, SourceSlot),
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let (answers, outbox) = mpsc::channel::<Vec<u8>>(TCP_PIPELINE_DEPTH);
    let write = tokio::spawn(write_answers(writer, outbox, ctx.clone(), src));
    let depth = Arc::new(Semaphore::new(TCP_PIPELINE_DEPTH));
    loop {
        let message = tokio::select! {
            read = timeout(ctx.limits.tcp_idle_timeout, read_frame(&mut reader)) => match read {
                Ok(Ok(m)) => m,
                // EOF, an error, or idle: stop reading; answers in flight still go out.
                _ => break,
            },
            _ = stop.changed() => break,
            // The writer gave up: a write missed its deadline, or the client is gone.
            _ = answers.closed() => break,
        };
        // Each send below waits only while the queue is full, that is while the writer
        // is inside a write with a deadline; if it gives up, the send fails at once.
        match classify(&message, src.ip(), &ctx.acl()) {
            Verdict::Drop => {}
            // REFUSED here only after a reload narrowed `allow`: TCP sources are real.
            Verdict::Reply(wire) | Verdict::Refused(wire) => {
                ctx.replied(Tcp, src, &wire);
                if answers.send(wire).await.is_err() {
                    break;
                }
            }
            Verdict::Query(query) => {
                let started = ctx.query_clock();
                let miss = match ctx.pipeline.cached(&query) {
                    Err(miss) => miss,
                    Ok(wire) => {
                        ctx.answered(Tcp, src, &query.query, &wire, &Source::Cache, started);
                        if answers.send(wire).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                // Back-pressure: a client with too many queries in flight waits.
                let Ok(turn) = depth.clone().acquire_owned().await else {
                    break;
                };
                let (ctx, answers) = (ctx.clone(), answers.clone());
                tokio::spawn(async move {
                    let answer = match ctx.admit_within(ADMIT_WAIT).await {
                        Some(permit) => {
                            let answer = ctx.pipeline.answer_miss(&query, miss).await;
                            // The answer exists: the slot is free for others while it
                            // waits for this client's socket.
                            drop(permit);
                            answer
                        }
                        None => Answer {
                            wire: query.error_answer(ResponseCode::ServFail).to_vec().unwrap_or_default(),
                            source: Source::Failed,
                        },
                    };
                    ctx.answered(Tcp, src, &query.query, &answer.wire, &answer.source, started);
                    let _ = answers.send(answer.wire).await;
                    drop(turn);
                });
            }
        }
    }
    drop(answers);
    let _ = write.await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn accept_errors_pause_instead_of_spinning() {
        let calls = AtomicUsize::new(0);
        let (_keep, mut stop) = watch::channel(false);
        let mut backoff = AcceptBackoff::default();
        // EMFILE a thousand times, then nothing to accept.
        let accept = || {
            let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
            async move {
                if n <= 1000 {
                    Err::<(), _>(std::io::Error::from_raw_os_error(libc::EMFILE))
                } else {
                    std::future::pending().await
                }
            }
        };
        let waited = timeout(Duration::from_secs(3), accept_next(accept, &mut backoff, &mut stop)).await;
        assert!(waited.is_err(), "nothing was accepted");
        // 5, 10, 20 ... 640 ms, then 1 s each: about ten tries in 3 s, not a thousand.
        let n = calls.load(Ordering::Relaxed);
        assert!((3..=12).contains(&n), "{n} accept calls in 3 s");
    }

    #[tokio::test(start_paused = true)]
    async fn accept_stops_when_told_even_while_pausing() {
        let (tell, mut stop) = watch::channel(false);
        let mut backoff = AcceptBackoff::default();
        let accept = || async { Err::<(), _>(std::io::Error::from_raw_os_error(libc::ENFILE)) };
        let stopper = tokio::spawn(async move {
            sleep(Duration::from_millis(50)).await;
            let _ = tell.send(true);
            tell
        });
        let accepted = timeout(Duration::from_secs(5), accept_next(accept, &mut backoff, &mut stop)).await;
        assert_eq!(accepted.expect("returns once stopped"), None);
        drop(stopper.await);
    }
}
