//! Test PKI: certificates made with rcgen, and the pin strings stubborn understands.
//!
//! Owns: key and certificate generation for the in-process upstream, and the pin
//! helpers (`key-fp:SHA256:<b64>` over the DER SubjectPublicKeyInfo, `cert-fp:SHA256:<b64>`
//! over the whole certificate DER). Must never touch the network or the file system
//! (except [`write_pem`], which writes where the caller says).

use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PublicKeyData,
};
use rustls_pki_types::CertificateDer;

/// Which certificate chain the upstream presents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChainKind {
    /// A single self-signed leaf; the leaf is its own trust anchor (`ca_pem` is the leaf).
    #[default]
    SelfSigned,
    /// root CA -> intermediate CA -> leaf; the server presents leaf + intermediate,
    /// and `ca_pem` is the root.
    WithIntermediate,
}

/// A generated chain: everything the upstream and the tests need.
pub struct TestPki {
    /// The certificates the server presents, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER of the leaf's private key.
    pub leaf_key_pkcs8: Vec<u8>,
    /// PKCS#8 DER of an unrelated key of the same algorithm (ECDSA P-256), for `Fault::WrongKey`.
    pub wrong_key_pkcs8: Vec<u8>,
    /// The trust anchor for CA mode: the root, or the self-signed leaf.
    pub ca_der: CertificateDer<'static>,
    /// `ca_der` as PEM.
    pub ca_pem: String,
    /// The leaf certificate as PEM.
    pub leaf_pem: String,
    /// `key-fp:SHA256:` pin of the leaf SPKI (computed from rcgen's key, not from the certificate).
    pub leaf_key_pin: String,
    /// `cert-fp:SHA256:` pin of the leaf certificate DER.
    pub leaf_cert_pin: String,
    /// `key-fp:SHA256:` pin of the intermediate CA key (WithIntermediate only).
    pub intermediate_key_pin: Option<String>,
    /// `key-fp:SHA256:` pin of the root CA key (WithIntermediate only).
    pub root_key_pin: Option<String>,
}

/// `key-fp:SHA256:<base64>` of a DER SubjectPublicKeyInfo (outer SEQUENCE included).
pub fn key_pin_of_spki(spki_der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, spki_der);
    format!("key-fp:SHA256:{}", BASE64.encode(d.as_ref()))
}

/// `cert-fp:SHA256:<base64>` of a whole certificate DER.
pub fn cert_pin_of(cert_der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, cert_der);
    format!("cert-fp:SHA256:{}", BASE64.encode(d.as_ref()))
}

/// `key-fp:SHA256:<base64>` of a certificate's SPKI, extracted independently of rcgen with
/// rustls-webpki (the same path stubborn's verifier is expected to use).
///
/// Panics if `cert_der` is not a parseable X.509 certificate.
pub fn spki_pin_of(cert_der: &[u8]) -> String {
    let der = CertificateDer::from(cert_der.to_vec());
    let ee = webpki::EndEntityCert::try_from(&der).expect("spki_pin_of: not a certificate");
    key_pin_of_spki(ee.subject_public_key_info().as_ref())
}

/// A pin that is well-formed but matches nothing we generate (SHA-256 of a fixed string).
pub fn unrelated_key_pin() -> String {
    key_pin_of_spki(b"stubborn test: this is not a SubjectPublicKeyInfo")
}

/// Writes `pem` to `dir/name` and returns the path (for `ca_file`-style config keys).
pub fn write_pem(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write_pem");
    path
}

fn leaf_params(tls_name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(vec![tls_name.to_string()]).expect("leaf params");
    p.distinguished_name.push(DnType::CommonName, tls_name);
    p.use_authority_key_identifier_extension = true;
    p
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// Generates a fresh chain for `tls_name` (a DNS name placed in the leaf's SAN and CN).
pub fn generate(chain: ChainKind, tls_name: &str) -> TestPki {
    let leaf_key = KeyPair::generate().expect("leaf key");
    let wrong_key = KeyPair::generate().expect("wrong key");
    let leaf_key_pin = key_pin_of_spki(&leaf_key.subject_public_key_info());

    match chain {
        ChainKind::SelfSigned => {
            let leaf = leaf_params(tls_name).self_signed(&leaf_key).expect("self-signed leaf");
            let leaf_der = leaf.der().clone();
            TestPki {
                leaf_cert_pin: cert_pin_of(&leaf_der),
                ca_der: leaf_der.clone(),
                ca_pem: leaf.pem(),
                leaf_pem: leaf.pem(),
                chain: vec![leaf_der],
                leaf_key_pkcs8: leaf_key.serialize_der(),
                wrong_key_pkcs8: wrong_key.serialize_der(),
                leaf_key_pin,
                intermediate_key_pin: None,
                root_key_pin: None,
            }
        }
        ChainKind::WithIntermediate => {
            let root_key = KeyPair::generate().expect("root key");
            let inter_key = KeyPair::generate().expect("intermediate key");
            let root_key_pin = key_pin_of_spki(&root_key.subject_public_key_info());
            let inter_key_pin = key_pin_of_spki(&inter_key.subject_public_key_info());

            let root =
                CertifiedIssuer::self_signed(ca_params("stubborn test root CA"), root_key).expect("root");
            let mut ip = ca_params("stubborn test intermediate CA");
            ip.use_authority_key_identifier_extension = true;
            let inter = CertifiedIssuer::signed_by(ip, inter_key, &root).expect("intermediate");
            let leaf = leaf_params(tls_name).signed_by(&leaf_key, &inter).expect("leaf");
            let leaf_der = leaf.der().clone();
            TestPki {
                leaf_cert_pin: cert_pin_of(&leaf_der),
                ca_der: root.der().clone(),
                ca_pem: root.pem(),
                leaf_pem: leaf.pem(),
                chain: vec![leaf_der, inter.der().clone()],
                leaf_key_pkcs8: leaf_key.serialize_der(),
                wrong_key_pkcs8: wrong_key.serialize_der(),
                leaf_key_pin,
                intermediate_key_pin: Some(inter_key_pin),
                root_key_pin: Some(root_key_pin),
            }
        }
    }
}
