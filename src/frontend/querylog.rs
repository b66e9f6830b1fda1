//! The query log (`[log] queries = true`): one line per answered client query, with its
//! name, type, rcode, latency and where the answer came from (an upstream connection,
//! `cache`, `stale`, `local` for answers the front end gives itself, `none` for SERVFAIL).
//!
//! Off by default, for privacy: the names a host asks for are personal data. When off,
//! the only cost on a query is the relaxed load of the flag and one branch; the clock is
//! not even read.

use std::{fmt::Display, net::SocketAddr};

use hickory_proto::op::{Message, Query};
use tokio::time::Instant;
use tracing::info;

use crate::metrics::{ClientTransport, RCODE_LABELS, rcode_bucket};

/// The log target, so the query log can be filtered (RUST_LOG=stubborn::query=off) or
/// routed apart from the daemon's own lines.
pub const TARGET: &str = "stubborn::query";

/// The RCODE's name, from an answer's header bits (or "RCODEn" when it has no label).
pub fn rcode_name(wire: &[u8]) -> String {
    match wire.get(3) {
        Some(b) => {
            let rcode = u16::from(b & 0x0f);
            match RCODE_LABELS[rcode_bucket(rcode)] {
                "other" => format!("RCODE{rcode}"),
                name => name.to_owned(),
            }
        }
        None => "none".to_owned(),
    }
}

/// Logs one answered query.
pub fn log(
    transport: ClientTransport,
    client: SocketAddr,
    question: &Query,
    rcode: &str,
    via: &dyn Display,
    started: Instant,
) {
    info!(
        target: TARGET,
        transport = %transport.as_str(),
        client = %client.ip(),
        name = %question.name(),
        qtype = %question.query_type(),
        rcode = %rcode,
        latency_us = started.elapsed().as_micros() as u64,
        via = %via,
        "query"
    );
}

/// Logs an answer the front end gave itself (REFUSED, FORMERR, NOTIMP, BADVERS,
/// resolver.arpa): its question and full RCODE come from the parsed reply.
pub fn log_local(transport: ClientTransport, client: SocketAddr, reply: &Message, started: Instant) {
    let rcode = u16::from(reply.metadata.response_code);
    let rcode = match RCODE_LABELS[rcode_bucket(rcode)] {
        "other" => format!("RCODE{rcode}"),
        name => name.to_owned(),
    };
    match reply.queries.first() {
        Some(question) => log(transport, client, question, &rcode, &"local", started),
        None => info!(
            target: TARGET,
            transport = %transport.as_str(),
            client = %client.ip(),
            name = %"-",
            qtype = %"-",
            rcode = %rcode,
            latency_us = started.elapsed().as_micros() as u64,
            via = %"local",
            "query"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcode_names_come_from_the_header() {
        let mut wire = [0u8; 12];
        assert_eq!(rcode_name(&wire), "NOERROR");
        wire[3] = 0x82;
        assert_eq!(rcode_name(&wire), "SERVFAIL");
        wire[3] = 0x09;
        assert_eq!(rcode_name(&wire), "RCODE9");
        assert_eq!(rcode_name(&[]), "none");
    }
}
