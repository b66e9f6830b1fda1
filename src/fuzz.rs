//! Fuzz harnesses (issue 14 §1, docs/fuzzing.md): one function per parser of untrusted
//! input. Each takes arbitrary octets, runs the daemon's own code on them and asserts the
//! invariants that must hold whatever a hostile client or upstream sends; a violation is
//! a panic, which libFuzzer reports as a crash.
//!
//! The libFuzzer targets (`fuzz/fuzz_targets/*.rs`) are one-line wrappers around these,
//! and `tests/fuzz_corpus.rs` replays the saved corpus through them, so a regression
//! fails `cargo test`. Nothing in the daemon calls this module: it adds no work to any
//! query path.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;
use std::time::Duration;

use bytes::BytesMut;
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, Record};
use tokio::time::Instant;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cache::{Cache, CacheConfig, CacheKey, ClientView, Lookup, StoreOutcome};
use crate::config::{Config, ConfigOrigin, Pin};
use crate::frontend::request::{Acl, Verdict, classify, fit_udp};
use crate::message::{ClientEdns, ClientQuery, parse_upstream};
use crate::upstream::dot::framing::{push_frame, question_bytes, same_question, take_frame};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// A client outside the ACL (used as data only: nothing is sent anywhere).
const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
static ACL: LazyLock<Acl> = LazyLock::new(|| Acl::new(&["127.0.0.0/8".parse().expect("a network")]));

/// A target: its name (its directory under `fuzz/corpus/` and `fuzz/regressions/`) and
/// its harness.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 6] = [
    ("client_query", client_query),
    ("upstream_answer", upstream_answer),
    ("dot_framing", dot_framing),
    ("doh_answer", doh_answer),
    ("config", config),
    ("pin_chain", pin_chain),
];

/// Same labels octet for octet (case included: a client's spelling is echoed back),
/// same type and class.
fn same_question_exactly(a: &Query, b: &Query) -> bool {
    a.name().iter().eq(b.name().iter())
        && a.name().is_fqdn() == b.name().is_fqdn()
        && a.query_type() == b.query_type()
        && a.query_class() == b.query_class()
}

fn records(m: &Message) -> impl Iterator<Item = &Record> {
    m.answers.iter().chain(&m.authorities).chain(&m.additionals)
}

/// A client packet through [`classify`], then the answers the daemon builds for a query
/// verdict (SERVFAIL, a cache hit, an upstream answer relayed, the UDP fit): every reply
/// parses, carries the client's ID, and a question only if it is the client's own.
pub fn client_query(data: &[u8]) {
    let inside = classify(data, LOCAL, &ACL);
    let outside = classify(data, OUTSIDE, &ACL);
    assert_eq!(matches!(inside, Verdict::Drop), matches!(outside, Verdict::Drop));
    match outside {
        Verdict::Query(_) => panic!("a client outside the ACL got a query through"),
        Verdict::Reply(_) => panic!("a client outside the ACL got a reply not marked refused"),
        Verdict::Refused(wire) => check_reply(data, &wire),
        Verdict::Drop => {}
    }
    match inside {
        Verdict::Drop => {}
        Verdict::Refused(_) => panic!("a client inside the ACL was refused"),
        Verdict::Reply(wire) => check_reply(data, &wire),
        Verdict::Query(query) => check_query_answers(data, &query),
    }
}

fn check_reply(request: &[u8], wire: &[u8]) {
    let reply = Message::from_vec(wire).expect("an immediate reply parses");
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert_eq!(reply.metadata.id, u16::from_be_bytes([request[0], request[1]]));
    if reply.queries.is_empty() {
        return;
    }
    let asked = Message::from_vec(request).expect("a reply with a question had a parsed request");
    assert_eq!(reply.queries.len(), asked.queries.len());
    for (r, q) in reply.queries.iter().zip(&asked.queries) {
        assert!(same_question_exactly(r, q), "reply question {r:?} is not the client's {q:?}");
    }
}

