//! Tests of the plain forwarder: the schedule on virtual time (`schedule`), the wire
//! checks, and the driver end to end against small UDP/TCP servers on 127.0.0.1 that
//! each test starts itself.

mod schedule;

use std::{net::SocketAddr, time::Duration};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, opt::EdnsCode},
    },
};
use proptest::prelude::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
    sync::mpsc,
    time::{Instant, timeout},
};

use super::{
    PlainUpstream,
    exchange::{Verdict, judge, udp_wire},
};
use crate::{
    message::{ClientQuery, EDNS_PAYLOAD},
    upstream::{dot::framing::question_bytes, pool::ForwardError, race::Transport},
};

const GOOD: [u8; 4] = [192, 0, 2, 1];
const FORGED: [u8; 4] = [203, 0, 113, 66];
/// A bound no passing test comes near, so a failure is a hang caught, not a slow run.
const LIMIT: Duration = Duration::from_secs(10);
/// Well under a try's 2 s give-up time and the 30 s stagger these tests use: only a
/// failure noticed at once gets there in time.
const AT_ONCE: Duration = Duration::from_secs(1);

fn query(name: &str) -> ClientQuery {
    ClientQuery {
        id: 0x1234,
        query: Query::query(Name::from_ascii(name).unwrap(), RecordType::A),
        recursion_desired: true,
        checking_disabled: false,
        authentic_data: false,
        edns: None,
        bypass_cache: false,
    }
}

fn upstream(servers: Vec<SocketAddr>, stagger: Duration) -> PlainUpstream {
    PlainUpstream::new(3, "vpn", servers, stagger)
}

/// An answer to `query` (its ID and question): one A record, or none when truncated.
fn answer(query: &[u8], ip: [u8; 4], tc: bool) -> Vec<u8> {
    let q = Message::from_vec(query).unwrap();
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.recursion_available = true;
    m.metadata.truncation = tc;
    m.add_query(q.queries[0].clone());
    if !tc {
        m.add_answer(Record::from_rdata(
            q.queries[0].name().clone(),
            60,
            RData::A(A::from(std::net::Ipv4Addr::from(ip))),
        ));
    }
    m.to_vec().unwrap()
}

/// A header-only error answer under `query`'s ID (QR, RD, RA, the RCODE, no question).
fn questionless(query: &[u8], rcode: u8) -> Vec<u8> {
    vec![query[0], query[1], 0x81, 0x80 | rcode, 0, 0, 0, 0, 0, 0, 0, 0]
}

fn first_a(wire: &[u8]) -> Option<[u8; 4]> {
    Message::from_vec(wire).unwrap().answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0.octets()),
        _ => None,
    })
}

/// What a test server saw: when, and the query.
type Seen = mpsc::UnboundedReceiver<(Instant, Vec<u8>)>;

/// A UDP server on 127.0.0.1 that answers each of its first 8 queries with the
/// datagrams `reply` makes of it, in order.
async fn udp_server(reply: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static) -> (SocketAddr, Seen) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    serve_udp(socket, reply)
}

fn serve_udp(
    socket: UdpSocket,
    reply: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
) -> (SocketAddr, Seen) {
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        for _ in 0..8 {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else { return };
            let _ = tx.send((Instant::now(), buf[..n].to_vec()));
            for datagram in reply(&buf[..n]) {
                let _ = socket.send_to(&datagram, from).await;
            }
        }
    });
    (addr, rx)
}

/// A UDP socket and a TCP listener on the same 127.0.0.1 port.
async fn udp_and_tcp() -> (UdpSocket, TcpListener) {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// Serves up to 2 TCP connections, one framed query each, answering with `reply`.
fn serve_tcp(listener: TcpListener, reply: impl Fn(&[u8]) -> Vec<u8> + Send + 'static) -> Seen {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for _ in 0..2 {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).await.is_err() {
                continue;
            }
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut q).await.is_err() {
                continue;
            }
            let _ = tx.send((Instant::now(), q.clone()));
            let a = reply(&q);
            let mut out = (a.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&a);
            let _ = stream.write_all(&out).await;
        }
    });
    rx
}

