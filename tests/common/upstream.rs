//! The in-process DNS-over-TLS upstream (RFC 7858) that end-to-end tests point stubborn at.
//!
//! Owns: one listener on loopback, the tasks that serve its connections, and counters a
//! test can assert on. It answers from the fixed `test.` table in [`super::dns`], reads
//! many queries per connection (RFC 7766 §6.2.1.1 pipelining) and misbehaves on purpose
//! according to a [`Fault`] that can be changed while it runs.
//!
//! Must never: bind anything but the address it is given (loopback in every test),
//! start a timer loop, or outlive the [`TestUpstream`] (dropping it aborts every task,
//! which closes every socket).
//!
//! Note for `#[tokio::test(start_paused = true)]`: the upstream does real socket I/O, and
//! a paused clock auto-advances while the runtime waits for it, so timeouts in such
//! tests can fire early. Only `Fault::Delay` uses a timer here.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::dns;
use super::hostile::{self, HostileFault};
pub use super::pki::ChainKind;
use super::pki::{self, TestPki};

/// How the upstream misbehaves. Read at the moment each connection is accepted
/// (`WrongKey`, `StallHandshake`, `ResetOnAccept`) or each query is read (the others),
/// so [`TestUpstream::set_fault`] takes effect on the next connection / query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Answer every query at once, in the order read.
    #[default]
    None,
    /// Answer the first N (≥ 1) queries on each connection, then send TLS close_notify and a
    /// TCP FIN; later queries on that connection are read and discarded, never answered.
    CloseAfter(usize),
    /// Accept, complete the handshake, read (and count) queries, never reply.
    NeverAnswer,
    /// Collect N queries on a connection, then answer that batch in reverse order.
    OutOfOrder(usize),
    /// Answer N queries in total (counted from start, or from the last `set_fault`), then
    /// stay silent; connections stay open and queries are still counted.
    StopAnsweringAfter(usize),
    /// Present the normal certificate chain but sign the handshake with an unrelated key
    /// of the same algorithm. A correct client must fail the handshake (bad signature).
    WrongKey,
    /// Answer the first N queries on each connection, then reset it (SO_LINGER 0: RST).
    ResetAfter(usize),
    /// Accept TCP, never read or answer the ClientHello: "TCP up, TLS never ready".
    StallHandshake,
    /// Accept TCP, then reset at once (RST) before any TLS byte.
    ResetOnAccept,
    /// Answer every query after this delay (each independently, so answers stay pipelined).
    Delay(Duration),
    /// Answer every query with the header alone: same ID, QR, RCODE FORMERR, QDCOUNT 0
    /// (as servers do for a query they cannot read).
    FormErrWithoutQuestion,
    /// Answer every query at once with this RCODE and no records (e.g. SERVFAIL).
    Rcode(hickory_proto::op::ResponseCode),
    /// Answer every query at once as usual, but with every TTL 0.
    ZeroTtl,
    /// Answer each query with one misbehaviour drawn from a seeded PRNG (see [`hostile`]).
    Hostile(HostileFault),
    /// Answer every query at once, and close a connection (close_notify, FIN) once nothing
    /// came on it for this long, as a busy server reclaims idle slots (RFC 7766 §6.2.3).
    IdleClose(Duration),
    /// Complete the handshake, then reset the connection at the first query, unanswered
    /// (as a middlebox that kills DNS-over-TLS once it sees data).
    ResetOnQuery,
}

impl Fault {
    /// The answer `resp` as this fault rewrites it (`Rcode`, `ZeroTtl`); others keep it.
    fn rewrite(&self, resp: Vec<u8>) -> Vec<u8> {
        match self {
            Fault::Rcode(rcode) => dns::with_rcode(&resp, *rcode),
            Fault::ZeroTtl => dns::with_zero_ttls(&resp),
            _ => resp,
        }
    }
}

/// Which TLS versions the upstream offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersions {
    /// TLS 1.2 and 1.3 (rustls' safe defaults).
    #[default]
    Any,
    /// TLS 1.2 only (the handshake signature is then in ServerKeyExchange).
    Tls12Only,
    /// TLS 1.3 only.
    Tls13Only,
}

