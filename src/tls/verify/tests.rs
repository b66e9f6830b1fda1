//! The pin policy on in-process rcgen PKIs: root → intermediate → leaves.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, date_time_ymd,
};

use super::*;

/// The fixed "now" of these tests: 2026-01-01T00:00:00Z.
fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_767_225_600))
}

fn algs() -> &'static [&'static dyn SignatureVerificationAlgorithm] {
    crate::tls::provider().signature_verification_algorithms.all
}

fn key_pin(key: &KeyPair) -> Pin {
    Pin::KeySha256(sha256(&key.subject_public_key_info()))
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn leaf_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p
}

/// A root and an intermediate (made from `inter`) under it.
struct Pki {
    root: CertifiedIssuer<'static, KeyPair>,
    inter: CertifiedIssuer<'static, KeyPair>,
    root_pin: Pin,
    inter_pin: Pin,
}

impl Pki {
    fn with_intermediate(inter: CertificateParams) -> Self {
        let root_key = KeyPair::generate().unwrap();
        let root_pin = key_pin(&root_key);
        let root = CertifiedIssuer::self_signed(ca_params("root"), root_key).unwrap();
        let inter_key = KeyPair::generate().unwrap();
        let inter_pin = key_pin(&inter_key);
        let inter = CertifiedIssuer::signed_by(inter, inter_key, &root).unwrap();
        Pki { root, inter, root_pin, inter_pin }
    }

    fn new() -> Self {
        Self::with_intermediate(ca_params("intermediate"))
    }

    /// A leaf from `params`, signed by the intermediate: (DER, its key pin).
    fn leaf(&self, params: CertificateParams) -> (CertificateDer<'static>, Pin) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.inter).unwrap();
        (cert.der().clone(), key_pin(&key))
    }

    /// What a server presents: the leaf, then the intermediate.
    fn chain(&self, leaf: &CertificateDer<'static>) -> Vec<CertificateDer<'static>> {
        vec![leaf.clone(), self.inter.der().clone()]
    }
}

fn name(n: &str) -> ServerName<'static> {
    ServerName::try_from(n.to_string()).unwrap()
}

fn check(pins: &[Pin], tls_name: Option<&str>, chain: &[CertificateDer<'_>]) -> Result<(), rustls::Error> {
    verify_pins(pins, tls_name.map(name).as_ref(), chain, now(), algs())
}

/// The CA check a refusal names, or a panic when it is not a CA refusal.
fn ca_check(result: Result<(), rustls::Error>) -> (usize, CaCheck) {
    match result {
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e)))) => {
            let r = e.downcast_ref::<CaRefusal>().unwrap_or_else(|| panic!("not a CA refusal: {e}"));
            (r.depth, r.check)
        }
        other => panic!("expected a CA refusal, got {other:?}"),
    }
}

#[test]
fn an_intermediate_pin_accepts_a_leaf_for_tls_name() {
    let pki = Pki::new();
    let (leaf, _) = pki.leaf(leaf_params("dns.test"));
    check(&[pki.inter_pin], Some("dns.test"), &pki.chain(&leaf)).unwrap();
}

#[test]
fn a_root_pin_accepts_a_leaf_through_the_presented_intermediate() {
    let pki = Pki::new();
    let (leaf, _) = pki.leaf(leaf_params("dns.test"));
    let mut chain = pki.chain(&leaf);
    chain.push(pki.root.der().clone());
    check(&[pki.root_pin], Some("dns.test"), &chain).unwrap();
}

#[test]
fn an_intermediate_pin_refuses_a_leaf_for_another_name() {
    // Anyone can get a leaf for their own name from the same CA: it must not pass as ours.
    let pki = Pki::new();
    let (leaf, _) = pki.leaf(leaf_params("attacker.test"));
    assert_eq!(
        ca_check(check(&[pki.inter_pin], Some("dns.test"), &pki.chain(&leaf))),
        (1, CaCheck::NameMismatch)
    );
}

#[test]
fn a_ca_pin_without_tls_name_is_refused_and_says_why() {
    let pki = Pki::new();
    let (leaf, _) = pki.leaf(leaf_params("dns.test"));
    assert_eq!(ca_check(check(&[pki.inter_pin], None, &pki.chain(&leaf))), (1, CaCheck::NoTlsName));
    let err = check(&[pki.inter_pin], None, &pki.chain(&leaf)).unwrap_err();
    assert!(err.to_string().contains("tls_name"), "{err}");
}

#[test]
fn a_leaf_pin_passes_whatever_the_name() {
    let pki = Pki::new();
    let (leaf, leaf_pin) = pki.leaf(leaf_params("attacker.test"));
    check(&[leaf_pin], Some("dns.test"), &pki.chain(&leaf)).unwrap();
    check(&[leaf_pin], None, &pki.chain(&leaf)).unwrap();
    // With a CA pin beside it, the leaf's match still decides.
    check(&[pki.inter_pin, leaf_pin], None, &pki.chain(&leaf)).unwrap();
}

#[test]
fn an_intermediate_pin_refuses_an_expired_leaf_but_a_leaf_pin_accepts_it() {
    let pki = Pki::new();
    let mut p = leaf_params("dns.test");
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2021, 1, 1);
    let (leaf, leaf_pin) = pki.leaf(p);
    assert_eq!(ca_check(check(&[pki.inter_pin], Some("dns.test"), &pki.chain(&leaf))), (1, CaCheck::Expired));
    check(&[leaf_pin], Some("dns.test"), &pki.chain(&leaf)).unwrap();
}

