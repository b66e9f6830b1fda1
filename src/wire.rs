//! A small, strict walker over one DNS message in wire form (RFC 1035 §4.1), shared by
//! the cache and the upstream answer path.
//!
//! Owns: finding the byte offsets the cache patches on a hit (question name, every TTL
//! field, the OPT pseudo-RR) and decoding owner names for the policy. It only reads; it
//! must never allocate per byte, follow a compression pointer forwards (that is how
//! loops are built, RFC 1035 §4.1.4) or trust a length without a bounds check: every
//! failure is [`Malformed`], never a panic.

use std::ops::Range;

/// The fixed DNS header (RFC 1035 §4.1.1).
pub(crate) const HEADER_LEN: usize = 12;
/// Where the question name starts: right after the header.
pub(crate) const QNAME_OFFSET: usize = HEADER_LEN;
/// A name is at most 255 octets in wire form (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 255;

pub(crate) const TYPE_NS: u16 = 2;
pub(crate) const TYPE_CNAME: u16 = 5;
pub(crate) const TYPE_SOA: u16 = 6;
pub(crate) const TYPE_PTR: u16 = 12;
pub(crate) const TYPE_MX: u16 = 15;
pub(crate) const TYPE_SRV: u16 = 33;
pub(crate) const TYPE_NAPTR: u16 = 35;
pub(crate) const TYPE_SVCB: u16 = 64;
pub(crate) const TYPE_HTTPS: u16 = 65;
pub(crate) const TYPE_ANAME: u16 = 65_305;
pub(crate) const TYPE_SIG: u16 = 24;
pub(crate) const TYPE_OPT: u16 = 41;
pub(crate) const TYPE_RRSIG: u16 = 46;
pub(crate) const TYPE_TSIG: u16 = 250;
pub(crate) const TYPE_ANY: u16 = 255;

/// The message is not a well-formed DNS message (or uses something we do not walk,
/// such as the obsolete extended label types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The section a resource record was found in (RFC 1035 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Answer,
    Authority,
    Additional,
}

/// One resource record other than OPT.
#[derive(Debug, Clone)]
pub(crate) struct Rr {
    pub section: Section,
    /// Owner name, lowercased, uncompressed wire form.
    pub owner: Vec<u8>,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    /// Offset of the 4-octet TTL field.
    pub ttl_offset: usize,
    pub rdata: Range<usize>,
}

/// The OPT pseudo-RR (RFC 6891 §6.1.2), if the message carries one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opt {
    /// Where the OPT RR starts and ends in the message.
    pub span: (usize, usize),
    /// Where its RDATA (the EDNS options) starts and ends.
    pub rdata: (usize, usize),
    /// The EDNS version (RFC 6891 §6.1.3).
    pub version: u8,
    /// The upper 8 bits of the extended RCODE (RFC 6891 §6.1.3).
    pub ext_rcode: u8,
}

/// What the walker found in one message.
#[derive(Debug, Clone)]
pub(crate) struct Scanned {
    pub flags: u16,
    /// Question name, lowercased, uncompressed wire form; it is also exactly the octets
    /// at [`QNAME_OFFSET`] in the message (the walker rejects a compressed question).
    pub qname: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
    /// Every RR except OPT, in wire order.
    pub records: Vec<Rr>,
    pub opt: Option<Opt>,
}

impl Scanned {
    /// The full RCODE: header bits plus the OPT's upper bits (RFC 6891 §6.1.3).
    pub fn rcode(&self) -> u16 {
        let high = self.opt.map_or(0, |o| u16::from(o.ext_rcode));
        (high << 4) | (self.flags & 0x000f)
    }
}

fn u16_at(wire: &[u8], at: usize) -> Result<u16, Malformed> {
    match wire.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(Malformed),
    }
}

fn u32_at(wire: &[u8], at: usize) -> Result<u32, Malformed> {
    match wire.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(Malformed),
    }
}

