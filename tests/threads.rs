//! Serving threads (`server.threads`): one client's datagrams are spread over every
//! thread; a thread without a connection uses a sibling's instead of waiting (never one
//! from before a suspend), races for its own once that one is busy, and fails at once
//! while a sibling's race has just failed; one resolv.conf watch serves every pool; a
//! reload replaces every thread's pool; the threads stop with the daemon.

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
    tcp_query, udp_query,
};
use hickory_proto::rr::RecordType;
use stubborn::upstream::pool::{BUSY_IN_FLIGHT, Pool, group_connections, group_health, watch_resolv_conf};
use support::{Auth, Stub, UDP_WAIT, upstream_block};
use tokio::net::UdpSocket;

async fn two_threads(up: &TestUpstream) -> Stub {
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("up", up, Auth::Pin(&up.leaf_key_pin), &dir);
    Stub::start("threads = 2", &block, dir).await
}

/// Sends `names` one after another from one UDP socket (one source port) and returns the
/// answers' A records.
async fn ask_from_one_port(to: SocketAddr, names: &[String]) -> Vec<Vec<String>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(to).await.unwrap();
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 65535];
    for (i, name) in names.iter().enumerate() {
        sock.send(&query(i as u16, name, RecordType::A)).await.unwrap();
        let n = tokio::time::timeout(UDP_WAIT, sock.recv(&mut buf)).await.expect("an answer").unwrap();
        let m = parse(&buf[..n]);
        assert_eq!(m.metadata.id, i as u16);
        answers.push(answer_strings(&m));
    }
    answers
}

/// A group of two pools for `up` (no daemon around them).
fn group_of_two(up: &TestUpstream) -> Vec<Pool> {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n{}",
        upstream_block("up", up, Auth::Pin(&up.leaf_key_pin), &dir)
    );
    let config =
        stubborn::config::Config::from_toml(&text, stubborn::config::ConfigOrigin::Embedded).unwrap();
    Pool::group(&config, 2).unwrap()
}

/// The fake clocks' origin.
static CLOCK_START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// Waits (≤ 5 s) until `pool` has a connection of its own up.
async fn own_connection(pool: &Pool) -> stubborn::upstream::connection::Connection {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(conn) = pool.current() {
            return conn;
        }
        assert!(Instant::now() < deadline, "no connection of its own within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `names` from one UDP socket in two waves 100 ms apart, each all at once, then
/// collects every answer's A records. With slow answers, the second wave finds the
/// first one's queries in flight whatever the order the serving threads ran in.
async fn two_waves_from_one_port(to: SocketAddr, names: &[String]) -> Vec<Vec<String>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(to).await.unwrap();
    let half = names.len() / 2;
    for (i, name) in names.iter().enumerate() {
        if i == half {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sock.send(&query(i as u16, name, RecordType::A)).await.unwrap();
    }
    let mut answers = vec![Vec::new(); names.len()];
    let mut buf = vec![0u8; 65535];
    for _ in names {
        let n = tokio::time::timeout(UDP_WAIT, sock.recv(&mut buf)).await.expect("an answer").unwrap();
        let m = parse(&buf[..n]);
        answers[usize::from(m.metadata.id)] = answer_strings(&m);
    }
    answers
}

/// Puts BUSY_IN_FLIGHT queries in flight on `conn` (slow ones, with a delaying upstream)
/// and waits until they are; returns their tasks.
async fn make_busy(
    conn: &stubborn::upstream::connection::Connection,
) -> Vec<tokio::task::JoinHandle<Result<Vec<u8>, stubborn::upstream::connection::QueryError>>> {
    let slow: Vec<_> = (0..BUSY_IN_FLIGHT)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.query(query(i as u16, &fresh_a_name(), RecordType::A)).await })
        })
        .collect();
    while conn.in_flight() < BUSY_IN_FLIGHT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    slow
}

fn queries_sent(pool: &Pool) -> u64 {
    pool.stats().queries.load(Ordering::Relaxed)
}

