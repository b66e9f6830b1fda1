//! The answer cache: positive, negative (RFC 2308) and SERVFAIL answers in wire form,
//! served with TTLs counted down, stale answers (RFC 8767) and one-shot prefetch hints.
//!
//! Owns: what is cached and for how long (`policy`), the stored form and the hit path
//! (`entry`, over offsets found by `wire`), lookups fresh and stale (`lookup`), and the bounds (entries and bytes, through quick_cache's S3-FIFO-like
//! eviction). It is pure: time comes in as a `tokio::time::Instant` argument. It must
//! never read the clock, sleep, spawn, do I/O or talk to upstreams; refreshing (stale or
//! prefetch) is the caller's job, told by [`Lookup::HitPrefetch`] and [`Lookup::Stale`].
//!
//! How the pipeline uses it:
//! ```text
//! key = CacheKey::from(&client_query);  view = ClientView::from(&client_query)
//! match cache.lookup(&key, &view, now) {
//!     Hit(wire) => answer(wire),
//!     HitPrefetch(wire) => { answer(wire); refresh in the background (coalesced) }
//!     Stale(wire) => answer(wire)   // a refresh failed within failure_recheck: no upstream
//!     Miss => ask upstream; cache.store(key, &upstream_wire, now); answer;
//!             on failure or after stale_answer_after: cache.lookup_stale(&key, &view, now);
//!             on failure (no answer, or an RCODE other than NOERROR/NXDOMAIN):
//!             cache.refresh_failed(&key, now)
//! }
//! ```
//! A rendered answer carries the client's ID, RD and question case, AA clear, and a
//! fresh OPT (only if the client sent one); the caller still truncates it to the
//! client's UDP limit.

mod entry;
mod lookup;
mod policy;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::Name;
use quick_cache::sync::Cache as QuickCache;
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter, sync::DefaultLifecycle};
use tokio::time::Instant;

pub use entry::append_opt;
use entry::{Entry, Ttls};

use crate::wire;

use crate::message::{ClientEdns, ClientQuery};

/// EDE INFO-CODE "Stale Answer" (RFC 8914 §4.4).
pub const EDE_STALE_ANSWER: u16 = 3;
/// EDE INFO-CODE "Cached Error" (RFC 8914 §4.14), sent with a cached SERVFAIL.
pub const EDE_CACHED_ERROR: u16 = 13;
/// EDE INFO-CODE "Stale NXDOMAIN Answer" (RFC 8914 §4.20).
pub const EDE_STALE_NXDOMAIN: u16 = 19;
/// The highest TTL the cache ever keeps: 7 days (RFC 8767 §4 recommends capping there).
pub const TTL_CEILING: u32 = 604_800;
/// The longest a SERVFAIL may be cached: 5 minutes (RFC 2308 §7.1).
pub const SERVFAIL_TTL_CEILING: u32 = 300;
/// The longest stale window we accept: 7 days (RFC 8767 §5 suggests 1 to 3).
pub const STALE_MAX_CEILING: Duration = Duration::from_secs(7 * 86_400);
/// The longest an answer from an unauthenticated upstream connection (plain text, or
/// encrypt-only TLS of an opportunistic upstream) is kept, in seconds: its lifetime,
/// every TTL in it, and its stale window (RFC 8767) are capped at this, whatever the
/// configured limits. An on-path attacker could have written such an answer; it must not
/// outlive the downgrade that let them.
pub const UNAUTHENTICATED_MAX_TTL: u32 = 60;
/// The default [`CacheConfig::failure_recheck`]: 30 s, as RFC 8767 §5 recommends.
pub const FAILURE_RECHECK: Duration = Duration::from_secs(30);
/// Bytes charged per entry on top of its key, its `Entry` and their heap octets: the
/// cache slot, hash table and ghost share, the Arc header, allocator rounding. Set so
/// that the estimate stays above what is measured: about 365 B are charged for a
/// one-A answer, and 100 000 of them grow the daemon's RSS by about 330 B each
/// (`benches/cache.sh`, docs/benchmarks.md).
const PER_ENTRY_OVERHEAD: usize = 160;
/// The least any entry is charged: key, entry and overhead, a 12-octet message and one
/// TTL offset. At most `max_bytes` / this many entries fit.
fn min_entry_weight() -> usize {
    size_of::<CacheKey>() + size_of::<Entry>() + PER_ENTRY_OVERHEAD + wire::HEADER_LEN + 2
}

