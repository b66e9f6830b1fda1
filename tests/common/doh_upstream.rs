//! The in-process DNS-over-HTTPS upstream (RFC 8484 over HTTP/2, RFC 9113) that DoH tests
//! point stubborn at.
//!
//! Owns: one listener on loopback, rustls with ALPN `h2` (or another ALPN, to test
//! refusal), `h2::server`, and counters and recorded requests a test can assert on. It
//! answers `POST <path>` bodies from the same `test.` table as the DoT upstream
//! ([`dns::respond`], so the ID 0 of the query is echoed), and misbehaves on purpose
//! according to a [`DohFault`] that can be changed while it runs.
//!
//! Must never: bind anything but loopback, or outlive the [`DohUpstream`] (dropping it
//! aborts every task, which closes every socket). Like the DoT upstream it does real
//! socket I/O: no `start_paused` tests with it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::dns;
use super::pki::{self, ChainKind};
use super::upstream::KeySwitch;

/// RFC 8484 §6: the media type of a DNS message, both ways.
pub const DNS_MESSAGE: &str = "application/dns-message";
/// The path served unless [`DohOptions::path`] says otherwise (stubborn's default too).
pub const DEFAULT_PATH: &str = "/dns-query";
/// The name a [`DohFault::WrongQuestion`] answer is for.
pub const WRONG_QUESTION_NAME: &str = "wrong.a.test.";

/// How the DoH upstream misbehaves. Read when a connection is accepted (`WrongKey`, at the
/// ClientHello) or when a stream arrives (the others), so [`DohUpstream::set_fault`] takes
/// effect on the next connection / stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DohFault {
    /// Answer every stream: 200, `application/dns-message`, the table's answer.
    #[default]
    None,
    /// Reset every stream (RST_STREAM) with this HTTP/2 error code, unanswered.
    ResetStream(h2::Reason),
    /// Answer every stream with this HTTP status and a `text/plain` body, no DNS answer.
    Status(u16),
    /// Answer 200 with the right DNS answer but the content type `text/html`.
    WrongContentType,
    /// Read every request and never answer it (the stream stays open).
    Stall,
    /// Answer the first N streams of each connection; at the next one say GOAWAY
    /// (NO_ERROR) and close the connection with that stream unanswered. `CloseAfter(0)`
    /// closes at the first stream.
    CloseAfter(usize),
    /// Present the normal chain but sign the handshake with an unrelated key: a correct
    /// client fails the handshake (bad signature).
    WrongKey,
    /// Answer 200 `application/dns-message` with ID 0, but for another question
    /// ([`WRONG_QUESTION_NAME`] A): must never reach a client or a cache.
    WrongQuestion,
    /// Answer normally with an `Age` header of this many seconds (RFC 9111 §5.1).
    Age(u32),
}

/// How to start a [`DohUpstream`]. The default is a well-behaved server for `dns.test` on
/// `127.0.0.1:<ephemeral>`, self-signed, ALPN `h2`, serving [`DEFAULT_PATH`].
#[derive(Clone, Debug)]
pub struct DohOptions {
    pub fault: DohFault,
    pub chain: ChainKind,
    /// DNS name in the leaf's SAN/CN.
    pub tls_name: String,
    /// Where to listen; loopback only.
    pub bind: SocketAddr,
    /// The ALPN protocols offered (default `["h2"]`). Empty: the server selects none; e.g.
    /// `["http/1.1"]`: it refuses a client that offers only `h2`.
    pub alpn: Vec<Vec<u8>>,
    /// The path DNS queries are served on; other paths get 404.
    pub path: String,
}

impl Default for DohOptions {
    fn default() -> Self {
        Self {
            fault: DohFault::None,
            chain: ChainKind::SelfSigned,
            tls_name: "dns.test".to_string(),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            alpn: vec![b"h2".to_vec()],
            path: DEFAULT_PATH.to_string(),
        }
    }
}

