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
    pub fn upstream_wire(&self, pad: bool) -> Vec<u8> {
        let mut msg = Message::new(self.id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = self.recursion_desired;
        msg.metadata.checking_disabled = self.checking_disabled;
        msg.metadata.authentic_data = self.authentic_data;
        msg.add_query(self.query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        edns.set_dnssec_ok(self.dnssec_ok());
        // RFC 7828 §3.2.1: on TCP we may ask for the server's idle timeout, with no TIMEOUT
        // of our own (every upstream transport here is TCP or TLS over TCP).
        edns.options_mut().insert(EdnsOption::Unknown(u16::from(EdnsCode::Keepalive), Vec::new()));
        msg.set_edns(edns);
        let wire = msg.to_vec().expect("a one-question query always encodes");
        if !pad {
            return wire;
        }
        // The padding option itself costs 4 octets of header (RFC 7830 §3).
        let padded = (wire.len() + 4).div_ceil(QUERY_PADDING_BLOCK) * QUERY_PADDING_BLOCK;
        let fill = padded - wire.len() - 4;
        if let Some(edns) = msg.edns.as_mut() {
            edns.options_mut().insert(EdnsOption::Unknown(u16::from(EdnsCode::Padding), vec![0; fill]));
        }
        msg.to_vec().expect("a padded one-question query always encodes")
    }

    /// The answer for this client, from a parsed upstream answer (shared by every client
    /// whose identical question was coalesced into one upstream query).
    pub fn answer_from_upstream(&self, upstream: &Message) -> Message {
        let mut msg = upstream.clone();
        msg.metadata.id = self.id;
        msg.queries = vec![self.query.clone()];
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
        self.edns.map(|e| {
            let mut edns = Edns::new();
            edns.set_max_payload(e.max_payload.clamp(CLASSIC_UDP_LIMIT, u16::MAX));
            edns.set_dnssec_ok(e.dnssec_ok);
            edns
        })
    }
}

/// Parses an upstream answer; also returns the server's edns-tcp-keepalive TIMEOUT
/// (RFC 7828 §3.2.2, in units of 100 ms), when it sent one.
pub fn parse_upstream(wire: &[u8]) -> Result<(Message, Option<Duration>), AnswerError> {
    let msg = Message::from_vec(wire).map_err(|e| AnswerError(e.to_string()))?;
    if msg.metadata.message_type != MessageType::Response {
        return Err(AnswerError("upstream sent a query, not an answer".into()));
    }
    let keepalive = msg.edns.as_ref().and_then(|e| match e.option(EdnsCode::Keepalive) {
        Some(EdnsOption::Unknown(_, data)) if data.len() == 2 => {
            Some(Duration::from_millis(u64::from(u16::from_be_bytes([data[0], data[1]])) * 100))
        }
        _ => None,
    });
    Ok((msg, keepalive))
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
    let text = match text.char_indices().nth(200) {
        Some((cut, _)) => &text[..cut],
        None => text,
    };
    let mut data = (code as u16).to_be_bytes().to_vec();
    data.extend_from_slice(text.as_bytes());
    edns.options_mut().insert(EdnsOption::Unknown(15, data));
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
        assert_eq!(opt.max_payload(), 1400);
    }

    #[test]
    fn udp_limit_follows_rfc_6891() {
        assert_eq!(query(None).udp_limit(), 512);
        assert_eq!(query(Some(ClientEdns { dnssec_ok: false, max_payload: 100 })).udp_limit(), 512);
        assert_eq!(query(Some(ClientEdns { dnssec_ok: false, max_payload: 4096 })).udp_limit(), 4096);
    }
}
