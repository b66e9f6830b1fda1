//! DNS message shaping between the client side and the upstream side.
//!
//! Pure functions over hickory-proto types. Downstream and upstream are separate EDNS
//! transactions (RFC 6891 §6.2.6): the client's OPT is never forwarded; the upstream query
//! gets a fresh OPT (1232 bytes, DO copied, padding on encrypted transports), and the
//! client's answer gets a fresh OPT (no padding on the loopback hop, RFC 7830 §6).
//! Client ECS options are dropped by construction (RFC 7871 §7.5: forwarding ECS needs
//! ECS-aware caching).

use std::time::Duration;

use hickory_proto::{
    op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode},
    rr::rdata::opt::{EdnsCode, EdnsOption},
};

/// The UDP payload size we advertise upstream and to clients (DNS Flag Day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Queries on encrypted transports are padded to a multiple of this (RFC 8467 §4.1).
pub const QUERY_PADDING_BLOCK: usize = 128;
/// EDNS option code of Extended DNS Errors (RFC 8914 §2).
pub const EDNS_OPTION_EDE: u16 = 15;
/// The fixed part of an OPT RR: root owner, TYPE, CLASS, TTL, RDLENGTH (RFC 6891 §6.1.2).
pub const OPT_FIXED_LEN: usize = 11;
/// The largest UDP answer a client without EDNS can take (RFC 1035 §4.2.1).
pub const CLASSIC_UDP_LIMIT: u16 = 512;
/// An EDNS option (from the local/experimental range, RFC 6891 §9) by which a client
/// asks for an answer from upstream, not from the cache: `stubborn health` sends it, so
/// that a cached answer cannot hide a dead upstream. Never forwarded.
pub const BYPASS_CACHE_OPTION: u16 = 65_053;

/// What the daemon keeps of a client's query: enough to ask upstream and to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientQuery {
    pub id: u16,
    /// The question as the client wrote it (its case is echoed back).
    pub query: Query,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    pub authentic_data: bool,
    /// Present when the client sent an OPT record.
    pub edns: Option<ClientEdns>,
    /// The client sent [`BYPASS_CACHE_OPTION`]: answer from upstream or fail, never from
    /// the cache (fresh or stale).
    pub bypass_cache: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEdns {
    pub dnssec_ok: bool,
    pub max_payload: u16,
}

impl ClientQuery {
    /// The largest UDP answer this client can take (RFC 6891 §6.2.3: below 512 means 512).
    pub fn udp_limit(&self) -> u16 {
        match self.edns {
            Some(e) => e.max_payload.max(CLASSIC_UDP_LIMIT),
            None => CLASSIC_UDP_LIMIT,
        }
    }

    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// The wire query to send upstream. `pad` pads to the RFC 8467 block; it must only be
    /// set for encrypted transports (RFC 7830 §6). The ID is a placeholder: the connection
    /// assigns its own.
    ///
    /// Written octet by octet rather than through hickory's encoder: every cache miss
    /// builds one, and the fixed layout (header, the question as the client spelled it,
    /// one OPT) is short enough to check whole in the tests.
    pub fn upstream_wire(&self, pad: bool) -> Vec<u8> {
        self.upstream_wire_with(pad, true)
    }

