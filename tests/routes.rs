//! Per-domain routes (split DNS, issue 15 §2), end to end with in-process upstreams: a
//! route answers exactly its domains, the longest domain wins, a route beats a
//! locally-served name, a route-only upstream never serves other names (not even as a
//! spare or a hedge), and a `mode = "plain"` route goes over UDP, and TCP when truncated.

mod common;
mod support;

use std::{net::SocketAddr, time::Duration};

use common::{
    Fault, TestUpstream, UpstreamOptions,
    dns::{answer_strings, parse, query},
    udp_query,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};
use support::{Auth, Stub, UDP_WAIT, upstream_block};

/// An upstream block for `up` that answers only `domains`.
fn route_block(name: &str, up: &TestUpstream, domains: &[&str], dir: &tempfile::TempDir) -> String {
    let list: Vec<String> = domains.iter().map(|d| format!("{d:?}")).collect();
    format!("{}domains = [{}]\n", upstream_block(name, up, Auth::Pin(&up.leaf_key_pin), dir), list.join(", "))
}

/// A `mode = "plain"` block for a plain-DNS upstream (UDP and TCP on one port).
fn plain_block(name: &str, addr: SocketAddr, domains: &[&str]) -> String {
    let list: Vec<String> = domains.iter().map(|d| format!("{d:?}")).collect();
    format!(
        "[[upstream]]\nname = \"{name}\"\naddresses = [\"{}\"]\nmode = \"plain\"\nplain_port = {}\ndomains = [{}]\n",
        addr.ip(),
        addr.port(),
        list.join(", ")
    )
}

async fn plain_upstream() -> TestUpstream {
    TestUpstream::start(UpstreamOptions { tls: false, udp: true, ..Default::default() }).await
}

async fn ask(stub: &Stub, id: u16, name: &str, rtype: RecordType) -> Message {
    parse(&udp_query(stub.addr, &query(id, name, rtype), UDP_WAIT).await.expect("an answer"))
}

#[tokio::test]
async fn a_route_answers_its_domains_and_the_default_set_everything_else() {
    let default = TestUpstream::start(UpstreamOptions::default()).await;
    let corp = TestUpstream::start(UpstreamOptions::default()).await;
    let lab = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let blocks = upstream_block("default", &default, Auth::Pin(&default.leaf_key_pin), &dir)
        + &route_block("corp", &corp, &["corp.a.test"], &dir)
        + &route_block("lab", &lab, &["lab.corp.a.test"], &dir);
    let stub = Stub::start("", &blocks, dir).await;

    let a = ask(&stub, 1, "www.corp.a.test", RecordType::A).await;
    assert_eq!(answer_strings(&a), vec!["192.0.2.1".to_string()]);
    assert_eq!((corp.queries_received(), lab.queries_received(), default.queries_received()), (1, 0, 0));
    ask(&stub, 2, "corp.a.test", RecordType::A).await;
    assert_eq!(corp.queries_received(), 2, "the domain itself is routed");
    ask(&stub, 3, "host.lab.corp.a.test", RecordType::A).await;
    assert_eq!(lab.queries_received(), 1, "the longest domain wins");
    ask(&stub, 4, "www.xcorp.a.test", RecordType::A).await;
    ask(&stub, 5, "other.a.test", RecordType::A).await;
    assert_eq!(default.queries_received(), 2, "names outside every route go to the default set");
    assert_eq!((corp.queries_received(), lab.queries_received()), (2, 1));
}