fn check_query_answers(request: &[u8], query: &ClientQuery) {
    let asked = Message::from_vec(request).expect("a query verdict comes from a parsed request");
    assert_eq!(query.id, asked.metadata.id);
    assert!(same_question_exactly(&query.query, &asked.queries[0]));
    let check = |wire: &[u8], what: &str| {
        let m = Message::from_vec(wire).unwrap_or_else(|e| panic!("{what} does not parse: {e}"));
        assert_eq!(m.metadata.id, query.id, "{what}: ID");
        assert_eq!(m.metadata.message_type, MessageType::Response, "{what}");
        assert_eq!(m.queries.len(), 1, "{what}: one question");
        assert!(same_question_exactly(&m.queries[0], &query.query), "{what}: question");
        assert_eq!(m.edns.is_some(), query.edns.is_some(), "{what}: OPT only for an OPT");
        m
    };

    let servfail = query.error_answer(ResponseCode::ServFail).to_vec().expect("SERVFAIL encodes");
    check(&servfail, "SERVFAIL");

    // An upstream's negative answer to exactly this question (the question octets as
    // the daemon sends them upstream), through the cache and through the miss path.
    let upstream = nxdomain_for(query);
    let (msg, _) = parse_upstream(&upstream).expect("our own answer parses");
    let relayed = query.answer_from_upstream(&msg).to_vec().expect("a relayed answer encodes");
    check(&relayed, "relayed answer");
    let fitted = fit_udp(relayed, query.udp_limit());
    assert!(fitted.len() <= usize::from(query.udp_limit()));
    check(&fitted, "UDP-fitted answer");

    let cache = small_cache();
    let key = CacheKey::from(query);
    let now = Instant::now();
    if let StoreOutcome::Stored { ttl, .. } = cache.store(key.clone(), &upstream, now) {
        assert!(ttl <= NXDOMAIN_TTL);
        let Some(hit) = cache.lookup(&key, &ClientView::from(query), now).into_wire() else {
            panic!("a stored answer misses at once");
        };
        let m = check(&hit, "cache hit");
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(records(&m).all(|r| r.ttl <= ttl), "a served TTL above the admitted one");
    }
}

/// The SOA TTL of [`nxdomain_for`].
const NXDOMAIN_TTL: u32 = 60;

/// NXDOMAIN for `query` with the root's SOA in authority (RFC 2308 §3), the question
/// copied from the daemon's own upstream query.
fn nxdomain_for(query: &ClientQuery) -> Vec<u8> {
    let sent = query.upstream_wire(false);
    let qlen = query.query.name().iter().map(|l| 1 + l.len()).sum::<usize>() + 1 + 4;
    let mut wire = Vec::with_capacity(12 + qlen + 40);
    wire.extend_from_slice(&sent[..2]);
    // QR, RD copied, RA, RCODE 3; one question, one authority record.
    wire.extend_from_slice(&[0x80 | (sent[2] & 0x01), 0x80 | 3, 0, 1, 0, 0, 0, 1, 0, 0]);
    wire.extend_from_slice(&sent[12..12 + qlen]);
    wire.extend_from_slice(&[0, 0, 6]); // owner: the root; TYPE SOA
    wire.extend_from_slice(&sent[12 + qlen - 2..12 + qlen]); // the question's CLASS
    wire.extend_from_slice(&NXDOMAIN_TTL.to_be_bytes());
    wire.extend_from_slice(&22u16.to_be_bytes());
    wire.extend_from_slice(&[0, 0]); // MNAME, RNAME: the root
    for field in [1u32, 3600, 600, 86_400, NXDOMAIN_TTL] {
        wire.extend_from_slice(&field.to_be_bytes());
    }
    wire
}

fn small_cache() -> Cache {
    Cache::new(CacheConfig { max_entries: 64, max_bytes: 1 << 20, serve_stale: true, ..Default::default() })
}

