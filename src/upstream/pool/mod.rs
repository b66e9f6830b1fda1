//! The upstream pool: the connections queries use, hedging between them, and the races
//! that replace them.
//!
//! A happy-eyeballs race over every (upstream, address, port, transport) the policy allows
//! produces the *primary* connection. A second, TLS-only race produces a warm *spare* to a
//! different upstream or address. A query goes to the better of the two; when it has no
//! answer within the hedge delay (SRTT + 4·RTTVAR, clamped) it also goes to the other, and
//! the first answer wins. When the primary dies the spare takes over at once and new races
//! run in the background. After a suspend, every connection is suspect and is replaced.
//!
//! Owns which connection a query uses and when races run. It never parses answers and
//! never bounds the client's total wait (the pipeline's `query_timeout` does).

mod group;
mod races;
mod warm;

pub use group::{group_connections, group_health};
pub use warm::{WarmReason, keep_warm, network_changed, suspect_connections};

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, time::sleep};
use tracing::{debug, warn};

use super::{
    connection::{Connection, ConnectionLimits, QueryError},
    connector::AttemptContext,
    health::{Backoff, DeadPolicy, SuspendDetector},
    race::{Candidate, RaceConfig, Transport},
    resolv_conf::ResolvConfWatch,
};
use crate::{
    config::{AddressSource, Config, HedgingConfig, Mode, RacingConfig, UpstreamConfig},
    message::ClientQuery,
    metrics::{UpstreamConnections, metrics},
    tls::TlsSetupError,
};

/// How often resolv.conf is checked for changes.
const RESOLV_CONF_POLL: Duration = Duration::from_secs(2);
/// Queries in flight on a sibling's connection from which a pool with none of its own
/// races for one: a busy thread's misses then stay on its own thread (about 2 µs less
/// CPU each, docs/benchmarks.md), a quiet daemon keeps one connection.
pub const BUSY_IN_FLIGHT: usize = 8;
/// A boot-time clock this far ahead of the monotonic one means we were suspended.
const SUSPEND_THRESHOLD: Duration = Duration::from_secs(2);

/// Why forwarding a query produced no answer; the pipeline turns it into SERVFAIL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// No connection could be made: connect, TLS or pin failures (EDE 23).
    #[error("no upstream connection: {0}")]
    NoConnection(String),
    /// Connections kept closing under the query (EDE 23).
    #[error("connection closed twice before answering")]
    Closed,
    #[error(transparent)]
    Query(QueryError),
}

impl From<&RacingConfig> for RaceConfig {
    fn from(c: &RacingConfig) -> Self {
        RaceConfig {
            attempt_delay: c.attempt_delay,
            attempt_timeout: c.attempt_timeout,
            plain_fallback_delay: c.plain_fallback_delay,
            max_concurrent_attempts: c.max_concurrent_attempts,
            race_timeout: c.race_timeout,
        }
        .clamped()
    }
}

/// Counters the pool keeps (for logs, status and metrics).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Queries sent upstream (hedges not counted twice).
    pub queries: AtomicU64,
    /// Queries that also went out on a second connection.
    pub hedges_sent: AtomicU64,
    /// Hedged queries the second connection answered first.
    pub hedges_won: AtomicU64,
    /// Queries sent in clear text (opportunistic upstreams only).
    pub plain_queries: AtomicU64,
    /// Suspends noticed.
    pub suspends: AtomicU64,
}

/// A summary of upstream health for status lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealth {
    pub up: usize,
    pub total: usize,
    /// The connection queries use now.
    pub via: Option<(SocketAddr, Transport)>,
}

/// What one pool knows of one upstream, for health.
#[derive(Debug, Clone, Copy)]
struct UpstreamState {
    /// A live connection (primary or spare) to it.
    connected: bool,
    /// Every one of its endpoints failed since its last success.
    failing: bool,
    has_addresses: bool,
}

/// Reads (monotonic, boot-time) clocks; swappable so tests can fake a suspend.
pub type SleepClock = Arc<dyn Fn() -> (Duration, Duration) + Send + Sync>;

