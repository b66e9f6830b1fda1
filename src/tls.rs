//! TLS towards upstreams: one rustls `ClientConfig` per upstream, and the pin verifier.
//!
//! Owns the authentication policy of RFC 8310: pins (`key-fp` / `cert-fp`), CA + hostname,
//! or — only for opportunistic upstreams that configure neither — encryption without
//! authentication. It must never skip the TLS handshake signature check (a server holding
//! the pinned *certificate* but not its *key* must fail) and never turn a pin mismatch into
//! a warning: a mismatch is a refused connection.

use std::{fmt, io, net::IpAddr, sync::Arc};

use ring::digest::{SHA256, digest};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsConnector, client::TlsStream};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{CaSource, Pin, UpstreamConfig};

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
    server_name: ServerName<'static>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls").field("server_name", &self.server_name).finish()
    }
}

impl UpstreamTls {
    /// Builds the client config for `upstream`. The config (and so its TLS session cache)
    /// is shared by every connection to this upstream, so reconnects resume (RFC 7858 §3.4).
    pub fn new(upstream: &UpstreamConfig) -> Result<Self, TlsSetupError> {
        let provider = provider();
        let algorithms = provider.signature_verification_algorithms;
        let verifier: Arc<dyn ServerCertVerifier> = if !upstream.pins.is_empty() {
            Arc::new(KeyVerifier { policy: KeyPolicy::Pins(upstream.pins.clone()), algorithms })
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
        let server_name = match &upstream.tls_name {
            Some(name) => ServerName::try_from(name.clone()).map_err(|e| TlsSetupError::Rustls {
                upstream: upstream.name.clone(),
                reason: e.to_string(),
            })?,
            // An IP-address server name sends no SNI; the pin authenticates.
            None => ServerName::IpAddress(upstream_ip(upstream).into()),
        };
        Ok(Self { connector: TlsConnector::from(Arc::new(config)), server_name })
    }

    /// Runs the TLS handshake over an established stream; returns once the key is verified.
    pub async fn handshake<S>(&self, stream: S) -> Result<TlsStream<S>, TlsConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.connector.connect(self.server_name.clone(), stream).await.map_err(classify_handshake_error)
    }
}

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
    }
    TlsConnectError::Tls(tls.to_string())
}

/// The pins of the certificates a server presented, for the log line that lets a user re-pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedPins(pub Vec<Pin>);

impl fmt::Display for PresentedPins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pin) in self.0.iter().enumerate() {
            let role = if i == 0 { "leaf" } else { "chain" };
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{role} {pin}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no pin matched; server presented {presented}")]
struct PinMismatch {
    presented: PresentedPins,
}

/// SHA-256 of a certificate's DER SubjectPublicKeyInfo (the `key-fp` / SPKI pin value).
pub fn key_fingerprint(cert: &X509Certificate<'_>) -> [u8; 32] {
    sha256(cert.public_key().raw)
}

/// SHA-256 of a whole certificate's DER (the `cert-fp` value).
pub fn cert_fingerprint(der: &[u8]) -> [u8; 32] {
    sha256(der)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

fn bad_encoding() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
}

/// What a [`KeyVerifier`] requires of the presented chain.
#[derive(Debug)]
enum KeyPolicy {
    /// Pins alone (RFC 7858 §4.2). A pin may match the key or DER of any certificate in
    /// the presented chain, so pinning an intermediate survives a leaf rotation.
    ///
    /// Validity dates are not enforced: the pinned key, not a CA's validity window, is
    /// the trust anchor (as with stubby's pinset and Knot's pin_sha256). An expired
    /// certificate is accepted and logged at warn.
    Pins(Vec<Pin>),
    /// Opportunistic privacy without authentication (RFC 8310 §5): encrypt, authenticate
    /// nothing. Only opportunistic upstreams with neither pins nor a name get this.
    EncryptOnly,
}

/// Our certificate verifier for pinned and encrypt-only upstreams. Whatever the policy,
/// the handshake signature is always checked against the presented leaf key.
#[derive(Debug)]
struct KeyVerifier {
    policy: KeyPolicy,
    algorithms: WebPkiSupportedAlgorithms,
}

fn pin_matches(pins: &[Pin], cert: &X509Certificate<'_>, der: &[u8]) -> bool {
    let key = key_fingerprint(cert);
    let whole = cert_fingerprint(der);
    pins.iter().any(|pin| match pin {
        Pin::KeySha256(h) => *h == key,
        Pin::CertSha256(h) => *h == whole,
    })
}

/// pub(crate) for src/fuzz.rs, which feeds it arbitrary DER.
pub(crate) fn verify_pins(pins: &[Pin], ders: &[&[u8]]) -> Result<(), rustls::Error> {
    let mut chain = Vec::with_capacity(ders.len());
    for der in ders {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| bad_encoding())?;
        chain.push(cert);
    }
    let Some(matched) = chain.iter().zip(ders).position(|(c, d)| pin_matches(pins, c, d)) else {
        let presented = PresentedPins(chain.iter().map(|c| Pin::KeySha256(key_fingerprint(c))).collect());
        return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            PinMismatch { presented },
        )))));
    };
    // A pinned intermediate vouches for the leaf only through signatures: every
    // certificate below the match must be signed by the next one up.
    for pair in chain[..=matched].windows(2) {
        pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
    }
    if !chain[0].validity().is_valid() {
        tracing::warn!(
            not_after = %chain[0].validity().not_after,
            "pinned upstream presents a certificate outside its validity dates; accepted because the pin matched"
        );
    }
    Ok(())
}