/// An upstream answer through [`parse_upstream`] and the cache's admission, then every
/// way a hit is rendered from whatever was admitted: it parses, its question is the
/// client's (as the client spelled it), and no TTL served exceeds the one admitted.
pub fn upstream_answer(data: &[u8]) {
    let cache = small_cache();
    let now = Instant::now();
    let fallback = Query::query(Name::from_ascii("a.test.").expect("a name"), 1.into());
    let parsed = parse_upstream(data).ok();
    let question = match &parsed {
        Some((msg, _)) if msg.queries.len() == 1 => msg.queries[0].clone(),
        _ => fallback,
    };
    // The key's DO and CD from header bits the fuzzer controls (AA and CD).
    let flags = data.get(2..4).map_or(0, |f| u16::from_be_bytes([f[0], f[1]]));
    let (dnssec_ok, cd) = (flags & 0x0400 != 0, flags & 0x0010 != 0);
    let key = CacheKey::new(&question, dnssec_ok, cd);

    // Whatever the octets, admission without a prior parse never panics, and never
    // admits an answer under another question's key (a poisoning try).
    let outcome = cache.store(key.clone(), data, now);
    for other in other_questions(&question) {
        let stored = cache.store(CacheKey::new(&other, dnssec_ok, cd), data, now);
        assert!(!matches!(stored, StoreOutcome::Stored { .. }), "admitted under {other:?}: {stored:?}");
    }
    let Some((msg, _)) = parsed else {
        return;
    };
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    // The pipeline's path: stored only after parse_upstream accepted it.
    let (parsed_outcome, stored) = cache.store_parsed(key.clone(), data, now);
    if let (StoreOutcome::Stored { .. }, StoreOutcome::NotCacheable(why)) = (&outcome, &parsed_outcome) {
        panic!("admitted unparsed but refused parsed: {why:?}");
    }
    let client_name = flip_case(question.name());
    let client_query = ClientQuery {
        id: !u16::from_be_bytes([data[0], data[1]]),
        query: Query::query(client_name, question.query_type())
            .set_query_class(question.query_class())
            .clone(),
        recursion_desired: flags & 0x0100 != 0,
        checking_disabled: cd,
        authentic_data: flags & 0x0020 != 0,
        edns: (flags & 0x0040 != 0).then_some(ClientEdns { dnssec_ok, max_payload: 1232 }),
        bypass_cache: false,
    };
    let view = ClientView::from(&client_query);
    let expect = Expect { client: &client_query, upstream: &msg };

    // The miss path when nothing was stored: the relayed message.
    if let Ok(wire) = client_query.answer_from_upstream(&msg).to_vec() {
        let m = Message::from_vec(&wire).expect("a relayed answer parses");
        assert!(m.queries.len() == 1 && same_question_exactly(&m.queries[0], &client_query.query));
    }

    let (StoreOutcome::Stored { kind, ttl }, Some(stored)) = (parsed_outcome, stored) else {
        return;
    };
    let cfg = cache.config().clone();
    assert!(ttl > 0 && ttl <= cfg.max_ttl);
    if kind == crate::cache::AnswerKind::ServFail {
        assert!(ttl <= cfg.servfail_ttl);
    }
    expect.rendered(&stored.render(&view, now), ttl, true);
    match cache.lookup(&key, &view, now) {
        Lookup::Hit(wire) | Lookup::HitPrefetch(wire) => expect.rendered(&wire, ttl, true),
        other => panic!("a fresh entry gave {other:?}"),
    }
    let half = ttl / 2;
    if half > 0 {
        match cache.lookup(&key, &view, now + Duration::from_secs(u64::from(half))) {
            Lookup::Hit(wire) | Lookup::HitPrefetch(wire) => expect.rendered(&wire, ttl - half, true),
            other => panic!("an entry half-way through its TTL gave {other:?}"),
        }
    }
    let expired = now + Duration::from_secs(u64::from(ttl));
    assert_eq!(cache.lookup(&key, &view, expired), Lookup::Miss, "served past its TTL");
    match cache.lookup_stale(&key, &view, expired) {
        Lookup::Stale(wire) => {
            assert_ne!(kind, crate::cache::AnswerKind::ServFail, "a SERVFAIL served stale");
            expect.rendered(&wire, cfg.stale_ttl, false);
        }
        Lookup::Miss => assert_eq!(kind, crate::cache::AnswerKind::ServFail),
        other => panic!("an expired entry gave {other:?}"),
    }
}

