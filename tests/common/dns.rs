//! DNS messages for tests: the upstream's answer table, query builders, and
//! RFC 7766 §8 two-byte length framing over any async stream.
//!
//! Owns: what the test upstream answers for which question. Must never do I/O
//! except the framing helpers, which only touch the stream they are given.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// TTL of every positive answer in the table (except `ttl1.test` and `ttl0.test`).
pub const POSITIVE_TTL: u32 = 300;
/// TTL of the SOA record placed in the authority section of NXDOMAIN/NODATA answers.
pub const SOA_TTL: u32 = 300;
/// SOA MINIMUM field (the negative-caching TTL, RFC 2308 §5 uses min(SOA TTL, MINIMUM)).
pub const SOA_MINIMUM: u32 = 60;
/// UDP payload size the upstream advertises in its OPT record.
pub const UPSTREAM_EDNS_PAYLOAD: u16 = 1232;
/// Responses with OPT are padded (RFC 7830 option, code 12) to a multiple of this (RFC 8467 §4.1).
pub const RESPONSE_PADDING_BLOCK: usize = 468;
/// Number of TXT records in `big.test`, each [`BIG_TXT_LEN`] characters long.
pub const BIG_TXT_COUNT: usize = 40;
/// Length of each `big.test` TXT string.
pub const BIG_TXT_LEN: usize = 60;

/// The TTL with the high bit set among `mixed-ttl.test`'s records.
pub const MIXED_HIGH_BIT_TTL: u32 = 0x8000_0010;

/// EDNS option code of padding (RFC 7830).
pub const EDNS_PADDING: u16 = 12;

/// The data of one name in the table.
#[derive(Clone, Debug)]
pub struct Entry {
    pub rtype: RecordType,
    pub ttl: u32,
    pub rdata: Vec<RData>,
}

/// The zone the upstream serves, `test.` (lower-case, fully qualified names).
///
/// | name | type | data |
/// |---|---|---|
/// | `a.test.` | A | 192.0.2.1 |
/// | `aaaa.test.` | AAAA | 2001:db8::1 |
/// | `txt.test.` | TXT | "hello" |
/// | `big.test.` | TXT | 40 strings of 60 chars, "NN-xxxx…" (answer ≈ 2.9 KB: > 1232 and > 512) |
/// | `multi.test.` | A | 192.0.2.10, 192.0.2.11, 192.0.2.12 |
/// | `ttl1.test.` | A | 192.0.2.3, TTL 1 (for expiry tests) |
/// | `ttl0.test.` | A | 192.0.2.4, TTL 0 |
/// | `servfail.test.` | any | rcode SERVFAIL, no records |
/// | `ad.test.` | A | 192.0.2.5, answered with AD set (as a validating resolver would) |
/// | `mixed-ttl.test.` | A | 192.0.2.20–22 with TTLs 300, 100 and 0x80000010 (one RRset, unequal TTLs, one with the high bit), AA set |
/// | `*.a.test.` (e.g. `n7.a.test.`) | A | 192.0.2.1 (fresh names for tests that must miss a cache) |
/// | `printer.home.arpa.` | A | 192.168.1.9 (as a home router would answer; stubborn answers it itself unless `local_zones = false`) |
///
/// Any other name: NXDOMAIN + `test.` SOA in authority. A listed name with another
/// type: NODATA (NOERROR, empty answer) + SOA.
pub fn lookup(lower_fqdn: &str) -> Option<Entry> {
    let e = |rtype, ttl, rdata| Some(Entry { rtype, ttl, rdata });
    match lower_fqdn {
        "a.test." => e(RecordType::A, POSITIVE_TTL, vec![RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))]),
        "aaaa.test." => e(
            RecordType::AAAA,
            POSITIVE_TTL,
            vec![RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)))],
        ),
        "txt.test." => {
            e(RecordType::TXT, POSITIVE_TTL, vec![RData::TXT(TXT::new(vec!["hello".to_string()]))])
        }
        "big.test." => e(RecordType::TXT, POSITIVE_TTL, big_txt()),
        "multi.test." => e(
            RecordType::A,
            POSITIVE_TTL,
            (10..13).map(|i| RData::A(A(Ipv4Addr::new(192, 0, 2, i)))).collect(),
        ),
        "ttl1.test." => e(RecordType::A, 1, vec![RData::A(A(Ipv4Addr::new(192, 0, 2, 3)))]),
        "ttl0.test." => e(RecordType::A, 0, vec![RData::A(A(Ipv4Addr::new(192, 0, 2, 4)))]),
        "ad.test." => e(RecordType::A, POSITIVE_TTL, vec![RData::A(A(Ipv4Addr::new(192, 0, 2, 5)))]),
        "printer.home.arpa." => {
            e(RecordType::A, POSITIVE_TTL, vec![RData::A(A(Ipv4Addr::new(192, 168, 1, 9)))])
        }
        name if name.ends_with(".a.test.") => {
            e(RecordType::A, POSITIVE_TTL, vec![RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))])
        }
        _ => None,
    }
}

