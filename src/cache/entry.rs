//! One cached answer in wire form, and the hit path that turns it into a client's answer.
//!
//! Owns: the stored octets (the upstream answer without its OPT, every TTL already
//! normalized by the policy), the offsets to patch, the entry's lifetimes and its
//! prefetch claim. A hit is one copy plus patches at precomputed offsets, then the
//! client's own OPT appended. It must never parse, allocate more than the answer, read
//! the clock, or change the length or layout of the stored message (compression
//! pointers point at fixed offsets).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::policy::Decision;
use super::{AnswerKind, ClientView};
use crate::message::{EDNS_OPTION_EDE, EDNS_PAYLOAD, OPT_FIXED_LEN};
use crate::wire::TYPE_OPT;
use crate::wire::{QNAME_OFFSET, Scanned};

/// An EDE option without EXTRA-TEXT: code, length, INFO-CODE.
const EDE_FIXED_LEN: usize = 6;
/// EXTRA-TEXT beyond this is cut (at a char boundary): it is diagnostic only (§6).
const EDE_TEXT_MAX: usize = 256;

const FLAG3_RD: u8 = 0x01;
const FLAG3_AA: u8 = 0x04;
const FLAG4_AD: u8 = 0x20;

/// How the TTLs of a rendered answer are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ttls {
    /// Fresh: each stored TTL minus the whole seconds since the entry was stored.
    CountDown(u32),
    /// Stale: every TTL set to this (RFC 8767 §4, 30 s recommended).
    Fixed(u32),
}

/// One cached answer. Immutable once built, except for the one-shot prefetch claim.
#[derive(Debug)]
pub(super) struct Entry {
    /// The answer as stored: upstream's octets without the OPT, TTLs normalized.
    wire: Box<[u8]>,
    /// Offset of every TTL field (no OPT among them); all < 65 536 by construction.
    ttl_offsets: Box<[u16]>,
    /// Length of the question name at [`QNAME_OFFSET`], uncompressed.
    qname_len: u16,
    pub kind: AnswerKind,
    /// The entry lifetime in seconds, as decided at store time.
    pub ttl: u32,
    pub stored_at: Instant,
    pub expires: Instant,
    /// Until when the entry may be served stale (RFC 8767); `None` if never.
    pub stale_until: Option<Instant>,
    prefetch_claimed: AtomicBool,
}

impl Entry {
    /// Builds the stored form of `wire` as decided. `stale_max` is `Some` when stale
    /// serving is on; SERVFAIL entries are never kept for it (RFC 8767 §4 serves data
    /// that was once good, not failures).
    pub fn new(
        wire: &[u8],
        scanned: &Scanned,
        decision: &Decision,
        now: Instant,
        stale_max: Option<Duration>,
    ) -> Self {
        // RFC 6891 §6.1.1: an OPT is per hop, never cached. The walker guarantees it is
        // the last RR when it is kept (the policy refuses anything else), so cutting it
        // moves no offset that a compression pointer could use.
        let end = scanned.opt.map_or(wire.len(), |o| o.span.0);
        let mut stored = wire[..end].to_vec();
        if scanned.opt.is_some() {
            let arcount = u16::from_be_bytes([stored[10], stored[11]]) - 1;
            stored[10..12].copy_from_slice(&arcount.to_be_bytes());
        }
        // RFC 1035 §4.1.1, RFC 2181 §5.4.1: an answer from a cache is never
        // authoritative. Cleared once here, so a hit has nothing to patch.
        stored[2] &= !FLAG3_AA;
        let mut ttl_offsets = Vec::with_capacity(scanned.records.len());
        for (rr, &ttl) in scanned.records.iter().zip(&decision.record_ttls) {
            stored[rr.ttl_offset..rr.ttl_offset + 4].copy_from_slice(&ttl.to_be_bytes());
            ttl_offsets.push(rr.ttl_offset as u16);
        }
        let expires = now + Duration::from_secs(u64::from(decision.ttl));
        let stale_until = match (stale_max, decision.kind) {
            (_, AnswerKind::ServFail) | (None, _) => None,
            (Some(max), _) => Some(expires + max),
        };
        Entry {
            wire: stored.into_boxed_slice(),
            ttl_offsets: ttl_offsets.into_boxed_slice(),
            qname_len: scanned.qname.len() as u16,
            kind: decision.kind,
            ttl: decision.ttl,
            stored_at: now,
            expires,
            stale_until,
            prefetch_claimed: AtomicBool::new(false),
        }
    }

    /// Heap and inline bytes this entry owns (not counting the key or cache slot).
    pub fn size(&self) -> usize {
        size_of::<Self>() + self.wire.len() + 2 * self.ttl_offsets.len()
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.expires
    }

    /// Expired, but still inside the stale window.
    pub fn is_stale_servable(&self, now: Instant) -> bool {
        !self.is_fresh(now) && self.stale_until.is_some_and(|until| now < until)
    }

    /// Whether the entry can still be served at all, fresh or stale.
    pub fn is_servable(&self, now: Instant) -> bool {
        self.is_fresh(now) || self.is_stale_servable(now)
    }