impl ServerCertVerifier for KeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.policy {
            KeyPolicy::Pins(pins) => {
                let ders: Vec<&[u8]> = std::iter::once(end_entity.as_ref())
                    .chain(intermediates.iter().map(|c| c.as_ref()))
                    .collect();
                verify_pins(pins, &ders)?;
            }
            KeyPolicy::EncryptOnly => {
                X509Certificate::from_der(end_entity).map_err(|_| bad_encoding())?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, PublicKeyData};

    use super::*;

    struct Chain {
        leaf: Vec<u8>,
        intermediate: Vec<u8>,
        intermediate_key: [u8; 32],
        leaf_key: [u8; 32],
    }

    fn spki_hash(key: &KeyPair) -> [u8; 32] {
        sha256(&key.subject_public_key_info())
    }

    fn ca_params(name: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    }

    fn chain() -> Chain {
        let root = CertifiedIssuer::self_signed(ca_params("root"), KeyPair::generate().unwrap()).unwrap();
        let inter_key = KeyPair::generate().unwrap();
        let intermediate_key = spki_hash(&inter_key);
        let inter = CertifiedIssuer::signed_by(ca_params("intermediate"), inter_key, &root).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["dns.test".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &inter)
            .unwrap();
        Chain {
            leaf: leaf.der().to_vec(),
            intermediate: inter.der().to_vec(),
            intermediate_key,
            leaf_key: spki_hash(&leaf_key),
        }
    }

    fn is_pin_mismatch(err: &rustls::Error) -> bool {
        matches!(err, rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e))) if e.downcast_ref::<PinMismatch>().is_some())
    }

    #[test]
    fn a_leaf_key_pin_matches_the_leaf() {
        let c = chain();
        verify_pins(&[Pin::KeySha256(c.leaf_key)], &[&c.leaf, &c.intermediate]).unwrap();
    }

    #[test]
    fn an_intermediate_pin_accepts_a_leaf_it_signed() {
        let c = chain();
        verify_pins(&[Pin::KeySha256(c.intermediate_key)], &[&c.leaf, &c.intermediate]).unwrap();
    }

    #[test]
    fn an_intermediate_pin_refuses_a_leaf_it_did_not_sign() {
        // An attacker presents its own leaf next to the real (public) intermediate.
        let real = chain();
        let attacker = chain();
        let err =
            verify_pins(&[Pin::KeySha256(real.intermediate_key)], &[&attacker.leaf, &real.intermediate])
                .unwrap_err();
        assert_eq!(err, rustls::Error::InvalidCertificate(CertificateError::BadSignature));
    }

    #[test]
    fn no_match_reports_what_was_presented() {
        let c = chain();
        let err = verify_pins(&[Pin::KeySha256([7; 32])], &[&c.leaf, &c.intermediate]).unwrap_err();
        assert!(is_pin_mismatch(&err));
        let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e))) = err else {
            unreachable!()
        };
        let mismatch = e.downcast_ref::<PinMismatch>().unwrap();
        assert_eq!(
            mismatch.presented.0,
            vec![Pin::KeySha256(c.leaf_key), Pin::KeySha256(c.intermediate_key)]
        );
    }

    #[test]
    fn a_cert_pin_matches_the_whole_der_only() {
        let c = chain();
        verify_pins(&[Pin::CertSha256(cert_fingerprint(&c.leaf))], &[&c.leaf]).unwrap();
        // The key's hash is not the certificate's hash.
        assert!(verify_pins(&[Pin::CertSha256(c.leaf_key)], &[&c.leaf]).is_err());
    }

    #[test]
    fn garbage_certificates_are_bad_encoding_not_a_panic() {
        assert_eq!(
            verify_pins(&[Pin::KeySha256([0; 32])], &[b"not a certificate"]).unwrap_err(),
            bad_encoding()
        );
    }
}
