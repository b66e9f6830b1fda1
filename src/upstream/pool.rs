//! The upstream pool: the live connection queries use, and the races that replace it.
//!
//! One happy-eyeballs race over every (upstream, address, port, transport) the policy allows
//! produces the connection queries go out on. When it dies, a new race starts at once;
//! queries waiting for a connection wait on that race (the pipeline bounds the wait). After
//! an idle close, the first query starts a race. A plain-text winner (opportunistic upstreams
//! only) is replaced as soon as a background TLS-only race wins.
//!
//! Owns which connection a query uses and when races run. It never parses answers and
//! never bounds the client's total wait (the pipeline's `query_timeout` does).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{
    sync::watch,
    time::{Instant, sleep},
};
use tracing::{info, warn};

use super::resolv_conf::ResolvConfWatch;
use super::{
    connector::{AttemptContext, RaceResult, drive_race},
    dot::{CloseReason, Connection, ConnectionLimits, QueryError},
    race::{Candidate, Race, RaceConfig, Transport, UpstreamAddrs, order_candidates},
};
use crate::{
    config::{AddressSource, Config, Mode, RacingConfig, UpstreamConfig},
    message::ClientQuery,
    tls::{TlsSetupError, UpstreamTls},
};

/// How long an endpoint that presented the wrong key sits out of races (RFC 7858 §3.1
/// suggests remembering failures; a pinned client may retry sooner).
const PIN_MISMATCH_BACKOFF: Duration = Duration::from_secs(60);
/// Background TLS re-races while on plain text: first after this, doubling up to the cap.
const TLS_RERACE_FIRST: Duration = Duration::from_secs(1);
const TLS_RERACE_MAX: Duration = Duration::from_secs(60);
/// How often resolv.conf is checked for changes.
const RESOLV_CONF_POLL: Duration = Duration::from_secs(2);

/// Why forwarding a query produced no answer; the pipeline turns it into SERVFAIL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream connection: {0}")]
    NoConnection(String),
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

/// All upstreams of a config, and the connection in use.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    upstreams: Vec<UpstreamConfig>,
    contexts: Arc<[AttemptContext]>,
    racing: RaceConfig,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    /// Each upstream's addresses now; resolv_conf upstreams change them at run time.
    addresses: Vec<Vec<IpAddr>>,
    primary: Option<Connection>,
    /// The race queries are waiting on, while one runs.
    race: Option<watch::Receiver<RaceStatus>>,
    last_winner: Option<Candidate>,
    next_id: u64,
    /// Endpoints out of races until the instant (pin mismatches).
    backoff: HashMap<(SocketAddr, Transport), Instant>,
    tls_rerace_running: bool,
}

#[derive(Clone)]
enum RaceStatus {
    Running,
    Done(Result<Connection, String>),
}

/// Which candidates a race may use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RaceScope {
    /// Everything the policy allows, plain text for opportunistic upstreams included.
    Full,
    /// TLS only: the background race that tries to leave plain text.
    TlsOnly,
}

