//! What is cacheable, as what kind of answer, and for how long.
//!
//! Owns: the RFC 1035/2181/2308/8767 rules that turn one walked upstream answer into a
//! [`Decision`] (the entry lifetime and the TTL stored in every record) or a
//! [`NotCacheable`] reason. Pure functions of the answer, the key and the limits: it must
//! never look at the clock, the cache contents or the network.
//!
//! Negative answers are keyed like positive ones, on ⟨qname, qtype, qclass, DO, CD⟩. An
//! NXDOMAIN could also answer the other types of the same name (RFC 2308 §5); we do not
//! use that, which only costs an upstream query per other type.

use std::collections::HashMap;

use super::{AnswerKind, CacheConfig, CacheKey, NotCacheable};
use crate::wire::{self, Scanned, Section, TYPE_ANY, TYPE_CNAME, TYPE_RRSIG, TYPE_SIG, TYPE_SOA, TYPE_TSIG};

const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const RCODE_NOERROR: u16 = 0;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;

/// How one answer is cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decision {
    pub kind: AnswerKind,
    /// The entry lifetime in seconds; never 0.
    pub ttl: u32,
    /// The TTL to store in each record of [`Scanned::records`], in the same order; each
    /// is at most `ttl` and equal across the records of one RRset (RFC 2181 §5.2).
    pub record_ttls: Vec<u32>,
}

/// Decides whether `scanned` (the walk of `wire`) may be cached under `key`, and how.
/// `cfg` must be normalized (see [`CacheConfig::normalized`]).
pub(super) fn decide(
    wire: &[u8],
    scanned: &Scanned,
    key: &CacheKey,
    cfg: &CacheConfig,
) -> Result<Decision, NotCacheable> {
    let flags = scanned.flags;
    if flags & FLAG_QR == 0 || (flags >> 11) & 0x0f != 0 {
        return Err(NotCacheable::NotAnAnswer);
    }
    // RFC 2181 §9: a truncated answer is incomplete; the client retries over TCP.
    if flags & FLAG_TC != 0 {
        return Err(NotCacheable::Truncated);
    }
    if scanned.qname != *key.name || scanned.qtype != key.qtype || scanned.qclass != key.qclass {
        return Err(NotCacheable::QuestionMismatch);
    }
    // RFC 6891 §6.1.1: the OPT is per hop and is cut before storing; only when it is
    // the last RR does cutting it move no offset a compression pointer could use.
    if scanned.opt.is_some_and(|o| o.span.1 != wire.len()) {
        return Err(NotCacheable::OptNotLast);
    }
    // A TSIG (RFC 8945) or SIG(0) (RFC 2931) signs the message as sent, ID included:
    // a patched copy would carry a broken signature.
    if scanned
        .records
        .iter()
        .any(|r| r.section == Section::Additional && matches!(r.rtype, TYPE_TSIG | TYPE_SIG))
    {
        return Err(NotCacheable::Signed);
    }

    let (kind, ttl) = match scanned.rcode() {
        RCODE_NOERROR => noerror(wire, scanned, cfg)?,
        RCODE_NXDOMAIN => (AnswerKind::NxDomain, negative_ttl(wire, scanned, cfg)?),
        // RFC 2308 §7.1: a server failure may be cached, for at most five minutes.
        RCODE_SERVFAIL if cfg.servfail_ttl > 0 => (AnswerKind::ServFail, cfg.servfail_ttl),
        rcode => return Err(NotCacheable::Rcode(rcode)),
    };
    let floor = if kind == AnswerKind::Positive { cfg.min_ttl } else { 0 };
    let record_ttls =
        rrset_ttls(wire, scanned, cfg.max_ttl).into_iter().map(|t| t.max(floor).min(ttl)).collect();
    Ok(Decision { kind, ttl, record_ttls })
}

/// A NOERROR answer: positive if the answer section holds data, else NODATA.
fn noerror(wire: &[u8], scanned: &Scanned, cfg: &CacheConfig) -> Result<(AnswerKind, u32), NotCacheable> {
    let has_answers = scanned.records.iter().any(|r| r.section == Section::Answer);
    let has_soa = authority_soas(scanned).next().is_some();
    // RFC 2308 §2.2: NODATA is NOERROR with no record of the type at the end of the
    // CNAME chain (QNAME is the last target, §1) and an SOA in the authority section.
    // A CNAME without data behind it and without SOA is what the upstream answered for
    // the name: we cache it as a positive answer.
    if answers_question(wire, scanned)? || (has_answers && !has_soa) {
        let min = answer_min_ttl(scanned, cfg.max_ttl).unwrap_or(0);
        // RFC 8767 §7: a TTL of 0 means "use once", never cached, not even stale.
        if min == 0 {
            return Err(NotCacheable::ZeroTtl);
        }
        let ttl = min.max(cfg.min_ttl).min(cfg.max_ttl);
        if ttl == 0 {
            return Err(NotCacheable::ZeroTtl);
        }
        return Ok((AnswerKind::Positive, ttl));
    }
    Ok((AnswerKind::NoData, negative_ttl(wire, scanned, cfg)?))
}

