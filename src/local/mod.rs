//! Names answered here and never forwarded: `localhost` (RFC 6761 §6.3), `invalid`
//! (§6.4), the locally-served reverse zones of RFC 6303 §4 (with RFC 6761 §6.1 and
//! RFC 7793), `home.arpa` (RFC 8375), `local` (RFC 6762 §22.1) and `onion` (RFC 7686 §2).
//!
//! Pure: [`LocalZones`] is built once per configuration generation and
//! [`LocalZones::answer`] maps a client's question to its answer, or to None when the
//! name is not ours to answer. A later routing layer consults its routes first, so a
//! route can claim any of these names. Only cache misses pay for the lookup: local
//! answers are never cached, so a local name never hits.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, NS, SOA},
    },
};

use crate::message::ClientQuery;

#[cfg(test)]
mod tests;

/// The TTL of every record we answer with, and the SOA MINIMUM: how long a client may
/// keep a local answer, positive or negative (RFC 2308 §5: the negative TTL is the
/// lesser of the SOA's TTL and its MINIMUM, here both 3 hours). These names never change
/// while the switch stays on.
pub const LOCAL_TTL: u32 = 10_800;

/// The SOA timers of a local zone: serial 1, refresh 3600, retry 1200, expire 604800,
/// minimum [`LOCAL_TTL`]. RFC 6303 §3 fixes the names (MNAME the zone's own name, the
/// target of its only NS record; RNAME `nobody.invalid.`), not the timers; these are the
/// values resolvers that serve these zones commonly use. Nothing transfers these zones,
/// so only MINIMUM matters (the negative TTL).
const SOA_TIMERS: (u32, i32, i32, i32) = (1, 3600, 1200, 604_800);

/// How a zone answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneKind {
    /// `localhost` (RFC 6761 §6.3): A 127.0.0.1 and AAAA ::1 for the name and every name
    /// under it, NODATA for other types.
    Localhost,
    /// An empty zone (RFC 6303 §3): at the apex, SOA and NS answered and NODATA for other
    /// types; every name below it NXDOMAIN.
    Empty,
    /// A name that does not exist at all, apex included: NXDOMAIN (`invalid`, RFC 6761
    /// §6.4; `local`, RFC 6762 §22.1; `onion`, RFC 7686 §2).
    NxDomain,
}

/// One locally-served zone.
#[derive(Debug, Clone)]
pub struct Zone {
    pub kind: ZoneKind,
    /// The zone's name, lowercase.
    pub apex: Name,
    /// Its SOA record (for the authority section of negative answers, RFC 2308 §3).
    soa: Record,
    /// Its NS record: the zone's own name (RFC 6303 §3).
    ns: Record,
}

/// The answer to a question in a local zone: an RCODE and its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAnswer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
}

impl LocalAnswer {
    /// This answer as a message for `query`'s client: its ID, its question as written, RD
    /// and CD echoed, RA set, AA clear (we serve, we are no authority: docs/design.md
    /// "Answers say what they are"), AD clear (nothing here was validated), an OPT only
    /// when the client sent one (RFC 6891 §7).
    pub fn message(self, query: &ClientQuery) -> Message {
        let mut msg = query.error_answer(self.rcode);
        msg.answers = self.answers;
        msg.authorities = self.authorities;
        msg
    }

    /// [`LocalAnswer::message`] in wire form.
    pub fn wire(self, query: &ClientQuery) -> Vec<u8> {
        let msg = self.message(query);
        msg.to_vec().unwrap_or_else(|_| {
            // Records built here from a name that parsed always encode; should one not,
            // the client gets SERVFAIL rather than nothing.
            query.error_answer(ResponseCode::ServFail).to_vec().unwrap_or_default()
        })
    }
}

/// A node of the zone tree, one label deep, keyed from the root down.
#[derive(Debug, Default, Clone)]
struct Node {
    /// Lowercase.
    label: Box<[u8]>,
    children: Vec<Node>,
    /// Index into [`LocalZones::zones`] when a zone starts here.
    zone: Option<usize>,
}

