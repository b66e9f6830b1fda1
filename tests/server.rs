//! The client side: access control, malformed input, and staying alive (never panic).

mod common;
mod support;

use std::time::Duration;

use common::{
    TestUpstream, UpstreamOptions,
    dns::{answer_strings, parse, query},
    tcp_query, udp_query,
};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use support::{Auth, Stub, UDP_WAIT, upstream_block};
use tokio::{io::AsyncWriteExt, net::UdpSocket};

#[tokio::test]
async fn clients_outside_allow_get_refused() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("up", &up, Auth::Pin(&up.leaf_key_pin), &dir);
    let stub = Stub::start("allow = [\"192.0.2.0/24\"]", &block, dir).await;
    let answer = udp_query(stub.addr, &query(1, "a.test", RecordType::A), UDP_WAIT).await.unwrap();
    assert_eq!(parse(&answer).metadata.response_code, ResponseCode::Refused);
    // Over TCP the connection is closed at accept, with no answer (tests/tcp_frontend.rs).
    assert!(tcp_query(stub.addr, &query(1, "a.test", RecordType::A)).await.is_err());
    assert_eq!(up.queries_received(), 0);
}

/// Sends `count` queries from 127.0.0.2 (outside `allow = ["127.0.0.1/32"]`) as fast as
/// it can, then counts the replies until 500 ms pass without one; also how long it took.
async fn refused_replies_to_a_burst(stub: &Stub, count: u16) -> (usize, Duration) {
    let sock = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let started = std::time::Instant::now();
    for id in 0..count {
        sock.send_to(&query(id, "a.test", RecordType::A), stub.addr).await.unwrap();
    }
    let mut buf = vec![0u8; 4096];
    let mut replies = 0;
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
    {
        assert_eq!(parse(&buf[..n]).metadata.response_code, ResponseCode::Refused);
        replies += 1;
        assert!(replies <= usize::from(count), "no more replies than queries");
    }
    (replies, started.elapsed())
}

#[tokio::test]
async fn udp_refused_to_clients_outside_allow_is_rate_limited() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("up", &up, Auth::Pin(&up.leaf_key_pin), &dir);
    let stub = Stub::start("allow = [\"127.0.0.1/32\"]", &block, dir).await;
    let (replies, took) = refused_replies_to_a_burst(&stub, 500).await;
    // The burst, plus what the rate refills while it lasts.
    let per_second = stubborn::frontend::REFUSED_PER_SECOND as f64;
    let bound = per_second + per_second * took.as_secs_f64() + 1.0;
    assert!(replies >= 1, "some are answered REFUSED");
    assert!((replies as f64) <= bound, "{replies} REFUSED in {took:?}: a reflector");
    // An allowed client is not limited.
    for id in 0..50 {
        let m = parse(&udp_query(stub.addr, &query(id, "a.test", RecordType::A), UDP_WAIT).await.unwrap());
        assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
    }
}

#[tokio::test]
async fn udp_refused_drop_answers_clients_outside_allow_nothing() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("up", &up, Auth::Pin(&up.leaf_key_pin), &dir);
    let stub = Stub::start("allow = [\"127.0.0.1/32\"]\nrefused = \"drop\"", &block, dir).await;
    assert_eq!(refused_replies_to_a_burst(&stub, 20).await.0, 0);
    let m = parse(&udp_query(stub.addr, &query(1, "a.test", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
    assert_eq!(up.queries_received(), 1);
}

#[tokio::test]
async fn qdcount_other_than_one_gets_formerr() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = Stub::pinned(&up).await;
    let mut two = parse(&query(11, "a.test", RecordType::A));
    let q = two.queries[0].clone();
    two.add_query(q);
    let m = parse(&udp_query(stub.addr, &two.to_vec().unwrap(), UDP_WAIT).await.unwrap());
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    let mut none = query(12, "a.test", RecordType::A);
    none[4] = 0;
    none[5] = 0; // QDCOUNT = 0, the question bytes become trailing garbage
    let m = parse(&udp_query(stub.addr, &none[..12], UDP_WAIT).await.unwrap());
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
}

#[tokio::test]
async fn a_header_with_a_garbled_body_gets_formerr() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = Stub::pinned(&up).await;
    let mut q = query(13, "a.test", RecordType::A);
    q.truncate(q.len() - 9); // cut inside the question / OPT
    let m = parse(&udp_query(stub.addr, &q, UDP_WAIT).await.unwrap());
    assert_eq!(m.metadata.id, 13);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
}

#[tokio::test]
async fn random_and_truncated_packets_do_not_kill_the_daemon() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = Stub::pinned(&up).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let good = query(14, "a.test", RecordType::A);
    // Deterministic pseudo-random garbage (xorshift), plus every prefix of a good query.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..2000usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 600) as usize;
        let packet: Vec<u8> = (0..len).map(|j| (x >> (j % 56)) as u8 ^ j as u8).collect();
        sock.send_to(&packet, stub.addr).await.unwrap();
        sock.send_to(&good[..i % good.len()], stub.addr).await.unwrap();
    }
    // The same over TCP: garbage frames, then a hang-up mid-frame.
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(stub.addr).await.unwrap();
        let _ = s.write_all(&[0, 40, 1, 2, 3, 0xff, 0xff, 0, 0, 0, 9, 9, 9, 9]).await;
        let _ = s.write_all(&[0xff, 0xff, 1]).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = parse(&udp_query(stub.addr, &good, UDP_WAIT).await.unwrap());
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()], "still answering");
    let m = parse(&tcp_query(stub.addr, &good).await.unwrap());
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_query_finish() {
    let up = TestUpstream::start(UpstreamOptions {
        fault: common::Fault::Delay(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    let stub = Stub::pinned(&up).await;
    let addr = stub.addr;
    let pending =
        tokio::spawn(async move { udp_query(addr, &query(15, "a.test", RecordType::A), UDP_WAIT).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stub.shutdown().await;
    let m = parse(&pending.await.unwrap().unwrap());
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()], "answered during the drain");
}