/// RFC 2308 §3/§5: min(SOA TTL, SOA MINIMUM), also at most the TTL of any CNAME on the
/// way there, capped by `negative_max_ttl` (§5: over a few hours is unwise). No SOA, no
/// negative caching (§5 "SHOULD NOT" cache without it).
fn negative_ttl(wire: &[u8], scanned: &Scanned, cfg: &CacheConfig) -> Result<u32, NotCacheable> {
    let mut soa_ttl: Option<u32> = None;
    for soa in authority_soas(scanned) {
        let minimum = wire::soa_minimum(wire, soa).map_err(|_| NotCacheable::Malformed)?;
        let this = soa.ttl.min(minimum);
        soa_ttl = Some(soa_ttl.map_or(this, |t| t.min(this)));
    }
    let mut ttl = soa_ttl.ok_or(NotCacheable::NoSoa)?.min(cfg.max_ttl);
    if let Some(chain) = answer_min_ttl(scanned, cfg.max_ttl) {
        ttl = ttl.min(chain);
    }
    let ttl = ttl.min(cfg.negative_max_ttl);
    if ttl == 0 {
        return Err(NotCacheable::ZeroTtl);
    }
    Ok(ttl)
}

fn authority_soas(scanned: &Scanned) -> impl Iterator<Item = &wire::Rr> {
    scanned.records.iter().filter(|r| r.section == Section::Authority && r.rtype == TYPE_SOA)
}

/// The lowest TTL in the answer section, `None` if it is empty. RFC 8767 §4: a TTL with
/// the high bit set is a large positive number, then capped (by `max_ttl`).
fn answer_min_ttl(scanned: &Scanned, max_ttl: u32) -> Option<u32> {
    scanned.records.iter().filter(|r| r.section == Section::Answer).map(|r| r.ttl.min(max_ttl)).min()
}

/// Follows the CNAME chain from the question name through the answer section and says
/// whether data of the question type sits at its end (RFC 1034 §4.3.2, RFC 2308 §1).
fn answers_question(wire: &[u8], scanned: &Scanned) -> Result<bool, NotCacheable> {
    let answers = || scanned.records.iter().filter(|r| r.section == Section::Answer);
    let qtype = scanned.qtype;
    let mut name = scanned.qname.clone();
    // Each hop uses a distinct CNAME record, so a loop ends after as many hops.
    for _ in 0..=answers().count() {
        if answers().any(|r| r.owner == name && (r.rtype == qtype || qtype == TYPE_ANY)) {
            return Ok(true);
        }
        if qtype == TYPE_CNAME {
            return Ok(false);
        }
        match answers().find(|r| r.owner == name && r.rtype == TYPE_CNAME) {
            Some(cname) => {
                name = wire::cname_target(wire, cname).map_err(|_| NotCacheable::Malformed)?;
            }
            None => return Ok(false),
        }
    }
    Ok(false)
}

/// Gives the records of `msg` (the hickory parse of `wire`, without its OPT) the TTLs the
/// cache would store for them: one TTL per RRset, the lowest (RFC 2181 §5.2), a TTL with
/// the high bit set read as large and positive, then capped at `max_ttl` (RFC 8767 §4,
/// RFC 2181 §8), by [`rrset_ttls`], the rule the cache applies on admission. For answers
/// that are not cached. False, and `msg` untouched, when our walker cannot walk `wire`
/// or finds other records than hickory did.
pub(super) fn normalize_message(wire: &[u8], msg: &mut hickory_proto::op::Message, max_ttl: u32) -> bool {
    let Ok(scanned) = wire::scan(wire) else {
        return false;
    };
    let ttls = rrset_ttls(wire, &scanned, max_ttl);
    let in_section = |s| scanned.records.iter().zip(&ttls).filter(move |(r, _)| r.section == s);
    let sections = [
        (in_section(Section::Answer), &mut msg.answers),
        (in_section(Section::Authority), &mut msg.authorities),
        (in_section(Section::Additional), &mut msg.additionals),
    ];
    let same = sections.iter().all(|(walked, parsed)| {
        walked.clone().count() == parsed.len()
            && walked.clone().zip(parsed.iter()).all(|((r, _), p)| u16::from(p.record_type()) == r.rtype)
    });
    if !same {
        return false;
    }
    for (walked, parsed) in sections {
        for ((_, &ttl), record) in walked.zip(parsed.iter_mut()) {
            record.ttl = ttl;
        }
    }
    true
}

/// Every record's TTL lowered to the lowest TTL of its RRset (RFC 2181 §5.2: "use the
/// lowest"), and capped at `max_ttl`. An RRset is ⟨owner, type, class⟩ across the
/// sections; RRSIGs group by the type they cover, whose TTL they share (RFC 4034 §3).
fn rrset_ttls(wire: &[u8], scanned: &Scanned, max_ttl: u32) -> Vec<u32> {
    fn group<'a>(wire: &[u8], r: &'a wire::Rr) -> (&'a [u8], u16, u16, u16) {
        let covered = if r.rtype == TYPE_RRSIG { wire::rrsig_covered(wire, r) } else { 0 };
        (r.owner.as_slice(), r.rtype, r.class, covered)
    }
    let mut lowest: HashMap<(&[u8], u16, u16, u16), u32> = HashMap::with_capacity(scanned.records.len());
    for r in &scanned.records {
        let ttl = r.ttl.min(max_ttl);
        lowest.entry(group(wire, r)).and_modify(|t| *t = (*t).min(ttl)).or_insert(ttl);
    }
    scanned.records.iter().map(|r| lowest[&group(wire, r)]).collect()
}
