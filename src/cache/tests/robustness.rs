//! Whatever octets `store` is given, it never panics, and whatever it stores is served
//! as a message hickory-proto can read.

use proptest::prelude::*;

use super::*;

fn sample() -> Vec<u8> {
    Answer::new("www.example.", RecordType::A)
        .answer(cname("www.example.", 300, "web.example."))
        .answer(a("web.example.", 300, 1))
        .authority(soa("example.", 300, 60))
        .additional(a("ns1.example.", 300, 53))
        .with_opt()
        .wire()
}

/// Stores `wire` under the key of its own question (if hickory finds one), so that
/// mutated answers get past the question check, and checks what is served.
fn store_and_serve(c: &Cache, wire: &[u8]) {
    let now = t0();
    let (k, qname) = match Message::from_vec(wire) {
        Ok(m) if m.queries.len() == 1 => {
            (CacheKey::new(&m.queries[0], false, false), m.queries[0].name().clone())
        }
        _ => (key("www.example.", RecordType::A), name("www.example.")),
    };
    if let StoreOutcome::Stored { ttl, .. } = c.store(k.clone(), wire, now) {
        assert!(ttl > 0);
        for l in [
            c.lookup(&k, &edns_view(&qname, true), now),
            c.lookup_stale(&k, &view(&qname), now + secs(u64::from(ttl) + 1)),
        ] {
            if let Some(w) = l.into_wire() {
                Message::from_vec(&w).expect("served answers parse");
            }
        }
    }
}

#[test]
fn every_truncation_of_an_answer_is_refused_without_panic() {
    let c = cache(stale_cfg());
    let wire = sample();
    for len in 0..wire.len() {
        let out = c.store(key("www.example.", RecordType::A), &wire[..len], t0());
        assert!(!matches!(out, StoreOutcome::Stored { .. }), "prefix of {len} stored");
    }
    assert!(matches!(c.store(key("www.example.", RecordType::A), &wire, t0()), StoreOutcome::Stored { .. }));
}

#[test]
fn compression_loops_and_forward_pointers_are_malformed() {
    let c = cache(CacheConfig::default());
    let mut wire = sample();
    // The first answer's owner is a pointer to the question (0xc00c); aim it at itself.
    let owner = 12 + 13 + 4;
    assert_eq!(&wire[owner..owner + 2], &[0xc0, 12]);
    let at = owner as u8;
    wire[owner + 1] = at;
    let out = c.store(key("www.example.", RecordType::A), &wire, t0());
    assert_eq!(out, StoreOutcome::NotCacheable(NotCacheable::Malformed));
}

/// Found by fuzzing (fuzz/regressions/upstream_answer/owner-points-into-header): an
/// owner name that points at offset 0 reads the message ID as a name (0x00: the root).
/// Every hit writes the client's ID there, so the stored answer rendered for ID 0xfffc
/// carried a pointer hickory refuses, and other IDs would spell other owner names.
#[test]
fn a_name_pointing_into_the_header_is_malformed() {
    let c = cache(CacheConfig::default());
    let k = key("a.example.", RecordType::A);
    let mut wire = Answer::new("a.example.", RecordType::A).answer(a("a.example.", 300, 1)).wire();
    let owner = 12 + "a.example.".len() + 1 + 4;
    assert_eq!(&wire[owner..owner + 2], &[0xc0, 12]);
    wire[..2].copy_from_slice(&[0, 3]);
    wire[owner + 1] = 0;
    assert_eq!(c.store(k.clone(), &wire, t0()), StoreOutcome::NotCacheable(NotCacheable::Malformed));
    assert_eq!(c.lookup(&k, &view(&name("a.example.")), t0()), Lookup::Miss);
}

/// A hand-built answer to a.example. of `qtype`: header with `id`, the question, then
/// `records` as raw octets.
fn raw_answer(id: u16, qtype: u16, ancount: u16, records: &[u8]) -> Vec<u8> {
    let mut wire = id.to_be_bytes().to_vec();
    wire.extend_from_slice(&[0x81, 0x80, 0, 1]);
    wire.extend_from_slice(&ancount.to_be_bytes());
    wire.extend_from_slice(&[0, 0, 0, 0, 1, b'a', 7]);
    wire.extend_from_slice(b"example");
    wire.push(0);
    wire.extend_from_slice(&qtype.to_be_bytes());
    wire.extend_from_slice(&[0, 1]);
    wire.extend_from_slice(records);
    wire
}

