//! The query pipeline: one client query in, one answer (wire form, for this client) out,
//! always within `query_timeout`: from the cache, from upstream, stale (RFC 8767), or
//! SERVFAIL with an Extended DNS Error saying why (RFC 8914).
//!
//! Owns the client-facing bound on time, the cache's use (lookups, stores, prefetch and
//! stale refreshes) and coalescing: identical questions in flight together (name
//! case-insensitive, type, class, DO, CD) share one upstream query. Upstream fetches run
//! as their own tasks, so a client that got a stale answer (or gave up) does not cancel
//! the refresh everyone else is waiting for. It counts cache hits, misses and stale
//! answers ([`crate::metrics`]) and says where each answer came from ([`Source`]).

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use hickory_proto::op::{Message, ResponseCode};
use tokio::{
    sync::watch,
    time::{Instant, sleep, timeout},
};
use tracing::debug;

use crate::{
    cache::{Cache, CacheKey, ClientView, Lookup, StoredAnswer, UNAUTHENTICATED_MAX_TTL},
    config::CacheConfig,
    local::LocalZones,
    message::{ClientQuery, Ede, add_ede, parse_upstream},
    metrics::metrics,
    route::{Routes, Upstream, captive::CAPTIVE_TTL},
    upstream::{
        connection::ConnectionInfo,
        pool::{ForwardError, Pool},
    },
};

/// Why there is no upstream answer, as the client will be told (RFC 8914).
#[derive(Debug, Clone)]
enum Failure {
    /// Nothing answered in time: EDE 22.
    Timeout(Duration),
    /// Connections or TLS failed: EDE 23.
    Network(String),
    /// An answer came but was unusable.
    BadAnswer(String),
}

/// An upstream answer and the connection that gave it.
#[derive(Clone)]
struct Fetched {
    message: Arc<Message>,
    /// The answer as the cache stored it, when it did: rendered for each waiting client
    /// like a hit, with no re-encoding.
    stored: Option<StoredAnswer>,
    via: Arc<ConnectionInfo>,
    /// The route that answered ([`crate::route`]); None for the default set.
    route: Option<Arc<str>>,
}
type Outcome = Result<Fetched, Failure>;

/// Where an answer came from (for the query log).
#[derive(Debug, Clone)]
pub enum Source {
    /// A fresh cache entry.
    Cache,
    /// Expired data (RFC 8767): upstreams failed or were late.
    Stale,
    /// This upstream connection's answer (shared by coalesced queries).
    Upstream(Arc<ConnectionInfo>),
    /// A route's upstream's answer ([`crate::route`]): the route's name, and what answered.
    Routed(Arc<str>, Arc<ConnectionInfo>),
    /// No usable upstream answer: SERVFAIL with an Extended DNS Error.
    Failed,
    /// A locally-served name ([`crate::local`]), answered here.
    Local,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Cache => f.write_str("cache"),
            Source::Stale => f.write_str("stale"),
            // One token, for the query log: name@ip:port/transport.
            Source::Upstream(info) => write!(f, "{}@{}/{}", info.upstream_name, info.peer, info.transport),
            // The route's domains first: corp.example:vpn@10.8.0.1:53/plain.
            Source::Routed(route, info) => {
                write!(f, "{route}:{}@{}/{}", info.upstream_name, info.peer, info.transport)
            }
            Source::Failed => f.write_str("none"),
            Source::Local => f.write_str("local"),
        }
    }
}

/// One answer for one client, ready to send (before any UDP truncation).
#[derive(Debug, Clone)]
pub struct Answer {
    pub wire: Vec<u8>,
    pub source: Source,
}
type Waiters = Mutex<HashMap<CacheKey, watch::Receiver<Option<Outcome>>>>;
/// One upstream fetch: asks, stores the answer and tells every waiter.
type Fetch = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A question the cache had no fresh answer for: the key it was looked up by, and the
/// configuration generation it was looked up in (the rest of the query runs in it too).
pub struct Miss {
    key: CacheKey,
    inner: Arc<Inner>,
    /// A stale answer to give at once: a refresh failed a moment ago (RFC 8767 §5).
    stale: Option<Vec<u8>>,
}