#[tokio::test]
async fn a_route_beats_a_locally_served_name() {
    let default = TestUpstream::start(UpstreamOptions::default()).await;
    let router = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let blocks = upstream_block("default", &default, Auth::Pin(&default.leaf_key_pin), &dir)
        + &route_block("router", &router, &["home.arpa"], &dir);
    let stub = Stub::start("", &blocks, dir).await;
    let m = ask(&stub, 1, "printer.home.arpa", RecordType::A).await;
    assert_eq!(answer_strings(&m), vec!["192.168.1.9".to_string()], "the router's answer, not NXDOMAIN");
    assert_eq!(router.queries_received(), 1);
    // Other locally-served names are still answered here.
    let m = ask(&stub, 2, "box.local", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(default.queries_received() + router.queries_received(), 1);
}

#[tokio::test]
async fn a_route_only_upstream_never_serves_another_name_not_even_as_a_spare_or_hedge() {
    // The default set's only upstream never answers: a route-only upstream must not step in.
    let default = TestUpstream::with_fault(Fault::NeverAnswer).await;
    let corp = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let blocks = upstream_block("default", &default, Auth::Pin(&default.leaf_key_pin), &dir)
        + &route_block("corp", &corp, &["corp.a.test"], &dir);
    let stub = Stub::start("", &blocks, dir).await;
    let m = ask(&stub, 1, "www.a.test", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(corp.connections_accepted(), 0, "never raced, hedged to or kept as a spare");
    // Its own names still work.
    let m = ask(&stub, 2, "www.corp.a.test", RecordType::A).await;
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
}

#[tokio::test]
async fn upstreams_sharing_a_domain_share_its_route() {
    let default = TestUpstream::start(UpstreamOptions::default()).await;
    let silent = TestUpstream::with_fault(Fault::StopAnsweringAfter(0)).await;
    let good = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let blocks = upstream_block("default", &default, Auth::Pin(&default.leaf_key_pin), &dir)
        + &route_block("vpn1", &silent, &["corp.a.test"], &dir)
        + &route_block("vpn2", &good, &["corp.a.test"], &dir);
    let stub = Stub::start("", &blocks, dir).await;
    // The first query makes the route's connection (to the first listed, which never
    // answers) and its warm spare (to the second); from then on the hedge answers.
    ask(&stub, 9, "first.corp.a.test", RecordType::A).await;
    assert!(
        good.wait_for_connections(1, Duration::from_secs(5)).await,
        "the spare is the other route upstream"
    );
    for i in 0..3u16 {
        let m = ask(&stub, i, &format!("h{i}.corp.a.test"), RecordType::A).await;
        assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()], "query {i}");
    }
    assert!(good.queries_received() >= 1);
    assert_eq!(default.queries_received(), 0);
}

#[tokio::test]
async fn a_plain_route_asks_over_udp_and_over_tcp_when_truncated() {
    let default = TestUpstream::start(UpstreamOptions::default()).await;
    let router = plain_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let blocks = upstream_block("default", &default, Auth::Pin(&default.leaf_key_pin), &dir)
        + &plain_block("router", router.addr, &["lan.a.test", "big.test"]);
    let stub = Stub::start("", &blocks, dir).await;

    let m = ask(&stub, 1, "nas.lan.a.test", RecordType::A).await;
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
    assert_eq!(router.queries_received(), 1);
    assert_eq!(router.connections_accepted(), 0, "over UDP: no TLS attempt, no TCP connection");
    // Cleartext answers are unauthenticated: AD cleared, cached briefly.
    assert!(m.answers.iter().all(|r| r.ttl <= 60), "TTL capped for a cleartext answer");

    // Too big for UDP: the router truncates, stubborn asks again over TCP.
    let tcp = common::tcp_query(stub.addr, &query(2, "big.test", RecordType::TXT))
        .await
        .expect("an answer over TCP");
    let m = parse(&tcp);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(!m.answers.is_empty() && !m.metadata.truncation);
    assert_eq!(router.connections_accepted(), 1, "one TCP connection, after the truncated answer");
    assert_eq!(default.queries_received(), 0);
}

