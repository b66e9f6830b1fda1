//! The pin policy: which presented chains a set of pins accepts, and why it refuses one.
//!
//! - A pin that matches the **leaf** (key or DER) authenticates the server by itself
//!   (RFC 7858 §4.2): `tls_name` is then only SNI, and an expired leaf is accepted and
//!   logged at warn, as stubby and Knot do with their pinsets.
//! - A pin that matches a **CA** certificate further up makes that certificate a trust
//!   anchor, never an identity: the leaf must validate to it as a web PKI client would
//!   (signatures with rustls' algorithms, issuers that are CAs, validity dates, serverAuth)
//!   and carry `tls_name` in its subjectAltName. HPKP, whose pin format RFC 7858 §4.2
//!   borrows, applies pins on top of normal validation (RFC 7469 §2.6); RFC 8310 §6.4 asks
//!   for both checks when both are configured. Without that, anyone who obtains a
//!   certificate for their own name from the same CA could impersonate the upstream.
//!
//! Sans-IO: certificates, names and the time come in, a verdict goes out.

use std::{fmt, sync::Arc};

use ring::digest::{SHA256, digest};
use rustls::{
    CertificateError, DigitallySignedStruct, OtherError, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
};
use rustls_pki_types::{CertificateDer, ServerName, SignatureVerificationAlgorithm, UnixTime};
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};

use crate::config::Pin;

/// The check a chain failed under a pinned CA. Short and bounded: it goes into the race's
/// failure reason and so into the EDE text clients get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaCheck {
    /// A pin matched a CA certificate, but the upstream has no `tls_name` to check the
    /// leaf against.
    NoTlsName,
    /// The leaf's subjectAltName does not cover `tls_name` (or a CA's name constraints
    /// exclude it).
    NameMismatch,
    /// A certificate on the path has expired.
    Expired,
    /// A certificate on the path is not valid yet.
    NotYetValid,
    /// The leaf (or an issuer) has an extended key usage without serverAuth.
    NotForServerAuth,
    /// An issuer is not a CA: no basicConstraints cA, no keyCertSign, or its path length
    /// is exceeded.
    IssuerNotCa,
    /// The leaf does not chain to the pinned certificate: unknown issuer or a signature
    /// that does not verify.
    NotSignedByPin,
    /// A signature uses an algorithm or key rustls does not accept (SHA-1, RSA < 2048).
    WeakSignature,
    /// Anything else webpki refuses (malformed, unsupported critical extension, ...).
    Invalid,
}

impl CaCheck {
    pub fn as_str(&self) -> &'static str {
        match self {
            CaCheck::NoTlsName => "CA pin without tls_name",
            CaCheck::NameMismatch => "leaf not valid for tls_name",
            CaCheck::Expired => "certificate expired",
            CaCheck::NotYetValid => "certificate not yet valid",
            CaCheck::NotForServerAuth => "certificate not for serverAuth",
            CaCheck::IssuerNotCa => "issuer is not a CA",
            CaCheck::NotSignedByPin => "leaf does not chain to the pinned CA",
            CaCheck::WeakSignature => "signature algorithm not accepted",
            CaCheck::Invalid => "chain not valid",
        }
    }

    fn of(err: &webpki::Error) -> Self {
        use webpki::Error as E;
        match err {
            E::CertNotValidForName(_) | E::NameConstraintViolation => CaCheck::NameMismatch,
            E::CertExpired { .. } => CaCheck::Expired,
            E::CertNotValidYet { .. } => CaCheck::NotYetValid,
            E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => CaCheck::NotForServerAuth,
            E::EndEntityUsedAsCa | E::PathLenConstraintViolated => CaCheck::IssuerNotCa,
            E::UnknownIssuer | E::InvalidSignatureForPublicKey => CaCheck::NotSignedByPin,
            E::UnsupportedSignatureAlgorithmContext(_)
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
            | E::SignatureAlgorithmMismatch => CaCheck::WeakSignature,
            _ => CaCheck::Invalid,
        }
    }
}

impl fmt::Display for CaCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pin matched the CA certificate at `depth` of the presented chain, and the leaf did
/// not validate to it: which check failed, and the details for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pinned CA at depth {depth} does not vouch for the leaf: {check} ({detail})")]
pub struct CaRefusal {
    pub depth: usize,
    pub check: CaCheck,
    pub detail: String,
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

/// No pin matched any presented certificate (carried inside a rustls error).
#[derive(Debug, thiserror::Error)]
#[error("no pin matched; server presented {presented}")]
pub(super) struct PinMismatch {
    pub(super) presented: PresentedPins,
}

/// SHA-256 of a certificate's DER SubjectPublicKeyInfo (the `key-fp` / SPKI pin value).
pub fn key_fingerprint(cert: &X509Certificate<'_>) -> [u8; 32] {
    sha256(cert.public_key().raw)
}

/// SHA-256 of a whole certificate's DER (the `cert-fp` value).
pub fn cert_fingerprint(der: &[u8]) -> [u8; 32] {
    sha256(der)
}

pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

pub(super) fn bad_encoding() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
}

