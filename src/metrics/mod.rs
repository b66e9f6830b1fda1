//! Metrics: the process's counters and histograms, and the Prometheus text endpoint that
//! serves them (`[metrics] listen`).
//!
//! Owns every metric name, label and help text, and the rule that counting stays cheap:
//! a cache hit costs two relaxed atomic increments (the hit, and the answer by transport
//! and rcode), with no lock and no label lookup, because the label handles for every
//! (transport, rcode) pair are resolved once, here, and indexed by the header's RCODE
//! bits. Label lookups (attempt outcomes, per-upstream series) happen only off the
//! cache-hit path, and per-connection handles are taken once per connection.
//!
//! Why one process-wide registry behind a `OnceLock` rather than a handle threaded through
//! every constructor: the counters live as long as the process, as Prometheus counters
//! should (a SIGHUP reload replaces the pool and its `PoolStats`, and a counter that
//! restarted at every reload would read as a process restart), and they are bumped from
//! places that share nothing else (the UDP threads, the racer's driver, each connection
//! task). Counting is always on, endpoint or not: an increment is cheaper than a branch
//! on a flag. Values read from the daemon's state at scrape time (cache entries,
//! connections up) are not stored here: [`Snapshot`] carries them to the encoder.
//!
//! It never decides anything about a query: it only counts what others decided.
//! Layout: `render.rs` encodes a scrape (OpenMetrics, or Prometheus text 0.0.4);
//! `http.rs` is the HTTP/1.0 responder.

mod http;
mod render;

use std::sync::OnceLock;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

pub use http::{MetricsServer, ServeError, SnapshotFn};
pub use render::{Format, Snapshot, UpstreamConnections, render};

/// The transport a client's query came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTransport {
    Udp,
    Tcp,
}

impl ClientTransport {
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientTransport::Udp => "udp",
            ClientTransport::Tcp => "tcp",
        }
    }
}

/// The rcode label values, in bucket order. RCODEs 0..=5 and BADVERS (16) get their own
/// series; every other one is counted as "other".
pub const RCODE_LABELS: [&str; 8] =
    ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other"];
const OTHER: usize = RCODE_LABELS.len() - 1;
const BADVERS: usize = 6;

/// The bucket of a (possibly extended, RFC 6891 §6.1.3) RCODE.
pub fn rcode_bucket(rcode: u16) -> usize {
    match rcode {
        0..=5 => usize::from(rcode),
        16 => BADVERS,
        _ => OTHER,
    }
}

/// Upstream RTT buckets, in seconds: 1 ms to 5 s, roughly ×2.5 apart.
const RTT_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    transport: &'static str,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    outcome: String,
    transport: &'static str,
}

type HistogramFamily = Family<UpstreamLabel, Histogram, fn() -> Histogram>;