/// All upstreams of a config, and the connections in use.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    upstreams: Vec<UpstreamConfig>,
    contexts: Arc<[AttemptContext]>,
    racing: RaceConfig,
    hedging: HedgingConfig,
    /// More than one address in the config: a spare has somewhere else to go.
    spare_possible: bool,
    state: Mutex<PoolState>,
    stats: PoolStats,
    clock: Mutex<SleepClock>,
    /// The id of the next connection attempt.
    next_id: Arc<AtomicU64>,
    /// The other pools of a [`Pool::group`] (one per serving thread): while this pool
    /// has no connection up, its queries use one of theirs (see [`Pool::connections`]).
    siblings: OnceLock<Box<[Weak<Inner>]>>,
}

#[derive(Default)]
struct PoolState {
    /// Each upstream's addresses now; resolv_conf upstreams change them at run time.
    addresses: Vec<Vec<IpAddr>>,
    primary: Option<Connection>,
    spare: Option<Connection>,
    /// The primary race queries are waiting on, while one runs.
    race: Option<watch::Receiver<RaceStatus>>,
    spare_racing: bool,
    /// After a failed spare race, or a spare the upstream closed idle soon after it opened,
    /// the next one waits.
    spare_backoff: Backoff,
    /// The last spare was closed idle by the upstream soon after it opened: a won spare
    /// race does not reset the back-off until a spare lasts.
    spare_churning: bool,
    /// After a failed primary race, queries fail at once (with its reason) until this
    /// back-off ends, instead of each waiting out `query_timeout` on the same dead
    /// network; the first query after it races again.
    race_backoff: Backoff,
    race_failure: Option<String>,
    last_winner: Option<Candidate>,
    /// Endpoints that failed: a pin mismatch keeps them out of races; other failures put
    /// them last in the candidate order.
    endpoints: HashMap<(SocketAddr, Transport), EndpointHealth>,
    upgrade_running: bool,
    suspend: Option<SuspendDetector>,
}

#[derive(Default)]
struct EndpointHealth {
    backoff: Backoff,
    pin_mismatch: bool,
}

#[derive(Clone)]
enum RaceStatus {
    Running,
    Done(Result<Connection, String>),
}

/// Each upstream's TLS settings and connection limits, as every attempt gets them.
fn attempt_contexts(config: &Config) -> Result<Arc<[AttemptContext]>, TlsSetupError> {
    let limits = ConnectionLimits {
        idle_timeout: config.connection.idle_timeout,
        max_inflight: config.connection.max_inflight,
        dead: DeadPolicy {
            unanswered: config.health.dead_after_unanswered,
            silence: config.health.dead_after_silence,
        },
    };
    config.upstreams.iter().map(|u| AttemptContext::new(u, limits)).collect()
}

fn read_clocks() -> (Duration, Duration) {
    fn read(clock: libc::clockid_t) -> Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime only writes the timespec we own; both clocks exist on Linux.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
    (read(libc::CLOCK_MONOTONIC), read(libc::CLOCK_BOOTTIME))
}

impl Pool {
    pub fn new(config: &Config) -> Result<Self, TlsSetupError> {
        Ok(Self::with_contexts(config, attempt_contexts(config)?, Arc::new(AtomicU64::new(1))))
    }

    /// A pool using `contexts` (TLS settings, shared by a group so that a session one
    /// pool's handshake got can resume in another) and numbering its connections from
    /// `ids` (shared by a group, so every id in the log is one connection).
    fn with_contexts(config: &Config, contexts: Arc<[AttemptContext]>, ids: Arc<AtomicU64>) -> Self {
        let addresses: Vec<Vec<IpAddr>> = config.upstreams.iter().map(|u| u.addresses.clone()).collect();
        let spare_possible = config.upstreams.len() > 1
            || addresses.iter().map(Vec::len).sum::<usize>() > 1
            || config.upstreams.iter().any(|u| matches!(u.source, AddressSource::ResolvConf(_)));
        Self {
            inner: Arc::new(Inner {
                upstreams: config.upstreams.clone(),
                contexts,
                racing: RaceConfig::from(&config.racing),
                hedging: config.hedging.clone(),
                spare_possible,
                state: Mutex::new(PoolState { addresses, ..Default::default() }),
                stats: PoolStats::default(),
                clock: Mutex::new(Arc::new(read_clocks)),
                next_id: ids,
                siblings: OnceLock::new(),
            }),
        }
    }

    pub fn stats(&self) -> &PoolStats {
        &self.inner.stats
    }

    /// Replaces the clock pair used to notice suspends (tests fake a suspend with it).
    pub fn set_sleep_clock(&self, clock: SleepClock) {
        *self.inner.clock.lock().unwrap_or_else(|e| e.into_inner()) = clock;
        self.inner.lock().suspend = None;
    }

