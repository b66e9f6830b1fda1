//! Racing before a query needs it (issue 15 §4): at start and after a resume the pool
//! races at once, so the first query finds a connection; one pool of a group does it and
//! the others borrow; a failed pre-warm race backs off like a query's.

mod common;
mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    Fault, TestUpstream, UpstreamOptions,
    dns::{answer_strings, fresh_a_name, parse, query},
    udp_query,
};
use hickory_proto::{
    op::Message,
    rr::{RecordType, rdata::opt::EdnsOption},
};
use stubborn::upstream::pool::group_connections;
use support::{Stub, UDP_WAIT};

fn pinned_block(name: &str, addr: SocketAddr, pin: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\naddresses = [\"{}\"]\ntls_port = {}\npins = [\"{pin}\"]\n",
        addr.ip(),
        addr.port()
    )
}

async fn ask(stub: &Stub, id: u16) -> Message {
    parse(&udp_query(stub.addr, &query(id, &fresh_a_name(), RecordType::A), UDP_WAIT).await.unwrap())
}

/// Polls `done` every 10 ms for at most `within`; true once it holds.
async fn eventually(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// The EDE (RFC 8914) text of an answer.
fn ede_text(m: &Message) -> Option<String> {
    match m.edns.as_ref()?.options().get(hickory_proto::rr::rdata::opt::EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(15, data) => Some(String::from_utf8_lossy(&data[2..]).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn at_start_the_upstream_sees_a_connection_before_any_query() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = Stub::pinned(&up).await;
    assert!(up.wait_for_connections(1, Duration::from_secs(5)).await, "no connection before a query");
    assert_eq!(up.queries_received(), 0);
    assert!(eventually(Duration::from_secs(5), || stub.pool().current().is_some()).await);
    // The first query uses it: no second connection.
    assert_eq!(answer_strings(&ask(&stub, 1).await), ["192.0.2.1"]);
    assert_eq!(up.connections_accepted(), 1);
}

#[tokio::test]
async fn with_a_silent_first_address_the_first_query_does_not_pay_the_attempt_delay() {
    // The first upstream accepts and never answers the handshake (as an address that
    // drops packets costs one attempt delay); the second is healthy.
    let silent = TestUpstream::with_fault(Fault::StallHandshake).await;
    let good = TestUpstream::start(UpstreamOptions::default()).await;
    let delay = Duration::from_millis(2000);
    let blocks = format!("[racing]\nattempt_delay_ms = {}\n", delay.as_millis())
        + &pinned_block("silent", silent.addr, &silent.leaf_key_pin)
        + &pinned_block("good", good.addr, &good.leaf_key_pin);
    let stub = Stub::start("", &blocks, tempfile::tempdir().unwrap()).await;
    // Before any query: the race ran, paid the delay and connected to the healthy one.
    let ready = || {
        stub.pool()
            .current()
            .is_some_and(|c| c.info().peer == good.addr && c.info().upstream_name.as_ref() == "good")
    };
    assert!(eventually(Duration::from_secs(10), ready).await, "no connection before the first query");
    assert!(silent.connections_accepted() >= 1, "the silent one was tried first");
    let started = Instant::now();
    assert_eq!(answer_strings(&ask(&stub, 1).await), ["192.0.2.1"]);
    assert!(started.elapsed() < delay, "the first query waited {:?}", started.elapsed());
    assert_eq!(good.queries_received(), 1);
    assert_eq!(good.connections_accepted(), 1);
}

#[tokio::test]
async fn after_a_resume_a_new_connection_is_raced_without_a_query() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = Stub::pinned(&up).await;
    assert!(up.wait_for_connections(1, Duration::from_secs(5)).await);
    let first = {
        let pool = stub.pool();
        assert!(eventually(Duration::from_secs(5), || pool.current().is_some()).await);
        pool.current().unwrap()
    };
    // A fake clock pair: `slept` seconds pass on the boot-time clock only.
    let (slept, reads) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (clock, counter) = (slept.clone(), reads.clone());
    let origin = Instant::now();
    stub.pool().set_sleep_clock(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let mono = Duration::from_secs(1000) + origin.elapsed();
        (mono, mono + Duration::from_secs(clock.load(Ordering::SeqCst)))
    }));
    // The background check takes its first reading; then an hour passes asleep.
    assert!(eventually(Duration::from_secs(5), || reads.load(Ordering::SeqCst) >= 1).await);
    slept.store(3600, Ordering::SeqCst);
    assert!(
        up.wait_for_connections(2, Duration::from_secs(5)).await,
        "no new connection after the resume without a query"
    );
    assert!(first.is_closed(), "the connection from before the suspend was closed");
    assert_eq!(stub.pool().stats().suspends.load(Ordering::Relaxed), 1);
    assert_eq!(up.queries_received(), 0);
    let pool = stub.pool();
    assert!(eventually(Duration::from_secs(5), || pool.current().is_some_and(|c| !c.is_closed())).await);
}