/// The set of locally-served zones, searched by label from the root down (case-
/// insensitive, no allocation). Built once per configuration generation.
#[derive(Debug, Clone, Default)]
pub struct LocalZones {
    root: Node,
    zones: Vec<Zone>,
}

impl LocalZones {
    /// No local zones: every name is forwarded (`server.local_zones = false`).
    pub fn none() -> Self {
        Self::default()
    }

    /// The standard set, or none when `enabled` is false.
    pub fn new(enabled: bool) -> Self {
        if enabled { Self::standard() } else { Self::none() }
    }

    /// Every zone of RFC 6761, 6303, 7793, 8375, 6762 §22.1 and 7686.
    pub fn standard() -> Self {
        let mut zones = Self::none();
        zones.add("localhost.", ZoneKind::Localhost);
        for name in ["invalid.", "local.", "onion."] {
            zones.add(name, ZoneKind::NxDomain);
        }
        for name in standard_empty_zones() {
            zones.add(&name, ZoneKind::Empty);
        }
        zones
    }

    /// Whether no zone is served.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// Every zone served.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    fn add(&mut self, name: &str, kind: ZoneKind) {
        let apex = Name::from_ascii(name).expect("a valid zone name").to_lowercase();
        let mut node = &mut self.root;
        for label in apex.iter().rev() {
            let at = match node.children.iter().position(|c| *c.label == *label) {
                Some(at) => at,
                None => {
                    node.children.push(Node { label: label.into(), ..Node::default() });
                    node.children.len() - 1
                }
            };
            node = &mut node.children[at];
        }
        let nobody = Name::from_ascii("nobody.invalid.").expect("a valid name");
        let (serial, refresh, retry, expire) = SOA_TIMERS;
        let soa = SOA::new(apex.clone(), nobody, serial, refresh, retry, expire, LOCAL_TTL);
        let soa = Record::from_rdata(apex.clone(), LOCAL_TTL, RData::SOA(soa));
        let ns = Record::from_rdata(apex.clone(), LOCAL_TTL, RData::NS(NS(apex.clone())));
        node.zone = Some(self.zones.len());
        self.zones.push(Zone { kind, apex, soa, ns });
    }

    /// The zone `labels` (from the root down, any case; `count` of them) falls in, and
    /// whether it is that zone's apex. The deepest zone wins, should zones ever nest.
    fn find<'a>(&self, labels: impl Iterator<Item = &'a [u8]>, count: usize) -> Option<(&Zone, bool)> {
        if self.zones.is_empty() {
            return None;
        }
        let mut node = &self.root;
        let mut found = None;
        for (depth, label) in labels.enumerate() {
            match node.children.iter().find(|c| c.label.eq_ignore_ascii_case(label)) {
                Some(child) => node = child,
                None => break,
            }
            if let Some(zone) = node.zone {
                found = Some((&self.zones[zone], depth + 1 == count));
            }
        }
        found
    }

    /// The local zone `name` is in (apex or below), and whether it is the apex.
    pub fn zone_of(&self, name: &Name) -> Option<(&Zone, bool)> {
        self.find(name.iter().rev(), usize::from(name.num_labels()))
    }

    /// Whether a name in uncompressed wire form (as the cache keys it) is in a local
    /// zone. A malformed name is not.
    pub fn covers_wire(&self, wire: &[u8]) -> bool {
        if self.zones.is_empty() {
            return false;
        }
        let mut labels = Vec::new();
        let mut at = 0;
        while let Some(&len) = wire.get(at) {
            let len = usize::from(len);
            if len == 0 {
                break;
            }
            let Some(label) = wire.get(at + 1..at + 1 + len) else {
                return false;
            };
            labels.push(label);
            at += 1 + len;
        }
        let count = labels.len();
        self.find(labels.into_iter().rev(), count).is_some()
    }

    /// The answer to `query` when its name is ours to answer; None for every other name
    /// (and every class but IN), which goes on to the cache and upstream.
    pub fn answer(&self, query: &ClientQuery) -> Option<LocalAnswer> {
        let question = &query.query;
        if question.query_class() != DNSClass::IN {
            return None;
        }
        let (zone, apex) = self.zone_of(question.name())?;
        let qtype = question.query_type();
        let negative =
            |rcode| LocalAnswer { rcode, answers: Vec::new(), authorities: vec![zone.soa.clone()] };
        let positive =
            |answers| LocalAnswer { rcode: ResponseCode::NoError, answers, authorities: Vec::new() };
        let answer = match zone.kind {
            ZoneKind::NxDomain => negative(ResponseCode::NXDomain),
            ZoneKind::Empty if !apex => negative(ResponseCode::NXDomain),
            // RFC 6303 §3: the apex answers SOA and NS, and NODATA for the rest.
            ZoneKind::Empty => match qtype {
                RecordType::SOA => positive(vec![zone.soa.clone()]),
                RecordType::NS => positive(vec![zone.ns.clone()]),
                RecordType::ANY => positive(vec![zone.soa.clone(), zone.ns.clone()]),
                _ => negative(ResponseCode::NoError),
            },
            // RFC 6761 §6.3: the loopback address for address queries, "negative
            // responses for all other query types" (NODATA: the names exist).
            ZoneKind::Localhost => {
                let owner = question.name().clone();
                let v4 = || Record::from_rdata(owner.clone(), LOCAL_TTL, RData::A(A(Ipv4Addr::LOCALHOST)));
                let v6 =
                    || Record::from_rdata(owner.clone(), LOCAL_TTL, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)));
                match qtype {
                    RecordType::A => positive(vec![v4()]),
                    RecordType::AAAA => positive(vec![v6()]),
                    RecordType::ANY => positive(vec![v4(), v6()]),
                    _ => negative(ResponseCode::NoError),
                }
            }
        };
        Some(answer)
    }
}

