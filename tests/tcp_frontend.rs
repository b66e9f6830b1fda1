//! The TCP front end under hostile clients (issue 13 §2): clients that never read,
//! clients outside `allow`, one address opening many connections, queries at the
//! in-flight cap. Every client is on loopback (127.0.0.1, or 127.0.0.2 as "another
//! host"); every wait is bounded.

mod common;
mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    Fault, TestUpstream, UpstreamOptions,
    dns::{answer_strings, fresh_a_name, parse, query, read_frame, wire_id, write_frame},
    tcp_query,
};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use support::{Auth, Stub, upstream_block};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::{sleep, timeout},
};

/// A stub with `[server]` extras in front of `up` (pinned by its leaf key).
async fn stub_with(server_extra: &str, up: &TestUpstream) -> Stub {
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("up", up, Auth::Pin(&up.leaf_key_pin), &dir);
    Stub::start(server_extra, &block, dir).await
}

/// A TCP connection to `to` from `from` (a loopback address), with a small receive buffer.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    timeout(Duration::from_secs(5), socket.connect(to)).await.expect("connects in time").unwrap()
}

/// True when the server closed `stream` (EOF or reset) without sending anything.
async fn closed_without_a_word(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(timeout(Duration::from_secs(3), stream.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
}

/// Polls `done` every 20 ms for up to `within`; its last value.
async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if done() {
            return true;
        }
        sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test]
async fn clients_that_never_read_are_closed_and_others_are_still_answered() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    // The idle timeout is long: what closes the readers that never read is the deadline
    // on writes to them.
    let mut stub = stub_with("tcp_write_timeout_ms = 300\ntcp_idle_timeout_ms = 60000\n", &up).await;
    // big.test's answer (~2.9 KB) in the cache: every later query for it is a cache hit.
    let big = query(1, "big.test", RecordType::TXT);
    assert_eq!(parse(&tcp_query(stub.addr, &big).await.unwrap()).answers.len(), 40);

    // Six clients send misses, then 4000 cache hits each (~11 MB of answers), and never
    // read: more than any socket buffers hold.
    let mut hogs = Vec::new();
    for _ in 0..6 {
        let mut hog = connect_from("127.0.0.1", stub.addr).await;
        let mut burst = Vec::new();
        for i in 0..8u16 {
            burst.extend_from_slice(&frame(&query(100 + i, &fresh_a_name(), RecordType::A)));
        }
        for i in 0..4000u16 {
            burst.extend_from_slice(&frame(&query(1000 + i, "big.test", RecordType::TXT)));
        }
        // The queries fit in the socket buffers; if they did not, the server stopped
        // reading, which is fine too.
        let _ = timeout(Duration::from_secs(5), hog.write_all(&burst)).await;
        hogs.push(hog);
    }

    // A well-behaved client is answered meanwhile.
    let m = parse(&tcp_query(stub.addr, &query(2, "a.test", RecordType::A)).await.unwrap());
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);

    // Within a bound (the write deadline, with room), every hog is closed by the daemon,
    // while the clients still hold their sockets open and unread.
    let daemon = stub.daemon();
    let closed = eventually(Duration::from_secs(10), || daemon.tcp_connections() == 0).await;
    assert!(closed, "{} client connections still open", daemon.tcp_connections());
    assert_eq!(daemon.in_flight(), 0, "every in-flight slot was given back");
    drop(hogs);
    // Still serving.
    let m = parse(&tcp_query(stub.addr, &query(3, "a.test", RecordType::A)).await.unwrap());
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
}

fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

#[tokio::test]
async fn clients_outside_allow_are_closed_at_accept_and_take_no_slot() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    // 127.0.0.2 is outside; two connection slots in all.
    let stub = stub_with("allow = [\"127.0.0.1/32\"]\nmax_tcp_clients = 2\n", &up).await;
    let mut outsiders = Vec::new();
    for _ in 0..4 {
        outsiders.push(connect_from("127.0.0.2", stub.addr).await);
    }
    for outsider in &mut outsiders {
        assert!(closed_without_a_word(outsider).await, "closed at accept, no REFUSED");
    }
    // The outsiders, though their sockets are still open on their side, hold no slot.
    for id in 0..2 {
        let m = parse(&tcp_query(stub.addr, &query(id, "a.test", RecordType::A)).await.unwrap());
        assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
    }
    let mut inside = connect_from("127.0.0.1", stub.addr).await;
    write_frame(&mut inside, &query(9, "a.test", RecordType::A)).await.unwrap();
    let answer = timeout(Duration::from_secs(5), read_frame(&mut inside)).await.unwrap().unwrap();
    assert_eq!(wire_id(&answer.expect("answered")), 9);
    assert_eq!(up.queries_received(), 1, "only the allowed client's query went upstream");
}

