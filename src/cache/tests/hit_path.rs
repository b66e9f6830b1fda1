//! The wire handling of the hit path: header patches, OPT handling, and that a served
//! answer is the upstream answer with only what must change changed.

use hickory_proto::op::MessageType;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

use super::*;

fn without_ttls(records: &[Record]) -> Vec<Record> {
    records
        .iter()
        .cloned()
        .map(|mut r| {
            r.ttl = 0;
            r
        })
        .collect()
}

fn rich_answer() -> Answer {
    Answer::new("www.example.", RecordType::A)
        .answer(cname("www.example.", 300, "web.example."))
        .answer(a("web.example.", 300, 1))
        .answer(a("web.example.", 300, 2))
        .authority(ns("example.", 300, "ns1.example."))
        .authority(ns("example.", 300, "ns2.example."))
        .additional(a("ns1.example.", 300, 53))
        .with_opt()
}

#[test]
fn id_rd_and_ad_are_patched_for_the_client() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let mut up = rich_answer();
    up.msg.metadata.authentic_data = true;
    let k = key("www.example.", RecordType::A);
    c.store(k.clone(), &up.wire(), now);
    let qn = name("www.example.");

    let v = ClientView { id: 0xbeef, recursion_desired: false, ..view(&qn) };
    let m = hit(c.lookup(&k, &v, now));
    assert_eq!(m.metadata.id, 0xbeef);
    assert!(!m.metadata.recursion_desired);
    // RFC 6840 §5.8: no AD for a client that set neither DO nor AD.
    assert!(!m.metadata.authentic_data);

    let with_ad = ClientView { authentic_data: true, ..view(&qn) };
    let m = hit(c.lookup(&k, &with_ad, now));
    assert_eq!(m.metadata.id, 0x1234);
    assert!(m.metadata.recursion_desired);
    assert!(m.metadata.authentic_data);
}

#[test]
fn served_answer_equals_the_upstream_answer_except_ttls_and_opt() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = rich_answer();
    let k = key("www.example.", RecordType::A);
    c.store(k.clone(), &up.wire(), now);
    let qn = name("www.example.");
    let m = hit(c.lookup(&k, &view(&qn), now + secs(7)));
    let orig = &up.msg;
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.response_code, orig.metadata.response_code);
    assert_eq!(m.metadata.recursion_available, orig.metadata.recursion_available);
    assert_eq!(m.queries, orig.queries);
    assert_eq!(without_ttls(&m.answers), without_ttls(&orig.answers));
    assert_eq!(without_ttls(&m.authorities), without_ttls(&orig.authorities));
    assert_eq!(without_ttls(&m.additionals), without_ttls(&orig.additionals));
    assert!(m.edns.is_none(), "the upstream OPT is never served");
    assert_eq!(ttls(&m), vec![293; 6]);
}

#[test]
fn the_clients_opt_replaces_the_upstreams() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let k = key_with("www.example.", RecordType::A, true, false);
    c.store(k.clone(), &rich_answer().wire(), now);
    let qn = name("www.example.");
    let Lookup::Hit(wire) = c.lookup(&k, &edns_view(&qn, true), now) else {
        panic!("hit expected");
    };
    let m = parse(&wire);
    let edns = m.edns.expect("an EDNS client gets an OPT (RFC 6891 §6.1.1)");
    assert_eq!(edns.max_payload(), 1232, "our payload size, not the client's 1400");
    assert!(edns.flags().dnssec_ok);
    assert!(edns.option(EdnsCode::Padding).is_none());
    assert!(edns.option(EdnsCode::Unknown(15)).is_none(), "no EDE on a fresh hit");
    assert_eq!(m.additionals.len(), 1);
    assert_eq!(u16::from_be_bytes([wire[10], wire[11]]), 2, "ARCOUNT = A + OPT");

    // Whatever the client's size, we advertise ours (RFC 6891 §6.2.5).
    let tiny = ClientView { edns: Some(ClientEdns { dnssec_ok: false, max_payload: 100 }), ..view(&qn) };
    let m = hit(c.lookup(&k, &tiny, now));
    assert_eq!(m.edns.unwrap().max_payload(), 1232);
}