/// The empty zones: RFC 6303 §4 (RFC 1918 space, 0/8, 127/8, 169.254/16, the
/// documentation nets, the broadcast address, the IPv6 unspecified and loopback
/// addresses, ULA fd00::/8, link-local fe80::/10, the documentation prefix 2001:db8::/32),
/// RFC 7793 (100.64.0.0/10) and RFC 8375 (home.arpa, which §7 adds to the same registry).
fn standard_empty_zones() -> Vec<String> {
    let mut names: Vec<String> = vec!["10.in-addr.arpa.".into(), "168.192.in-addr.arpa.".into()];
    names.extend((16..=31).map(|n| format!("{n}.172.in-addr.arpa.")));
    names.extend((64..=127).map(|n| format!("{n}.100.in-addr.arpa.")));
    names.extend(
        [
            "127.in-addr.arpa.",
            "254.169.in-addr.arpa.",
            "0.in-addr.arpa.",
            "2.0.192.in-addr.arpa.",
            "100.51.198.in-addr.arpa.",
            "113.0.203.in-addr.arpa.",
            "255.255.255.255.in-addr.arpa.",
            "d.f.ip6.arpa.",
            "8.e.f.ip6.arpa.",
            "9.e.f.ip6.arpa.",
            "a.e.f.ip6.arpa.",
            "b.e.f.ip6.arpa.",
            "8.b.d.0.1.0.0.2.ip6.arpa.",
            "home.arpa.",
        ]
        .map(String::from),
    );
    // :: and ::1, one nibble label each (RFC 3596 §2.5), lowest nibble first.
    let zeros = "0.".repeat(31);
    names.push(format!("0.{zeros}ip6.arpa."));
    names.push(format!("1.{zeros}ip6.arpa."));
    names
}