    /// Forwards `query`; returns the answer and the connection that gave it. A query lost
    /// to a closing connection is retried once (RFC 7766 §6.2.4, RFC 7858 §3.4). The
    /// caller bounds the total time.
    pub async fn forward(&self, query: &ClientQuery) -> Result<(Vec<u8>, Connection), ForwardError> {
        self.inner.stats.queries.fetch_add(1, Ordering::Relaxed);
        let mut lost_on: Option<SocketAddr> = None;
        for _ in 0..2 {
            let (mut first, mut second) = self.connections().await.map_err(ForwardError::NoConnection)?;
            // The retry goes elsewhere when it can: another connection to the endpoint
            // that just closed under us (a sibling's, say) is likely dying the same way.
            if lost_on == Some(first.info().peer) {
                if let Some(other) = second.take_if(|s| s.info().peer != first.info().peer) {
                    second = Some(std::mem::replace(&mut first, other));
                }
            }
            match self.hedged(query, &first, second.as_ref()).await {
                Ok(answer) => return Ok(answer),
                Err(QueryError::Closed) => lost_on = Some(first.info().peer),
                Err(e) => return Err(ForwardError::Query(e)),
            }
        }
        Err(ForwardError::Closed)
    }

    /// Sends on `first`; with no answer within its hedge delay, also on `second`. The first
    /// answer wins; the other query is abandoned (and counts against its connection).
    async fn hedged(
        &self,
        query: &ClientQuery,
        first: &Connection,
        second: Option<&Connection>,
    ) -> Result<(Vec<u8>, Connection), QueryError> {
        let primary = self.ask(query, first);
        tokio::pin!(primary);
        let second = second.filter(|_| self.inner.hedging.enabled);
        let Some(second) = second else {
            return primary.await.map(|w| (w, first.clone()));
        };
        let delay = first.rtt().hedge_delay(self.inner.hedging.floor, self.inner.hedging.cap);
        tokio::select! {
            answer = &mut primary => match answer {
                // The connection died under the query, or a DoH stream failed: the other
                // one now, not after a retry that may find another dying connection to the
                // same endpoint.
                Err(e @ (QueryError::Closed | QueryError::Http(_))) => {
                    debug!(name = %query.query.name(), from = %first.info(), to = %second.info(), error = %e, "no answer on this connection; asking the other");
                    return self.ask(query, second).await.map(|w| (w, second.clone()));
                }
                answer => return answer.map(|w| (w, first.clone())),
            },
            _ = sleep(delay) => {}
        }
        self.inner.stats.hedges_sent.fetch_add(1, Ordering::Relaxed);
        metrics().hedge_sent();
        debug!(name = %query.query.name(), delay_ms = delay.as_millis() as u64, from = %first.info(), to = %second.info(), "hedging");
        let hedge = self.ask(query, second);
        tokio::pin!(hedge);
        let won = |w: Vec<u8>| {
            self.inner.stats.hedges_won.fetch_add(1, Ordering::Relaxed);
            metrics().hedge_won();
            (w, second.clone())
        };
        tokio::select! {
            answer = &mut primary => match answer {
                Ok(w) => Ok((w, first.clone())),
                Err(_) => hedge.await.map(won),
            },
            answer = &mut hedge => match answer {
                Ok(w) => Ok(won(w)),
                Err(_) => primary.await.map(|w| (w, first.clone())),
            },
        }
    }

    async fn ask(&self, query: &ClientQuery, conn: &Connection) -> Result<Vec<u8>, QueryError> {
        let wire = match conn.info().transport {
            Transport::Tls => query.upstream_wire(true),
            // RFC 7828's keepalive is for DNS's own TCP connections; HTTP/2 has its own.
            Transport::Https => query.upstream_wire_with(true, false),
            Transport::Plain => {
                self.inner.stats.plain_queries.fetch_add(1, Ordering::Relaxed);
                metrics().plain_query();
                query.upstream_wire(false)
            }
        };
        conn.query(wire).await
    }