/// Found while fixing the fuzzer's first crash: the walker checked the names it read, but
/// not that they avoid the TTL fields every hit rewrites. The second owner points two
/// octets into the first record's TTL (00 00 01 2c): it reads as the label "," now, and
/// as "+" once a second has been counted down, so the served owner depends on the time.
#[test]
fn a_name_pointing_into_a_ttl_field_is_malformed() {
    let c = cache(CacheConfig::default());
    let k = key("a.example.", RecordType::A);
    // The first record starts at 12 + 11 + 4 = 27, its TTL at 33; point at 35.
    let records = [
        &[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 192, 0, 2, 1][..],
        &[0xc0, 35, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 192, 0, 2, 2][..],
    ]
    .concat();
    let wire = raw_answer(0x4242, 1, 2, &records);
    assert_eq!(c.store(k, &wire, t0()), StoreOutcome::NotCacheable(NotCacheable::Malformed));
}

/// Likewise: names inside RDATA (here an MX exchange) are followed by hickory but were
/// never read by the walker, so a pointer into the header was admitted. With ID 0 it reads as the root; rendered for a client whose ID is
/// 0x0161 it reads as "a" followed by the flags octet 0x81, which hickory refuses.
#[test]
fn an_rdata_name_pointing_into_the_header_is_malformed() {
    let c = cache(CacheConfig::default());
    let k = key("a.example.", RecordType::MX);
    let records = [0xc0, 12, 0, 15, 0, 1, 0, 0, 1, 0x2c, 0, 4, 0, 10, 0xc0, 0];
    let wire = raw_answer(0, 15, 1, &records);
    assert_eq!(c.store(k, &wire, t0()), StoreOutcome::NotCacheable(NotCacheable::Malformed));
}

/// Real answers with names in RDATA, compressed (unbound's, from the fuzz seeds): the
/// walker's RDATA name checks must not refuse them.
#[test]
fn real_answers_with_compressed_rdata_names_are_cached() {
    let c = cache(CacheConfig::default());
    let answers: [&[u8]; 8] = [
        include_bytes!("../../../fuzz/corpus/upstream_answer/unbound-mx.test-15-edns-tcp"),
        include_bytes!("../../../fuzz/corpus/upstream_answer/unbound-_dns._tcp.test-33-edns-tcp"),
        include_bytes!("../../../fuzz/corpus/upstream_answer/unbound-svc.test-64-edns-tcp"),
        include_bytes!("../../../fuzz/corpus/upstream_answer/unbound-1.2.0.192.in-addr.arpa-12-edns-tcp"),
        include_bytes!("../../../fuzz/corpus/upstream_answer/unbound-www.test-1-edns-tcp"),
        include_bytes!("../../../fuzz/corpus/upstream_answer/unbound-test-2-edns-tcp"),
        include_bytes!("../../../fuzz/corpus/upstream_answer/unbound-test-6-edns-tcp"),
        include_bytes!("../../../fuzz/corpus/upstream_answer/unbound-nx.test-1-edns-tcp"),
    ];
    for wire in answers {
        let q = Message::from_vec(wire).unwrap().queries[0].clone();
        let out = c.store(CacheKey::new(&q, false, false), wire, t0());
        assert!(matches!(out, StoreOutcome::Stored { .. }), "{q}: {out:?}");
    }
}

#[test]
fn a_mismatched_client_name_never_corrupts_the_answer() {
    let c = cache(CacheConfig::default());
    let k = key("www.example.", RecordType::A);
    c.store(k.clone(), &sample(), t0());
    for other in ["www.example.org.", "w.example.", "WWX.example.", "."] {
        let qn = name(other);
        let m = hit(c.lookup(&k, &view(&qn), t0()));
        assert_eq!(m.queries[0].name(), &name("www.example."), "{other}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let c = cache(stale_cfg());
        store_and_serve(&c, &bytes);
    }

    #[test]
    fn random_bytes_after_a_plausible_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        counts in proptest::collection::vec(0u8..4, 3),
        rcode in 0u8..16,
    ) {
        let mut wire = vec![0x42, 0x42, 0x81, 0x80 | rcode, 0, 1, 0, counts[0], 0, counts[1], 0, counts[2]];
        wire.extend_from_slice(b"\x03www\x07example\x00\x00\x01\x00\x01");
        wire.extend_from_slice(&body);
        let c = cache(stale_cfg());
        store_and_serve(&c, &wire);
    }

    #[test]
    fn mutated_answers_never_panic_and_what_is_stored_is_served_well(
        edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<u16>()),
    ) {
        let mut wire = sample();
        for (at, value) in edits {
            let at = usize::from(at) % wire.len();
            wire[at] = value;
        }
        if let Some(cut) = cut {
            wire.truncate(usize::from(cut) % wire.len());
        }
        let c = cache(stale_cfg());
        store_and_serve(&c, &wire);
    }
}