/// Questions that are not `q`: another name below it, another type.
fn other_questions(q: &Query) -> Vec<Query> {
    let mut out = Vec::with_capacity(2);
    if let Ok(longer) = Name::from_labels(std::iter::once(&b"x"[..]).chain(q.name().iter())) {
        out.push(Query::query(longer, q.query_type()).set_query_class(q.query_class()).clone());
    }
    let other_type = u16::from(q.query_type()).wrapping_add(1);
    out.push(Query::query(q.name().clone(), other_type.into()).set_query_class(q.query_class()).clone());
    out
}

/// `name` with the ASCII case of every letter swapped (what a client may send, 0x20).
fn flip_case(name: &Name) -> Name {
    let labels: Vec<Vec<u8>> = name
        .iter()
        .map(|l| l.iter().map(|&b| if b.is_ascii_alphabetic() { b ^ 0x20 } else { b }).collect())
        .collect();
    match Name::from_labels(labels) {
        Ok(mut flipped) => {
            flipped.set_fqdn(name.is_fqdn());
            flipped
        }
        Err(_) => name.clone(),
    }
}

struct Expect<'a> {
    client: &'a ClientQuery,
    upstream: &'a Message,
}

impl Expect<'_> {
    /// Checks an answer rendered from the cache: at most `cap` in every TTL (exactly
    /// `cap` when not `counted_down`, for stale answers) and, when counted down, never
    /// above the upstream's own TTL for that record (min_ttl is 0 here).
    fn rendered(&self, wire: &[u8], cap: u32, counted_down: bool) {
        let m = Message::from_vec(wire).expect("an admitted entry renders to a message hickory parses");
        assert_eq!(m.metadata.id, self.client.id);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.queries.len(), 1);
        assert!(
            same_question_exactly(&m.queries[0], &self.client.query),
            "served question {:?} is not the client's {:?}",
            m.queries[0],
            self.client.query
        );
        assert_eq!(m.edns.is_some(), self.client.edns.is_some());
        assert_eq!(
            (m.answers.len(), m.authorities.len(), m.additionals.len()),
            (self.upstream.answers.len(), self.upstream.authorities.len(), self.upstream.additionals.len()),
            "records lost or invented on the way through the cache"
        );
        for (served, got) in records(&m).zip(records(self.upstream)) {
            if counted_down {
                assert!(served.ttl <= cap, "served TTL {} above the admitted {cap}", served.ttl);
                assert!(served.ttl <= got.ttl, "served TTL {} above upstream's {}", served.ttl, got.ttl);
            } else {
                assert_eq!(served.ttl, cap, "a stale TTL");
            }
        }
    }
}

/// A DoT byte stream (RFC 7766 §8 framing) arriving split at points the fuzzer picks:
/// the frames taken are exactly those of the stream read at once, by an independent
/// reading; each frame's question, if any, is the octets the walker reads.
pub fn dot_framing(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut oracle = Vec::new();
    let mut at = 0;
    while let Some(len) = stream.get(at..at + 2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) {
        let Some(frame) = stream.get(at + 2..at + 2 + len) else { break };
        oracle.push(frame);
        at += 2 + len;
    }

    let mut buf = BytesMut::new();
    let mut taken = Vec::new();
    let mut rest = stream;
    let mut x = u32::from(seed) | 0x100;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = 1 + (x as usize) % rest.len().min(if seed & 1 == 0 { 7 } else { 600 });
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(frame) = take_frame(&mut buf) {
            taken.push(frame);
        }
        assert!(buf.capacity() <= 2 * (2 + usize::from(u16::MAX)) + stream.len(), "buffer grew unbounded");
    }
    assert_eq!(taken.len(), oracle.len());
    for (t, o) in taken.iter().zip(&oracle) {
        assert_eq!(&t[..], *o);
    }
    assert_eq!(buf.len(), stream.len() - at, "a partial frame is kept whole");

    for frame in oracle {
        let mut out = Vec::new();
        push_frame(&mut out, frame);
        assert_eq!(take_frame(&mut BytesMut::from(&out[..])).as_deref(), Some(frame));
        let Some(q) = question_bytes(frame) else { continue };
        assert!((1 + 4..=255 + 4).contains(&q.len()));
        assert_eq!(q, &frame[12..12 + q.len()]);
        assert!(same_question(q, q));
        if let Ok(scanned) = crate::wire::scan(frame) {
            let name = &q[..q.len() - 4];
            assert!(name.eq_ignore_ascii_case(&scanned.qname), "two readings of one question");
            let tail = &q[q.len() - 4..];
            assert_eq!(u16::from_be_bytes([tail[0], tail[1]]), scanned.qtype);
            assert_eq!(u16::from_be_bytes([tail[2], tail[3]]), scanned.qclass);
        }
    }
}

