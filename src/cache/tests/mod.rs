//! Unit tests of the cache on injected time: answers are built with hickory-proto, fed
//! to `store` as wire, and every served answer is parsed back with hickory-proto.

mod bench;
mod bounds;
mod hit_path;
mod negative;
mod positive;
mod robustness;
mod stale;

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::time::Instant;

use super::*;
use crate::message::ClientEdns;

pub(super) fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

pub(super) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A fixed origin for injected time (tests may read the clock; the cache never does).
pub(super) fn t0() -> Instant {
    Instant::now()
}

pub(super) fn a(owner: &str, ttl: u32, last: u8) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::new(192, 0, 2, last))))
}

pub(super) fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

pub(super) fn ns(owner: &str, ttl: u32, host: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::NS(NS(name(host))))
}

/// A TXT record of about `len` octets (character-strings of up to 250).
pub(super) fn txt(owner: &str, ttl: u32, len: usize) -> Record {
    let strings = (0..len.div_ceil(250)).map(|i| "x".repeat((len - i * 250).min(250))).collect();
    Record::from_rdata(name(owner), ttl, RData::TXT(TXT::new(strings)))
}

pub(super) fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    let rdata = SOA::new(
        name(&format!("ns1.{zone}")),
        name(&format!("hostmaster.{zone}")),
        2_026_110_101,
        7200,
        900,
        1_209_600,
        minimum,
    );
    Record::from_rdata(name(zone), ttl, RData::SOA(rdata))
}

/// An upstream answer under construction.
pub(super) struct Answer {
    pub msg: Message,
}

impl Answer {
    pub fn new(qname: &str, qtype: RecordType) -> Self {
        let mut msg = Message::response(0x4242, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.metadata.recursion_available = true;
        msg.add_query(Query::query(name(qname), qtype));
        Answer { msg }
    }
    pub fn rcode(mut self, rcode: ResponseCode) -> Self {
        self.msg.metadata.response_code = rcode;
        self
    }
    pub fn answer(mut self, r: Record) -> Self {
        self.msg.add_answer(r);
        self
    }
    pub fn authority(mut self, r: Record) -> Self {
        self.msg.add_authority(r);
        self
    }
    pub fn additional(mut self, r: Record) -> Self {
        self.msg.add_additional(r);
        self
    }
    /// An upstream OPT with a padding option, as a DoT upstream sends it.
    pub fn with_opt(mut self) -> Self {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.options_mut().insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(12, vec![0; 40]));
        self.msg.set_edns(edns);
        self
    }
    pub fn wire(&self) -> Vec<u8> {
        self.msg.to_vec().unwrap()
    }
}

pub(super) fn key(qname: &str, qtype: RecordType) -> CacheKey {
    CacheKey::new(&Query::query(name(qname), qtype), false, false)
}

pub(super) fn key_with(qname: &str, qtype: RecordType, dnssec_ok: bool, cd: bool) -> CacheKey {
    CacheKey::new(&Query::query(name(qname), qtype), dnssec_ok, cd)
}

/// A plain client (no EDNS) asking `qname` with ID 0x1234 and RD.
pub(super) fn view(qname: &Name) -> ClientView<'_> {
    ClientView { id: 0x1234, qname, recursion_desired: true, authentic_data: false, edns: None }
}

/// An EDNS client.
pub(super) fn edns_view(qname: &Name, dnssec_ok: bool) -> ClientView<'_> {
    ClientView { edns: Some(ClientEdns { dnssec_ok, max_payload: 1400 }), ..view(qname) }
}

pub(super) fn cache(cfg: CacheConfig) -> Cache {
    Cache::new(cfg)
}

pub(super) fn stale_cfg() -> CacheConfig {
    CacheConfig { serve_stale: true, ..CacheConfig::default() }
}

pub(super) fn parse(wire: &[u8]) -> Message {
    Message::from_vec(wire).expect("a served answer parses")
}

/// The answer of a fresh hit, `Hit` or `HitPrefetch` (panics on anything else).
pub(super) fn hit(l: Lookup) -> Message {
    match l {
        Lookup::Hit(w) | Lookup::HitPrefetch(w) => parse(&w),
        other => panic!("expected a fresh hit, got {other:?}"),
    }
}

/// Every TTL in every section, in order.
pub(super) fn ttls(m: &Message) -> Vec<u32> {
    m.answers.iter().chain(&m.authorities).chain(&m.additionals).map(|r| r.ttl).collect()
}

pub(super) fn stored(ttl: u32) -> StoreOutcome {
    StoreOutcome::Stored { kind: AnswerKind::Positive, ttl }
}
