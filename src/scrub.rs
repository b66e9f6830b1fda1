//! Scrubbing an upstream answer before a client or the cache sees it: records that do not
//! answer the question asked are dropped.
//!
//! Owns: which records of a parsed upstream answer belong to its question. Pure: a
//! function over a hickory-proto [`Message`], no I/O, no clock.
//!
//! An upstream (or anything on the path of a cleartext one) can put records for other
//! names next to a correct answer: `evil.example A 192.0.2.66` in the answer section of
//! an answer for `bank.example`, or in the additional section. A stub must never hand them
//! on: a client library that does not check owner names would take them for the answer,
//! and the cache would serve them on every hit. What is kept:
//!
//! - **Answer section** (RFC 1034 §4.3.2 step 3, RFC 2181 §10.1.1): the CNAME chain from the
//!   question name, the records of the question type (any type for ANY) at the names on
//!   it, a DNAME (RFC 6672 §2.2) whose owner is an ancestor of a name on it, and the RRSIGs
//!   of what is kept.
//! - **Authority section**: SOA and NS whose owner is a name on the chain or an ancestor
//!   of one (the zone of a negative answer, RFC 2308 §2), and the DNSSEC proofs (DS, NSEC,
//!   NSEC3 and their RRSIGs, RFC 4035 §3.1.3) for a validating client to check.
//! - **Additional section**: addresses (A, AAAA and their RRSIGs) of a name that a kept
//!   NS, MX, SRV, SVCB or HTTPS record names as its target (RFC 1035 §3.3.9, RFC 2782,
//!   RFC 9460 §4.1). The OPT is not a record here (hickory keeps it apart); TSIG is in
//!   `signature` and untouched.
//!
//! This is the normalisation trusted resolvers apply to every answer (Unbound's scrubber
//! does the same per section). Data for the right name cannot be checked here; that is
//! DNSSEC's job.

use hickory_proto::{
    op::Message,
    rr::{Name, RData, Record, RecordType},
};

/// Removes from `msg` every record that does not belong to the answer of its question;
/// returns how many were removed. A message without exactly one question is left as is
/// (the connection never hands one on as an answer).
pub fn scrub(msg: &mut Message) -> usize {
    let [question] = msg.queries.as_slice() else {
        return 0;
    };
    let qtype = question.query_type();
    let chain = chain(question.name(), qtype, &msg.answers);
    let before = msg.answers.len() + msg.authorities.len() + msg.additionals.len();

    msg.answers.retain(|r| in_answer(r, qtype, &chain));
    msg.authorities.retain(|r| in_authority(r, &chain));
    let targets: Vec<Name> = msg.answers.iter().chain(&msg.authorities).filter_map(target).collect();
    msg.additionals.retain(|r| in_additional(r, &targets));

    before - (msg.answers.len() + msg.authorities.len() + msg.additionals.len())
}

/// The names the answer is about: the question name, then each CNAME target in turn
/// (for a CNAME question, only the name itself: its CNAME is the answer).
fn chain(qname: &Name, qtype: RecordType, answers: &[Record]) -> Vec<Name> {
    let mut chain = vec![qname.clone()];
    if qtype == RecordType::CNAME {
        return chain;
    }
    // Each step uses another CNAME record, so the walk ends; a loop ends at a repeat.
    for _ in 0..answers.len() {
        let last = chain.last().expect("never empty");
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == *last => Some(target.0.clone()),
            _ => None,
        });
        match next {
            Some(target) if !chain.contains(&target) => chain.push(target),
            _ => break,
        }
    }
    chain
}

fn in_answer(r: &Record, qtype: RecordType, chain: &[Name]) -> bool {
    let on_chain = chain.contains(&r.name);
    let ancestor_of_chain = chain.iter().any(|n| r.name.zone_of(n) && r.name != *n);
    match r.record_type() {
        RecordType::CNAME => on_chain,
        RecordType::DNAME => ancestor_of_chain,
        RecordType::RRSIG => match covered(r) {
            Some(RecordType::DNAME) => ancestor_of_chain,
            Some(t) => on_chain && (t == qtype || t == RecordType::CNAME || qtype == RecordType::ANY),
            None => false,
        },
        t => on_chain && (t == qtype || qtype == RecordType::ANY),
    }
}