/// A resolv_conf upstream with `route_search = true` answers its file's search domains,
/// following the file as a VPN or DHCP rewrites it; everything else stays on the default.
#[tokio::test]
async fn the_search_domains_of_a_resolv_conf_follow_the_file() {
    let default = TestUpstream::start(UpstreamOptions::default()).await;
    // Not 127.0.0.1: the daemon listens there, and never takes its own address from a file.
    let bind: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let vpn =
        TestUpstream::start(UpstreamOptions { tls: false, udp: true, bind, ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resolv.conf");
    std::fs::write(&file, "nameserver 127.0.0.2\nsearch corp.a.test\n").unwrap();
    let blocks = upstream_block("default", &default, Auth::Pin(&default.leaf_key_pin), &dir)
        + &format!(
            "[[upstream]]\nname = \"vpn\"\nresolv_conf = \"{}\"\nmode = \"plain\"\nplain_port = {}\nroute_search = true\n",
            file.display(),
            vpn.addr.port()
        );
    let stub = Stub::start("", &blocks, dir).await;

    ask(&stub, 1, "intranet.corp.a.test", RecordType::A).await;
    ask(&stub, 2, "intranet.lab.a.test", RecordType::A).await;
    assert_eq!((vpn.queries_received(), default.queries_received()), (1, 1));

    // The VPN reconnects with another search domain (a new file renamed over the old).
    let next = stub.dir.path().join("resolv.conf.new");
    std::fs::write(&next, "nameserver 127.0.0.2\nsearch lab.a.test\n").unwrap();
    std::fs::rename(&next, &file).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let mut i = 0u16;
    loop {
        let before = vpn.queries_received();
        i += 1;
        ask(&stub, 10 + i, &format!("h{i}.lab.a.test"), RecordType::A).await;
        if vpn.queries_received() > before {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new search domain was never routed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = (vpn.queries_received(), default.queries_received());
    ask(&stub, 99, "again.corp.a.test", RecordType::A).await;
    assert_eq!(
        (vpn.queries_received(), default.queries_received()),
        (before.0, before.1 + 1),
        "the old one is not"
    );
}

/// The captive-portal policy (issue 15 §3): while no default upstream is connected, the
/// connectivity-check names alone go to the network's resolver (never cached, TTL 0);
/// every other name stays strict; once a default upstream connects, nothing more goes in
/// clear text.
#[tokio::test]
async fn connectivity_checks_reach_the_portal_only_while_the_default_set_is_down() {
    // "Port 853 blocked": every connection to the default upstream is reset for now.
    let default = TestUpstream::with_fault(Fault::ResetOnAccept).await;
    let bind: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let portal =
        TestUpstream::start(UpstreamOptions { tls: false, udp: true, bind, ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resolv.conf");
    std::fs::write(&file, "nameserver 127.0.0.2\n").unwrap();
    let blocks = upstream_block("default", &default, Auth::Pin(&default.leaf_key_pin), &dir)
        + &format!(
            "[[upstream]]\nname = \"hotel\"\nresolv_conf = \"{}\"\nmode = \"plain\"\nplain_port = {}\ncaptive_portal = true\n",
            file.display(),
            portal.addr.port()
        );
    let stub = Stub::start("", &blocks, dir).await;
    assert!(default.wait_for_connections(1, Duration::from_secs(5)).await, "the pre-warm race");

    let m = ask(&stub, 1, "detectportal.firefox.com", RecordType::A).await;
    assert_eq!(portal.queries_received(), 1, "the check went to the network's resolver");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "its answer, not a SERVFAIL");
    assert!(m.authorities.iter().all(|r| r.ttl == 0), "TTL 0: {:?}", m.authorities);
    ask(&stub, 2, "detectportal.firefox.com", RecordType::A).await;
    assert_eq!(portal.queries_received(), 2, "never cached");
    let m = ask(&stub, 3, "www.a.test", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "every other name stays strict");
    assert_eq!(portal.queries_received(), 2);

    // The user logged in: the default upstream is reachable again.
    default.set_fault(Fault::None);
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let mut i = 10u16;
    while ask(&stub, i, &format!("h{i}.a.test"), RecordType::A).await.metadata.response_code
        != ResponseCode::NoError
    {
        assert!(std::time::Instant::now() < deadline, "the default set never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
        i += 1;
    }
    let before = default.queries_received();
    ask(&stub, 99, "captive.apple.com", RecordType::A).await;
    assert_eq!(portal.queries_received(), 2, "nothing more in clear text");
    assert_eq!(default.queries_received(), before + 1);
}