/// Decodes the name at `pos`, following compression pointers (RFC 1035 §4.1.4).
/// Returns the lowercased uncompressed name and the offset just past the name as it
/// sits at `pos`. A pointer must point before the run of labels it ends, so every jump
/// goes strictly backwards and the walk terminates.
pub(crate) fn read_name(wire: &[u8], pos: usize) -> Result<(Vec<u8>, usize), Malformed> {
    read_name_avoiding(wire, pos, &[])
}

/// Whether `start..end` overlaps one of the 4-octet fields at `fields` (ascending).
fn overlaps(fields: &[usize], start: usize, end: usize) -> bool {
    let i = fields.partition_point(|&f| f + 4 <= start);
    fields.get(i).is_some_and(|&f| f < end)
}

/// [`read_name`], where no octet of the name (length octets, labels, pointers) may lie
/// in one of the TTL fields at `ttls` (ascending offsets): the cache rewrites those on
/// every hit, so a name read from them would change with the time.
fn read_name_avoiding(wire: &[u8], pos: usize, ttls: &[usize]) -> Result<(Vec<u8>, usize), Malformed> {
    let mut name = Vec::with_capacity(32);
    let mut at = pos;
    let mut run_start = pos;
    let mut end = None;
    loop {
        let len = *wire.get(at).ok_or(Malformed)?;
        let span = match len & 0xc0 {
            0x00 => 1 + usize::from(len),
            _ => 2,
        };
        if overlaps(ttls, at, at + span) {
            return Err(Malformed);
        }
        match len & 0xc0 {
            0x00 if len == 0 => {
                name.push(0);
                if name.len() > MAX_NAME_LEN {
                    return Err(Malformed);
                }
                return Ok((name, end.unwrap_or(at + 1)));
            }
            0x00 => {
                let label = wire.get(at + 1..at + 1 + len as usize).ok_or(Malformed)?;
                name.push(len);
                name.extend(label.iter().map(u8::to_ascii_lowercase));
                if name.len() >= MAX_NAME_LEN {
                    return Err(Malformed);
                }
                at += 1 + len as usize;
            }
            0xc0 => {
                let low = *wire.get(at + 1).ok_or(Malformed)?;
                let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                end.get_or_insert(at + 2);
                // No name starts in the header (RFC 1035 §4.1.4: a pointer names a prior
                // occurrence of a name), and the cache rewrites the header's ID, flags and
                // ARCOUNT on every hit: a name read from there would change per client.
                if target >= run_start || target < HEADER_LEN {
                    return Err(Malformed);
                }
                run_start = target;
                at = target;
            }
            // 0x40 / 0x80: extended label types (RFC 6891 §5 deprecates them).
            _ => return Err(Malformed),
        }
    }
}

/// Walks the whole message. Requires exactly one question (the caller checks QDCOUNT
/// first to give a better reason), an uncompressed question name, sane section counts,
/// at most one OPT and only in the additional section, and no trailing octets.
pub(crate) fn scan(wire: &[u8]) -> Result<Scanned, Malformed> {
    if wire.len() < HEADER_LEN {
        return Err(Malformed);
    }
    let flags = u16_at(wire, 2)?;
    if u16_at(wire, 4)? != 1 {
        return Err(Malformed);
    }
    let counts = [
        (Section::Answer, u16_at(wire, 6)?),
        (Section::Authority, u16_at(wire, 8)?),
        (Section::Additional, u16_at(wire, 10)?),
    ];
    let (qname, mut at) = read_name(wire, QNAME_OFFSET)?;
    if at - QNAME_OFFSET != qname.len() {
        // A pointer in the question: we could not patch its case in place.
        return Err(Malformed);
    }
    let qtype = u16_at(wire, at)?;
    let qclass = u16_at(wire, at + 2)?;
    at += 4;

    // Each RR takes at least 11 octets; do not trust the counts beyond that.
    let total: usize = counts.iter().map(|&(_, n)| usize::from(n)).sum();
    let mut records = Vec::with_capacity(total.min((wire.len() - at) / 11));
    let mut opt = None;
    let mut ttls = Vec::with_capacity(records.capacity());
    for (section, count) in counts {
        for _ in 0..count {
            let start = at;
            let (owner, after) = read_name_avoiding(wire, at, &ttls)?;
            let rtype = u16_at(wire, after)?;
            let class = u16_at(wire, after + 2)?;
            let ttl = u32_at(wire, after + 4)?;
            let rdlen = usize::from(u16_at(wire, after + 8)?);
            let rdata = after + 10..after + 10 + rdlen;
            if rdata.end > wire.len() {
                return Err(Malformed);
            }
            at = rdata.end;
            if rtype == TYPE_OPT {
                // RFC 6891 §6.1.1: one OPT, in the additional section, owned by the root.
                if section != Section::Additional || opt.is_some() || owner != [0] {
                    return Err(Malformed);
                }
                opt = Some(Opt {
                    span: (start, at),
                    rdata: (rdata.start, rdata.end),
                    version: (ttl >> 16) as u8,
                    ext_rcode: (ttl >> 24) as u8,
                });
                continue;
            }
            ttls.push(after + 4);
            check_rdata_names(wire, rtype, &rdata, &ttls)?;
            records.push(Rr { section, owner, rtype, class, ttl, ttl_offset: after + 4, rdata });
        }
    }
    if at != wire.len() {
        return Err(Malformed);
    }
    Ok(Scanned { flags, qname, qtype, qclass, records, opt })
}