/// The datagrams waiting on a socket nobody reads (a silent server).
fn drain_socket(socket: &UdpSocket) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_535];
    for _ in 0..16 {
        match socket.try_recv_from(&mut buf) {
            Ok((n, _)) => out.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    out
}

/// A 127.0.0.1 port with nothing bound: a UDP query to it draws ICMP port unreachable.
async fn closed_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

// The wire checks.

#[test]
fn the_udp_query_has_our_edns_size_and_neither_keepalive_nor_padding() {
    let wire = udp_wire(query("Route.Example.").upstream_wire(false));
    let msg = Message::from_vec(&wire).unwrap();
    let edns = msg.edns.expect("an OPT");
    assert_eq!(edns.max_payload(), EDNS_PAYLOAD);
    assert!(edns.option(EdnsCode::Keepalive).is_none(), "RFC 7828 §3.2.1: never over UDP");
    assert!(edns.option(EdnsCode::Padding).is_none(), "RFC 7830 §6: no padding in clear text");
    assert_eq!(msg.queries[0].name().to_ascii(), "Route.Example.");
    // Anything but upstream_wire(false)'s layout is left alone.
    let padded = query("a.test.").upstream_wire(true);
    assert_eq!(udp_wire(padded.clone()), padded);
}

#[test]
fn only_a_real_answer_is_taken() {
    let q = udp_wire(query("Name.Test.").upstream_wire(false));
    let question = question_bytes(&q).unwrap();
    let good = answer(&q, GOOD, false);
    assert_eq!(judge(&good, 0x1234, question), Verdict::Answer);
    assert_eq!(judge(&answer(&q, GOOD, true), 0x1234, question), Verdict::Truncated);
    // The name matches without case (RFC 4343).
    let lower = udp_wire(query("name.test.").upstream_wire(false));
    assert_eq!(judge(&answer(&lower, GOOD, false), 0x1234, question), Verdict::Answer);
    assert_eq!(judge(&good, 0x1235, question), Verdict::Ignore, "another ID");
    assert_eq!(judge(&q, 0x1234, question), Verdict::Ignore, "a query, not an answer");
    let other = udp_wire(query("other.test.").upstream_wire(false));
    assert_eq!(judge(&answer(&other, GOOD, false), 0x1234, question), Verdict::Ignore, "another question");
    assert_eq!(judge(&questionless(&q, 5), 0x1234, question), Verdict::NoQuestion(5));
    assert_eq!(judge(&questionless(&q, 5), 0x4321, question), Verdict::Ignore);
    assert_eq!(judge(&questionless(&q, 0), 0x1234, question), Verdict::Ignore, "NOERROR answers nothing");
    // Cut before its question ends, it answers nothing. (Cut later, it is matched as
    // DoT matches: by ID and question; the pipeline's parse refuses what follows.)
    for cut in 0..12 + question.len() {
        assert_eq!(judge(&good[..cut], 0x1234, question), Verdict::Ignore, "cut at {cut}");
    }
}

proptest! {
    #[test]
    fn judging_any_octets_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let q = udp_wire(query("p.test.").upstream_wire(false));
        let question = question_bytes(&q).unwrap();
        let _ = judge(&bytes, 0x1234, question);
        let mut good = answer(&q, GOOD, false);
        for (at, value) in flips {
            let i = at.index(good.len());
            good[i] = value;
        }
        let _ = judge(&good, 0x1234, question);
    }
}

// The driver, end to end.

#[tokio::test]
async fn a_udp_answer_comes_back_with_the_clients_id() {
    let (addr, mut seen) = udp_server(|q| vec![answer(q, GOOD, false)]).await;
    let up = upstream(vec![addr], Duration::from_millis(250));
    let (wire, info) = timeout(LIMIT, up.forward(&query("a.test."))).await.unwrap().unwrap();
    assert_eq!(&wire[..2], &[0x12, 0x34]);
    assert_eq!(first_a(&wire), Some(GOOD));
    assert_eq!((info.upstream, &*info.upstream_name, info.peer), (3, "vpn", addr));
    assert_eq!(info.transport, Transport::Plain);
    assert!(!info.authenticated);
    let (_, sent) = seen.try_recv().unwrap();
    let edns = Message::from_vec(&sent).unwrap().edns.unwrap();
    assert!(edns.option(EdnsCode::Keepalive).is_none() && edns.option(EdnsCode::Padding).is_none());
    assert!(seen.try_recv().is_err(), "answered at once: no retransmission");
}

