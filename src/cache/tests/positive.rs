//! Positive answers: TTL countdown, RRset consistency, clamps, TTL 0, CNAME chains,
//! and the key (case, DO, CD, type, class).

use super::*;

#[test]
fn ttls_count_down_in_every_record() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("www.example.", RecordType::A)
        .answer(cname("www.example.", 300, "web.example."))
        .answer(a("web.example.", 300, 1))
        .answer(a("web.example.", 300, 2))
        .authority(ns("example.", 300, "ns1.example."))
        .additional(a("ns1.example.", 300, 53));
    let k = key("www.example.", RecordType::A);
    assert_eq!(c.store(k.clone(), &up.wire(), now), stored(300));

    let qn = name("www.example.");
    let m = hit(c.lookup(&k, &view(&qn), now + secs(100)));
    assert_eq!(ttls(&m), vec![200; 5]);
    // Sub-second elapsed time does not count yet; the last second still shows 1.
    let m = hit(c.lookup(&k, &view(&qn), now + Duration::from_millis(299_500)));
    assert_eq!(ttls(&m), vec![1; 5]);
    assert_eq!(c.lookup(&k, &view(&qn), now + secs(300)), Lookup::Miss);
}

#[test]
fn entry_lives_for_the_lowest_answer_ttl_and_rrsets_are_made_consistent() {
    let c = cache(CacheConfig::default());
    let now = t0();
    // RFC 2181 §5.2: unequal TTLs in one RRset: use the lowest for all of them.
    let up = Answer::new("multi.example.", RecordType::A)
        .answer(a("multi.example.", 600, 1))
        .answer(a("multi.example.", 200, 2))
        .authority(ns("example.", 3600, "ns1.example."))
        .authority(ns("example.", 100, "ns2.example."));
    let k = key("multi.example.", RecordType::A);
    assert_eq!(c.store(k.clone(), &up.wire(), now), stored(200));
    let qn = name("multi.example.");
    let m = hit(c.lookup(&k, &view(&qn), now + secs(50)));
    assert_eq!(ttls(&m), vec![150, 150, 50, 50]);
}

#[test]
fn min_ttl_raises_positive_ttls() {
    let c = cache(CacheConfig { min_ttl: 60, ..CacheConfig::default() });
    let now = t0();
    let up = Answer::new("short.example.", RecordType::A).answer(a("short.example.", 10, 1));
    let k = key("short.example.", RecordType::A);
    assert_eq!(c.store(k.clone(), &up.wire(), now), stored(60));
    let qn = name("short.example.");
    assert_eq!(ttls(&hit(c.lookup(&k, &view(&qn), now + secs(30)))), vec![30]);
    assert_eq!(c.lookup(&k, &view(&qn), now + secs(60)), Lookup::Miss);
}

#[test]
fn max_ttl_lowers_ttls() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("long.example.", RecordType::A).answer(a("long.example.", 500_000, 1));
    let k = key("long.example.", RecordType::A);
    assert_eq!(c.store(k.clone(), &up.wire(), now), stored(86_400));

    let c = cache(CacheConfig { max_ttl: 300, ..CacheConfig::default() });
    assert_eq!(c.store(k.clone(), &up.wire(), now), stored(300));
    let qn = name("long.example.");
    assert_eq!(ttls(&hit(c.lookup(&k, &view(&qn), now))), vec![300]);
}

#[test]
fn high_bit_ttl_is_positive_then_capped() {
    // RFC 8767 §4 (updating RFC 2181 §8): not zero, a very large number, capped.
    let c = cache(CacheConfig::default());
    let up = Answer::new("big.example.", RecordType::A).answer(a("big.example.", 0x8000_0001, 1));
    let k = key("big.example.", RecordType::A);
    assert_eq!(c.store(k, &up.wire(), t0()), stored(86_400));
}