/// The item count quick_cache is told to expect: the tighter of `max_entries` and how many
/// of the lightest entries fit in `max_bytes`, at least 1. quick_cache sizes its tables,
/// and its ghost list of evicted keys (half as many slots, each as large as a live one),
/// from this estimate. When the byte bound is the tighter one, `max_entries` overstated
/// it: 8 MiB with a million entries allowed grew 19 MiB of RSS after 200 000 names,
/// mostly ghosts.
fn estimated_items(cfg: &CacheConfig) -> usize {
    let fit_by_bytes = cfg.max_bytes / min_entry_weight();
    cfg.max_entries.min(fit_by_bytes).max(1)
}

/// quick_cache's default share of a shard for its "hot" queue (not exported by it).
const QUICK_CACHE_HOT_ALLOCATION: f64 = 0.97;
/// Shards of the concurrent map (fewer for small caches: at least 32 entries each).
const SHARDS: usize = 16;

/// Cache settings. Out-of-range values are clamped by [`Cache::new`], never rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The most entries kept (stale ones count). 0 disables the cache.
    pub max_entries: usize,
    /// The most bytes charged (see [`Cache::weight_bytes`]). 0 disables the cache.
    /// Default 64 MiB. A typical answer (two A records) is charged about 375 bytes and
    /// uses about 330 bytes of RSS, so 100 000 answers of up to ~350 octets fit;
    /// this bound is for caches of large answers (TXT, DNSKEY, long chains).
    pub max_bytes: usize,
    /// Positive TTLs are raised to this (RFC 2181 §8 allows a cache to differ). Default 0.
    pub min_ttl: u32,
    /// All TTLs are lowered to this, itself at most [`TTL_CEILING`]. Default 86 400.
    pub max_ttl: u32,
    /// Negative TTLs are lowered to this (RFC 2308 §5: 1 to 3 hours). Default 3 600.
    pub negative_max_ttl: u32,
    /// SERVFAIL answers are cached this long; 0 disables (RFC 2308 §7.1: ≤ 300). Default 5.
    pub servfail_ttl: u32,
    /// Keep expired answers for [`Cache::lookup_stale`] (RFC 8767). Default off; the
    /// configuration's `[cache] serve_stale = true` turns it on.
    pub serve_stale: bool,
    /// How long past expiry an answer may be served stale (RFC 8767 §5). Default 1 day.
    pub stale_max: Duration,
    /// The TTL of stale answers, at least 1 (RFC 8767 §4: 30 s recommended). Default 30.
    pub stale_ttl: u32,
    /// After a failed refresh ([`Cache::refresh_failed`]), [`Cache::lookup`] answers an
    /// expired entry stale at once for this long, so that no upstream is asked for it
    /// (RFC 8767 §5, the "failure recheck timer"); the first lookup after it misses and
    /// the caller tries upstream again. 0 disables. Default [`FAILURE_RECHECK`].
    pub failure_recheck: Duration,
    /// A fresh hit within the last this-many percent of the entry's lifetime asks for
    /// one background refresh; 0 disables. Default 10.
    pub prefetch_percent: u8,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 10_000,
            max_bytes: 64 << 20,
            min_ttl: 0,
            max_ttl: 86_400,
            negative_max_ttl: 3_600,
            servfail_ttl: 5,
            serve_stale: false,
            stale_max: Duration::from_secs(86_400),
            stale_ttl: 30,
            failure_recheck: FAILURE_RECHECK,
            prefetch_percent: 10,
        }
    }
}

impl CacheConfig {
    /// The settings as the cache applies them: every value within its RFC ceiling.
    pub fn normalized(mut self) -> Self {
        self.max_ttl = self.max_ttl.min(TTL_CEILING);
        self.min_ttl = self.min_ttl.min(self.max_ttl);
        self.negative_max_ttl = self.negative_max_ttl.min(self.max_ttl);
        self.servfail_ttl = self.servfail_ttl.min(SERVFAIL_TTL_CEILING);
        self.stale_max = self.stale_max.min(STALE_MAX_CEILING);
        self.stale_ttl = self.stale_ttl.clamp(1, TTL_CEILING);
        self.prefetch_percent = self.prefetch_percent.min(100);
        self
    }
}