/// How to start a [`TestUpstream`]. `UpstreamOptions::default()` is a well-behaved DoT
/// server for `dns.test` on `127.0.0.1:<ephemeral>` with a self-signed certificate.
#[derive(Clone, Debug)]
pub struct UpstreamOptions {
    /// Initial misbehaviour (default [`Fault::None`]).
    pub fault: Fault,
    /// Certificate chain shape (default [`ChainKind::SelfSigned`]).
    pub chain: ChainKind,
    /// DNS name in the leaf's SAN/CN (default `"dns.test"`).
    pub tls_name: String,
    /// Where to listen (default `127.0.0.1:0`; use `[::1]:0` for IPv6). Loopback only.
    pub bind: SocketAddr,
    /// Speak TLS (default true). `false`: plain DNS over TCP, same handler (port-53 style).
    pub tls: bool,
    /// Also answer plain DNS over UDP on the same IP and port (default false; only with
    /// `tls: false`). Responses larger than the client's EDNS size (or 512) are truncated (TC).
    pub udp: bool,
    /// TLS versions offered (default both).
    pub tls_versions: TlsVersions,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        Self {
            fault: Fault::None,
            chain: ChainKind::SelfSigned,
            tls_name: "dns.test".to_string(),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: true,
            udp: false,
            tls_versions: TlsVersions::Any,
        }
    }
}

/// A running upstream. Dropping it (or [`TestUpstream::shutdown`]) stops accepting and
/// closes every connection.
pub struct TestUpstream {
    /// The address it listens on (TCP, and UDP when `udp` was set).
    pub addr: SocketAddr,
    /// The TLS name its leaf certificate is valid for.
    pub tls_name: String,
    /// Trust anchor PEM: the root CA (WithIntermediate) or the self-signed leaf; write it
    /// to a `ca_file` for CA + hostname tests (see [`TestUpstream::write_ca_file`]).
    pub ca_pem: String,
    /// `ca_pem` as DER.
    pub ca_der: CertificateDer<'static>,
    /// The leaf certificate as PEM (e.g. to feed openssl).
    pub leaf_pem: String,
    /// The chain the server presents, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// `key-fp:SHA256:<b64>` of the leaf SPKI.
    pub leaf_key_pin: String,
    /// `cert-fp:SHA256:<b64>` of the leaf certificate DER.
    pub leaf_cert_pin: String,
    /// `key-fp:SHA256:<b64>` of the intermediate CA key (WithIntermediate only).
    pub intermediate_key_pin: Option<String>,
    /// `key-fp:SHA256:<b64>` of the root CA key (WithIntermediate only).
    pub root_key_pin: Option<String>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    fault: Mutex<Fault>,
    answer_slots_used: AtomicUsize,
    queries: AtomicUsize,
    answers: AtomicUsize,
    accepts: AtomicUsize,
    handshakes: AtomicUsize,
    resumed: AtomicUsize,
    handshake_failures: AtomicUsize,
    received: Mutex<Vec<Vec<u8>>>,
    server_names: Mutex<Vec<Option<String>>>,
    changed: Notify,
    conn_tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn fault(&self) -> Fault {
        self.fault.lock().unwrap().clone()
    }
    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
    fn record_query(&self, wire: &[u8]) {
        self.received.lock().unwrap().push(wire.to_vec());
        self.bump(&self.queries);
    }
    /// For `StopAnsweringAfter(n)`: claims one of the n answers, false once all are used.
    fn claim_answer_slot(&self, n: usize) -> bool {
        self.answer_slots_used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| (used < n).then_some(used + 1))
            .is_ok()
    }
}

/// Picks the honest or the wrong-key CertifiedKey per handshake: the wrong one while
/// `use_wrong()` says so (read at each ClientHello, so a fault switched while running
/// applies to the next handshake). Shared with the DoH upstream (`doh_upstream.rs`).
pub(super) struct KeySwitch {
    honest: Arc<CertifiedKey>,
    wrong_key: Arc<CertifiedKey>,
    use_wrong: Box<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for KeySwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySwitch")
    }
}

impl ResolvesServerCert for KeySwitch {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(if (self.use_wrong)() { self.wrong_key.clone() } else { self.honest.clone() })
    }
}

