//! `stubborn pin`: read a DNS-over-TLS server's certificate chain and print the pins of
//! every certificate in it, ready to paste; and `stubborn pin --check`: would the
//! config's pins accept the servers as they are now?
//!
//! Discovery accepts any certificate (it is how you learn what a server presents, before
//! you trust it), but still checks the handshake signature, so the chain printed belongs
//! to a server that holds the leaf's key. Each pin is labelled: a leaf pin, or a CA pin at
//! depth N, which the daemon accepts only with `tls_name` and a leaf that validates to that
//! CA for the name; the report says whether it would, and if not which check fails. The check uses the daemon's own TLS setup
//! ([`UpstreamTls`]), so it accepts and refuses exactly what the daemon would.
//! Never used by the daemon; never writes a config.

use std::{fmt::Write as _, net::SocketAddr, sync::Arc, time::Duration};

use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::{net::TcpStream, task::JoinSet, time::timeout};
use tokio_rustls::TlsConnector;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{
    config::{Config, Pin},
    tls::{
        CaRefusal, TlsConnectError, UpstreamTls, cert_fingerprint, encrypt_only_verifier, key_fingerprint,
        provider, verify_ca_pin,
    },
    upstream::race::Transport,
};

/// The DNS-over-TLS port (RFC 7858 §3.1), used when the target names none.
pub const DEFAULT_PORT: u16 = 853;
/// Each of TCP connect and TLS handshake gets this long.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum PinToolError {
    #[error("{0:?} is not IP[:PORT] (an IPv6 address with a port goes in brackets: [2620:fe::fe]:853)")]
    BadTarget(String),
    #[error("{0:?} is not a valid TLS server name")]
    BadName(String),
    #[error("{addr}: cannot connect: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("{addr}: TLS handshake failed: {reason}")]
    Handshake { addr: SocketAddr, reason: String },
    #[error("{addr}: the server presented no certificate")]
    NoCertificate { addr: SocketAddr },
    #[error("certificate [{index}] cannot be parsed: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// Parses `IP`, `IP:PORT` or `[IPv6]:PORT`; the port defaults to 853.
pub fn parse_target(text: &str) -> Result<SocketAddr, PinToolError> {
    let text = text.trim();
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, DEFAULT_PORT)))
        .map_err(|_| PinToolError::BadTarget(text.to_owned()))
}

/// Where a certificate sits in the presented chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leaf,
    /// A leaf that signed itself (no CA).
    SelfSignedLeaf,
    Intermediate,
    /// A self-signed CA certificate the server sends along.
    Root,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Leaf => "leaf",
            Role::SelfSignedLeaf => "leaf (self-signed)",
            Role::Intermediate => "intermediate",
            Role::Root => "root (self-signed)",
        }
    }
}

/// One certificate of a presented chain, with its pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEntry {
    pub role: Role,
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    pub key_pin: Pin,
    pub cert_pin: Pin,
    /// For a CA (depth ≥ 1): would a pin on it accept this chain for the given name now
    /// (the daemon's own check), or which check refuses it. `None` for the leaf.
    pub as_ca_pin: Option<Result<(), CaRefusal>>,
}

