//! TLS towards upstreams: one rustls `ClientConfig` per upstream, and the handshake.
//!
//! Owns the authentication policy of RFC 8310: pins (`key-fp` / `cert-fp`, judged in
//! [`verify`]), CA + hostname, or — only for opportunistic upstreams that configure
//! neither — encryption without authentication. It must never skip the TLS handshake
//! signature check (a server holding the pinned *certificate* but not its *key* must fail)
//! and never turn a pin refusal into a warning: a refusal is a refused connection.

mod verify;

use std::{fmt, io, net::IpAddr, sync::Arc};

use rustls::{
    CertificateError, ClientConfig, OtherError, RootCertStore,
    client::{WebPkiServerVerifier, danger::ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsConnector, client::TlsStream};
pub(crate) use verify::verify_pins;
pub use verify::{CaCheck, CaRefusal, PresentedPins, cert_fingerprint, key_fingerprint, verify_ca_pin};
use verify::{KeyPolicy, KeyVerifier, PinMismatch};

use crate::config::{CaSource, UpstreamConfig};

/// The crypto provider: ring, so aws-lc is never pulled in.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Errors building an upstream's TLS configuration (at start-up or reload).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("upstream {upstream}: cannot read ca_file {path}: {reason}")]
    CaFile { upstream: String, path: String, reason: String },
    #[error("upstream {upstream}: {reason}")]
    Rustls { upstream: String, reason: String },
}

/// Why a TLS handshake with an upstream failed, classified for the racer and the logs.
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    /// No configured pin matched any certificate the server presented (RFC 7858 §4.2: not
    /// recoverable). Carries what the server presented so a user can re-pin.
    #[error("pin mismatch: server presented {presented}")]
    PinMismatch { presented: PresentedPins },
    /// A pin matched a CA certificate, and the leaf did not validate to it for `tls_name`
    /// (or there is no `tls_name`): which check failed. Not recoverable either.
    #[error("CA pin refused: {0}")]
    CaPinRefused(CaRefusal),
    /// Any other TLS failure: an alert, a bad certificate or name, a bad handshake signature.
    #[error("tls: {0}")]
    Tls(String),
    /// The transport failed under the handshake (RST, EOF, ...).
    #[error("io: {0}")]
    Io(io::Error),
}

/// Everything needed to open TLS to one upstream: its config and the name to send as SNI.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    /// The same verifier with ALPN `h2`, for DNS over HTTPS (RFC 8484 §5.2, RFC 9113
    /// §3.2), and a session cache of its own: a DoT session is not resumed on 443.
    https: TlsConnector,
    server_name: ServerName<'static>,
    /// The verifier authenticates the server (pins, or CA + name); false for the
    /// encrypt-only verifier of an opportunistic upstream with neither.
    authenticates: bool,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("authenticates", &self.authenticates)
            .finish()
    }
}

