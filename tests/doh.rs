//! DNS over HTTPS (RFC 8484 over HTTP/2) end to end: UDP clients → stubborn (in-process)
//! → the in-process DoH server of `common::doh_upstream` (and the DoT one, for races and
//! spares). What the requests look like, authentication on the HTTPS port, what each
//! server failure costs a client, and DoT preferred over DoH whenever it works.
//!
//! Every daemon here has `query_timeout_ms = 4000`: a failure that must be reported "at
//! once" is asserted well under it ([`AT_ONCE`]), so the assertion tells failing at once
//! from waiting out the timeout without asserting speed.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use common::{
    ChainKind, DohFault, DohOptions, DohUpstream, TestUpstream, UpstreamOptions,
    dns::{answer_strings, fresh_a_name, padding_of, parse, query, wire_id},
    doh_upstream::{DNS_MESSAGE, WRONG_QUESTION_NAME},
    udp_query, unrelated_key_pin,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        RecordType,
        rdata::opt::{EdnsCode, EdnsOption},
    },
};
use stubborn::{
    config::{Config, ConfigOrigin},
    daemon::Daemon,
    upstream::{pool::Pool, race::Transport},
};
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// `query_timeout_ms` of every daemon in this file.
const QUERY_TIMEOUT: Duration = Duration::from_millis(4000);
/// "At once": half the query timeout, ample for a loopback exchange on a loaded machine.
const AT_ONCE: Duration = Duration::from_millis(2000);
/// How long a test client waits for any answer (past the query timeout).
const UDP_WAIT: Duration = Duration::from_secs(10);

/// A daemon on 127.0.0.1:<ephemeral>, one serving thread (so one pool sees every query).
struct Stub {
    addr: SocketAddr,
    daemon: Daemon,
    _dir: TempDir,
}

impl Stub {
    /// `sections` are whole config sections (`[racing]`, `[cache]`, ...), `upstreams` the
    /// `[[upstream]]` blocks.
    async fn start(sections: &str, upstreams: &str, dir: TempDir) -> Stub {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nquery_timeout_ms = {}\nthreads = 1\n{sections}\n{upstreams}",
            QUERY_TIMEOUT.as_millis()
        );
        let config = Config::from_toml(&text, ConfigOrigin::Embedded)
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        let daemon = Daemon::start(&config).await.expect("daemon starts");
        Stub { addr: daemon.local_addrs[0], daemon, _dir: dir }
    }

    /// One upstream whose DoT port refuses (RST) and whose HTTPS port is `doh`, pinned
    /// to `doh`'s leaf key.
    async fn doh_only(doh: &DohUpstream, sections: &str) -> Stub {
        let block =
            upstream("doh", doh.addr.ip(), closed_port(), doh.addr.port(), &pins(&[&doh.leaf_key_pin]));
        Stub::start(sections, &block, tempfile::tempdir().unwrap()).await
    }

    fn pool(&self) -> Pool {
        self.daemon.pool()
    }

    /// The transport of the connection queries use now.
    fn transport(&self) -> Option<Transport> {
        self.pool().current().map(|c| c.info().transport)
    }
}

/// One `[[upstream]]` block on `ip` with DoT on `tls_port`, DoH on `https_port`.
fn upstream(name: &str, ip: IpAddr, tls_port: u16, https_port: u16, auth: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\naddresses = [\"{ip}\"]\ntls_port = {tls_port}\nhttps_port = {https_port}\n{auth}"
    )
}

/// A DoT-only `[[upstream]]` block for `up`, pinned to its leaf.
fn dot_upstream(name: &str, up: &TestUpstream) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\naddresses = [\"{}\"]\ntls_port = {}\n{}",
        up.addr.ip(),
        up.addr.port(),
        pins(&[&up.leaf_key_pin])
    )
}

fn pins(pins: &[&str]) -> String {
    let list: Vec<String> = pins.iter().map(|p| format!("\"{p}\"")).collect();
    format!("pins = [{}]\n", list.join(", "))
}

/// A loopback TCP port with nothing listening: connecting gets an RST.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback address of its own (127.77.x.y), port 0: a server there is "another
/// server" to the pool, which puts its warm spare on another IP than the primary's.
fn other_loopback() -> SocketAddr {
    SocketAddr::new(common::private_listen_addr().ip(), 0)
}

