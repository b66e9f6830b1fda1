use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};
use proptest::prelude::*;

use super::*;
use crate::message::{ClientEdns, ClientQuery};

fn zones() -> LocalZones {
    LocalZones::standard()
}

fn kind_of(name: &str) -> Option<(ZoneKind, String, bool)> {
    let zones = zones();
    let name = Name::from_ascii(name).unwrap();
    zones.zone_of(&name).map(|(z, apex)| (z.kind, z.apex.to_ascii(), apex))
}

#[test]
fn names_under_each_zone_match_and_siblings_do_not() {
    for (name, apex) in [
        ("localhost.", "localhost."),
        ("foo.localhost.", "localhost."),
        ("a.b.LocalHost.", "localhost."),
        ("invalid.", "invalid."),
        ("x.invalid.", "invalid."),
        ("printer.local.", "local."),
        ("duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion.", "onion."),
        ("router.home.arpa.", "home.arpa."),
        ("1.0.0.10.in-addr.arpa.", "10.in-addr.arpa."),
        ("1.1.16.172.in-addr.arpa.", "16.172.in-addr.arpa."),
        ("1.1.31.172.in-addr.arpa.", "31.172.in-addr.arpa."),
        ("5.1.168.192.IN-ADDR.ARPA.", "168.192.in-addr.arpa."),
        ("1.0.64.100.in-addr.arpa.", "64.100.in-addr.arpa."),
        ("1.0.127.100.in-addr.arpa.", "127.100.in-addr.arpa."),
        ("1.0.0.127.in-addr.arpa.", "127.in-addr.arpa."),
        ("1.1.254.169.in-addr.arpa.", "254.169.in-addr.arpa."),
        ("1.0.0.0.in-addr.arpa.", "0.in-addr.arpa."),
        ("7.2.0.192.in-addr.arpa.", "2.0.192.in-addr.arpa."),
        ("7.100.51.198.in-addr.arpa.", "100.51.198.in-addr.arpa."),
        ("7.113.0.203.in-addr.arpa.", "113.0.203.in-addr.arpa."),
        ("255.255.255.255.in-addr.arpa.", "255.255.255.255.in-addr.arpa."),
        ("1.2.3.d.f.ip6.arpa.", "d.f.ip6.arpa."),
        ("0.8.e.f.ip6.arpa.", "8.e.f.ip6.arpa."),
        ("B.E.F.ip6.arpa.", "b.e.f.ip6.arpa."),
        ("1.8.b.d.0.1.0.0.2.ip6.arpa.", "8.b.d.0.1.0.0.2.ip6.arpa."),
    ] {
        assert_eq!(kind_of(name).map(|k| k.1), Some(apex.to_owned()), "{name}");
    }
    for name in [
        ".",
        "arpa.",
        "in-addr.arpa.",
        "ip6.arpa.",
        "172.in-addr.arpa.",
        "1.1.15.172.in-addr.arpa.",
        "1.1.32.172.in-addr.arpa.",
        "1.0.63.100.in-addr.arpa.",
        "1.0.128.100.in-addr.arpa.",
        "100.in-addr.arpa.",
        "192.in-addr.arpa.",
        "1.1.169.192.in-addr.arpa.",
        "1.1.1.1.in-addr.arpa.",
        "11.in-addr.arpa.",
        "254.255.255.255.in-addr.arpa.",
        "255.255.255.in-addr.arpa.",
        "c.e.f.ip6.arpa.",
        "7.e.f.ip6.arpa.",
        "e.f.ip6.arpa.",
        "c.f.ip6.arpa.",
        "9.b.d.0.1.0.0.2.ip6.arpa.",
        "localhostx.",
        "xlocalhost.",
        "localhost.example.",
        "localhost.localdomain.",
        "invalid.example.",
        "example.local.example.",
        "home.arpa.example.",
        "homearpa.",
        "arpa.home.",
        "onions.",
        "com.",
        "example.com.",
        "resolver.arpa.",
    ] {
        assert_eq!(kind_of(name), None, "{name}");
    }
}