impl UpstreamTls {
    /// Builds the client config for `upstream`. The config (and so its TLS session cache)
    /// is shared by every connection to this upstream, so reconnects resume (RFC 7858 §3.4).
    pub fn new(upstream: &UpstreamConfig) -> Result<Self, TlsSetupError> {
        let provider = provider();
        let algorithms = provider.signature_verification_algorithms;
        let authenticates = !upstream.pins.is_empty() || upstream.tls_name.is_some();
        let server_name = match &upstream.tls_name {
            Some(name) => ServerName::try_from(name.clone()).map_err(|e| TlsSetupError::Rustls {
                upstream: upstream.name.clone(),
                reason: e.to_string(),
            })?,
            // An IP-address server name sends no SNI; only a leaf pin can authenticate.
            None => ServerName::IpAddress(upstream_ip(upstream).into()),
        };
        let verifier: Arc<dyn ServerCertVerifier> = if !upstream.pins.is_empty() {
            let tls_name = upstream.tls_name.is_some().then(|| server_name.clone());
            Arc::new(KeyVerifier {
                policy: KeyPolicy::Pins { pins: upstream.pins.clone(), tls_name },
                algorithms,
            })
        } else if upstream.tls_name.is_some() {
            let roots = load_roots(upstream)?;
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().map_err(
                |e| TlsSetupError::Rustls { upstream: upstream.name.clone(), reason: e.to_string() },
            )?
        } else {
            // Config validation only lets opportunistic upstreams get here (RFC 8310 §5:
            // opportunistic privacy may use unauthenticated encryption).
            encrypt_only_verifier()
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Rustls { upstream: upstream.name.clone(), reason: e.to_string() })?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let mut https = config.clone();
        https.alpn_protocols = vec![ALPN_H2.to_vec()];
        https.resumption = rustls::client::Resumption::default();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            https: TlsConnector::from(Arc::new(https)),
            server_name,
            authenticates,
        })
    }

    /// Whether a completed handshake authenticated the server (RFC 8310 §5): false for an
    /// opportunistic upstream with neither pins nor `tls_name`, whose TLS only encrypts.
    pub fn authenticates(&self) -> bool {
        self.authenticates
    }

    /// Runs the TLS handshake over an established stream; returns once the key is verified.
    pub async fn handshake<S>(&self, stream: S) -> Result<TlsStream<S>, TlsConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.connector.connect(self.server_name.clone(), stream).await.map_err(classify_handshake_error)
    }

    /// The handshake for DNS over HTTPS: the same verification, with ALPN `h2`. A server
    /// that does not select `h2` is refused: there is no HTTP/1.1 path (RFC 8484 §5.2
    /// recommends HTTP/2, and a stub multiplexes on it), and never a plain-HTTP one.
    pub async fn handshake_https<S>(&self, stream: S) -> Result<TlsStream<S>, TlsConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let tls =
            self.https.connect(self.server_name.clone(), stream).await.map_err(classify_handshake_error)?;
        match tls.get_ref().1.alpn_protocol() {
            Some(ALPN_H2) => Ok(tls),
            other => Err(TlsConnectError::Tls(format!(
                "server did not select ALPN h2 (selected {})",
                other.map_or("none".to_string(), |p| String::from_utf8_lossy(p).into_owned())
            ))),
        }
    }
}

/// The ALPN protocol ID of HTTP/2 over TLS (RFC 9113 §3.2).
const ALPN_H2: &[u8] = b"h2";

/// A verifier that authenticates nothing but still reads the leaf and checks the
/// handshake signature against its key: for opportunistic upstreams (RFC 8310 §5), and
/// for `stubborn pin`, which must see a chain before anyone can pin it.
pub fn encrypt_only_verifier() -> Arc<dyn ServerCertVerifier> {
    Arc::new(KeyVerifier {
        policy: KeyPolicy::EncryptOnly,
        algorithms: provider().signature_verification_algorithms,
    })
}

fn upstream_ip(upstream: &UpstreamConfig) -> IpAddr {
    upstream.addresses.first().copied().unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn load_roots(upstream: &UpstreamConfig) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match &upstream.ca {
        CaSource::WebPki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        CaSource::File(path) => {
            let ca_err = |reason: String| TlsSetupError::CaFile {
                upstream: upstream.name.clone(),
                path: path.display().to_string(),
                reason,
            };
            use rustls_pki_types::pem::PemObject;
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))? {
                let cert = cert.map_err(|e| ca_err(e.to_string()))?;
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_err("no certificates found".into()));
            }
        }
    }
    Ok(roots)
}

fn classify_handshake_error(err: io::Error) -> TlsConnectError {
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return TlsConnectError::Io(err);
    };
    if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) = tls {
        if let Some(mismatch) = inner.downcast_ref::<PinMismatch>() {
            return TlsConnectError::PinMismatch { presented: mismatch.presented.clone() };
        }
        if let Some(refusal) = inner.downcast_ref::<CaRefusal>() {
            return TlsConnectError::CaPinRefused(refusal.clone());
        }
    }
    TlsConnectError::Tls(tls.to_string())
}