    /// [`Self::upstream_wire`], with the edns-tcp-keepalive option only if `keepalive`:
    /// RFC 7828 is for DNS's own TCP connections, so DNS over HTTPS leaves it out.
    pub fn upstream_wire_with(&self, pad: bool, keepalive: bool) -> Vec<u8> {
        const OPTION_HEADER_LEN: usize = 4;
        let keepalive_len = if keepalive { OPTION_HEADER_LEN } else { 0 };
        let name = self.query.name();
        let mut wire = Vec::with_capacity(QUERY_PADDING_BLOCK);
        wire.extend_from_slice(&self.id.to_be_bytes());
        // QR=0, OPCODE=QUERY, RD always set: the answer goes into a cache shared by every
        // client, so one client's RD=0 must not fill it with a non-recursive answer (the
        // client's own RD is still echoed in its answer). AD and CD as asked (RFC 6840
        // §5.7, §5.9).
        let flags3 = 0x01;
        let flags4 =
            if self.authentic_data { 0x20 } else { 0 } | if self.checking_disabled { 0x10 } else { 0 };
        // QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 1 (the OPT).
        wire.extend_from_slice(&[flags3, flags4, 0, 1, 0, 0, 0, 0, 0, 1]);
        for label in name.iter() {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label);
        }
        wire.push(0);
        wire.extend_from_slice(&u16::from(self.query.query_type()).to_be_bytes());
        wire.extend_from_slice(&u16::from(self.query.query_class()).to_be_bytes());
        // RFC 7828 §3.2.1: on TCP we may ask for the server's idle timeout, with no TIMEOUT
        // of our own (every upstream transport here is TCP or TLS over TCP). The padding
        // option's own 4 octets count towards the block (RFC 7830 §3).
        let unpadded = wire.len() + OPT_FIXED_LEN + keepalive_len;
        let fill = pad.then(|| {
            (unpadded + OPTION_HEADER_LEN).div_ceil(QUERY_PADDING_BLOCK) * QUERY_PADDING_BLOCK
                - unpadded
                - OPTION_HEADER_LEN
        });
        let rdlen = keepalive_len + fill.map_or(0, |f| OPTION_HEADER_LEN + f);
        wire.push(0); // owner: the root
        wire.extend_from_slice(&crate::wire::TYPE_OPT.to_be_bytes());
        wire.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        // TTL: extended RCODE 0, version 0, DO copied (RFC 3225 §3), the other flags 0.
        wire.extend_from_slice(&[0, 0, if self.dnssec_ok() { 0x80 } else { 0 }, 0]);
        wire.extend_from_slice(&(rdlen as u16).to_be_bytes());
        if keepalive {
            wire.extend_from_slice(&u16::from(EdnsCode::Keepalive).to_be_bytes());
            wire.extend_from_slice(&[0, 0]);
        }
        if let Some(fill) = fill {
            wire.extend_from_slice(&u16::from(EdnsCode::Padding).to_be_bytes());
            wire.extend_from_slice(&(fill as u16).to_be_bytes());
            wire.resize(wire.len() + fill, 0);
        }
        wire
    }

    /// The answer for this client, from a parsed upstream answer (shared by every client
    /// whose identical question was coalesced into one upstream query).
    pub fn answer_from_upstream(&self, upstream: &Message) -> Message {
        let mut msg = upstream.clone();
        msg.metadata.id = self.id;
        msg.queries = vec![self.query.clone()];
        // RFC 1035 §4.1.1: RD is copied from the query (upstream was asked with RD=1).
        msg.metadata.recursion_desired = self.recursion_desired;
        // RFC 1035 §4.1.1, RFC 2181 §5.4.1: a forwarder's answer is never authoritative.
        msg.metadata.authoritative = false;
        msg.metadata.checking_disabled = self.checking_disabled;
        // RFC 6840 §5.8: AD only for a client that asked with DO or AD.
        if !self.dnssec_ok() && !self.authentic_data {
            msg.metadata.authentic_data = false;
        }
        msg.edns = self.response_edns();
        // RFC 4035 §3.2.1: a DO=0 client gets no DNSSEC records it did not ask for.
        msg.maybe_strip_dnssec_records(self.dnssec_ok())
    }

    /// An answer with no records and `rcode`, e.g. SERVFAIL when every upstream failed.
    pub fn error_answer(&self, rcode: ResponseCode) -> Message {
        let mut msg = Message::new(self.id, MessageType::Response, OpCode::Query);
        msg.metadata = Metadata::response_from_request(&msg.metadata);
        msg.metadata.recursion_desired = self.recursion_desired;
        msg.metadata.recursion_available = true;
        msg.metadata.checking_disabled = self.checking_disabled;
        msg.metadata.response_code = rcode;
        msg.add_query(self.query.clone());
        msg.edns = self.response_edns();
        msg
    }

    /// The OPT for our answer: only when the client sent one (RFC 6891 §7), DO copied
    /// (RFC 3225 §3), and no padding on the cleartext loopback hop (RFC 7830 §6).
    pub fn response_edns(&self) -> Option<Edns> {
        self.edns.map(|e| response_opt(e.dnssec_ok))
    }
}

/// A fresh OPT for an answer to a client: our own UDP payload size (RFC 6891 §6.2.3 and
/// §6.2.5: a responder advertises what it can take, not an echo of the requester's),
/// version 0 and the DO bit copied from the query (RFC 3225 §3).
pub fn response_opt(dnssec_ok: bool) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    edns.set_dnssec_ok(dnssec_ok);
    edns
}