fn in_authority(r: &Record, chain: &[Name]) -> bool {
    let zone_of_chain = || chain.iter().any(|n| r.name.zone_of(n));
    match r.record_type() {
        RecordType::SOA | RecordType::NS => zone_of_chain(),
        RecordType::DS | RecordType::NSEC | RecordType::NSEC3 => true,
        RecordType::RRSIG => match covered(r) {
            Some(RecordType::SOA | RecordType::NS) => zone_of_chain(),
            Some(RecordType::DS | RecordType::NSEC | RecordType::NSEC3) => true,
            _ => false,
        },
        _ => false,
    }
}

fn in_additional(r: &Record, targets: &[Name]) -> bool {
    let address = |t: RecordType| matches!(t, RecordType::A | RecordType::AAAA);
    let wanted = match r.record_type() {
        RecordType::RRSIG => covered(r).is_some_and(address),
        t => address(t),
    };
    wanted && targets.contains(&r.name)
}

/// The name a record sends a client on to, whose addresses may ride along.
fn target(r: &Record) -> Option<Name> {
    match &r.data {
        RData::NS(ns) => Some(ns.0.clone()),
        RData::MX(mx) => Some(mx.exchange.clone()),
        RData::SRV(srv) => Some(srv.target.clone()),
        RData::SVCB(svcb) => Some(svcb.target_name.clone()),
        RData::HTTPS(https) => Some(https.0.target_name.clone()),
        _ => None,
    }
}

