//! End to end: the locally-served names (RFC 6761, 6303, 7793, 8375, 6762 §22.1, 7686)
//! are answered by stubborn itself over UDP and TCP and never reach the upstream; with
//! `server.local_zones = false` they are forwarded like any other name, and a reload
//! flips the switch.

mod common;
mod support;

use common::{
    TestUpstream, UpstreamOptions,
    dns::{QueryOptions, answer_strings, build_query, parse, query},
    tcp_query, udp_query,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RData, RecordType},
};
use stubborn::config::{Config, ConfigOrigin};
use support::{Auth, Stub, UDP_WAIT, upstream_block};

/// The zone named by the SOA in `m`'s authority section, with its RNAME and MINIMUM.
fn authority_soa(m: &Message) -> Option<(String, String, String, u32)> {
    m.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some((r.name.to_ascii(), soa.mname.to_ascii(), soa.rname.to_ascii(), soa.minimum)),
        _ => None,
    })
}

fn local_soa(zone: &str) -> Option<(String, String, String, u32)> {
    Some((zone.into(), zone.into(), "nobody.invalid.".into(), 10_800))
}

/// (name as asked, type, RCODE, answers, the zone whose SOA is in authority)
type Case = (&'static str, RecordType, ResponseCode, &'static [&'static str], Option<&'static str>);

const CASES: &[Case] = &[
    ("LocalHost", RecordType::A, ResponseCode::NoError, &["127.0.0.1"], None),
    ("app.localhost", RecordType::AAAA, ResponseCode::NoError, &["::1"], None),
    ("app.localhost", RecordType::MX, ResponseCode::NoError, &[], Some("localhost.")),
    ("nothing.Invalid", RecordType::A, ResponseCode::NXDomain, &[], Some("invalid.")),
    ("printer.local", RecordType::A, ResponseCode::NXDomain, &[], Some("local.")),
    ("example.onion", RecordType::AAAA, ResponseCode::NXDomain, &[], Some("onion.")),
    ("printer.home.arpa", RecordType::A, ResponseCode::NXDomain, &[], Some("home.arpa.")),
    ("9.1.168.192.in-addr.arpa", RecordType::PTR, ResponseCode::NXDomain, &[], Some("168.192.in-addr.arpa.")),
    ("1.0.0.10.IN-ADDR.ARPA", RecordType::PTR, ResponseCode::NXDomain, &[], Some("10.in-addr.arpa.")),
    ("5.0.20.172.in-addr.arpa", RecordType::PTR, ResponseCode::NXDomain, &[], Some("20.172.in-addr.arpa.")),
    ("1.0.64.100.in-addr.arpa", RecordType::PTR, ResponseCode::NXDomain, &[], Some("64.100.in-addr.arpa.")),
    ("1.0.0.127.in-addr.arpa", RecordType::PTR, ResponseCode::NXDomain, &[], Some("127.in-addr.arpa.")),
    ("1.1.254.169.in-addr.arpa", RecordType::PTR, ResponseCode::NXDomain, &[], Some("254.169.in-addr.arpa.")),
    ("1.2.0.192.in-addr.arpa", RecordType::PTR, ResponseCode::NXDomain, &[], Some("2.0.192.in-addr.arpa.")),
    ("1.2.3.4.5.6.7.8.d.f.ip6.arpa", RecordType::PTR, ResponseCode::NXDomain, &[], Some("d.f.ip6.arpa.")),
    ("1.0.8.e.f.ip6.arpa", RecordType::PTR, ResponseCode::NXDomain, &[], Some("8.e.f.ip6.arpa.")),
    (
        "1.8.b.d.0.1.0.0.2.ip6.arpa",
        RecordType::PTR,
        ResponseCode::NXDomain,
        &[],
        Some("8.b.d.0.1.0.0.2.ip6.arpa."),
    ),
    // The apex of an empty zone (RFC 6303 §3): its SOA, NODATA for other types.
    ("168.192.in-addr.arpa", RecordType::SOA, ResponseCode::NoError, &["SOA"], None),
    ("10.in-addr.arpa", RecordType::PTR, ResponseCode::NoError, &[], Some("10.in-addr.arpa.")),
];

#[tokio::test]
async fn each_kind_is_answered_here_and_never_forwarded() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = Stub::pinned(&up).await;
    for (i, &(name, rtype, rcode, answers, soa)) in CASES.iter().enumerate() {
        let id = 0x100 + i as u16;
        for (edns, rd) in [(true, true), (false, false)] {
            let q = build_query(
                id,
                name,
                rtype,
                &QueryOptions { edns, recursion_desired: rd, ..Default::default() },
            );
            let over_udp = udp_query(stub.addr, &q, UDP_WAIT).await.unwrap();
            let over_tcp = tcp_query(stub.addr, &q).await.unwrap();
            assert_eq!(over_udp, over_tcp, "{name}: the same answer over UDP and TCP");
            let m = parse(&over_udp);
            assert_eq!(m.metadata.id, id);
            assert_eq!(m.metadata.response_code, rcode, "{name} {rtype:?}");
            let got: Vec<String> = match rtype {
                RecordType::SOA => m.answers.iter().map(|r| r.record_type().to_string()).collect(),
                _ => answer_strings(&m),
            };
            assert_eq!(got, answers.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{name} {rtype:?}");
            assert_eq!(authority_soa(&m), soa.and_then(local_soa), "{name} {rtype:?}");
            assert_eq!(m.queries[0].name().to_ascii(), format!("{name}."), "the question as asked");
            assert!(m.metadata.recursion_available && !m.metadata.authoritative, "{name}: RA set, AA clear");
            assert_eq!(m.metadata.recursion_desired, rd, "{name}: RD echoed");
            assert_eq!(m.edns.is_some(), edns, "{name}: an OPT only for an EDNS client");
        }
    }
    assert_eq!(up.queries_received(), 0, "no local name reached the upstream");
    // The upstream was there to ask all along.
    let m = parse(&udp_query(stub.addr, &query(1, "a.test", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(answer_strings(&m), vec!["192.0.2.1".to_string()]);
    assert_eq!(up.queries_received(), 1);
    stub.shutdown().await;
}

#[tokio::test]
async fn with_the_switch_off_they_are_forwarded() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("up", &up, Auth::Pin(&up.leaf_key_pin), &dir);
    let stub = Stub::start("local_zones = false\n", &block, dir).await;
    let m =
        parse(&udp_query(stub.addr, &query(1, "printer.home.arpa", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(answer_strings(&m), vec!["192.168.1.9".to_string()], "the upstream's answer");
    for (i, (name, rtype)) in [
        ("localhost", RecordType::A),
        ("9.1.168.192.in-addr.arpa", RecordType::PTR),
        ("x.onion", RecordType::A),
    ]
    .into_iter()
    .enumerate()
    {
        let m = parse(&tcp_query(stub.addr, &query(2 + i as u16, name, rtype)).await.unwrap());
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}: the test upstream's answer");
        assert!(m.answers.is_empty(), "{name}");
    }
    assert_eq!(up.queries_received(), 4, "every one forwarded");
    stub.shutdown().await;
}

fn config_for(stub: &Stub, up: &TestUpstream, extra: &str) -> Config {
    let block = upstream_block("up", up, Auth::Pin(&up.leaf_key_pin), &stub.dir);
    let text = format!("[server]\nlisten = [\"{}\"]\nthreads = 1\n{extra}\n{block}", stub.addr);
    Config::from_toml(&text, ConfigOrigin::Embedded).unwrap()
}

#[tokio::test]
async fn a_reload_flips_the_switch_and_drops_what_the_cache_holds_for_local_names() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("up", &up, Auth::Pin(&up.leaf_key_pin), &dir);
    let mut stub = Stub::start("local_zones = false\n", &block, dir).await;
    let printer = || query(7, "printer.home.arpa", RecordType::A);
    let ask = |stub: &Stub| {
        let addr = stub.addr;
        let q = printer();
        async move { parse(&udp_query(addr, &q, UDP_WAIT).await.unwrap()) }
    };
    assert_eq!(answer_strings(&ask(&stub).await), vec!["192.168.1.9".to_string()]);
    assert_eq!(answer_strings(&ask(&stub).await), vec!["192.168.1.9".to_string()]);
    assert_eq!(up.queries_received(), 1, "the second answer came from the cache");
    let cached_other =
        parse(&udp_query(stub.addr, &query(8, "a.test", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(answer_strings(&cached_other), vec!["192.0.2.1".to_string()]);

    let next = config_for(&stub, &up, "local_zones = true");
    stub.daemon().reload(next).unwrap();
    let m = ask(&stub).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "answered here, not from the cache");
    assert_eq!(authority_soa(&m), local_soa("home.arpa."));
    assert_eq!(up.queries_received(), 2, "printer.home.arpa stayed here; a.test asked once");
    let again = parse(&udp_query(stub.addr, &query(9, "a.test", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(answer_strings(&again), vec!["192.0.2.1".to_string()]);
    assert_eq!(up.queries_received(), 2, "other cached names kept");

    let next = config_for(&stub, &up, "local_zones = false");
    stub.daemon().reload(next).unwrap();
    assert_eq!(answer_strings(&ask(&stub).await), vec!["192.168.1.9".to_string()]);
    assert_eq!(up.queries_received(), 3, "forwarded again");
    stub.shutdown().await;
}