    /// The connection to use and, when one is up, the one to hedge to. Waits for a race
    /// only when no connection is up at all, here or in a sibling pool (joining a
    /// sibling's race when one runs). A pool with no
    /// connection of its own uses a sibling's pair; it races for its own only once that
    /// connection is busy ([`BUSY_IN_FLIGHT`]), so a lightly loaded daemon keeps one
    /// connection (and its spare) whatever the number of serving threads.
    pub async fn connections(&self) -> Result<(Connection, Option<Connection>), String> {
        let running = {
            let mut st = self.inner.lock();
            self.inner.notice_suspend(&mut st);
            if let Some(pair) = self.inner.usable_pair(&mut st) {
                return Ok(pair);
            }
            st.race.clone()
        };
        // Taken after our own lock is released: no task holds two pools' locks at once.
        if let Some((primary, spare)) = self.inner.sibling_pair() {
            if running.is_none() && primary.in_flight() >= BUSY_IN_FLIGHT {
                let mut st = self.inner.lock();
                if st.primary.is_none() {
                    let _ = self.inner.race_unless_backing_off(&mut st);
                }
            }
            return Ok((primary, spare));
        }
        let mut status = match running {
            Some(rx) => rx,
            None => {
                if let Some(why) = self.inner.sibling_backing_off() {
                    return Err(why);
                }
                if let Some(theirs) = self.inner.sibling_race() {
                    theirs
                } else {
                    // Our lock was let go for a moment: a race may have ended meanwhile.
                    let mut st = self.inner.lock();
                    if let Some(pair) = self.inner.usable_pair(&mut st) {
                        return Ok(pair);
                    }
                    self.inner.race_unless_backing_off(&mut st)?
                }
            }
        };
        loop {
            if let RaceStatus::Done(result) = &*status.borrow_and_update() {
                let conn = result.clone()?;
                return Ok((conn, None));
            }
            if status.changed().await.is_err() {
                return Err("race ended without a result".into());
            }
        }
    }

    /// The connection queries use now, if one is up (for status lines and tests).
    pub fn current(&self) -> Option<Connection> {
        self.inner.lock().primary.clone().filter(|c| !c.is_closed())
    }

    /// How many upstreams are up (a live connection, or no failed attempt since their
    /// last success), of how many, and the connection queries use now.
    pub fn health(&self) -> PoolHealth {
        group_health(std::slice::from_ref(self))
    }

    /// The address and transport of the connection queries use now, if one is up.
    fn via(&self) -> Option<(SocketAddr, Transport)> {
        self.current().map(|c| (c.info().peer, c.info().transport))
    }

    /// What this pool knows of each upstream, in config order.
    fn upstream_states(&self) -> Vec<UpstreamState> {
        let st = self.inner.lock();
        let live = |c: &Option<Connection>| c.as_ref().filter(|c| !c.is_closed()).map(|c| c.info().upstream);
        let connected = [live(&st.primary), live(&st.spare)];
        (0..self.inner.upstreams.len())
            .map(|i| UpstreamState {
                connected: connected.contains(&Some(i)),
                failing: st.addresses[i].iter().all(|ip| {
                    self.inner.upstreams[i].endpoints(*ip).any(|(addr, t)| {
                        st.endpoints.get(&(addr, t)).is_some_and(|h| h.backoff.failures() > 0)
                    })
                }),
                has_addresses: !st.addresses[i].is_empty(),
            })
            .collect()
    }

    /// Live connections (primary and spare) per upstream, in config order, for metrics.
    pub fn connections_up(&self) -> Vec<UpstreamConnections> {
        let st = self.inner.lock();
        let live: Vec<&Connection> =
            [&st.primary, &st.spare].into_iter().flatten().filter(|c| !c.is_closed()).collect();
        self.inner
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let count = |t: Transport| {
                    live.iter().filter(|c| c.info().upstream == i && c.info().transport == t).count()
                };
                UpstreamConnections {
                    upstream: u.name.clone(),
                    tls: count(Transport::Tls),
                    plain: count(Transport::Plain),
                    https: count(Transport::Https),
                    plain_possible: u.mode == Mode::Opportunistic,
                    https_possible: u.https.is_some(),
                }
            })
            .collect()
    }

    /// Whether a connection is up, here or in a sibling pool (starts nothing).
    pub fn connected(&self) -> bool {
        let live = |inner: &Inner| {
            let st = inner.lock();
            [&st.primary, &st.spare].into_iter().flatten().any(|c| !c.is_closed())
        };
        live(&self.inner)
            || self
                .inner
                .siblings
                .get()
                .is_some_and(|s| s.iter().filter_map(Weak::upgrade).any(|sib| live(&sib)))
    }

    /// The warm spare, if one is up.
    pub fn spare(&self) -> Option<Connection> {
        self.inner.lock().spare.clone().filter(|c| !c.is_closed())
    }
}