/// The type an RRSIG covers (RFC 4034 §3.1.1: its first two octets). Without the DNSSEC
/// feature hickory keeps an RRSIG's RDATA as octets.
fn covered(r: &Record) -> Option<RecordType> {
    match &r.data {
        RData::Unknown { rdata, .. } => {
            let b = rdata.anything.get(..2)?;
            Some(RecordType::from(u16::from_be_bytes([b[0], b[1]])))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::{
        op::{MessageType, OpCode, Query},
        rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, null::NULL},
    };

    use super::*;

    fn n(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }
    fn a(owner: &str, last: u8) -> Record {
        Record::from_rdata(n(owner), 300, RData::A(A::new(192, 0, 2, last)))
    }
    fn cname(owner: &str, to: &str) -> Record {
        Record::from_rdata(n(owner), 300, RData::CNAME(CNAME(n(to))))
    }
    fn soa(zone: &str) -> Record {
        let soa = SOA::new(n("ns.example."), n("host.example."), 1, 2, 3, 4, 60);
        Record::from_rdata(n(zone), 300, RData::SOA(soa))
    }
    fn raw(owner: &str, rtype: u16, rdata: Vec<u8>) -> Record {
        let code = RecordType::from(rtype);
        Record::from_rdata(n(owner), 300, RData::Unknown { code, rdata: NULL::with(rdata) })
    }
    /// An RRSIG covering `covered`; only its first two octets matter here.
    fn rrsig(owner: &str, covered: RecordType) -> Record {
        let mut data = u16::from(covered).to_be_bytes().to_vec();
        data.extend_from_slice(&[8, 2, 0, 0, 1, 44]);
        raw(owner, 46, data)
    }
    fn answer(qname: &str, qtype: RecordType) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(n(qname), qtype));
        m
    }
    fn owners(rs: &[Record]) -> Vec<String> {
        rs.iter().map(|r| format!("{} {}", r.name, r.record_type())).collect()
    }

    #[test]
    fn an_honest_answer_is_left_alone() {
        let mut m = answer("www.example.", RecordType::A);
        m.answers = vec![cname("WWW.example.", "web.example."), a("web.example.", 1), a("web.example.", 2)];
        m.answers.push(rrsig("web.example.", RecordType::A));
        m.authorities = vec![
            Record::from_rdata(n("example."), 300, RData::NS(NS(n("ns1.example.")))),
            rrsig("example.", RecordType::NS),
        ];
        m.additionals = vec![a("ns1.example.", 53)];
        let before = m.clone();
        assert_eq!(scrub(&mut m), 0);
        assert_eq!(m, before);
    }

    #[test]
    fn records_for_other_names_are_dropped_from_every_section() {
        let mut m = answer("bank.example.", RecordType::A);
        m.answers = vec![a("bank.example.", 1), a("evil.example.", 66), a("example.", 66)];
        m.authorities = vec![a("other.example.", 66), soa("elsewhere.")];
        m.additionals = vec![a("bank.example.", 66), a("ns.other.", 66)];
        assert_eq!(scrub(&mut m), 6);
        assert_eq!(owners(&m.answers), ["bank.example. A"]);
        assert!(m.authorities.is_empty() && m.additionals.is_empty());
    }

    #[test]
    fn other_types_at_the_name_are_dropped_unless_the_question_is_any() {
        let aaaa =
            Record::from_rdata(n("x.example."), 300, RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
        let mut m = answer("x.example.", RecordType::A);
        m.answers = vec![a("x.example.", 1), aaaa.clone(), rrsig("x.example.", RecordType::AAAA)];
        assert_eq!(scrub(&mut m), 2);
        let mut any = answer("x.example.", RecordType::ANY);
        any.answers = vec![a("x.example.", 1), aaaa, rrsig("x.example.", RecordType::AAAA)];
        assert_eq!(scrub(&mut any), 0);
    }

    #[test]
    fn a_negative_answer_keeps_its_soa_and_proofs_and_follows_the_chain() {
        let mut m = answer("alias.example.", RecordType::A);
        m.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
        m.answers = vec![cname("alias.example.", "gone.sub.other.")];
        m.authorities = vec![
            soa("other."),
            rrsig("other.", RecordType::SOA),
            raw("a.other.", 47, vec![0]), // NSEC
            soa("unrelated."),
        ];
        assert_eq!(scrub(&mut m), 1);
        assert_eq!(owners(&m.authorities), ["other. SOA", "other. RRSIG", "a.other. NSEC"]);
    }

    #[test]
    fn a_dname_above_the_name_is_kept_with_its_synthesised_cname() {
        let mut dname_rdata = Vec::new();
        for label in ["example", "net"] {
            dname_rdata.push(label.len() as u8);
            dname_rdata.extend_from_slice(label.as_bytes());
        }
        dname_rdata.push(0);
        let mut m = answer("www.example.com.", RecordType::A);
        m.answers = vec![
            raw("example.com.", 39, dname_rdata),
            rrsig("example.com.", RecordType::DNAME),
            cname("www.example.com.", "www.example.net."),
            a("www.example.net.", 7),
            raw("unrelated.com.", 39, vec![0]),
        ];
        assert_eq!(scrub(&mut m), 1);
        assert_eq!(m.answers.len(), 4);
    }

    #[test]
    fn glue_rides_only_with_the_record_that_names_it() {
        let mut m = answer("example.", RecordType::MX);
        m.answers = vec![Record::from_rdata(n("example."), 300, RData::MX(MX::new(10, n("mail.example."))))];
        m.additionals =
            vec![a("mail.example.", 25), rrsig("mail.example.", RecordType::A), a("www.example.", 80)];
        assert_eq!(scrub(&mut m), 1);
        assert_eq!(owners(&m.additionals), ["mail.example. A", "mail.example. RRSIG"]);
    }

    #[test]
    fn a_cname_loop_ends_and_a_cname_question_keeps_only_its_own_record() {
        let mut m = answer("a.example.", RecordType::A);
        m.answers = vec![cname("a.example.", "b.example."), cname("b.example.", "a.example.")];
        assert_eq!(scrub(&mut m), 0);
        let mut c = answer("a.example.", RecordType::CNAME);
        c.answers = vec![cname("a.example.", "b.example."), cname("b.example.", "c.example.")];
        assert_eq!(scrub(&mut c), 1);
        assert_eq!(owners(&c.answers), ["a.example. CNAME"]);
    }

    #[test]
    fn a_message_without_one_question_is_left_alone() {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.answers = vec![a("x.example.", 1)];
        assert_eq!(scrub(&mut m), 0);
        assert_eq!(m.answers.len(), 1);
    }
}
