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

/// A reload replaces the pools; the old ones must retire, not keep replacing connections
/// the upstream closes. Found by the soak (docs/soak.md, defect 4): a task watching each
/// connection held its pool alive, so a close by the upstream made the replaced pool race
/// for a new connection, which held it alive again; with an upstream that closes idle
/// connections (unbound, once its TCP slots are half used) every reload left a generation
/// of pools reconnecting for ever. Here the pool is dropped as a reload drops it, and the
/// upstream then closes the connection a query still held.
#[tokio::test]
async fn a_pool_dropped_by_a_reload_does_not_replace_a_connection_the_upstream_closes() {
    let up = TestUpstream::with_fault(Fault::CloseAfter(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n{}",
        upstream_block("up", &up, Auth::Pin(&up.leaf_key_pin), &dir)
    );
    let config = Config::from_toml(&text, ConfigOrigin::Embedded).unwrap();
    let pool = stubborn::upstream::pool::Pool::new(&config).unwrap();
    let (conn, _) = pool.connections().await.unwrap();
    assert_eq!(up.connections_accepted(), 1);
    drop(pool); // what a reload does to the old pools (a query in flight still holds `conn`)
    let answer = conn.query(query(7, "a.test", RecordType::A)).await.unwrap();
    assert_eq!(answer_strings(&parse(&answer)), vec!["192.0.2.1".to_string()]);
    conn.closed().await; // the upstream closed it after that answer
    assert!(
        !up.wait_for_connections(2, Duration::from_millis(500)).await,
        "the dropped pool raced for a replacement connection"
    );
}
