//! Negative answers (RFC 2308), SERVFAIL and the answers that are never cached.

use super::*;

fn negative(kind: AnswerKind, ttl: u32) -> StoreOutcome {
    StoreOutcome::Stored { kind, ttl }
}

#[test]
fn nxdomain_is_cached_with_the_soa_counted_down() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("nope.example.", RecordType::A)
        .rcode(ResponseCode::NXDomain)
        .authority(soa("example.", 900, 600));
    let k = key("nope.example.", RecordType::A);
    // RFC 2308 §5: min(SOA TTL, SOA MINIMUM).
    assert_eq!(c.store(k.clone(), &up.wire(), now), negative(AnswerKind::NxDomain, 600));

    let qn = name("nope.example.");
    let m = hit(c.lookup(&k, &view(&qn), now + secs(100)));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    // RFC 2308 §6: the SOA goes back with its TTL decremented.
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(m.authorities[0].ttl, 500);
    assert_eq!(c.lookup(&k, &view(&qn), now + secs(600)), Lookup::Miss);
}

#[test]
fn nodata_is_cached_for_min_of_soa_ttl_and_minimum() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("v4only.example.", RecordType::AAAA).authority(soa("example.", 120, 3600));
    let k = key("v4only.example.", RecordType::AAAA);
    assert_eq!(c.store(k.clone(), &up.wire(), now), negative(AnswerKind::NoData, 120));
    let qn = name("v4only.example.");
    let m = hit(c.lookup(&k, &view(&qn), now + secs(20)));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(ttls(&m), vec![100]);
}

#[test]
fn nodata_behind_a_cname_is_negative_for_the_target() {
    // RFC 2308 §1: QNAME is the last CNAME target; no data there plus SOA is NODATA,
    // cached no longer than the CNAME itself.
    let c = cache(CacheConfig::default());
    let up = Answer::new("alias.example.", RecordType::AAAA)
        .answer(cname("alias.example.", 60, "v4only.example."))
        .authority(soa("example.", 900, 900));
    let k = key("alias.example.", RecordType::AAAA);
    assert_eq!(c.store(k, &up.wire(), t0()), negative(AnswerKind::NoData, 60));
}

#[test]
fn negative_ttl_is_capped() {
    let c = cache(CacheConfig::default());
    let up = Answer::new("gone.example.", RecordType::A)
        .rcode(ResponseCode::NXDomain)
        .authority(soa("example.", 86_400, 86_400));
    let k = key("gone.example.", RecordType::A);
    assert_eq!(c.store(k.clone(), &up.wire(), t0()), negative(AnswerKind::NxDomain, 3600));
    let c = cache(CacheConfig { negative_max_ttl: 30, ..CacheConfig::default() });
    assert_eq!(c.store(k, &up.wire(), t0()), negative(AnswerKind::NxDomain, 30));
}

#[test]
fn negative_answers_without_soa_are_not_cached() {
    let c = cache(CacheConfig::default());
    let nx = Answer::new("nosoa.example.", RecordType::A).rcode(ResponseCode::NXDomain);
    let k = key("nosoa.example.", RecordType::A);
    let no_soa = StoreOutcome::NotCacheable(NotCacheable::NoSoa);
    assert_eq!(c.store(k.clone(), &nx.wire(), t0()), no_soa);
    let nodata = Answer::new("nosoa.example.", RecordType::A).authority(ns("example.", 300, "ns1.example."));
    assert_eq!(c.store(k, &nodata.wire(), t0()), no_soa);
    assert!(c.is_empty());
}

#[test]
fn negative_ttl_zero_is_not_cached() {
    let c = cache(CacheConfig::default());
    let up = Answer::new("z.example.", RecordType::A)
        .rcode(ResponseCode::NXDomain)
        .authority(soa("example.", 300, 0));
    let out = c.store(key("z.example.", RecordType::A), &up.wire(), t0());
    assert_eq!(out, StoreOutcome::NotCacheable(NotCacheable::ZeroTtl));
}

