//! The metrics endpoint end to end: a daemon with `[metrics] listen`, known queries, and
//! the counters read back over HTTP and parsed.
//!
//! Counters are process-wide (see `stubborn::metrics`), so each check compares a scrape
//! taken before the queries with one taken after; upstream names are unique to this file.

mod common;
mod support;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use common::{
    TestUpstream, UpstreamOptions,
    dns::{parse, query},
    tcp_query, udp_query, unrelated_key_pin,
};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use support::{Auth, Stub, UDP_WAIT, upstream_block};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// The tests of this file count queries: one at a time, so none sees another's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One HTTP/1.0 request; returns (status line, content type, body).
async fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    stream.write_all(format!("GET {path} HTTP/1.0\r\n{accept}\r\n").as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw)).await.unwrap().unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap().to_owned();
    let ctype = head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap_or_default().to_owned();
    (status, ctype, body.to_owned())
}

/// Sample lines as `name{labels}` → value.
fn parse_samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {l:?}"));
            (series.to_owned(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {l:?}")))
        })
        .collect()
}

async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, ctype, body) = http_get(addr, "/metrics", None).await;
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    parse_samples(&body)
}

fn get(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    get(after, series) - get(before, series)
}

async fn ask(stub: &Stub, id: u16, name: &str, rtype: RecordType) -> ResponseCode {
    parse(&udp_query(stub.addr, &query(id, name, rtype), UDP_WAIT).await.unwrap()).metadata.response_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_known_queries() {
    let _serial = SERIAL.lock().await;
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("metrics-up", &up, Auth::Pin(&up.leaf_key_pin), &dir);
    let mut stub = Stub::start(METRICS, &block, dir).await;
    let metrics = stub.daemon().metrics_addr().expect("the endpoint runs");
    assert!(metrics.ip().is_loopback());

    let before = scrape(metrics).await;
    // Three UDP queries, one of them a cache hit; one TCP query for a name that does not exist.
    assert_eq!(ask(&stub, 1, "a.test", RecordType::A).await, ResponseCode::NoError);
    assert_eq!(ask(&stub, 2, "a.test", RecordType::A).await, ResponseCode::NoError);
    assert_eq!(ask(&stub, 3, "aaaa.test", RecordType::AAAA).await, ResponseCode::NoError);
    let nx = parse(&tcp_query(stub.addr, &query(4, "nope.test", RecordType::A)).await.unwrap());
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let after = scrape(metrics).await;

    let q = |t: &str, rcode: &str| format!("stubborn_queries_total{{transport=\"{t}\",rcode=\"{rcode}\"}}");
    assert_eq!(delta(&before, &after, &q("udp", "NOERROR")), 3.0);
    assert_eq!(delta(&before, &after, &q("tcp", "NXDOMAIN")), 1.0);
    assert_eq!(delta(&before, &after, &q("udp", "SERVFAIL")), 0.0);
    assert_eq!(delta(&before, &after, "stubborn_cache_hits_total"), 1.0);
    assert_eq!(delta(&before, &after, "stubborn_cache_misses_total"), 3.0);
    assert_eq!(delta(&before, &after, "stubborn_cache_stale_answers_total"), 0.0);
    assert!(get(&after, "stubborn_cache_entries") >= 3.0, "a.test, aaaa.test and nope.test are cached");
    // Three upstream answers on one connection, each observed in the RTT histogram.
    let rtt = "stubborn_upstream_rtt_seconds_count{upstream=\"metrics-up\"}";
    assert_eq!(delta(&before, &after, rtt), 3.0);
    assert_eq!(get(&after, "stubborn_upstream_rtt_seconds_bucket{le=\"+Inf\",upstream=\"metrics-up\"}"), 3.0);
    assert!(get(&after, "stubborn_race_attempts_total{outcome=\"ready\",transport=\"tls\"}") >= 1.0);
    assert_eq!(get(&after, "stubborn_upstream_connections{upstream=\"metrics-up\",transport=\"tls\"}"), 1.0);
    assert!(
        !after.contains_key("stubborn_upstream_connections{upstream=\"metrics-up\",transport=\"plain\"}"),
        "a strict upstream has no plain series"
    );
    assert_eq!(get(&after, "stubborn_upstreams_configured"), 1.0);
    assert_eq!(get(&after, "stubborn_upstreams_up"), 1.0);
    assert!(
        after.contains_key("stubborn_hedges_sent_total") && after.contains_key("stubborn_hedges_won_total")
    );

    // A pin mismatch is counted per upstream, and its client gets SERVFAIL.
    let dir = tempfile::tempdir().unwrap();
    let pin = unrelated_key_pin();
    // Scraped before the start: the daemon races at once (pre-warming), so the mismatch
    // may be counted before the first query.
    let before = scrape(metrics).await;
    let bad = Stub::start("", &upstream_block("metrics-bad", &up, Auth::Pin(&pin), &dir), dir).await;
    assert_eq!(ask(&bad, 5, "txt.test", RecordType::TXT).await, ResponseCode::ServFail);
    let after = scrape(metrics).await;
    assert!(delta(&before, &after, "stubborn_pin_mismatches_total{upstream=\"metrics-bad\"}") >= 1.0);
    assert!(
        delta(&before, &after, "stubborn_race_attempts_total{outcome=\"pin-mismatch\",transport=\"tls\"}")
            >= 1.0
    );
    assert_eq!(delta(&before, &after, &q("udp", "SERVFAIL")), 1.0);
    bad.shutdown().await;
    stub.shutdown().await;
}

#[tokio::test]
async fn clear_text_fallback_is_counted() {
    let _serial = SERIAL.lock().await;
    let plain = TestUpstream::start(UpstreamOptions { tls: false, ..Default::default() }).await;
    // Nothing listens on the TLS port: the race falls back to clear text at once (RST).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let block = format!(
        "[[upstream]]\nname = \"metrics-plain\"\naddresses = [\"127.0.0.1\"]\nmode = \"opportunistic\"\n\
         tls_port = {closed}\nplain_port = {}\n",
        plain.addr.port()
    );
    let mut stub = Stub::start(METRICS, &block, tempfile::tempdir().unwrap()).await;
    let metrics = stub.daemon().metrics_addr().unwrap();
    let before = scrape(metrics).await;
    assert_eq!(ask(&stub, 7, "multi.test", RecordType::A).await, ResponseCode::NoError);
    let after = scrape(metrics).await;
    assert!(delta(&before, &after, "stubborn_upstream_plain_queries_total") >= 1.0);
    assert_eq!(
        get(&after, "stubborn_upstream_connections{upstream=\"metrics-plain\",transport=\"plain\"}"),
        1.0
    );
    assert_eq!(
        get(&after, "stubborn_upstream_connections{upstream=\"metrics-plain\",transport=\"tls\"}"),
        0.0
    );
    stub.shutdown().await;
}

