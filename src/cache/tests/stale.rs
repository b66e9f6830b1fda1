//! Serve-stale (RFC 8767) and prefetch.

use std::sync::Barrier;

use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

use super::*;

fn ede_code(m: &Message) -> Option<u16> {
    match m.edns.as_ref()?.option(EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(15, data) => Some(u16::from_be_bytes([data[0], data[1]])),
        _ => None,
    }
}

fn stale(l: Lookup) -> Message {
    match l {
        Lookup::Stale(w) => parse(&w),
        other => panic!("expected Stale, got {other:?}"),
    }
}

#[test]
fn expired_entries_are_served_stale_with_ttl_30_and_ede_3_within_stale_max() {
    let c = cache(stale_cfg());
    let now = t0();
    let up = Answer::new("old.example.", RecordType::A).answer(a("old.example.", 60, 1)).authority(ns(
        "example.",
        3600,
        "ns1.example.",
    ));
    let k = key("old.example.", RecordType::A);
    assert_eq!(c.store(k.clone(), &up.wire(), now), stored(60));
    let qn = name("old.example.");

    let expired = now + secs(61);
    assert_eq!(c.lookup(&k, &view(&qn), expired), Lookup::Miss);
    let m = stale(c.lookup_stale(&k, &edns_view(&qn, false), expired));
    assert_eq!(ttls(&m), vec![30, 30]);
    assert_eq!(ede_code(&m), Some(EDE_STALE_ANSWER));
    assert_eq!(m.metadata.id, 0x1234);

    // RFC 8914 §2: no OPT (so no EDE) for a client that sent none.
    let m = stale(c.lookup_stale(&k, &view(&qn), expired));
    assert!(m.edns.is_none());

    // Still there at the very end of the window, gone after it.
    let last = now + secs(60 + 86_400) - Duration::from_millis(1);
    assert!(matches!(c.lookup_stale(&k, &view(&qn), last), Lookup::Stale(_)));
    assert_eq!(c.lookup_stale(&k, &view(&qn), now + secs(60 + 86_400)), Lookup::Miss);
    assert!(c.is_empty(), "an entry past its stale window is dropped");
}

#[test]
fn lookup_stale_of_a_fresh_entry_is_a_plain_hit() {
    let c = cache(stale_cfg());
    let now = t0();
    let up = Answer::new("fresh.example.", RecordType::A).answer(a("fresh.example.", 60, 1));
    let k = key("fresh.example.", RecordType::A);
    c.store(k.clone(), &up.wire(), now);
    let qn = name("fresh.example.");
    let m = hit(c.lookup_stale(&k, &view(&qn), now + secs(58)));
    assert_eq!(ttls(&m), vec![2]);
    // The prefetch claim was not used up by lookup_stale.
    assert!(matches!(c.lookup(&k, &view(&qn), now + secs(58)), Lookup::HitPrefetch(_)));
}

#[test]
fn stale_nxdomain_carries_ede_19_and_the_soa_at_ttl_30() {
    let c = cache(stale_cfg());
    let now = t0();
    let up = Answer::new("nx.example.", RecordType::A)
        .rcode(ResponseCode::NXDomain)
        .authority(soa("example.", 300, 300));
    let k = key("nx.example.", RecordType::A);
    c.store(k.clone(), &up.wire(), now);
    let qn = name("nx.example.");
    let m = stale(c.lookup_stale(&k, &edns_view(&qn, false), now + secs(400)));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ttls(&m), vec![30]);
    assert_eq!(ede_code(&m), Some(EDE_STALE_NXDOMAIN));
}

#[test]
fn without_serve_stale_expired_entries_are_a_miss_and_dropped() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("old.example.", RecordType::A).answer(a("old.example.", 60, 1));
    let k = key("old.example.", RecordType::A);
    c.store(k.clone(), &up.wire(), now);
    let qn = name("old.example.");
    assert_eq!(c.lookup_stale(&k, &view(&qn), now + secs(61)), Lookup::Miss);
    assert_eq!(c.lookup(&k, &view(&qn), now + secs(61)), Lookup::Miss);
    assert!(c.is_empty());
}

#[test]
fn a_fresh_store_replaces_a_stale_entry() {
    let c = cache(stale_cfg());
    let now = t0();
    let k = key("re.example.", RecordType::A);
    let qn = name("re.example.");
    let old = Answer::new("re.example.", RecordType::A).answer(a("re.example.", 60, 1));
    c.store(k.clone(), &old.wire(), now);
    let later = now + secs(600);
    assert!(matches!(c.lookup_stale(&k, &view(&qn), later), Lookup::Stale(_)));
    let new = Answer::new("re.example.", RecordType::A).answer(a("re.example.", 60, 2));
    assert_eq!(c.store(k.clone(), &new.wire(), later), stored(60));
    let m = hit(c.lookup(&k, &view(&qn), later + secs(10)));
    assert_eq!(ttls(&m), vec![50]);
    assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(192, 0, 2, 2))));
    assert_eq!(c.len(), 1);
}