/// Starts the background tasks that keep the resolv_conf upstreams' addresses current in
/// every pool of a group: one watch per upstream, whatever the number of pools. Must be
/// called inside the runtime; the tasks end when the pools are dropped.
pub fn watch_resolv_conf(pools: &[Pool], own_listen: &[SocketAddr]) {
    let Some(first) = pools.first() else { return };
    for (index, upstream) in first.inner.upstreams.iter().enumerate() {
        let AddressSource::ResolvConf(path) = &upstream.source else {
            continue;
        };
        let mut watch = ResolvConfWatch::new(path.clone(), own_listen);
        let _ = watch.poll(); // the config load already read the current list
        let weak: Vec<Weak<Inner>> = pools.iter().map(|p| Arc::downgrade(&p.inner)).collect();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RESOLV_CONF_POLL);
            loop {
                tick.tick().await;
                let pools: Vec<Arc<Inner>> = weak.iter().filter_map(Weak::upgrade).collect();
                if pools.is_empty() {
                    return;
                }
                match watch.poll() {
                    None => {}
                    Some(Ok(addresses)) => {
                        for inner in &pools {
                            inner.set_addresses(index, addresses.clone());
                        }
                        // A new network: race now rather than at the next query.
                        if let Some(warm) = pools.last() {
                            warm.prewarm(WarmReason::ResolvConf);
                        }
                    }
                    Some(Err(err)) => warn!(
                        path = %watch.path().display(),
                        %err,
                        "cannot re-read resolv.conf; keeping the previous nameservers"
                    ),
                }
            }
        });
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding this lock is a bug; the state is still consistent
        // enough to keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a suspend every connection is suspect: peers and middleboxes may have dropped
    /// their state while we slept, and a dead socket would only show itself by timing out.
    /// Drop them all, so the next query races fresh ones instead of waiting on a corpse.
    /// True when this reading found a resume.
    fn notice_suspend(&self, st: &mut PoolState) -> bool {
        let (monotonic, boottime) = (self.clock.lock().unwrap_or_else(|e| e.into_inner()))();
        let detector = st.suspend.get_or_insert_with(|| SuspendDetector::new(SUSPEND_THRESHOLD));
        if detector.observe(monotonic, boottime) {
            self.stats.suspends.fetch_add(1, Ordering::Relaxed);
            warn!("resumed from suspend: replacing every upstream connection");
            self.forget_network(st);
            return true;
        }
        false
    }

    /// A new network may be up (a resume, an address or route change): every connection
    /// is closed, and failures from before say nothing now, so every back-off ends.
    fn forget_network(&self, st: &mut PoolState) {
        // What won on the old network (DoH where 853 was blocked, say) says nothing about
        // this one: DoT leads again.
        st.last_winner = None;
        st.race_backoff.on_success();
        st.race_failure = None;
        st.spare_backoff.on_success();
        st.spare_churning = false;
        for health in st.endpoints.values_mut() {
            health.backoff.on_success();
        }
        for conn in [st.primary.take(), st.spare.take()].into_iter().flatten() {
            conn.close();
        }
    }

    /// The usable (first, hedge) pair, promoting the spare when the primary is gone and
    /// preferring the faster of the two. Starts background races to refill what is missing.
    fn usable_pair(self: &Arc<Self>, st: &mut PoolState) -> Option<(Connection, Option<Connection>)> {
        let alive = |c: &Option<Connection>| c.as_ref().is_some_and(|c| !c.is_closed());
        if !alive(&st.primary) {
            st.primary = None;
        }
        if !alive(&st.spare) {
            st.spare = None;
        }
        if st.primary.is_none() {
            // The spare takes over at once: no query waits for a race.
            let spare = st.spare.take()?;
            debug!(to = %spare.info(), "promoting the warm spare");
            st.primary = Some(spare);
        }
        let primary = st.primary.clone()?;
        self.refill_spare(st);
        let spare = st.spare.clone();
        if let Some(spare) = &spare {
            spare.touch();
            // Prefer the healthier, faster connection (both need samples to compare).
            if let (Some(p), Some(s)) = (primary.rtt().srtt(), spare.rtt().srtt()) {
                if s * 4 < p * 3 {
                    return Some((spare.clone(), Some(primary)));
                }
            }
        }
        Some((primary, spare))
    }
}
