//! Answers that do not claim more than stubborn knows (issue 13 §3), end to end on
//! loopback: AD and TTLs from upstreams that authenticated nothing, and upstream error
//! answers that carry no question.

mod common;
mod support;

use std::{net::SocketAddr, time::Duration};

use common::{
    Fault, TestUpstream, UpstreamOptions,
    dns::{QueryOptions, answer_strings, build_query, parse},
    udp_query,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RecordType, rdata::opt::EdnsOption},
};
use stubborn::cache::UNAUTHENTICATED_MAX_TTL;
use support::{Stub, UDP_WAIT};

/// A port nothing listens on: connecting gets an RST.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Asks for `ad.test` A with DO set: a validating upstream answers it with AD.
async fn ask_ad(stub: &Stub, id: u16) -> Message {
    let opts = QueryOptions { dnssec_ok: true, ..Default::default() };
    parse(&udp_query(stub.addr, &build_query(id, "ad.test", RecordType::A, &opts), UDP_WAIT).await.unwrap())
}

fn max_ttl(m: &Message) -> u32 {
    m.answers.iter().map(|r| r.ttl).max().expect("an answer")
}

/// An opportunistic upstream whose TLS port is closed and whose plain port answers.
async fn plain_text_stub(cache: &str) -> (Stub, TestUpstream) {
    let plain = TestUpstream::start(UpstreamOptions { tls: false, ..Default::default() }).await;
    let block = format!(
        "{cache}\n[[upstream]]\nname = \"net\"\naddresses = [\"127.0.0.1\"]\ntls_port = {}\nplain_port = {}\nmode = \"opportunistic\"\n",
        closed_port().port(),
        plain.addr.port()
    );
    (Stub::start("", &block, tempfile::tempdir().unwrap()).await, plain)
}

#[tokio::test]
async fn ad_from_a_plain_text_upstream_is_cleared_and_the_answer_cached_briefly() {
    let (stub, plain) = plain_text_stub("").await;
    let first = ask_ad(&stub, 1).await;
    assert_eq!(plain.queries_received(), 1, "answered in clear text");
    assert_eq!(answer_strings(&first), vec!["192.0.2.5".to_string()]);
    assert!(!first.metadata.authentic_data, "AD from clear text reached the client");
    assert!(max_ttl(&first) <= UNAUTHENTICATED_MAX_TTL, "TTL {}", max_ttl(&first));
    // The cached copy: the same, and no second upstream query.
    let second = ask_ad(&stub, 2).await;
    assert_eq!(plain.queries_received(), 1, "served from the cache");
    assert!(!second.metadata.authentic_data);
    assert!(max_ttl(&second) <= UNAUTHENTICATED_MAX_TTL, "TTL {}", max_ttl(&second));
}

#[tokio::test]
async fn an_uncached_plain_text_answer_is_capped_too() {
    let (stub, plain) = plain_text_stub("[cache]\nmax_entries = 0\n").await;
    let m = ask_ad(&stub, 1).await;
    assert_eq!(plain.queries_received(), 1);
    assert!(!m.metadata.authentic_data);
    assert!(max_ttl(&m) <= UNAUTHENTICATED_MAX_TTL, "TTL {}", max_ttl(&m));
}

#[tokio::test]
async fn ad_from_an_encrypt_only_tls_upstream_is_cleared() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    // Opportunistic with neither pins nor tls_name: TLS that authenticates nothing.
    let block = format!(
        "[[upstream]]\nname = \"anon\"\naddresses = [\"127.0.0.1\"]\ntls_port = {}\nplain_port = {}\nmode = \"opportunistic\"\n",
        up.addr.port(),
        closed_port().port()
    );
    let stub = Stub::start("", &block, tempfile::tempdir().unwrap()).await;
    let m = ask_ad(&stub, 1).await;
    assert_eq!(up.handshakes_completed(), 1, "answered over TLS");
    assert_eq!(answer_strings(&m), vec!["192.0.2.5".to_string()]);
    assert!(!m.metadata.authentic_data, "AD over unauthenticated TLS reached the client");
    assert!(max_ttl(&m) <= UNAUTHENTICATED_MAX_TTL, "TTL {}", max_ttl(&m));
}

#[tokio::test]
async fn ad_from_a_pinned_upstream_survives_for_a_do_client() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = Stub::pinned(&up).await;
    for id in 1..=2 {
        let m = ask_ad(&stub, id).await;
        assert!(m.metadata.authentic_data, "query {id}: AD from an authenticated upstream was lost");
        assert!(max_ttl(&m) > UNAUTHENTICATED_MAX_TTL, "query {id}: TTL {} capped", max_ttl(&m));
    }
    assert_eq!(up.queries_received(), 1);
}

/// The EDE (RFC 8914) of an answer: info-code and extra text.
fn ede(m: &Message) -> Option<(u16, String)> {
    match m.edns.as_ref()?.options().get(hickory_proto::rr::rdata::opt::EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(15, data) if data.len() >= 2 => {
            Some((u16::from_be_bytes([data[0], data[1]]), String::from_utf8_lossy(&data[2..]).into_owned()))
        }
        _ => None,
    }
}

#[tokio::test]
async fn an_upstream_formerr_without_a_question_is_answered_at_once() {
    let up = TestUpstream::with_fault(Fault::FormErrWithoutQuestion).await;
    let stub = Stub::pinned(&up).await;
    let started = std::time::Instant::now();
    let opts = QueryOptions::default();
    let wire = udp_query(stub.addr, &build_query(7, "a.test", RecordType::A, &opts), UDP_WAIT).await.unwrap();
    let m = parse(&wire);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let (code, text) = ede(&m).expect("an EDE says why");
    // Not the timeout's EDE 22 ("no upstream answered within …"): the FORMERR was matched.
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("FORMERR without a question"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2), "within query_timeout: {:?}", started.elapsed());
    assert_eq!(up.queries_received(), 1);
}

#[tokio::test]
async fn an_ipv6_endpoint_failure_reads_bracketed_in_the_ede() {
    // Nothing listens there: connecting gets an RST.
    let addr = std::net::TcpListener::bind("[::1]:0").unwrap().local_addr().unwrap();
    let block = format!(
        "[[upstream]]\nname = \"v6\"\naddresses = [\"::1\"]\ntls_port = {}\npins = [\"{}\"]\n",
        addr.port(),
        common::unrelated_key_pin()
    );
    let stub = Stub::start("", &block, tempfile::tempdir().unwrap()).await;
    let wire = udp_query(stub.addr, &common::dns::query(1, "a.test", RecordType::A), UDP_WAIT).await.unwrap();
    let m = parse(&wire);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let (code, text) = ede(&m).expect("an EDE says why");
    assert_eq!(code, 23, "{text}");
    assert!(text.contains(&format!("[::1]:{} rst", addr.port())), "{text}");
}
