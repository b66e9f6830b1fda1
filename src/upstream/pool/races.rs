//! The pool's races: for the primary (queries may wait on it), for the warm spare and for
//! leaving plain text (both in the background), and what happens when a connection dies.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::watch,
    time::{Instant, sleep},
};
use tracing::{info, warn};

use super::{Inner, PoolState, RaceStatus};
use crate::{
    config::Mode,
    upstream::{
        connection::{CloseReason, Connection},
        connector::{RaceResult, drive_race},
        race::{Candidate, Race, Transport, UpstreamAddrs, order_candidates},
    },
};

/// After failed primary races, the wait before the next one doubles up to this: short
/// enough that a network that comes back (a captive portal logged into, a port opened) is
/// used within about 5 s of the next query.
const PRIMARY_RETRY_MAX: Duration = Duration::from_secs(4);
/// Background DoT re-races while on plain text or DoH: first after this, doubling up to
/// the cap.
const UPGRADE_FIRST: Duration = Duration::from_secs(1);
const UPGRADE_MAX: Duration = Duration::from_secs(60);
/// A spare the upstream kept open at least this long before closing it idle was worth
/// having: its back-off resets. One closed sooner is churn (a busy server reclaiming its
/// slots, RFC 7766 §6.2.3), and the next spare waits out a doubling back-off.
const SPARE_KEPT_LONG_ENOUGH: Duration = Duration::from_secs(10);

/// What a race is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum RaceKind {
    /// The connection queries use; everything the policy allows, plain text included for
    /// opportunistic upstreams.
    Primary,
    /// A warm second connection: TLS only, anywhere but the primary's endpoint.
    Spare,
    /// To a preferred transport (`Transport::preference`): from a plain-text primary, any
    /// encrypted one; from a DoH one, DoT only. Replaces the primary when it wins, so an
    /// open 853 is preferred once it works and plain text is left as soon as anything
    /// encrypted does.
    Upgrade,
}

impl Inner {
    /// Swaps a resolv_conf upstream's addresses; a connection to a server no longer listed
    /// is dropped from use, so the next query races the new list.
    pub(super) fn set_addresses(&self, index: usize, addresses: Vec<std::net::IpAddr>) {
        info!(upstream = %self.upstreams[index].name, nameservers = ?addresses, "resolv.conf changed");
        let mut guard = self.lock();
        let st = &mut *guard;
        for slot in [&mut st.primary, &mut st.spare] {
            let gone = slot
                .as_ref()
                .is_some_and(|c| c.info().upstream == index && !addresses.contains(&c.info().peer.ip()));
            if gone {
                *slot = None;
            }
        }
        st.addresses[index] = addresses;
        // New servers: earlier failures say nothing about them.
        st.race_backoff.on_success();
        st.race_failure = None;
    }