/// For a message that does not parse: whether it carries an OPT RR and, if so, the DO
/// bit of the first one (RFC 3225 §3), so that even a FORMERR to an EDNS query carries
/// an OPT (RFC 6891 §7). Tolerant where [`scan`] is strict (several OPTs, an OPT outside
/// the additional section, trailing octets), and it never follows a compression pointer,
/// so it costs one pass over the octets. It stops at the first octet it cannot walk.
pub(crate) fn opt_dnssec_ok(wire: &[u8]) -> Option<bool> {
    /// The offset just past the name at `at`, without decoding it: labels up to the root
    /// label or a pointer, which ends a name where it sits (RFC 1035 §4.1.4).
    fn skip_name(wire: &[u8], mut at: usize) -> Option<usize> {
        loop {
            let len = *wire.get(at)?;
            match len & 0xc0 {
                0x00 if len == 0 => return Some(at + 1),
                0x00 => at += 1 + usize::from(len),
                0xc0 => return Some(at + 2),
                _ => return None,
            }
        }
    }
    let count = |at| u16_at(wire, at).ok().map(usize::from);
    let (questions, records) = (count(4)?, count(6)? + count(8)? + count(10)?);
    let mut at = HEADER_LEN;
    for _ in 0..questions {
        at = skip_name(wire, at)? + 4;
    }
    for _ in 0..records {
        at = skip_name(wire, at)?;
        let rtype = u16_at(wire, at).ok()?;
        let ttl = u32_at(wire, at + 4).ok()?;
        if rtype == TYPE_OPT {
            // The TTL field: extended RCODE, version, then DO as the top flag bit.
            return Some(ttl & 0x8000 != 0);
        }
        at += 10 + usize::from(u16_at(wire, at + 8).ok()?);
    }
    None
}

/// Reads the names inside RDATA that hickory-proto decompresses (RFC 3597 §4 names the
/// types whose names may be compressed; hickory also follows pointers in SRV, NAPTR and
/// SVCB/HTTPS). A hit is served from these octets and parsed by the client, so these
/// names obey the rules of owner names: pointers backwards, never into the header or a
/// TTL field. Empty RDATA (hickory reads it as no data) has no name.
fn check_rdata_names(wire: &[u8], rtype: u16, rdata: &Range<usize>, ttls: &[usize]) -> Result<(), Malformed> {
    let first = match rtype {
        TYPE_NS | TYPE_CNAME | TYPE_PTR | TYPE_SOA | TYPE_ANAME => 0,
        TYPE_MX | TYPE_SVCB | TYPE_HTTPS => 2,
        TYPE_SRV => 6,
        TYPE_NAPTR => {
            // ORDER, PREFERENCE, then FLAGS, SERVICES and REGEXP (RFC 3403 §4.1).
            let mut at = rdata.start + 4;
            for _ in 0..3 {
                at += 1 + usize::from(*wire.get(at).ok_or(Malformed)?);
            }
            at - rdata.start
        }
        _ => return Ok(()),
    };
    if rdata.is_empty() {
        return Ok(());
    }
    let names = if rtype == TYPE_SOA { 2 } else { 1 };
    let mut at = rdata.start + first;
    for _ in 0..names {
        if at >= rdata.end {
            return Err(Malformed);
        }
        at = read_name_avoiding(wire, at, ttls)?.1;
    }
    if at > rdata.end {
        return Err(Malformed);
    }
    Ok(())
}

