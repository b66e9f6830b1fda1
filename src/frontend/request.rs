//! What to do with one client packet, decided without I/O: answer it, reply with an error
//! at once (REFUSED, FORMERR, NOTIMP, BADVERS), or drop it.
//!
//! Must never panic on any input. Unparseable bytes are dropped (RFC 1035 gives nothing to
//! reply to); a header that parses with a body that does not gets FORMERR.

use std::net::IpAddr;

use hickory_proto::{
    op::{Edns, Header, Message, MessageType, OpCode, ResponseCode},
    rr::rdata::opt::EdnsCode,
    serialize::binary::{BinDecodable, BinDecoder},
};
use ipnet::IpNet;

use crate::message::{BYPASS_CACHE_OPTION, ClientEdns, ClientQuery, EDNS_OPTION_EDE};

/// The verdict on one client packet.
#[derive(Debug)]
pub enum Verdict {
    /// A well-formed query to answer.
    Query(ClientQuery),
    /// Reply with this at once.
    Reply(Vec<u8>),
    /// REFUSED for a client outside `allow`; over UDP its source may be forged, so the
    /// front end may rate-limit or drop it (`server.refused`).
    Refused(Vec<u8>),
    /// Nothing to reply to (too short, a response, garbage).
    Drop,
}

/// Clients allowed to query (`[server] allow`); the rest get REFUSED.
#[derive(Debug, Clone)]
pub struct Acl(Vec<IpNet>);

