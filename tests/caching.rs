//! The cache end to end (RFC 1035/2181/2308/8767): hits that never reach upstream, TTLs
//! counted down, negative answers with their SOA, SERVFAIL expiry, DO kept apart, the
//! client's case echoed, stale answers with EDE 3, and prefetch. The cache's pure rules
//! are unit-tested in src/cache/tests; these check the daemon wires them up.

mod common;
mod support;

use std::time::Duration;

use common::{
    Fault, TestUpstream, UpstreamOptions,
    dns::{QueryOptions, answer_strings, build_query, parse, query, write_frame},
    udp_query,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RecordType, rdata::opt::EdnsOption},
};
use stubborn::{
    cache::{CacheKey, ClientView, Lookup},
    config::{Config, ConfigOrigin},
    message::ClientQuery,
    pipeline::{Pipeline, Source},
    upstream::pool::Pool,
};
use support::{Auth, Stub, UDP_WAIT, upstream_block};
use tokio::{net::TcpStream, time::Instant};

async fn stub_with(up: &TestUpstream, extra: &str) -> Stub {
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("up", up, Auth::Pin(&up.leaf_key_pin), &dir);
    Stub::start(extra, &block, dir).await
}

async fn ask(stub: &Stub, name: &str, rtype: RecordType) -> Message {
    parse(&udp_query(stub.addr, &query(7, name, rtype), UDP_WAIT).await.unwrap())
}

fn ede_code(m: &Message) -> Option<u16> {
    match m.edns.as_ref()?.options().get(hickory_proto::rr::rdata::opt::EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(15, data) => Some(u16::from_be_bytes([data[0], data[1]])),
        _ => None,
    }
}

#[tokio::test]
async fn a_hit_never_reaches_upstream_and_its_ttl_counts_down() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = stub_with(&up, "").await;
    let first = ask(&stub, "a.test", RecordType::A).await;
    assert_eq!(first.answers[0].ttl, 300);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = ask(&stub, "a.test", RecordType::A).await;
    assert_eq!(up.queries_received(), 1, "the second answer came from the cache");
    assert_eq!(answer_strings(&second), vec!["192.0.2.1".to_string()]);
    assert!(second.answers[0].ttl <= 299, "TTL counted down: {}", second.answers[0].ttl);
}

#[tokio::test]
async fn the_cache_key_ignores_case_and_the_answer_echoes_the_clients() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = stub_with(&up, "").await;
    ask(&stub, "Multi.TEST", RecordType::A).await;
    let m = ask(&stub, "mULTI.test", RecordType::A).await;
    assert_eq!(up.queries_received(), 1);
    assert_eq!(m.queries[0].name().to_ascii(), "mULTI.test.");
    assert_eq!(m.answers.len(), 3);
}

#[tokio::test]
async fn do_1_and_do_0_are_cached_apart() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = stub_with(&up, "").await;
    for dnssec_ok in [false, true, false, true] {
        let q =
            build_query(1, "txt.test", RecordType::TXT, &QueryOptions { dnssec_ok, ..Default::default() });
        let m = parse(&udp_query(stub.addr, &q, UDP_WAIT).await.unwrap());
        assert_eq!(m.edns.unwrap().flags().dnssec_ok, dnssec_ok);
    }
    assert_eq!(up.queries_received(), 2, "one upstream query per DO value");
}

#[tokio::test]
async fn nxdomain_is_cached_and_served_with_its_soa_counted_down() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = stub_with(&up, "").await;
    let first = ask(&stub, "nowhere.test", RecordType::A).await;
    assert_eq!(first.metadata.response_code, ResponseCode::NXDomain);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = ask(&stub, "nowhere.test", RecordType::A).await;
    assert_eq!(up.queries_received(), 1);
    assert_eq!(second.metadata.response_code, ResponseCode::NXDomain);
    let soa = &second.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    // min(SOA TTL 300, MINIMUM 60) = 60, one second gone.
    assert!(soa.ttl <= 59, "SOA TTL counted down from the negative TTL: {}", soa.ttl);
}