    /// Candidates for a race of `kind`: upstreams with recent failures go last, endpoints
    /// that presented a wrong key sit out while backed off.
    fn candidates(&self, st: &PoolState, kind: RaceKind, now: Instant) -> (Vec<Candidate>, Vec<Candidate>) {
        let mut order: Vec<usize> = (0..self.upstreams.len()).collect();
        let failures = |i: usize| {
            st.addresses[i]
                .iter()
                .flat_map(|ip| self.upstreams[i].endpoints(*ip).filter(|(_, t)| t.is_encrypted()))
                .map(|endpoint| st.endpoints.get(&endpoint).map_or(0, |h| h.backoff.failures()))
                .min()
                .unwrap_or(0)
        };
        order.sort_by_key(|&i| failures(i).min(1));
        let avoid = st.primary.as_ref().map(|p| (p.info().upstream, p.info().peer));
        if kind == RaceKind::Spare {
            // Another upstream first, then another address of the same one.
            order.sort_by_key(|&i| avoid.is_some_and(|(u, _)| u == i));
        }
        let addrs: Vec<UpstreamAddrs<'_>> = order
            .iter()
            .map(|&i| {
                let u = &self.upstreams[i];
                UpstreamAddrs {
                    upstream: i,
                    addresses: &st.addresses[i],
                    tls_port: u.tls_port,
                    plain_port: u.plain_port,
                    https_port: u.https.as_ref().map(|h| h.port),
                    // Strict upstreams never yield a plain candidate (RFC 8310 §5).
                    allow_plain: u.mode == Mode::Opportunistic && kind == RaceKind::Primary,
                }
            })
            .collect();
        let last_winner = if kind == RaceKind::Primary { st.last_winner } else { None };
        let (mut tls, mut plain) = order_candidates(&addrs, last_winner);
        // An upgrade race tries only what is preferred to the primary's transport: from
        // plain text, DoT and DoH; from DoH, DoT.
        let primary_preference = st.primary.as_ref().map_or(0, |p| p.info().transport.preference());
        let usable = |c: &Candidate| {
            let sits_out = st
                .endpoints
                .get(&(c.addr, c.transport))
                .is_some_and(|h| h.pin_mismatch && !h.backoff.available(now));
            // A spare goes to another server than the primary's: not its endpoint, nor the
            // same upstream's other transport on its address.
            let is_primary = avoid.is_some_and(|(upstream, peer)| match kind {
                RaceKind::Primary => false,
                RaceKind::Spare => peer == c.addr || (upstream == c.upstream && peer.ip() == c.addr.ip()),
                RaceKind::Upgrade => false,
            });
            let no_better = kind == RaceKind::Upgrade && c.transport.preference() <= primary_preference;
            !sits_out && !is_primary && !no_better
        };
        tls.retain(usable);
        plain.retain(usable);
        (tls, plain)
    }

    fn launch(self: &Arc<Self>, st: &mut PoolState, kind: RaceKind) -> Option<watch::Receiver<RaceStatus>> {
        let now = Instant::now();
        let (tls, plain) = self.candidates(st, kind, now);
        if kind != RaceKind::Primary && tls.is_empty() {
            return None;
        }
        let reserved = (tls.len() + plain.len()) as u64;
        // Reserve the ids this race may use, so ids keep growing across concurrent races
        // (and across the pools of a group).
        let first_id = self.next_id.fetch_add(reserved, std::sync::atomic::Ordering::Relaxed);
        let race = Race::new(tls, plain, self.racing, first_id, now);
        let (tx, rx) = watch::channel(RaceStatus::Running);
        let inner = self.clone();
        tokio::spawn(async move {
            let result = drive_race(race, inner.contexts.clone()).await;
            let published = inner.finish_race(result, kind);
            let _ = tx.send(RaceStatus::Done(published));
        });
        Some(rx)
    }

    /// The primary race queries wait on: the one running, or a new one. After a failed
    /// race, until its back-off ends, the failure's reason instead (queries fail at once
    /// rather than each wait out `query_timeout` on the same dead network).
    pub(super) fn race_unless_backing_off(
        self: &Arc<Self>,
        st: &mut PoolState,
    ) -> Result<watch::Receiver<RaceStatus>, String> {
        if let Some(rx) = &st.race {
            return Ok(rx.clone());
        }
        if let Some(why) = backing_off(st) {
            return Err(why);
        }
        Ok(self.start_primary_race(st))
    }

    /// Starts the race for the primary; queries wait on the returned channel.
    pub(super) fn start_primary_race(self: &Arc<Self>, st: &mut PoolState) -> watch::Receiver<RaceStatus> {
        let rx = self.launch(st, RaceKind::Primary).expect("primary races always launch");
        st.race = Some(rx.clone());
        rx
    }

    /// Starts a spare race in the background when a spare is wanted and none is up.
    pub(super) fn refill_spare(self: &Arc<Self>, st: &mut PoolState) {
        let wanted = self.hedging.spare && self.spare_possible;
        if !wanted || st.spare.is_some() || st.spare_racing || !st.spare_backoff.available(Instant::now()) {
            return;
        }
        if self.launch(st, RaceKind::Spare).is_some() {
            st.spare_racing = true;
        }
    }