async fn ask(stub: &Stub, id: u16, name: &str, rtype: RecordType) -> Message {
    parse(&udp_query(stub.addr, &query(id, name, rtype), UDP_WAIT).await.unwrap())
}

/// Asks for a fresh name (never a cache hit); returns the answer and how long it took.
async fn ask_fresh(stub: &Stub) -> (Message, Duration) {
    let started = Instant::now();
    let m = ask(stub, 7, &fresh_a_name(), RecordType::A).await;
    (m, started.elapsed())
}

fn assert_answered(m: &Message) {
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert_eq!(answer_strings(m), vec!["192.0.2.1".to_string()]);
}

/// The EDE (RFC 8914) of an answer: info-code and extra text.
fn ede(m: &Message) -> Option<(u16, String)> {
    match m.edns.as_ref()?.options().get(EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(15, data) if data.len() >= 2 => {
            Some((u16::from_be_bytes([data[0], data[1]]), String::from_utf8_lossy(&data[2..]).into_owned()))
        }
        _ => None,
    }
}

/// Polls `pred` every 20 ms until it holds or `within` passes; returns whether it held.
async fn eventually(within: Duration, pred: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !pred() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

// ---------------------------------------------------------------------------------------
// The requests.

#[tokio::test]
async fn where_853_refuses_queries_go_over_doh_as_padded_posts_sharing_one_connection() {
    let doh = DohUpstream::start(DohOptions::default()).await;
    let stub = Stub::doh_only(&doh, "").await;
    let m = ask(&stub, 0x4242, "a.test", RecordType::A).await;
    assert_eq!(m.metadata.id, 0x4242, "the client's ID restored");
    assert_answered(&m);
    assert_eq!(stub.transport(), Some(Transport::Https));

    let req = doh.last_request().expect("a request");
    assert_eq!(req.method, http::Method::POST);
    assert_eq!(req.scheme.as_deref(), Some("https"));
    assert_eq!(req.path, "/dns-query");
    // Only pins: the authority is the address (the port, not being 443, is written).
    assert_eq!(req.authority, Some(format!("127.0.0.1:{}", doh.addr.port())));
    assert_eq!(req.header("content-type"), DNS_MESSAGE);
    assert_eq!(req.header("accept"), DNS_MESSAGE);
    assert_eq!(req.header("content-length"), req.body.len().to_string());
    assert_eq!(wire_id(&req.body), 0, "message ID 0 (RFC 8484 §4.1)");
    assert_eq!(req.body.len() % 128, 0, "padded to 128-octet blocks: {} octets", req.body.len());
    let sent = req.message();
    assert_eq!(sent.queries[0].name().to_ascii(), "a.test.");
    assert_eq!(sent.queries[0].query_type(), RecordType::A);
    let opt = sent.edns.as_ref().expect("an OPT record");
    assert!(padding_of(&sent).is_some(), "a padding option");
    assert!(opt.option(EdnsCode::Keepalive).is_none(), "no edns-tcp-keepalive over HTTP/2");

    // Fifty at once, distinct (so none is coalesced): fifty streams on the one connection.
    let tasks: Vec<_> = (0..50u16)
        .map(|i| {
            let addr = stub.addr;
            tokio::spawn(async move {
                let name = format!("c{i}.a.test");
                let m =
                    parse(&udp_query(addr, &query(1000 + i, &name, RecordType::A), UDP_WAIT).await.unwrap());
                assert_eq!(m.metadata.id, 1000 + i);
                assert_eq!(m.queries[0].name().to_ascii(), format!("{name}."));
                assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(doh.connections_accepted(), 1, "one connection");
    assert_eq!(doh.h2_connections(), 1);
    assert_eq!(doh.streams(), 51, "one stream per query");
    for req in doh.requests() {
        assert_eq!((req.method.as_str(), wire_id(&req.body), req.body.len() % 128), ("POST", 0, 0));
    }
}

#[tokio::test]
async fn the_configured_https_path_is_the_one_requested() {
    let doh = DohUpstream::start(DohOptions { path: "/resolve/v1".into(), ..Default::default() }).await;
    let auth = pins(&[&doh.leaf_key_pin]) + "https_path = \"/resolve/v1\"\n";
    let block = upstream("doh", doh.addr.ip(), closed_port(), doh.addr.port(), &auth);
    let stub = Stub::start("", &block, tempfile::tempdir().unwrap()).await;
    assert_answered(&ask_fresh(&stub).await.0);
    assert_eq!(doh.last_request().unwrap().path, "/resolve/v1");
}

// ---------------------------------------------------------------------------------------
// Authentication: exactly as for DoT, on the HTTPS port.

#[tokio::test]
async fn a_pin_mismatch_on_the_https_port_is_a_refusal() {
    let doh = DohUpstream::start(DohOptions::default()).await;
    let block =
        upstream("doh", doh.addr.ip(), closed_port(), doh.addr.port(), &pins(&[&unrelated_key_pin()]));
    let stub = Stub::start("", &block, tempfile::tempdir().unwrap()).await;
    let m = ask(&stub, 1, "a.test", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.answers.is_empty());
    let (code, text) = ede(&m).expect("an EDE on the SERVFAIL");
    assert_eq!(code, 23, "Network Error");
    assert!(text.contains("pin-mismatch"), "{text}");
    assert!(doh.connections_accepted() >= 1, "the HTTPS port was tried");
    assert_eq!(doh.h2_connections(), 0, "no HTTP/2 with an unauthenticated server");
    assert_eq!(doh.streams(), 0, "no query may reach it");
}

#[tokio::test]
async fn a_server_with_the_pinned_certificate_but_not_its_key_is_refused() {
    let doh = DohUpstream::with_fault(DohFault::WrongKey).await;
    let stub = Stub::doh_only(&doh, "").await;
    let m = ask(&stub, 1, "a.test", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.answers.is_empty());
    assert!(doh.connections_accepted() >= 1);
    assert_eq!(doh.streams(), 0);
}

#[tokio::test]
async fn ca_and_tls_name_authenticate_doh_and_name_the_authority() {
    let doh =
        DohUpstream::start(DohOptions { chain: ChainKind::WithIntermediate, ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &doh.ca_pem).unwrap();
    let auth = |name: &str| format!("tls_name = \"{name}\"\nca_file = \"{}\"\n", ca.display());
    let good = upstream("doh", doh.addr.ip(), closed_port(), doh.addr.port(), &auth("dns.test"));
    let bad = upstream("doh", doh.addr.ip(), closed_port(), doh.addr.port(), &auth("other.test"));
    let wrong_name = Stub::start("", &bad, tempfile::tempdir().unwrap()).await;
    let m = ask(&wrong_name, 1, "a.test", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "a leaf for another name is refused");
    assert_eq!(doh.streams(), 0);

    let stub = Stub::start("", &good, dir).await;
    assert_answered(&ask(&stub, 2, "a.test", RecordType::A).await);
    let req = doh.last_request().unwrap();
    assert_eq!(req.authority, Some(format!("dns.test:{}", doh.addr.port())), "the tls_name is the authority");
}

#[tokio::test]
async fn a_server_that_does_not_select_h2_is_refused() {
    for alpn in [vec![], vec![b"http/1.1".to_vec()]] {
        let doh = DohUpstream::start(DohOptions { alpn: alpn.clone(), ..Default::default() }).await;
        let stub = Stub::doh_only(&doh, "").await;
        let m = ask(&stub, 1, "a.test", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "ALPN {alpn:?}");
        assert_eq!(ede(&m).map(|e| e.0), Some(23), "ALPN {alpn:?}: {:?}", ede(&m));
        assert!(doh.connections_accepted() >= 1, "ALPN {alpn:?}: the HTTPS port was tried");
        assert_eq!(doh.h2_connections(), 0, "ALPN {alpn:?}: no HTTP/2 without ALPN h2");
        assert_eq!(doh.streams(), 0, "ALPN {alpn:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Server failures.

/// Under `fault`, a query fails at once with SERVFAIL whose EDE says `why`, and is not
/// asked again; three in a row (`[health] dead_after_unanswered`, 3 by default) and the
/// connection is replaced, two do not; once the server is well again, the new connection
/// answers. (The silence rule is set far off, so only the streak can condemn.)
async fn fails_at_once_and_three_replace_the_connection(fault: DohFault, why: &str) {
    let doh = DohUpstream::start(DohOptions::default()).await;
    let stub = Stub::doh_only(&doh, "[health]\ndead_after_silence_ms = 60000\n").await;
    assert_answered(&ask_fresh(&stub).await.0);
    assert_eq!(doh.connections_accepted(), 1);
    doh.set_fault(fault.clone());
    for i in 1..=3 {
        let (m, took) = ask_fresh(&stub).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{fault:?} query {i}");
        assert!(m.answers.is_empty(), "{fault:?} query {i}: {m:?}");
        assert!(took < AT_ONCE, "{fault:?} query {i}: failed at once, not after the timeout: {took:?}");
        let (_, text) = ede(&m).expect("an EDE on the SERVFAIL");
        assert!(text.contains(why), "{fault:?} query {i}: {text}");
        assert_eq!(doh.streams(), 1 + i, "{fault:?}: one stream per query, no retry on the same server");
        if i == 2 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(doh.connections_accepted(), 1, "{fault:?}: two failures in a row keep the connection");
        }
    }
    assert!(
        doh.wait_for_connections(2, Duration::from_secs(5)).await,
        "{fault:?}: three failures in a row replace the connection"
    );
    doh.set_fault(DohFault::None);
    assert_answered(&ask_fresh(&stub).await.0);
    assert_eq!(doh.connections_accepted(), 2, "{fault:?}");
    assert_eq!(stub.transport(), Some(Transport::Https));
}

#[tokio::test]
async fn http_500_fails_the_query_at_once_and_three_replace_the_connection() {
    fails_at_once_and_three_replace_the_connection(DohFault::Status(500), "HTTP status 500").await;
}

#[tokio::test]
async fn a_wrong_content_type_fails_the_query_at_once_and_three_replace_the_connection() {
    fails_at_once_and_three_replace_the_connection(DohFault::WrongContentType, "content type").await;
}

#[tokio::test]
async fn a_stream_reset_fails_the_query_at_once_and_three_replace_the_connection() {
    let fault = DohFault::ResetStream(h2::Reason::INTERNAL_ERROR);
    fails_at_once_and_three_replace_the_connection(fault, "stream reset").await;
}

#[tokio::test]
async fn an_answer_to_another_question_fails_the_query_at_once_and_three_replace_the_connection() {
    let why = "not the answer";
    fails_at_once_and_three_replace_the_connection(DohFault::WrongQuestion, why).await;
}

/// An HTTP error is an answer, not silence: one failed stream on a connection that then
/// idles must not get the connection declared "silent with queries waiting"
/// (`[health] dead_after_silence_ms`, 2 s by default) and replaced.
#[tokio::test]
async fn one_http_error_then_idle_does_not_condemn_the_connection() {
    let doh = DohUpstream::with_fault(DohFault::Status(500)).await;
    let stub = Stub::doh_only(&doh, "").await;
    let (m, _) = ask_fresh(&stub).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    doh.set_fault(DohFault::None);
    // Nothing in flight from here on: past dead_after_silence with nothing owed.
    let replaced = doh.wait_for_connections(2, Duration::from_millis(3500)).await;
    assert!(!replaced, "an idle connection whose last stream got an HTTP error was replaced");
    assert_answered(&ask_fresh(&stub).await.0);
    assert_eq!(doh.connections_accepted(), 1);
}

#[tokio::test]
async fn an_answer_to_another_question_is_never_cached() {
    let doh = DohUpstream::with_fault(DohFault::WrongQuestion).await;
    let stub = Stub::doh_only(&doh, "[cache]\nservfail_ttl = 0\n").await;
    let m = ask(&stub, 1, "aaaa.test", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.answers.is_empty(), "{m:?}");
    doh.set_fault(DohFault::None);
    // The answer the server sent was for wrong.a.test A: had it been cached under its own
    // question, this would be a cache hit and never reach the server.
    let streams = doh.streams();
    let m = ask(&stub, 2, WRONG_QUESTION_NAME, RecordType::A).await;
    assert_answered(&m);
    assert_eq!(doh.streams(), streams + 1, "a cache miss: the wrong answer was not stored");
    let m = ask(&stub, 3, "aaaa.test", RecordType::AAAA).await;
    assert_eq!(answer_strings(&m), vec!["2001:db8::1".to_string()]);
}

/// A DoH primary (upstream "doh": 853 refused) with a warm spare over DoT (upstream
/// "good", on another loopback address), both up and answered once.
async fn doh_primary_with_spare() -> (DohUpstream, TestUpstream, Stub) {
    let doh = DohUpstream::start(DohOptions::default()).await;
    let good = TestUpstream::start(UpstreamOptions { bind: other_loopback(), ..Default::default() }).await;
    let blocks = upstream("doh", doh.addr.ip(), closed_port(), doh.addr.port(), &pins(&[&doh.leaf_key_pin]))
        + &dot_upstream("good", &good);
    // DoH is the primary: the second upstream's DoT starts no sooner than 2 s into a race.
    let stub =
        Stub::start("[racing]\nattempt_delay_ms = 2000\n", &blocks, tempfile::tempdir().unwrap()).await;
    assert_answered(&ask_fresh(&stub).await.0);
    assert_eq!(stub.transport(), Some(Transport::Https));
    assert!(
        eventually(Duration::from_secs(5), || stub.pool().spare().is_some()).await,
        "the warm spare came up"
    );
    (doh, good, stub)
}

/// With `fault` on the DoH primary, a query is asked there first and then, at once, on
/// the DoT spare, which answers.
async fn asked_on_the_spare_at_once(fault: DohFault) {
    let (doh, good, stub) = doh_primary_with_spare().await;
    doh.set_fault(fault);
    let (streams, answered_by_good) = (doh.streams(), good.queries_received());
    let (m, took) = ask_fresh(&stub).await;
    assert_answered(&m);
    assert!(took < AT_ONCE, "asked the spare at once: {took:?}");
    assert_eq!(doh.streams(), streams + 1, "the primary was asked first");
    assert_eq!(good.queries_received(), answered_by_good + 1, "the spare answered");
}

#[tokio::test]
async fn an_http_error_is_answered_through_the_spare_at_once() {
    asked_on_the_spare_at_once(DohFault::Status(503)).await;
}

#[tokio::test]
async fn a_refused_stream_is_asked_again_on_the_spare_at_once() {
    // REFUSED_STREAM: the server did not process the stream (RFC 9113 §8.7), so the
    // query is safe to send elsewhere.
    asked_on_the_spare_at_once(DohFault::ResetStream(h2::Reason::REFUSED_STREAM)).await;
}

#[tokio::test]
async fn a_stalled_stream_is_hedged_to_the_spare() {
    let (doh, good, stub) = doh_primary_with_spare().await;
    doh.set_fault(DohFault::Stall);
    let hedges = stub.pool().stats().hedges_sent.load(Ordering::Relaxed);
    let (m, took) = ask_fresh(&stub).await;
    assert_answered(&m);
    assert!(took < AT_ONCE, "answered through the hedge, not the timeout: {took:?}");
    assert!(stub.pool().stats().hedges_sent.load(Ordering::Relaxed) > hedges, "hedged");
    assert!(good.queries_received() >= 1, "the spare answered");
}

#[tokio::test]
async fn a_stalled_stream_without_a_spare_is_servfail_at_the_timeout_and_the_silent_connection_is_replaced() {
    let doh = DohUpstream::start(DohOptions::default()).await;
    // Declared dead 3 s into the silence: once within the 4 s timeout, never twice.
    let stub = Stub::doh_only(&doh, "[health]\ndead_after_silence_ms = 3000\n").await;
    assert_answered(&ask_fresh(&stub).await.0);
    doh.set_fault(DohFault::Stall);
    let (m, took) = ask_fresh(&stub).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.answers.is_empty());
    assert_eq!(ede(&m).map(|e| e.0), Some(22), "No Reachable Authority: {:?}", ede(&m));
    assert!(took >= QUERY_TIMEOUT - Duration::from_millis(200), "waited for the timeout: {took:?}");
    assert!(took < QUERY_TIMEOUT + Duration::from_secs(2), "bounded by the timeout: {took:?}");
    // Silent with a query waiting for dead_after_silence: declared dead and replaced (the
    // query, lost with it, was asked again on the new one and timed out there).
    assert_eq!(doh.connections_accepted(), 2, "the silent connection was replaced");
    assert_eq!(doh.streams(), 3);
    doh.set_fault(DohFault::None);
    assert_answered(&ask_fresh(&stub).await.0);
}

#[tokio::test]
async fn a_connection_closed_under_a_query_is_retried_on_a_new_one() {
    // Each connection answers one stream, then says GOAWAY and closes at the next.
    let doh = DohUpstream::with_fault(DohFault::CloseAfter(1)).await;
    let stub = Stub::doh_only(&doh, "").await;
    for i in 1..=3 {
        let (m, took) = ask_fresh(&stub).await;
        assert_answered(&m);
        assert!(took < AT_ONCE, "query {i}: retried at once: {took:?}");
        assert_eq!(doh.connections_accepted(), i, "query {i}");
    }
    // Streams: 1 on the first connection; then per query one lost to the close, one answered.
    assert_eq!(doh.streams(), 5);
    assert_eq!(doh.answers_sent(), 3);
    // Every new connection resumed the TLS session of an earlier one (the DoH session
    // cache is the upstream's, shared by its connections).
    assert_eq!(doh.tls_handshakes(), 3);
    assert_eq!(doh.handshakes_resumed(), 2, "reconnects resume the TLS session");
}

#[tokio::test]
async fn the_age_header_comes_off_every_ttl() {
    let doh = DohUpstream::with_fault(DohFault::Age(100)).await;
    let stub = Stub::doh_only(&doh, "").await;
    let m = ask(&stub, 1, "a.test", RecordType::A).await;
    assert_answered(&m);
    let ttl = m.answers[0].ttl;
    assert!((198..=200).contains(&ttl), "300 s less an Age of 100: {ttl}");
    // An Age past the TTL leaves nothing: the answer is not kept alive by the HTTP cache.
    doh.set_fault(DohFault::Age(100_000));
    let m = ask(&stub, 2, "aaaa.test", RecordType::AAAA).await;
    assert_eq!(answer_strings(&m), vec!["2001:db8::1".to_string()]);
    assert_eq!(m.answers[0].ttl, 0);
}

// ---------------------------------------------------------------------------------------
// DoT first; DoH where DoT is dropped, and only until DoT works again.

#[tokio::test]
async fn where_dot_works_it_wins_and_the_https_port_is_never_contacted() {
    let dot = TestUpstream::start(UpstreamOptions::default()).await;
    let doh = DohUpstream::start(DohOptions::default()).await;
    assert_eq!(dot.addr.ip(), doh.addr.ip(), "one server, two ports");
    let auth = pins(&[&dot.leaf_key_pin, &doh.leaf_key_pin]);
    let block = upstream("both", dot.addr.ip(), dot.addr.port(), doh.addr.port(), &auth);
    // A generous attempt delay: a slow DoT handshake on a loaded machine is still first.
    let stub = Stub::start("[racing]\nattempt_delay_ms = 1000\n", &block, tempfile::tempdir().unwrap()).await;
    for _ in 0..3 {
        assert_answered(&ask_fresh(&stub).await.0);
    }
    assert_eq!(stub.transport(), Some(Transport::Tls));
    assert_eq!(dot.queries_received(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(doh.connections_accepted(), 0, "no DoH connection while DoT works");
}

#[tokio::test]
async fn where_853_is_dropped_doh_wins_and_dot_takes_over_once_it_works() {
    // 853 accepts TCP and never answers the ClientHello: a middlebox dropping DoT.
    let dot = TestUpstream::with_fault(common::Fault::StallHandshake).await;
    let doh = DohUpstream::start(DohOptions::default()).await;
    let auth = pins(&[&dot.leaf_key_pin, &doh.leaf_key_pin]);
    let block = upstream("both", dot.addr.ip(), dot.addr.port(), doh.addr.port(), &auth);
    // A stalled DoT attempt gives up after 1 s (2 s once TCP is up), so re-races are quick.
    let stub =
        Stub::start("[racing]\nattempt_timeout_ms = 1000\n", &block, tempfile::tempdir().unwrap()).await;
    let (m, took) = ask_fresh(&stub).await;
    assert_answered(&m);
    assert!(took < AT_ONCE, "DoH about one attempt delay after DoT: {took:?}");
    assert!(dot.wait_for_connections(1, Duration::from_secs(5)).await, "DoT was tried first");
    assert_eq!(dot.handshakes_completed(), 0);
    assert_eq!(stub.transport(), Some(Transport::Https));
    assert_eq!(doh.streams(), 1);

    // The background re-race (1 s after the win) finds 853 still dropped: DoH stays.
    assert!(dot.wait_for_connections(2, Duration::from_secs(5)).await, "DoT re-raced in the background");
    assert_answered(&ask_fresh(&stub).await.0);
    assert_eq!(doh.streams(), 2);
    assert_eq!(stub.transport(), Some(Transport::Https));

    // 853 works again: a later re-race wins and replaces the DoH connection.
    dot.set_fault(common::Fault::None);
    assert!(
        eventually(Duration::from_secs(20), || stub.transport() == Some(Transport::Tls)).await,
        "back on DoT within a few re-races"
    );
    // (The client is ready on sending its Finished; the server counts on reading it.)
    assert!(dot.wait_until(Duration::from_secs(5), |d| d.handshakes_completed() >= 1).await);
    assert_eq!(dot.handshakes_completed(), 1, "one DoT connection");
    assert_answered(&ask_fresh(&stub).await.0);
    assert_eq!(dot.queries_received(), 1, "queries go over DoT again");
    assert_eq!(doh.streams(), 2, "and no longer over DoH");
}

#[tokio::test]
async fn after_a_network_change_dot_leads_the_race_again() {
    let dot = TestUpstream::with_fault(common::Fault::StallHandshake).await;
    let doh = DohUpstream::start(DohOptions::default()).await;
    let auth = pins(&[&dot.leaf_key_pin, &doh.leaf_key_pin]);
    let block = upstream("both", dot.addr.ip(), dot.addr.port(), doh.addr.port(), &auth);
    let stub =
        Stub::start("[racing]\nattempt_timeout_ms = 1000\n", &block, tempfile::tempdir().unwrap()).await;
    assert_answered(&ask_fresh(&stub).await.0);
    assert_eq!(stub.transport(), Some(Transport::Https), "DoH won where 853 is dropped");
    assert_eq!(doh.connections_accepted(), 1);

    // Another network, where 853 works: the DoH win of the old one must not lead the race
    // (it would win at once, DoT starting only one attempt delay later).
    dot.set_fault(common::Fault::None);
    stubborn::upstream::pool::network_changed(&[stub.pool()]);
    assert!(
        eventually(Duration::from_secs(5), || stub.transport() == Some(Transport::Tls)).await,
        "the race after the change is won by DoT"
    );
    assert_eq!(doh.connections_accepted(), 1, "443 not contacted: DoT led the race");
    assert_answered(&ask_fresh(&stub).await.0);
}

// ---------------------------------------------------------------------------------------
// Metrics.

/// One HTTP/1.0 GET of `/metrics`; the sample lines as `name{labels}` → value.
async fn scrape(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw)).await.unwrap().unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_https_attempts_connections_and_answers() {
    let doh = DohUpstream::start(DohOptions::default()).await;
    let block =
        upstream("doh-metrics", doh.addr.ip(), closed_port(), doh.addr.port(), &pins(&[&doh.leaf_key_pin]));
    let stub =
        Stub::start("[metrics]\nlisten = \"127.0.0.1:0\"\n", &block, tempfile::tempdir().unwrap()).await;
    let metrics = stub.daemon.metrics_addr().expect("the endpoint runs");
    assert_answered(&ask_fresh(&stub).await.0);
    assert_answered(&ask_fresh(&stub).await.0);
    let after = scrape(metrics).await;
    let get = |series: &str| after.get(series).copied().unwrap_or(0.0);
    // Attempts are counted process-wide: this daemon's made one of each at least.
    assert!(get("stubborn_race_attempts_total{outcome=\"ready\",transport=\"https\"}") >= 1.0);
    assert!(get("stubborn_race_attempts_total{outcome=\"rst\",transport=\"tls\"}") >= 1.0);
    assert_eq!(get("stubborn_upstream_connections{upstream=\"doh-metrics\",transport=\"https\"}"), 1.0);
    assert_eq!(get("stubborn_upstream_connections{upstream=\"doh-metrics\",transport=\"tls\"}"), 0.0);
    assert_eq!(get("stubborn_upstream_rtt_seconds_count{upstream=\"doh-metrics\"}"), 2.0, "two DoH answers");
}