#[test]
fn a_servfail_does_not_replace_servable_data() {
    // RFC 8767 §4: a failed refresh keeps the old data.
    let c = cache(stale_cfg());
    let now = t0();
    let k = key("keep.example.", RecordType::A);
    let qn = name("keep.example.");
    let good = Answer::new("keep.example.", RecordType::A).answer(a("keep.example.", 60, 1));
    let fail = Answer::new("keep.example.", RecordType::A).rcode(ResponseCode::ServFail);
    c.store(k.clone(), &good.wire(), now);
    assert_eq!(c.store(k.clone(), &fail.wire(), now + secs(30)), StoreOutcome::KeptExisting);
    assert_eq!(c.store(k.clone(), &fail.wire(), now + secs(90)), StoreOutcome::KeptExisting);
    assert!(matches!(c.lookup_stale(&k, &view(&qn), now + secs(90)), Lookup::Stale(_)));
    // Past the stale window the SERVFAIL is cached as usual.
    let gone = now + secs(60 + 86_400);
    assert!(matches!(c.store(k, &fail.wire(), gone), StoreOutcome::Stored { .. }));
}

#[test]
fn prefetch_fires_once_per_stored_entry() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("pf.example.", RecordType::A).answer(a("pf.example.", 100, 1));
    let k = key("pf.example.", RecordType::A);
    c.store(k.clone(), &up.wire(), now);
    let qn = name("pf.example.");
    let v = view(&qn);
    assert!(matches!(c.lookup(&k, &v, now + secs(50)), Lookup::Hit(_)));
    assert!(matches!(c.lookup(&k, &v, now + secs(89)), Lookup::Hit(_)));
    // Last 10 % of 100 s: from +90 s on.
    assert!(matches!(c.lookup(&k, &v, now + secs(90)), Lookup::HitPrefetch(_)));
    assert!(matches!(c.lookup(&k, &v, now + secs(91)), Lookup::Hit(_)));
    assert!(matches!(c.lookup(&k, &v, now + secs(99)), Lookup::Hit(_)));
    // The refreshed entry is a new generation with its own claim.
    let later = now + secs(95);
    c.store(k.clone(), &up.wire(), later);
    assert!(matches!(c.lookup(&k, &v, later + secs(5)), Lookup::Hit(_)));
    assert!(matches!(c.lookup(&k, &v, later + secs(95)), Lookup::HitPrefetch(_)));
    let off = cache(CacheConfig { prefetch_percent: 0, ..CacheConfig::default() });
    off.store(k.clone(), &up.wire(), now);
    assert!(matches!(off.lookup(&k, &v, now + secs(99)), Lookup::Hit(_)));
}

#[test]
fn prefetch_claim_is_atomic_across_threads() {
    let c = cache(CacheConfig::default());
    let now = t0();
    let up = Answer::new("race.example.", RecordType::A).answer(a("race.example.", 100, 1));
    let k = key("race.example.", RecordType::A);
    c.store(k.clone(), &up.wire(), now);
    let qn = name("race.example.");
    let at = now + secs(95);
    let threads = 8;
    let barrier = Barrier::new(threads);
    let claims: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    (0..200)
                        .filter(|_| matches!(c.lookup(&k, &view(&qn), at), Lookup::HitPrefetch(_)))
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(claims, 1);
}

#[test]
fn a_noerror_or_nxdomain_that_cannot_be_cached_removes_the_old_entry() {
    // RFC 8767 §4: a NOERROR or NXDOMAIN is a successful refresh; the old data must not
    // be served stale after it, even when the new answer is not kept (TTL 0, no SOA).
    let k = key("gone.example.", RecordType::A);
    let qn = name("gone.example.");
    let old = Answer::new("gone.example.", RecordType::A).answer(a("gone.example.", 60, 1));
    let ttl0 = Answer::new("gone.example.", RecordType::A).answer(a("gone.example.", 0, 2));
    let nx_without_soa = Answer::new("gone.example.", RecordType::A).rcode(ResponseCode::NXDomain);
    for (new, why) in [(ttl0, NotCacheable::ZeroTtl), (nx_without_soa, NotCacheable::NoSoa)] {
        let c = cache(stale_cfg());
        let now = t0();
        c.store(k.clone(), &old.wire(), now);
        let later = now + secs(600);
        assert!(matches!(c.lookup_stale(&k, &view(&qn), later), Lookup::Stale(_)));
        assert_eq!(c.store(k.clone(), &new.wire(), later), StoreOutcome::NotCacheable(why));
        assert_eq!(c.lookup_stale(&k, &view(&qn), later), Lookup::Miss, "{why:?} ended the old data");
        assert!(c.is_empty());
    }
}