impl Acl {
    pub fn new(allow: &[IpNet]) -> Self {
        Self(allow.to_vec())
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Classifies `packet` from `src`.
pub fn classify(packet: &[u8], src: IpAddr, acl: &Acl) -> Verdict {
    let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
        return Verdict::Drop;
    };
    if header.metadata.message_type == MessageType::Response {
        // Never answer responses: that is how reflection loops start.
        return Verdict::Drop;
    }
    let parsed = Message::from_vec(packet);
    if !acl.allows(src) {
        return Verdict::Refused(error_reply(&header, parsed.as_ref().ok(), ResponseCode::Refused));
    }
    let msg = match parsed {
        Ok(msg) => msg,
        Err(_) => return Verdict::Reply(error_reply(&header, None, ResponseCode::FormErr)),
    };
    if msg.metadata.op_code != OpCode::Query {
        return Verdict::Reply(error_reply(&header, Some(&msg), ResponseCode::NotImp));
    }
    if msg.queries.len() != 1 {
        return Verdict::Reply(error_reply(&header, Some(&msg), ResponseCode::FormErr));
    }
    let edns = match &msg.edns {
        // RFC 6891 §6.1.3: we speak EDNS version 0 only.
        Some(e) if e.version() > 0 => {
            return Verdict::Reply(error_reply(&header, Some(&msg), ResponseCode::BADVERS));
        }
        Some(e) => Some(ClientEdns { dnssec_ok: e.flags().dnssec_ok, max_payload: e.max_payload() }),
        None => None,
    };
    if is_resolver_arpa(msg.queries[0].name()) {
        // RFC 9462 §6.1/§6.4: a forwarder does not forward resolver.arpa; we designate no
        // encrypted resolver, so the answer is NODATA, from here. (The watchdog's probe
        // relies on this: it checks our query path without leaving the host.)
        let mut reply = Message::new(header.metadata.id, MessageType::Response, OpCode::Query);
        reply.metadata.recursion_desired = header.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.metadata.authoritative = true;
        reply.queries = msg.queries.clone();
        if msg.edns.is_some() {
            reply.edns = Some(Edns::new());
        }
        return Verdict::Reply(reply.to_vec().unwrap_or_default());
    }
    let bypass_cache =
        msg.edns.as_ref().is_some_and(|e| e.option(EdnsCode::from(BYPASS_CACHE_OPTION)).is_some());
    let mut msg = msg;
    Verdict::Query(ClientQuery {
        id: msg.metadata.id,
        query: msg.queries.swap_remove(0),
        recursion_desired: msg.metadata.recursion_desired,
        checking_disabled: msg.metadata.checking_disabled,
        authentic_data: msg.metadata.authentic_data,
        edns,
        bypass_cache,
    })
}

fn is_resolver_arpa(name: &hickory_proto::rr::Name) -> bool {
    // Built once: parsing the zone's name for every query was 3% of a cache hit's CPU.
    static ZONE: std::sync::LazyLock<hickory_proto::rr::Name> = std::sync::LazyLock::new(|| {
        hickory_proto::rr::Name::from_ascii("resolver.arpa.").expect("a valid name")
    });
    ZONE.zone_of(name)
}

/// An answer with no records: the request's ID, opcode and RD, its question when it could
/// be parsed, and an OPT when the request had one (RFC 6891 §7, also for FORMERR; BADVERS
/// needs it for the extended RCODE).
fn error_reply(header: &Header, parsed: Option<&Message>, rcode: ResponseCode) -> Vec<u8> {
    let mut reply = Message::error_msg(header.metadata.id, header.metadata.op_code, rcode);
    reply.metadata.recursion_desired = header.metadata.recursion_desired;
    if let Some(msg) = parsed {
        reply.queries = msg.queries.clone();
        if msg.edns.is_some() || rcode == ResponseCode::BADVERS {
            reply.edns = Some(Edns::new());
        }
    }
    reply.to_vec().unwrap_or_else(|_| {
        // The question itself would not encode: answer with the header alone.
        let mut bare = Message::error_msg(header.metadata.id, header.metadata.op_code, rcode);
        if rcode == ResponseCode::BADVERS {
            bare.edns = Some(Edns::new());
        }
        bare.to_vec().unwrap_or_default()
    })
}

/// Fits an answer to a UDP client's limit. Extended DNS Errors go first (RFC 8914 §3:
/// they are dropped before any other data); if it still does not fit, the answer goes out
/// as header + question + OPT with TC=1 and the client retries over TCP (RFC 6891 §7,
/// RFC 2181 §9).
pub fn fit_udp(answer: Vec<u8>, limit: u16) -> Vec<u8> {
    if answer.len() <= usize::from(limit) {
        return answer;
    }
    let Ok(mut msg) = Message::from_vec(&answer) else {
        return Vec::new();
    };
    let ede = EdnsCode::from(EDNS_OPTION_EDE);
    if let Some(edns) = msg.edns.as_mut().filter(|e| e.option(ede).is_some()) {
        edns.options_mut().remove(ede);
        match msg.to_vec() {
            Ok(wire) if wire.len() <= usize::from(limit) => return wire,
            Ok(_) => {}
            Err(_) => return Vec::new(),
        }
    }
    msg.truncate().to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    /// An answer with `records` TXT records of 100 octets and an EDE with `text`.
    fn big_answer(records: usize, text: &str) -> Vec<u8> {
        use hickory_proto::rr::{RData, Record, rdata::TXT};
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        let name = Name::from_ascii("big.test.").unwrap();
        m.add_query(hickory_proto::op::Query::query(name.clone(), RecordType::TXT));
        for _ in 0..records {
            m.add_answer(Record::from_rdata(name.clone(), 60, RData::TXT(TXT::new(vec!["x".repeat(100)]))));
        }
        let mut edns = Edns::new();
        let mut ede = 23u16.to_be_bytes().to_vec();
        ede.extend_from_slice(text.as_bytes());
        edns.options_mut().insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(EDNS_OPTION_EDE, ede));
        m.set_edns(edns);
        m.to_vec().unwrap()
    }

    #[test]
    fn an_answer_over_the_limit_loses_its_ede_before_any_record() {
        let wire = big_answer(4, &"why ".repeat(50));
        assert!(wire.len() > 512);
        let fitted = Message::from_vec(&fit_udp(wire, 512)).unwrap();
        assert!(!fitted.metadata.truncation, "the records fit once the EDE is gone");
        assert_eq!(fitted.answers.len(), 4);
        assert!(fitted.edns.unwrap().option(EdnsCode::from(EDNS_OPTION_EDE)).is_none());
    }

