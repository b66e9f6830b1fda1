//! The bounds: entries and bytes under a unique-name flood, oversized answers, and the
//! disabled cache.

use super::*;

fn unique(i: usize, payload: usize) -> (CacheKey, Vec<u8>) {
    let qname = format!("n{i}.flood.example.");
    let mut up = Answer::new(&qname, RecordType::TXT);
    up = up.answer(txt(&qname, 3600, payload));
    (key(&qname, RecordType::TXT), up.wire())
}

#[test]
fn the_entry_bound_holds_under_a_unique_name_flood() {
    let cfg = CacheConfig { max_entries: 1000, ..CacheConfig::default() };
    let c = cache(cfg.clone());
    let now = t0();
    for i in 0..10 * cfg.max_entries {
        let (k, wire) = unique(i, 20);
        assert!(matches!(c.store(k, &wire, now), StoreOutcome::Stored { .. }));
        assert!(c.len() <= cfg.max_entries);
    }
    assert!(c.len() <= cfg.max_entries);
    assert!(c.weight_bytes() <= cfg.max_bytes);
    assert!(c.len() >= cfg.max_entries / 2, "the cache still holds a lot: {}", c.len());
    // The most recent names are there.
    let (k, _) = unique(10 * cfg.max_entries - 1, 20);
    let qn = name(&format!("n{}.flood.example.", 10 * cfg.max_entries - 1));
    assert!(matches!(c.lookup(&k, &view(&qn), now), Lookup::Hit(_)));
}

#[test]
fn the_byte_bound_holds_under_a_unique_name_flood() {
    let cfg = CacheConfig { max_entries: 100_000, max_bytes: 512 << 10, ..CacheConfig::default() };
    let c = cache(cfg.clone());
    let now = t0();
    let (_, sample) = unique(0, 1000);
    for i in 0..5000 {
        let (k, wire) = unique(i, 1000);
        c.store(k, &wire, now);
        assert!(c.weight_bytes() <= cfg.max_bytes);
    }
    // The octets alone of what is held fit in the byte bound.
    assert!(c.len() * sample.len() <= cfg.max_bytes, "len {}", c.len());
    assert!(c.len() >= 100, "len {}", c.len());
}

#[test]
fn both_bounds_hold_for_small_and_odd_sizes() {
    for (max_entries, max_bytes) in [(1, 4096), (7, 100_000), (33, 50_000), (1000, 64 << 10)] {
        let c = cache(CacheConfig { max_entries, max_bytes, ..CacheConfig::default() });
        for i in 0..10 * max_entries + 50 {
            let (k, wire) = unique(i, 10 + i % 300);
            c.store(k, &wire, t0());
            assert!(c.len() <= max_entries, "{max_entries}/{max_bytes}: {}", c.len());
            assert!(c.weight_bytes() <= max_bytes, "{max_entries}/{max_bytes}");
        }
    }
}

#[test]
fn an_answer_too_large_for_a_shard_is_refused() {
    let c = cache(CacheConfig { max_entries: 100, max_bytes: 16 << 10, ..CacheConfig::default() });
    let (k, wire) = unique(1, 10_000);
    assert_eq!(c.store(k, &wire, t0()), StoreOutcome::NotCacheable(NotCacheable::TooLarge));
    let (k, wire) = unique(2, 1_000);
    assert!(matches!(c.store(k, &wire, t0()), StoreOutcome::Stored { .. }));
}

#[test]
fn max_entries_zero_disables_the_cache() {
    for cfg in [
        CacheConfig { max_entries: 0, ..CacheConfig::default() },
        CacheConfig { max_bytes: 0, ..CacheConfig::default() },
    ] {
        let c = cache(cfg);
        let (k, wire) = unique(1, 10);
        assert_eq!(c.store(k.clone(), &wire, t0()), StoreOutcome::NotCacheable(NotCacheable::Disabled));
        let qn = name("n1.flood.example.");
        assert_eq!(c.lookup(&k, &view(&qn), t0()), Lookup::Miss);
        assert_eq!(c.lookup_stale(&k, &view(&qn), t0()), Lookup::Miss);
        assert_eq!((c.len(), c.weight_bytes()), (0, 0));
    }
}

#[test]
fn resizing_keeps_answers_within_the_new_bounds() {
    let c = cache(CacheConfig { max_entries: 1000, ..CacheConfig::default() });
    let now = t0();
    for i in 0..500 {
        let (k, wire) = unique(i, 20);
        c.store(k, &wire, now);
    }
    let held = c.len();
    // A reload with a larger bound keeps everything.
    let bigger = c.resized(CacheConfig { max_entries: 5000, ..CacheConfig::default() });
    assert_eq!(bigger.len(), held);
    let (k, _) = unique(7, 20);
    let qn = name("n7.flood.example.");
    assert!(matches!(bigger.lookup(&k, &view(&qn), now), Lookup::Hit(_)), "answers survive");
    // A smaller bound keeps what fits, and the bound holds.
    let smaller = c.resized(CacheConfig { max_entries: 100, ..CacheConfig::default() });
    assert!(smaller.len() <= 100 && !smaller.is_empty(), "{}", smaller.len());
    // Disabling drops everything.
    let off = c.resized(CacheConfig { max_entries: 0, ..CacheConfig::default() });
    assert!(off.is_empty());
}

#[test]
fn quick_cache_is_told_to_expect_the_tighter_bound_of_entries() {
    // quick_cache sizes its ghost list (and tables) from this estimate: taking
    // `max_entries` alone when `max_bytes` is the tighter bound made an 8 MiB cache
    // allowed a million entries keep ghosts for half a million (19 MiB of RSS).
    let bytes_bound = CacheConfig { max_entries: 1_000_000, max_bytes: 8 << 20, ..CacheConfig::default() };
    let fit_by_bytes = (8 << 20) / min_entry_weight();
    assert!(fit_by_bytes < 100_000, "8 MiB holds at most {fit_by_bytes} of the lightest entries");
    assert_eq!(estimated_items(&bytes_bound), fit_by_bytes, "the byte bound is the tighter one");

    let entry_bound = CacheConfig { max_entries: 1000, max_bytes: 64 << 20, ..CacheConfig::default() };
    assert_eq!(estimated_items(&entry_bound), 1000, "the entry bound is the tighter one");

    // A byte bound below one entry still asks for one slot (quick_cache wants at least 1).
    let tiny = CacheConfig { max_entries: 10, max_bytes: 1, ..CacheConfig::default() };
    assert_eq!(estimated_items(&tiny), 1);
}