fn refused(inner: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(inner))))
}

/// What a [`KeyVerifier`] requires of the presented chain.
#[derive(Debug)]
pub(super) enum KeyPolicy {
    /// Pins (RFC 7858 §4.2), with the rule in the module comment. `tls_name` is the
    /// configured name (not the IP-address server name used when there is none).
    Pins { pins: Vec<Pin>, tls_name: Option<ServerName<'static>> },
    /// Opportunistic privacy without authentication (RFC 8310 §5): encrypt, authenticate
    /// nothing. Only opportunistic upstreams with neither pins nor a name get this.
    EncryptOnly,
}

/// Our certificate verifier for pinned and encrypt-only upstreams. Whatever the policy,
/// the handshake signature is always checked against the presented leaf key.
#[derive(Debug)]
pub(super) struct KeyVerifier {
    pub(super) policy: KeyPolicy,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
}

fn pin_matches(pins: &[Pin], cert: &X509Certificate<'_>, der: &[u8]) -> bool {
    let key = key_fingerprint(cert);
    let whole = cert_fingerprint(der);
    pins.iter().any(|pin| match pin {
        Pin::KeySha256(h) => *h == key,
        Pin::CertSha256(h) => *h == whole,
    })
}

/// Judges a presented chain (leaf first) against `pins`. A refusal is a rustls error
/// carrying [`PinMismatch`] or [`CaRefusal`], so the handshake error can be classified.
/// pub(crate) for src/fuzz.rs, which feeds it arbitrary DER.
pub(crate) fn verify_pins(
    pins: &[Pin],
    tls_name: Option<&ServerName<'_>>,
    chain: &[CertificateDer<'_>],
    now: UnixTime,
    algorithms: &[&dyn SignatureVerificationAlgorithm],
) -> Result<(), rustls::Error> {
    let mut parsed = Vec::with_capacity(chain.len());
    for der in chain {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| bad_encoding())?;
        parsed.push(cert);
    }
    let matched: Vec<usize> = parsed
        .iter()
        .zip(chain)
        .enumerate()
        .filter(|(_, (c, d))| pin_matches(pins, c, d))
        .map(|(i, _)| i)
        .collect();
    match matched.first() {
        None => {
            let presented =
                PresentedPins(parsed.iter().map(|c| Pin::KeySha256(key_fingerprint(c))).collect());
            Err(refused(PinMismatch { presented }))
        }
        Some(0) => {
            // The leaf itself is pinned: the pin is the identity (RFC 7858 §4.2).
            if !parsed[0].validity().is_valid_at(asn1_time(now)) {
                tracing::warn!(
                    not_after = %parsed[0].validity().not_after,
                    "pinned upstream presents a leaf outside its validity dates; accepted because the leaf's pin matched"
                );
            }
            Ok(())
        }
        Some(_) => {
            // Only CAs matched; any one of them may vouch. Report the closest refusal.
            let mut first = None;
            for &depth in &matched {
                match verify_ca_pin(chain, depth, tls_name, now, algorithms) {
                    Ok(()) => return Ok(()),
                    Err(refusal) => {
                        first.get_or_insert(refusal);
                    }
                }
            }
            Err(refused(first.expect("at least one CA matched")))
        }
    }
}

fn asn1_time(now: UnixTime) -> ASN1Time {
    let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    ASN1Time::from_timestamp(secs).unwrap_or_else(|_| ASN1Time::now())
}

/// Does the leaf (`chain[0]`) validate, for `tls_name` at `now`, to the certificate at
/// `chain[depth]` taken as trust anchor, as a web PKI client would? The other presented
/// certificates are the candidate intermediates. `stubborn pin` asks this too.
pub fn verify_ca_pin(
    chain: &[CertificateDer<'_>],
    depth: usize,
    tls_name: Option<&ServerName<'_>>,
    now: UnixTime,
    algorithms: &[&dyn SignatureVerificationAlgorithm],
) -> Result<(), CaRefusal> {
    let refuse = |check: CaCheck, detail: String| CaRefusal { depth, check, detail };
    let Some(name) = tls_name else {
        return Err(refuse(
            CaCheck::NoTlsName,
            "a pin matched a CA certificate, which vouches only for a name: set tls_name, or pin the leaf"
                .into(),
        ));
    };
    if depth == 0 || depth >= chain.len() {
        return Err(refuse(CaCheck::Invalid, "no such CA certificate in the chain".into()));
    }
    let webpki_err = |e: webpki::Error| refuse(CaCheck::of(&e), format!("{e:?}"));
    let anchor = webpki::anchor_from_trusted_cert(&chain[depth]).map_err(webpki_err)?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(webpki_err)?;
    let intermediates: Vec<CertificateDer<'_>> =
        chain.iter().enumerate().filter(|(i, _)| *i != 0 && *i != depth).map(|(_, c)| c.clone()).collect();
    let anchors = [anchor];
    // Signatures (rustls' algorithms: no SHA-1, no RSA under 2048 bits), validity dates,
    // basicConstraints and EKU of the leaf and every intermediate (RFC 5280 §6.1).
    let path = leaf
        .verify_for_usage(
            algorithms,
            &anchors,
            &intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(webpki_err)?;
    // webpki takes a trust anchor as a bare name and key (RFC 5280 §6.1.1). The pinned
    // certificate is a CA certificate of the server's chain, so it is held to an issuer's
    // rules as well; and webpki ignores keyUsage, which an issuer must allow keyCertSign
    // in (RFC 5280 §4.2.1.3).
    let below = path.intermediate_certificates().count();
    check_issuer(&chain[depth], Some(below), now).map_err(|(check, detail)| refuse(check, detail))?;
    for cert in path.intermediate_certificates() {
        check_issuer(&cert.der(), None, now)
            .map_err(|(check, detail)| refuse(check, format!("intermediate: {detail}")))?;
    }
    leaf.verify_is_valid_for_subject_name(name).map_err(|e| match e {
        webpki::Error::CertNotValidForName(ctx) => refuse(
            CaCheck::NameMismatch,
            format!("tls_name {} is not among the leaf's names {:?}", server_name_text(name), ctx.presented),
        ),
        other => webpki_err(other),
    })?;
    Ok(())
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => format!("{name:?}"),
    }
}

/// An issuer's own properties: basicConstraints cA (and, for the anchor, its path length
/// over the `below` intermediates), keyUsage keyCertSign when present; for the anchor,
/// which webpki does not look at, also its validity dates and its EKU.
fn check_issuer(der: &[u8], anchor_below: Option<usize>, now: UnixTime) -> Result<(), (CaCheck, String)> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| (CaCheck::Invalid, e.to_string()))?;
    let subject = cert.subject().to_string();
    let ext = |e: x509_parser::error::X509Error| (CaCheck::Invalid, format!("{subject}: {e}"));
    let constraints = cert.basic_constraints().map_err(ext)?;
    let Some(bc) = constraints.filter(|bc| bc.value.ca) else {
        return Err((CaCheck::IssuerNotCa, format!("{subject} has no basicConstraints cA")));
    };
    if let Some(usage) = cert.key_usage().map_err(ext)? {
        if !usage.value.key_cert_sign() {
            return Err((CaCheck::IssuerNotCa, format!("{subject}: keyUsage lacks keyCertSign")));
        }
    }
    let Some(below) = anchor_below else { return Ok(()) };
    if let Some(limit) = bc.value.path_len_constraint {
        if below > limit as usize {
            return Err((
                CaCheck::IssuerNotCa,
                format!("{subject}: pathLenConstraint {limit}, {below} CAs below"),
            ));
        }
    }
    let validity = cert.validity();
    let at = asn1_time(now);
    if at < validity.not_before {
        return Err((CaCheck::NotYetValid, format!("{subject}: not before {}", validity.not_before)));
    }
    if at > validity.not_after {
        return Err((CaCheck::Expired, format!("{subject}: not after {}", validity.not_after)));
    }
    if let Some(eku) = cert.extended_key_usage().map_err(ext)? {
        if !(eku.value.server_auth || eku.value.any) {
            return Err((
                CaCheck::NotForServerAuth,
                format!("{subject}: extendedKeyUsage without serverAuth"),
            ));
        }
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
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.policy {
            KeyPolicy::Pins { pins, tls_name } => {
                let chain: Vec<CertificateDer<'_>> =
                    std::iter::once(end_entity.clone()).chain(intermediates.iter().cloned()).collect();
                verify_pins(pins, tls_name.as_ref(), &chain, now, self.algorithms.all)?;
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
mod tests;