#[test]
fn the_apex_is_told_apart_from_the_names_below() {
    assert_eq!(kind_of("10.in-addr.arpa."), Some((ZoneKind::Empty, "10.in-addr.arpa.".into(), true)));
    assert_eq!(kind_of("1.10.in-addr.arpa."), Some((ZoneKind::Empty, "10.in-addr.arpa.".into(), false)));
    assert_eq!(kind_of("LOCALHOST."), Some((ZoneKind::Localhost, "localhost.".into(), true)));
    assert_eq!(kind_of("onion."), Some((ZoneKind::NxDomain, "onion.".into(), true)));
}

#[test]
fn the_ipv6_loopback_and_unspecified_names_are_zones_of_their_own() {
    let zeros = "0.".repeat(31);
    let lo = format!("1.{zeros}ip6.arpa.");
    let any = format!("0.{zeros}ip6.arpa.");
    assert_eq!(kind_of(&lo), Some((ZoneKind::Empty, lo.clone(), true)));
    assert_eq!(kind_of(&any), Some((ZoneKind::Empty, any.clone(), true)));
    // ::2 and the /124 above the loopback name are not local.
    assert_eq!(kind_of(&format!("2.{zeros}ip6.arpa.")), None);
    assert_eq!(kind_of(&format!("{}ip6.arpa.", "0.".repeat(31))), None);
}

#[test]
fn no_zones_when_switched_off() {
    let off = LocalZones::new(false);
    assert!(off.is_empty());
    assert!(off.zone_of(&Name::from_ascii("localhost.").unwrap()).is_none());
    assert!(off.answer(&query("localhost.", RecordType::A)).is_none());
    assert!(!LocalZones::new(true).is_empty());
}

#[test]
fn wire_names_are_matched_like_parsed_ones() {
    let zones = zones();
    let wire = |name: &str| {
        let mut out = Vec::new();
        for label in Name::from_ascii(name).unwrap().iter() {
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        }
        out.push(0);
        out
    };
    assert!(zones.covers_wire(&wire("1.168.192.in-addr.arpa.")));
    assert!(zones.covers_wire(&wire("Foo.LocalHost.")));
    assert!(!zones.covers_wire(&wire("example.com.")));
    assert!(!zones.covers_wire(&wire(".")));
    // Cut short: not a name, not ours.
    assert!(!zones.covers_wire(&[9, b'l', b'o', b'c']));
    assert!(!zones.covers_wire(&[]));
}

fn query(name: &str, qtype: RecordType) -> ClientQuery {
    ClientQuery {
        id: 0x1234,
        query: Query::query(Name::from_ascii(name).unwrap(), qtype),
        recursion_desired: true,
        checking_disabled: false,
        authentic_data: false,
        edns: None,
        bypass_cache: false,
    }
}

fn answered(name: &str, qtype: RecordType) -> Message {
    let q = query(name, qtype);
    let wire = zones().answer(&q).unwrap_or_else(|| panic!("{name} answered here")).wire(&q);
    Message::from_vec(&wire).unwrap()
}

/// The SOA in the authority section: (owner, MNAME, RNAME, serial, refresh, retry,
/// expire, minimum, TTL).
fn soa_of(m: &Message) -> (String, String, String, u32, i32, i32, i32, u32, u32) {
    assert_eq!(m.authorities.len(), 1, "one SOA in authority: {m:?}");
    let r = &m.authorities[0];
    let RData::SOA(soa) = &r.data else { panic!("an SOA: {r:?}") };
    (
        r.name.to_ascii(),
        soa.mname.to_ascii(),
        soa.rname.to_ascii(),
        soa.serial,
        soa.refresh,
        soa.retry,
        soa.expire,
        soa.minimum,
        r.ttl,
    )
}

fn rfc6303_soa(zone: &str) -> (String, String, String, u32, i32, i32, i32, u32, u32) {
    (zone.into(), zone.into(), "nobody.invalid.".into(), 1, 3600, 1200, 604_800, 10_800, 10_800)
}

#[test]
fn localhost_answers_the_loopback_addresses_and_nodata_for_the_rest() {
    let m = answered("Www.LocalHost.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::LOCALHOST)));
    assert_eq!(m.answers[0].ttl, LOCAL_TTL);
    assert_eq!(m.queries[0].name().to_ascii(), "Www.LocalHost.", "the client's case echoed");
    let m = answered("localhost.", RecordType::AAAA);
    assert_eq!(m.answers[0].data, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)));
    assert!(m.authorities.is_empty());
    let m = answered("localhost.", RecordType::ANY);
    assert_eq!(m.answers.len(), 2);
    for qtype in [RecordType::MX, RecordType::TXT, RecordType::HTTPS, RecordType::NS, RecordType::SOA] {
        let m = answered("a.localhost.", qtype);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{qtype:?}: NODATA");
        assert!(m.answers.is_empty(), "{qtype:?}");
        assert_eq!(soa_of(&m), rfc6303_soa("localhost."), "{qtype:?}");
    }
}