#[test]
fn ttl_zero_is_never_cached() {
    // RFC 8767 §7: not even to serve stale, and not raised by min_ttl.
    let c = cache(CacheConfig { min_ttl: 60, ..stale_cfg() });
    let now = t0();
    let up = Answer::new("zero.example.", RecordType::A).answer(a("zero.example.", 0, 1)).answer(a(
        "zero.example.",
        300,
        2,
    ));
    let k = key("zero.example.", RecordType::A);
    assert_eq!(c.store(k.clone(), &up.wire(), now), StoreOutcome::NotCacheable(NotCacheable::ZeroTtl));
    let qn = name("zero.example.");
    assert_eq!(c.lookup(&k, &view(&qn), now), Lookup::Miss);
    assert_eq!(c.lookup_stale(&k, &view(&qn), now), Lookup::Miss);
    assert!(c.is_empty());
}

#[test]
fn cname_chain_to_data_is_positive() {
    let c = cache(CacheConfig::default());
    let up = Answer::new("a.example.", RecordType::AAAA)
        .answer(cname("a.example.", 900, "B.example."))
        .answer(cname("b.example.", 600, "c.example."))
        .answer(Record::from_rdata(
            name("c.example."),
            120,
            RData::AAAA(hickory_proto::rr::rdata::AAAA("2001:db8::1".parse().unwrap())),
        ));
    let out = c.store(key("a.example.", RecordType::AAAA), &up.wire(), t0());
    assert_eq!(out, stored(120));
}

#[test]
fn noerror_with_only_a_cname_is_positive() {
    let c = cache(CacheConfig::default());
    let up =
        Answer::new("alias.example.", RecordType::A).answer(cname("alias.example.", 300, "elsewhere.test."));
    let out = c.store(key("alias.example.", RecordType::A), &up.wire(), t0());
    assert_eq!(out, stored(300));
}

#[test]
fn keys_ignore_case_and_answers_echo_the_clients_case() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("Example.COM.", RecordType::A).answer(a("Example.COM.", 300, 1));
    let stored_key = key("Example.COM.", RecordType::A);
    assert_eq!(c.store(stored_key, &up.wire(), now), stored(300));

    let qn = name("eXample.com.");
    let lookup_key = key("eXample.com.", RecordType::A);
    let Lookup::Hit(wire) = c.lookup(&lookup_key, &view(&qn), now) else {
        panic!("case-insensitive key must hit");
    };
    assert_eq!(&wire[12..12 + 13], b"\x07eXample\x03com\x00");
    let m = parse(&wire);
    assert_eq!(m.queries[0].name().to_ascii(), "eXample.com.");
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn dnssec_ok_and_checking_disabled_are_kept_apart() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("sec.example.", RecordType::A).answer(a("sec.example.", 300, 1));
    let do1 = key_with("sec.example.", RecordType::A, true, false);
    assert_eq!(c.store(do1.clone(), &up.wire(), now), stored(300));
    let qn = name("sec.example.");
    let v = edns_view(&qn, true);
    assert!(matches!(c.lookup(&do1, &v, now), Lookup::Hit(_)));
    for (dnssec_ok, cd) in [(false, false), (true, true), (false, true)] {
        let other = key_with("sec.example.", RecordType::A, dnssec_ok, cd);
        assert_eq!(c.lookup(&other, &v, now), Lookup::Miss, "DO={dnssec_ok} CD={cd}");
    }
    let do0 = key_with("sec.example.", RecordType::A, false, false);
    let up2 = Answer::new("sec.example.", RecordType::A).answer(a("sec.example.", 300, 2));
    assert_eq!(c.store(do0.clone(), &up2.wire(), now), stored(300));
    let m0 = hit(c.lookup(&do0, &view(&qn), now));
    let m1 = hit(c.lookup(&do1, &v, now));
    assert_ne!(m0.answers, m1.answers);
}

#[test]
fn type_and_class_are_part_of_the_key() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("t.example.", RecordType::A).answer(a("t.example.", 300, 1));
    c.store(key("t.example.", RecordType::A), &up.wire(), now);
    let qn = name("t.example.");
    assert_eq!(c.lookup(&key("t.example.", RecordType::AAAA), &view(&qn), now), Lookup::Miss);
    let mut chaos = Query::query(name("t.example."), RecordType::A);
    chaos.set_query_class(DNSClass::CH);
    let ch = CacheKey::new(&chaos, false, false);
    assert_eq!(c.lookup(&ch, &view(&qn), now), Lookup::Miss);
}