/// What a cached answer is keyed on: ⟨qname, qtype, qclass⟩ (RFC 2308 §5) plus the DO
/// and CD bits, since they change the answer (RFC 4035 §3.2.1, §3.2.2). The name is
/// compared ignoring ASCII case (RFC 4343 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Lowercased, uncompressed wire form.
    name: Box<[u8]>,
    qtype: u16,
    qclass: u16,
    dnssec_ok: bool,
    checking_disabled: bool,
}

impl CacheKey {
    /// The key of `query` as asked with these DO and CD bits.
    pub fn new(query: &Query, dnssec_ok: bool, checking_disabled: bool) -> Self {
        let name = query.name();
        let mut wire = Vec::with_capacity(name.len() + 2);
        for label in name.iter() {
            wire.push(label.len() as u8);
            wire.extend(label.iter().map(u8::to_ascii_lowercase));
        }
        wire.push(0);
        CacheKey {
            name: wire.into_boxed_slice(),
            qtype: u16::from(query.query_type()),
            qclass: u16::from(query.query_class()),
            dnssec_ok,
            checking_disabled,
        }
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.name.len()
    }
}

impl From<&ClientQuery> for CacheKey {
    fn from(q: &ClientQuery) -> Self {
        CacheKey::new(&q.query, q.dnssec_ok(), q.checking_disabled)
    }
}

/// What a hit needs to know of the client's query to answer it as its own.
#[derive(Debug, Clone, Copy)]
pub struct ClientView<'a> {
    /// The client's message ID.
    pub id: u16,
    /// The question name as the client wrote it; its case is echoed in the answer.
    pub qname: &'a Name,
    /// RD as the client set it (copied into the answer, RFC 1035 §4.1.1).
    pub recursion_desired: bool,
    /// AD as the client set it (RFC 6840 §5.8: AD only if the query had DO or AD).
    pub authentic_data: bool,
    /// The client's OPT, if it sent one: the answer then carries a fresh OPT with our
    /// payload size and the client's DO bit, and EDE codes where they apply (RFC 8914 §2).
    pub edns: Option<ClientEdns>,
}

impl<'a> From<&'a ClientQuery> for ClientView<'a> {
    fn from(q: &'a ClientQuery) -> Self {
        ClientView {
            id: q.id,
            qname: q.query.name(),
            recursion_desired: q.recursion_desired,
            authentic_data: q.authentic_data,
            edns: q.edns,
        }
    }
}

/// The result of a lookup. Every answer is a ready-to-send DNS message in wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh answer, TTLs counted down.
    Hit(Vec<u8>),
    /// A fresh answer in the last [`CacheConfig::prefetch_percent`] of its lifetime.
    /// Exactly one lookup per stored entry gets this; that caller starts one
    /// background refresh and serves the answer without waiting for it.
    HitPrefetch(Vec<u8>),
    /// An expired answer within the stale window, every TTL = `stale_ttl`, with EDE 3
    /// (19 for NXDOMAIN) if the client sent an OPT. From [`Cache::lookup_stale`], and
    /// from [`Cache::lookup`] within `failure_recheck` of a failed refresh.
    Stale(Vec<u8>),
    /// Nothing servable.
    Miss,
}

impl Lookup {
    /// The answer to send, if any.
    pub fn into_wire(self) -> Option<Vec<u8>> {
        match self {
            Lookup::Hit(w) | Lookup::HitPrefetch(w) | Lookup::Stale(w) => Some(w),
            Lookup::Miss => None,
        }
    }
}

/// An answer as the cache just stored it, to render for the clients that were waiting
/// for it (coalesced into one upstream query).
#[derive(Debug, Clone)]
pub struct StoredAnswer(Arc<Entry>);

impl StoredAnswer {
    /// The answer for `client`, exactly as a hit at `now` would render it (but never with
    /// the "cached error" EDE: this SERVFAIL, if it is one, is the upstream's own).
    pub fn render(&self, client: &ClientView<'_>, now: Instant) -> Vec<u8> {
        self.0.render(client, Ttls::CountDown(self.0.elapsed_secs(now)), None)
    }
}

/// What kind of answer an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// NOERROR with data (or a CNAME with nothing behind it and no SOA).
    Positive,
    /// NOERROR, no data of the type, SOA in authority (RFC 2308 §2.2).
    NoData,
    /// Name error, SOA in authority (RFC 2308 §2.1).
    NxDomain,
    /// Server failure (RFC 2308 §7.1).
    ServFail,
}

