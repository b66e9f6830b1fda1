//! Losing race attempts must never leak file descriptors: 1000 races, each with a loser
//! that is mid-handshake when the winner wins, and /proc/self/fd counted before and after.
//! Its own test binary, so no other test's sockets come and go in the same process.

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use common::{Fault, TestUpstream, UpstreamOptions};
use stubborn::{
    config::{Config, ConfigOrigin},
    upstream::{
        connection::ConnectionLimits,
        connector::{AttemptContext, drive_race},
        race::{Race, RaceConfig, UpstreamAddrs, order_candidates},
    },
};

fn pinned_block(name: &str, addr: SocketAddr, pin: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\naddresses = [\"{}\"]\ntls_port = {}\npins = [\"{pin}\"]\n",
        addr.ip(),
        addr.port()
    )
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_races_with_losers_leak_no_descriptors() {
    let stalled = TestUpstream::with_fault(Fault::StallHandshake).await;
    let good = TestUpstream::start(UpstreamOptions::default()).await;
    let text = pinned_block("stalled", stalled.addr, &good.leaf_key_pin)
        + &pinned_block("good", good.addr, &good.leaf_key_pin);
    let config = Config::from_toml(&text, ConfigOrigin::Embedded).unwrap();
    let limits = ConnectionLimits {
        idle_timeout: Duration::from_secs(10),
        max_inflight: 16,
        dead: stubborn::upstream::health::DeadPolicy { unanswered: 3, silence: Duration::from_secs(2) },
    };
    let contexts: Arc<[AttemptContext]> =
        config.upstreams.iter().map(|u| AttemptContext::new(u, limits).unwrap()).collect();
    let addrs: Vec<UpstreamAddrs<'_>> = config
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| UpstreamAddrs {
            upstream: i,
            addresses: &u.addresses,
            tls_port: u.tls_port,
            plain_port: u.plain_port,
            https_port: u.https.as_ref().map(|h| h.port),
            allow_plain: false,
        })
        .collect();
    let (tls, _) = order_candidates(&addrs, None);
    let cfg = RaceConfig { attempt_delay: Duration::from_millis(10), ..RaceConfig::default() };

    let race_once = |first_id| {
        let race = Race::new(tls.clone(), Vec::new(), cfg, first_id, tokio::time::Instant::now());
        drive_race(race, contexts.clone())
    };
    // Warm up (lazy statics, the runtime's own descriptors), then count.
    race_once(1).await.outcome.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = open_fds();
    let mut next = 10;
    for _ in 0..1000 {
        let result = race_once(next).await;
        next = result.next_id;
        let conn = result.outcome.expect("the good upstream wins");
        assert_eq!(conn.info().upstream, 1);
    }
    // Give the losers' and winners' tasks (ours and the test upstreams') a moment to close.
    let mut after = open_fds();
    for _ in 0..50 {
        if after <= before + 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = open_fds();
    }
    assert!(after <= before + 4, "descriptors leaked: {before} before, {after} after 1000 races");
    assert!(stalled.connections_accepted() >= 1000, "every race had a stalled loser");
}