/// What [`Inner::join_or_start`] found.
enum Started {
    /// A fresh answer, stored since the caller's lookup missed.
    Cached(Vec<u8>),
    /// A stale answer: a refresh failed since the caller's lookup missed.
    Stale(Vec<u8>),
    /// The channel the upstream answer will arrive on, and the fetch to run when this
    /// caller started it.
    Waiting(watch::Receiver<Option<Outcome>>, Option<Fetch>),
}

/// A fetch run inline by the client that started it, handed to a task of its own if that
/// client stops waiting before it is done.
struct DetachOnDrop(Option<Fetch>);

impl DetachOnDrop {
    fn new(fetch: Fetch) -> Self {
        Self(Some(fetch))
    }

    async fn run(&mut self) {
        if let Some(fetch) = self.0.as_mut() {
            fetch.await;
            self.0 = None;
        }
    }
}

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if let (Some(fetch), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(fetch);
        }
    }
}

/// The query pipeline; cheap to clone (shared state). Each serving thread has its own
/// view of it ([`Pipeline::for_shard`]): the same cache and coalescing, its own upstream
/// pool.
#[derive(Clone)]
pub struct Pipeline {
    shared: Arc<Shared>,
    /// Which of the generation's pools this view's queries go out on.
    shard: usize,
}

struct Shared {
    /// What a config reload replaces; queries already running keep the one they started
    /// with, so a reload never cuts one short.
    generation: RwLock<Arc<Inner>>,
    /// Upstream fetches in flight, by question; survives reloads.
    in_flight: Arc<Waiters>,
}

#[derive(Clone)]
struct Inner {
    /// One per serving thread (a [`Pool::group`]).
    pools: Vec<Pool>,
    cache: Arc<Cache>,
    /// Names answered here; consulted on the miss path only (never cached, so a local
    /// name never hits).
    local: Arc<LocalZones>,
    /// Per-domain routes, consulted on the miss path before the local names.
    routes: Arc<Routes>,
    query_timeout: Duration,
    serve_stale: bool,
    stale_answer_after: Duration,
    in_flight: Arc<Waiters>,
}

impl Pipeline {
    /// A pipeline over `pools` (at least one): view `i` ([`Pipeline::for_shard`]) sends
    /// on pool `i`, modulo their number. It answers the locally-served names
    /// ([`LocalZones::standard`]) unless [`Pipeline::with_local_zones`] says otherwise.
    pub fn new(pools: Vec<Pool>, query_timeout: Duration, cache: &CacheConfig) -> Self {
        assert!(!pools.is_empty(), "a pipeline needs an upstream pool");
        let in_flight = Arc::new(Mutex::new(HashMap::new()));
        let inner = Inner {
            pools,
            cache: Arc::new(Cache::new(cache.settings())),
            local: Arc::new(LocalZones::standard()),
            routes: Arc::new(Routes::default()),
            query_timeout,
            serve_stale: cache.serve_stale,
            stale_answer_after: cache.stale_answer_after,
            in_flight: in_flight.clone(),
        };
        Self { shared: Arc::new(Shared { generation: RwLock::new(Arc::new(inner)), in_flight }), shard: 0 }
    }

    /// This pipeline with the locally-served names answered here (`server.local_zones`)
    /// or forwarded like any other.
    pub fn with_local_zones(self, enabled: bool) -> Self {
        {
            let mut generation = self.shared.generation.write().unwrap_or_else(|e| e.into_inner());
            let mut inner = Inner::clone(&generation);
            inner.local = Arc::new(LocalZones::new(enabled));
            *generation = Arc::new(inner);
        }
        self
    }

    /// This pipeline with per-domain routes ([`crate::route`]): the names they claim go to
    /// their upstreams instead of the default pools or the local names.
    pub fn with_routes(self, routes: Routes) -> Self {
        {
            let mut generation = self.shared.generation.write().unwrap_or_else(|e| e.into_inner());
            let mut inner = Inner::clone(&generation);
            inner.routes = Arc::new(routes);
            *generation = Arc::new(inner);
        }
        self
    }