    /// Whole seconds since the entry was stored.
    pub fn elapsed_secs(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored_at).as_secs()).unwrap_or(u32::MAX)
    }

    /// A fresh data entry in the last `percent` of its lifetime. SERVFAIL entries are
    /// never refreshed ahead: they are only a brake on retries (RFC 2308 §7).
    pub fn prefetch_due(&self, now: Instant, percent: u8) -> bool {
        if percent == 0 || self.kind == AnswerKind::ServFail || !self.is_fresh(now) {
            return false;
        }
        let remaining = self.expires.saturating_duration_since(now).as_millis();
        remaining * 100 <= u128::from(self.ttl) * 1000 * u128::from(percent)
    }

    /// Claims the one prefetch of this entry; true for exactly one caller ever.
    pub fn claim_prefetch(&self) -> bool {
        !self.prefetch_claimed.swap(true, Ordering::AcqRel)
    }

    /// The answer for `client`: one copy of the stored octets, then the ID, RD, AD,
    /// the question's case and the TTLs patched in place, then a fresh OPT for a client
    /// that sent one. AA was cleared when the entry was built.
    pub fn render(&self, client: &ClientView<'_>, ttls: Ttls, ede: Option<u16>) -> Vec<u8> {
        let opt_len = match (client.edns, ede) {
            (None, _) => 0,
            (Some(_), None) => OPT_FIXED_LEN,
            (Some(_), Some(_)) => OPT_FIXED_LEN + EDE_FIXED_LEN,
        };
        let mut out = Vec::with_capacity(self.wire.len() + opt_len);
        out.extend_from_slice(&self.wire);

        out[0..2].copy_from_slice(&client.id.to_be_bytes());
        // RFC 1035 §4.1.1: RD is copied from the query.
        out[2] = (out[2] & !FLAG3_RD) | if client.recursion_desired { FLAG3_RD } else { 0 };
        // RFC 6840 §5.8: AD only for a client that asked with DO or AD.
        let dnssec_ok = client.edns.is_some_and(|e| e.dnssec_ok);
        if !dnssec_ok && !client.authentic_data {
            out[3] &= !FLAG4_AD;
        }
        self.copy_client_case(&mut out, client);

        for &offset in self.ttl_offsets.iter() {
            let at = usize::from(offset);
            let field: &mut [u8; 4] = (&mut out[at..at + 4]).try_into().expect("4 octets");
            let ttl = match ttls {
                Ttls::CountDown(elapsed) => u32::from_be_bytes(*field).saturating_sub(elapsed),
                Ttls::Fixed(ttl) => ttl,
            };
            *field = ttl.to_be_bytes();
        }

        if client.edns.is_some() {
            // Our own payload size, not an echo of the client's (RFC 6891 §6.2.5); the
            // client's size only limits how long a UDP answer may be.
            append_opt(&mut out, EDNS_PAYLOAD, dnssec_ok, ede.map(|code| (code, "")));
        }
        out
    }

    /// Writes the client's spelling of the question name over the stored one. The key
    /// compares names ignoring ASCII case (RFC 4343 §3), so the two have the same labels
    /// and length; each label is still checked and only copied when it matches, so a
    /// caller's mistake can never change the name or the layout.
    fn copy_client_case(&self, out: &mut [u8], client: &ClientView<'_>) {
        let end = QNAME_OFFSET + usize::from(self.qname_len) - 1;
        let mut at = QNAME_OFFSET;
        for label in client.qname.iter() {
            let len = label.len();
            if at + 1 + len > end || usize::from(out[at]) != len {
                return;
            }
            let stored = &mut out[at + 1..at + 1 + len];
            if !stored.eq_ignore_ascii_case(label) {
                return;
            }
            stored.copy_from_slice(label);
            at += 1 + len;
        }
    }
}

/// Appends an OPT pseudo-RR (RFC 6891 §6.1.2) to the DNS message in `wire` and counts
/// it in ARCOUNT: `payload` as the UDP payload size, the DO bit (RFC 3225 §3), version
/// 0 and extended RCODE 0, and optionally one Extended DNS Error (RFC 8914 §2) with its
/// INFO-CODE and EXTRA-TEXT (cut at 256 octets).
///
/// The message must not already carry an OPT (RFC 6891 §6.1.1), and EDE belongs only in
/// answers to clients that sent an OPT (RFC 8914 §2). A `wire` shorter than a DNS
/// header is left untouched.
pub fn append_opt(wire: &mut Vec<u8>, payload: u16, dnssec_ok: bool, ede: Option<(u16, &str)>) {
    if wire.len() < QNAME_OFFSET {
        return;
    }
    let text = ede.map_or(&b""[..], |(_, text)| {
        let mut cut = text.len().min(EDE_TEXT_MAX);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        &text.as_bytes()[..cut]
    });
    let rdlen = ede.map_or(0, |_| EDE_FIXED_LEN + text.len()) as u16;
    wire.reserve(OPT_FIXED_LEN + usize::from(rdlen));
    wire.push(0); // owner: the root
    wire.extend_from_slice(&TYPE_OPT.to_be_bytes());
    wire.extend_from_slice(&payload.to_be_bytes());
    let do_bit: u16 = if dnssec_ok { 0x8000 } else { 0 };
    // TTL: extended RCODE 0, version 0, then the flags (DO is the top bit).
    wire.extend_from_slice(&[0, 0]);
    wire.extend_from_slice(&do_bit.to_be_bytes());
    wire.extend_from_slice(&rdlen.to_be_bytes());
    if let Some((info_code, _)) = ede {
        wire.extend_from_slice(&EDNS_OPTION_EDE.to_be_bytes());
        wire.extend_from_slice(&(2 + text.len() as u16).to_be_bytes());
        wire.extend_from_slice(&info_code.to_be_bytes());
        wire.extend_from_slice(text);
    }
    let arcount = u16::from_be_bytes([wire[10], wire[11]]).wrapping_add(1);
    wire[10..12].copy_from_slice(&arcount.to_be_bytes());
}