#[test]
fn an_intermediate_pin_refuses_a_leaf_not_yet_valid() {
    let pki = Pki::new();
    let mut p = leaf_params("dns.test");
    p.not_before = date_time_ymd(2030, 1, 1);
    p.not_after = date_time_ymd(2031, 1, 1);
    let (leaf, _) = pki.leaf(p);
    assert_eq!(
        ca_check(check(&[pki.inter_pin], Some("dns.test"), &pki.chain(&leaf))),
        (1, CaCheck::NotYetValid)
    );
}

#[test]
fn a_pinned_intermediate_outside_its_dates_is_refused() {
    let mut p = ca_params("intermediate");
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2021, 1, 1);
    let pki = Pki::with_intermediate(p);
    let (leaf, _) = pki.leaf(leaf_params("dns.test"));
    assert_eq!(ca_check(check(&[pki.inter_pin], Some("dns.test"), &pki.chain(&leaf))), (1, CaCheck::Expired));
}

#[test]
fn an_intermediate_pin_refuses_a_leaf_that_is_not_for_server_auth() {
    let pki = Pki::new();
    let mut p = leaf_params("dns.test");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let (leaf, _) = pki.leaf(p);
    assert_eq!(
        ca_check(check(&[pki.inter_pin], Some("dns.test"), &pki.chain(&leaf))),
        (1, CaCheck::NotForServerAuth)
    );
}

#[test]
fn a_pinned_issuer_without_ca_basic_constraints_is_refused() {
    // A leaf-like certificate (no cA) that signed another: pinning it vouches for nothing.
    let mut p = CertificateParams::new(vec!["issuer.test".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "not a CA");
    let pki = Pki::with_intermediate(p);
    let (leaf, _) = pki.leaf(leaf_params("dns.test"));
    assert_eq!(
        ca_check(check(&[pki.inter_pin], Some("dns.test"), &pki.chain(&leaf))),
        (1, CaCheck::IssuerNotCa)
    );
    // Pinning the root above it: webpki refuses the non-CA in the middle.
    let mut chain = pki.chain(&leaf);
    chain.push(pki.root.der().clone());
    assert_eq!(ca_check(check(&[pki.root_pin], Some("dns.test"), &chain)), (2, CaCheck::IssuerNotCa));
}

#[test]
fn a_pinned_issuer_whose_key_usage_lacks_key_cert_sign_is_refused() {
    let mut p = ca_params("intermediate");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let pki = Pki::with_intermediate(p);
    let (leaf, _) = pki.leaf(leaf_params("dns.test"));
    assert_eq!(
        ca_check(check(&[pki.inter_pin], Some("dns.test"), &pki.chain(&leaf))),
        (1, CaCheck::IssuerNotCa)
    );
}

#[test]
fn an_intermediate_pin_refuses_a_leaf_it_did_not_sign() {
    // An attacker presents its own leaf next to the real (public) intermediate.
    let real = Pki::new();
    let attacker = Pki::new();
    let (leaf, _) = attacker.leaf(leaf_params("dns.test"));
    let chain = vec![leaf, real.inter.der().clone()];
    assert_eq!(ca_check(check(&[real.inter_pin], Some("dns.test"), &chain)), (1, CaCheck::NotSignedByPin));
}

#[test]
fn no_match_reports_what_was_presented() {
    let pki = Pki::new();
    let (leaf, leaf_pin) = pki.leaf(leaf_params("dns.test"));
    let err = check(&[Pin::KeySha256([7; 32])], Some("dns.test"), &pki.chain(&leaf)).unwrap_err();
    let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e))) = err else {
        panic!("not a pin mismatch: {err:?}")
    };
    let mismatch = e.downcast_ref::<PinMismatch>().unwrap();
    assert_eq!(mismatch.presented.0, vec![leaf_pin, pki.inter_pin]);
}

#[test]
fn a_cert_pin_matches_the_whole_der_only() {
    let pki = Pki::new();
    let (leaf, Pin::KeySha256(leaf_key)) = pki.leaf(leaf_params("dns.test")) else { unreachable!() };
    check(&[Pin::CertSha256(cert_fingerprint(&leaf))], None, std::slice::from_ref(&leaf)).unwrap();
    // The key's hash is not the certificate's hash.
    assert!(check(&[Pin::CertSha256(leaf_key)], None, &[leaf]).is_err());
    // A cert-fp pin on the intermediate is a CA pin like a key-fp one.
    let (leaf, _) = pki.leaf(leaf_params("attacker.test"));
    let inter = Pin::CertSha256(cert_fingerprint(pki.inter.der()));
    assert_eq!(ca_check(check(&[inter], Some("dns.test"), &pki.chain(&leaf))), (1, CaCheck::NameMismatch));
}

#[test]
fn garbage_certificates_are_bad_encoding_not_a_panic() {
    let garbage = CertificateDer::from(b"not a certificate".to_vec());
    assert_eq!(check(&[Pin::KeySha256([0; 32])], None, &[garbage]).unwrap_err(), bad_encoding());
    assert!(
        verify_ca_pin(&[CertificateDer::from(vec![0x30])], 3, Some(&name("dns.test")), now(), algs())
            .is_err()
    );
}