/// The data of the first EDNS option `code` in the OPT (RFC 6891 §6.1.2), if present
/// and whole.
pub(crate) fn edns_option<'a>(wire: &'a [u8], opt: &Opt, code: u16) -> Option<&'a [u8]> {
    let options = wire.get(opt.rdata.0..opt.rdata.1)?;
    let mut at = 0;
    while at + 4 <= options.len() {
        let this = u16::from_be_bytes([options[at], options[at + 1]]);
        let len = usize::from(u16::from_be_bytes([options[at + 2], options[at + 3]]));
        let data = options.get(at + 4..at + 4 + len)?;
        if this == code {
            return Some(data);
        }
        at += 4 + len;
    }
    None
}

/// The target of a CNAME record, lowercased; it must lie inside the RDATA.
pub(crate) fn cname_target(wire: &[u8], rr: &Rr) -> Result<Vec<u8>, Malformed> {
    let (target, end) = read_name(wire, rr.rdata.start)?;
    if end != rr.rdata.end {
        return Err(Malformed);
    }
    Ok(target)
}

/// The SOA MINIMUM field: the last four octets of the RDATA, after MNAME, RNAME and the
/// four other counters (RFC 1035 §3.3.13), so no name needs decoding.
pub(crate) fn soa_minimum(wire: &[u8], rr: &Rr) -> Result<u32, Malformed> {
    // Two one-octet names (root) plus five 32-bit fields is the smallest SOA.
    if rr.rdata.len() < 22 {
        return Err(Malformed);
    }
    u32_at(wire, rr.rdata.end - 4)
}

/// The type an RRSIG covers (RFC 4034 §3.1), so signatures group with their RRset.
pub(crate) fn rrsig_covered(wire: &[u8], rr: &Rr) -> u16 {
    if rr.rdata.len() >= 2 { u16_at(wire, rr.rdata.start).unwrap_or(0) } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `a.` A IN with `additional` appended as its additional records.
    fn query(additional: &[&[u8]]) -> Vec<u8> {
        let mut wire = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, additional.len() as u8];
        wire.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        for rr in additional {
            wire.extend_from_slice(rr);
        }
        wire
    }

    const OPT_DO: &[u8] = &[0, 0, 41, 16, 0, 0, 0, 0x80, 0, 0, 0];
    const OPT_NO_DO: &[u8] = &[0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0];
    /// An A record whose owner is a pointer to the question name.
    const A_RR: &[u8] = &[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];

    #[test]
    fn the_opt_of_a_broken_query_is_found_with_its_do_bit() {
        assert_eq!(opt_dnssec_ok(&query(&[OPT_DO])), Some(true));
        assert_eq!(opt_dnssec_ok(&query(&[A_RR, OPT_NO_DO])), Some(false));
        // Two OPTs (RFC 6891 §6.1.1 makes that a FORMERR): the first one counts.
        assert_eq!(opt_dnssec_ok(&query(&[OPT_DO, OPT_NO_DO])), Some(true));
        assert_eq!(opt_dnssec_ok(&query(&[A_RR])), None);
        // Cut inside the OPT: not found, and no panic at any cut.
        let whole = query(&[A_RR, OPT_DO]);
        assert_eq!(opt_dnssec_ok(&whole[..whole.len() - 6]), None);
        for cut in 0..whole.len() {
            let _ = opt_dnssec_ok(&whole[..cut]);
        }
    }
}
