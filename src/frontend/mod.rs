//! The client side: our own lean UDP and TCP front end over hickory-proto.
//!
//! We measured hickory-server's (it fully parses, re-encodes every answer from records,
//! spawns a task per packet and answers one TCP connection's queries in turn) at 0.66×
//! unbound's cache-hit rate on this machine (docs/benchmarks.md). Here a cache hit is
//! answered inline on the socket's task with the cached wire bytes (no re-encoding, no
//! spawn); only misses spawn, under a global in-flight cap. UDP uses one SO_REUSEPORT
//! socket per serving thread ([`threads`], `server.threads`), each thread with its own
//! runtime and upstream pool; TCP handles each connection's queries concurrently
//! (RFC 7766 §6.2.1.1) with a per-connection cap. Requests are parsed and checked in
//! [`request`].
//!
//! Owns the listening sockets, the in-flight bounds, draining on shutdown, and counting
//! (and, with `[log] queries`, logging: [`querylog`]) every answer it sends. It never
//! decides answers: the pipeline does.

mod admission;
mod batch;
mod bind;
pub mod fd_limit;
mod framing;
pub mod querylog;
pub mod request;
mod tcp;
mod threads;
mod udp;

use std::{
    fmt::Display,
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

pub use bind::{BindError, Listeners, bind};
use hickory_proto::op::{Message, Query};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    task::JoinSet,
    time::{Instant, sleep},
};
use tracing::{info, warn};

use self::{
    admission::{PerSource, TokenBucket},
    request::Acl,
};
use crate::{
    config::RefusedPolicy,
    metrics::{ClientTransport, Metrics, metrics},
    pipeline::Pipeline,
};

/// Bounds of the front end.
#[derive(Debug, Clone, Copy)]
pub struct FrontendLimits {
    /// Client queries being resolved upstream at once (cache hits do not count).
    pub max_in_flight: usize,
    /// Client TCP connections open at once.
    pub max_tcp_clients: usize,
    /// Idle client TCP connections are closed after this (RFC 7766 §6.2.3).
    pub tcp_idle_timeout: Duration,
    /// Client TCP connections open at once from one address.
    pub max_tcp_per_client: usize,
    /// A write to a TCP client that does not finish within this closes the connection.
    pub tcp_write_timeout: Duration,
    /// What UDP clients outside `allow` get.
    pub refused: RefusedPolicy,
}

/// Queries one TCP connection may have in flight at once.
const TCP_PIPELINE_DEPTH: usize = 64;

/// REFUSED answers to UDP clients outside `allow`, at most, per second and in a burst
/// (all clients together): a forged source address must not make us a reflector.
pub const REFUSED_PER_SECOND: u32 = 20;

/// What every serving task shares.
struct Context {
    /// TCP's view of the pipeline (UDP's are per serving thread).
    pipeline: Pipeline,
    /// Swapped by a config reload.
    acl: RwLock<Arc<Acl>>,
    limits: FrontendLimits,
    in_flight: Arc<Semaphore>,
    tcp_clients: Arc<Semaphore>,
    /// Open TCP connections per client address (`server.max_tcp_per_client`).
    per_source: Arc<PerSource>,
    /// REFUSED answers left to give UDP clients outside `allow`.
    refusals: Mutex<TokenBucket>,
    over_cap: AtomicU64,
    /// Counters for rate-limited warnings (logged at 1 and each power of two).
    refusals_dropped: AtomicU64,
    slow_readers: AtomicU64,
    metrics: &'static Metrics,
    /// `[log] queries`; a reload may flip it.
    log_queries: AtomicBool,
}

impl Context {
    /// When the query log is on, the time a query arrived; None (and no clock read) when
    /// it is off.
    #[inline]
    fn query_clock(&self) -> Option<Instant> {
        self.log_queries.load(Ordering::Relaxed).then(Instant::now)
    }

    /// Counts, and logs when `started` is set, an answer to a query.
    #[inline]
    fn answered(
        &self,
        transport: ClientTransport,
        client: SocketAddr,
        question: &Query,
        wire: &[u8],
        via: &dyn Display,
        started: Option<Instant>,
    ) {
        self.metrics.answered(transport, wire);
        if let Some(started) = started {
            querylog::log(transport, client, question, &querylog::rcode_name(wire), via, started);
        }
    }

    /// Counts, and logs when the query log is on, a reply the front end gives itself
    /// (errors, resolver.arpa): parsed, so an extended RCODE (BADVERS) is counted as such.
    fn replied(&self, transport: ClientTransport, client: SocketAddr, wire: &[u8]) {
        let started = self.query_clock();
        match Message::from_vec(wire) {
            Ok(reply) => {
                self.metrics.answered_rcode(transport, u16::from(reply.metadata.response_code));
                if let Some(started) = started {
                    querylog::log_local(transport, client, &reply, started);
                }
            }
            Err(_) => self.metrics.answered(transport, wire),
        }
    }

