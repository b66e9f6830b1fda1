//! End to end: clients → stubborn → in-process DoT upstream. Record types, transports,
//! truncation, pipelining, reconnects and EDNS shaping (RFC 6891, 7830, 7858, 8467).

mod common;
mod support;

use std::time::Duration;

use common::{
    Fault, TestUpstream, UpstreamOptions,
    dns::{self, QueryOptions, answer_strings, build_query, padding_of, parse, query, wire_id},
    tcp_query, udp_query,
};
use hickory_proto::{
    op::{Edns, Message, ResponseCode},
    rr::{
        RecordType,
        rdata::opt::{ClientSubnet, EdnsCode, EdnsOption},
    },
};
use support::{Stub, UDP_WAIT};

async fn upstream(fault: Fault) -> TestUpstream {
    TestUpstream::start(UpstreamOptions { fault, ..Default::default() }).await
}

#[tokio::test]
async fn a_aaaa_txt_over_udp_and_tcp() {
    let up = upstream(Fault::None).await;
    let stub = Stub::pinned(&up).await;
    for (name, rtype, want) in [
        ("a.test", RecordType::A, "192.0.2.1"),
        ("aaaa.test", RecordType::AAAA, "2001:db8::1"),
        ("txt.test", RecordType::TXT, "hello"),
    ] {
        let q = query(0x4242, name, rtype);
        for answer in
            [udp_query(stub.addr, &q, UDP_WAIT).await.unwrap(), tcp_query(stub.addr, &q).await.unwrap()]
        {
            let m = parse(&answer);
            assert_eq!(m.metadata.id, 0x4242);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert_eq!(answer_strings(&m), vec![want.to_string()], "{name}");
        }
    }
    // All of it over one upstream connection (RFC 7858 §3.4 reuse).
    assert_eq!(up.connections_accepted(), 1);
    stub.shutdown().await;
}

