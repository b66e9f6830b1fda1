//! A tiny DNS client for tests (not stubborn): DNS over TLS with tokio-rustls, plain TCP
//! and UDP. Used to test the harness itself and, in end-to-end tests, to query stubborn.
//!
//! Must never: talk to anything but the address it is given (loopback in every test), or
//! wait without a bound: every helper that waits takes or applies a timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::dns;

/// Default bound for helpers that do not take an explicit timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A rustls client config (ring provider, TLS 1.2 + 1.3) trusting exactly the
/// certificates in `ca_pem`, offering ALPN "dot".
pub fn client_config(ca_pem: &str) -> Arc<ClientConfig> {
    client_config_with(ca_pem, rustls::DEFAULT_VERSIONS)
}

/// Like [`client_config`], restricted to the given TLS versions
/// (e.g. `&[&rustls::version::TLS12]`).
pub fn client_config_with(ca_pem: &str, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("PEM certificate")).expect("add trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"dot".to_vec()];
    Arc::new(cfg)
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what}: timed out"))
}

/// One DNS-over-TLS connection, pipelining allowed: `send` many, then `recv` many.
pub struct DotClient {
    stream: TlsStream<TcpStream>,
}

impl DotClient {
    /// Connects and completes the handshake, verifying `tls_name` against `ca_pem`.
    /// Bounded by [`DEFAULT_TIMEOUT`].
    pub async fn connect(addr: SocketAddr, tls_name: &str, ca_pem: &str) -> io::Result<Self> {
        Self::connect_with(addr, tls_name, client_config(ca_pem)).await
    }

    /// Connects with an explicit client config. Bounded by [`DEFAULT_TIMEOUT`].
    pub async fn connect_with(
        addr: SocketAddr,
        tls_name: &str,
        config: Arc<ClientConfig>,
    ) -> io::Result<Self> {
        let name = ServerName::try_from(tls_name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let fut = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            TlsConnector::from(config).connect(name, tcp).await
        };
        let stream =
            tokio::time::timeout(DEFAULT_TIMEOUT, fut).await.map_err(|_| timed_out("DoT connect"))??;
        Ok(Self { stream })
    }

    /// Sends one query (length-prefixed).
    pub async fn send(&mut self, wire: &[u8]) -> io::Result<()> {
        dns::write_frame(&mut self.stream, wire).await
    }

    /// Receives one response; `Ok(None)` when the server closed the connection.
    /// Not bounded: wrap in `tokio::time::timeout` (or use [`recv_timeout`](Self::recv_timeout)).
    pub async fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        dns::read_frame(&mut self.stream).await
    }

    /// Receives one response within `within`; `Err(TimedOut)` if none came.
    pub async fn recv_timeout(&mut self, within: Duration) -> io::Result<Option<Vec<u8>>> {
        tokio::time::timeout(within, self.recv()).await.map_err(|_| timed_out("DoT recv"))?
    }

    /// Sends one query and waits (bounded by [`DEFAULT_TIMEOUT`]) for the next response.
    pub async fn query(&mut self, wire: &[u8]) -> io::Result<Vec<u8>> {
        self.send(wire).await?;
        self.recv_timeout(DEFAULT_TIMEOUT)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"))
    }

    /// The certificates the server presented, leaf first.
    pub fn peer_certificates(&self) -> Vec<CertificateDer<'static>> {
        self.stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default()
    }

    /// The negotiated TLS version.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.get_ref().1.protocol_version()
    }

    /// The underlying stream, e.g. to split it.
    pub fn into_inner(self) -> TlsStream<TcpStream> {
        self.stream
    }
}

/// One query over a fresh DoT connection.
pub async fn dot_query(addr: SocketAddr, tls_name: &str, ca_pem: &str, wire: &[u8]) -> io::Result<Vec<u8>> {
    DotClient::connect(addr, tls_name, ca_pem).await?.query(wire).await
}

/// One query over a fresh plain-TCP connection (RFC 7766 framing), bounded by [`DEFAULT_TIMEOUT`].
pub async fn tcp_query(addr: SocketAddr, wire: &[u8]) -> io::Result<Vec<u8>> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        dns::write_frame(&mut s, wire).await?;
        dns::read_frame(&mut s)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"))
    };
    tokio::time::timeout(DEFAULT_TIMEOUT, fut).await.map_err(|_| timed_out("TCP query"))?
}

/// One query over UDP from an ephemeral loopback port; waits `within` for the reply.
pub async fn udp_query(addr: SocketAddr, wire: &[u8], within: Duration) -> io::Result<Vec<u8>> {
    let local: SocketAddr = if addr.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }.parse().unwrap();
    let sock = UdpSocket::bind(local).await?;
    sock.connect(addr).await?;
    sock.send(wire).await?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(within, sock.recv(&mut buf)).await.map_err(|_| timed_out("UDP query"))??;
    buf.truncate(n);
    Ok(buf)
}
