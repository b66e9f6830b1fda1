//! sd_notify: the test plays systemd with a real unix datagram socket.
//!
//! - The [`Notifier`] in-process, pointed at the socket: every message and its format,
//!   status de-duplication, `MONOTONIC_USEC`, abstract sockets, a vanished manager.
//! - [`run_watchdog`] under virtual time, and [`probe`] against a real daemon.
//! - `Notifier::from_env` in a child process (the environment is per process).
//! - The real binary with `NOTIFY_SOCKET` set. The transcript tests marked
//!   `needs daemon wiring` become live when `main.rs`/`daemon.rs` call the notifier
//!   (issue 6); run them with `cargo test --test systemd_notify -- --ignored binary_`.

mod common;
mod support;
mod systemd_support;

use std::{
    ffi::OsStr,
    io::Write,
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use common::{
    TestUpstream, UpstreamOptions,
    dns::{answer_strings, parse, query},
    tcp_query, udp_query,
};
use hickory_proto::rr::RecordType;
use stubborn::systemd::{Notifier, ProbeError, probe, run_watchdog};
use systemd_support::*;

fn notifier_for(sock: &NotifySocket, watchdog: Option<Duration>) -> Notifier {
    let n = Notifier::to_socket(sock.path.as_os_str(), watchdog);
    assert!(n.is_enabled());
    n
}

fn monotonic_usec() -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    ts.tv_sec as i128 * 1_000_000 + ts.tv_nsec as i128 / 1000
}

#[tokio::test]
async fn every_message_reaches_the_manager_in_sd_notify_format() {
    let sock = NotifySocket::bind();
    let n = notifier_for(&sock, Some(Duration::from_secs(30)));
    let wait = Duration::from_secs(2);

    n.ready("1/1 upstreams up; no upstream connected; cache 0 entries");
    assert_eq!(
        sock.recv(wait).await.unwrap(),
        "READY=1\nSTATUS=1/1 upstreams up; no upstream connected; cache 0 entries\n"
    );

    n.watchdog_ping();
    assert_eq!(sock.recv(wait).await.unwrap(), "WATCHDOG=1\n");
    assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));

    n.reloading();
    let msg = sock.recv(wait).await.unwrap();
    let keys: Vec<&str> = fields(&msg).iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["RELOADING", "MONOTONIC_USEC", "STATUS"], "{msg}");
    assert_eq!(field(&msg, "RELOADING"), Some("1"));

    n.ready("2/2 upstreams up; via 127.0.0.1:853 tls; cache 3 entries");
    let msg = sock.recv(wait).await.unwrap();
    assert_eq!(field(&msg, "READY"), Some("1"), "{msg}");

    n.stopping();
    let msg = sock.recv(wait).await.unwrap();
    assert_eq!(fields(&msg)[0], ("STOPPING", "1"), "{msg}");
    assert!(field(&msg, "STATUS").unwrap().starts_with("stopping"), "{msg}");

    assert_eq!(sock.drain(), Vec::<String>::new());
}

#[tokio::test]
async fn status_is_sent_only_when_it_changes() {
    let sock = NotifySocket::bind();
    let n = notifier_for(&sock, None);
    n.ready("a");
    assert!(!n.status("a"), "same as READY's status");
    assert!(n.status("b"));
    assert!(!n.status("b"));
    assert!(!n.status("b"));
    assert!(n.status("a"));
    assert!(n.status("multi\nline"));
    assert_eq!(sock.drain(), ["READY=1\nSTATUS=a\n", "STATUS=b\n", "STATUS=a\n", "STATUS=multi line\n"]);
    // A reload and a stop set their own status, so the next update is sent again.
    n.reloading();
    assert!(n.status("a"));
    assert_eq!(sock.drain().len(), 2);
}

#[tokio::test]
async fn reloading_carries_the_current_monotonic_time() {
    // systemd ≥ 253 rejects a Type=notify-reload reload whose RELOADING=1 lacks
    // MONOTONIC_USEC, or carries a time from before it sent the signal.
    let sock = NotifySocket::bind();
    let n = notifier_for(&sock, None);
    let before = monotonic_usec();
    n.reloading();
    let after = monotonic_usec();
    let msg = sock.recv(Duration::from_secs(2)).await.unwrap();
    let usec: i128 = field(&msg, "MONOTONIC_USEC").unwrap().parse().unwrap();
    assert!(before <= usec && usec <= after, "{before} <= {usec} <= {after}");
}