#[test]
fn aa_is_cleared_in_every_answer_from_the_cache() {
    let c = cache(stale_cfg());
    let now = t0();
    let mut up = Answer::new("aa.example.", RecordType::A).answer(a("aa.example.", 10, 1));
    up.msg.metadata.authoritative = true;
    let k = key("aa.example.", RecordType::A);
    let (_, stored) = c.store_parsed(k.clone(), &up.wire(), now);
    let qn = name("aa.example.");
    // RFC 1035 §4.1.1, RFC 2181 §5.4.1: a cache's answer is never authoritative.
    assert!(!parse(&stored.unwrap().render(&view(&qn), now)).metadata.authoritative);
    assert!(!hit(c.lookup(&k, &view(&qn), now)).metadata.authoritative);
    let Lookup::Stale(wire) = c.lookup_stale(&k, &view(&qn), now + secs(11)) else {
        panic!("stale answer expected");
    };
    assert!(!parse(&wire).metadata.authoritative);
}

#[test]
fn append_opt_builds_an_opt_with_ede_3_that_hickory_reads() {
    let mut wire = Answer::new("x.example.", RecordType::A).answer(a("x.example.", 30, 1)).wire();
    append_opt(&mut wire, 1232, true, Some((EDE_STALE_ANSWER, "stale by 5s")));
    let m = parse(&wire);
    let edns = m.edns.expect("OPT present");
    assert_eq!(edns.max_payload(), 1232);
    assert!(edns.flags().dnssec_ok);
    assert_eq!(edns.version(), 0);
    let Some(EdnsOption::Unknown(15, data)) = edns.option(EdnsCode::Unknown(15)) else {
        panic!("EDE option expected");
    };
    assert_eq!(&data[..2], &EDE_STALE_ANSWER.to_be_bytes());
    assert_eq!(&data[2..], b"stale by 5s");
    assert_eq!(m.answers.len(), 1);

    let mut plain = Answer::new("x.example.", RecordType::A).wire();
    append_opt(&mut plain, 512, false, None);
    let edns = parse(&plain).edns.unwrap();
    assert!(!edns.flags().dnssec_ok);
    assert!(edns.options().options.is_empty());

    let mut long = Answer::new("x.example.", RecordType::A).wire();
    append_opt(&mut long, 512, false, Some((0, &"é".repeat(300))));
    let edns = parse(&long).edns.unwrap();
    let Some(EdnsOption::Unknown(15, data)) = edns.option(EdnsCode::Unknown(15)) else {
        panic!("EDE option expected");
    };
    assert!(data.len() - 2 <= 256 && std::str::from_utf8(&data[2..]).is_ok());
}

#[test]
fn an_opt_that_is_not_the_last_record_is_not_cached() {
    let c = cache(CacheConfig::default());
    let mut wire = Answer::new("o.example.", RecordType::A).answer(a("o.example.", 300, 1)).with_opt().wire();
    // One more A after the OPT, its owner a pointer to the question name.
    wire.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 9]);
    let ar = u16::from_be_bytes([wire[10], wire[11]]) + 1;
    wire[10..12].copy_from_slice(&ar.to_be_bytes());
    assert_eq!(parse(&wire).additionals.len(), 1);
    let out = c.store(key("o.example.", RecordType::A), &wire, t0());
    assert_eq!(out, StoreOutcome::NotCacheable(NotCacheable::OptNotLast));
}

#[test]
fn client_views_and_keys_come_from_a_client_query() {
    let q = crate::message::ClientQuery {
        id: 7,
        query: Query::query(name("MiXed.example."), RecordType::A),
        recursion_desired: true,
        checking_disabled: true,
        authentic_data: false,
        edns: Some(ClientEdns { dnssec_ok: true, max_payload: 1232 }),
        bypass_cache: false,
    };
    assert_eq!(CacheKey::from(&q), key_with("mixed.EXAMPLE.", RecordType::A, true, true));
    let v = ClientView::from(&q);
    assert_eq!((v.id, v.qname.to_ascii()), (7, "MiXed.example.".to_string()));
}

#[test]
fn the_cache_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Cache>();
    shared::<CacheKey>();
}