/// A name no earlier call returned that the test zone answers with A 192.0.2.1, so a
/// query for it always goes past stubborn's cache to the upstream.
pub fn fresh_a_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("n{}.a.test", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn big_txt() -> Vec<RData> {
    (0..BIG_TXT_COUNT)
        .map(|i| {
            let mut s = format!("{i:02}-");
            while s.len() < BIG_TXT_LEN {
                s.push('x');
            }
            RData::TXT(TXT::new(vec![s]))
        })
        .collect()
}

/// The `test.` SOA record placed in the authority section of negative answers.
pub fn zone_soa() -> Record {
    let origin = Name::from_ascii("test.").unwrap();
    let soa = SOA::new(
        Name::from_ascii("ns.test.").unwrap(),
        Name::from_ascii("hostmaster.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        SOA_MINIMUM,
    );
    Record::from_rdata(origin, SOA_TTL, RData::SOA(soa))
}

/// Builds the full response to a query in wire form, or `None` if the bytes are too
/// short to even carry an ID (then the upstream stays silent).
///
/// Mirrors the query: same ID, same question (case preserved), RD copied, QR and RA set.
/// If the query had an OPT record the response carries one too: payload 1232, DO copied,
/// and a padding option (code 12) so the total length is a multiple of 468.
pub fn respond(query_wire: &[u8]) -> Option<Vec<u8>> {
    let q = match Message::from_vec(query_wire) {
        Ok(m) => m,
        Err(_) => return formerr(query_wire),
    };
    if q.metadata.message_type != MessageType::Query || q.queries.len() != 1 {
        return Some(encode(&error_reply(&q, ResponseCode::FormErr)));
    }
    if q.metadata.op_code != OpCode::Query {
        return Some(encode(&error_reply(&q, ResponseCode::NotImp)));
    }
    let question = q.queries[0].clone();
    let mut r = error_reply(&q, ResponseCode::NoError);
    if question.query_class() != DNSClass::IN {
        r.metadata.response_code = ResponseCode::Refused;
        return Some(encode(&r));
    }
    let lower = question.name().to_lowercase().to_ascii();
    let lower = if lower.ends_with('.') { lower } else { format!("{lower}.") };
    if lower == "servfail.test." {
        r.metadata.response_code = ResponseCode::ServFail;
        return Some(encode(&r));
    }
    r.metadata.authentic_data = lower == "ad.test.";
    if lower == "mixed-ttl.test." && question.query_type() == RecordType::A {
        // An upstream that breaks RFC 2181 §5.2 (unequal TTLs in an RRset) and §8 (a TTL
        // with the high bit set), and claims authority.
        r.metadata.authoritative = true;
        for (last, ttl) in [(20, 300), (21, 100), (22, MIXED_HIGH_BIT_TTL)] {
            let rd = RData::A(A(Ipv4Addr::new(192, 0, 2, last)));
            r.answers.push(Record::from_rdata(question.name().clone(), ttl, rd));
        }
        return Some(encode(&r));
    }
    match lookup(&lower) {
        Some(entry) if entry.rtype == question.query_type() => {
            for rd in entry.rdata {
                r.answers.push(Record::from_rdata(question.name().clone(), entry.ttl, rd));
            }
        }
        Some(_) => r.authorities.push(zone_soa()),
        None => {
            r.metadata.response_code = ResponseCode::NXDomain;
            r.authorities.push(zone_soa());
        }
    }
    Some(encode(&r))
}

/// A reply skeleton: header mirrored from the query, question copied, OPT if the query had one.
fn error_reply(q: &Message, rcode: ResponseCode) -> Message {
    let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.checking_disabled = q.metadata.checking_disabled;
    r.metadata.recursion_available = true;
    r.metadata.response_code = rcode;
    r.queries = q.queries.clone();
    if let Some(qe) = &q.edns {
        let mut e = Edns::new();
        e.set_max_payload(UPSTREAM_EDNS_PAYLOAD);
        e.set_dnssec_ok(qe.flags().dnssec_ok);
        e.options_mut().insert(EdnsOption::Unknown(EDNS_PADDING, Vec::new()));
        r.edns = Some(e);
    }
    r
}

/// `response` (from [`respond`]) with every record's TTL set to 0.
pub fn with_zero_ttls(response: &[u8]) -> Vec<u8> {
    let mut r = Message::from_vec(response).expect("our own response parses");
    for rec in r.answers.iter_mut().chain(r.authorities.iter_mut()).chain(r.additionals.iter_mut()) {
        rec.ttl = 0;
    }
    encode(&r)
}

/// `response` (from [`respond`]) with `rcode` and no records.
pub fn with_rcode(response: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut r = Message::from_vec(response).expect("our own response parses");
    r.metadata.response_code = rcode;
    r.answers.clear();
    r.authorities.clear();
    r.additionals.clear();
    encode(&r)
}

/// Encodes, growing the padding option (if any) so the length is a multiple of the block.
fn encode(r: &Message) -> Vec<u8> {
    let wire = r.to_vec().expect("encode response");
    let Some(edns) = &r.edns else { return wire };
    let extra = (RESPONSE_PADDING_BLOCK - wire.len() % RESPONSE_PADDING_BLOCK) % RESPONSE_PADDING_BLOCK;
    if extra == 0 {
        return wire;
    }
    let mut e = edns.clone();
    e.options_mut().remove(EdnsCode::Padding);
    e.options_mut().insert(EdnsOption::Unknown(EDNS_PADDING, vec![0; extra]));
    let mut padded = r.clone();
    padded.edns = Some(e);
    padded.to_vec().expect("encode padded response")
}

/// FORMERR for bytes that do not parse: copy the ID and opcode bits, no question.
fn formerr(wire: &[u8]) -> Option<Vec<u8>> {
    if wire.len() < 12 {
        return None;
    }
    let mut out = vec![0u8; 12];
    out[0] = wire[0];
    out[1] = wire[1];
    out[2] = 0x80 | (wire[2] & 0x78) | (wire[2] & 0x01); // QR, opcode, RD
    out[3] = 0x80 | 1; // RA, FORMERR
    Some(out)
}

/// UDP size limit for a response to `query_wire`: the client's EDNS payload (at least 512), or 512.
pub fn udp_limit(query_wire: &[u8]) -> usize {
    match Message::from_vec(query_wire) {
        Ok(m) => m.edns.map_or(512, |e| e.max_payload().max(512) as usize),
        Err(_) => 512,
    }
}

/// Truncates a response for UDP (RFC 1035 §4.2.1, RFC 2181 §9): if it is longer than
/// `limit`, keep header, question and OPT, drop every other record, set TC.
pub fn truncate_for_udp(resp: Vec<u8>, limit: usize) -> Vec<u8> {
    if resp.len() <= limit {
        return resp;
    }
    let mut m = Message::from_vec(&resp).expect("own response parses");
    m.answers.clear();
    m.authorities.clear();
    m.additionals.clear();
    m.metadata.truncation = true;
    if let Some(e) = &mut m.edns {
        e.options_mut().remove(EdnsCode::Padding);
    }
    m.to_vec().expect("encode truncated")
}

// ---------------------------------------------------------------------------------------------
// Client-side helpers.

/// Options for [`build_query`].
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// Add an OPT record (payload 1232).
    pub edns: bool,
    /// Set the DO bit (implies `edns`).
    pub dnssec_ok: bool,
    /// Set RD.
    pub recursion_desired: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self { edns: true, dnssec_ok: false, recursion_desired: true }
    }
}