#[tokio::test]
async fn a_quiet_daemon_keeps_one_connection_and_a_busy_one_gets_one_per_thread() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let mut stub = two_threads(&up).await;
    let pools = stub.daemon().pools();
    assert_eq!(pools.len(), 3, "one pool per serving thread, and TCP's");

    // One query at a time, from one source port. The kernel's hash alone would give that
    // port a single socket, so a single thread; steering spreads the datagrams over both.
    let names: Vec<String> = (0..48).map(|_| fresh_a_name()).collect();
    let answers = ask_from_one_port(stub.addr, &names).await;
    assert!(answers.iter().all(|a| a == &["192.0.2.1"]), "{answers:?}");
    let sent: Vec<u64> = pools.iter().map(queries_sent).collect();
    assert!(sent[0] > 0 && sent[1] > 0, "queries per pool: {sent:?}");
    assert_eq!(sent[0] + sent[1], names.len() as u64, "queries per pool: {sent:?}");
    // Never more than one in flight: TCP's pool raced at start (pre-warming) and owns the
    // connection, both serving threads use it, so the upstream sees one connection.
    assert_eq!(up.connections_accepted(), 1);
    let owners: Vec<usize> = (0..pools.len()).filter(|&i| pools[i].current().is_some()).collect();
    assert_eq!(owners, [2]);

    // Answers slowed down, 128 queries in two waves: the connection is busy, so each
    // thread races for one of its own.
    up.set_fault(Fault::Delay(Duration::from_secs(1)));
    // A thread whose sibling won its own race first uses that new connection until it is
    // busy too (Pool::connections); on a loaded machine that can take one more round of
    // waves before the second thread races. At most three rounds.
    for round in 0..3 {
        let names: Vec<String> = (0..128).map(|_| fresh_a_name()).collect();
        let answers = two_waves_from_one_port(stub.addr, &names).await;
        assert!(answers.iter().all(|a| a == &["192.0.2.1"]), "round {round}: {answers:?}");
        if pools[0].current().is_some() && pools[1].current().is_some() {
            break;
        }
    }
    let (first, second) = (own_connection(&pools[0]).await, own_connection(&pools[1]).await);
    assert_ne!(first.info().attempt, second.info().attempt, "the threads share a connection");
    assert_eq!(up.connections_accepted(), 3);
    // The pools share TLS settings, so the later handshakes resumed the first's session.
    assert_eq!(up.handshakes_resumed(), 2);

    // Status and metrics read the group as a whole (TCP's connection idles out later).
    let health = group_health(&pools);
    assert_eq!((health.up, health.total), (1, 1));
    assert!(health.via.is_some());
    let connections = group_connections(&pools);
    assert_eq!((connections.len(), connections[0].tls), (1, 3), "{connections:?}");

    // TCP is answered too, through its own pool.
    up.set_fault(Fault::None);
    let m = parse(&tcp_query(stub.addr, &query(7, &fresh_a_name(), RecordType::A)).await.unwrap());
    assert_eq!(answer_strings(&m), ["192.0.2.1"]);
    assert_eq!(queries_sent(&pools[2]), 1);
    stub.shutdown().await;
}

#[tokio::test]
async fn a_pool_without_a_connection_uses_a_siblings_and_races_once_it_is_busy() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let pools = group_of_two(&up);
    let (mine, _) = pools[0].connections().await.expect("the first pool races and connects");
    // The second pool has no connection: it uses the first's, at once and without a race
    // of its own while that connection is idle.
    let (borrowed, hedge) = pools[1].connections().await.expect("a sibling's connection");
    assert_eq!(borrowed.info().attempt, mine.info().attempt);
    assert!(hedge.is_none(), "one address: no spare");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(pools[1].current().is_none());
    assert_eq!(up.connections_accepted(), 1);

    // Busy: BUSY_IN_FLIGHT slow queries on it. The next look races, still answering
    // with the sibling's connection meanwhile.
    up.set_fault(Fault::Delay(Duration::from_secs(1)));
    let slow = make_busy(&mine).await;
    let (borrowed, _) = pools[1].connections().await.unwrap();
    assert_eq!(borrowed.info().attempt, mine.info().attempt);
    let own = own_connection(&pools[1]).await;
    assert_ne!(own.info().attempt, mine.info().attempt);
    let (next, _) = pools[1].connections().await.unwrap();
    assert_eq!(next.info().attempt, own.info().attempt, "from then on its own");
    assert_eq!(up.connections_accepted(), 2);
    for query in slow {
        query.await.unwrap().expect("the slow queries are answered");
    }
}