/// Describes each certificate of `chain` (leaf first), judging each CA as the daemon
/// would judge a pin on it, for `tls_name` at `now`.
pub fn describe_chain(
    chain: &[CertificateDer<'_>],
    tls_name: Option<&ServerName<'_>>,
    now: UnixTime,
) -> Result<Vec<ChainEntry>, PinToolError> {
    let algorithms = provider().signature_verification_algorithms.all;
    chain
        .iter()
        .enumerate()
        .map(|(index, der)| {
            let (_, cert) = X509Certificate::from_der(der)
                .map_err(|e| PinToolError::BadCertificate { index, reason: e.to_string() })?;
            let self_signed =
                cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok();
            let role = match (index, self_signed) {
                (0, false) => Role::Leaf,
                (0, true) => Role::SelfSignedLeaf,
                (_, false) => Role::Intermediate,
                (_, true) => Role::Root,
            };
            Ok(ChainEntry {
                role,
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                not_after: cert.validity().not_after.to_string(),
                key_pin: Pin::KeySha256(key_fingerprint(&cert)),
                cert_pin: Pin::CertSha256(cert_fingerprint(der)),
                as_ca_pin: (index > 0).then(|| verify_ca_pin(chain, index, tls_name, now, algorithms)),
            })
        })
        .collect()
}

/// Connects to `addr`, completes a TLS handshake accepting any certificate, and returns
/// the chain the server presented.
pub async fn discover(addr: SocketAddr, tls_name: Option<&str>) -> Result<Vec<ChainEntry>, PinToolError> {
    let configured = match tls_name {
        Some(name) => Some(
            ServerName::try_from(name.trim_end_matches('.').to_owned())
                .map_err(|_| PinToolError::BadName(name.to_owned()))?,
        ),
        None => None,
    };
    // An IP-address server name sends no SNI, as the daemon does without tls_name.
    let server_name = configured.clone().unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
    // Certificates are read here, not judged; the handshake signature is still checked.
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PinToolError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(encrypt_only_verifier())
        .with_no_client_auth();
    let tcp = connect(addr).await.map_err(|reason| PinToolError::Connect { addr, reason })?;
    let tls = timeout(STEP_TIMEOUT, TlsConnector::from(Arc::new(config)).connect(server_name, tcp))
        .await
        .map_err(|_| PinToolError::Handshake {
            addr,
            reason: format!("no handshake within {STEP_TIMEOUT:?}"),
        })?
        .map_err(|e| PinToolError::Handshake { addr, reason: e.to_string() })?;
    let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
    if chain.is_empty() {
        return Err(PinToolError::NoCertificate { addr });
    }
    describe_chain(chain, configured.as_ref(), UnixTime::now())
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    match timeout(STEP_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => Err(format!("no TCP connection within {STEP_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(tcp)) => Ok(tcp),
    }
}

/// How a pin on `entry` would work: "leaf", or "CA at depth N".
fn pin_label(index: usize) -> String {
    if index == 0 { "leaf".to_owned() } else { format!("CA at depth {index}") }
}

/// The report `stubborn pin` prints.
pub fn report(addr: SocketAddr, tls_name: Option<&str>, chain: &[ChainEntry]) -> String {
    let mut out = String::new();
    let sni = tls_name.map_or_else(|| "no SNI".to_owned(), |n| format!("SNI {n}"));
    let _ = writeln!(out, "stubborn pin: {addr} ({sni}): {} certificate(s) presented", chain.len());
    let _ = writeln!(
        out,
        "Discovery mode: every certificate was accepted to read the chain, so nothing below is \
         authenticated. Compare the values with ones obtained over a path you trust before pinning them."
    );
    for (i, c) in chain.iter().enumerate() {
        let _ = writeln!(out, "\n[{i}] {}", c.role.as_str());
        let _ = writeln!(out, "    subject:   {}", c.subject);
        let _ = writeln!(out, "    issuer:    {}", c.issuer);
        let _ = writeln!(out, "    not after: {}", c.not_after);
        let verdict = match (&c.as_ca_pin, tls_name) {
            (None, _) => "authenticates the server by itself; tls_name is then only SNI".to_owned(),
            (Some(Ok(())), Some(name)) => format!("accepted now together with tls_name = \"{name}\""),
            (Some(Err(r)), _) => format!("would be REFUSED: {} ({})", r.check, r.detail),
            (Some(Ok(())), None) => "works only together with tls_name".to_owned(),
        };
        let _ = writeln!(out, "    pins here: {}: {verdict}", pin_label(i));
        let _ = writeln!(out, "    {}", c.key_pin);
        let _ = writeln!(out, "    {}", c.cert_pin);
    }
    let _ = writeln!(out, "\nWhich to pin:");
    let _ = writeln!(
        out,
        "  - Pinning the leaf (key-fp of [0]) breaks when the server rotates its key; a cert-fp \
         pin breaks at every renewal, even with the same key. A leaf pin authenticates the \
         server by itself, whatever its name."
    );
    let _ = writeln!(
        out,
        "  - A CA pin (the key of [1] or above) survives leaf rotations, but works only together \
         with tls_name: the CA vouches for a name, not for every certificate it signed. The \
         leaf must then carry tls_name, be within its dates, be for serverAuth, and chain \
         through CA certificates up to the pinned one (as in web PKI)."
    );
    let _ = writeln!(out, "  - Keep a backup pin (a second key) next to the one you rely on.");
    let mut suggested: Vec<(usize, &ChainEntry)> = chain
        .iter()
        .enumerate()
        .filter(|(_, c)| c.role == Role::Intermediate && tls_name.is_some() && c.as_ca_pin == Some(Ok(())))
        .collect();
    let with_ca = !suggested.is_empty();
    suggested.extend(chain.iter().enumerate().filter(|(i, _)| *i == 0));
    let _ = writeln!(out, "\nSuggested (in the upstream's table):");
    if let (true, Some(name)) = (with_ca, tls_name) {
        let _ = writeln!(out, "tls_name = \"{name}\"  # required by the CA pin");
    }
    let _ = writeln!(out, "pins = [");
    for (i, c) in &suggested {
        let backup = if suggested.len() > 1 && *i == 0 { ", backup" } else { "" };
        let _ = writeln!(out, "  \"{}\",  # [{i}] {} {}{backup}", c.key_pin, pin_label(*i), c.subject);
    }
    if suggested.len() == 1 {
        let _ = writeln!(out, "  # add a backup pin: the key the operator will rotate to, or its CA's key");
    }
    let _ = writeln!(out, "]");
    if tls_name.is_none() && chain.len() > 1 {
        let _ = writeln!(
            out,
            "CA pins are not suggested: without tls_name the daemon refuses them. Run again with \
             --tls-name NAME (the name in the leaf's subjectAltName) to check them."
        );
    }
    out
}

/// What checking one address found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressResult {
    /// A pin matched: the daemon would connect.
    Accepted,
    /// No pin matched what the server presented.
    PinMismatch(String),
    /// A pin matched a CA certificate, and the leaf failed a check under it.
    CaPinRefused(String),
    /// The handshake failed for another reason (a bad signature, an alert).
    TlsFailed(String),
    /// No TCP connection from here: says nothing about the pins.
    Unreachable(String),
}

/// One pinned upstream's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamCheck {
    pub name: String,
    pub addresses: Vec<(SocketAddr, AddressResult)>,
}

impl UpstreamCheck {
    /// The daemon would fail this upstream: an address answered but refused the pins
    /// (or failed TLS), or no address could be reached at all.
    pub fn would_fail(&self) -> bool {
        let refused = self.addresses.iter().any(|(_, r)| {
            matches!(
                r,
                AddressResult::PinMismatch(_) | AddressResult::CaPinRefused(_) | AddressResult::TlsFailed(_)
            )
        });
        let none_reached = self.addresses.iter().all(|(_, r)| matches!(r, AddressResult::Unreachable(_)));
        refused || none_reached
    }
}

/// Checks every address of every pinned upstream of `config`, at once. Returns the pinned
/// upstreams' results (config order) and the names of those without pins.
pub async fn check_config(config: &Config) -> Result<(Vec<UpstreamCheck>, Vec<String>), PinToolError> {
    let mut tasks = JoinSet::new();
    let mut checks = Vec::new();
    let mut unpinned = Vec::new();
    for upstream in &config.upstreams {
        if upstream.pins.is_empty() {
            unpinned.push(upstream.name.clone());
            continue;
        }
        let tls = UpstreamTls::new(upstream).map_err(|e| PinToolError::Setup(e.to_string()))?;
        let index = checks.len();
        checks.push(UpstreamCheck { name: upstream.name.clone(), addresses: Vec::new() });
        // Every encrypted endpoint the daemon would race: DoT, and DoH where configured
        // (the same verifier, so the same pins must accept what 443 presents).
        let endpoints = upstream.addresses.iter().flat_map(|ip| upstream.endpoints(*ip));
        for (addr, transport) in endpoints.filter(|(_, t)| t.is_encrypted()) {
            let tls = tls.clone();
            let https = transport == Transport::Https;
            tasks.spawn(async move { (index, addr, check_address(addr, &tls, https).await) });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((index, addr, result)) = joined {
            checks[index].addresses.push((addr, result));
        }
    }
    for check in &mut checks {
        check.addresses.sort_by_key(|(addr, _)| *addr);
    }
    Ok((checks, unpinned))
}

async fn check_address(addr: SocketAddr, tls: &UpstreamTls, https: bool) -> AddressResult {
    let tcp = match connect(addr).await {
        Ok(tcp) => tcp,
        Err(reason) => return AddressResult::Unreachable(reason),
    };
    let handshake = async {
        if https { tls.handshake_https(tcp).await.map(drop) } else { tls.handshake(tcp).await.map(drop) }
    };
    match timeout(STEP_TIMEOUT, handshake).await {
        Err(_) => AddressResult::Unreachable(format!("no TLS handshake within {STEP_TIMEOUT:?}")),
        Ok(Ok(())) => AddressResult::Accepted,
        Ok(Err(TlsConnectError::PinMismatch { presented })) => {
            AddressResult::PinMismatch(format!("server presented {presented}"))
        }
        Ok(Err(TlsConnectError::CaPinRefused(refusal))) => AddressResult::CaPinRefused(refusal.to_string()),
        Ok(Err(TlsConnectError::Tls(reason))) => AddressResult::TlsFailed(reason),
        Ok(Err(TlsConnectError::Io(e))) => AddressResult::Unreachable(e.to_string()),
    }
}

/// The report `stubborn pin --check` prints.
pub fn check_report(checks: &[UpstreamCheck], unpinned: &[String]) -> String {
    let mut out = String::new();
    for check in checks {
        let verdict = if check.would_fail() { "WOULD FAIL" } else { "ok" };
        let _ = writeln!(out, "upstream {:?}: {verdict}", check.name);
        for (addr, result) in &check.addresses {
            let line = match result {
                AddressResult::Accepted => "ok: a pin matches".to_owned(),
                AddressResult::PinMismatch(why) => format!("FAIL: pin mismatch: {why}"),
                AddressResult::CaPinRefused(why) => format!("FAIL: CA pin refused: {why}"),
                AddressResult::TlsFailed(why) => format!("FAIL: TLS: {why}"),
                AddressResult::Unreachable(why) => format!("unreachable from here (pins not checked): {why}"),
            };
            let _ = writeln!(out, "  {addr}: {line}");
        }
    }
    for name in unpinned {
        let _ = writeln!(out, "upstream {name:?}: no pins; not checked");
    }
    let failing = checks.iter().filter(|c| c.would_fail()).count();
    let _ = writeln!(out, "pin check: {} pinned upstream(s) checked, {failing} would fail", checks.len());
    out
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PublicKeyData};

    use super::*;

    fn ca(name: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    }

    #[test]
    fn a_chain_is_labelled_and_the_ca_key_suggested_first() {
        let root = CertifiedIssuer::self_signed(ca("root"), KeyPair::generate().unwrap()).unwrap();
        let inter_key = KeyPair::generate().unwrap();
        let inter_spki = inter_key.subject_public_key_info();
        let inter = CertifiedIssuer::signed_by(ca("inter"), inter_key, &root).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["dns.test".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &inter)
            .unwrap();
        let der = |d: &[u8]| CertificateDer::from(d.to_vec());
        let chain = [der(leaf.der()), der(inter.der()), der(root.der())];
        let name = |n: &str| ServerName::try_from(n.to_owned()).unwrap();
        let entries = describe_chain(&chain, Some(&name("dns.test")), UnixTime::now()).unwrap();
        let roles: Vec<Role> = entries.iter().map(|e| e.role).collect();
        assert_eq!(roles, [Role::Leaf, Role::Intermediate, Role::Root]);
        let sha = |d: &[u8]| {
            let mut out = [0u8; 32];
            out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, d).as_ref());
            out
        };
        assert_eq!(entries[0].key_pin, Pin::KeySha256(sha(&leaf_key.subject_public_key_info())));
        assert_eq!(entries[1].key_pin, Pin::KeySha256(sha(&inter_spki)));
        assert_eq!(entries[0].cert_pin, Pin::CertSha256(sha(leaf.der())));
        assert_eq!(entries[1].subject, "CN=inter");
        assert_eq!(entries[0].as_ca_pin, None);
        assert_eq!(entries[1].as_ca_pin, Some(Ok(())));

        let text = report("192.0.2.1:853".parse().unwrap(), Some("dns.test"), &entries);
        assert!(text.contains("(SNI dns.test)"), "{text}");
        assert!(text.contains("pins here: leaf: authenticates the server by itself"), "{text}");
        assert!(text.contains("pins here: CA at depth 1: accepted now together with tls_name"), "{text}");
        assert!(text.contains("works only together with tls_name"), "{text}");
        let suggested: Vec<&str> = text.lines().filter(|l| l.starts_with("  \"key-fp:")).collect();
        assert_eq!(suggested.len(), 2, "the intermediate, then the leaf; never the root:\n{text}");
        assert!(
            suggested[0].contains(&entries[1].key_pin.to_string()) && suggested[0].contains("CA at depth 1")
        );
        assert!(suggested[1].contains(&entries[0].key_pin.to_string()) && suggested[1].ends_with("backup"));
        assert!(text.contains("tls_name = \"dns.test\"  # required by the CA pin"), "{text}");

        // Without a name a CA pin would be refused: the report says so and suggests the leaf only.
        let entries = describe_chain(&chain, None, UnixTime::now()).unwrap();
        let text = report("192.0.2.1:853".parse().unwrap(), None, &entries);
        assert!(text.contains("(no SNI)"), "{text}");
        assert!(
            text.contains("pins here: CA at depth 1: would be REFUSED: CA pin without tls_name"),
            "{text}"
        );
        assert!(
            text.contains("pins here: CA at depth 2: would be REFUSED: CA pin without tls_name"),
            "{text}"
        );
        let suggested: Vec<&str> = text.lines().filter(|l| l.starts_with("  \"key-fp:")).collect();
        assert_eq!(suggested.len(), 1, "{text}");
        assert!(suggested[0].contains("[0] leaf"), "{text}");
        assert!(text.contains("without tls_name the daemon refuses them"), "{text}");

        // For a name the leaf does not carry, the report names the check that fails.
        let entries = describe_chain(&chain, Some(&name("other.test")), UnixTime::now()).unwrap();
        let text = report("192.0.2.1:853".parse().unwrap(), Some("other.test"), &entries);
        assert!(text.contains("CA at depth 1: would be REFUSED: leaf not valid for tls_name"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("  \"key-fp:")).count(), 1, "{text}");
    }

    #[test]
    fn a_lone_self_signed_certificate_is_a_self_signed_leaf() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["x.test".to_string()]).unwrap().self_signed(&key).unwrap();
        let entries =
            describe_chain(&[CertificateDer::from(cert.der().to_vec())], None, UnixTime::now()).unwrap();
        assert_eq!(entries[0].role, Role::SelfSignedLeaf);
        let text = report("192.0.2.1:853".parse().unwrap(), Some("x.test"), &entries);
        assert!(text.contains("add a backup pin"), "{text}");
        assert!(matches!(
            describe_chain(&[CertificateDer::from(vec![1, 2, 3])], None, UnixTime::now()),
            Err(PinToolError::BadCertificate { index: 0, .. })
        ));
    }

    #[test]
    fn targets_take_853_by_default() {
        assert_eq!(parse_target("127.0.0.2").unwrap(), "127.0.0.2:853".parse().unwrap());
        assert_eq!(parse_target("9.9.9.9:8853").unwrap(), "9.9.9.9:8853".parse().unwrap());
        assert_eq!(parse_target("2620:fe::fe").unwrap(), "[2620:fe::fe]:853".parse().unwrap());
        assert_eq!(parse_target("[2620:fe::fe]:443").unwrap(), "[2620:fe::fe]:443".parse().unwrap());
        assert!(matches!(parse_target("dns.quad9.net"), Err(PinToolError::BadTarget(_))));
    }

    #[test]
    fn an_upstream_fails_on_a_refusal_or_when_nothing_answers() {
        let a: SocketAddr = "192.0.2.1:853".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:853".parse().unwrap();
        let check = |results: Vec<AddressResult>| UpstreamCheck {
            name: "u".into(),
            addresses: [a, b].into_iter().zip(results).collect(),
        };
        let down = || AddressResult::Unreachable("refused".into());
        assert!(!check(vec![AddressResult::Accepted, down()]).would_fail());
        assert!(check(vec![AddressResult::Accepted, AddressResult::PinMismatch("x".into())]).would_fail());
        assert!(check(vec![down(), down()]).would_fail());
    }
}