    #[test]
    fn an_answer_too_big_even_without_ede_is_truncated_without_it() {
        let fitted = Message::from_vec(&fit_udp(big_answer(20, "why"), 512)).unwrap();
        assert!(fitted.metadata.truncation && fitted.answers.is_empty());
        assert!(fitted.edns.unwrap().option(EdnsCode::from(EDNS_OPTION_EDE)).is_none());
        // Within the limit nothing changes.
        let small = big_answer(1, "why");
        assert_eq!(fit_udp(small.clone(), 1232), small);
    }

    fn acl() -> Acl {
        Acl::new(&["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn query_wire(edit: impl FnOnce(&mut Message)) -> Vec<u8> {
        let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(hickory_proto::op::Query::query(Name::from_ascii("Ex.Test.").unwrap(), RecordType::A));
        edit(&mut m);
        m.to_vec().unwrap()
    }

    fn rcode_of(v: Verdict) -> ResponseCode {
        match v {
            Verdict::Reply(w) | Verdict::Refused(w) => Message::from_vec(&w).unwrap().metadata.response_code,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn a_good_query_keeps_its_question_and_edns() {
        let wire = query_wire(|m| {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            e.set_dnssec_ok(true);
            m.set_edns(e);
        });
        let Verdict::Query(q) = classify(&wire, LOCAL, &acl()) else { panic!() };
        assert_eq!(q.id, 0x4242);
        assert_eq!(q.query.name().to_ascii(), "Ex.Test.");
        assert_eq!(q.edns, Some(ClientEdns { dnssec_ok: true, max_payload: 4096 }));
        assert!(!q.bypass_cache);
    }

    #[test]
    fn the_bypass_option_is_noticed() {
        let wire = query_wire(|m| {
            let mut e = Edns::new();
            e.options_mut()
                .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(BYPASS_CACHE_OPTION, vec![]));
            m.set_edns(e);
        });
        let Verdict::Query(q) = classify(&wire, LOCAL, &acl()) else { panic!() };
        assert!(q.bypass_cache);
    }

    #[test]
    fn errors_get_their_rcodes() {
        let outside: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(rcode_of(classify(&query_wire(|_| {}), outside, &acl())), ResponseCode::Refused);
        let two = query_wire(|m| {
            let q = m.queries[0].clone();
            m.add_query(q);
        });
        assert_eq!(rcode_of(classify(&two, LOCAL, &acl())), ResponseCode::FormErr);
        let notify = query_wire(|m| m.metadata.op_code = OpCode::Notify);
        assert_eq!(rcode_of(classify(&notify, LOCAL, &acl())), ResponseCode::NotImp);
        let v1 = query_wire(|m| {
            let mut e = Edns::new();
            e.set_version(1);
            m.set_edns(e);
        });
        // Extended RCODE 16 (in the OPT): BADVERS, which hickory reads back as BADSIG,
        // the TSIG name of the same number.
        assert_eq!(u16::from(rcode_of(classify(&v1, LOCAL, &acl()))), 16);
        let mut cut = query_wire(|_| {});
        cut.truncate(cut.len() - 3);
        assert_eq!(rcode_of(classify(&cut, LOCAL, &acl())), ResponseCode::FormErr);
    }

    #[test]
    fn resolver_arpa_is_answered_here_with_nodata() {
        let wire = query_wire(|m| {
            m.queries[0] = hickory_proto::op::Query::query(
                Name::from_ascii("_dns.Resolver.ARPA.").unwrap(),
                RecordType::SVCB,
            )
        });
        let Verdict::Reply(reply) = classify(&wire, LOCAL, &acl()) else { panic!("answered locally") };
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.answers.is_empty());
        assert_eq!(reply.queries[0].name().to_ascii(), "_dns.Resolver.ARPA.");
    }

    #[test]
    fn garbage_responses_and_short_packets_are_dropped() {
        assert!(matches!(classify(&[1, 2, 3], LOCAL, &acl()), Verdict::Drop));
        let response = query_wire(|m| m.metadata.message_type = MessageType::Response);
        assert!(matches!(classify(&response, LOCAL, &acl()), Verdict::Drop));
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_networks() {
        assert!(acl().allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!acl().allows("::ffff:192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn no_input_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for len in 0..2000usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let packet: Vec<u8> = (0..len % 300).map(|i| (x >> (i % 57)) as u8).collect();
            let _ = classify(&packet, LOCAL, &acl());
        }
    }
}