/// A DoH response (RFC 8484) through the checks of `upstream/doh/exchange.rs`: a status,
/// a content type, an `Age` and a body the fuzzer picks, against the query whose question
/// the body's own (or a fixed one) is. Only a 2xx of the DNS media type is read; a body
/// accepted is a response under the client's ID to exactly the question sent, no longer
/// than a DNS message, with no TTL above the body's own.
///
/// Layout: octet 0 selects the status and content type, octets 1–4 are `Age`, octet 5
/// selects the question (the body's own, or another), the rest is the body.
pub fn doh_answer(data: &[u8]) {
    use crate::upstream::doh::exchange::{Answer, DNS_MESSAGE, MAX_ANSWER, accept_answer, age, check_head};
    use http::{HeaderMap, HeaderValue, StatusCode, header};

    let [sel, a0, a1, a2, a3, which, ref body @ ..] = *data else { return };
    let status =
        [200u16, 200, 200, 204, 301, 400, 404, 415, 500, 502, 503, 299][usize::from(sel & 0x0f) % 12];
    let media = ["application/dns-message", "Application/DNS-Message; x=1", "text/html", ""];
    let mut headers = HeaderMap::new();
    let content_type = media[usize::from(sel >> 4) % media.len()];
    if !content_type.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    let age_value = u32::from_be_bytes([a0, a1, a2, a3]);
    headers.insert(header::AGE, HeaderValue::from(age_value));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let status = StatusCode::from_u16(status).expect("a valid status");
    let head = check_head(status, &headers);
    assert_eq!(
        head.is_ok(),
        status.is_success()
            && content_type.to_ascii_lowercase().starts_with(DNS_MESSAGE)
            && body.len() <= MAX_ANSWER,
        "head verdict for {status} {content_type:?}"
    );
    if head.is_err() {
        return;
    }
    assert_eq!(age(&headers), age_value);
    let fixed = b"\x01a\x04test\x00\x00\x01\x00\x01".to_vec();
    let question = match question_bytes(body) {
        Some(q) if which & 1 == 0 => q.to_vec(),
        _ => fixed,
    };
    let client_id = u16::from_be_bytes([which, a3]);
    let Ok(Answer::Message(answer)) =
        accept_answer(bytes::Bytes::copy_from_slice(body), &question, client_id, age_value)
    else {
        return;
    };
    assert!(answer.len() <= MAX_ANSWER && answer.len() == body.len());
    assert_eq!(u16::from_be_bytes([answer[0], answer[1]]), client_id, "the client's ID");
    assert_eq!(&body[..2], &[0, 0], "only an answer under ID 0 is taken");
    assert!(answer[2] & 0x80 != 0, "a response");
    assert!(question_bytes(&answer).is_some_and(|q| same_question(q, &question)), "another question");
    if let (Ok(theirs), Ok(ours)) = (crate::wire::scan(body), crate::wire::scan(&answer)) {
        for (t, o) in theirs.records.iter().zip(&ours.records) {
            assert_eq!(o.ttl, t.ttl.saturating_sub(age_value), "TTL less the Age");
        }
    }
}