/// One request as the server received it, whole.
#[derive(Clone, Debug)]
pub struct DohRequest {
    pub method: Method,
    /// `:scheme`, `:authority` and `:path` as sent.
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl DohRequest {
    /// A header's value as text ("" when absent or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    /// The body parsed as a DNS message (panics if it is not one).
    pub fn message(&self) -> Message {
        dns::parse(&self.body)
    }
}

/// A running DoH upstream. Dropping it stops accepting and closes every connection.
pub struct DohUpstream {
    pub addr: SocketAddr,
    pub tls_name: String,
    /// Trust anchor PEM (the root, or the self-signed leaf), for `ca_file`.
    pub ca_pem: String,
    /// `key-fp:SHA256:` pin of the leaf SPKI.
    pub leaf_key_pin: String,
    /// `cert-fp:SHA256:` pin of the leaf certificate.
    pub leaf_cert_pin: String,
    pub intermediate_key_pin: Option<String>,
    pub root_key_pin: Option<String>,
    /// The path DNS queries are served on.
    pub path: String,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

struct Shared {
    fault: Mutex<DohFault>,
    path: String,
    accepts: AtomicUsize,
    tls_handshakes: AtomicUsize,
    resumed: AtomicUsize,
    tls_failures: AtomicUsize,
    h2_connections: AtomicUsize,
    streams: AtomicUsize,
    answers: AtomicUsize,
    requests: Mutex<Vec<DohRequest>>,
    changed: Notify,
    conn_tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn fault(&self) -> DohFault {
        self.fault.lock().unwrap().clone()
    }
    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

impl DohUpstream {
    /// Generates certificates, binds, and starts serving. Panics on any setup failure.
    pub async fn start(opts: DohOptions) -> DohUpstream {
        assert!(opts.bind.ip().is_loopback(), "DoH upstream must bind loopback, got {}", opts.bind);
        let p = pki::generate(opts.chain, &opts.tls_name);
        let shared = Arc::new(Shared {
            fault: Mutex::new(opts.fault.clone()),
            path: opts.path.clone(),
            accepts: AtomicUsize::new(0),
            tls_handshakes: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
            tls_failures: AtomicUsize::new(0),
            h2_connections: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            answers: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            changed: Notify::new(),
            conn_tasks: Mutex::new(Vec::new()),
        });
        let fault_of = shared.clone();
        let keys = KeySwitch::new(&p, move || fault_of.fault() == DohFault::WrongKey);
        let mut cfg = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(keys);
        cfg.alpn_protocols = opts.alpn.clone();
        let acceptor = TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind(opts.bind).await.expect("bind DoH upstream");
        let addr = listener.local_addr().expect("local_addr");
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        DohUpstream {
            addr,
            tls_name: opts.tls_name,
            ca_pem: p.ca_pem,
            leaf_key_pin: p.leaf_key_pin,
            leaf_cert_pin: p.leaf_cert_pin,
            intermediate_key_pin: p.intermediate_key_pin,
            root_key_pin: p.root_key_pin,
            path: opts.path,
            shared,
            accept_task,
        }
    }

    /// A default server with this fault.
    pub async fn with_fault(fault: DohFault) -> DohUpstream {
        Self::start(DohOptions { fault, ..Default::default() }).await
    }