/// Wire form of a query for `name` (as written, case kept; a trailing dot is added) and `rtype`.
pub fn build_query(id: u16, name: &str, rtype: RecordType, opts: &QueryOptions) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = opts.recursion_desired;
    let fqdn = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    m.add_query(Query::query(Name::from_ascii(&fqdn).expect("query name"), rtype));
    if opts.edns || opts.dnssec_ok {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_dnssec_ok(opts.dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().expect("encode query")
}

/// Shorthand: a query with EDNS, RD set.
pub fn query(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    build_query(id, name, rtype, &QueryOptions::default())
}

/// Parses a wire message; panics on malformed input (test helper).
pub fn parse(wire: &[u8]) -> Message {
    Message::from_vec(wire).expect("parse DNS message")
}

/// The message ID of a wire message (first two bytes).
pub fn wire_id(wire: &[u8]) -> u16 {
    u16::from_be_bytes([wire[0], wire[1]])
}

/// The A/AAAA/TXT answers of a message as strings: "192.0.2.1", "2001:db8::1", "hello".
pub fn answer_strings(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::AAAA(a) => a.0.to_string(),
            RData::TXT(t) => t
                .txt_data
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect::<Vec<_>>()
                .join(""),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The EDNS padding option bytes of a message, if it has one.
pub fn padding_of(m: &Message) -> Option<Vec<u8>> {
    let e = m.edns.as_ref()?;
    match e.option(EdnsCode::Padding)? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        _ => None,
    }
}

/// Writes one message with its 2-byte length prefix (RFC 7766 §8) in a single write, then flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message > 65535"))?;
    let mut buf = Vec::with_capacity(msg.len() + 2);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(msg);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one length-prefixed message. `Ok(None)` on a clean EOF before the prefix.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    r.read_exact(&mut msg).await?;
    Ok(Some(msg))
}