/// Any text through the configuration loader and validator: a config or a named error.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::from_toml(&text, ConfigOrigin::Embedded) {
        Ok(config) => {
            assert!(!config.upstreams.is_empty(), "a config without upstreams");
            let _ = config.cache.settings();
            config.upstreams.iter().for_each(|u| drop(u.auth_summary()));
        }
        Err(err) => {
            assert!(!err.reason.trim().is_empty(), "an error without a reason: {err:?}");
            let _ = err.to_string();
        }
    }
}

/// A certificate chain (DER) through the pin verifier. Input: one selector octet (which
/// certificate's key or DER to pin, or an unrelated pin), then up to 4 certificates,
/// each with a 2-octet length. The verifier may accept only a chain in which a pinned
/// certificate is present, and must accept a well-formed chain whose leaf is pinned.
pub fn pin_chain(data: &[u8]) {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let mut ders: Vec<&[u8]> = Vec::new();
    while !rest.is_empty() && ders.len() < 4 {
        let len = match rest {
            [high, low, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_be_bytes([*high, *low]))
            }
            _ => std::mem::take(&mut rest).len(),
        };
        let (der, tail) = rest.split_at(len.min(rest.len()));
        ders.push(der);
        rest = tail;
    }
    if ders.is_empty() {
        return;
    }
    let parsed: Vec<Option<X509Certificate<'_>>> =
        ders.iter().map(|d| X509Certificate::from_der(d).ok().map(|(_, c)| c)).collect();
    let target = usize::from(selector & 0x07);
    let by_cert = selector & 0x08 != 0;
    let pin = match parsed.get(target) {
        Some(Some(_)) if by_cert => Pin::CertSha256(crate::tls::cert_fingerprint(ders[target])),
        Some(Some(cert)) => Pin::KeySha256(crate::tls::key_fingerprint(cert)),
        _ => Pin::KeySha256(crate::tls::cert_fingerprint(b"stubborn fuzz: pins nothing")),
    };
    let with_name = selector & 0x10 != 0;
    let result = verify_pins(&[pin], &ders, with_name);
    let present = parsed.iter().zip(&ders).any(|(cert, der)| match (cert, pin) {
        (Some(c), Pin::KeySha256(h)) => crate::tls::key_fingerprint(c) == h,
        (Some(_), Pin::CertSha256(h)) => crate::tls::cert_fingerprint(der) == h,
        (None, _) => false,
    });
    if result.is_ok() {
        assert!(present, "accepted a chain without the pinned certificate");
        // A pin that matches only a CA certificate is a trust anchor, never an identity:
        // without a name to check the leaf against, nothing is accepted (issue 13 §1).
        let leaf_pinned = match (&parsed[0], pin) {
            (Some(c), Pin::KeySha256(h)) => crate::tls::key_fingerprint(c) == h,
            (Some(_), Pin::CertSha256(h)) => crate::tls::cert_fingerprint(ders[0]) == h,
            (None, _) => false,
        };
        assert!(leaf_pinned || with_name, "accepted a CA pin without tls_name");
        assert!(parsed.iter().all(Option::is_some), "accepted a chain it cannot read");
    }
    if target == 0 && parsed.iter().all(Option::is_some) {
        assert!(result.is_ok(), "refused a readable chain whose leaf is pinned: {result:?}");
    }
}

/// The pin verifier's chain check (`tls::verify_pins`), with `tls_name` "dns.test" when
/// the selector's bit 4 is set (a CA pin needs one), at a fixed time inside rcgen's
/// default validity window.
fn verify_pins(pins: &[Pin], ders: &[&[u8]], with_name: bool) -> Result<(), rustls::Error> {
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    let chain: Vec<CertificateDer<'_>> = ders.iter().map(|d| CertificateDer::from(*d)).collect();
    let name = ServerName::try_from("dns.test").expect("a valid name");
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000));
    let algorithms = crate::tls::provider().signature_verification_algorithms.all;
    crate::tls::verify_pins(pins, with_name.then_some(&name), &chain, now, algorithms)
}