#[tokio::test]
async fn one_address_gets_at_most_max_tcp_per_client_connections() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let mut stub = stub_with("max_tcp_per_client = 2\n", &up).await;
    let mut first = connect_from("127.0.0.1", stub.addr).await;
    let mut second = connect_from("127.0.0.1", stub.addr).await;
    for (id, c) in [(1u16, &mut first), (2, &mut second)] {
        write_frame(c, &query(id, "a.test", RecordType::A)).await.unwrap();
        let answer = timeout(Duration::from_secs(5), read_frame(c)).await.unwrap().unwrap();
        assert_eq!(wire_id(&answer.expect("answered")), id);
    }
    let mut third = connect_from("127.0.0.1", stub.addr).await;
    assert!(closed_without_a_word(&mut third).await, "a third connection from 127.0.0.1 is closed");
    // Another address is counted apart.
    let mut other = connect_from("127.0.0.2", stub.addr).await;
    write_frame(&mut other, &query(3, "a.test", RecordType::A)).await.unwrap();
    let answer = timeout(Duration::from_secs(5), read_frame(&mut other)).await.unwrap().unwrap();
    assert_eq!(wire_id(&answer.expect("answered")), 3);
    // Closing one frees its slot.
    drop(first);
    let daemon = stub.daemon();
    assert!(eventually(Duration::from_secs(5), || daemon.tcp_connections() == 2).await);
    let m = parse(&tcp_query(stub.addr, &query(4, "a.test", RecordType::A)).await.unwrap());
    assert_eq!(wire_id(&m.to_vec().unwrap()), 4);
}

#[tokio::test]
async fn at_the_inflight_cap_a_tcp_query_is_answered_servfail_not_dropped() {
    let up = TestUpstream::start(UpstreamOptions { fault: Fault::NeverAnswer, ..Default::default() }).await;
    let stub = stub_with("max_inflight = 1\n", &up).await;
    let mut c = connect_from("127.0.0.1", stub.addr).await;
    // The first takes the only slot and stalls upstream; the second finds none.
    write_frame(&mut c, &query(1, "a.test", RecordType::A)).await.unwrap();
    sleep(Duration::from_millis(100)).await;
    write_frame(&mut c, &query(2, "aaaa.test", RecordType::AAAA)).await.unwrap();
    let mut answered = Vec::new();
    for _ in 0..2 {
        let answer = timeout(Duration::from_secs(8), read_frame(&mut c))
            .await
            .expect("every query is answered")
            .unwrap()
            .expect("not closed");
        let m = parse(&answer);
        answered.push((m.metadata.id, m.metadata.response_code));
    }
    answered.sort_by_key(|(id, _)| *id);
    assert_eq!(answered, [(1, ResponseCode::ServFail), (2, ResponseCode::ServFail)]);
}

#[tokio::test]
async fn a_client_that_does_not_read_holds_no_inflight_slot() {
    // Answers come 300 ms late, when the client's answer queue is already full.
    let up = TestUpstream::start(UpstreamOptions {
        fault: Fault::Delay(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    let mut stub = stub_with("tcp_write_timeout_ms = 60000\nmax_inflight = 4\n", &up).await;
    let big = query(1, "big.test", RecordType::TXT);
    assert_eq!(parse(&tcp_query(stub.addr, &big).await.unwrap()).answers.len(), 40);
    let mut hog = connect_from("127.0.0.1", stub.addr).await;
    let mut burst = Vec::new();
    for i in 0..4u16 {
        burst.extend_from_slice(&frame(&query(100 + i, &fresh_a_name(), RecordType::A)));
    }
    for i in 0..4000u16 {
        burst.extend_from_slice(&frame(&query(1000 + i, "big.test", RecordType::TXT)));
    }
    let _ = timeout(Duration::from_secs(5), hog.write_all(&burst)).await;
    // Its misses reach the upstream and are answered 300 ms later; their answers then
    // wait for the client, their slots do not.
    assert!(eventually(Duration::from_secs(5), || up.queries_received() >= 5).await);
    sleep(Duration::from_millis(600)).await;
    let daemon = stub.daemon();
    assert!(eventually(Duration::from_secs(5), || daemon.in_flight() == 0).await, "{}", daemon.in_flight());
    assert_eq!(daemon.tcp_connections(), 1, "the client that does not read is still connected");
    // So another client's miss goes upstream, not SERVFAIL at the cap.
    let m = parse(&tcp_query(stub.addr, &query(2, &fresh_a_name(), RecordType::A)).await.unwrap());
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
    drop(hog);
}