    fn acl(&self) -> Arc<Acl> {
        self.acl.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A slot for one upstream resolution, or None (logged, rate-limited) at the cap.
    fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.in_flight.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.over_cap("dropping UDP queries");
        }
        permit
    }

    /// Like [`Context::admit`], but waits up to `wait` for a slot; None (logged) if none
    /// came. For TCP, where a query must get an answer (RFC 7766 §6.2.1.1).
    async fn admit_within(&self, wait: Duration) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.in_flight.clone().try_acquire_owned() {
            return Some(permit);
        }
        let permit = tokio::time::timeout(wait, self.in_flight.clone().acquire_owned()).await;
        let permit = permit.ok().and_then(Result::ok);
        if permit.is_none() {
            self.over_cap("answering TCP queries SERVFAIL");
        }
        permit
    }

    fn over_cap(&self, action: &'static str) {
        let n = self.over_cap.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            warn!(over_cap = n, limit = self.limits.max_in_flight, "server.max_inflight reached; {action}");
        }
    }

    /// Whether a UDP client outside `allow` gets its REFUSED (`server.refused`): only for
    /// refused packets, never on an allowed client's path.
    fn may_refuse(&self) -> bool {
        let allowed = match self.limits.refused {
            RefusedPolicy::Drop => false,
            RefusedPolicy::RateLimited => {
                self.refusals.lock().unwrap_or_else(|e| e.into_inner()).take(std::time::Instant::now())
            }
        };
        if !allowed && self.limits.refused == RefusedPolicy::RateLimited {
            let n = self.refusals_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(
                    unanswered = n,
                    per_second = REFUSED_PER_SECOND,
                    "REFUSED answers to clients outside server.allow over their rate; not answering"
                );
            }
        }
        allowed
    }
}

/// The running front end.
pub struct Frontend {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// With `server.threads` > 1: the threads serving UDP.
    threads: Option<threads::ServingThreads>,
    ctx: Arc<Context>,
    /// Addresses served (UDP and TCP on each).
    pub local_addrs: Vec<SocketAddr>,
}

impl Frontend {
    /// Starts serving on `listeners`, with the query log on when `log_queries` (set here,
    /// before the first datagram is read, so no early query goes unlogged). Must be
    /// called inside the tokio runtime. With `threads` of 1, UDP is served on this
    /// runtime, on pool 0; with more, on that many serving threads ([`threads`]), socket
    /// `i` of each address on thread `i % threads` and pool `i % threads`. TCP is served
    /// on this runtime and goes out on pool `threads` (modulo the pipeline's pools).
    pub fn start(
        listeners: Listeners,
        pipeline: Pipeline,
        acl: Acl,
        limits: FrontendLimits,
        log_queries: bool,
        threads: usize,
    ) -> std::io::Result<Self> {
        let ctx = Arc::new(Context {
            pipeline: pipeline.for_shard(threads),
            acl: RwLock::new(Arc::new(acl)),
            limits,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            tcp_clients: Arc::new(Semaphore::new(limits.max_tcp_clients)),
            per_source: PerSource::new(limits.max_tcp_per_client),
            refusals: Mutex::new(TokenBucket::new(REFUSED_PER_SECOND, REFUSED_PER_SECOND)),
            over_cap: AtomicU64::new(0),
            refusals_dropped: AtomicU64::new(0),
            slow_readers: AtomicU64::new(0),
            metrics: metrics(),
            log_queries: AtomicBool::new(log_queries),
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let threads = if threads > 1 {
            let mut shares: Vec<Vec<std::net::UdpSocket>> = (0..threads).map(|_| Vec::new()).collect();
            for (i, socket) in listeners.udp.into_iter().enumerate() {
                shares[i % threads].push(socket);
            }
            shares.retain(|share| !share.is_empty());
            Some(threads::ServingThreads::start(shares, &ctx, &pipeline, &stopped)?)
        } else {
            for socket in listeners.udp {
                tasks.spawn(serve_udp(socket, ctx.clone(), pipeline.for_shard(0), stopped.clone()));
            }
            None
        };
        for listener in listeners.tcp {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tasks.spawn(tcp::serve(listener, ctx.clone(), stopped.clone()));
        }
        for addr in &listeners.addrs {
            info!(%addr, "listening on udp and tcp");
        }
        Ok(Self { stop, tasks, threads, ctx, local_addrs: listeners.addrs })
    }

    /// Replaces the access list (config reload).
    pub fn set_acl(&self, acl: Acl) {
        *self.ctx.acl.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(acl);
    }

    /// Turns the query log (`[log] queries`) on or off.
    pub fn set_log_queries(&self, on: bool) {
        self.ctx.log_queries.store(on, Ordering::Relaxed);
    }

    /// Client queries being resolved upstream right now.
    pub fn in_flight(&self) -> usize {
        self.ctx.limits.max_in_flight - self.ctx.in_flight.available_permits()
    }

    /// Client TCP connections open right now.
    pub fn tcp_connections(&self) -> usize {
        self.ctx.limits.max_tcp_clients - self.ctx.tcp_clients.available_permits()
    }

    /// Stops taking queries, lets the ones in flight finish for up to `drain`, then
    /// closes every socket.
    pub async fn shutdown(mut self, drain: Duration) {
        let _ = self.stop.send(true);
        let deadline = Instant::now() + drain;
        while self.in_flight() > 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        let unfinished = self.in_flight();
        if unfinished > 0 {
            warn!(unfinished, "shutting down with queries still in flight");
        }
        if let Some(threads) = self.threads {
            threads.join().await;
        }
        self.tasks.shutdown().await;
    }
}

/// Serves one UDP socket (see [`udp::serve`]) until `stopped`, logging why it failed if
/// it did.
async fn serve_udp(
    socket: std::net::UdpSocket,
    ctx: Arc<Context>,
    pipeline: Pipeline,
    stopped: watch::Receiver<bool>,
) {
    if let Err(err) = udp::serve(socket, ctx, pipeline, stopped).await {
        warn!(%err, "udp listener failed");
    }
}