    /// Records a race's result in the pool state and returns what waiting queries get.
    fn finish_race(self: &Arc<Self>, result: RaceResult, kind: RaceKind) -> Result<Connection, String> {
        let now = Instant::now();
        let mut st = self.lock();
        match kind {
            RaceKind::Primary => st.race = None,
            RaceKind::Spare => st.spare_racing = false,
            RaceKind::Upgrade => {}
        }
        for c in &result.pin_mismatches {
            let h = st.endpoints.entry((c.addr, c.transport)).or_default();
            h.pin_mismatch = true;
            h.backoff.on_failure(now);
        }
        if let Err(reasons) = &result.outcome {
            for (_, c, reason) in reasons {
                if !reason.is_pin_refusal() {
                    st.endpoints.entry((c.addr, c.transport)).or_default().backoff.on_failure(now);
                }
            }
        }
        let conn = match result.outcome {
            Ok(conn) => conn,
            Err(reasons) => {
                let why = if reasons.is_empty() {
                    "no candidates (every endpoint is backed off or none is configured)".to_string()
                } else {
                    reasons.iter().map(|(_, c, r)| format!("{} {r}", c.addr)).collect::<Vec<_>>().join(", ")
                };
                match kind {
                    RaceKind::Spare => st.spare_backoff.on_failure(now),
                    RaceKind::Primary => {
                        st.race_backoff.on_failure_capped(now, PRIMARY_RETRY_MAX);
                        st.race_failure = Some(why.clone());
                    }
                    RaceKind::Upgrade => {}
                }
                return Err(why);
            }
        };
        // A race was won: the network works.
        st.race_backoff.on_success();
        st.race_failure = None;
        let info = conn.info().clone();
        if let Some(h) = st.endpoints.get_mut(&(info.peer, info.transport)) {
            h.backoff.on_success();
            h.pin_mismatch = false;
        }
        let winner = Candidate { upstream: info.upstream, addr: info.peer, transport: info.transport };
        let usable = |c: &Option<Connection>| c.as_ref().is_some_and(|c| !c.is_closed());
        match kind {
            RaceKind::Spare => {
                // While the upstream keeps closing idle spares, a won race is no reason to
                // make the next one at once.
                if !st.spare_churning {
                    st.spare_backoff.on_success();
                }
                if usable(&st.spare) || st.primary.as_ref().is_some_and(|p| p.info().peer == info.peer) {
                    return Ok(conn); // surplus: dropped, so closed
                }
                info!(upstream = %info.upstream_name, ip = %info.peer.ip(), port = info.peer.port(), "warm spare up");
                st.spare = Some(conn.clone());
            }
            RaceKind::Upgrade
                if st.primary.as_ref().is_some_and(|p| {
                    !p.is_closed() && p.info().transport.preference() >= winner.transport.preference()
                }) =>
            {
                return Ok(conn); // someone else already got there
            }
            RaceKind::Primary | RaceKind::Upgrade => {
                if let Some(old) = st.primary.replace(conn.clone()) {
                    if old.info().transport.preference() < winner.transport.preference() {
                        info!(
                            upstream = %info.upstream_name,
                            ip = %info.peer.ip(),
                            port = info.peer.port(),
                            from = %old.info().transport,
                            to = %winner.transport,
                            "a better transport works again; replacing the connection"
                        );
                        // Closed now rather than left to idle out: on a censored network a
                        // DoH or plain connection kept open is one more flow to watch, and
                        // a query still on it is retried on the new one (`Pool::forward`).
                        old.close();
                    }
                }
                st.last_winner = Some(winner);
                match winner.transport {
                    Transport::Plain => warn!(
                        upstream = %info.upstream_name,
                        ip = %info.peer.ip(),
                        port = info.peer.port(),
                        "no TLS connection could be made: queries now go in CLEAR TEXT (opportunistic mode); retrying TLS in the background"
                    ),
                    Transport::Https => info!(
                        upstream = %info.upstream_name,
                        ip = %info.peer.ip(),
                        port = info.peer.port(),
                        "DNS over HTTPS won the race; retrying DNS over TLS in the background"
                    ),
                    Transport::Tls => {}
                }
                if winner.transport != Transport::Tls && !st.upgrade_running {
                    st.upgrade_running = true;
                    tokio::spawn(self.clone().upgrade_in_background());
                }
                self.refill_spare(&mut st);
            }
        }
        self.watch_connection(conn.clone());
        Ok(conn)
    }