impl KeySwitch {
    /// `p`'s chain with its own key, or (while `use_wrong()`) with `p`'s unrelated key.
    pub(super) fn new(p: &TestPki, use_wrong: impl Fn() -> bool + Send + Sync + 'static) -> Arc<Self> {
        let provider = rustls::crypto::ring::default_provider();
        let load = |pkcs8: &[u8]| {
            provider
                .key_provider
                .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec())))
                .expect("load test key")
        };
        // CertifiedKey::new does not check that key and certificate match; that is the point
        // for the wrong-key variant (from_der / with_single_cert would refuse it).
        Arc::new(Self {
            honest: Arc::new(CertifiedKey::new(p.chain.clone(), load(&p.leaf_key_pkcs8))),
            wrong_key: Arc::new(CertifiedKey::new(p.chain.clone(), load(&p.wrong_key_pkcs8))),
            use_wrong: Box::new(use_wrong),
        })
    }
}

fn server_config(p: &TestPki, shared: Arc<Shared>, versions: TlsVersions) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider);
    let builder = match versions {
        TlsVersions::Any => builder.with_safe_default_protocol_versions(),
        TlsVersions::Tls12Only => builder.with_protocol_versions(&[&rustls::version::TLS12]),
        TlsVersions::Tls13Only => builder.with_protocol_versions(&[&rustls::version::TLS13]),
    }
    .expect("protocol versions");
    let keys = KeySwitch::new(p, move || shared.fault() == Fault::WrongKey);
    let mut cfg = builder.with_no_client_auth().with_cert_resolver(keys);
    // RFC 7858 §3.2 / IANA: "dot". A client that offers no ALPN is still served.
    cfg.alpn_protocols = vec![b"dot".to_vec()];
    Arc::new(cfg)
}

impl TestUpstream {
    /// Generates certificates, binds, and starts serving. Panics on any setup failure.
    pub async fn start(opts: UpstreamOptions) -> TestUpstream {
        assert!(opts.bind.ip().is_loopback(), "test upstream must bind loopback, got {}", opts.bind);
        assert!(!(opts.udp && opts.tls), "udp: true needs tls: false (plain DNS)");
        let p = pki::generate(opts.chain, &opts.tls_name);
        let shared = Arc::new(Shared {
            fault: Mutex::new(opts.fault.clone()),
            answer_slots_used: AtomicUsize::new(0),
            queries: AtomicUsize::new(0),
            answers: AtomicUsize::new(0),
            accepts: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
            handshake_failures: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            server_names: Mutex::new(Vec::new()),
            changed: Notify::new(),
            conn_tasks: Mutex::new(Vec::new()),
        });
        let acceptor =
            opts.tls.then(|| TlsAcceptor::from(server_config(&p, shared.clone(), opts.tls_versions)));

        let (listener, udp) = bind(opts.bind, opts.udp).await;
        let addr = listener.local_addr().expect("local_addr");
        let mut tasks = vec![tokio::spawn(accept_loop(listener, acceptor, shared.clone()))];
        if let Some(sock) = udp {
            tasks.push(tokio::spawn(udp_loop(sock, shared.clone())));
        }
        TestUpstream {
            addr,
            tls_name: opts.tls_name,
            ca_pem: p.ca_pem.clone(),
            ca_der: p.ca_der.clone(),
            leaf_pem: p.leaf_pem.clone(),
            chain: p.chain.clone(),
            leaf_key_pin: p.leaf_key_pin.clone(),
            leaf_cert_pin: p.leaf_cert_pin.clone(),
            intermediate_key_pin: p.intermediate_key_pin.clone(),
            root_key_pin: p.root_key_pin.clone(),
            shared,
            tasks,
        }
    }

    /// A default (well-behaved, self-signed, TLS) upstream with this fault.
    pub async fn with_fault(fault: Fault) -> TestUpstream {
        Self::start(UpstreamOptions { fault, ..Default::default() }).await
    }

