//! End to end: answers that do not lie about what they are (issue 13 §3). RD is always
//! asked upstream, AA never served, our own payload size advertised, local replies with
//! DO and RA, and TTLs normalised on answers that are not cached.

mod common;
mod support;

use common::{
    TestUpstream, UpstreamOptions,
    dns::{QueryOptions, answer_strings, build_query, parse, query},
    udp_query,
};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RecordType},
};
use support::{Auth, Stub, UDP_WAIT, upstream_block};

async fn stub_with(up: &TestUpstream, extra: &str) -> Stub {
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("up", up, Auth::Pin(&up.leaf_key_pin), &dir);
    Stub::start(extra, &block, dir).await
}

async fn ask(stub: &Stub, wire: &[u8]) -> Message {
    parse(&udp_query(stub.addr, wire, UDP_WAIT).await.unwrap())
}

/// A query with an OPT advertising `payload`, DO as given.
fn edns_query(id: u16, name: &str, rtype: RecordType, payload: u16, dnssec_ok: bool) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(format!("{name}.")).unwrap(), rtype));
    let mut e = Edns::new();
    e.set_max_payload(payload);
    e.set_dnssec_ok(dnssec_ok);
    m.set_edns(e);
    m.to_vec().unwrap()
}

const NO_CACHE: &str = "[cache]\nmax_entries = 0\n";

#[tokio::test]
async fn a_client_without_rd_cannot_fill_the_cache_with_a_non_recursive_answer() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = stub_with(&up, "").await;
    let no_rd = build_query(
        1,
        "a.test",
        RecordType::A,
        &QueryOptions { recursion_desired: false, ..Default::default() },
    );
    let first = ask(&stub, &no_rd).await;
    assert!(!first.metadata.recursion_desired, "the client's RD=0 is echoed");
    assert_eq!(answer_strings(&first), vec!["192.0.2.1".to_string()]);
    let second = ask(&stub, &query(2, "a.test", RecordType::A)).await;
    assert!(second.metadata.recursion_desired);
    assert_eq!(answer_strings(&second), vec!["192.0.2.1".to_string()], "the full answer");
    let asked = up.received_messages();
    assert_eq!(asked.len(), 1, "the second answer came from the cache");
    assert!(asked[0].metadata.recursion_desired, "upstream was asked with RD=1");

    // Uncached too: the answer echoes the client's RD, upstream still sees RD=1.
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = stub_with(&up, NO_CACHE).await;
    assert!(!ask(&stub, &no_rd).await.metadata.recursion_desired);
    assert!(up.received_messages().iter().all(|m| m.metadata.recursion_desired));
}

#[tokio::test]
async fn aa_from_upstream_is_never_served() {
    for extra in ["", NO_CACHE] {
        let up = TestUpstream::start(UpstreamOptions::default()).await;
        let stub = stub_with(&up, extra).await;
        for id in 1..=2 {
            let m = ask(&stub, &query(id, "mixed-ttl.test", RecordType::A)).await;
            assert_eq!(m.answers.len(), 3);
            assert!(!m.metadata.authoritative, "AA cleared ({extra:?}, answer {id})");
        }
    }
}

#[tokio::test]
async fn an_uncached_answer_has_one_ttl_per_rrset_with_the_high_bit_capped() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = stub_with(&up, NO_CACHE).await;
    // TTLs 300, 100 and 0x80000010 in one RRset: the lowest, 100 (RFC 2181 §5.2), and
    // the high-bit TTL does not count as 16 (RFC 8767 §4: large, then capped).
    let m = ask(&stub, &query(1, "mixed-ttl.test", RecordType::A)).await;
    assert_eq!(m.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(), vec![100; 3]);
    stub.shutdown().await;

    // The cache's max_ttl applies to what it does not store as well.
    let stub = stub_with(&up, "[cache]\nmax_entries = 0\nmax_ttl = 60\n").await;
    let m = ask(&stub, &query(2, "mixed-ttl.test", RecordType::A)).await;
    assert_eq!(m.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(), vec![60; 3]);
}

#[tokio::test]
async fn every_opt_we_send_advertises_our_payload_size_not_the_clients() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = stub_with(&up, "").await;
    let uncached = stub_with(&up, NO_CACHE).await;
    for (stub, name, rtype) in [
        (&stub, "txt.test", RecordType::TXT), // a miss, rendered from the new entry
        (&stub, "txt.test", RecordType::TXT), // a hit
        (&stub, "servfail.test", RecordType::A), // an upstream SERVFAIL
        (&uncached, "a.test", RecordType::A), // not cached
        (&stub, "_dns.resolver.arpa", RecordType::SVCB), // answered here
    ] {
        let m = ask(stub, &edns_query(3, name, rtype, 4000, true)).await;
        let edns = m.edns.unwrap_or_else(|| panic!("{name}: an OPT"));
        assert_eq!(edns.max_payload(), 1232, "{name}: our size, not the client's 4000");
        assert!(edns.flags().dnssec_ok, "{name}: DO copied");
        assert!(m.metadata.recursion_available, "{name}: RA");
    }
}

#[tokio::test]
async fn a_query_with_two_opts_gets_formerr_with_an_opt() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = stub_with(&up, "").await;
    let mut wire = edns_query(4, "a.test", RecordType::A, 1232, true);
    // RFC 6891 §6.1.1: a second OPT is a FORMERR; §7: the reply still carries an OPT.
    wire.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    wire[10..12].copy_from_slice(&2u16.to_be_bytes());
    let m = ask(&stub, &wire).await;
    assert_eq!(m.metadata.id, 4);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.metadata.recursion_available);
    let edns = m.edns.expect("an OPT in the FORMERR");
    assert_eq!((edns.max_payload(), edns.flags().dnssec_ok), (1232, true));
    assert_eq!(up.queries_received(), 0);
}