#[tokio::test]
async fn with_several_threads_one_pool_pre_warms_and_the_others_borrow() {
    let a = TestUpstream::start(UpstreamOptions::default()).await;
    let b = TestUpstream::start(UpstreamOptions::default()).await;
    let blocks = pinned_block("a", a.addr, &a.leaf_key_pin) + &pinned_block("b", b.addr, &b.leaf_key_pin);
    let mut stub = Stub::start("threads = 2", &blocks, tempfile::tempdir().unwrap()).await;
    // The primary and its warm spare.
    assert!(a.wait_for_connections(1, Duration::from_secs(5)).await, "no primary before a query");
    assert!(b.wait_for_connections(1, Duration::from_secs(5)).await, "no spare before a query");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((a.connections_accepted(), b.connections_accepted()), (1, 1), "more than one pool raced");
    let pools = stub.daemon().pools();
    assert_eq!(pools.len(), 3);
    let owners: Vec<usize> = (0..pools.len()).filter(|&i| pools[i].current().is_some()).collect();
    assert_eq!(owners, [2], "TCP's pool (on the main runtime) pre-warms");
    let tls: usize = group_connections(&pools).iter().map(|c| c.tls).sum();
    assert_eq!(tls, 2);
    // The serving threads borrow it: still one connection and its spare.
    for id in 0..8 {
        assert_eq!(answer_strings(&ask(&stub, id).await), ["192.0.2.1"]);
    }
    assert_eq!((a.connections_accepted(), b.connections_accepted()), (1, 1));
    stub.shutdown().await;
}

#[tokio::test]
async fn a_failed_pre_warm_race_backs_off_like_a_querys_and_does_not_retry_alone() {
    // The upstream resets every connection: the pre-warm race fails.
    let up = TestUpstream::with_fault(Fault::ResetOnAccept).await;
    let stub = Stub::pinned(&up).await;
    assert!(up.wait_for_connections(1, Duration::from_secs(5)).await, "no pre-warm race");
    let pool = stub.pool();
    assert!(eventually(Duration::from_secs(5), || pool.health().up == 0).await, "the race did not fail");
    // The first query fails at once with that race's reason and its back-off.
    let m = ask(&stub, 1).await;
    let text = ede_text(&m).expect("an EDE");
    assert!(text.contains("racing again in"), "{text}");
    // Nothing races again by itself while no query asks (no loop on a dead network).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(up.connections_accepted(), 1);
}