#[tokio::test]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    // The TCP answer is taken even with TC set: there is nothing further to fall back to.
    for tcp_tc in [false, true] {
        let (udp, tcp) = udp_and_tcp().await;
        let (addr, mut udp_seen) = serve_udp(udp, |q| vec![answer(q, FORGED, true)]);
        let mut tcp_seen = serve_tcp(tcp, move |q| {
            let mut a = answer(q, GOOD, false);
            if tcp_tc {
                a[2] |= 0x02;
            }
            a
        });
        let up = upstream(vec![addr], Duration::from_millis(250));
        let (wire, info) = timeout(LIMIT, up.forward(&query("big.test."))).await.unwrap().unwrap();
        assert_eq!(first_a(&wire), Some(GOOD), "the TCP answer, not the truncated UDP one");
        assert_eq!(&wire[..2], &[0x12, 0x34]);
        assert_eq!(info.peer, addr);
        assert!(udp_seen.try_recv().is_ok());
        let (_, tcp_query) = tcp_seen.try_recv().expect("asked over TCP");
        assert_eq!(Message::from_vec(&tcp_query).unwrap().queries[0].name().to_ascii(), "big.test.");
    }
}

#[tokio::test]
async fn datagrams_that_answer_nothing_asked_are_ignored() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let forger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        let (n, client) = server.recv_from(&mut buf).await.unwrap();
        let q = buf[..n].to_vec();
        // A perfect answer from another port: the connected socket never sees it.
        forger.send_to(&answer(&q, FORGED, false), client).await.unwrap();
        let mut wrong_id = answer(&q, FORGED, false);
        wrong_id[1] ^= 1;
        let mut other = q.clone();
        other[12..].copy_from_slice(&udp_wire(query("b.test.").upstream_wire(false))[12..]);
        let not_an_answer = q.clone();
        for bad in [wrong_id, answer(&other, FORGED, false), not_an_answer, vec![1, 2, 3], Vec::new()] {
            server.send_to(&bad, client).await.unwrap();
        }
        server.send_to(&answer(&q, GOOD, false), client).await.unwrap();
    });
    let up = upstream(vec![addr], Duration::from_millis(250));
    let (wire, _) = timeout(LIMIT, up.forward(&query("a.test."))).await.unwrap().unwrap();
    assert_eq!(first_a(&wire), Some(GOOD));
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_silent_first_server_costs_one_stagger() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (healthy, mut seen) = udp_server(|q| vec![answer(q, GOOD, false)]).await;
    let stagger = Duration::from_millis(100);
    let up = upstream(vec![silent.local_addr().unwrap(), healthy], stagger);
    let t0 = Instant::now();
    let (wire, info) = timeout(LIMIT, up.forward(&query("a.test."))).await.unwrap().unwrap();
    let elapsed = t0.elapsed();
    assert_eq!(first_a(&wire), Some(GOOD));
    assert_eq!(info.peer, healthy);
    // Virtual time: the second server was asked one stagger in, before any resend.
    assert!(elapsed >= stagger && elapsed < 2 * stagger, "{elapsed:?}");
    let (asked_at, _) = seen.try_recv().unwrap();
    assert!(asked_at >= t0 + stagger);
    assert_eq!(drain_socket(&silent).len(), 1, "the first server was asked first, once");
}

#[tokio::test]
async fn a_closed_port_moves_on_to_the_next_server_at_once() {
    let (healthy, _seen) = udp_server(|q| vec![answer(q, GOOD, false)]).await;
    // A stagger far beyond the bound: only the port-unreachable error can start server 2.
    let up = upstream(vec![closed_port().await, healthy], Duration::from_secs(30));
    let (wire, info) = timeout(AT_ONCE, up.forward(&query("a.test."))).await.expect("not a stagger").unwrap();
    assert_eq!(first_a(&wire), Some(GOOD));
    assert_eq!(info.peer, healthy);
}

