//! Micro-benchmarks, ignored by default. Run in release mode:
//! `cargo test --release --lib cache::tests::bench -- --ignored --nocapture --test-threads 1`

use std::hint::black_box;
use std::time::Instant as Wall;

use super::*;

fn typical() -> (CacheKey, Vec<u8>) {
    let up = Answer::new("www.example.com.", RecordType::A)
        .answer(cname("www.example.com.", 3600, "edge.cdn.example.net."))
        .answer(a("edge.cdn.example.net.", 3600, 1))
        .answer(a("edge.cdn.example.net.", 3600, 2))
        .with_opt();
    (key("www.example.com.", RecordType::A), up.wire())
}

fn per_op(iterations: u32, f: impl Fn(u32)) -> f64 {
    for i in 0..iterations / 10 {
        f(i);
    }
    let start = Wall::now();
    for i in 0..iterations {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

#[test]
#[ignore = "benchmark: run in release mode with --ignored --nocapture"]
fn bench_lookup_hit() {
    let c = cache(CacheConfig { max_entries: 100_000, ..CacheConfig::default() });
    let now = t0();
    let (k, wire) = typical();
    c.store(k.clone(), &wire, now);
    // Other entries around it, as in a warm cache.
    for i in 0..50_000 {
        let qn = format!("n{i}.example.com.");
        let up = Answer::new(&qn, RecordType::A).answer(a(&qn, 3600, 1));
        c.store(key(&qn, RecordType::A), &up.wire(), now);
    }
    let qn = name("WWW.example.com.");
    let v = edns_view(&qn, false);
    let query = Query::query(qn.clone(), RecordType::A);
    let at = now + secs(100);

    let hit = per_op(2_000_000, |_| {
        black_box(c.lookup(black_box(&k), &v, at));
    });
    let key_and_hit = per_op(2_000_000, |_| {
        let k = CacheKey::new(black_box(&query), false, false);
        black_box(c.lookup(&k, &v, at));
    });
    let miss_key = key("absent.example.com.", RecordType::A);
    let miss = per_op(2_000_000, |_| {
        black_box(c.lookup(black_box(&miss_key), &v, at));
    });
    let map = c.map.as_ref().unwrap();
    let get_only = per_op(2_000_000, |_| {
        black_box(map.get(black_box(&k)));
    });
    let entry = map.get(&k).unwrap();
    let render_only = per_op(2_000_000, |_| {
        black_box(entry.render(black_box(&v), Ttls::CountDown(100), None));
    });
    let plain = view(&qn);
    let render_plain = per_op(2_000_000, |_| {
        black_box(entry.render(black_box(&plain), Ttls::CountDown(100), None));
    });
    let copy_only = per_op(2_000_000, |_| {
        black_box(black_box(&wire[..99]).to_vec());
    });
    let store = per_op(200_000, |i| {
        let _ = black_box(c.store(k.clone(), black_box(&wire), now + secs(u64::from(i % 7))));
    });
    let threads = 2;
    let total = 2_000_000u32;
    let start = Wall::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..total / threads {
                    black_box(c.lookup(black_box(&k), &v, at));
                }
            });
        }
    });
    let parallel = start.elapsed().as_nanos() as f64 / f64::from(total);
    // The same with a different name per thread (no shared entry to contend on).
    let names: Vec<Name> = (0..threads).map(|i| name(&format!("n{i}.example.com."))).collect();
    let shared = &c;
    let start = Wall::now();
    std::thread::scope(|s| {
        for qn in &names {
            s.spawn(move || {
                let k = key(&qn.to_ascii(), RecordType::A);
                let v = edns_view(qn, false);
                for _ in 0..total / threads {
                    black_box(shared.lookup(black_box(&k), &v, at));
                }
            });
        }
    });
    let parallel_distinct = start.elapsed().as_nanos() as f64 / f64::from(total);
    // The upstream OPT (11 octets + a 44-octet padding option) is cut at store time.
    println!(
        "answer: {} octets from upstream, {} stored, {} served with the client's OPT",
        wire.len(),
        wire.len() - 55,
        wire.len() - 55 + 11
    );
    println!("lookup hit (key prebuilt):        {hit:7.1} ns");
    println!("CacheKey::new + lookup hit:       {key_and_hit:7.1} ns");
    println!("lookup miss:                      {miss:7.1} ns");
    println!("  map.get (Arc clone) only:       {get_only:7.1} ns");
    println!("  render only (EDNS client):      {render_only:7.1} ns");
    println!("  render only (no EDNS):          {render_plain:7.1} ns");
    println!("  Vec copy of 99 octets:          {copy_only:7.1} ns");
    println!("store (replace, incl. validation): {store:7.1} ns");
    println!("lookup hit, {threads} threads, one name, wall per hit:   {parallel:7.1} ns");
    println!("lookup hit, {threads} threads, own names, wall per hit:  {parallel_distinct:7.1} ns");
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

#[test]
#[ignore = "benchmark: run in release mode with --ignored --nocapture"]
fn bench_memory_of_an_empty_cache() {
    for max_entries in [10_000, 100_000, 1_000_000] {
        let before = rss_bytes();
        let c = cache(CacheConfig { max_entries, max_bytes: 64 << 20, ..CacheConfig::default() });
        let grown = rss_bytes().saturating_sub(before);
        println!("empty cache for {max_entries} entries: RSS grew {} KiB", grown / 1024);
        drop(black_box(c));
    }
}

#[test]
#[ignore = "benchmark: run in release mode with --ignored --nocapture"]
fn bench_memory_per_entry() {
    let n = 100_000;
    let before = rss_bytes();
    // A floor (max_bytes / max_entries) below every entry's estimate, so that the
    // charged weight is the estimate itself.
    let c = cache(CacheConfig { max_entries: 10 * n, max_bytes: 256 << 20, ..CacheConfig::default() });
    let now = t0();
    let mut octets = 0;
    for i in 0..n {
        let qn = format!("host-{i}.bench.example.");
        let up = Answer::new(&qn, RecordType::A).answer(a(&qn, 3600, 1)).answer(a(&qn, 3600, 2));
        let wire = up.wire();
        octets += wire.len();
        c.store(key(&qn, RecordType::A), &wire, now);
    }
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "{} entries, {} answer octets; RSS grew {} KiB = {} B/entry; estimated {} B/entry",
        c.len(),
        octets,
        grown / 1024,
        grown / c.len().max(1),
        c.weight_bytes() / c.len().max(1),
    );
}
