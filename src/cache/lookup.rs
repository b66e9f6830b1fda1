//! The cache's read side: fresh hits (the hot path), stale answers (RFC 8767) and the
//! failed-refresh mark that lets an expired answer go out stale at once (§5).
//!
//! Must never parse or allocate beyond the rendered answer on a fresh hit: the stale and
//! failure checks run only for entries that have expired.

use std::sync::Arc;

use tokio::time::Instant;

use super::entry::{Entry, Ttls};
use super::{
    AnswerKind, Cache, CacheKey, ClientView, EDE_CACHED_ERROR, EDE_STALE_ANSWER, EDE_STALE_NXDOMAIN, Lookup,
};

impl Cache {
    /// A fresh answer for `key`, rendered for `client`: [`Lookup::Hit`],
    /// [`Lookup::HitPrefetch`] or [`Lookup::Miss`] (also for expired entries), except
    /// that an expired entry whose refresh failed less than
    /// [`failure_recheck`](super::CacheConfig::failure_recheck) ago is [`Lookup::Stale`]
    /// (with `serve_stale` on).
    pub fn lookup(&self, key: &CacheKey, client: &ClientView<'_>, now: Instant) -> Lookup {
        let Some((map, entry)) = self.get(key) else {
            return Lookup::Miss;
        };
        if !entry.is_fresh(now) {
            if !entry.is_servable(now) {
                map.remove_if(key, |e| Arc::ptr_eq(e, &entry));
            } else if self.cfg.serve_stale && entry.refresh_failed_within(now, self.cfg.failure_recheck) {
                // RFC 8767 §5: upstream failed for this a moment ago; answer stale at once
                // rather than make every client wait for the client-response timer.
                return Lookup::Stale(self.render_stale(&entry, client));
            }
            return Lookup::Miss;
        }
        let wire = self.render_fresh(&entry, client, now);
        if entry.prefetch_due(now, self.cfg.prefetch_percent) && entry.claim_prefetch() {
            Lookup::HitPrefetch(wire)
        } else {
            Lookup::Hit(wire)
        }
    }

    /// An answer for `key` when upstream failed or is late (RFC 8767): a fresh entry as
    /// [`Lookup::Hit`] (never claiming the prefetch), an expired one within the stale
    /// window as [`Lookup::Stale`], else [`Lookup::Miss`]. Stale answers exist only
    /// with `serve_stale` on; SERVFAIL entries are never served stale.
    pub fn lookup_stale(&self, key: &CacheKey, client: &ClientView<'_>, now: Instant) -> Lookup {
        let Some((map, entry)) = self.get(key) else {
            return Lookup::Miss;
        };
        if entry.is_fresh(now) {
            return Lookup::Hit(self.render_fresh(&entry, client, now));
        }
        if !entry.is_stale_servable(now) {
            map.remove_if(key, |e| Arc::ptr_eq(e, &entry));
            return Lookup::Miss;
        }
        Lookup::Stale(self.render_stale(&entry, client))
    }

    /// Notes that upstream failed to refresh `key` at `now`: no answer, or an RCODE other
    /// than NOERROR or NXDOMAIN. RFC 8767 §4: the old data stays as it is (a SERVFAIL
    /// never replaces it, see [`Cache::store`]); §5: for `failure_recheck` after this,
    /// [`Cache::lookup`] answers an expired entry stale at once. Does nothing unless an
    /// entry that may be served stale is there.
    pub fn refresh_failed(&self, key: &CacheKey, now: Instant) {
        let Some(map) = &self.map else { return };
        if let Some(entry) = map.peek(key)
            && entry.stale_until.is_some()
            && entry.is_servable(now)
        {
            entry.note_refresh_failure(now);
        }
    }

    fn render_fresh(&self, entry: &Entry, client: &ClientView<'_>, now: Instant) -> Vec<u8> {
        // RFC 8914 §4.14: a cached SERVFAIL says so.
        let ede = (entry.kind == AnswerKind::ServFail).then_some(EDE_CACHED_ERROR);
        entry.render(client, Ttls::CountDown(entry.elapsed_secs(now)), ede)
    }

    fn render_stale(&self, entry: &Entry, client: &ClientView<'_>) -> Vec<u8> {
        // RFC 8914 §4.4 / §4.20: say the answer is stale.
        let ede = if entry.kind == AnswerKind::NxDomain { EDE_STALE_NXDOMAIN } else { EDE_STALE_ANSWER };
        entry.render(client, Ttls::Fixed(self.cfg.stale_ttl), Some(ede))
    }
}
