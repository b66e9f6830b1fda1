//! What to do with one client packet, decided without I/O: answer it, reply with an error
//! at once (REFUSED, FORMERR, NOTIMP, BADVERS), or drop it.
//!
//! Must never panic on any input. Unparseable bytes are dropped (RFC 1035 gives nothing to
//! reply to); a header that parses with a body that does not gets FORMERR.

use std::net::IpAddr;

use hickory_proto::{
    op::{Header, Message, MessageType, OpCode, ResponseCode},
    rr::{RecordType, rdata::opt::EdnsCode},
    serialize::binary::{BinDecodable, BinDecoder},
};
use ipnet::IpNet;

use crate::message::{BYPASS_CACHE_OPTION, ClientEdns, ClientQuery, EDNS_OPTION_EDE, response_opt};

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
        return Verdict::Refused(local_reply(&header, packet, parsed.as_ref().ok(), ResponseCode::Refused));
    }
    let msg = match parsed {
        Ok(msg) => msg,
        Err(_) => return Verdict::Reply(local_reply(&header, packet, None, ResponseCode::FormErr)),
    };
    if msg.metadata.op_code != OpCode::Query {
        return Verdict::Reply(local_reply(&header, packet, Some(&msg), ResponseCode::NotImp));
    }
    if msg.queries.len() != 1 {
        return Verdict::Reply(local_reply(&header, packet, Some(&msg), ResponseCode::FormErr));
    }
    let edns = match &msg.edns {
        // RFC 6891 §6.1.3: we speak EDNS version 0 only.
        Some(e) if e.version() > 0 => {
            return Verdict::Reply(local_reply(&header, packet, Some(&msg), ResponseCode::BADVERS));
        }
        Some(e) => Some(ClientEdns { dnssec_ok: e.flags().dnssec_ok, max_payload: e.max_payload() }),
        None => None,
    };
    if let Some(rcode) = unaskable(u16::from(msg.queries[0].query_type())) {
        return Verdict::Reply(local_reply(&header, packet, Some(&msg), rcode));
    }
    if is_resolver_arpa(msg.queries[0].name()) {
        // RFC 9462 §6.1/§6.4: a forwarder does not forward resolver.arpa; we designate no
        // encrypted resolver, so the answer is NODATA, from here. (The watchdog's probe
        // relies on this: it checks our query path without leaving the host.)
        return Verdict::Reply(local_reply(&header, packet, Some(&msg), ResponseCode::NoError));
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

/// The RCODE for a question no upstream should be asked, by its QTYPE; None for the
/// rest. Meta-TYPEs only make sense within one hop (RFC 6895 §3.1): OPT is never
/// forwarded (RFC 6891 §6.1.1), TKEY and TSIG belong to their own transaction, and type 0
/// is reserved, so they are malformed as questions. Zone transfers (AXFR, IXFR), the
/// obsolete MAILA and MAILB and the unassigned meta-TYPEs are not something a stub
/// serves. Forwarding them is worse than useless: an upstream may answer a meta-TYPE
/// question by closing the connection, which every other client's queries share.
fn unaskable(qtype: u16) -> Option<ResponseCode> {
    const OPT: u16 = 41;
    const TKEY: u16 = 249;
    const TSIG: u16 = 250;
    const ANY: u16 = 255;
    match qtype {
        0 | OPT | TKEY | TSIG => Some(ResponseCode::FormErr),
        ANY => None,
        128..=254 => Some(ResponseCode::NotImp),
        _ => None,
    }
}

fn is_resolver_arpa(name: &hickory_proto::rr::Name) -> bool {
    // Built once: parsing the zone's name for every query was 3% of a cache hit's CPU.
    static ZONE: std::sync::LazyLock<hickory_proto::rr::Name> = std::sync::LazyLock::new(|| {
        hickory_proto::rr::Name::from_ascii("resolver.arpa.").expect("a valid name")
    });
    ZONE.zone_of(name)
}

/// A reply made here, with no records: the request's ID, opcode and RD, RA set (we do
/// offer recursion), AA clear (RFC 1035 §4.1.1: we are no authority), its question when
/// it could be parsed, and an OPT when the request had one (RFC 6891 §7, also for a
/// FORMERR, even one caused by the OPT itself; BADVERS needs it for the extended RCODE),
/// with our payload size and DO copied (RFC 3225 §3).
///
/// When the request did not parse (`parsed` is None), its OPT is looked for with our
/// wire walker: only this error path pays for that.
fn local_reply(header: &Header, packet: &[u8], parsed: Option<&Message>, rcode: ResponseCode) -> Vec<u8> {
    let dnssec_ok = match parsed {
        Some(msg) => msg.edns.as_ref().map(|e| e.flags().dnssec_ok),
        None => crate::wire::opt_dnssec_ok(packet),
    };
    let opt = match dnssec_ok {
        Some(dnssec_ok) => Some(response_opt(dnssec_ok)),
        None if rcode == ResponseCode::BADVERS => Some(response_opt(false)),
        None => None,
    };
    let mut reply = Message::error_msg(header.metadata.id, header.metadata.op_code, rcode);
    reply.metadata.recursion_desired = header.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = false;
    reply.edns = opt;
    if let Some(msg) = parsed {
        reply.queries = msg.queries.clone();
    }
    reply.to_vec().unwrap_or_else(|_| {
        // The question itself would not encode: answer with the header (and OPT) alone.
        reply.queries.clear();
        reply.to_vec().unwrap_or_default()
    })
}

/// Fits an answer to a UDP client's limit, dropping what the client can do without
/// before it sets TC (RFC 2181 §9: TC only when data that is required does not fit):
/// first Extended DNS Errors (RFC 8914 §3), then the additional section, then the
/// authority section. If the answer section itself does not fit, the answer goes out as
/// header + question + OPT with TC=1 and the client retries over TCP (RFC 6891 §7).
///
/// The authority section of a negative answer (NXDOMAIN or NODATA, also after a CNAME)
/// holds the SOA the client needs to cache the denial (RFC 2308 §5 and §6: answers
/// from a cache must include it): an authority section with an SOA is never dropped;
/// such an answer is sent with TC instead.
///
/// Answers within the limit are returned untouched, without a parse: only an answer
/// that is too long pays for this.
pub fn fit_udp(answer: Vec<u8>, limit: u16) -> Vec<u8> {
    if answer.len() <= usize::from(limit) {
        return answer;
    }
    let Ok(mut msg) = Message::from_vec(&answer) else {
        return Vec::new();
    };
    let limit = usize::from(limit);
    let ede = EdnsCode::from(EDNS_OPTION_EDE);
    let authority_required = msg.authorities.iter().any(|r| r.record_type() == RecordType::SOA);
    for step in 0..3 {
        let changed = match step {
            0 => match msg.edns.as_mut().filter(|e| e.option(ede).is_some()) {
                Some(edns) => {
                    edns.options_mut().remove(ede);
                    true
                }
                None => false,
            },
            1 => !std::mem::take(&mut msg.additionals).is_empty(),
            _ => !authority_required && !std::mem::take(&mut msg.authorities).is_empty(),
        };
        if !changed {
            continue;
        }
        match msg.to_vec() {
            Ok(wire) if wire.len() <= limit => return wire,
            Ok(_) => {}
            Err(_) => return Vec::new(),
        }
    }
    msg.truncate().to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Edns;
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

    /// An answer with `answers`, `authority` and `additional` TXT records of 100 octets,
    /// with an SOA in authority when `negative` (an NXDOMAIN).
    fn sectioned(answers: usize, authority: usize, additional: usize, negative: bool) -> Vec<u8> {
        use hickory_proto::rr::{RData, Record, rdata::SOA, rdata::TXT};
        let name = Name::from_ascii("big.test.").unwrap();
        let txt = || Record::from_rdata(name.clone(), 60, RData::TXT(TXT::new(vec!["x".repeat(100)])));
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.add_query(hickory_proto::op::Query::query(name.clone(), RecordType::TXT));
        m.answers.extend((0..answers).map(|_| txt()));
        if negative {
            m.metadata.response_code = ResponseCode::NXDomain;
            let soa = SOA::new(name.clone(), name.clone(), 1, 2, 3, 4, 5);
            m.add_authority(Record::from_rdata(name.clone(), 60, RData::SOA(soa)));
        }
        m.authorities.extend((0..authority).map(|_| txt()));
        m.additionals.extend((0..additional).map(|_| txt()));
        m.set_edns(Edns::new());
        m.to_vec().unwrap()
    }

    fn counts(wire: &[u8]) -> (bool, usize, usize, usize) {
        let m = Message::from_vec(wire).unwrap();
        (m.metadata.truncation, m.answers.len(), m.authorities.len(), m.additionals.len())
    }

    #[test]
    fn the_additional_section_goes_before_tc() {
        let fitted = fit_udp(sectioned(2, 1, 6, false), 512);
        assert_eq!(counts(&fitted), (false, 2, 1, 0), "RFC 2181 §9: no TC for additional data");
        assert!(Message::from_vec(&fitted).unwrap().edns.is_some(), "the OPT stays");
    }

    #[test]
    fn then_the_authority_section_of_a_positive_answer() {
        assert_eq!(counts(&fit_udp(sectioned(2, 6, 6, false), 512)), (false, 2, 0, 0));
    }

    #[test]
    fn a_negative_answer_keeps_its_soa_or_is_truncated() {
        // Small enough once the additional data is gone: the SOA stays.
        assert_eq!(counts(&fit_udp(sectioned(0, 0, 6, true), 512)), (false, 0, 1, 0));
        // Too big with its authority section: TC rather than an answer without the SOA
        // the client needs to cache the denial (RFC 2308 §5, §6).
        assert_eq!(counts(&fit_udp(sectioned(0, 6, 0, true), 512)), (true, 0, 0, 0));
    }

    #[test]
    fn tc_only_when_the_answer_section_does_not_fit() {
        assert_eq!(counts(&fit_udp(sectioned(6, 1, 1, false), 512)), (true, 0, 0, 0));
        // Within the limit nothing changes, not even a re-encoding.
        let small = sectioned(1, 1, 1, false);
        assert_eq!(fit_udp(small.clone(), 512), small);
    }

    /// The OPT of a local reply: (payload, DO), None without one.
    fn reply_opt(v: Verdict) -> (Message, Option<(u16, bool)>) {
        let (Verdict::Reply(w) | Verdict::Refused(w)) = v else { panic!("expected a reply, got {v:?}") };
        let m = Message::from_vec(&w).unwrap();
        let opt = m.edns.as_ref().map(|e| (e.max_payload(), e.flags().dnssec_ok));
        (m, opt)
    }

    fn with_do(m: &mut Message) {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        e.set_dnssec_ok(true);
        m.set_edns(e);
    }

    #[test]
    fn local_replies_copy_do_set_ra_clear_aa_and_advertise_our_size() {
        let outside: IpAddr = "192.0.2.9".parse().unwrap();
        let arpa = |m: &mut Message| {
            m.queries[0] = hickory_proto::op::Query::query(
                Name::from_ascii("_dns.resolver.arpa.").unwrap(),
                RecordType::SVCB,
            );
            with_do(m);
        };
        let cases: Vec<(Vec<u8>, IpAddr)> = vec![
            (query_wire(with_do), outside),
            (
                query_wire(|m| {
                    m.metadata.op_code = OpCode::Notify;
                    with_do(m);
                }),
                LOCAL,
            ),
            (
                query_wire(|m| {
                    let q = m.queries[0].clone();
                    m.add_query(q);
                    with_do(m);
                }),
                LOCAL,
            ),
            (
                query_wire(|m| {
                    with_do(m);
                    m.edns.as_mut().unwrap().set_version(1);
                }),
                LOCAL,
            ),
            (query_wire(arpa), LOCAL),
        ];
        for (wire, src) in cases {
            let (m, opt) = reply_opt(classify(&wire, src, &acl()));
            let rcode = m.metadata.response_code;
            assert_eq!(opt, Some((crate::message::EDNS_PAYLOAD, true)), "{rcode:?}: DO copied, our size");
            assert!(m.metadata.recursion_available, "{rcode:?}: RA");
            assert!(!m.metadata.authoritative, "{rcode:?}: no AA");
            assert!(m.metadata.recursion_desired, "{rcode:?}: RD copied");
        }
        // No OPT in the query, none in the reply (RFC 6891 §7).
        let (m, opt) = reply_opt(classify(&query_wire(|_| {}), outside, &acl()));
        assert_eq!((m.metadata.response_code, opt), (ResponseCode::Refused, None));
    }

    /// A query with DO whose OPT is followed by `extra` octets counted as one more
    /// additional record.
    fn query_with_extra_record(extra: &[u8]) -> Vec<u8> {
        let mut wire = query_wire(with_do);
        wire.extend_from_slice(extra);
        let ar = u16::from_be_bytes([wire[10], wire[11]]) + 1;
        wire[10..12].copy_from_slice(&ar.to_be_bytes());
        wire
    }

    #[test]
    fn a_formerr_for_a_bad_opt_carries_an_opt() {
        // RFC 6891 §6.1.1: two OPT RRs are a FORMERR; §7: the reply still has an OPT.
        let two = query_with_extra_record(&[0, 0, 41, 16, 0, 0, 0, 0x80, 0, 0, 0]);
        // An OPT whose option runs past its RDATA: hickory cannot read it.
        let mut bad = query_wire(|_| {});
        bad.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0x80, 0, 0, 4, 0, 15, 0, 40]);
        bad[10..12].copy_from_slice(&1u16.to_be_bytes());
        for wire in [two, bad] {
            assert!(Message::from_vec(&wire).is_err(), "hickory refuses it");
            let (m, opt) = reply_opt(classify(&wire, LOCAL, &acl()));
            assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
            assert_eq!(opt, Some((crate::message::EDNS_PAYLOAD, true)));
            assert!(m.metadata.recursion_available);
        }
        // A body that does not parse and has no OPT: FORMERR without one.
        let mut cut = query_wire(|_| {});
        cut.truncate(cut.len() - 3);
        let (m, opt) = reply_opt(classify(&cut, LOCAL, &acl()));
        assert_eq!((m.metadata.response_code, opt), (ResponseCode::FormErr, None));
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
    fn meta_type_questions_are_answered_here() {
        for (qtype, rcode) in [
            (RecordType::OPT, ResponseCode::FormErr),
            (RecordType::TSIG, ResponseCode::FormErr),
            (RecordType::Unknown(249), ResponseCode::FormErr),
            (RecordType::Unknown(0), ResponseCode::FormErr),
            (RecordType::AXFR, ResponseCode::NotImp),
            (RecordType::IXFR, ResponseCode::NotImp),
            (RecordType::Unknown(128), ResponseCode::NotImp),
            (RecordType::Unknown(254), ResponseCode::NotImp),
        ] {
            let wire = query_wire(|m| {
                m.queries[0] = hickory_proto::op::Query::query(Name::from_ascii("a.test.").unwrap(), qtype)
            });
            assert_eq!(rcode_of(classify(&wire, LOCAL, &acl())), rcode, "{qtype:?}");
        }
        for qtype in [RecordType::ANY, RecordType::A, RecordType::Unknown(256), RecordType::Unknown(127)] {
            let wire = query_wire(|m| {
                m.queries[0] = hickory_proto::op::Query::query(Name::from_ascii("a.test.").unwrap(), qtype)
            });
            assert!(matches!(classify(&wire, LOCAL, &acl()), Verdict::Query(_)), "{qtype:?}");
        }
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
