//! Racing before a query needs it. At start (and after a reload), after a resume and
//! after a resolv.conf change the pool races at once, so the first query finds a
//! connection instead of paying the race: one attempt delay for each silent address
//! ahead of a live one.
//!
//! One pool of a group pre-warms: the last, which is TCP's on the main runtime (or the
//! only one). The serving threads' pools borrow its connection as they borrow any
//! sibling's, and race for their own only once it is busy, so a quiet daemon still keeps
//! one connection and its spare. Nothing here keeps a connection open: an idle one still
//! closes (RFC 7766 §6.2.3) and the next query races. A pre-warm race is an ordinary
//! primary race: a failure leaves the back-off a query's race would, and none starts
//! while one lasts.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::{
    sync::watch,
    time::{Instant, MissedTickBehavior, interval},
};
use tracing::{debug, info, warn};

use super::{Inner, Pool, RaceStatus, races::backing_off};
use crate::upstream::connection::Connection;

/// How often the pools look for a resume without waiting for a query: two vDSO clock
/// reads per pool. The monotonic clock stops during a suspend, so this runs about this
/// long after the wake-up.
const RESUME_POLL: Duration = Duration::from_secs(1);

/// Why a pool races before any query asked for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmReason {
    /// The daemon started.
    Start,
    /// A reload made new pools.
    Reload,
    /// The machine woke from a suspend.
    Resume,
    /// A resolv_conf upstream's nameservers changed.
    ResolvConf,
    /// The machine's links, addresses or routes changed (`crate::netwatch`).
    NetworkChange,
}

impl WarmReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WarmReason::Start => "start",
            WarmReason::Reload => "reload",
            WarmReason::Resume => "resume",
            WarmReason::ResolvConf => "resolv.conf",
            WarmReason::NetworkChange => "network change",
        }
    }
}

impl std::fmt::Display for WarmReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Races at once in the group's pre-warming pool (the last of `pools`) and watches for
/// resumes in the background, racing again after each. Must be called inside the
/// runtime; the watch holds the pools weakly and ends once they are dropped (a reload's
/// old pools included).
pub fn keep_warm(pools: &[Pool], reason: WarmReason) {
    let Some(warm) = pools.last() else { return };
    warm.inner.prewarm(reason);
    let weak: Vec<Weak<Inner>> = pools.iter().map(|p| Arc::downgrade(&p.inner)).collect();
    tokio::spawn(async move {
        let mut tick = interval(RESUME_POLL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate
        loop {
            tick.tick().await;
            let pools: Vec<Arc<Inner>> = weak.iter().filter_map(Weak::upgrade).collect();
            let Some(warm) = pools.last() else { return };
            // Every pool looks (each closes its own suspect connections); one races.
            let mut resumed = false;
            for pool in &pools {
                let mut st = pool.lock();
                resumed |= pool.notice_suspend(&mut st);
            }
            if resumed {
                warm.prewarm(WarmReason::Resume);
            }
        }
    });
}

/// The network changed (`crate::netwatch`): as after a resume, every pool of the group
/// closes its connections (they may have died with the old network, silently) and ends its
/// back-offs, and the group races at once, so the next query does not wait on a corpse.
pub fn network_changed(pools: &[Pool]) {
    suspect_connections(pools);
    if let Some(warm) = pools.last() {
        warm.inner.prewarm(WarmReason::NetworkChange);
    }
}

/// [`network_changed`] without the race: for a route's pools, whose names may never be
/// asked on the new network.
pub fn suspect_connections(pools: &[Pool]) {
    for pool in pools {
        pool.inner.forget_network(&mut pool.inner.lock());
    }
}

impl Inner {
    /// Starts a primary race unless a connection is up or coming, here or in a sibling,
    /// or a failed race's back-off lasts. Logs the trigger and the outcome; the race's
    /// own lines log each attempt.
    pub(super) fn prewarm(self: &Arc<Self>, reason: WarmReason) {
        // Siblings first, without our own lock: no task holds two pools' locks at once.
        if self.sibling_pair().is_some() || self.sibling_race().is_some() {
            debug!(reason = %reason, "no pre-warm race: a sibling pool has a connection");
            return;
        }
        let sibling_backing_off = self.sibling_backing_off();
        let rx = {
            let mut st = self.lock();
            if self.usable_pair(&mut st).is_some() || st.race.is_some() {
                return;
            }
            if let Some(why) = backing_off(&st).or(sibling_backing_off) {
                info!(reason = %reason, %why, "no pre-warm race while a failed race's back-off lasts");
                return;
            }
            self.start_primary_race(&mut st)
        };
        info!(reason = %reason, "pre-warm race: racing before any query needs a connection");
        tokio::spawn(log_outcome(rx, reason, Instant::now()));
    }
}

/// Waits for a pre-warm race and logs how it ended.
async fn log_outcome(mut rx: watch::Receiver<RaceStatus>, reason: WarmReason, started: Instant) {
    let result: Result<Connection, String> = loop {
        if let RaceStatus::Done(result) = &*rx.borrow_and_update() {
            break result.clone();
        }
        if rx.changed().await.is_err() {
            break Err("race ended without a result".into());
        }
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(conn) => info!(
            reason = %reason,
            upstream = %conn.info().upstream_name,
            ip = %conn.info().peer.ip(),
            port = conn.info().peer.port(),
            transport = conn.info().transport.as_str(),
            elapsed_ms,
            "pre-warm race: connection ready"
        ),
        Err(why) => warn!(
            reason = %reason,
            %why,
            elapsed_ms,
            "pre-warm race failed: queries fail at once until its back-off ends"
        ),
    }
}