#[tokio::test]
async fn after_a_suspend_a_siblings_connection_is_not_lent() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let pools = group_of_two(&up);
    let slept = Arc::new(AtomicU64::new(0));
    let clock = slept.clone();
    pools[0].set_sleep_clock(Arc::new(move || {
        let mono = Duration::from_secs(1000) + Duration::from_nanos(CLOCK_START.elapsed().as_nanos() as u64);
        (mono, mono + Duration::from_secs(clock.load(Ordering::SeqCst)))
    }));
    let (mine, _) = pools[0].connections().await.unwrap();
    // An hour passes on the boot-time clock only: the lender was asleep. The borrower
    // makes it look before lending, so the old connection is closed, not lent.
    slept.store(3600, Ordering::SeqCst);
    let (conn, _) = pools[1].connections().await.unwrap();
    assert_ne!(conn.info().attempt, mine.info().attempt, "a connection from before the suspend was lent");
    assert!(mine.is_closed());
    assert_eq!(pools[0].stats().suspends.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn while_a_siblings_race_has_just_failed_a_pool_fails_at_once_with_its_reason() {
    // Nothing listens on the port: every attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[[upstream]]\nname = \"down\"\n\
         addresses = [\"127.0.0.1\"]\ntls_port = {port}\n\
         pins = [\"key-fp:SHA256:INSZEZpDoWKiavosV2/xVT8O83vk/RRwS+LTiL+IpHs=\"]\n"
    );
    let config =
        stubborn::config::Config::from_toml(&text, stubborn::config::ConfigOrigin::Embedded).unwrap();
    let pools = Pool::group(&config, 2).unwrap();
    let Err(first) = pools[0].connections().await else { panic!("the race succeeded") };
    assert!(!first.contains("racing again"), "{first}");
    // The second pool does not race to learn the same: it fails with the first's reason
    // and the time to its next race.
    let Err(second) = pools[1].connections().await else { panic!("the second pool connected") };
    assert!(second.contains("racing again in"), "{second}");
    assert!(second.contains(&format!("127.0.0.1:{port} rst")), "{second}");
}

#[tokio::test]
async fn one_resolv_conf_watch_gives_every_pool_the_new_nameservers() {
    let up =
        TestUpstream::start(UpstreamOptions { bind: "127.0.0.2:0".parse().unwrap(), ..Default::default() })
            .await;
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    // At first only our own address: skipped, so no nameserver to use.
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[[upstream]]\nresolv_conf = \"{}\"\n\
         tls_port = {}\npins = [\"{}\"]\n",
        resolv.display(),
        up.addr.port(),
        up.leaf_key_pin
    );
    let config =
        stubborn::config::Config::from_toml(&text, stubborn::config::ConfigOrigin::Embedded).unwrap();
    let pools = Pool::group(&config, 3).unwrap();
    watch_resolv_conf(&pools, &config.server.listen);
    assert!(pools.iter().all(|p| p.health().up == 0), "no address yet");

    std::fs::write(&resolv, "nameserver 127.0.0.2\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pools.iter().all(|p| p.health().up == 1) {
        assert!(Instant::now() < deadline, "not every pool got the new nameserver within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (conn, _) = pools[2].connections().await.expect("the new nameserver answers");
    assert_eq!(conn.info().peer, up.addr);
}

#[tokio::test]
async fn serving_threads_stop_with_the_daemon_and_a_reload_replaces_every_pool() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let mut stub = two_threads(&up).await;
    let names: Vec<String> = (0..8).map(|_| fresh_a_name()).collect();
    ask_from_one_port(stub.addr, &names).await;
    let before = stub.daemon().pools();

    // A reload that asks for 3 threads: that needs a restart, so the new pools are made
    // for the 2 threads still serving (and TCP), now and on the next reload.
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nthreads = 3\n{}",
        upstream_block("up", &up, Auth::Pin(&up.leaf_key_pin), &stub.dir)
    );
    let config =
        stubborn::config::Config::from_toml(&text, stubborn::config::ConfigOrigin::Embedded).unwrap();
    stub.daemon().reload(config.clone()).unwrap();
    stub.daemon().reload(config).unwrap();
    let after = stub.daemon().pools();
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(|p| p.stats().queries.load(Ordering::Relaxed) == 0), "new pools");
    let names: Vec<String> = (0..16).map(|_| fresh_a_name()).collect();
    ask_from_one_port(stub.addr, &names).await;
    let sent: u64 = after.iter().map(|p| p.stats().queries.load(Ordering::Relaxed)).sum();
    assert_eq!(sent, 16, "every miss after the reload went out on the new pools");
    drop(before);

    let addr = stub.addr;
    tokio::time::timeout(Duration::from_secs(5), stub.shutdown()).await.expect("the threads stop");
    // Nothing serves the port any more.
    assert!(udp_query(addr, &query(1, "a.test", RecordType::A), Duration::from_millis(300)).await.is_err());
}