#[test]
fn servfail_is_cached_briefly_then_expires() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("broken.example.", RecordType::A).rcode(ResponseCode::ServFail);
    let k = key("broken.example.", RecordType::A);
    assert_eq!(c.store(k.clone(), &up.wire(), now), negative(AnswerKind::ServFail, 5));
    let qn = name("broken.example.");
    let m = hit(c.lookup(&k, &edns_view(&qn, false), now + secs(4)));
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // RFC 8914 §4.14: a cached error says so to EDNS clients.
    let edns = m.edns.expect("EDNS client gets an OPT");
    let ede = edns.option(hickory_proto::rr::rdata::opt::EdnsCode::Unknown(15));
    assert!(ede.is_some());
    assert_eq!(c.lookup(&k, &view(&qn), now + secs(5)), Lookup::Miss);
    // SERVFAIL is never prefetched nor served stale.
    let c = cache(stale_cfg());
    c.store(k.clone(), &up.wire(), now);
    assert!(matches!(c.lookup(&k, &view(&qn), now + Duration::from_millis(4900)), Lookup::Hit(_)));
    assert_eq!(c.lookup_stale(&k, &view(&qn), now + secs(6)), Lookup::Miss);
}

#[test]
fn servfail_ttl_zero_disables_and_is_capped_at_five_minutes() {
    let up = Answer::new("broken.example.", RecordType::A).rcode(ResponseCode::ServFail);
    let k = key("broken.example.", RecordType::A);
    let off = cache(CacheConfig { servfail_ttl: 0, ..CacheConfig::default() });
    assert_eq!(off.store(k.clone(), &up.wire(), t0()), StoreOutcome::NotCacheable(NotCacheable::Rcode(2)));
    let long = cache(CacheConfig { servfail_ttl: 3600, ..CacheConfig::default() });
    assert_eq!(long.store(k, &up.wire(), t0()), negative(AnswerKind::ServFail, 300));
}

#[test]
fn refused_and_other_rcodes_are_not_cached() {
    let c = cache(CacheConfig::default());
    let k = key("r.example.", RecordType::A);
    for (rcode, code) in [(ResponseCode::Refused, 5), (ResponseCode::FormErr, 1), (ResponseCode::NotImp, 4)] {
        let up = Answer::new("r.example.", RecordType::A).rcode(rcode);
        assert_eq!(
            c.store(k.clone(), &up.wire(), t0()),
            StoreOutcome::NotCacheable(NotCacheable::Rcode(code))
        );
    }
}

#[test]
fn truncated_answers_are_never_cached() {
    let c = cache(CacheConfig::default());
    let mut up = Answer::new("big.example.", RecordType::TXT).answer(txt("big.example.", 300, 10));
    up.msg.metadata.truncation = true;
    let out = c.store(key("big.example.", RecordType::TXT), &up.wire(), t0());
    assert_eq!(out, StoreOutcome::NotCacheable(NotCacheable::Truncated));
}

#[test]
fn answers_to_another_question_are_never_cached() {
    let c = cache(CacheConfig::default());
    let up = Answer::new("one.example.", RecordType::A).answer(a("one.example.", 300, 1));
    let mismatch = StoreOutcome::NotCacheable(NotCacheable::QuestionMismatch);
    for k in [
        key("two.example.", RecordType::A),
        key("one.example.", RecordType::AAAA),
        CacheKey::new(
            Query::query(name("one.example."), RecordType::A).set_query_class(DNSClass::CH),
            false,
            false,
        ),
    ] {
        assert_eq!(c.store(k, &up.wire(), t0()), mismatch);
    }
    let mut none = up.msg.clone();
    none.queries.clear();
    let out = c.store(key("one.example.", RecordType::A), &none.to_vec().unwrap(), t0());
    assert_eq!(out, mismatch);
    let mut query = up.msg.clone();
    query.metadata.message_type = hickory_proto::op::MessageType::Query;
    let out = c.store(key("one.example.", RecordType::A), &query.to_vec().unwrap(), t0());
    assert_eq!(out, StoreOutcome::NotCacheable(NotCacheable::NotAnAnswer));
}