    /// The view of this pipeline whose queries go out on pool `shard` (modulo the number
    /// of pools).
    pub fn for_shard(&self, shard: usize) -> Pipeline {
        Pipeline { shared: self.shared.clone(), shard }
    }

    /// Applies a reloaded config: new upstreams, timeouts and local zones at once, the
    /// cache kept (its answers moved into new bounds when those changed). Turning the
    /// local zones on drops the upstream answers cached for their names, which would
    /// otherwise be served as hits until they expire.
    pub fn reconfigure(
        &self,
        pools: Vec<Pool>,
        routes: Routes,
        query_timeout: Duration,
        cache: &CacheConfig,
        local_zones: bool,
    ) {
        assert!(!pools.is_empty(), "a pipeline needs an upstream pool");
        let old = self.current();
        let settings = cache.settings();
        let cache_now = if *old.cache.config() == settings.clone().normalized() {
            old.cache.clone()
        } else {
            Arc::new(old.cache.resized(settings))
        };
        let local = Arc::new(LocalZones::new(local_zones));
        if old.local.is_empty() && !local.is_empty() {
            cache_now.forget_names(|name| local.covers_wire(name));
        }
        let inner = Inner {
            pools,
            cache: cache_now,
            local,
            routes: Arc::new(routes),
            query_timeout,
            serve_stale: cache.serve_stale,
            stale_answer_after: cache.stale_answer_after,
            in_flight: self.shared.in_flight.clone(),
        };
        *self.shared.generation.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(inner);
    }