#[test]
fn invalid_local_and_onion_are_nxdomain_apex_included() {
    for (name, zone) in [
        ("invalid.", "invalid."),
        ("foo.INVALID.", "invalid."),
        ("local.", "local."),
        ("printer.local.", "local."),
        ("onion.", "onion."),
        ("x.y.onion.", "onion."),
    ] {
        for qtype in [RecordType::A, RecordType::SOA, RecordType::NS, RecordType::ANY] {
            let m = answered(name, qtype);
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name} {qtype:?}");
            assert!(m.answers.is_empty());
            assert_eq!(soa_of(&m), rfc6303_soa(zone), "{name}");
        }
    }
}

#[test]
fn an_empty_zone_answers_soa_and_ns_at_its_apex_and_nxdomain_below() {
    let zone = "168.192.in-addr.arpa.";
    let m = answered("168.192.IN-ADDR.arpa.", RecordType::SOA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    let RData::SOA(soa) = &m.answers[0].data else { panic!() };
    assert_eq!((soa.mname.to_ascii(), soa.rname.to_ascii()), (zone.into(), "nobody.invalid.".into()));
    let m = answered(zone, RecordType::NS);
    assert_eq!(
        m.answers[0].data,
        RData::NS(NS(Name::from_ascii(zone).unwrap())),
        "RFC 6303 §3: NS is the zone"
    );
    let m = answered(zone, RecordType::PTR);
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0), "NODATA at the apex");
    assert_eq!(soa_of(&m), rfc6303_soa(zone));
    let m = answered("1.1.168.192.in-addr.arpa.", RecordType::PTR);
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NXDomain, 0));
    assert_eq!(soa_of(&m), rfc6303_soa(zone));
    let m = answered("x.router.home.arpa.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(soa_of(&m), rfc6303_soa("home.arpa."));
}

#[test]
fn answers_have_the_flags_of_a_forwarder_and_an_opt_only_for_edns_clients() {
    let zones = zones();
    for (rd, edns) in [(true, None), (false, Some(ClientEdns { dnssec_ok: true, max_payload: 4096 }))] {
        let mut q = query("1.0.0.10.in-addr.arpa.", RecordType::PTR);
        q.recursion_desired = rd;
        q.checking_disabled = true;
        q.authentic_data = true;
        q.edns = edns;
        let m = Message::from_vec(&zones.answer(&q).unwrap().wire(&q)).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.message_type, hickory_proto::op::MessageType::Response);
        assert!(m.metadata.recursion_available);
        assert_eq!(m.metadata.recursion_desired, rd, "RD echoed");
        assert!(!m.metadata.authoritative, "AA clear");
        assert!(!m.metadata.authentic_data, "AD clear: nothing here is validated");
        assert!(m.metadata.checking_disabled, "CD echoed");
        match edns {
            None => assert!(m.edns.is_none()),
            Some(_) => {
                let e = m.edns.unwrap();
                assert_eq!((e.max_payload(), e.flags().dnssec_ok), (crate::message::EDNS_PAYLOAD, true));
            }
        }
    }
}

#[test]
fn other_classes_are_not_ours() {
    let mut q = query("localhost.", RecordType::A);
    q.query.set_query_class(DNSClass::CH);
    assert!(zones().answer(&q).is_none());
    assert!(zones().answer(&query("example.com.", RecordType::A)).is_none());
}

/// The reverse name of `ip` (RFC 1035 §3.5).
fn v4_reverse(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
}

/// The reverse name of `ip`, a nibble a label (RFC 3596 §2.5).
fn v6_reverse(ip: Ipv6Addr) -> String {
    let mut out = String::new();
    for byte in ip.octets().iter().rev() {
        out.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
    }
    out + "ip6.arpa."
}