/// Parses an upstream answer; also returns the server's edns-tcp-keepalive TIMEOUT
/// (RFC 7828 §3.2.2, in units of 100 ms), when it sent one.
///
/// The upstream's OPT is read by our own walker and left out of hickory's parse: it is
/// per hop and never reaches a client (RFC 6891 §6.2.6), and a padded answer (RFC 8467)
/// carries hundreds of octets of padding that hickory 0.26 reads one octet at a time
/// (a tenth of a cache miss's CPU in the profile). The returned message then has no
/// EDNS. Anything the walker does not take (an extended RCODE, an OPT that is not the
/// last record) is parsed whole by hickory.
pub fn parse_upstream(wire: &[u8]) -> Result<(Message, Option<Duration>), AnswerError> {
    let (msg, keepalive) = match crate::wire::scan(wire) {
        Ok(crate::wire::Scanned { opt: Some(opt), .. })
            if opt.span.1 == wire.len() && opt.ext_rcode == 0 && opt.version == 0 =>
        {
            let mut without_opt = wire[..opt.span.0].to_vec();
            let arcount = u16::from_be_bytes([without_opt[10], without_opt[11]]) - 1;
            without_opt[10..12].copy_from_slice(&arcount.to_be_bytes());
            let msg = Message::from_vec(&without_opt).map_err(|e| AnswerError(e.to_string()))?;
            let keepalive = crate::wire::edns_option(wire, &opt, u16::from(EdnsCode::Keepalive));
            (msg, keepalive.and_then(keepalive_timeout))
        }
        _ => {
            let msg = Message::from_vec(wire).map_err(|e| AnswerError(e.to_string()))?;
            let keepalive = msg.edns.as_ref().and_then(|e| match e.option(EdnsCode::Keepalive) {
                Some(EdnsOption::Unknown(_, data)) => keepalive_timeout(data),
                _ => None,
            });
            (msg, keepalive)
        }
    };
    if msg.metadata.message_type != MessageType::Response {
        return Err(AnswerError("upstream sent a query, not an answer".into()));
    }
    Ok((msg, keepalive))
}

/// The TIMEOUT of an edns-tcp-keepalive option from a server (RFC 7828 §3.1).
fn keepalive_timeout(data: &[u8]) -> Option<Duration> {
    match data {
        &[high, low] => Some(Duration::from_millis(u64::from(u16::from_be_bytes([high, low])) * 100)),
        _ => None,
    }
}

/// Extended DNS Error codes we send (RFC 8914 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ede {
    Other = 0,
    StaleAnswer = 3,
    NoReachableAuthority = 22,
    NetworkError = 23,
}

/// Adds an EDE option to an answer for an EDNS client (RFC 8914 §2: never without OPT).
pub fn add_ede(msg: &mut Message, code: Ede, text: &str) {
    let Some(edns) = msg.edns.as_mut() else {
        return;
    };
    // Keep EXTRA-TEXT short: it is diagnostic only, and must not push answers into TC.
    let text = shorten_list(text, EDE_TEXT_MAX);
    let mut data = (code as u16).to_be_bytes().to_vec();
    data.extend_from_slice(text.as_bytes());
    edns.options_mut().insert(EdnsOption::Unknown(EDNS_OPTION_EDE, data));
}

/// The most octets of EDE EXTRA-TEXT we send.
pub const EDE_TEXT_MAX: usize = 200;