#[tokio::test]
async fn abstract_notify_sockets_work() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("stubborn-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let server = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let n = Notifier::to_socket(OsStr::new(&format!("@{name}")), None);
    n.ready("ok");
    let mut buf = [0u8; 256];
    let len = server.recv(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok\n");
}

#[tokio::test]
async fn a_vanished_manager_does_not_stop_the_daemon() {
    let sock = NotifySocket::bind();
    let n = notifier_for(&sock, Some(Duration::from_secs(1)));
    let path = sock.path.clone();
    drop(sock);
    assert!(!path.exists());
    assert!(n.send(&[sd_notify::NotifyState::Ready]).is_err());
    // The convenience methods log and carry on.
    n.ready("x");
    n.watchdog_ping();
    n.reloading();
    n.stopping();
    // A status that failed to send is not remembered: it is retried next time.
    assert!(!n.status("y"));
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_pings_only_while_the_health_check_passes() {
    const HEALTHY: u8 = 0;
    const FAILING: u8 = 1;
    const HANGING: u8 = 2;
    let sock = NotifySocket::bind();
    let n = Arc::new(notifier_for(&sock, Some(Duration::from_millis(200))));
    let every = n.watchdog_interval().unwrap();
    assert_eq!(every, Duration::from_millis(100));
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let check_mode = mode.clone();
    let task = tokio::spawn(run_watchdog(n, every, move || {
        let mode = check_mode.load(Ordering::SeqCst);
        async move {
            if mode == HANGING {
                std::future::pending::<()>().await;
            }
            mode == HEALTHY
        }
    }));
    let pings = |msgs: Vec<String>| {
        assert!(msgs.iter().all(|m| m == "WATCHDOG=1\n"), "{msgs:?}");
        msgs.len()
    };

    // Ticks at 0, 100, 200, 300 ms.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(pings(sock.drain()), 4);

    mode.store(FAILING, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pings(sock.drain()), 0, "no ping while the check fails");

    mode.store(HANGING, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pings(sock.drain()), 0, "no ping while the check hangs");

    mode.store(HEALTHY, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pings(sock.drain()) >= 2, "pings resume");
    task.abort();
}

#[tokio::test]
async fn the_probe_is_answered_through_a_real_daemon() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let stub = support::Stub::pinned(&up).await;
    probe(stub.addr, Duration::from_secs(3)).await.expect("answered");
    // Bound to 127.0.0.1 here; an unspecified listen address is probed via loopback.
    let unspecified = SocketAddr::from(([0, 0, 0, 0], stub.addr.port()));
    probe(unspecified, Duration::from_secs(3)).await.expect("answered via loopback");
    stub.shutdown().await;
}

#[tokio::test]
async fn the_probe_passes_when_upstreams_are_down_but_the_daemon_answers() {
    // A dead upstream means SERVFAIL, which still proves the query path is alive: the
    // watchdog must not turn a network outage into a restart loop.
    let up = TestUpstream::with_fault(common::Fault::NeverAnswer).await;
    let stub = support::Stub::pinned(&up).await; // query_timeout_ms = 2000
    probe(stub.addr, Duration::from_secs(4)).await.expect("SERVFAIL counts as an answer");
    stub.shutdown().await;
}

#[tokio::test]
async fn the_probe_fails_on_a_silent_port() {
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let err = probe(addr, Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
    // Nothing listening at all: ICMP port unreachable surfaces as an I/O error.
    drop(silent);
    let err = probe(addr, Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(err, ProbeError::Io { .. } | ProbeError::Timeout { .. }), "{err}");
}

/// The child half of `from_env_*`: prints what `Notifier::from_env` saw and notifies.
#[test]
#[ignore = "child process of from_env_reads_the_environment_once"]
fn child_notifier_from_env() {
    if std::env::var_os("STUBBORN_TEST_CHILD").is_none() {
        return;
    }
    let n = Notifier::from_env();
    println!("CHILD: enabled={}", n.is_enabled());
    println!("CHILD: interval={:?}", n.watchdog_interval());
    n.ready("from child");
}

#[tokio::test]
async fn from_env_reads_the_environment_once() {
    let run = |cmd: &mut Command| {
        let out = cmd
            .args(child_test_args("child_notifier_from_env"))
            .env("STUBBORN_TEST_CHILD", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        child_lines(&out.stdout)
    };

    // NOTIFY_SOCKET + WATCHDOG_USEC + WATCHDOG_PID naming the child: watchdog at half.
    let sock = NotifySocket::bind();
    let lines = run(with_own_pid_in("WATCHDOG_PID", this_test_binary())
        .env("NOTIFY_SOCKET", &sock.path)
        .env("WATCHDOG_USEC", "3000000"));
    assert_eq!(lines, ["enabled=true", "interval=Some(1.5s)"]);
    assert_eq!(sock.recv(Duration::from_secs(2)).await.unwrap(), "READY=1\nSTATUS=from child\n");

    // WATCHDOG_PID naming another process (a parent that exported it): no watchdog.
    let lines = run(Command::new(this_test_binary())
        .env("NOTIFY_SOCKET", &sock.path)
        .env("WATCHDOG_USEC", "3000000")
        .env("WATCHDOG_PID", "1"));
    assert_eq!(lines, ["enabled=true", "interval=None"]);
    sock.drain();

    // No NOTIFY_SOCKET: nothing at all, even with a watchdog configured.
    let lines =
        run(Command::new(this_test_binary()).env_remove("NOTIFY_SOCKET").env("WATCHDOG_USEC", "3000000"));
    assert_eq!(lines, ["enabled=false", "interval=None"]);
    assert_eq!(sock.recv(Duration::from_millis(200)).await, None);
}

// ---- The real binary --------------------------------------------------------------

struct Running {
    /// `None` once stopped; killed on drop otherwise (a failed assertion must not leave
    /// a daemon behind).
    child: Option<std::process::Child>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn write(path: &std::path::Path, text: &str) {
    std::fs::File::create(path).unwrap().write_all(text.as_bytes()).unwrap();
}

/// Starts the binary on a free loopback port against `up`, with `NOTIFY_SOCKET` (and
/// `WATCHDOG_USEC` when `watchdog` is set) as systemd would.
fn spawn_daemon(up: &TestUpstream, sock: &NotifySocket, watchdog: Option<Duration>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let listen = common::private_listen_addr();
    let config = dir.path().join("stubborn.toml");
    write(&config, &daemon_config(&listen.to_string(), up.addr, &up.leaf_key_pin));
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock.path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(w) = watchdog {
        cmd.env("WATCHDOG_USEC", w.as_micros().to_string());
    }
    Running { child: Some(cmd.spawn().unwrap()), addr: listen, _dir: dir, config }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    async fn stop(mut self) -> (Option<i32>, String) {
        let child = self.child.take().expect("running");
        kill(child.id(), "TERM");
        let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    async fn answers(&self) -> bool {
        matches!(
            udp_query(self.addr, &query(1, "a.test", RecordType::A), Duration::from_millis(500)).await,
            Ok(a) if answer_strings(&parse(&a)) == ["192.0.2.1"]
        )
    }
}

const START: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_daemon_under_a_manager_serves_and_sends_only_well_formed_notifications() {
    // Holds for the binary with or without the wiring.
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let sock = NotifySocket::bind();
    let d = spawn_daemon(&up, &sock, None);
    let deadline = tokio::time::Instant::now() + START;
    while !d.answers().await {
        assert!(tokio::time::Instant::now() < deadline, "never answered");
    }
    let (code, stderr) = d.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    for msg in sock.drain() {
        assert!(msg.ends_with('\n') && !fields(&msg).is_empty(), "{msg:?}");
    }
}

#[tokio::test]
async fn binary_ready_only_once_the_port_answers_and_stopping_on_sigterm() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let sock = NotifySocket::bind();
    let d = spawn_daemon(&up, &sock, None);
    let (ready, before) = sock
        .recv_until(START, |m| field(m, "READY") == Some("1"))
        .await
        .unwrap_or_else(|seen| panic!("no READY=1; got {seen:?}"));
    // At READY=1 every listener is bound: the very first query is answered, on both
    // transports, without retrying.
    assert!(d.answers().await, "READY=1 before the port answers");
    let tcp = tcp_query(d.addr, &query(2, "a.test", RecordType::A)).await.expect("TCP answers at READY=1");
    assert_eq!(answer_strings(&parse(&tcp)), ["192.0.2.1"]);
    assert!(field(&ready, "STATUS").is_some(), "READY carries a status: {ready:?}");
    assert!(
        before.iter().all(|m| field(m, "STATUS").is_some() && fields(m).len() == 1),
        "only STATUS= may precede READY=1: {before:?}"
    );

    kill(d.pid(), "TERM");
    let (stopping, _) = sock
        .recv_until(START, |m| field(m, "STOPPING") == Some("1"))
        .await
        .unwrap_or_else(|seen| panic!("no STOPPING=1; got {seen:?}"));
    assert!(field(&stopping, "STATUS").is_some());
    let (code, stderr) = d.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn binary_keeps_the_watchdog_period() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let sock = NotifySocket::bind();
    let watchdog_sec = Duration::from_millis(600);
    let d = spawn_daemon(&up, &sock, Some(watchdog_sec));
    sock.recv_until(START, |m| field(m, "READY") == Some("1")).await.expect("READY=1");
    // Over 3 s, pings come about every 300 ms and never further apart than WatchdogSec.
    let mut last = tokio::time::Instant::now();
    let mut pings = 0;
    let end = last + Duration::from_secs(3);
    while tokio::time::Instant::now() < end {
        let msg = sock
            .recv(watchdog_sec)
            .await
            .unwrap_or_else(|| panic!("no WATCHDOG=1 within WatchdogSec after {pings} pings"));
        if field(&msg, "WATCHDOG") == Some("1") {
            let now = tokio::time::Instant::now();
            assert!(now - last < watchdog_sec, "gap {:?}", now - last);
            last = now;
            pings += 1;
        }
    }
    assert!((6..=14).contains(&pings), "{pings} pings in 3 s at 300 ms");
    let (code, stderr) = d.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn binary_brackets_a_reload_with_reloading_and_ready() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let sock = NotifySocket::bind();
    let d = spawn_daemon(&up, &sock, None);
    sock.recv_until(START, |m| field(m, "READY") == Some("1")).await.expect("READY=1");

    for config_ok in [true, false] {
        if !config_ok {
            // An invalid config: still RELOADING=1 then READY=1, and the daemon serves on.
            write(&d.config, "[server]\nbogus = 1\n");
        }
        kill(d.pid(), "HUP");
        let (reloading, _) = sock
            .recv_until(START, |m| field(m, "RELOADING") == Some("1"))
            .await
            .unwrap_or_else(|seen| panic!("no RELOADING=1; got {seen:?}"));
        let usec: u64 =
            field(&reloading, "MONOTONIC_USEC").expect("MONOTONIC_USEC with RELOADING=1").parse().unwrap();
        assert!(usec > 0);
        sock.recv_until(START, |m| field(m, "READY") == Some("1"))
            .await
            .unwrap_or_else(|seen| panic!("no READY=1 after the reload; got {seen:?}"));
        assert!(d.answers().await, "serves after reload (config ok: {config_ok})");
    }
    let (code, stderr) = d.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    // The invalid reload was refused with the file, the key and the reason.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("reload refused") && l.contains("server.bogus") && l.contains("unknown key")),
        "{stderr}"
    );
}

#[tokio::test]
async fn binary_status_changes_when_the_upstream_fails() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let sock = NotifySocket::bind();
    let d = spawn_daemon(&up, &sock, None);
    sock.recv_until(START, |m| field(m, "READY") == Some("1")).await.expect("READY=1");
    assert!(d.answers().await);
    let up_status = format!("1/1 upstreams up; via {} tls", up.addr);
    sock.recv_until(START, |m| field(m, "STATUS").is_some_and(|s| s.starts_with(&up_status)))
        .await
        .unwrap_or_else(|seen| panic!("no {up_status:?}; got {seen:?}"));

    up.shutdown_and_wait().await;
    let _ = udp_query(d.addr, &query(3, "b.test", RecordType::A), Duration::from_secs(3)).await;
    sock.recv_until(START, |m| field(m, "STATUS").is_some_and(|s| s.starts_with("0/1 upstreams up")))
        .await
        .unwrap_or_else(|seen| panic!("STATUS did not change; got {seen:?}"));
    let (code, stderr) = d.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}