/// The oracle: the address blocks RFC 6303 §4 and RFC 7793 list, as networks.
fn v4_local(ip: Ipv4Addr) -> bool {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "0.0.0.0/8",
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "255.255.255.255/32",
    ]
    .iter()
    .any(|net| net.parse::<ipnet::Ipv4Net>().unwrap().contains(&ip))
}

fn v6_local(ip: Ipv6Addr) -> bool {
    ["::/128", "::1/128", "fd00::/8", "fe80::/10", "2001:db8::/32"]
        .iter()
        .any(|net| net.parse::<ipnet::Ipv6Net>().unwrap().contains(&ip))
}

/// `name` with the case of each letter flipped where `mask`'s bit says so.
fn recase(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
        .collect()
}

/// Addresses near the edges of the listed blocks, where an off-by-one would show.
fn v4_near_edges() -> impl Strategy<Value = Ipv4Addr> {
    let first =
        prop::sample::select(vec![0u8, 9, 10, 11, 99, 100, 101, 126, 127, 128, 169, 172, 192, 198, 203, 255]);
    let second = prop::sample::select(vec![0u8, 2, 15, 16, 31, 32, 51, 63, 64, 127, 128, 168, 254, 255]);
    let third = prop::sample::select(vec![0u8, 1, 2, 100, 113, 255]);
    (first, second, third, any::<u8>(), any::<u64>()).prop_map(|(a, b, c, d, noise)| {
        if noise % 4 == 0 { Ipv4Addr::from(noise as u32) } else { Ipv4Addr::new(a, b, c, d) }
    })
}

fn v6_near_edges() -> impl Strategy<Value = Ipv6Addr> {
    let top = prop::sample::select(vec![
        0u16, 0x2001, 0xfc00, 0xfcff, 0xfd00, 0xfdff, 0xfe00, 0xfe7f, 0xfe80, 0xfebf, 0xfec0, 0xffff,
    ]);
    let second = prop::sample::select(vec![0u16, 0xdb7, 0xdb8, 0xdb9]);
    (top, second, any::<u128>(), 0u8..4).prop_map(|(top, second, noise, shape)| match shape {
        0 => Ipv6Addr::from(noise),
        1 => Ipv6Addr::from((noise & 1) * (noise % 3)),
        _ => Ipv6Addr::from((u128::from(top) << 112) | (u128::from(second) << 96) | (noise >> 32)),
    })
}

proptest! {
    #[test]
    fn an_ipv4_reverse_name_is_local_exactly_when_its_address_is_listed(ip in v4_near_edges(), mask in any::<u64>()) {
        let name = recase(&v4_reverse(ip), mask);
        let found = kind_of(&name);
        prop_assert_eq!(found.is_some(), v4_local(ip), "{} ({})", name, ip);
        if let Some((kind, _, apex)) = found {
            prop_assert_eq!(kind, ZoneKind::Empty);
            prop_assert_eq!(apex, ip == Ipv4Addr::BROADCAST);
        }
    }

    #[test]
    fn an_ipv6_reverse_name_is_local_exactly_when_its_address_is_listed(ip in v6_near_edges(), mask in any::<u64>()) {
        let name = recase(&v6_reverse(ip), mask);
        let found = kind_of(&name);
        prop_assert_eq!(found.is_some(), v6_local(ip), "{} ({})", name, ip);
    }

    #[test]
    fn any_name_under_localhost_gets_the_loopback_address(labels in prop::collection::vec("[a-zA-Z0-9][a-zA-Z0-9-]{0,18}[a-zA-Z0-9]", 0..5)) {
        let mut name = labels.join(".");
        name.push_str(if name.is_empty() { "localhost." } else { ".LOCALhost." });
        let m = answered(&name, RecordType::A);
        prop_assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        prop_assert_eq!(&m.answers[0].data, &RData::A(A(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn names_outside_every_zone_are_never_answered(labels in prop::collection::vec("[a-z0-9][a-z0-9-]{0,10}[a-z0-9]", 1..5), tld in "[a-z]{2,8}") {
        prop_assume!(!["localhost", "invalid", "local", "onion", "arpa"].contains(&tld.as_str()));
        let name = format!("{}.{tld}.", labels.join("."));
        prop_assert!(zones().answer(&query(&name, RecordType::A)).is_none(), "{}", name);
    }
}