/// What [`Cache::store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored for `ttl` seconds, replacing any entry under the key.
    Stored { kind: AnswerKind, ttl: u32 },
    /// A SERVFAIL that did not replace a still servable (fresh or stale) answer:
    /// RFC 8767 §4 keeps the old data when a refresh fails.
    KeptExisting,
    /// Not stored. A NOERROR or NXDOMAIN answer to the key's question that the policy
    /// refused (TTL 0, too large, …) still removed any entry under the key.
    NotCacheable(NotCacheable),
}

/// Why an answer was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCacheable {
    /// The cache is disabled (`max_entries` or `max_bytes` is 0).
    Disabled,
    /// Larger than a cache shard can hold, or than 65 535 octets.
    TooLarge,
    /// Not a well-formed DNS message (by our walker or by hickory-proto).
    Malformed,
    /// A query, or an opcode other than QUERY.
    NotAnAnswer,
    /// TC=1 (RFC 2181 §9).
    Truncated,
    /// Not exactly one question, or not the key's question.
    QuestionMismatch,
    /// Carries a TSIG or SIG(0), which a patched copy would break.
    Signed,
    /// The OPT is not the last record, so it cannot be cut cleanly.
    OptNotLast,
    /// An RCODE that is not cached (REFUSED, FORMERR, NOTIMP, …).
    Rcode(u16),
    /// A TTL of 0 (RFC 8767 §7: never cached, not even for stale use).
    ZeroTtl,
    /// A negative answer without an SOA (RFC 2308 §5).
    NoSoa,
}

/// Charges each entry its estimated size, but at least `floor` = (shard bytes /
/// shard entries): then a shard full by weight holds at most its share of
/// `max_entries`, so one weight bound enforces both limits.
#[derive(Debug, Clone)]
struct EntryWeighter {
    floor: u64,
}

impl Weighter<CacheKey, Arc<Entry>> for EntryWeighter {
    fn weight(&self, key: &CacheKey, entry: &Arc<Entry>) -> u64 {
        let size = key.size() + entry.size() + PER_ENTRY_OVERHEAD;
        (size as u64).max(self.floor)
    }
}

type Map = QuickCache<
    CacheKey,
    Arc<Entry>,
    EntryWeighter,
    DefaultHashBuilder,
    DefaultLifecycle<CacheKey, Arc<Entry>>,
>;

/// The shared answer cache. `Send + Sync`; every method takes `&self`.
pub struct Cache {
    cfg: CacheConfig,
    /// `None` when disabled.
    map: Option<Map>,
    weighter: EntryWeighter,
    /// The heaviest entry a shard admits (quick_cache refuses more than its hot share).
    max_entry_weight: u64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("cfg", &self.cfg)
            .field("len", &self.len())
            .field("weight_bytes", &self.weight_bytes())
            .finish()
    }
}

impl Cache {
    /// A cache with these settings (clamped to their RFC ceilings).
    pub fn new(cfg: CacheConfig) -> Self {
        let cfg = cfg.normalized();
        let mut shards = SHARDS;
        while shards > 1 && cfg.max_entries / shards < 32 {
            shards /= 2;
        }
        // Exact per-shard shares, so that quick_cache's per-shard capacity (total /
        // shards, rounded up) is exactly `shard_bytes` and no rounding lets the total
        // exceed either bound.
        let shard_entries = (cfg.max_entries / shards) as u64;
        let shard_bytes = (cfg.max_bytes / shards) as u64;
        let floor = shard_bytes.div_ceil(shard_entries.max(1)).max(1);
        let weighter = EntryWeighter { floor };
        // quick_cache admits nothing heavier than its hot share of a shard; a shard of
        // one entry (a cache of one) needs it all, and eviction order is moot there.
        let hot_allocation = if shard_entries == 1 { 1.0 } else { QUICK_CACHE_HOT_ALLOCATION };
        let max_entry_weight =
            ((shard_bytes as f64 * hot_allocation) as u64).clamp(shard_bytes.min(1), shard_bytes);
        let map = (shard_entries > 0 && shard_bytes > 0).then(|| {
            let options = OptionsBuilder::new()
                .shards(shards)
                .hot_allocation(hot_allocation)
                .estimated_items_capacity(estimated_items(&cfg))
                .weight_capacity(shard_bytes * shards as u64)
                .build()
                .expect("both capacities are set");
            Map::with_options(
                options,
                weighter.clone(),
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            )
        });
        Cache { cfg, map, weighter, max_entry_weight }
    }

