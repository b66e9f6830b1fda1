//! Serving one UDP socket as a task on the runtime: batches of datagrams in
//! (`recvmmsg`), cache hits answered right there from wire bytes and sent back as a batch
//! (`sendmmsg`); each miss becomes a task on the same runtime, under the in-flight cap,
//! and its answer leaves with the other misses' answers that are ready with it.
//!
//! A thread of its own per socket, blocking in `recvmmsg`, served cache hits as fast
//! (within the noise of the same benchmark) but cost a miss two thread hand-offs; with the
//! runtime waiting for UDP and upstream readiness in one place, a miss costs less CPU and
//! fewer context switches (docs/benchmarks.md). With several serving threads
//! ([`super::threads`]) each socket's task, its misses and its upstream connection share
//! one thread.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    sync::{Arc, Mutex},
};

use tokio::io::{Interest, unix::AsyncFd};
use tracing::debug;

use super::{
    Context,
    batch::{self, RecvBatch},
    querylog,
    request::{Verdict, classify, fit_udp},
};
use crate::{
    metrics::ClientTransport::Udp,
    pipeline::{Pipeline, Source},
};

/// Receive batches a socket's task handles before it lets the worker's other tasks run.
const BATCHES_PER_TURN: usize = 16;

/// Serves one UDP socket as a task on the runtime until `stopped` turns true, its
/// cache lookups and misses through `pipeline`: the runtime waits for UDP and upstream
/// readiness in the same place, and a miss becomes a task on the same runtime.
pub(super) async fn serve(
    socket: UdpSocket,
    ctx: Arc<Context>,
    pipeline: Pipeline,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    let sender = Arc::new(Replies { socket: socket.try_clone()?, queue: Mutex::new(Vec::new()) });
    // Readable interest only: registered for writability too (as tokio's UdpSocket is),
    // every answer the kernel hands on would queue an EPOLLOUT event and could wake a
    // parked worker for nothing. Answers are sent without waiting for room: a datagram
    // the kernel cannot take is dropped, as the network may drop it anyway.
    // SAFETY: a std UdpSocket owns its descriptor, open and the same until it is dropped
    // with the AsyncFd.
    let socket =
        unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }.map_err(io::Error::from)?;
    let mut received = RecvBatch::default();
    let mut out: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(batch::BATCH);
    loop {
        let mut ready = tokio::select! {
            ready = socket.readable() => ready?,
            _ = stopped.changed() => return Ok(()),
        };
        // Until the socket is drained, but after a few batches the worker's other tasks
        // (misses, upstream connections) get a turn.
        let mut drained = false;
        for _ in 0..BATCHES_PER_TURN {
            let n = match ready.try_io(|socket| received.recv(socket)) {
                Ok(Ok(n)) => n,
                Ok(Err(err)) => {
                    debug!(%err, "udp receive error");
                    break;
                }
                Err(_would_block) => {
                    drained = true;
                    break;
                }
            };
            answer_batch(&received, n, &ctx, &pipeline, &sender, &mut out);
            batch::send(&socket, &mut out);
            out.clear();
        }
        drop(ready);
        if !drained {
            tokio::task::yield_now().await;
        }
    }
}

/// Answers the `n` datagrams of one receive batch: refusals and cache hits go into `out`
/// (sent as one batch by the caller), each admitted miss becomes a task.
fn answer_batch(
    received: &RecvBatch,
    n: usize,
    ctx: &Arc<Context>,
    pipeline: &Pipeline,
    sender: &Arc<Replies>,
    out: &mut Vec<(Vec<u8>, SocketAddr)>,
) {
    let acl = ctx.acl();
    for i in 0..n {
        let Some((packet, src)) = received.get(i) else {
            continue;
        };
        match classify(packet, src.ip(), &acl) {
            Verdict::Drop => {}
            Verdict::Reply(wire) => {
                ctx.replied(Udp, src, &wire);
                out.push((wire, src));
            }
            // Outside `allow`: the source may be forged (a reflection victim), so at a
            // bounded rate, or not at all (`server.refused`).
            Verdict::Refused(wire) => {
                if ctx.may_refuse() {
                    ctx.replied(Udp, src, &wire);
                    out.push((wire, src));
                }
            }
            Verdict::Query(query) => {
                let limit = query.udp_limit();
                let started = ctx.query_clock();
                let miss = match pipeline.cached(&query) {
                    Err(miss) => miss,
                    Ok(wire) => {
                        ctx.answered(Udp, src, &query.query, &wire, &Source::Cache, started);
                        out.push((fit_udp(wire, limit), src));
                        continue;
                    }
                };
                let Some(permit) = ctx.admit() else { continue };
                let (sender, ctx, pipeline) = (sender.clone(), ctx.clone(), pipeline.clone());
                tokio::spawn(async move {
                    let answer = pipeline.answer_miss(&query, miss).await;
                    ctx.metrics.answered(Udp, &answer.wire);
                    let rcode = started.map(|_| querylog::rcode_name(&answer.wire));
                    sender.send(fit_udp(answer.wire, limit), src).await;
                    drop(permit);
                    if let (Some(started), Some(rcode)) = (started, rcode) {
                        querylog::log(Udp, src, &query.query, &rcode, &answer.source, started);
                    }
                });
            }
        }
    }
    out.retain(|(wire, _)| !wire.is_empty());
}

/// Answers to cache misses on their way out of one UDP socket. Answers tend to become
/// ready together (one read from an upstream connection delivers several), so they leave
/// together: one `sendmmsg` and one wake-up of the client for the lot, where one system
/// call each was a fifth of the miss path's CPU (docs/benchmarks.md).
struct Replies {
    socket: UdpSocket,
    queue: Mutex<Vec<(Vec<u8>, SocketAddr)>>,
}

impl Replies {
    /// Queues `wire` for `to`. The first answer into an empty queue sends the batch,
    /// after yielding once so that every task already runnable adds its answer first;
    /// the others return at once. Returns once the caller's answer was handed to the
    /// kernel, or queued behind a sender that will.
    async fn send(&self, wire: Vec<u8>, to: SocketAddr) {
        if wire.is_empty() {
            return;
        }
        let first = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push((wire, to));
            queue.len() == 1
        };
        if !first {
            return;
        }
        tokio::task::yield_now().await;
        let mut out = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        batch::send(&self.socket, &mut out);
    }
}
