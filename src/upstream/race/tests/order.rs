//! `order_candidates` (RFC 8305 §4).

use super::*;

// order_candidates

fn up(upstream: usize, addresses: &[IpAddr], allow_plain: bool) -> UpstreamAddrs<'_> {
    UpstreamAddrs { upstream, addresses, tls_port: 853, plain_port: 53, https_port: None, allow_plain }
}

fn addrs_of(group: &[Candidate]) -> Vec<String> {
    group.iter().map(|c| c.addr.to_string()).collect()
}

#[test]
fn order_interleaves_ipv6_first_fafc_one() {
    let addrs = [ip("192.0.2.1"), ip("2001:db8::1"), ip("192.0.2.2"), ip("2001:db8::2")];
    let (t, p) = order_candidates(&[up(0, &addrs, false)], None);
    assert_eq!(addrs_of(&t), [V6A, V4A, V6B, V4B]);
    assert!(p.is_empty());
}

#[test]
fn order_unequal_family_counts() {
    let more_v6 = [ip("2001:db8::1"), ip("2001:db8::2"), ip("2001:db8::3"), ip("192.0.2.1")];
    let (t, _) = order_candidates(&[up(0, &more_v6, false)], None);
    assert_eq!(addrs_of(&t), [V6A, V4A, V6B, "[2001:db8::3]:853"]);
    let more_v4 = [ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"), ip("2001:db8::1")];
    let (t, _) = order_candidates(&[up(0, &more_v4, false)], None);
    assert_eq!(addrs_of(&t), [V6A, V4A, V4B, V4C]);
    let only_v4 = [ip("192.0.2.2"), ip("192.0.2.1")];
    let (t, _) = order_candidates(&[up(0, &only_v4, false)], None);
    assert_eq!(addrs_of(&t), [V4B, V4A]);
    let (t, p) = order_candidates(&[up(0, &[], true)], None);
    assert!(t.is_empty() && p.is_empty());
}

#[test]
fn order_ipv4_mapped_counts_as_ipv4() {
    let addrs = [ip("::ffff:192.0.2.9"), ip("2001:db8::1")];
    let (t, _) = order_candidates(&[up(0, &addrs, false)], None);
    assert_eq!(addrs_of(&t), [V6A, "[::ffff:192.0.2.9]:853"]);
}

#[test]
fn order_keeps_upstream_order_and_per_upstream_policy() {
    let strict = [ip("2001:db8::1"), ip("192.0.2.1")];
    let opportunistic = [ip("192.0.2.2")];
    let (t, p) = order_candidates(&[up(1, &opportunistic, true), up(0, &strict, false)], None);
    assert_eq!(t, vec![tls(1, V4B), tls(0, V6A), tls(0, V4A)]);
    assert_eq!(p, vec![plain(1, "192.0.2.2:53")]);
    assert!(p.iter().all(|c| c.transport == Transport::Plain));
}

#[test]
fn order_uses_the_given_ports() {
    let addrs = [ip("192.0.2.1")];
    let u = UpstreamAddrs {
        upstream: 3,
        addresses: &addrs,
        tls_port: 8853,
        plain_port: 5353,
        https_port: None,
        allow_plain: true,
    };
    let (t, p) = order_candidates(&[u], None);
    assert_eq!(t, vec![tls(3, "192.0.2.1:8853")]);
    assert_eq!(p, vec![plain(3, "192.0.2.1:5353")]);
}

#[test]
fn order_last_winner_first_if_present() {
    let a0 = [ip("2001:db8::1"), ip("192.0.2.1")];
    let a1 = [ip("2001:db8::2"), ip("192.0.2.2")];
    let ups = [up(0, &a0, true), up(1, &a1, true)];
    let (t, _) = order_candidates(&ups, Some(tls(1, V4B)));
    assert_eq!(t, vec![tls(1, V4B), tls(0, V6A), tls(0, V4A), tls(1, V6B)]);
    // Gone since (not among the candidates any more): normal order.
    let (t, _) = order_candidates(&ups, Some(tls(2, V4C)));
    assert_eq!(t, vec![tls(0, V6A), tls(0, V4A), tls(1, V6B), tls(1, V4B)]);
    // A plain winner leads the plain group, never the TLS group.
    let (t, p) = order_candidates(&ups, Some(plain(0, "192.0.2.1:53")));
    assert_eq!(t[0], tls(0, V6A));
    assert_eq!(
        p,
        vec![
            plain(0, "192.0.2.1:53"),
            plain(0, "[2001:db8::1]:53"),
            plain(1, "[2001:db8::2]:53"),
            plain(1, "192.0.2.2:53"),
        ]
    );
}

#[test]
fn order_drops_duplicates() {
    let addrs = [ip("192.0.2.1"), ip("192.0.2.1"), ip("2001:db8::1")];
    let (t, p) = order_candidates(&[up(0, &addrs, true), up(0, &addrs, true)], None);
    assert_eq!(t, vec![tls(0, V6A), tls(0, V4A)]);
    assert_eq!(p.len(), 2);
    // Duplicates must not break the alternation (dropped before interleaving).
    let addrs = [ip("192.0.2.1"), ip("192.0.2.1"), ip("2001:db8::1"), ip("2001:db8::2"), ip("192.0.2.2")];
    let (t, _) = order_candidates(&[up(0, &addrs, false)], None);
    assert_eq!(addrs_of(&t), [V6A, V4A, V6B, V4B]);
}

fn https(upstream: usize, addr: &str) -> Candidate {
    Candidate { upstream, addr: addr.parse().unwrap(), transport: Transport::Https }
}

#[test]
fn order_puts_each_addresss_doh_right_after_its_dot() {
    let addrs = [ip("192.0.2.1"), ip("2001:db8::1")];
    let with_doh = UpstreamAddrs { https_port: Some(443), ..up(0, &addrs, true) };
    let (t, p) = order_candidates(&[with_doh, up(1, &[ip("192.0.2.2")], false)], None);
    assert_eq!(
        t,
        vec![tls(0, V6A), https(0, "[2001:db8::1]:443"), tls(0, V4A), https(0, "192.0.2.1:443"), tls(1, V4B),]
    );
    // DoH is encrypted: it never lands in the plain group, whatever the mode.
    assert!(p.iter().all(|c| c.transport == Transport::Plain));
}

#[test]
fn order_a_doh_winner_leads_the_next_race() {
    let addrs = [ip("2001:db8::1"), ip("192.0.2.1")];
    let u = UpstreamAddrs { https_port: Some(443), ..up(0, &addrs, false) };
    let (t, _) = order_candidates(&[u], Some(https(0, "192.0.2.1:443")));
    assert_eq!(t[0], https(0, "192.0.2.1:443"), "the transport that won starts the next race");
    assert_eq!(t[1..], [tls(0, V6A), https(0, "[2001:db8::1]:443"), tls(0, V4A)]);
}