    fn current(&self) -> Arc<Inner> {
        self.shared.generation.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The upstream pool this view's queries use.
    pub fn pool(&self) -> Pool {
        self.current().pool(self.shard).clone()
    }

    /// Every upstream pool of the default set in use, one per serving thread.
    pub fn pools(&self) -> Vec<Pool> {
        self.current().pools.clone()
    }

    /// The pools of each TLS route in use (a group each: one pool per serving thread).
    pub fn route_pool_groups(&self) -> Vec<Vec<Pool>> {
        self.current().routes.pool_groups()
    }

    /// The answer cache in use.
    pub fn cache(&self) -> Arc<Cache> {
        self.current().cache.clone()
    }

    /// Upstream fetches under way (one per coalesced question); 0 when the daemon is idle.
    pub fn fetches_in_flight(&self) -> usize {
        self.shared.in_flight.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The cache's fresh answer for `query`, if it has one: the hot path, no await. A hit
    /// near expiry starts one background refresh (prefetch); no client waits for it.
    /// Always a miss for a query with `bypass_cache`. The miss carries the key it was
    /// looked up by, for [`Pipeline::answer_miss`].
    pub fn cached(&self, query: &ClientQuery) -> Result<Vec<u8>, Miss> {
        let key = CacheKey::from(query);
        let inner = self.current();
        if query.bypass_cache {
            return Err(Miss { key, inner, stale: None });
        }
        match inner.cache.lookup(&key, &ClientView::from(query), Instant::now()) {
            Lookup::Hit(wire) => {
                metrics().cache_hit();
                Ok(wire)
            }
            Lookup::HitPrefetch(wire) => {
                metrics().cache_hit();
                Inner::prefetch(&inner, query, key, self.shard);
                Ok(wire)
            }
            // A refresh failed within the failure-recheck interval: answered stale by
            // the miss path, which says so (Source::Stale), without asking upstream.
            Lookup::Stale(wire) => Err(Miss { key, inner, stale: Some(wire) }),
            Lookup::Miss => Err(Miss { key, inner, stale: None }),
        }
    }

    /// Answers `query` in wire form, ready to send (before any UDP truncation). Never
    /// fails: an upstream failure becomes a stale answer or SERVFAIL, in bounded time.
    pub async fn resolve(&self, query: &ClientQuery) -> Vec<u8> {
        self.answer(query).await.wire
    }

    /// [`Pipeline::resolve`], also saying where the answer came from. A query with
    /// `bypass_cache` is answered from upstream or fails: no fresh or stale cache entry
    /// can stand in for an upstream that does not answer.
    pub async fn answer(&self, query: &ClientQuery) -> Answer {
        match self.cached(query) {
            Ok(wire) => Answer { wire, source: Source::Cache },
            Err(miss) => self.answer_miss(query, miss).await,
        }
    }

    /// [`Pipeline::answer`] for a query [`Pipeline::cached`] just missed: the front end
    /// answers hits where it read them and hands only misses on, with the key and the
    /// configuration the lookup already took.
    ///
    /// A locally-served name is answered here first ([`crate::local`]), before any
    /// coalescing or upstream: only misses pay for that lookup, and a local name always
    /// misses since its answers are never cached.
    pub async fn answer_miss(&self, query: &ClientQuery, miss: Miss) -> Answer {
        let use_cache = !query.bypass_cache;
        let Miss { key, inner, stale: stale_now } = miss;
        let inner = &inner;
        // A route beats a locally-served name: it may claim 10.in-addr.arpa or home.arpa.
        let routed = inner.routes.route(query.query.name()).is_some();
        if !routed && let Some(local) = inner.local.answer(query) {
            return Answer { wire: local.wire(query), source: Source::Local };
        }
        let started = match stale_now {
            Some(wire) => Started::Stale(wire),
            None => Inner::join_or_start(inner, query, key.clone(), use_cache, self.shard),
        };
        let (rx, fetch) = match started {
            Started::Cached(wire) => {
                metrics().cache_hit();
                return Answer { wire, source: Source::Cache };
            }
            Started::Stale(wire) => {
                metrics().cache_miss();
                metrics().stale_answer();
                return Answer { wire, source: Source::Stale };
            }
            Started::Waiting(rx, fetch) => (rx, fetch),
        };
        metrics().cache_miss();
        // The first client to ask runs the fetch itself (no task to spawn and wake); should
        // it stop waiting (it was answered from stale data), the fetch carries on
        // as a task of its own for everyone else.
        let mut fetch = fetch.map(DetachOnDrop::new);
        let rx = async move {
            if let Some(fetch) = fetch.as_mut() {
                fetch.run().await;
            }
            rx
        };
        let stale = |inner: &Inner| {
            let wire = inner.stale(&key, query)?;
            metrics().stale_answer();
            Some(Answer { wire, source: Source::Stale })
        };
        let serve_stale = inner.serve_stale && use_cache;
        let outcome = if serve_stale {
            let wait = async { inner.wait(rx.await).await };
            tokio::pin!(wait);
            tokio::select! {
                outcome = &mut wait => outcome,
                _ = sleep(inner.stale_answer_after) => {
                    // RFC 8767 §5: the client-response timer ran out; answer from stale
                    // data if there is any, and let the refresh finish in the background.
                    if let Some(answer) = stale(inner) {
                        return answer;
                    }
                    wait.await
                }
            }
        } else {
            inner.wait(rx.await).await
        };
        match outcome {
            Ok(Fetched { message, stored, via, route }) => {
                // RFC 8767 §4, §6: an upstream failure (SERVFAIL, REFUSED, …) is no better
                // than no answer; stale data, if there is some, goes out instead.
                if serve_stale
                    && !refreshed(message.metadata.response_code)
                    && let Some(answer) = stale(inner)
                {
                    return answer;
                }
                let wire = match stored {
                    Some(stored) => stored.render(&ClientView::from(query), Instant::now()),
                    None => encode(query.answer_from_upstream(&message)),
                };
                let source = match route {
                    None => Source::Upstream(via),
                    Some(route) => Source::Routed(route, via),
                };
                Answer { wire, source }
            }
            Err(failure) => {
                if let Some(answer) = serve_stale.then(|| stale(inner)).flatten() {
                    return answer;
                }
                debug!(name = %query.query.name(), ?failure, "answering SERVFAIL");
                let mut msg = query.error_answer(ResponseCode::ServFail);
                let (code, text) = match &failure {
                    Failure::Timeout(t) => (
                        Ede::NoReachableAuthority,
                        format!("no upstream answered within {} ms", t.as_millis()),
                    ),
                    Failure::Network(why) => (Ede::NetworkError, why.clone()),
                    Failure::BadAnswer(why) => (Ede::Other, why.clone()),
                };
                add_ede(&mut msg, code, &text);
                Answer { wire: encode(msg), source: Source::Failed }
            }
        }
    }
}

/// Whether an upstream answer with this RCODE refreshes the question's data: NOERROR and
/// NXDOMAIN do; anything else is a failure that keeps the old state (RFC 8767 §4).
fn refreshed(rcode: ResponseCode) -> bool {
    matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain)
}

fn encode(msg: Message) -> Vec<u8> {
    // Messages we build from parsed upstream answers always encode; an error here would
    // be a bug in hickory-proto, and the client then gets a bare SERVFAIL.
    msg.to_vec().unwrap_or_else(|_| {
        let mut fail = Message::error_msg(msg.metadata.id, msg.metadata.op_code, ResponseCode::ServFail);
        fail.queries = msg.queries;
        fail.to_vec().unwrap_or_default()
    })
}

impl Inner {
    /// Refreshes `key` in the background (prefetch): a fetch of its own task, unless one
    /// for `key` is already under way.
    fn prefetch(self: &Arc<Self>, query: &ClientQuery, key: CacheKey, shard: usize) {
        if let Started::Waiting(_, Some(fetch)) = Self::join_or_start(self, query, key, false, shard) {
            tokio::spawn(fetch);
        }
    }