#[tokio::test]
async fn an_error_without_a_question_moves_on_at_once_and_is_no_answer() {
    let (refusing, _r) = udp_server(|q| vec![questionless(q, 5)]).await;
    let (healthy, _h) = udp_server(|q| vec![answer(q, GOOD, false)]).await;
    let up = upstream(vec![refusing, healthy], Duration::from_secs(30));
    let (wire, info) = timeout(AT_ONCE, up.forward(&query("a.test."))).await.expect("not a stagger").unwrap();
    assert_eq!((first_a(&wire), info.peer), (Some(GOOD), healthy));

    let alone = upstream(vec![refusing], Duration::from_secs(30));
    let err = timeout(AT_ONCE, alone.forward(&query("a.test."))).await.unwrap().unwrap_err();
    assert_eq!(
        err,
        ForwardError::NoConnection(format!("vpn: {refusing} answered REFUSED without a question"))
    );
}

#[tokio::test]
async fn a_refused_tcp_retry_moves_on_to_the_next_server() {
    // Truncates over UDP, and nothing listens on its TCP port.
    let (truncating, _t) = udp_server(|q| vec![answer(q, FORGED, true)]).await;
    let (healthy, _h) = udp_server(|q| vec![answer(q, GOOD, false)]).await;
    let up = upstream(vec![truncating, healthy], Duration::from_secs(30));
    let (wire, info) = timeout(AT_ONCE, up.forward(&query("a.test."))).await.expect("not a stagger").unwrap();
    assert_eq!((first_a(&wire), info.peer), (Some(GOOD), healthy));
}

#[tokio::test(start_paused = true)]
async fn every_server_silent_ends_in_bounded_time_naming_each() {
    let silent: Vec<UdpSocket> = vec![
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    ];
    let addrs: Vec<SocketAddr> = silent.iter().map(|s| s.local_addr().unwrap()).collect();
    let stagger = Duration::from_millis(50);
    let up = upstream(addrs.clone(), stagger);
    let t0 = Instant::now();
    let err = timeout(LIMIT, up.forward(&query("a.test."))).await.expect("ends by itself").unwrap_err();
    let elapsed = t0.elapsed();
    let ForwardError::NoConnection(reason) = err else { panic!("{err:?}") };
    for addr in &addrs {
        assert!(reason.contains(&format!("{addr} no answer to 2 udp queries in 2000 ms")), "{reason}");
    }
    // The last server is asked 2 staggers in and given 2 s (virtual time).
    assert!(elapsed <= 2 * stagger + Duration::from_secs(2), "{elapsed:?}");
    for s in &silent {
        let got = drain_socket(s);
        assert_eq!(got.len(), 2, "one send and one retransmission");
        assert_eq!(got[0], got[1], "the retransmission is the same query, same ID");
    }
}

#[tokio::test(start_paused = true)]
async fn a_single_silent_server_is_asked_again_before_giving_up() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Answers only the second copy: the retransmission is what gets the answer.
    let (addr, mut seen) = serve_udp(socket, {
        let count = std::sync::atomic::AtomicUsize::new(0);
        move |q| {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n == 0 { Vec::new() } else { vec![answer(q, GOOD, false)] }
        }
    });
    let stagger = Duration::from_millis(250);
    let up = upstream(vec![addr], stagger);
    let t0 = Instant::now();
    let (wire, _) = timeout(LIMIT, up.forward(&query("a.test."))).await.unwrap().unwrap();
    assert_eq!(first_a(&wire), Some(GOOD));
    let (first, _) = seen.try_recv().unwrap();
    let (second, _) = seen.try_recv().unwrap();
    assert_eq!((first - t0, second - t0), (Duration::ZERO, 2 * stagger));
}

#[test]
fn the_handle_and_its_exchanges_can_cross_threads() {
    fn send_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let up = upstream(Vec::new(), Duration::from_millis(250));
    send_sync(&up);
    let q = query("a.test.");
    send(&up.forward(&q));
}

#[test]
fn servers_can_be_replaced() {
    let a: SocketAddr = "192.0.2.1:53".parse().unwrap();
    let b: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
    let up = upstream(vec![a], Duration::from_millis(250));
    let clone = up.clone();
    clone.set_servers(vec![b, a]);
    assert_eq!(up.servers(), vec![b, a]);
}

#[tokio::test]
async fn no_servers_is_an_error_at_once() {
    let up = upstream(Vec::new(), Duration::from_millis(250));
    let err = timeout(LIMIT, up.forward(&query("a.test."))).await.unwrap().unwrap_err();
    assert_eq!(err, ForwardError::NoConnection("vpn: no nameservers".into()));
}