    /// Total DNS messages read, on all connections (and UDP), whatever the fault.
    pub fn queries_received(&self) -> usize {
        self.shared.queries.load(Ordering::SeqCst)
    }
    /// Total DNS responses written.
    pub fn answers_sent(&self) -> usize {
        self.shared.answers.load(Ordering::SeqCst)
    }
    /// TCP connections accepted.
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepts.load(Ordering::SeqCst)
    }
    /// TLS handshakes that completed on the server side (with `WrongKey` the server
    /// completes its part; the client is expected to abort, counted in `handshakes_failed`).
    pub fn handshakes_completed(&self) -> usize {
        self.shared.handshakes.load(Ordering::SeqCst)
    }
    /// Completed TLS handshakes that resumed an earlier session (RFC 8446 §2.2 / RFC 5077).
    pub fn handshakes_resumed(&self) -> usize {
        self.shared.resumed.load(Ordering::SeqCst)
    }
    /// TLS handshakes that failed on the server side (e.g. the client sent an alert).
    pub fn handshakes_failed(&self) -> usize {
        self.shared.handshake_failures.load(Ordering::SeqCst)
    }
    /// Raw wire (no length prefix) of every query received, in arrival order.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.shared.received.lock().unwrap().clone()
    }
    /// Parsed form of every query received.
    pub fn received_messages(&self) -> Vec<hickory_proto::op::Message> {
        self.received().iter().map(|w| dns::parse(w)).collect()
    }
    /// The SNI of every completed handshake (None: the client sent none, e.g. an IP name).
    pub fn server_names_seen(&self) -> Vec<Option<String>> {
        self.shared.server_names.lock().unwrap().clone()
    }
    /// The current fault.
    pub fn fault(&self) -> Fault {
        self.shared.fault()
    }
    /// Changes behaviour from the next connection / query on; resets the
    /// `StopAnsweringAfter` answer count.
    pub fn set_fault(&self, f: Fault) {
        *self.shared.fault.lock().unwrap() = f;
        self.shared.answer_slots_used.store(0, Ordering::SeqCst);
    }
    /// Writes `ca_pem` to `dir/upstream-ca.pem` and returns the path.
    pub fn write_ca_file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        pki::write_pem(dir, "upstream-ca.pem", &self.ca_pem)
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
    /// Waits until at least `n` queries were received, at most `within`.
    pub async fn wait_for_queries(&self, n: usize, within: Duration) -> bool {
        self.wait_until(within, |u| u.queries_received() >= n).await
    }
    /// Waits until at least `n` connections were accepted, at most `within`.
    pub async fn wait_for_connections(&self, n: usize, within: Duration) -> bool {
        self.wait_until(within, |u| u.connections_accepted() >= n).await
    }

    /// Stops accepting and closes every connection (aborts all tasks; sockets close as
    /// soon as the runtime drops them, which is before the test's next await completes on
    /// a current-thread runtime). Same as dropping.
    pub fn shutdown(self) {}

    /// Like [`shutdown`](Self::shutdown), but returns only when every task (so every
    /// socket) is gone: after this, connecting to `addr` is refused.
    pub async fn shutdown_and_wait(mut self) {
        let mut handles = std::mem::take(&mut self.tasks);
        handles.extend(std::mem::take(&mut *self.shared.conn_tasks.lock().unwrap()));
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
        // Connections accepted between the take above and the abort of the accept loop.
        let late = std::mem::take(&mut *self.shared.conn_tasks.lock().unwrap());
        for h in &late {
            h.abort();
        }
        for h in late {
            let _ = h.await;
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        for h in &self.tasks {
            h.abort();
        }
        for h in self.shared.conn_tasks.lock().unwrap().iter() {
            h.abort();
        }
    }
}

/// Binds TCP (and UDP on the same port when asked). Retries a bounded number of times
/// if the ephemeral TCP port is taken for UDP.
async fn bind(addr: SocketAddr, udp: bool) -> (TcpListener, Option<UdpSocket>) {
    for _ in 0..20 {
        let listener = TcpListener::bind(addr).await.expect("bind test upstream (TCP)");
        if !udp {
            return (listener, None);
        }
        match UdpSocket::bind(listener.local_addr().unwrap()).await {
            Ok(u) => return (listener, Some(u)),
            Err(e) if addr.port() != 0 => panic!("bind test upstream (UDP) {addr}: {e}"),
            Err(_) => continue,
        }
    }
    panic!("could not bind TCP and UDP on one port at {addr} in 20 tries");
}