    /// A cache with new settings that keeps the answers of `self` (a config reload must
    /// not drop the cache): entries are moved over until the new bounds are full.
    pub fn resized(&self, cfg: CacheConfig) -> Self {
        let next = Cache::new(cfg);
        if let (Some(old), Some(new)) = (&self.map, &next.map) {
            for (key, entry) in old.iter() {
                if next.weighter.weight(&key, &entry) <= next.max_entry_weight {
                    new.insert(key, entry);
                }
            }
        }
        next
    }

    /// The settings in force (after clamping).
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// Stores `upstream_answer` (as received, with or without OPT) under `key` if the
    /// policy allows, for as long as it allows; a stored answer replaces any entry
    /// under the key (fresh or stale), except that a SERVFAIL never replaces a
    /// servable answer. A NOERROR or NXDOMAIN answer that is not stored (TTL 0, too
    /// large, …) removes the entry: RFC 8767 §4, a successful refresh means the old data
    /// must not be served stale any more. Never panics, whatever the octets.
    pub fn store(&self, key: CacheKey, upstream_answer: &[u8], now: Instant) -> StoreOutcome {
        self.store_inner(key, upstream_answer, now, false, None).0
    }

    /// Like [`Cache::store`], for an answer the caller has already parsed with
    /// hickory-proto successfully: skips that (costly) check. The pipeline parses every
    /// upstream answer anyway, so parsing it again here was a sixth of a miss's CPU.
    /// When stored, also returns the entry, so that the clients waiting for this answer
    /// get it rendered exactly as a hit would be, without re-encoding it.
    pub fn store_parsed(
        &self,
        key: CacheKey,
        upstream_answer: &[u8],
        now: Instant,
    ) -> (StoreOutcome, Option<StoredAnswer>) {
        self.store_inner(key, upstream_answer, now, true, None)
    }

    /// Like [`Cache::store_parsed`], for an answer that came over a connection that
    /// authenticated nothing: kept at most [`UNAUTHENTICATED_MAX_TTL`] seconds (its TTLs
    /// lowered to that), and served stale at most that long past expiry.
    pub fn store_parsed_unauthenticated(
        &self,
        key: CacheKey,
        upstream_answer: &[u8],
        now: Instant,
    ) -> (StoreOutcome, Option<StoredAnswer>) {
        self.store_inner(key, upstream_answer, now, true, Some(UNAUTHENTICATED_MAX_TTL))
    }

    fn store_inner(
        &self,
        key: CacheKey,
        upstream_answer: &[u8],
        now: Instant,
        parsed: bool,
        ttl_cap: Option<u32>,
    ) -> (StoreOutcome, Option<StoredAnswer>) {
        let entry = match self.admit(&key, upstream_answer, now, parsed, ttl_cap) {
            Ok(entry) => entry,
            Err(Refused { outcome, supersedes }) => {
                if let (true, Some(map)) = (supersedes, &self.map) {
                    map.remove(&key);
                }
                return (outcome, None);
            }
        };
        let outcome = StoreOutcome::Stored { kind: entry.kind, ttl: entry.ttl };
        if let Some(map) = &self.map {
            map.insert(key, entry.clone());
        }
        (outcome, Some(StoredAnswer(entry)))
    }