    /// Joins the upstream fetch under way for `key` or, when there is none, starts one:
    /// the caller must run it to completion (or spawn it), or every waiter is left
    /// without an answer until its timeout. With `recheck`, the cache is looked at again
    /// before a fetch starts: a fetch for `key` may have stored its answer and finished
    /// since the caller's lookup missed, and a fetch stores before it leaves `in_flight`,
    /// so a look under the same lock misses nothing.
    fn join_or_start(
        self: &Arc<Self>,
        query: &ClientQuery,
        key: CacheKey,
        recheck: bool,
        shard: usize,
    ) -> Started {
        let mut waiters = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = waiters.get(&key) {
            return Started::Waiting(rx.clone(), None);
        }
        if recheck {
            // Served as a hit, but no prefetch from here: the entry is either new or was
            // refreshed a moment ago, and a prefetch would need this lock.
            match self.cache.lookup(&key, &ClientView::from(query), Instant::now()) {
                Lookup::Hit(wire) | Lookup::HitPrefetch(wire) => return Started::Cached(wire),
                Lookup::Stale(wire) => return Started::Stale(wire),
                Lookup::Miss => {}
            }
        }
        let (tx, rx) = watch::channel(None);
        waiters.insert(key.clone(), rx.clone());
        drop(waiters);
        let inner = self.clone();
        let query = query.clone();
        let fetch = Box::pin(async move {
            let upstream = inner.routes.upstream(query.query.name(), shard, inner.pool(shard));
            let route = upstream.route_name();
            let cacheable = upstream.cacheable();
            let outcome = match inner.fetch(upstream, &query).await {
                Ok((wire, mut message, via)) => {
                    let now = Instant::now();
                    let stored = if !cacheable {
                        None
                    } else if via.authenticated {
                        inner.cache.store_parsed(key.clone(), &wire, now).1
                    } else {
                        inner.cache.store_parsed_unauthenticated(key.clone(), &wire, now).1
                    };
                    if !refreshed(message.metadata.response_code) {
                        inner.cache.refresh_failed(&key, now);
                    }
                    if stored.is_none() {
                        if !inner.cache.normalize_uncached(&wire, &mut message) {
                            debug!(name = %query.query.name(), "an uncached answer our walker cannot read keeps its TTLs");
                        }
                        // After normalising (which reads the TTLs from the wire again).
                        if !cacheable {
                            cap_ttls(&mut message, CAPTIVE_TTL);
                        } else if !via.authenticated {
                            cap_ttls(&mut message, UNAUTHENTICATED_MAX_TTL);
                        }
                    }
                    Ok(Fetched { message: Arc::new(message), stored, via, route })
                }
                Err(failure) => {
                    // RFC 8767 §5: the failure recheck timer starts.
                    inner.cache.refresh_failed(&key, Instant::now());
                    Err(failure)
                }
            };
            inner.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            let _ = tx.send(Some(outcome));
        });
        Started::Waiting(rx, Some(fetch))
    }

