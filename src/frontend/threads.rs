//! Serving threads (`server.threads` > 1): each is a thread with a single-threaded
//! runtime of its own that serves its share of the UDP sockets (one per listen address,
//! in a SO_REUSEPORT group that spreads datagrams over the threads at random, see
//! `bind.rs`) and sends its misses on its own upstream pool. A miss then starts, goes
//! upstream and is answered on one thread, with no wake-up crossing to another core:
//! 12.5 against 14.1 µs of CPU per miss, and 11% more misses per second, than on one
//! runtime with a worker per core (docs/benchmarks.md, run M). The cache, the coalescing
//! of identical questions, the in-flight cap and the access list stay shared by every
//! thread.

use std::{io, net::UdpSocket, sync::Arc, thread::JoinHandle};

use tokio::sync::watch;
use tracing::warn;

use super::{Context, serve_udp};
use crate::pipeline::Pipeline;

/// The running serving threads.
pub(super) struct ServingThreads {
    /// Turned true (or dropped) when the threads are to stop their runtimes.
    exit: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl ServingThreads {
    /// Starts one thread per entry of `sockets`, thread `i` serving `sockets[i]` with
    /// `pipeline.for_shard(i)` until `stopped` turns true. Its runtime keeps running (its
    /// misses finishing) until [`ServingThreads::join`] or until this is dropped.
    pub(super) fn start(
        sockets: Vec<Vec<UdpSocket>>,
        ctx: &Arc<Context>,
        pipeline: &Pipeline,
        stopped: &watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let (exit, exiting) = watch::channel(false);
        let mut handles = Vec::with_capacity(sockets.len());
        for (shard, sockets) in sockets.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (ctx, pipeline, stopped) = (ctx.clone(), pipeline.for_shard(shard), stopped.clone());
            let mut exiting = exiting.clone();
            let handle =
                std::thread::Builder::new().name(format!("stubborn-serve-{shard}")).spawn(move || {
                    runtime.block_on(async move {
                        for socket in sockets {
                            tokio::spawn(serve_udp(socket, ctx.clone(), pipeline.clone(), stopped.clone()));
                        }
                        // Until told to exit, or until the front end is gone without a word.
                        let _ = exiting.wait_for(|&exit| exit).await;
                    });
                    // Dropping the runtime here cancels what is left on it: connection tasks.
                })?;
            handles.push(handle);
        }
        Ok(Self { exit, handles })
    }

    /// Stops every thread's runtime and waits for the threads to end.
    pub(super) async fn join(self) {
        let _ = self.exit.send(true);
        let handles = self.handles;
        let joined = tokio::task::spawn_blocking(move || {
            for handle in handles {
                if handle.join().is_err() {
                    warn!("a serving thread panicked");
                }
            }
        });
        let _ = joined.await;
    }
}