#[tokio::test]
async fn an_upstream_servfail_is_cached_briefly_then_asked_again() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = stub_with(&up, "[cache]\nservfail_ttl = 1\n").await;
    let first = ask(&stub, "servfail.test", RecordType::A).await;
    assert_eq!(first.metadata.response_code, ResponseCode::ServFail);
    let cached = ask(&stub, "servfail.test", RecordType::A).await;
    assert_eq!(cached.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(ede_code(&cached), Some(13), "Cached Error");
    assert_eq!(up.queries_received(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ask(&stub, "servfail.test", RecordType::A).await;
    assert_eq!(up.queries_received(), 2, "expired after servfail_ttl");
}

#[tokio::test]
async fn a_dead_upstream_gets_stale_answers_with_ede_3_then_the_refresh_lands() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub =
        stub_with(&up, "[cache]\nserve_stale = true\nstale_answer_after_ms = 200\nstale_recheck_ms = 300\n")
            .await;
    let fresh = ask(&stub, "ttl1.test", RecordType::A).await;
    assert_eq!(fresh.answers[0].ttl, 1);
    up.set_fault(Fault::NeverAnswer);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = std::time::Instant::now();
    let stale = ask(&stub, "ttl1.test", RecordType::A).await;
    assert!(started.elapsed() < Duration::from_millis(1500), "stale after the client-response timer");
    assert_eq!(answer_strings(&stale), vec!["192.0.2.3".to_string()]);
    assert_eq!(stale.answers[0].ttl, 30, "RFC 8767 §4: stale TTL 30");
    assert_eq!(ede_code(&stale), Some(3), "Stale Answer");
    // The upstream comes back: once the refresh in flight has failed (query_timeout) and
    // the failure-recheck interval after it is over, the next query's refresh stores a
    // fresh answer.
    up.set_fault(Fault::None);
    let mut refreshed = None;
    for _ in 0..40 {
        let m = ask(&stub, "ttl1.test", RecordType::A).await;
        if ede_code(&m).is_none() {
            refreshed = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refreshed = refreshed.expect("refreshed once the upstream answered again");
    assert_eq!(refreshed.answers[0].ttl, 1);
}

#[tokio::test]
async fn a_stale_answer_does_not_cancel_the_refresh_it_raced() {
    // The client that started the refresh gets a stale answer after 200 ms and is gone; the
    // upstream answers at 600 ms, and that answer must still reach the cache.
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = stub_with(&up, "[cache]\nserve_stale = true\nstale_answer_after_ms = 200\n").await;
    assert_eq!(ask(&stub, "ttl1.test", RecordType::A).await.answers[0].ttl, 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    up.set_fault(Fault::Delay(Duration::from_millis(600)));
    let stale = ask(&stub, "ttl1.test", RecordType::A).await;
    assert_eq!(ede_code(&stale), Some(3), "Stale Answer while the upstream is slow");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let asked = up.queries_received();
    let refreshed = ask(&stub, "ttl1.test", RecordType::A).await;
    assert_eq!(ede_code(&refreshed), None, "the refresh landed in the cache");
    assert_eq!(refreshed.answers[0].ttl, 1);
    assert_eq!(up.queries_received(), asked, "answered from the cache, no new upstream query");
}

#[tokio::test]
async fn a_tcp_client_hanging_up_does_not_cancel_the_fetch_it_started() {
    // The client asks over TCP and hangs up at about 100 ms; the upstream answers at 600 ms,
    // and that answer must still reach the cache. (Today the TCP front end runs each query
    // as a task of its own that outlives the connection; were the query dropped with the
    // connection, the pipeline's hand-over of the unfinished fetch would have to save it.)
    let up = TestUpstream::start(UpstreamOptions {
        fault: Fault::Delay(Duration::from_millis(600)),
        ..Default::default()
    })
    .await;
    let stub = stub_with(&up, "").await;
    let mut tcp = TcpStream::connect(stub.addr).await.unwrap();
    write_frame(&mut tcp, &query(9, "a.test", RecordType::A)).await.unwrap();
    assert!(up.wait_for_queries(1, Duration::from_secs(2)).await, "the stub asked upstream");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let asked = up.queries_received();
    let cached = ask(&stub, "a.test", RecordType::A).await;
    assert_eq!(cached.metadata.response_code, ResponseCode::NoError, "the hung-up client's fetch finished");
    assert_eq!(answer_strings(&cached), vec!["192.0.2.1".to_string()]);
    assert_eq!(up.queries_received(), asked, "answered from the cache, no new upstream query");
}

#[tokio::test]
async fn a_hit_near_expiry_prefetches_once() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    // a.test's TTL 300 capped at 2 s: the last 10% is the final 200 ms.
    let stub = stub_with(&up, "[cache]\nmax_ttl = 2\n").await;
    ask(&stub, "a.test", RecordType::A).await;
    tokio::time::sleep(Duration::from_millis(1850)).await;
    ask(&stub, "a.test", RecordType::A).await;
    assert!(up.wait_for_queries(2, Duration::from_secs(1)).await, "the late hit refreshed in the background");
    ask(&stub, "a.test", RecordType::A).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(up.queries_received(), 2, "one prefetch, not one per hit");
}

// Serve-stale through the pipeline on paused time (RFC 8767), with the real upstream:
// its answers take no virtual time, so every elapsed time below is a timer's.

/// A pipeline over one pool to `up`: query_timeout 4 s, `[cache]` as given.
fn stale_pipeline(up: &TestUpstream, cache: &str) -> Pipeline {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nquery_timeout_ms = 4000\n[cache]\n{cache}\n[[upstream]]\n\
         name = \"up\"\naddresses = [\"{}\"]\ntls_port = {}\npins = [\"{}\"]\n",
        up.addr.ip(),
        up.addr.port(),
        up.leaf_key_pin
    );
    let config = Config::from_toml(&text, ConfigOrigin::Embedded).unwrap();
    Pipeline::new(vec![Pool::new(&config).unwrap()], config.server.query_timeout, &config.cache)
}

/// Asks `ttl1.test` (TTL 1), then lets its answer expire.
async fn expired_ttl1(p: &Pipeline, q: &ClientQuery) {
    let fresh = p.answer(q).await;
    assert!(matches!(fresh.source, Source::Upstream(_)), "{}", fresh.source);
    assert_eq!(parse(&fresh.wire).answers[0].ttl, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test(start_paused = true)]
async fn an_upstream_servfail_is_answered_with_the_stale_data_which_stays() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let p = stale_pipeline(&up, "serve_stale = true");
    let q = support::client_query(1, "ttl1.test.", RecordType::A);
    expired_ttl1(&p, &q).await;
    up.set_fault(Fault::Rcode(ResponseCode::ServFail));
    let asked = up.queries_received();
    let a = p.answer(&q).await;
    assert_eq!(up.queries_received(), asked + 1, "the refresh was tried");
    let m = parse(&a.wire);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "stale data, not the SERVFAIL");
    assert!(matches!(a.source, Source::Stale), "{}", a.source);
    assert_eq!(answer_strings(&m), vec!["192.0.2.3".to_string()]);
    assert_eq!(m.answers[0].ttl, 30);
    assert_eq!(ede_code(&m), Some(3), "Stale Answer");
    // RFC 8767 §4: the failure kept the old data.
    let cache = p.cache();
    let kept = cache.lookup_stale(&CacheKey::from(&q), &ClientView::from(&q), Instant::now());
    assert!(matches!(kept, Lookup::Stale(_)), "{kept:?}");
    assert_eq!(cache.len(), 1);
    // Any RCODE but NOERROR and NXDOMAIN is such a failure (once the recheck interval is
    // over and the upstream is asked again).
    tokio::time::sleep(Duration::from_secs(31)).await;
    up.set_fault(Fault::Rcode(ResponseCode::Refused));
    let asked = up.queries_received();
    let a = p.answer(&q).await;
    assert!(up.queries_received() > asked);
    assert!(matches!(a.source, Source::Stale), "{}", a.source);
    assert_eq!(ede_code(&parse(&a.wire)), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_fresh_answer_with_ttl_0_ends_the_stale_data() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let p = stale_pipeline(&up, "serve_stale = true");
    let q = support::client_query(1, "ttl1.test.", RecordType::A);
    expired_ttl1(&p, &q).await;
    up.set_fault(Fault::ZeroTtl);
    let a = p.answer(&q).await;
    assert!(matches!(a.source, Source::Upstream(_)), "{}", a.source);
    assert_eq!(parse(&a.wire).answers[0].ttl, 0);
    assert!(p.cache().is_empty(), "RFC 8767 §4: refreshed, so the old data is gone");
    // The upstream stops answering: there is no stale data to stand in for it.
    up.set_fault(Fault::NeverAnswer);
    let m = parse(&p.answer(&q).await.wire);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
    assert_eq!(ede_code(&m), Some(22));
}

#[tokio::test(start_paused = true)]
async fn after_a_failed_refresh_stale_answers_come_at_once_for_30_s() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let p = stale_pipeline(&up, "serve_stale = true");
    let q = support::client_query(1, "ttl1.test.", RecordType::A);
    expired_ttl1(&p, &q).await;
    up.set_fault(Fault::NeverAnswer);
    let first = Instant::now();
    let a = p.answer(&q).await;
    assert!(matches!(a.source, Source::Stale), "{}", a.source);
    assert_eq!(first.elapsed(), Duration::from_millis(1800), "RFC 8767 §5: the client-response timer");
    // The refresh goes on without that client and fails at query_timeout (4 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = up.queries_received();
    for _ in 0..3 {
        let started = Instant::now();
        let a = p.answer(&q).await;
        assert!(matches!(a.source, Source::Stale), "{}", a.source);
        assert!(started.elapsed() < Duration::from_millis(5), "at once, not after {:?}", started.elapsed());
        assert_eq!(ede_code(&parse(&a.wire)), Some(3));
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    assert_eq!(up.queries_received(), asked, "no upstream query within the recheck interval");
    // More than 30 s after the refresh failed (by 4 s after the first query), the upstream
    // is asked again; it is back, so the refresh lands.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(first.elapsed() > Duration::from_secs(4 + 30));
    up.set_fault(Fault::None);
    let a = p.answer(&q).await;
    assert!(matches!(a.source, Source::Upstream(_)), "{}", a.source);
    assert_eq!(parse(&a.wire).answers[0].ttl, 1);
    assert!(up.queries_received() > asked);
}