/// `text`, a list of items joined by ", " with an optional trailing " (…)" note, made
/// to fit in `max` octets: whole items are dropped from the end and counted
/// ("…, and 3 more"), the note is kept. Only an item too long to fit alone is cut, at a
/// space where there is one, and marked with "…". Never cuts inside a UTF-8 character.
pub fn shorten_list(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    // A short trailing note that is not itself a list, e.g. "(racing again in 512 ms)".
    let (body, note) = match text.rfind(" (") {
        Some(at) if text.ends_with(')') && !text[at..].contains(", ") && text.len() - at <= max / 4 => {
            text.split_at(at)
        }
        _ => (text, ""),
    };
    let items: Vec<&str> = body.split(", ").collect();
    let more = |left: usize| if left == 0 { String::new() } else { format!(", and {left} more") };
    for keep in (1..items.len()).rev() {
        let shown = items[..keep].join(", ");
        let out = format!("{shown}{}{note}", more(items.len() - keep));
        if out.len() <= max {
            return Cow::Owned(out);
        }
    }
    // Even the first item does not fit with the rest's count: cut it.
    const ELLIPSIS: &str = "…";
    let tail = format!("{ELLIPSIS}{}{note}", more(items.len() - 1));
    let room = max.saturating_sub(tail.len());
    let first = items[0];
    let mut cut = room.min(first.len());
    while !first.is_char_boundary(cut) {
        cut -= 1;
    }
    let cut = first[..cut].rfind(' ').filter(|&at| at > 0).unwrap_or(cut);
    let out = format!("{}{tail}", &first[..cut]);
    // A note longer than max / 4 is never kept, so this only trims a pathological max.
    Cow::Owned(if out.len() <= max { out } else { truncate_utf8(&out, max).to_owned() })
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut cut = max.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// An upstream answer that cannot be parsed or is not an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad upstream answer: {0}")]
pub struct AnswerError(pub String);

/// The minimal truncated form of `answer` (RFC 6891 §7, RFC 2181 §9): header with TC,
/// the question and the OPT; the client retries over TCP.
pub fn truncated(answer: &Message) -> Message {
    answer.truncate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RecordType};

    fn query(edns: Option<ClientEdns>) -> ClientQuery {
        ClientQuery {
            id: 0x1234,
            query: Query::query(Name::from_ascii("MiXed.Example.").unwrap(), RecordType::A),
            recursion_desired: true,
            checking_disabled: true,
            authentic_data: false,
            edns,
            bypass_cache: false,
        }
    }

    #[test]
    fn upstream_query_is_padded_to_the_block_with_a_fresh_opt() {
        let q = query(Some(ClientEdns { dnssec_ok: true, max_payload: 4096 }));
        let wire = q.upstream_wire(true);
        assert_eq!(wire.len() % QUERY_PADDING_BLOCK, 0);
        let msg = Message::from_vec(&wire).unwrap();
        let edns = msg.edns.unwrap();
        assert_eq!(edns.max_payload(), EDNS_PAYLOAD);
        assert!(edns.flags().dnssec_ok);
        assert!(edns.option(EdnsCode::Padding).is_some());
        assert!(msg.metadata.checking_disabled);
        assert_eq!(msg.queries[0].name().to_ascii(), "MiXed.Example.");
    }

    #[test]
    fn a_doh_query_is_padded_to_the_block_without_the_tcp_keepalive_option() {
        for name in
            ["a.", "MiXed.Example.", "a-rather-long-label-to-cross-one-block.and-another-one.example."]
        {
            let mut q = query(Some(ClientEdns { dnssec_ok: false, max_payload: 1232 }));
            q.query = Query::query(Name::from_ascii(name).unwrap(), RecordType::A);
            let wire = q.upstream_wire_with(true, false);
            assert_eq!(wire.len() % QUERY_PADDING_BLOCK, 0, "{name}");
            let edns = Message::from_vec(&wire).unwrap().edns.unwrap();
            assert!(edns.option(EdnsCode::Padding).is_some(), "{name}");
            assert!(edns.option(EdnsCode::Keepalive).is_none(), "{name}: RFC 7828 is not for HTTP/2");
            let dot = Message::from_vec(&q.upstream_wire(true)).unwrap().edns.unwrap();
            assert!(dot.option(EdnsCode::Keepalive).is_some(), "{name}: DoT still asks");
        }
    }

    #[test]
    fn upstream_query_reads_back_as_the_client_asked() {
        for (rd, cd, ad, dnssec_ok, pad) in [
            (true, false, false, false, true),
            (false, true, true, true, false),
            (true, true, false, true, true),
        ] {
            let mut q = query(Some(ClientEdns { dnssec_ok, max_payload: 1400 }));
            (q.recursion_desired, q.checking_disabled, q.authentic_data) = (rd, cd, ad);
            q.query = Query::query(
                Name::from_ascii("A.Much-Longer.Name.Than-The-Other.Example.").unwrap(),
                RecordType::AAAA,
            );
            let wire = q.upstream_wire(pad);
            let msg = Message::from_vec(&wire).unwrap();
            assert_eq!(msg.metadata.id, 0x1234);
            assert_eq!(msg.metadata.message_type, MessageType::Query);
            assert_eq!(msg.metadata.op_code, OpCode::Query);
            // RD is always asked for, whatever the client set: the cache is shared.
            assert_eq!(
                (msg.metadata.recursion_desired, msg.metadata.checking_disabled, msg.metadata.authentic_data),
                (true, cd, ad)
            );
            assert_eq!(msg.queries, vec![q.query.clone()]);
            assert_eq!(msg.queries[0].name().to_ascii(), "A.Much-Longer.Name.Than-The-Other.Example.");
            assert!(msg.answers.is_empty() && msg.authorities.is_empty() && msg.additionals.is_empty());
            let edns = msg.edns.unwrap();
            assert_eq!(
                (edns.max_payload(), edns.flags().dnssec_ok, edns.version()),
                (EDNS_PAYLOAD, dnssec_ok, 0)
            );
            assert!(
                matches!(edns.option(EdnsCode::Keepalive), Some(EdnsOption::Unknown(_, d)) if d.is_empty())
            );
            assert_eq!(edns.option(EdnsCode::Padding).is_some(), pad);
            assert_eq!(wire.len() % QUERY_PADDING_BLOCK == 0, pad);
        }
    }

    #[test]
    fn an_upstream_answer_loses_aa_and_echoes_the_clients_rd() {
        let mut upstream = Message::new(7, MessageType::Response, OpCode::Query);
        upstream.add_query(Query::query(Name::from_ascii("mixed.example.").unwrap(), RecordType::A));
        upstream.metadata.authoritative = true;
        upstream.metadata.recursion_desired = true;
        let mut q = query(None);
        q.recursion_desired = false;
        let answer = q.answer_from_upstream(&upstream);
        assert!(!answer.metadata.authoritative, "RFC 1035 §4.1.1: we are no authority");
        assert!(!answer.metadata.recursion_desired, "the client's RD=0, not upstream's RD=1");
    }

    #[test]
    fn errors_from_here_advertise_our_payload_size_and_copy_do() {
        let q = query(Some(ClientEdns { dnssec_ok: true, max_payload: 4096 }));
        let edns = q.error_answer(ResponseCode::ServFail).edns.unwrap();
        assert_eq!((edns.max_payload(), edns.flags().dnssec_ok), (EDNS_PAYLOAD, true));
    }

    #[test]
    fn plain_upstream_query_is_never_padded() {
        let wire = query(None).upstream_wire(false);
        let msg = Message::from_vec(&wire).unwrap();
        assert!(msg.edns.unwrap().option(EdnsCode::Padding).is_none());
    }

    #[test]
    fn answers_carry_opt_only_for_edns_clients() {
        let mut upstream = Message::new(7, MessageType::Response, OpCode::Query);
        upstream.add_query(Query::query(Name::from_ascii("mixed.example.").unwrap(), RecordType::A));
        let mut edns = Edns::new();
        edns.options_mut().insert(EdnsOption::Unknown(12, vec![0; 40]));
        upstream.set_edns(edns);
        let wire = upstream.to_vec().unwrap();

        let (parsed, _) = parse_upstream(&wire).unwrap();
        let plain = query(None).answer_from_upstream(&parsed);
        assert!(plain.edns.is_none());
        assert_eq!(plain.metadata.id, 0x1234);
        assert_eq!(plain.queries[0].name().to_ascii(), "MiXed.Example.");

        let with =
            query(Some(ClientEdns { dnssec_ok: false, max_payload: 1400 })).answer_from_upstream(&parsed);
        let opt = with.edns.unwrap();
        assert!(opt.option(EdnsCode::Padding).is_none(), "padding stripped on loopback");
        assert_eq!(opt.max_payload(), EDNS_PAYLOAD, "our own payload size, not the client's 1400");
    }

    fn upstream_answer(options: Vec<EdnsOption>, rcode: ResponseCode) -> Vec<u8> {
        use hickory_proto::rr::{RData, Record, rdata::A};
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        let name = Name::from_ascii("p.test.").unwrap();
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 1))));
        let mut edns = Edns::new();
        for o in options {
            edns.options_mut().insert(o);
        }
        m.set_edns(edns);
        // hickory writes the upper bits of an extended RCODE into the OPT.
        m.metadata.response_code = rcode;
        m.to_vec().unwrap()
    }

    #[test]
    fn a_padded_answer_is_parsed_without_its_opt_and_keeps_the_keepalive() {
        let wire = upstream_answer(
            vec![
                EdnsOption::Unknown(u16::from(EdnsCode::Padding), vec![0; 400]),
                EdnsOption::Unknown(u16::from(EdnsCode::Keepalive), vec![0, 150]),
            ],
            ResponseCode::NoError,
        );
        let (msg, keepalive) = parse_upstream(&wire).unwrap();
        assert_eq!(keepalive, Some(Duration::from_secs(15)));
        assert_eq!(msg.answers.len(), 1);
        assert!(msg.edns.is_none(), "the OPT stays out of the parse");
        // A keepalive of the wrong length is ignored, not misread.
        let odd = upstream_answer(
            vec![EdnsOption::Unknown(u16::from(EdnsCode::Keepalive), vec![1])],
            ResponseCode::NoError,
        );
        assert_eq!(parse_upstream(&odd).unwrap().1, None);
    }

    #[test]
    fn an_extended_rcode_is_parsed_whole_by_hickory() {
        let wire = upstream_answer(
            vec![EdnsOption::Unknown(u16::from(EdnsCode::Keepalive), vec![0, 10])],
            ResponseCode::BADVERS,
        );
        let (msg, keepalive) = parse_upstream(&wire).unwrap();
        assert_eq!(keepalive, Some(Duration::from_secs(1)));
        // 16 reads back as BADSIG, which shares the code with BADVERS.
        assert_eq!(u16::from(msg.metadata.response_code), 16);
    }

    #[test]
    fn a_cut_answer_is_an_error_not_a_panic() {
        let wire = upstream_answer(
            vec![EdnsOption::Unknown(u16::from(EdnsCode::Padding), vec![0; 40])],
            ResponseCode::NoError,
        );
        for cut in 0..wire.len() {
            assert!(parse_upstream(&wire[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn udp_limit_follows_rfc_6891() {
        assert_eq!(query(None).udp_limit(), 512);
        assert_eq!(query(Some(ClientEdns { dnssec_ok: false, max_payload: 100 })).udp_limit(), 512);
        assert_eq!(query(Some(ClientEdns { dnssec_ok: false, max_payload: 4096 })).udp_limit(), 4096);
    }

    #[test]
    fn a_long_list_is_shortened_at_an_item_and_says_how_many_are_left_out() {
        let items: Vec<String> = (1..=8).map(|i| format!("[2a01:3a0:53:53::{i}]:853 unreachable")).collect();
        let text = format!("no upstream connection: {} (racing again in 512 ms)", items.join(", "));
        assert!(text.len() > EDE_TEXT_MAX);
        let short = shorten_list(&text, EDE_TEXT_MAX);
        assert!(short.len() <= EDE_TEXT_MAX, "{short}");
        assert!(short.ends_with(" more (racing again in 512 ms)"), "{short}");
        // Whole items only: every one shown ends as it did, the count makes up the rest.
        let (shown, left) =
            short.trim_end_matches(" more (racing again in 512 ms)").rsplit_once(", and ").unwrap();
        let shown: Vec<&str> = shown.trim_start_matches("no upstream connection: ").split(", ").collect();
        assert_eq!(shown, items[..shown.len()].iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(left.parse::<usize>().unwrap(), items.len() - shown.len());
        // Short text is left alone.
        assert_eq!(shorten_list("a, b (c)", EDE_TEXT_MAX), "a, b (c)");
    }

    #[test]
    fn an_item_too_long_alone_is_cut_at_a_space_never_inside_a_character() {
        let text = format!("{} tail, second", "wörd ".repeat(60));
        let short = shorten_list(&text, 50);
        assert!(short.len() <= 50, "{short}");
        assert!(short.ends_with("…, and 1 more"), "{short}");
        assert!(short.starts_with("wörd wörd"), "{short}");
        // Any limit, any text: within the limit and valid UTF-8 (a &str) without a panic.
        for max in 0..60 {
            assert!(shorten_list(&text, max).len() <= max, "max {max}");
        }
    }

    #[test]
    fn the_ede_of_an_answer_is_shortened_at_an_item() {
        let q = query(Some(ClientEdns { dnssec_ok: false, max_payload: 1232 }));
        let mut msg = q.error_answer(ResponseCode::ServFail);
        let text = (1..=20).map(|i| format!("192.0.2.{i}:853 rst")).collect::<Vec<_>>().join(", ");
        add_ede(&mut msg, Ede::NetworkError, &text);
        let wire = msg.to_vec().unwrap();
        let parsed = Message::from_vec(&wire).unwrap();
        let Some(EdnsOption::Unknown(_, data)) =
            parsed.edns.as_ref().unwrap().option(EdnsCode::Unknown(EDNS_OPTION_EDE))
        else {
            panic!("no EDE");
        };
        let extra = std::str::from_utf8(&data[2..]).unwrap();
        assert!(extra.len() <= EDE_TEXT_MAX && extra.ends_with(" more"), "{extra}");
        assert!(extra.split(", ").all(|item| item.ends_with(" rst") || item.starts_with("and ")), "{extra}");
    }
}
