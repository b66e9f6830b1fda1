//! Config reload (SIGHUP) in-process: a valid config takes effect at once (new upstream,
//! new access list) while the cache and queries in flight survive.

mod common;
mod support;

use std::time::Duration;

use common::{
    Fault, TestUpstream, UpstreamOptions,
    dns::{answer_strings, fresh_a_name, parse, query},
    udp_query,
};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use stubborn::config::{Config, ConfigOrigin};
use support::{Auth, Stub, UDP_WAIT, upstream_block};

fn config_for(stub: &Stub, up: &TestUpstream, extra: &str) -> Config {
    let block = upstream_block("next", up, Auth::Pin(&up.leaf_key_pin), &stub.dir);
    let text = format!("[server]\nlisten = [\"{}\"]\n{extra}\n{block}", stub.addr);
    Config::from_toml(&text, ConfigOrigin::Embedded).unwrap()
}

#[tokio::test]
async fn a_reload_switches_the_upstream_and_keeps_the_cache() {
    let first = TestUpstream::start(UpstreamOptions::default()).await;
    let second = TestUpstream::start(UpstreamOptions::default()).await;
    let mut stub = Stub::pinned(&first).await;
    let cached = parse(&udp_query(stub.addr, &query(1, "a.test", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(answer_strings(&cached), vec!["192.0.2.1".to_string()]);

    let next = config_for(&stub, &second, "");
    stub.daemon().reload(next).unwrap();

    let fresh =
        parse(&udp_query(stub.addr, &query(2, &fresh_a_name(), RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(answer_strings(&fresh), vec!["192.0.2.1".to_string()]);
    assert_eq!(second.queries_received(), 1, "answered by the new upstream");
    assert_eq!(first.queries_received(), 1, "the old upstream is no longer asked");
    let again = parse(&udp_query(stub.addr, &query(3, "a.test", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(answer_strings(&again), vec!["192.0.2.1".to_string()]);
    assert_eq!(first.queries_received() + second.queries_received(), 2, "the cache survived the reload");
}

#[tokio::test]
async fn a_reload_finishes_queries_in_flight_and_applies_the_new_access_list() {
    let slow = TestUpstream::with_fault(Fault::Delay(Duration::from_millis(400))).await;
    let mut stub = Stub::pinned(&slow).await;
    let addr = stub.addr;
    let pending =
        tokio::spawn(
            async move { udp_query(addr, &query(4, "aaaa.test", RecordType::AAAA), UDP_WAIT).await },
        );
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Same upstream, but loopback clients are no longer allowed.
    let next = config_for(&stub, &slow, "allow = [\"192.0.2.0/24\"]");
    stub.daemon().reload(next).unwrap();
    let answered = parse(&pending.await.unwrap().unwrap());
    assert_eq!(answered.metadata.response_code, ResponseCode::NoError, "the query in flight finished");
    let refused = parse(&udp_query(stub.addr, &query(5, "a.test", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
}
