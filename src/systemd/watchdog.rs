//! The watchdog: `WATCHDOG=1` only while the daemon still answers queries.
//!
//! A timer that pings unconditionally proves only that one tokio task runs. systemd's
//! watchdog is worth having when a ping means "a client would get an answer now", so
//! [`run_watchdog`] pings only after a health check passes within half the ping interval,
//! and [`probe`] is such a check: one real DNS query over UDP to one of our own listeners,
//! through the UDP front end, its request checks and whatever answers it. Any reply counts
//! (SERVFAIL and REFUSED included): the check is about our event loop and query path
//! being alive, not about upstreams being reachable, which would turn a network outage
//! into a restart loop.
//!
//! The probe asks for `resolver.arpa. SOA`. RFC 9462 §6.1 says forwarders should not
//! forward `resolver.arpa`; the front end answers that zone itself (NODATA), so the probe
//! never leaves the host and stays fast when every upstream is down.

use std::{
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::{
    net::UdpSocket,
    time::{Instant, MissedTickBehavior, interval, timeout_at},
};
use tracing::{info, warn};

use super::Notifier;

/// The name the probe asks for (RFC 9462 §6.1: never forwarded).
pub const PROBE_NAME: &str = "resolver.arpa.";

/// Why a probe got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe to {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("probe to {addr}: no answer within {} ms", .within.as_millis())]
    Timeout { addr: SocketAddr, within: Duration },
}

/// Pings the watchdog every `every` while `healthy()` resolves to `true` within
/// `every / 2`; skips the ping (and logs) otherwise. Runs until dropped or aborted: spawn
/// it after `READY=1` and abort it when shutdown starts.
///
/// With `every` = half of `WatchdogSec` (see [`Notifier::watchdog_interval`]), the
/// longest gap between two pings of a healthy daemon is 1.5 × `every` = ¾ `WatchdogSec`,
/// and a daemon whose check fails twice in a row is restarted by systemd.
pub async fn run_watchdog<F, Fut>(notifier: Arc<Notifier>, every: Duration, mut healthy: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut ticks = interval(every);
    // After a stall, do not burst: one check per tick.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let tick = ticks.tick().await;
        let passed = timeout_at(tick + every / 2, healthy()).await.unwrap_or(false);
        if passed {
            notifier.watchdog_ping();
            if failing {
                info!("watchdog: health check passes again; pinging");
                failing = false;
            }
        } else {
            warn!(
                budget_ms = (every / 2).as_millis() as u64,
                "watchdog: health check failed; not sending WATCHDOG=1"
            );
            failing = true;
        }
    }
}

/// Sends one DNS query (`resolver.arpa. IN SOA`, random ID) over UDP to `addr` and waits
/// up to `within` for a reply with that ID. Any RCODE counts as alive. An unspecified
/// listen address (`0.0.0.0`, `::`) is probed through the loopback address of its family.
pub async fn probe(addr: SocketAddr, within: Duration) -> Result<(), ProbeError> {
    let deadline = Instant::now() + within;
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    };
    let io_err = |source| ProbeError::Io { addr: target, source };
    let timed_out = || ProbeError::Timeout { addr: target, within };
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io_err)?;
    socket.connect(target).await.map_err(io_err)?;
    let id: u16 = rand::random();
    socket.send(&probe_query(id)).await.map_err(io_err)?;
    let mut buf = [0u8; 512];
    loop {
        let len =
            timeout_at(deadline, socket.recv(&mut buf)).await.map_err(|_| timed_out())?.map_err(io_err)?;
        if is_reply_to(&buf[..len], id) {
            return Ok(());
        }
    }
}

/// `resolver.arpa. IN SOA`, RD=1, no EDNS.
fn probe_query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QDCOUNT 1
    for label in PROBE_NAME.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 6, 0, 1]); // SOA, IN
    q
}

fn is_reply_to(wire: &[u8], id: u16) -> bool {
    wire.len() >= 12 && wire[..2] == id.to_be_bytes() && wire[2] & 0x80 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_query_is_well_formed() {
        let q = probe_query(0xbeef);
        let msg = hickory_proto::op::Message::from_vec(&q).expect("parses");
        assert_eq!(msg.metadata.id, 0xbeef);
        let [question] = msg.queries.as_slice() else { panic!("one question") };
        assert_eq!(question.name().to_ascii(), PROBE_NAME);
        assert_eq!(question.query_type(), hickory_proto::rr::RecordType::SOA);
        assert!(msg.metadata.recursion_desired);
    }

    #[test]
    fn only_a_response_with_our_id_counts() {
        let mut reply = probe_query(7);
        assert!(!is_reply_to(&reply, 7), "a query is not a reply");
        reply[2] |= 0x80;
        assert!(is_reply_to(&reply, 7));
        assert!(!is_reply_to(&reply, 8));
        assert!(!is_reply_to(&reply[..11], 7));
    }
}
