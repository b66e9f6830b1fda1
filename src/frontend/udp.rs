//! Serving one UDP socket from a thread of its own: batches of datagrams in, cache hits
//! answered right there and sent back as a batch, with no reactor, wake-up or task switch
//! in between (the profile of an async version was mostly scheduler wake-ups). Misses
//! become tasks on the tokio runtime, under the in-flight cap, and send their answer on a
//! clone of the same socket.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::runtime::Handle;
use tracing::debug;

use super::{
    Context,
    batch::{self, RecvBatch},
    querylog,
    request::{Verdict, classify, fit_udp},
};
use crate::{metrics::ClientTransport::Udp, pipeline::Source};

/// How often a blocked receive wakes up to check for shutdown.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Runs until `stop` is set. `runtime` runs the upstream work of cache misses.
pub(super) fn serve(
    socket: UdpSocket,
    ctx: Arc<Context>,
    stop: Arc<AtomicBool>,
    runtime: Handle,
) -> io::Result<()> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(STOP_CHECK))?;
    let sender = Arc::new(Replies { socket: socket.try_clone()?, queue: Mutex::new(Vec::new()) });
    let mut received = RecvBatch::default();
    let mut out: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(batch::BATCH);
    // The pipeline may spawn a prefetch, which needs the runtime's context.
    let _enter = runtime.enter();
    while !stop.load(Ordering::Relaxed) {
        let n = match received.recv(&socket) {
            Ok(n) => n,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(err) => {
                debug!(%err, "udp receive error");
                continue;
            }
        };
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
                Verdict::Query(query) => {
                    let limit = query.udp_limit();
                    let started = ctx.query_clock();
                    if let Some(wire) = ctx.pipeline.cached(&query) {
                        ctx.answered(Udp, src, &query.query, &wire, &Source::Cache, started);
                        out.push((fit_udp(wire, limit), src));
                        continue;
                    }
                    let Some(permit) = ctx.admit() else { continue };
                    let (sender, ctx) = (sender.clone(), ctx.clone());
                    runtime.spawn(async move {
                        let answer = ctx.pipeline.answer(&query).await;
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
        batch::send(&socket, &out);
        out.clear();
    }
    Ok(())
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
        let out = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        batch::send(&self.socket, &out);
    }
}