    async fn wait(&self, mut rx: watch::Receiver<Option<Outcome>>) -> Outcome {
        let wait = async {
            loop {
                if let Some(outcome) = rx.borrow_and_update().clone() {
                    return outcome;
                }
                if rx.changed().await.is_err() {
                    return Err(Failure::Network("the upstream query was abandoned".into()));
                }
            }
        };
        timeout(self.query_timeout, wait).await.unwrap_or(Err(Failure::Timeout(self.query_timeout)))
    }

    fn stale(&self, key: &CacheKey, query: &ClientQuery) -> Option<Vec<u8>> {
        match self.cache.lookup_stale(key, &ClientView::from(query), Instant::now()) {
            Lookup::Stale(wire) | Lookup::Hit(wire) | Lookup::HitPrefetch(wire) => Some(wire),
            Lookup::Miss => None,
        }
    }

    fn pool(&self, shard: usize) -> &Pool {
        &self.pools[shard % self.pools.len()]
    }

    async fn fetch(
        &self,
        upstream: Upstream<'_>,
        query: &ClientQuery,
    ) -> Result<(Vec<u8>, Message, Arc<ConnectionInfo>), Failure> {
        match timeout(self.query_timeout, upstream.forward(query)).await {
            Err(_) => Err(Failure::Timeout(self.query_timeout)),
            Ok(Err(err @ (ForwardError::NoConnection(_) | ForwardError::Closed))) => {
                Err(Failure::Network(err.to_string()))
            }
            Ok(Err(err)) => Err(Failure::BadAnswer(err.to_string())),
            Ok(Ok((mut wire, via))) => {
                let info = via.info();
                if !info.authenticated {
                    distrust(&mut wire);
                }
                match parse_upstream(&wire) {
                    Ok((mut msg, keepalive)) => {
                        if let Some(k) = keepalive {
                            via.honour_keepalive(k);
                        }
                        // Records that do not answer the question reach neither a client
                        // nor the cache; an answer that needed scrubbing is stored as
                        // re-encoded.
                        let wire = match crate::scrub::scrub(&mut msg) {
                            0 => wire,
                            dropped => {
                                debug!(name = %query.query.name(), dropped, via = %info, "scrubbed an upstream answer");
                                msg.to_vec().map_err(|e| Failure::BadAnswer(e.to_string()))?
                            }
                        };
                        Ok((wire, msg, info))
                    }
                    Err(err) => Err(Failure::BadAnswer(err.to_string())),
                }
            }
        }
    }
}

/// Clears AD in an answer from a connection that authenticated nothing (plain text, or
/// encrypt-only TLS). AD says the upstream validated the data (RFC 4035 §3.2.3), and
/// local software trusts it from a loopback resolver (glibc `trust-ad`, OpenSSH
/// `VerifyHostKeyDNS`, DANE): over such a connection an on-path attacker could have set
/// it. RFC 4035 §4.9.3: AD may be relied on only when it came from a trusted validator
/// over a secure channel; this hop was not one, so we do not pass the claim on.
fn distrust(wire: &mut [u8]) {
    if let Some(flags) = wire.get_mut(3) {
        *flags &= !0x20;
    }
}

/// Lowers every TTL of `msg` to `cap`: an unauthenticated answer the cache did not store
/// still reaches the client with no TTL above what the cache would have kept it.
fn cap_ttls(msg: &mut Message, cap: u32) {
    for record in msg.answers.iter_mut().chain(msg.authorities.iter_mut()).chain(msg.additionals.iter_mut()) {
        record.ttl = record.ttl.min(cap);
    }
}