#[tokio::test]
async fn a_pool_without_a_connection_joins_a_siblings_race_instead_of_starting_its_own() {
    // A silent first upstream makes the race last one attempt delay.
    let silent = TestUpstream::with_fault(Fault::StallHandshake).await;
    let good = TestUpstream::start(UpstreamOptions::default()).await;
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[racing]\nattempt_delay_ms = 500\n".to_string()
        + &pinned_block("silent", silent.addr, &silent.leaf_key_pin)
        + &pinned_block("good", good.addr, &good.leaf_key_pin);
    let config =
        stubborn::config::Config::from_toml(&text, stubborn::config::ConfigOrigin::Embedded).unwrap();
    let pools = stubborn::upstream::pool::Pool::group(&config, 2).unwrap();
    let racing = pools[0].clone();
    let first = tokio::spawn(async move { racing.connections().await });
    // The first pool's race is under way (its first attempt reached the silent one).
    assert!(silent.wait_for_connections(1, Duration::from_secs(5)).await);
    let (joined, _) = pools[1].connections().await.expect("the sibling's race connects");
    let (theirs, _) = first.await.unwrap().unwrap();
    assert_eq!(joined.info().attempt, theirs.info().attempt, "the second pool raced on its own");
    assert!(pools[1].current().is_none());
    assert_eq!(good.connections_accepted(), 1);
}

#[tokio::test]
async fn after_a_resolv_conf_change_the_new_nameservers_are_raced_without_a_query() {
    // The network's resolver, on another loopback address than the stub's own 127.0.0.1
    // (which resolv.conf loop protection skips).
    let up =
        TestUpstream::start(UpstreamOptions { bind: "127.0.0.2:0".parse().unwrap(), ..Default::default() })
            .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    // At first a server where nothing listens: the start race fails.
    std::fs::write(&path, "nameserver 127.0.0.3\n").unwrap();
    let block = format!(
        "[[upstream]]\nresolv_conf = {:?}\ntls_port = {}\nplain_port = {closed}\n",
        path.display().to_string(),
        up.addr.port()
    );
    let stub = Stub::start("", &block, dir).await;
    let pool = stub.pool();
    assert!(
        eventually(Duration::from_secs(5), || pool.health().up == 0).await,
        "the start race did not fail"
    );
    // DHCP hands out a new resolver: the pool races it at once, before any query.
    std::fs::write(&path, "# new network\nnameserver 127.0.0.2\n").unwrap();
    assert!(up.wait_for_connections(1, Duration::from_secs(8)).await, "the new nameserver was not raced");
    assert!(
        eventually(Duration::from_secs(5), || pool.current().is_some_and(|c| c.info().peer == up.addr)).await
    );
    assert_eq!(up.queries_received(), 0);
}

/// Issue 15 §4: after a network change (`stubborn::netwatch` calls this on an address,
/// route or link change) every connection is suspect: it is closed, back-offs end, and
/// the group races at once, so the next query does not wait on a connection that died
/// silently with the old network.
#[tokio::test]
async fn after_a_network_change_connections_are_replaced_and_back_offs_end() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = Stub::pinned(&up).await;
    assert!(up.wait_for_connections(1, Duration::from_secs(5)).await);
    let pools = stub.pools();
    let old = eventually(Duration::from_secs(5), || pools[0].current().is_some()).await;
    assert!(old, "the pre-warm connection");
    let old = pools[0].current().unwrap();
    stubborn::upstream::pool::network_changed(&pools);
    assert!(
        eventually(Duration::from_secs(1), || old.is_closed()).await,
        "the old connection is closed at once"
    );
    assert!(up.wait_for_connections(2, Duration::from_secs(5)).await, "and a new one raced without a query");
    assert_eq!(answer_strings(&ask(&stub, 1).await), vec!["192.0.2.1".to_string()]);

    // A failed race's back-off ends too: the upstream resets every connection now.
    up.set_fault(Fault::ResetOnAccept);
    stubborn::upstream::pool::suspect_connections(&pools);
    let text = ede_text(&ask(&stub, 2).await).expect("an EDE");
    assert!(!text.contains("racing again in"), "the first failure: {text}");
    let text = ede_text(&ask(&stub, 3).await).expect("an EDE");
    assert!(text.contains("racing again in"), "backing off: {text}");
    let before = up.connections_accepted();
    stubborn::upstream::pool::network_changed(&pools);
    assert!(
        eventually(Duration::from_secs(5), || up.connections_accepted() > before).await,
        "a new network: raced again at once, back-off or not"
    );
}