    /// The entry `upstream_answer` becomes under `key`, if the policy and the bounds let
    /// it in; otherwise what [`Cache::store`] reports instead.
    fn admit(
        &self,
        key: &CacheKey,
        upstream_answer: &[u8],
        now: Instant,
        parsed: bool,
        ttl_cap: Option<u32>,
    ) -> Result<Arc<Entry>, Refused> {
        use NotCacheable as Not;
        let Some(map) = &self.map else {
            return Err(Refused::keep(StoreOutcome::NotCacheable(Not::Disabled)));
        };
        if upstream_answer.len() > usize::from(u16::MAX) {
            return Err(Refused::keep(StoreOutcome::NotCacheable(Not::TooLarge)));
        }
        if upstream_answer.get(4..6).is_some_and(|qd| qd != [0, 1]) {
            return Err(Refused::keep(StoreOutcome::NotCacheable(Not::QuestionMismatch)));
        }
        let Ok(scanned) = crate::wire::scan(upstream_answer) else {
            return Err(Refused::keep(StoreOutcome::NotCacheable(Not::Malformed)));
        };
        // A capped store decides with limits no higher than the cap (min_ttl included:
        // the cap wins over a configured floor).
        let capped;
        let cfg = match ttl_cap {
            None => &self.cfg,
            Some(cap) => {
                capped = CacheConfig {
                    max_ttl: self.cfg.max_ttl.min(cap),
                    servfail_ttl: self.cfg.servfail_ttl.min(cap),
                    stale_max: self.cfg.stale_max.min(Duration::from_secs(cap.into())),
                    ..self.cfg.clone()
                }
                .normalized();
                &capped
            }
        };
        let decision = match policy::decide(upstream_answer, &scanned, key, cfg) {
            Ok(decision) => decision,
            Err(reason) => {
                // RFC 8767 §4: NOERROR and NXDOMAIN are successful refreshes, even when
                // this cache cannot keep them; an answer that is not one (malformed, for
                // another question, truncated) or another RCODE leaves the old state.
                let supersedes = matches!(scanned.rcode(), RCODE_NOERROR | RCODE_NXDOMAIN)
                    && matches!(reason, Not::ZeroTtl | Not::NoSoa | Not::Signed | Not::OptNotLast);
                return Err(Refused { outcome: StoreOutcome::NotCacheable(reason), supersedes });
            }
        };
        // Every hit is served from these octets: they must be a message our own
        // front end (hickory-proto) can read, rdata included.
        if !parsed && Message::from_vec(upstream_answer).is_err() {
            return Err(Refused::keep(StoreOutcome::NotCacheable(Not::Malformed)));
        }
        if decision.kind == AnswerKind::ServFail
            && map.peek(key).is_some_and(|old| old.kind != AnswerKind::ServFail && old.is_servable(now))
        {
            return Err(Refused::keep(StoreOutcome::KeptExisting));
        }
        let stale_max = cfg.serve_stale.then_some(cfg.stale_max);
        let entry = Arc::new(Entry::new(upstream_answer, &scanned, &decision, now, stale_max));
        if self.weighter.weight(key, &entry) > self.max_entry_weight {
            return Err(Refused {
                outcome: StoreOutcome::NotCacheable(Not::TooLarge),
                supersedes: decision.kind != AnswerKind::ServFail,
            });
        }
        Ok(entry)
    }

    /// Gives an answer the cache did not store (refused by the policy, too large, a
    /// bypass of a disabled cache) the TTLs a stored one would have had: one per RRset,
    /// high bit capped, at most `max_ttl` (see `policy::normalize_message`); `wire` is the
    /// upstream answer `msg` was parsed from. False (and `msg` as it was) when our walker
    /// cannot read `wire`.
    pub fn normalize_uncached(&self, wire: &[u8], msg: &mut Message) -> bool {
        policy::normalize_message(wire, msg, self.cfg.max_ttl)
    }

    /// Drops every entry whose name (lowercase, uncompressed wire form) `drop` picks:
    /// names that a config reload now answers elsewhere (the locally-served zones turned
    /// on), whose upstream answers must not be served as hits.
    pub fn forget_names(&self, drop: impl Fn(&[u8]) -> bool) {
        if let Some(map) = &self.map {
            map.retain(|key, _| !drop(&key.name));
        }
    }

    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged against `max_bytes`: each entry's estimated size, but at least
    /// `max_bytes / max_entries` (that floor is how the entry bound is kept), so a
    /// cache full by count reads close to `max_bytes` even if its answers are small.
    /// Always an upper bound on the memory the entries use.
    pub fn weight_bytes(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.weight() as usize)
    }

    fn get(&self, key: &CacheKey) -> Option<(&Map, Arc<Entry>)> {
        let map = self.map.as_ref()?;
        map.get(key).map(|entry| (map, entry))
    }
}

/// Why [`Cache::admit`] refused an answer, and whether that answer still supersedes
/// the entry under its key (RFC 8767 §4).
struct Refused {
    outcome: StoreOutcome,
    supersedes: bool,
}

impl Refused {
    /// Refused, and any entry under the key stays.
    fn keep(outcome: StoreOutcome) -> Self {
        Refused { outcome, supersedes: false }
    }
}

/// RCODEs that count as a successful refresh (RFC 8767 §4).
const RCODE_NOERROR: u16 = 0;
const RCODE_NXDOMAIN: u16 = 3;