#[test]
fn an_answer_already_parsed_by_the_caller_is_stored_the_same_way() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("p.example.", RecordType::A).answer(a("p.example.", 300, 7));
    let k = key("p.example.", RecordType::A);
    let (outcome, answer) = c.store_parsed(k.clone(), &up.wire(), now);
    assert_eq!(outcome, stored(300));
    let qn = name("p.example.");
    let from_cache = hit(c.lookup(&k, &view(&qn), now + secs(1)));
    assert_eq!(ttls(&from_cache), vec![299]);
    // The waiting clients get what a hit would give them.
    assert_eq!(parse(&answer.unwrap().render(&view(&qn), now + secs(1))), from_cache);
    // The policy checks still apply: a truncated answer is refused either way.
    let mut tc = up.wire();
    tc[2] |= 0x02;
    assert!(matches!(c.store_parsed(k, &tc, now), (StoreOutcome::NotCacheable(_), None)));
}

#[test]
fn an_unauthenticated_answer_is_kept_briefly_whatever_the_limits() {
    // A configured floor above the cap, and serve-stale with a day's window: the cap wins.
    let c = cache(CacheConfig { min_ttl: 3600, ..stale_cfg() });
    let now = t0();
    let up = Answer::new("u.example.", RecordType::A).answer(a("u.example.", 300, 7));
    let k = key("u.example.", RecordType::A);
    let (outcome, answer) = c.store_parsed_unauthenticated(k.clone(), &up.wire(), now);
    assert_eq!(outcome, stored(UNAUTHENTICATED_MAX_TTL));
    let qn = name("u.example.");
    assert_eq!(ttls(&parse(&answer.unwrap().render(&view(&qn), now))), vec![UNAUTHENTICATED_MAX_TTL]);
    let cap = u64::from(UNAUTHENTICATED_MAX_TTL);
    assert_eq!(c.lookup(&k, &view(&qn), now + secs(cap)), Lookup::Miss);
    // Served stale for at most the cap past expiry, not for the configured day.
    assert!(matches!(c.lookup_stale(&k, &view(&qn), now + secs(cap + 1)), Lookup::Stale(_)));
    assert_eq!(c.lookup_stale(&k, &view(&qn), now + secs(2 * cap + 1)), Lookup::Miss);
    // The same answer from an authenticated upstream keeps the configured limits.
    let (outcome, _) = c.store_parsed(k, &up.wire(), now);
    assert_eq!(outcome, stored(3600));
}

#[test]
fn an_uncached_answer_gets_the_ttls_a_cached_one_would_have() {
    // Refused by the cache (one TTL is 0), so it would go out as parsed: one TTL per
    // RRset, the lowest (RFC 2181 §5.2), high bit read as large then capped (RFC 8767 §4).
    let up = Answer::new("m.example.", RecordType::A)
        .answer(a("m.example.", 300, 1))
        .answer(a("m.example.", 100, 2))
        .answer(a("m.example.", 0x8000_0010, 3))
        .answer(a("z.example.", 0, 4))
        .authority(ns("example.", 0x8000_0000, "ns1.example."))
        .additional(a("ns1.example.", 700, 53))
        .with_opt();
    let c = cache(CacheConfig { max_ttl: 600, ..CacheConfig::default() });
    let wire = up.wire();
    let mut msg = crate::message::parse_upstream(&wire).unwrap().0;
    assert!(c.normalize_uncached(&wire, &mut msg));
    assert_eq!(ttls(&msg), vec![100, 100, 100, 0, 600, 600]);
    // A disabled cache still applies its max_ttl.
    let off = cache(CacheConfig { max_entries: 0, max_ttl: 50, ..CacheConfig::default() });
    let mut msg = crate::message::parse_upstream(&wire).unwrap().0;
    assert!(off.normalize_uncached(&wire, &mut msg));
    assert_eq!(ttls(&msg), vec![50, 50, 50, 0, 50, 50]);
    // Octets our walker refuses leave the message as it was.
    let mut trailing = wire.clone();
    trailing.push(0);
    let mut msg = crate::message::parse_upstream(&wire).unwrap().0;
    assert!(!c.normalize_uncached(&trailing, &mut msg));
    assert_eq!(ttls(&msg)[..3], [300, 100, 0x8000_0010]);
}