    /// When a connection in use dies (not when it idles out), the spare takes over and a
    /// race for a replacement starts at once, so the next query does not pay for noticing.
    /// An idle connection the upstream closes is not replaced until a query wants it, and
    /// a spare it keeps closing is re-made only after a back-off (docs/soak.md, defect 5).
    /// The watch holds the pool weakly: a pool a reload replaced retires once nothing else
    /// holds it, instead of replacing each connection the upstream closes for ever (every
    /// replacement's watch held it alive again).
    fn watch_connection(self: &Arc<Self>, conn: Connection) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let opened = Instant::now();
            let reason = conn.closed().await;
            let Some(inner) = pool.upgrade() else { return };
            let mut st = inner.lock();
            let same =
                |c: &Option<Connection>| c.as_ref().is_some_and(|c| c.info().attempt == conn.info().attempt);
            let failed = matches!(reason, CloseReason::Failed(_));
            if same(&st.spare) {
                st.spare = None;
                match reason {
                    CloseReason::Failed(_) => inner.refill_spare(&mut st),
                    CloseReason::PeerIdle if opened.elapsed() < SPARE_KEPT_LONG_ENOUGH => {
                        st.spare_churning = true;
                        st.spare_backoff.on_failure(Instant::now());
                        info!(
                            upstream = %conn.info().upstream_name,
                            retry_in_ms = st.spare_backoff.until().map_or(0, |u| u.saturating_duration_since(Instant::now()).as_millis() as u64),
                            "the upstream closed the idle warm spare soon after it opened; backing off"
                        );
                    }
                    _ => {
                        st.spare_churning = false;
                        st.spare_backoff.on_success();
                    }
                }
                return;
            }
            if !same(&st.primary) {
                return;
            }
            st.primary = None;
            if failed {
                info!(reason = reason.as_str(), upstream = %conn.info().upstream_name, "connection lost; replacing it");
                if inner.usable_pair(&mut st).is_none() && st.race.is_none() {
                    inner.start_primary_race(&mut st);
                }
            }
        });
    }

    /// While the connection in use is plain text or DoH, keep racing for something better
    /// (see [`RaceKind::Upgrade`]) with back-off, until DoT is back.
    async fn upgrade_in_background(self: Arc<Self>) {
        let mut wait = UPGRADE_FIRST;
        loop {
            sleep(wait).await;
            let rx = {
                let mut st = self.lock();
                let below_tls = st
                    .primary
                    .as_ref()
                    .is_some_and(|p| !p.is_closed() && p.info().transport != Transport::Tls);
                if !below_tls {
                    break;
                }
                self.launch(&mut st, RaceKind::Upgrade)
            };
            let won = match rx {
                Some(mut rx) => loop {
                    if let RaceStatus::Done(r) = &*rx.borrow_and_update() {
                        break r.as_ref().ok().map(|c| c.info().transport);
                    }
                    if rx.changed().await.is_err() {
                        break None;
                    }
                },
                None => None,
            };
            if won == Some(Transport::Tls) {
                break;
            }
            wait = (wait * 2).min(UPGRADE_MAX);
        }
        self.lock().upgrade_running = false;
    }
}

/// Why queries fail at once, while the back-off after a failed primary race lasts: that
/// race's reason and when the next may start.
pub(super) fn backing_off(st: &PoolState) -> Option<String> {
    let now = Instant::now();
    match (st.race_backoff.available(now), &st.race_failure, st.race_backoff.until()) {
        (false, Some(why), Some(until)) => {
            let wait = until.saturating_duration_since(now).as_millis();
            Some(format!("{why} (racing again in {wait} ms)"))
        }
        _ => None,
    }
}