#[tokio::test]
async fn nxdomain_keeps_the_soa() {
    let up = upstream(Fault::None).await;
    let stub = Stub::pinned(&up).await;
    let m = parse(&udp_query(stub.addr, &query(1, "missing.test", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
}

#[tokio::test]
async fn large_answer_truncates_over_udp_and_comes_whole_over_tcp() {
    let up = upstream(Fault::None).await;
    let stub = Stub::pinned(&up).await;
    let q = query(7, "big.test", RecordType::TXT);
    let udp = udp_query(stub.addr, &q, UDP_WAIT).await.unwrap();
    assert!(udp.len() <= 1232, "UDP answer within the advertised size: {}", udp.len());
    let m = parse(&udp);
    assert!(m.metadata.truncation, "TC set");
    assert!(m.answers.is_empty(), "truncated answer is header + question + OPT");
    assert!(m.edns.is_some());

    let no_edns =
        build_query(8, "big.test", RecordType::TXT, &QueryOptions { edns: false, ..Default::default() });
    let udp = udp_query(stub.addr, &no_edns, UDP_WAIT).await.unwrap();
    assert!(udp.len() <= 512);
    assert!(parse(&udp).metadata.truncation);

    let tcp = parse(&tcp_query(stub.addr, &q).await.unwrap());
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), dns::BIG_TXT_COUNT);
}

#[tokio::test]
async fn two_hundred_concurrent_queries_share_one_pipelined_connection() {
    let up = upstream(Fault::None).await;
    let stub = Stub::pinned(&up).await;
    let types = [RecordType::A, RecordType::AAAA, RecordType::TXT];
    let mut tasks = Vec::new();
    for i in 0..200u16 {
        // Distinct questions (coalescing would merge identical ones), in mixed case.
        let name = if i % 2 == 0 { format!("Q{i}.Test") } else { format!("q{i}.test") };
        let rtype = types[i as usize % 3];
        let addr = stub.addr;
        tasks.push(tokio::spawn(async move {
            let id = 1000 + i;
            let m = parse(&udp_query(addr, &query(id, &name, rtype), UDP_WAIT).await.unwrap());
            assert_eq!(m.metadata.id, id, "client ID restored");
            assert_eq!(m.queries[0].name().to_ascii(), format!("{name}."), "question echoed with case");
            assert_eq!(m.queries[0].query_type(), rtype);
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.connections_accepted(), 1, "one upstream connection");
    let received = up.received();
    assert_eq!(received.len(), 200);
    // Fresh IDs upstream: never two in flight at once on the connection. All 200 may be in
    // flight together, so (allowing for reuse after an answer) nearly all must differ.
    let mut ids: Vec<u16> = received.iter().map(|w| wire_id(w)).collect();
    ids.sort_unstable();
    ids.dedup();
    assert!(ids.len() >= 190, "upstream IDs are fresh per query: {} distinct", ids.len());
}

#[tokio::test]
async fn out_of_order_answers_are_matched_by_id_and_question() {
    let up = upstream(Fault::OutOfOrder(3)).await;
    let stub = Stub::pinned(&up).await;
    let addr = stub.addr;
    let qs = [
        ("a.test", RecordType::A, "192.0.2.1"),
        ("aaaa.test", RecordType::AAAA, "2001:db8::1"),
        ("txt.test", RecordType::TXT, "hello"),
    ];
    let handles: Vec<_> = qs
        .iter()
        .enumerate()
        .map(|(i, &(name, rtype, want))| {
            tokio::spawn(async move {
                let m = parse(&udp_query(addr, &query(i as u16, name, rtype), UDP_WAIT).await.unwrap());
                assert_eq!(answer_strings(&m), vec![want.to_string()]);
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test]
async fn a_closed_upstream_connection_is_reopened_transparently() {
    let up = upstream(Fault::CloseAfter(2)).await;
    let stub = Stub::pinned(&up).await;
    for i in 0..7u16 {
        let m = parse(
            &udp_query(stub.addr, &query(i, &format!("r{i}.test"), RecordType::A), UDP_WAIT).await.unwrap(),
        );
        // Distinct names, so every query goes upstream (none is a cache hit).
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "query {i}");
    }
    assert!(up.connections_accepted() >= 4, "reconnected: {}", up.connections_accepted());
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_servfail_in_bounded_time() {
    let up = upstream(Fault::NeverAnswer).await;
    let stub = Stub::pinned(&up).await;
    let started = std::time::Instant::now();
    let m = parse(&udp_query(stub.addr, &query(9, "a.test", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // query_timeout_ms = 2000 in the test config; generous slack for a loaded CI machine.
    assert!(started.elapsed() < Duration::from_millis(3500), "{:?}", started.elapsed());
}

#[tokio::test]
async fn upstream_queries_are_padded_and_carry_no_client_ecs_but_keep_do() {
    let up = upstream(Fault::None).await;
    let stub = Stub::pinned(&up).await;
    let mut q = Message::from_vec(&build_query(
        5,
        "a.test",
        RecordType::A,
        &QueryOptions { dnssec_ok: true, ..Default::default() },
    ))
    .unwrap();
    q.metadata.checking_disabled = true;
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    edns.set_max_payload(1232);
    edns.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new("198.51.100.7".parse().unwrap(), 24, 0)));
    q.set_edns(edns);
    let answer = parse(&udp_query(stub.addr, &q.to_vec().unwrap(), UDP_WAIT).await.unwrap());
    assert_eq!(answer_strings(&answer), vec!["192.0.2.1".to_string()]);
    assert!(padding_of(&answer).is_none(), "padding stripped on the loopback hop (RFC 7830 §6)");
    assert!(answer.edns.as_ref().unwrap().flags().dnssec_ok, "DO copied back");
    assert!(answer.metadata.checking_disabled, "CD copied back");

    let sent = parse(&up.received()[0]);
    assert_eq!(up.received()[0].len() % 128, 0, "padded to 128-octet blocks (RFC 8467)");
    let opt = sent.edns.as_ref().expect("upstream query has OPT");
    assert_eq!(opt.max_payload(), 1232);
    assert!(opt.flags().dnssec_ok, "DO passed through");
    assert!(sent.metadata.checking_disabled, "CD passed through");
    assert!(opt.option(EdnsCode::Subnet).is_none(), "client ECS stripped");
    assert!(padding_of(&sent).is_some());
}

#[tokio::test]
async fn queries_without_edns_get_answers_without_opt() {
    let up = upstream(Fault::None).await;
    let stub = Stub::pinned(&up).await;
    let q = build_query(3, "a.test", RecordType::A, &QueryOptions { edns: false, ..Default::default() });
    let m = parse(&udp_query(stub.addr, &q, UDP_WAIT).await.unwrap());
    assert!(m.edns.is_none(), "no OPT for a non-EDNS client (RFC 6891 §7)");
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
}

#[tokio::test]
async fn a_miss_overtaken_by_a_finished_fetch_is_answered_from_the_cache() {
    // The front end looked the question up and missed; before it joins the upstream fetch,
    // another client's fetch for the same question stores its answer and is done. The late
    // client gets that answer; it does not send the question upstream a second time.
    let up = upstream(Fault::None).await;
    let mut stub = Stub::pinned(&up).await;
    let pipeline = stub.daemon().pipeline().clone();
    let late = support::client_query(7, "A.test.", RecordType::A);
    let miss = pipeline.cached(&late).expect_err("nothing cached yet");
    let first = parse(&udp_query(stub.addr, &query(1, "a.test", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(answer_strings(&first), ["192.0.2.1"]);
    assert_eq!(up.queries_received(), 1);
    let answer = pipeline.answer_miss(&late, miss).await;
    assert!(matches!(answer.source, stubborn::pipeline::Source::Cache), "from the cache: {}", answer.source);
    let m = parse(&answer.wire);
    assert_eq!(
        (m.metadata.id, m.queries[0].name().to_ascii()),
        (7, "A.test.".to_string()),
        "as the late client's own"
    );
    assert_eq!(answer_strings(&m), ["192.0.2.1"]);
    assert_eq!(up.queries_received(), 1, "no second upstream query");
}
