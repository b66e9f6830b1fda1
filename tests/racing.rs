//! Happy-eyeballs racing end to end over real loopback sockets: stalled and refused
//! endpoints, replacing a dead connection at once, plain-text policy, and no descriptor
//! leaks from losing attempts. (Timing itself is measured in benches/, not asserted here.)

mod common;
mod support;

use std::{net::SocketAddr, time::Duration};

use common::{
    Fault, TestUpstream, UpstreamOptions,
    dns::{answer_strings, parse, query},
    udp_query,
};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use support::{Stub, UDP_WAIT};

fn pinned_block(name: &str, addr: SocketAddr, pin: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\naddresses = [\"{}\"]\ntls_port = {}\npins = [\"{pin}\"]\n",
        addr.ip(),
        addr.port()
    )
}

/// A loopback TCP port with nothing listening: connecting gets an RST.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Asks for a fresh name the test zone answers with 192.0.2.1: never a cache hit.
async fn ask_a(stub: &Stub) -> hickory_proto::op::Message {
    let name = common::dns::fresh_a_name();
    parse(&udp_query(stub.addr, &query(1, &name, RecordType::A), UDP_WAIT).await.unwrap())
}
#[tokio::test]
async fn a_stalled_first_upstream_loses_to_the_second() {
    let stalled = TestUpstream::with_fault(Fault::StallHandshake).await;
    let good = TestUpstream::start(UpstreamOptions::default()).await;
    let blocks = pinned_block("stalled", stalled.addr, &stalled.leaf_key_pin)
        + &pinned_block("good", good.addr, &good.leaf_key_pin);
    let stub = Stub::start("", &blocks, tempfile::tempdir().unwrap()).await;
    let m = ask_a(&stub).await;
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
    assert_eq!(good.queries_received(), 1);
    // The first attempt went to the stalled upstream (and the warm-spare race may try it
    // again in the background).
    assert!(stalled.connections_accepted() >= 1);
    assert_eq!(stalled.handshakes_completed(), 0);
}

#[tokio::test]
async fn a_refused_first_upstream_costs_nothing() {
    let good = TestUpstream::start(UpstreamOptions::default()).await;
    let blocks = pinned_block("refused", closed_port(), &good.leaf_key_pin)
        + &pinned_block("good", good.addr, &good.leaf_key_pin);
    let stub = Stub::start("", &blocks, tempfile::tempdir().unwrap()).await;
    assert_eq!(answer_strings(&ask_a(&stub).await), vec!["192.0.2.1".to_string()]);
}

#[tokio::test]
async fn a_pin_mismatch_is_a_lost_attempt_and_the_next_upstream_wins() {
    let impostor = TestUpstream::start(UpstreamOptions::default()).await;
    let good = TestUpstream::start(UpstreamOptions::default()).await;
    // The impostor is pinned to the good server's key, which it does not have.
    let blocks = pinned_block("impostor", impostor.addr, &good.leaf_key_pin)
        + &pinned_block("good", good.addr, &good.leaf_key_pin);
    let stub = Stub::start("", &blocks, tempfile::tempdir().unwrap()).await;
    assert_eq!(answer_strings(&ask_a(&stub).await), vec!["192.0.2.1".to_string()]);
    assert_eq!(impostor.queries_received(), 0);
}

#[tokio::test]
async fn a_dead_connection_is_replaced_before_the_next_query() {
    // Reset after the answer: a death, not a clean close of an idle connection (which is
    // re-made when a query wants it: tests/resilience.rs).
    let up = TestUpstream::with_fault(Fault::ResetAfter(1)).await;
    let stub = Stub::pinned(&up).await;
    assert_eq!(answer_strings(&ask_a(&stub).await), vec!["192.0.2.1".to_string()]);
    // No query is sent: the new race starts because the connection died.
    assert!(up.wait_for_connections(2, Duration::from_secs(5)).await, "replacement raced at once");
    assert_eq!(answer_strings(&ask_a(&stub).await), vec!["192.0.2.1".to_string()]);
}

#[tokio::test]
async fn after_an_idle_close_the_next_query_races_again() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let block = pinned_block("up", up.addr, &up.leaf_key_pin);
    let stub = Stub::start("[connection]\nidle_timeout_ms = 100\n", &block, dir).await;
    ask_a(&stub).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(up.connections_accepted(), 1, "an idle close is not replaced eagerly");
    assert_eq!(answer_strings(&ask_a(&stub).await), vec!["192.0.2.1".to_string()]);
    assert_eq!(up.connections_accepted(), 2);
}

/// One opportunistic or strict upstream whose TLS port refuses and whose plain port answers.
async fn tls_refused_plain_open(mode: &str) -> (Stub, TestUpstream, SocketAddr) {
    let plain = TestUpstream::start(UpstreamOptions { tls: false, ..Default::default() }).await;
    let tls_addr = closed_port();
    let dir = tempfile::tempdir().unwrap();
    // Strict needs something to authenticate; opportunistic encrypts without it (RFC 8310 §5).
    let auth = if mode == "strict" {
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &plain.ca_pem).unwrap();
        format!("tls_name = \"dns.test\"\nca_file = \"{}\"\n", ca.display())
    } else {
        String::new()
    };
    let block = format!(
        "[[upstream]]\nname = \"net\"\naddresses = [\"127.0.0.1\"]\ntls_port = {}\nplain_port = {}\nmode = \"{mode}\"\n{auth}",
        tls_addr.port(),
        plain.addr.port()
    );
    (Stub::start("", &block, dir).await, plain, tls_addr)
}

#[tokio::test]
async fn strict_mode_never_sends_a_query_in_clear_text() {
    let (stub, plain, _) = tls_refused_plain_open("strict").await;
    assert_eq!(ask_a(&stub).await.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(plain.connections_accepted(), 0, "no connection to the plain port at all");
}

#[tokio::test]
async fn opportunistic_falls_back_to_plain_then_returns_to_tls() {
    let (stub, plain, tls_addr) = tls_refused_plain_open("opportunistic").await;
    assert_eq!(answer_strings(&ask_a(&stub).await), vec!["192.0.2.1".to_string()]);
    assert_eq!(plain.queries_received(), 1, "answered in clear text");
    // TLS comes back on the same address: the background TLS race replaces plain text.
    let tls = TestUpstream::start(UpstreamOptions { bind: tls_addr, ..Default::default() }).await;
    assert!(tls.wait_for_connections(1, Duration::from_secs(10)).await, "TLS re-raced in the background");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(answer_strings(&ask_a(&stub).await), vec!["192.0.2.1".to_string()]);
    assert_eq!(tls.queries_received(), 1, "back on TLS");
    assert_eq!(plain.queries_received(), 1);
}