/// docs/soak.md defect 6: a query lost to a connection reset under it goes to a connection
/// to another server, never a second time to the same one. With both threads' connections
/// to one server being reset, a thread whose own spare was not up yet retried on its
/// sibling's connection to that server and answered SERVFAIL, with the sibling's healthy
/// spare up.
#[tokio::test]
async fn a_query_reset_under_it_is_not_retried_on_another_connection_to_the_same_server() {
    let resetting = TestUpstream::start(UpstreamOptions::default()).await;
    let good = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n{}{}",
        upstream_block("resetting", &resetting, Auth::Pin(&resetting.leaf_key_pin), &dir),
        upstream_block("good", &good, Auth::Pin(&good.leaf_key_pin), &dir),
    );
    let config =
        stubborn::config::Config::from_toml(&text, stubborn::config::ConfigOrigin::Embedded).unwrap();
    let pools = Pool::group(&config, 2).unwrap();
    let (mine, _) = pools[0].connections().await.expect("the first pool races and connects");
    assert_eq!(mine.info().upstream_name.as_ref(), "resetting", "the first upstream wins the race");
    // Both pools get their own connection to it (the second once the first's is busy),
    // and a spare to the other server.
    resetting.set_fault(Fault::Delay(Duration::from_millis(500)));
    let slow = make_busy(&mine).await;
    pools[1].connections().await.unwrap();
    let theirs = own_connection(&pools[1]).await;
    assert_eq!(theirs.info().upstream_name.as_ref(), "resetting");
    for query in slow {
        query.await.unwrap().expect("the slow queries are answered");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pools[0].spare().is_none() || pools[1].spare().is_none() {
        assert!(Instant::now() < deadline, "no warm spares within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Now the server resets every connection that sends it a query; the second pool's
    // spare is gone (its replacement is still racing when the query is lost).
    resetting.set_fault(Fault::ResetOnQuery);
    pools[1].spare().unwrap().close();
    let wire = query(7, &fresh_a_name(), RecordType::A);
    let client_query = stubborn::message::ClientQuery {
        id: 7,
        query: hickory_proto::op::Message::from_vec(&wire).unwrap().queries[0].clone(),
        recursion_desired: true,
        checking_disabled: false,
        authentic_data: false,
        edns: None,
        bypass_cache: false,
    };
    let (answer, conn) = pools[1].forward(&client_query).await.expect("answered by the other server");
    assert_eq!(conn.info().upstream_name.as_ref(), "good");
    assert_eq!(answer_strings(&parse(&answer)), vec!["192.0.2.1".to_string()]);
}