    /// TCP connections accepted.
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepts.load(Ordering::SeqCst)
    }
    /// TLS handshakes the server completed (with ALPN h2 or not).
    pub fn tls_handshakes(&self) -> usize {
        self.shared.tls_handshakes.load(Ordering::SeqCst)
    }
    /// Completed TLS handshakes that resumed an earlier session (RFC 8446 §2.2).
    pub fn handshakes_resumed(&self) -> usize {
        self.shared.resumed.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed on the server side (e.g. the client sent an alert).
    pub fn tls_failures(&self) -> usize {
        self.shared.tls_failures.load(Ordering::SeqCst)
    }
    /// HTTP/2 connections established (the client's preface and SETTINGS read).
    pub fn h2_connections(&self) -> usize {
        self.shared.h2_connections.load(Ordering::SeqCst)
    }
    /// HTTP/2 streams (requests) opened by clients, whatever the fault did with them.
    pub fn streams(&self) -> usize {
        self.shared.streams.load(Ordering::SeqCst)
    }
    /// 200 responses with a DNS body sent.
    pub fn answers_sent(&self) -> usize {
        self.shared.answers.load(Ordering::SeqCst)
    }
    /// Every request read whole, in arrival order (a stream closed by `CloseAfter` is not).
    pub fn requests(&self) -> Vec<DohRequest> {
        self.shared.requests.lock().unwrap().clone()
    }
    /// The last request read whole.
    pub fn last_request(&self) -> Option<DohRequest> {
        self.shared.requests.lock().unwrap().last().cloned()
    }
    pub fn fault(&self) -> DohFault {
        self.shared.fault()
    }
    /// Changes behaviour from the next connection / stream on.
    pub fn set_fault(&self, fault: DohFault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// Waits (without polling) until `pred(self)` holds or `within` passes; returns whether it held.
    pub async fn wait_until(&self, within: Duration, pred: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.shared.changed.notified();
            if pred(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return pred(self);
            }
        }
    }
    /// Waits until at least `n` TCP connections were accepted, at most `within`.
    pub async fn wait_for_connections(&self, n: usize, within: Duration) -> bool {
        self.wait_until(within, |u| u.connections_accepted() >= n).await
    }
    /// Waits until at least `n` streams were opened, at most `within`.
    pub async fn wait_for_streams(&self, n: usize, within: Duration) -> bool {
        self.wait_until(within, |u| u.streams() >= n).await
    }
}

impl Drop for DohUpstream {
    fn drop(&mut self) {
        self.accept_task.abort();
        for h in self.shared.conn_tasks.lock().unwrap().iter() {
            h.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // e.g. EMFILE; back off briefly rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.bump(&shared.accepts);
        let task = tokio::spawn(serve_connection(tcp, acceptor.clone(), shared.clone()));
        let mut tasks = shared.conn_tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

async fn serve_connection(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    match acceptor.accept(tcp).await {
        Ok(tls) => {
            if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                shared.bump(&shared.resumed);
            }
            shared.bump(&shared.tls_handshakes);
            serve_h2(tls, shared).await;
        }
        Err(_) => shared.bump(&shared.tls_failures),
    }
}

/// Serves one HTTP/2 connection: the connection is driven here (by `accept`), each
/// stream in a task of `streams`, all aborted when this returns.
async fn serve_h2<S>(io: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Ok(mut conn) = h2::server::handshake(io).await else { return };
    shared.bump(&shared.h2_connections);
    let mut streams = JoinSet::new();
    let mut served = 0usize;
    loop {
        tokio::select! {
            next = conn.accept() => {
                let Some(Ok((request, respond))) = next else { break };
                shared.bump(&shared.streams);
                let fault = shared.fault();
                if let DohFault::CloseAfter(n) = fault {
                    if served >= n {
                        // GOAWAY, then close with this stream unanswered. Its responder is
                        // held until the connection is closed: dropping it first would reset
                        // the stream (CANCEL) instead.
                        let _held = (request, respond);
                        conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                        let closed = std::future::poll_fn(|cx| conn.poll_closed(cx));
                        let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
                        return;
                    }
                }
                served += 1;
                streams.spawn(serve_stream(request, respond, shared.clone(), fault));
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

/// Reads one request whole, records it, and answers it as `fault` says.
async fn serve_stream(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: Arc<Shared>,
    fault: DohFault,
) {
    let (head, mut body) = request.into_parts();
    let mut wire = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        wire.extend_from_slice(&chunk);
    }
    shared.requests.lock().unwrap().push(DohRequest {
        method: head.method.clone(),
        scheme: head.uri.scheme_str().map(str::to_string),
        authority: head.uri.authority().map(|a| a.to_string()),
        path: head.uri.path().to_string(),
        headers: head.headers.clone(),
        body: wire.clone(),
    });
    shared.changed.notify_waiters();
    let refusal = if head.method != Method::POST {
        Some((StatusCode::METHOD_NOT_ALLOWED, "POST only"))
    } else if head.uri.path() != shared.path {
        Some((StatusCode::NOT_FOUND, "not here"))
    } else {
        None
    };
    if let Some((status, text)) = refusal {
        reply(&mut respond, status, "text/plain", text.as_bytes().to_vec(), None);
        return;
    }
    let answer = match &fault {
        DohFault::Stall => return std::future::pending().await,
        DohFault::ResetStream(reason) => return respond.send_reset(*reason),
        DohFault::Status(code) => {
            let status = StatusCode::from_u16(*code).expect("a valid HTTP status");
            reply(&mut respond, status, "text/plain", b"no DNS here".to_vec(), None);
            return;
        }
        DohFault::WrongQuestion => answer_another_question(&wire),
        _ => dns::respond(&wire),
    };
    let Some(answer) = answer else {
        reply(&mut respond, StatusCode::BAD_REQUEST, "text/plain", b"not DNS".to_vec(), None);
        return;
    };
    let ctype = if fault == DohFault::WrongContentType { "text/html; charset=utf-8" } else { DNS_MESSAGE };
    let age = match fault {
        DohFault::Age(n) => Some(n),
        _ => None,
    };
    if reply(&mut respond, StatusCode::OK, ctype, answer, age) {
        shared.bump(&shared.answers);
    }
}

/// Sends a whole response; true if h2 took it.
fn reply(
    respond: &mut SendResponse<Bytes>,
    status: StatusCode,
    content_type: &str,
    body: Vec<u8>,
    age: Option<u32>,
) -> bool {
    let mut head = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(age) = age {
        head = head.header(header::AGE, age);
    }
    let head = head.body(()).expect("a valid response head");
    match respond.send_response(head, body.is_empty()) {
        Ok(mut stream) => body.is_empty() || stream.send_data(Bytes::from(body), true).is_ok(),
        Err(_) => false,
    }
}

/// The table's answer to the query with its question replaced by [`WRONG_QUESTION_NAME`] A
/// (ID and flags kept): a well-formed answer to something that was not asked.
fn answer_another_question(query: &[u8]) -> Option<Vec<u8>> {
    let mut q = Message::from_vec(query).ok()?;
    let first = q.queries.first_mut()?;
    first.set_name(Name::from_ascii(WRONG_QUESTION_NAME).unwrap());
    first.set_query_type(RecordType::A);
    dns::respond(&q.to_vec().ok()?)
}