impl Pool {
    pub fn new(config: &Config) -> Result<Self, TlsSetupError> {
        let limits = ConnectionLimits {
            idle_timeout: config.connection.idle_timeout,
            max_inflight: config.connection.max_inflight,
        };
        let contexts = config
            .upstreams
            .iter()
            .map(|u| {
                Ok(AttemptContext {
                    upstream_name: Arc::from(u.name.as_str()),
                    tls: UpstreamTls::new(u)?,
                    limits,
                })
            })
            .collect::<Result<Vec<_>, TlsSetupError>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                upstreams: config.upstreams.clone(),
                contexts: contexts.into(),
                racing: RaceConfig::from(&config.racing),
                state: Mutex::new(PoolState {
                    next_id: 1,
                    addresses: config
                        .upstreams
                        .iter()
                        .map(|u| u.addresses.clone())
                        .collect(),
                    ..Default::default()
                }),
            }),
        })
    }

    /// Starts the background tasks that keep resolv_conf upstreams' addresses current.
    /// Must be called inside the runtime; the tasks end when the pool is dropped.
    pub fn watch_resolv_conf(&self, own_listen: &[SocketAddr]) {
        for (index, upstream) in self.inner.upstreams.iter().enumerate() {
            let AddressSource::ResolvConf(path) = &upstream.source else {
                continue;
            };
            let mut watch = ResolvConfWatch::new(path.clone(), own_listen);
            let _ = watch.poll(); // the config load already read the current list
            let weak = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(RESOLV_CONF_POLL);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    match watch.poll() {
                        None => {}
                        Some(Ok(addresses)) => inner.set_addresses(index, addresses),
                        Some(Err(err)) => {
                            warn!(path = %watch.path().display(), %err, "cannot re-read resolv.conf; keeping the previous nameservers")
                        }
                    }
                }
            });
        }
    }

    /// Forwards `query` on the live connection (racing for one if needed). A query lost
    /// to a closing connection is retried once on a fresh one (RFC 7766 §6.2.4, RFC 7858
    /// §3.4). The caller bounds the total time.
    pub async fn forward(&self, query: &ClientQuery) -> Result<Vec<u8>, ForwardError> {
        for _ in 0..2 {
            let conn = self
                .connection()
                .await
                .map_err(ForwardError::NoConnection)?;
            let tls = conn.info().transport == Transport::Tls;
            match conn.query(query.upstream_wire(tls)).await {
                Ok(answer) => return Ok(answer),
                Err(QueryError::Closed) => continue,
                Err(e) => return Err(ForwardError::Query(e)),
            }
        }
        Err(ForwardError::Closed)
    }

    /// The connection in use, or the result of the race that is (or now starts) running.
    pub async fn connection(&self) -> Result<Connection, String> {
        let mut status = {
            let mut st = self.inner.lock();
            if let Some(conn) = st.primary.as_ref().filter(|c| !c.is_closed()) {
                return Ok(conn.clone());
            }
            match &st.race {
                Some(rx) => rx.clone(),
                None => Inner::start_race(&self.inner, &mut st, RaceScope::Full),
            }
        };
        loop {
            if let RaceStatus::Done(result) = &*status.borrow_and_update() {
                return result.clone();
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
}

impl Inner {
    /// Swaps a resolv_conf upstream's addresses; a connection to a server no longer listed
    /// is dropped from use, so the next query races the new list.
    fn set_addresses(&self, index: usize, addresses: Vec<IpAddr>) {
        let name = &self.upstreams[index].name;
        info!(upstream = %name, nameservers = ?addresses, "resolv.conf changed");
        let mut st = self.lock();
        let stale = st.primary.as_ref().is_some_and(|p| {
            p.info().upstream == index && !addresses.contains(&p.info().peer.ip())
        });
        if stale {
            st.primary = None;
        }
        st.addresses[index] = addresses;
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding this lock is a bug; the state is still consistent
        // enough to keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn candidates(
        &self,
        st: &PoolState,
        scope: RaceScope,
        now: Instant,
    ) -> (Vec<Candidate>, Vec<Candidate>) {
        let addrs: Vec<UpstreamAddrs<'_>> = self
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| UpstreamAddrs {
                upstream: i,
                addresses: &st.addresses[i],
                tls_port: u.tls_port,
                plain_port: u.plain_port,
                // Strict upstreams never yield a plain candidate (RFC 8310 §5).
                allow_plain: u.mode == Mode::Opportunistic && scope == RaceScope::Full,
            })
            .collect();
        let (mut tls, mut plain) = order_candidates(&addrs, st.last_winner);
        let usable = |c: &Candidate| {
            st.backoff
                .get(&(c.addr, c.transport))
                .is_none_or(|until| *until <= now)
        };
        tls.retain(usable);
        plain.retain(usable);
        (tls, plain)
    }

    /// Starts a race and returns the channel its result will be published on.
    fn start_race(
        self: &Arc<Self>,
        st: &mut PoolState,
        scope: RaceScope,
    ) -> watch::Receiver<RaceStatus> {
        let now = Instant::now();
        let (tls, plain) = self.candidates(st, scope, now);
        let reserved = (tls.len() + plain.len()) as u64;
        let race = Race::new(tls, plain, self.racing, st.next_id, now);
        // Reserve the ids this race may use, so ids keep growing across concurrent races.
        st.next_id += reserved;
        let (tx, rx) = watch::channel(RaceStatus::Running);
        if scope == RaceScope::Full {
            st.race = Some(rx.clone());
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let result = drive_race(race, inner.contexts.clone()).await;
            let published = inner.finish_race(result, scope);
            let _ = tx.send(RaceStatus::Done(published));
        });
        rx
    }

    /// Records a race's result in the pool state and returns what waiting queries get.
    fn finish_race(
        self: &Arc<Self>,
        result: RaceResult,
        scope: RaceScope,
    ) -> Result<Connection, String> {
        let now = Instant::now();
        let mut st = self.lock();
        if scope == RaceScope::Full {
            st.race = None;
        }
        for c in result.pin_mismatches {
            st.backoff
                .insert((c.addr, c.transport), now + PIN_MISMATCH_BACKOFF);
        }
        st.backoff.retain(|_, until| *until > now);
        match result.outcome {
            Ok(conn) => {
                let info = conn.info();
                let winner = Candidate {
                    upstream: info.upstream,
                    addr: info.peer,
                    transport: info.transport,
                };
                if scope == RaceScope::TlsOnly
                    && st
                        .primary
                        .as_ref()
                        .is_some_and(|p| !p.is_closed() && p.info().transport == Transport::Tls)
                {
                    // Someone else already got back to TLS; this one is surplus.
                    return Ok(conn);
                }
                if let Some(old) = st.primary.replace(conn.clone()) {
                    if old.info().transport == Transport::Plain
                        && winner.transport == Transport::Tls
                    {
                        info!(upstream = %info.upstream_name, ip = %info.peer.ip(), port = info.peer.port(), "TLS is back; replacing the plain-text connection");
                    }
                }
                st.last_winner = Some(winner);
                self.watch_connection(conn.clone());
                if winner.transport == Transport::Plain {
                    warn!(
                        upstream = %info.upstream_name,
                        ip = %info.peer.ip(),
                        port = info.peer.port(),
                        "no TLS connection could be made: queries now go in CLEAR TEXT (opportunistic mode); retrying TLS in the background"
                    );
                    if !st.tls_rerace_running {
                        st.tls_rerace_running = true;
                        tokio::spawn(self.clone().rerace_tls());
                    }
                }
                Ok(conn)
            }
            Err(reasons) => {
                let summary = if reasons.is_empty() {
                    "no candidates (every endpoint is backed off or none is configured)".to_string()
                } else {
                    reasons
                        .iter()
                        .map(|(_, c, r)| format!("{}:{} {r}", c.addr.ip(), c.addr.port()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Err(summary)
            }
        }
    }

    /// Replaces a connection that died (not one that idled out) with a fresh race at once,
    /// so the next query does not pay for noticing.
    fn watch_connection(self: &Arc<Self>, conn: Connection) {
        let inner = self.clone();
        tokio::spawn(async move {
            let reason = conn.closed().await;
            let mut st = inner.lock();
            let is_primary = st
                .primary
                .as_ref()
                .is_some_and(|p| p.info().attempt == conn.info().attempt);
            if !is_primary {
                return;
            }
            st.primary = None;
            if matches!(reason, CloseReason::Failed(_)) && st.race.is_none() {
                info!(reason = reason.as_str(), upstream = %conn.info().upstream_name, "connection lost; racing for a replacement");
                Inner::start_race(&inner, &mut st, RaceScope::Full);
            }
        });
    }

    /// While the connection in use is plain text, keep racing TLS-only with backoff.
    async fn rerace_tls(self: Arc<Self>) {
        let mut wait = TLS_RERACE_FIRST;
        loop {
            sleep(wait).await;
            let on_plain = {
                let st = self.lock();
                st.primary
                    .as_ref()
                    .is_some_and(|p| !p.is_closed() && p.info().transport == Transport::Plain)
            };
            if !on_plain {
                break;
            }
            let mut rx = {
                let mut st = self.lock();
                Inner::start_race(&self, &mut st, RaceScope::TlsOnly)
            };
            let won = loop {
                if let RaceStatus::Done(r) = &*rx.borrow_and_update() {
                    break r.is_ok();
                }
                if rx.changed().await.is_err() {
                    break false;
                }
            };
            if won {
                break;
            }
            wait = (wait * 2).min(TLS_RERACE_MAX);
        }
        self.lock().tls_rerace_running = false;
    }
}
