//! Candidate ordering for a race (RFC 8305 §4), kept apart from the timing logic.
//! Pure: takes already-resolved addresses, never resolves or connects.

use std::net::{IpAddr, SocketAddr};

use super::{Candidate, Transport};

/// One upstream's resolved endpoints, as input to [`order_candidates`].
#[derive(Clone, Copy, Debug)]
pub struct UpstreamAddrs<'a> {
    /// Index of the upstream in the caller's configuration.
    pub upstream: usize,
    /// Its addresses, in the caller's preference order (e.g. RFC 6724 sorted).
    pub addresses: &'a [IpAddr],
    /// Port for DNS over TLS (normally 853).
    pub tls_port: u16,
    /// Port for DNS over plain TCP (normally 53).
    pub plain_port: u16,
    /// Port for DNS over HTTPS (normally 443), if the upstream serves it.
    pub https_port: Option<u16>,
    /// Whether policy allows plain text for this upstream (`opportunistic`).
    /// `strict` upstreams pass `false` and never yield a plain candidate.
    pub allow_plain: bool,
}

/// Build the two candidate groups of a race: `(tls, plain)`.
///
/// Upstreams keep the given order (the caller passes them in health/config
/// order); inside one upstream the addresses are interleaved by family, IPv6
/// first, First Address Family Count 1 (RFC 8305 §4), each family keeping its
/// given order. An address's DoH candidate follows its DoT one: DoT stays first,
/// and where 853 is dropped, 443 on the same server starts one attempt delay later
/// (RFC 8305 §5), before the next address. `last_winner`, if it is still among the candidates, moves to the
/// front of its group. Plain candidates exist only for upstreams with
/// `allow_plain`. Exact duplicates are dropped (first occurrence kept).
#[must_use]
pub fn order_candidates(
    upstreams: &[UpstreamAddrs<'_>],
    last_winner: Option<Candidate>,
) -> (Vec<Candidate>, Vec<Candidate>) {
    let mut tls = Vec::new();
    let mut plain = Vec::new();
    for up in upstreams {
        for ip in interleave_families(up.addresses) {
            push_unique(
                &mut tls,
                Candidate {
                    upstream: up.upstream,
                    addr: SocketAddr::new(ip, up.tls_port),
                    transport: Transport::Tls,
                },
            );
            if let Some(port) = up.https_port {
                push_unique(
                    &mut tls,
                    Candidate {
                        upstream: up.upstream,
                        addr: SocketAddr::new(ip, port),
                        transport: Transport::Https,
                    },
                );
            }
            if up.allow_plain {
                push_unique(
                    &mut plain,
                    Candidate {
                        upstream: up.upstream,
                        addr: SocketAddr::new(ip, up.plain_port),
                        transport: Transport::Plain,
                    },
                );
            }
        }
    }
    if let Some(winner) = last_winner {
        // A connection that just worked is the best predictor of the next one.
        // A DoH winner too: where 853 was dropped, the next race starts on 443.
        let list = if winner.transport.is_encrypted() { &mut tls } else { &mut plain };
        if let Some(pos) = list.iter().position(|c| *c == winner) {
            list[..=pos].rotate_right(1);
        }
    }
    (tls, plain)
}

/// RFC 8305 §4: alternate the families so one broken family costs at most one
/// attempt delay before the other family is tried. IPv4-mapped IPv6 addresses
/// count as IPv4, since that is what they reach. Duplicates go first, or they
/// would leave two of one family side by side.
fn interleave_families(addresses: &[IpAddr]) -> Vec<IpAddr> {
    let mut distinct: Vec<IpAddr> = Vec::with_capacity(addresses.len());
    for ip in addresses {
        if !distinct.contains(ip) {
            distinct.push(*ip);
        }
    }
    let (v6, v4): (Vec<IpAddr>, Vec<IpAddr>) =
        distinct.into_iter().partition(|ip| ip.to_canonical().is_ipv6());
    let mut out = Vec::with_capacity(addresses.len());
    let (mut v6, mut v4) = (v6.into_iter(), v4.into_iter());
    loop {
        match (v6.next(), v4.next()) {
            (None, None) => break,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
    out
}

fn push_unique(list: &mut Vec<Candidate>, candidate: Candidate) {
    if !list.contains(&candidate) {
        list.push(candidate);
    }
}
