//! A group of pools: one per serving thread. Each thread's misses go out on its own
//! pool, whose connection tasks run on that thread too, so a miss never crosses between
//! cores (docs/benchmarks.md measured that crossing at about 2 µs of a 14 µs miss).
//!
//! The pools know each other: while one has no connection up, its queries use a
//! sibling's live connection (and its spare, for hedging) instead of waiting for a race,
//! wait on a sibling's race rather than start one, and fail at once while a sibling's
//! race has just failed, so a group makes no client
//! wait longer than one pool would. It races for its own only once the sibling's
//! connection is busy, so a quiet daemon keeps a single connection and a busy one gets
//! one per thread. Status and metrics read the group as a whole.

use std::sync::{Arc, Weak, atomic::AtomicU64};

use tokio::sync::watch;

use super::{Inner, Pool, PoolHealth, RaceStatus, attempt_contexts, races::backing_off};
use crate::{
    config::Config, metrics::UpstreamConnections, tls::TlsSetupError, upstream::connection::Connection,
};

impl Pool {
    /// `n` pools (at least one) for `config` that share TLS settings (so sessions resume
    /// across them) and connection ids, and borrow each other's connections.
    pub fn group(config: &Config, n: usize) -> Result<Vec<Pool>, TlsSetupError> {
        let contexts = attempt_contexts(config)?;
        let ids = Arc::new(AtomicU64::new(1));
        let pools: Vec<Pool> =
            (0..n.max(1)).map(|_| Pool::with_contexts(config, contexts.clone(), ids.clone())).collect();
        for pool in &pools {
            let others = pools
                .iter()
                .filter(|other| !Arc::ptr_eq(&other.inner, &pool.inner))
                .map(|other| Arc::downgrade(&other.inner))
                .collect();
            let _ = pool.inner.siblings.set(others);
        }
        Ok(pools)
    }
}

impl Inner {
    /// A sibling pool's usable pair, as its own queries would get it (its spare promoted
    /// when its primary died), if one has a connection up. The sibling checks for a
    /// suspend first, as it would for its own queries: after one, its connections are
    /// closed rather than lent.
    pub(super) fn sibling_pair(&self) -> Option<(Connection, Option<Connection>)> {
        self.siblings.get()?.iter().filter_map(Weak::upgrade).find_map(|sibling| {
            let mut st = sibling.lock();
            sibling.notice_suspend(&mut st);
            sibling.usable_pair(&mut st)
        })
    }

    /// A sibling's primary race, while one runs: its connection will serve us too, so a
    /// pool with none waits on it rather than racing its own (after a pre-warm at start,
    /// the serving threads' first queries join TCP's race).
    pub(super) fn sibling_race(&self) -> Option<watch::Receiver<RaceStatus>> {
        self.siblings.get()?.iter().filter_map(Weak::upgrade).find_map(|sibling| sibling.lock().race.clone())
    }

    /// A sibling's reason to fail at once: its primary race failed and its back-off has
    /// not ended (nor a suspend reset it). The pools share the network and the
    /// upstreams, so a race of our own would only make a client wait to learn the same.
    pub(super) fn sibling_backing_off(&self) -> Option<String> {
        self.siblings.get()?.iter().filter_map(Weak::upgrade).find_map(|sibling| {
            let mut st = sibling.lock();
            sibling.notice_suspend(&mut st);
            backing_off(&st)
        })
    }
}

/// The health of a group: an upstream is up when a pool has a live connection to it,
/// or when it has addresses and no pool saw all of them fail since their last success
/// (one pool's fresh failure outweighs another's older silence). The connection in use
/// is the first pool's that has one.
pub fn group_health(pools: &[Pool]) -> PoolHealth {
    let mut each = pools.iter().map(Pool::upstream_states);
    let mut all = each.next().unwrap_or_default();
    for states in each {
        for (sum, one) in all.iter_mut().zip(states) {
            sum.connected |= one.connected;
            sum.failing |= one.failing;
        }
    }
    PoolHealth {
        up: all.iter().filter(|u| u.connected || (!u.failing && u.has_addresses)).count(),
        total: all.len(),
        via: pools.iter().find_map(Pool::via),
    }
}

/// Live connections per upstream, summed over a group's pools (config order).
pub fn group_connections(pools: &[Pool]) -> Vec<UpstreamConnections> {
    let mut pools = pools.iter().map(Pool::connections_up);
    let mut sum = pools.next().unwrap_or_default();
    for counts in pools {
        for (total, one) in sum.iter_mut().zip(counts) {
            total.tls += one.tls;
            total.plain += one.plain;
            total.https += one.https;
        }
    }
    sum
}
