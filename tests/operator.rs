//! The operator's commands through the real binary: `stubborn health` against a daemon
//! with a working and a dead upstream, `stubborn pin` against the in-process upstream
//! (its values checked against the harness's own), `stubborn pin --check`, and the query
//! log.

mod common;
mod support;

use std::{
    net::{TcpListener, UdpSocket},
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{
    ChainKind, TestUpstream, UpstreamOptions,
    dns::{parse, query},
    udp_query, unrelated_key_pin,
};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use support::{Auth, Stub, UDP_WAIT, upstream_block};

const BIN: &str = env!("CARGO_BIN_EXE_stubborn");

/// Runs the binary off the runtime's threads (the in-process upstream and daemon keep
/// running on them meanwhile).
async fn stubborn(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("STUBBORN_CONFIG")
        .env_remove("STUBBORN_LISTEN")
        .env_remove("STUBBORN_ALLOW")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pinned daemon in-process, and the `--server` argument that reaches it.
async fn pinned_stub(up: &TestUpstream, name: &str) -> (Stub, String) {
    let dir = tempfile::tempdir().unwrap();
    let block = upstream_block(name, up, Auth::Pin(&up.leaf_key_pin), &dir);
    let stub = Stub::start("", &block, dir).await;
    let server = stub.addr.to_string();
    (stub, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_ok_with_a_working_upstream_and_fails_once_it_dies_even_with_a_cached_answer() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let (stub, server) = pinned_stub(&up, "health-up").await;
    let out = stubborn(&["health", "--server", &server, "--name", "a.test"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let line = stdout(&out);
    assert!(line.starts_with("healthy: ") && line.contains("NOERROR"), "{line}");
    assert_eq!(line.lines().count(), 1, "one line: {line}");

    // A normal client's query puts a.test NS in the cache ...
    let cached = parse(&udp_query(stub.addr, &query(1, "a.test", RecordType::NS), UDP_WAIT).await.unwrap());
    assert_eq!(cached.metadata.response_code, ResponseCode::NoError);
    let queries_before = up.queries_received();
    // ... and the probe still goes upstream: it bypasses the cache.
    let out = stubborn(&["health", "--server", &server, "--name", "a.test"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(up.queries_received(), queries_before + 1, "the probe reached the upstream");

    // The upstream dies: clients still get the cached answer, the probe says unhealthy.
    up.shutdown_and_wait().await;
    let still = parse(&udp_query(stub.addr, &query(2, "a.test", RecordType::NS), UDP_WAIT).await.unwrap());
    assert_eq!(still.metadata.response_code, ResponseCode::NoError, "served from the cache");
    let out = stubborn(&["health", "--server", &server, "--name", "a.test"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let line = stdout(&out);
    assert!(
        line.starts_with("unhealthy: ") && line.contains("SERVFAIL") && line.contains("EDE 23"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    // The daemon itself still answers: the liveness check passes.
    let out = stubborn(&["health", "--server", &server, "--local"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    stub.shutdown().await;
}

#[tokio::test]
async fn health_fails_with_a_dead_upstream_and_says_why() {
    // Nothing listens on the upstream's port: every attempt is refused (RST).
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let block = format!(
        "[[upstream]]\nname = \"dead\"\naddresses = [\"127.0.0.1\"]\ntls_port = {closed}\npins = [\"{}\"]\n",
        unrelated_key_pin()
    );
    let stub = Stub::start("", &block, tempfile::tempdir().unwrap()).await;
    let started = Instant::now();
    let out = stubborn(&["health", "--server", &stub.addr.to_string()], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let line = stdout(&out);
    assert!(line.starts_with("unhealthy: ") && line.contains("\". NS\" with SERVFAIL"), "{line}");
    assert!(line.contains("EDE 23 Network Error"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(5));
    stub.shutdown().await;
}

#[tokio::test]
async fn health_without_a_daemon_fails_within_its_timeout() {
    // Nothing ever listens on a private address.
    let nobody = common::private_listen_addr().to_string();
    let started = Instant::now();
    let out = stubborn(&["health", "--server", &nobody, "--timeout-ms", "500"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with(&format!("unhealthy: {nobody}")), "{}", stdout(&out));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn health_finds_the_daemon_from_the_config_and_stubborn_listen() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let (stub, _) = pinned_stub(&up, "health-config").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stubborn.toml");
    let block = upstream_block("u", &up, Auth::Pin(&up.leaf_key_pin), &dir);
    std::fs::write(&config, format!("[server]\nlisten = [\"{}\"]\n{block}", stub.addr)).unwrap();
    let config = config.to_str().unwrap();
    let out = stubborn(&["health", "--config", config, "--name", "a.test"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains(&stub.addr.to_string()));
    // The same through STUBBORN_CONFIG; STUBBORN_LISTEN replaces the file's listen.
    let out = stubborn(&["health", "--name", "a.test"], &[("STUBBORN_CONFIG", config)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let elsewhere = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let listen = elsewhere.to_string();
    let env = [("STUBBORN_CONFIG", config), ("STUBBORN_LISTEN", listen.as_str())];
    let out = stubborn(&["health", "--name", "a.test", "--timeout-ms", "300"], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains(&listen), "{}", stdout(&out));
    stub.shutdown().await;
}

/// The pins under each `[i] role` heading of `stubborn pin`'s report.
fn printed_chain(report: &str) -> Vec<(String, String, String)> {
    let mut chain = Vec::new();
    let mut lines = report.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(role) = line.strip_prefix('[').and_then(|l| l.split_once("] ")).map(|(_, r)| r.to_owned())
        else {
            continue;
        };
        let mut key = String::new();
        let mut cert = String::new();
        while let Some(next) = lines.peek().filter(|l| l.starts_with("    ")) {
            let next = next.trim();
            if next.starts_with("key-fp:") {
                key = next.to_owned();
            } else if next.starts_with("cert-fp:") {
                cert = next.to_owned();
            }
            lines.next();
        }
        chain.push((role, key, cert));
    }
    chain
}

#[tokio::test]
async fn pin_prints_the_values_the_harness_computed() {
    let up =
        TestUpstream::start(UpstreamOptions { chain: ChainKind::WithIntermediate, ..Default::default() })
            .await;
    let out = stubborn(&["pin", &up.addr.to_string(), "--tls-name", "dns.test"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report = stdout(&out);
    let chain = printed_chain(&report);
    assert_eq!(chain.len(), 2, "{report}");
    assert_eq!(chain[0], ("leaf".to_owned(), up.leaf_key_pin.clone(), up.leaf_cert_pin.clone()), "{report}");
    assert_eq!(chain[1].0, "intermediate");
    assert_eq!(Some(&chain[1].1), up.intermediate_key_pin.as_ref(), "{report}");
    assert_eq!(chain[1].2, common::cert_pin_of(up.chain[1].as_ref()), "{report}");
    for advice in [
        "accepted",
        "breaks when the server rotates its key",
        "backup pin",
        "works only together with tls_name",
        "pins here: leaf: authenticates the server by itself",
        "pins here: CA at depth 1: accepted now together with tls_name = \"dns.test\"",
    ] {
        assert!(report.contains(advice), "{advice:?} missing:\n{report}");
    }
    // The server records the SNI when its side of the handshake completes, which may be
    // just after the tool has exited.
    let seen = |n: usize| {
        let up = &up;
        async move {
            for _ in 0..200 {
                if up.server_names_seen().len() >= n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    seen(1).await;
    assert_eq!(up.server_names_seen().last().cloned().flatten().as_deref(), Some("dns.test"), "SNI sent");
    // Without --tls-name no SNI is sent (as the daemon does without tls_name).
    let out = stubborn(&["pin", &format!("127.0.0.1:{}", up.addr.port())], &[]).await;
    assert_eq!(printed_chain(&stdout(&out))[0].1, up.leaf_key_pin);
    seen(2).await;
    assert_eq!(up.server_names_seen().last().cloned().flatten(), None);
}

#[tokio::test]
async fn a_pin_printed_by_the_tool_is_accepted_by_the_daemon() {
    let up =
        TestUpstream::start(UpstreamOptions { chain: ChainKind::WithIntermediate, ..Default::default() })
            .await;
    let out = stubborn(&["pin", &up.addr.to_string(), "--tls-name", "dns.test"], &[]).await;
    let intermediate = printed_chain(&stdout(&out))[1].1.clone();
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::PinWithName { pin: &intermediate, tls_name: "dns.test" };
    let stub = Stub::start("", &upstream_block("printed", &up, auth, &dir), dir).await;
    let m = parse(&udp_query(stub.addr, &query(9, "a.test", RecordType::A), UDP_WAIT).await.unwrap());
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    stub.shutdown().await;
}

fn config_with_pins(dir: &Path, up: &TestUpstream, tls_name: Option<&str>, pins: &[&str]) -> String {
    let pins: Vec<String> = pins.iter().map(|p| format!("\"{p}\"")).collect();
    let path = dir.join(format!("pins-{}-{}.toml", pins.len(), tls_name.is_some()));
    let name = tls_name.map(|n| format!("tls_name = \"{n}\"\n")).unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "[[upstream]]\nname = \"pinned\"\naddresses = [\"{}\"]\ntls_port = {}\npins = [{}]\n{name}\
             [[upstream]]\nname = \"by-ca\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"dns.example\"\n",
            up.addr.ip(),
            up.addr.port(),
            pins.join(", ")
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn pin_check_passes_good_pins_and_names_the_upstream_that_would_fail() {
    let up =
        TestUpstream::start(UpstreamOptions { chain: ChainKind::WithIntermediate, ..Default::default() })
            .await;
    let dir = tempfile::tempdir().unwrap();
    let intermediate = up.intermediate_key_pin.clone().unwrap();
    let unrelated = unrelated_key_pin();
    for (name, good) in [
        (None, vec![up.leaf_key_pin.as_str()]),
        (Some("dns.test"), vec![intermediate.as_str(), unrelated.as_str()]),
    ] {
        let config = config_with_pins(dir.path(), &up, name, &good);
        let out = stubborn(&["pin", "--check", "--config", &config], &[]).await;
        let report = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{report}");
        assert!(report.contains("upstream \"pinned\": ok"), "{report}");
        assert!(report.contains(&format!("{}: ok: a pin matches", up.addr)), "{report}");
        assert!(report.contains("upstream \"by-ca\": no pins; not checked"), "{report}");
    }
    // A CA pin without tls_name, or for a name the leaf does not carry, would fail, and the
    // report says which check.
    for (name, why) in
        [(None, "CA pin without tls_name"), (Some("other.test"), "leaf not valid for tls_name")]
    {
        let config = config_with_pins(dir.path(), &up, name, &[&intermediate]);
        let out = stubborn(&["pin", "--check", "--config", &config], &[]).await;
        let report = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{report}");
        assert!(report.contains("upstream \"pinned\": WOULD FAIL"), "{report}");
        assert!(report.contains("FAIL: CA pin refused: pinned CA at depth 1"), "{report}");
        assert!(report.contains(why), "{why:?}:\n{report}");
    }
    let config = config_with_pins(dir.path(), &up, None, &[&unrelated]);
    let out = stubborn(&["pin", "--check", "--config", &config], &[]).await;
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("upstream \"pinned\": WOULD FAIL"), "{report}");
    assert!(report.contains("pin mismatch") && report.contains(&up.leaf_key_pin), "{report}");
    assert!(report.contains("1 would fail"), "{report}");
}

#[tokio::test]
async fn the_query_log_names_type_rcode_latency_and_upstream_only_when_asked() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    for on in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let addr = common::private_listen_addr();
        let block = upstream_block("logged", &up, Auth::Pin(&up.leaf_key_pin), &dir);
        let path = dir.path().join("stubborn.toml");
        std::fs::write(&path, format!("[server]\nlisten = [\"{addr}\"]\n[log]\nqueries = {on}\n{block}"))
            .unwrap();
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while udp_query(addr, &query(1, "a.test", RecordType::A), Duration::from_millis(300)).await.is_err() {
            assert!(Instant::now() < deadline, "the daemon never answered");
        }
        udp_query(addr, &query(2, "a.test", RecordType::A), UDP_WAIT).await.unwrap();
        udp_query(addr, &query(3, "nope.test", RecordType::AAAA), UDP_WAIT).await.unwrap();
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let out = tokio::task::spawn_blocking(move || {
            let _ = child.wait();
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            stderr
        })
        .await
        .unwrap();
        let logged: Vec<&str> = out.lines().filter(|l| l.contains("stubborn::query")).collect();
        if !on {
            assert!(logged.is_empty(), "query log off by default:\n{out}");
            continue;
        }
        let upstream = format!("via=logged@{}/tls", up.addr);
        let find = |needles: &[&str]| logged.iter().any(|l| needles.iter().all(|n| l.contains(n)));
        assert!(
            find(&["name=a.test.", "qtype=A", "rcode=NOERROR", "latency_us=", &upstream, "transport=udp"]),
            "{out}"
        );
        assert!(find(&["name=a.test.", "rcode=NOERROR", "via=cache"]), "{out}");
        assert!(find(&["name=nope.test.", "qtype=AAAA", "rcode=NXDOMAIN"]), "{out}");
    }
}

#[tokio::test]
async fn a_refused_ca_pin_is_logged_with_the_check_that_failed() {
    // The server holds a leaf from the pinned intermediate, but for another name.
    let up = TestUpstream::start(UpstreamOptions {
        chain: ChainKind::WithIntermediate,
        tls_name: "attacker.test".into(),
        ..Default::default()
    })
    .await;
    let intermediate = up.intermediate_key_pin.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = common::private_listen_addr();
    let auth = Auth::PinWithName { pin: &intermediate, tls_name: "dns.test" };
    let block = upstream_block("borrowed", &up, auth, &dir);
    let path = dir.path().join("stubborn.toml");
    std::fs::write(&path, format!("[server]\nlisten = [\"{addr}\"]\n{block}")).unwrap();
    // Killed if the test fails before it stops the daemon.
    let mut guard = common::KillOnDrop(Some(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        if let Ok(wire) =
            udp_query(addr, &query(1, "a.test", RecordType::A), Duration::from_millis(300)).await
        {
            break parse(&wire);
        }
        assert!(Instant::now() < deadline, "the daemon never answered");
    };
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    let mut child = guard.0.take().unwrap();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        stderr
    })
    .await
    .unwrap();
    assert!(
        out.lines().any(|l| l.contains("WARN")
            && l.contains("CA pin refused")
            && l.contains("upstream=borrowed")
            && l.contains("depth=1")
            && l.contains("leaf not valid for tls_name")
            && l.contains("attacker.test")),
        "{out}"
    );
    assert_eq!(up.queries_received(), 0);
}