#[test]
fn a_failed_or_foreign_answer_that_cannot_be_cached_keeps_the_old_entry() {
    // RFC 8767 §4: any other RCODE is a failure that keeps the old state; an answer to
    // another question, or one that is not an answer, refreshes nothing.
    let k = key("kept.example.", RecordType::A);
    let qn = name("kept.example.");
    let old = Answer::new("kept.example.", RecordType::A).answer(a("kept.example.", 60, 1));
    let refused = Answer::new("kept.example.", RecordType::A).rcode(ResponseCode::Refused).wire();
    let other = Answer::new("other.example.", RecordType::A).answer(a("other.example.", 0, 2)).wire();
    let mut query = Answer::new("kept.example.", RecordType::A).answer(a("kept.example.", 0, 2));
    query.msg.metadata.message_type = hickory_proto::op::MessageType::Query;
    let garbage = vec![0xff; 40];
    for new in [refused, other, query.wire(), garbage] {
        let c = cache(stale_cfg());
        let now = t0();
        c.store(k.clone(), &old.wire(), now);
        let later = now + secs(600);
        assert!(matches!(c.store(k.clone(), &new, later), StoreOutcome::NotCacheable(_)));
        assert!(matches!(c.lookup_stale(&k, &view(&qn), later), Lookup::Stale(_)));
    }
}

#[test]
fn after_a_failed_refresh_lookup_answers_stale_for_the_recheck_interval_only() {
    let c = cache(stale_cfg());
    let now = t0();
    let k = key("down.example.", RecordType::A);
    let qn = name("down.example.");
    let up = Answer::new("down.example.", RecordType::A).answer(a("down.example.", 60, 1));
    c.store(k.clone(), &up.wire(), now);
    let failed = now + secs(61);
    assert_eq!(c.lookup(&k, &view(&qn), failed), Lookup::Miss, "expired: ask upstream");
    c.refresh_failed(&k, failed);
    // RFC 8767 §5: within the failure recheck interval, stale at once (TTL 30, EDE 3).
    let m = match c.lookup(&k, &edns_view(&qn, false), failed) {
        Lookup::Stale(w) => parse(&w),
        other => panic!("expected Stale, got {other:?}"),
    };
    assert_eq!(ttls(&m), vec![30]);
    assert_eq!(ede_code(&m), Some(EDE_STALE_ANSWER));
    let last = failed + FAILURE_RECHECK - Duration::from_millis(1);
    assert!(matches!(c.lookup(&k, &view(&qn), last), Lookup::Stale(_)));
    // After it, upstream is tried again.
    assert_eq!(c.lookup(&k, &view(&qn), failed + FAILURE_RECHECK), Lookup::Miss);
    // A later failure starts the interval again.
    let again = failed + secs(40);
    c.refresh_failed(&k, again);
    assert!(matches!(c.lookup(&k, &view(&qn), again + secs(29)), Lookup::Stale(_)));
    // A successful refresh is a new entry without the mark.
    c.store(k.clone(), &up.wire(), again + secs(1));
    assert!(matches!(c.lookup(&k, &view(&qn), again + secs(2)), Lookup::Hit(_)));
    assert_eq!(c.lookup(&k, &view(&qn), again + secs(62)), Lookup::Miss);
}

#[test]
fn a_failed_refresh_changes_nothing_without_serve_stale_or_past_the_stale_window() {
    let k = key("off.example.", RecordType::A);
    let qn = name("off.example.");
    let up = Answer::new("off.example.", RecordType::A).answer(a("off.example.", 60, 1));
    let c = cache(CacheConfig::default());
    let now = t0();
    c.store(k.clone(), &up.wire(), now);
    c.refresh_failed(&k, now + secs(30));
    assert!(matches!(c.lookup(&k, &view(&qn), now + secs(40)), Lookup::Hit(_)), "fresh stays fresh");
    assert_eq!(c.lookup(&k, &view(&qn), now + secs(61)), Lookup::Miss);

    let c = cache(stale_cfg());
    c.store(k.clone(), &up.wire(), now);
    let end = now + secs(60 + 86_400);
    c.refresh_failed(&k, end - secs(1));
    assert_eq!(c.lookup(&k, &view(&qn), end), Lookup::Miss, "the stale window still ends");
    assert!(c.is_empty());
}