/// Every metric the daemon keeps; see [`metrics`].
pub struct Metrics {
    registry: Registry,
    /// By [`ClientTransport`] (udp, tcp), then by [`rcode_bucket`].
    answers: [[Counter; RCODE_LABELS.len()]; 2],
    cache_hits: Counter,
    cache_misses: Counter,
    cache_stale: Counter,
    upstream_rtt: HistogramFamily,
    attempts: Family<AttemptLabels, Counter>,
    hedges_sent: Counter,
    hedges_won: Counter,
    plain_queries: Counter,
    pin_mismatches: Family<UpstreamLabel, Counter>,
    routes: Family<RouteLabel, Counter>,
    /// The default set's entry of `routes`, taken once: every miss counts on it.
    default_route: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// The process's metrics, created on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn rtt_histogram() -> Histogram {
    Histogram::new(RTT_BUCKETS)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("stubborn");
        let queries = Family::<QueryLabels, Counter>::default();
        let answers = [ClientTransport::Udp, ClientTransport::Tcp].map(|transport| {
            RCODE_LABELS.map(|rcode| {
                queries.get_or_create_owned(&QueryLabels { transport: transport.as_str(), rcode })
            })
        });
        registry.register(
            "queries",
            "Client queries answered, by client transport and response code",
            queries,
        );
        let cache_hits = Counter::default();
        registry.register("cache_hits", "Queries answered from a fresh cache entry", cache_hits.clone());
        let cache_misses = Counter::default();
        registry.register(
            "cache_misses",
            "Queries that had to wait for an upstream answer (or a stale one)",
            cache_misses.clone(),
        );
        let cache_stale = Counter::default();
        registry.register(
            "cache_stale_answers",
            "Queries answered with expired data (RFC 8767 serve-stale)",
            cache_stale.clone(),
        );
        let upstream_rtt: HistogramFamily = Family::new_with_constructor(rtt_histogram);
        registry.register_with_unit(
            "upstream_rtt",
            "Time from sending a query on an upstream connection to its answer",
            Unit::Seconds,
            upstream_rtt.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "race_attempts",
            "Upstream connection attempts by outcome (ready, rst, timeout, pin-mismatch, ...)",
            attempts.clone(),
        );
        let hedges_sent = Counter::default();
        registry.register(
            "hedges_sent",
            "Queries also sent on a second connection because the first was slow",
            hedges_sent.clone(),
        );
        let hedges_won = Counter::default();
        registry.register(
            "hedges_won",
            "Hedged queries the second connection answered first",
            hedges_won.clone(),
        );
        let plain_queries = Counter::default();
        registry.register(
            "upstream_plain_queries",
            "Queries sent upstream in clear text (opportunistic fallback, or a plain route)",
            plain_queries.clone(),
        );
        let pin_mismatches = Family::<UpstreamLabel, Counter>::default();
        registry.register(
            "pin_mismatches",
            "TLS handshakes refused by the pins (no certificate matched, or a pinned CA did not vouch for the leaf)",
            pin_mismatches.clone(),
        );
        let routes = Family::<RouteLabel, Counter>::default();
        registry.register(
            "route_queries",
            "Queries sent upstream, by route: its domains (split DNS), or default",
            routes.clone(),
        );
        let default_route = routes.get_or_create_owned(&RouteLabel { route: "default".to_owned() });
        Metrics {
            registry,
            routes,
            default_route,
            answers,
            cache_hits,
            cache_misses,
            cache_stale,
            upstream_rtt,
            attempts,
            hedges_sent,
            hedges_won,
            plain_queries,
            pin_mismatches,
        }
    }

    /// Counts an answer sent to a client, by the RCODE in its header (the low four bits
    /// only: extended RCODEs live in the OPT record and never come from the cache).
    #[inline]
    pub fn answered(&self, transport: ClientTransport, wire: &[u8]) {
        let bucket = wire.get(3).map_or(OTHER, |b| rcode_bucket(u16::from(b & 0x0f)));
        self.answers[transport as usize][bucket].inc();
    }

    /// Counts an answer whose full RCODE is known (the front end's own error replies).
    pub fn answered_rcode(&self, transport: ClientTransport, rcode: u16) {
        self.answers[transport as usize][rcode_bucket(rcode)].inc();
    }

    #[inline]
    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub fn stale_answer(&self) {
        self.cache_stale.inc();
    }

    /// The RTT histogram of one upstream: take it once per connection, observe per answer.
    pub fn upstream_rtt(&self, upstream: &str) -> Histogram {
        self.upstream_rtt.get_or_create_owned(&UpstreamLabel { upstream: upstream.to_owned() })
    }

    /// Counts one finished connection attempt (`outcome` as in the attempt's log line).
    pub fn attempt(&self, outcome: &str, transport: &'static str) {
        self.attempts.get_or_create(&AttemptLabels { outcome: outcome.to_owned(), transport }).inc();
    }

    pub fn hedge_sent(&self) {
        self.hedges_sent.inc();
    }

    pub fn hedge_won(&self) {
        self.hedges_won.inc();
    }

    pub fn plain_query(&self) {
        self.plain_queries.inc();
    }

    /// The counter of queries sent upstream on `route` (its name), for the route to keep.
    pub fn route_queries(&self, route: &str) -> Counter {
        self.routes.get_or_create_owned(&RouteLabel { route: route.to_owned() })
    }

    /// Counts one query sent upstream to the default set.
    pub fn default_route_query(&self) {
        self.default_route.inc();
    }

    pub fn pin_mismatch(&self, upstream: &str) {
        self.pin_mismatches.get_or_create(&UpstreamLabel { upstream: upstream.to_owned() }).inc();
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcodes_fall_in_their_buckets() {
        assert_eq!(RCODE_LABELS[rcode_bucket(0)], "NOERROR");
        assert_eq!(RCODE_LABELS[rcode_bucket(3)], "NXDOMAIN");
        assert_eq!(RCODE_LABELS[rcode_bucket(5)], "REFUSED");
        assert_eq!(RCODE_LABELS[rcode_bucket(16)], "BADVERS");
        assert_eq!(RCODE_LABELS[rcode_bucket(9)], "other");
        assert_eq!(RCODE_LABELS[rcode_bucket(23)], "other");
    }

    /// What counting adds to a cache hit: `cache_hit` and `answered`, as the UDP thread
    /// calls them. Run: `cargo test --release --lib metrics::tests::bench -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "benchmark: run in release mode with --ignored --nocapture"]
    fn bench_counting_a_cache_hit() {
        let m = metrics();
        let mut wire = [0u8; 64];
        wire[3] = 0x80;
        let n = 50_000_000u32;
        let start = std::time::Instant::now();
        for i in 0..n {
            wire[3] = 0x80 | (i & 3) as u8;
            std::hint::black_box(&wire);
            metrics().cache_hit();
            m.answered(ClientTransport::Udp, std::hint::black_box(&wire));
        }
        let per = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!("counting a cache hit: {per:.2} ns (one thread, uncontended)");
    }

    #[test]
    fn an_answer_is_counted_by_its_header_rcode() {
        let m = Metrics::new();
        let mut wire = [0u8; 12];
        wire[3] = 0x83; // RA + NXDOMAIN
        m.answered(ClientTransport::Tcp, &wire);
        m.answered(ClientTransport::Tcp, &[]);
        wire[3] = 0x06; // YXDOMAIN: not BADVERS, whose bits live in the OPT record
        m.answered(ClientTransport::Tcp, &wire);
        assert_eq!(m.answers[1][3].get(), 1);
        assert_eq!(m.answers[1][OTHER].get(), 2);
        assert_eq!(m.answers[1][BADVERS].get(), 0);
        assert_eq!(m.answers[0].iter().map(Counter::get).sum::<u64>(), 0);
    }
}