#[tokio::test]
async fn queries_are_counted_by_route() {
    let _serial = SERIAL.lock().await;
    let default = TestUpstream::start(UpstreamOptions::default()).await;
    let router = TestUpstream::start(UpstreamOptions { tls: false, udp: true, ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let blocks = upstream_block("default", &default, Auth::Pin(&default.leaf_key_pin), &dir)
        + &format!(
            "[[upstream]]\nname = \"router\"\naddresses = [\"127.0.0.1\"]\nmode = \"plain\"\n\
             plain_port = {}\ndomains = [\"lan.a.test\", \"home.arpa\"]\n",
            router.addr.port()
        );
    let mut stub = Stub::start(METRICS, &blocks, dir).await;
    let metrics = stub.daemon().metrics_addr().unwrap();
    let before = scrape(metrics).await;
    assert_eq!(ask(&stub, 1, "nas.lan.a.test", RecordType::A).await, ResponseCode::NoError);
    assert_eq!(ask(&stub, 2, "printer.home.arpa", RecordType::A).await, ResponseCode::NoError);
    assert_eq!(ask(&stub, 3, "www.a.test", RecordType::A).await, ResponseCode::NoError);
    let after = scrape(metrics).await;
    assert_eq!(delta(&before, &after, "stubborn_route_queries_total{route=\"lan.a.test,home.arpa\"}"), 2.0);
    assert_eq!(delta(&before, &after, "stubborn_route_queries_total{route=\"default\"}"), 1.0);
    assert!(delta(&before, &after, "stubborn_upstream_plain_queries_total") >= 2.0);
}

#[tokio::test]
async fn openmetrics_on_request_and_404_elsewhere() {
    let _serial = SERIAL.lock().await;
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block("metrics-format", &up, Auth::Pin(&up.leaf_key_pin), &dir);
    let mut stub = Stub::start(METRICS, &block, dir).await;
    let metrics = stub.daemon().metrics_addr().unwrap();
    let (status, ctype, body) =
        http_get(metrics, "/metrics", Some("application/openmetrics-text;version=1.0.0,*/*;q=0.1")).await;
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert_eq!(ctype, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE stubborn_queries counter"), "OpenMetrics names counter families bare");
    let (status, _, _) = http_get(metrics, "/", None).await;
    assert_eq!(status, "HTTP/1.0 404 Not Found");
    stub.shutdown().await;
    // Stopped with the daemon.
    assert!(TcpStream::connect(metrics).await.is_err());
}