async fn accept_loop(listener: TcpListener, acceptor: Option<TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _peer)) => tcp,
            // e.g. EMFILE; back off briefly rather than spin. The loop ends with the task.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.bump(&shared.accepts);
        let task = tokio::spawn(serve_connection(tcp, acceptor.clone(), shared.clone()));
        let mut tasks = shared.conn_tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

async fn serve_connection(tcp: TcpStream, acceptor: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    // A second descriptor for the same socket, so the connection can be reset (SO_LINGER 0)
    // after the stream was split. Both descriptors live exactly as long as this task.
    let std_tcp = tcp.into_std().expect("into_std");
    let reset_handle = std_tcp.try_clone().expect("dup socket");
    let tcp = TcpStream::from_std(std_tcp).expect("from_std");

    match shared.fault() {
        Fault::ResetOnAccept => return reset(&reset_handle),
        Fault::StallHandshake => {
            // Never answer the ClientHello, but notice when the client gives up, so the
            // socket (and its descriptor) goes away with the client's.
            let mut tcp = tcp;
            let mut sink = [0u8; 1024];
            while matches!(tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        _ => {}
    }
    let Some(acceptor) = acceptor else {
        return serve_stream(tcp, shared, reset_handle).await;
    };
    match acceptor.accept(tcp).await {
        Ok(tls) => {
            let sni = tls.get_ref().1.server_name().map(str::to_string);
            shared.server_names.lock().unwrap().push(sni);
            if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                shared.bump(&shared.resumed);
            }
            shared.bump(&shared.handshakes);
            serve_stream(tls, shared, reset_handle).await
        }
        Err(_) => shared.bump(&shared.handshake_failures),
    }
}

fn reset(sock: &std::net::TcpStream) {
    let _ = socket2::SockRef::from(sock).set_linger(Some(Duration::ZERO));
}

enum Outgoing {
    Answer(Vec<u8>),
    /// Octets written as they are, without a length prefix.
    Raw(Vec<u8>),
    /// Send close_notify + FIN after the answers queued before this.
    Close,
    /// Reset after the answers queued before this.
    Reset,
}

enum WriterEnd {
    Drained,
    Closed,
    Reset,
    Failed,
}

/// Serves one connection: a reader that decides what to answer, and a writer that sends,
/// joined in this one task so aborting the task closes the socket.
async fn serve_stream<S>(stream: S, shared: Arc<Shared>, reset_handle: std::net::TcpStream)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();

    let reader_shared = shared.clone();
    let reader = async move {
        let shared = reader_shared;
        let mut on_this_connection = 0usize;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut closing = false;
        loop {
            let read = dns::read_frame(&mut rd);
            let read = match shared.fault() {
                Fault::IdleClose(idle) if !closing => match tokio::time::timeout(idle, read).await {
                    Ok(read) => read,
                    Err(_) => {
                        let _ = tx.send(Outgoing::Close);
                        closing = true;
                        continue;
                    }
                },
                _ => read.await,
            };
            let Ok(Some(msg)) = read else { break };
            if closing {
                continue; // after Close/Reset was queued: drain so the close is a FIN, not an RST
            }
            shared.record_query(&msg);
            let fault = shared.fault();
            if !matches!(fault, Fault::OutOfOrder(_)) {
                for resp in batch.drain(..) {
                    let _ = tx.send(Outgoing::Answer(resp));
                }
            }
            let Some(resp) = dns::respond(&msg) else {
                continue;
            };
            let resp = fault.rewrite(resp);
            match fault {
                Fault::NeverAnswer => {}
                Fault::StopAnsweringAfter(n) => {
                    if shared.claim_answer_slot(n) {
                        let _ = tx.send(Outgoing::Answer(resp));
                    }
                }
                Fault::CloseAfter(n) | Fault::ResetAfter(n) => {
                    on_this_connection += 1;
                    let _ = tx.send(Outgoing::Answer(resp));
                    if on_this_connection >= n {
                        let end = if matches!(fault, Fault::CloseAfter(_)) {
                            Outgoing::Close
                        } else {
                            Outgoing::Reset
                        };
                        let _ = tx.send(end);
                        closing = true;
                    }
                }
                Fault::OutOfOrder(n) => {
                    batch.push(resp);
                    if batch.len() >= n.max(1) {
                        for resp in batch.drain(..).rev() {
                            let _ = tx.send(Outgoing::Answer(resp));
                        }
                    }
                }
                Fault::Delay(d) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        let _ = tx.send(Outgoing::Answer(resp));
                    });
                }
                Fault::Hostile(h) => {
                    for step in h.0.respond(&msg).1 {
                        closing |= matches!(step, hostile::Step::Close | hostile::Step::Reset);
                        let _ = tx.send(match step {
                            hostile::Step::Frame(m) => Outgoing::Answer(m),
                            hostile::Step::Raw(b) => Outgoing::Raw(b),
                            hostile::Step::Close => Outgoing::Close,
                            hostile::Step::Reset => Outgoing::Reset,
                        });
                    }
                }
                Fault::ResetOnQuery => {
                    let _ = tx.send(Outgoing::Reset);
                    closing = true;
                }
                Fault::FormErrWithoutQuestion => {
                    let mut header = msg[..12].to_vec();
                    header[2] = 0x80 | (msg[2] & 0x79); // QR, opcode and RD as asked
                    header[3] = 0x80 | 1; // RA, FORMERR
                    header[4..].fill(0);
                    let _ = tx.send(Outgoing::Answer(header));
                }
                Fault::None
                | Fault::WrongKey
                | Fault::StallHandshake
                | Fault::ResetOnAccept
                | Fault::Rcode(_)
                | Fault::IdleClose(_)
                | Fault::ZeroTtl => {
                    let _ = tx.send(Outgoing::Answer(resp));
                }
            }
        }
        // EOF or error: dropping `tx` here lets the writer finish what is queued.
    };

    let writer_shared = shared.clone();
    let writer = async move {
        while let Some(out) = rx.recv().await {
            match out {
                Outgoing::Answer(resp) => {
                    if dns::write_frame(&mut wr, &resp).await.is_err() {
                        return WriterEnd::Failed;
                    }
                    writer_shared.bump(&writer_shared.answers);
                }
                Outgoing::Raw(bytes) => {
                    if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                        return WriterEnd::Failed;
                    }
                }
                Outgoing::Close => {
                    let _ = wr.shutdown().await;
                    return WriterEnd::Closed;
                }
                Outgoing::Reset => return WriterEnd::Reset,
            }
        }
        let _ = wr.shutdown().await;
        WriterEnd::Drained
    };

    tokio::pin!(reader, writer);
    let (end, reader_done) = tokio::select! {
        end = &mut writer => (end, false),
        () = &mut reader => ((&mut writer).await, true),
    };
    match end {
        WriterEnd::Reset => reset(&reset_handle),
        // (A finished reader must not be polled again: the peer has closed already.)
        WriterEnd::Closed if !reader_done => {
            // Let the peer read our FIN and close first; bounded so a silent peer cannot pin us.
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut reader).await;
        }
        WriterEnd::Closed | WriterEnd::Drained | WriterEnd::Failed => {}
    }
}

async fn udp_loop(sock: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65535];
    let sock = Arc::new(sock);
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(10)).await; // never spin on a socket error
            continue;
        };
        let msg = buf[..n].to_vec();
        shared.record_query(&msg);
        let Some(resp) = dns::respond(&msg) else {
            continue;
        };
        let fault = shared.fault();
        let resp = dns::truncate_for_udp(fault.rewrite(resp), dns::udp_limit(&msg));
        let send = match fault {
            Fault::NeverAnswer => false,
            Fault::StopAnsweringAfter(n) => shared.claim_answer_slot(n),
            Fault::Delay(d) => {
                let (sock, shared, resp) = (sock.clone(), shared.clone(), resp.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    if sock.send_to(&resp, peer).await.is_ok() {
                        shared.bump(&shared.answers);
                    }
                });
                false
            }
            _ => true,
        };
        if send && sock.send_to(&resp, peer).await.is_ok() {
            shared.bump(&shared.answers);
        }
    }
}
