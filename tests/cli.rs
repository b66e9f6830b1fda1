//! The `stubborn` binary: `check` exit codes and messages, and the daemon's lifecycle
//! (answers, then exits 0 on SIGTERM).

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    TestUpstream, UpstreamOptions,
    dns::{answer_strings, parse, query},
    udp_query,
};
use hickory_proto::rr::RecordType;

const BIN: &str = env!("CARGO_BIN_EXE_stubborn");

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("stubborn.toml");
    std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
    path
}

#[test]
fn check_accepts_a_valid_config_and_prints_a_summary() {
    let out = Command::new(BIN).args(["check", "--config", "config/stubborn.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("uncensoreddns"), "{stdout}");
}

#[test]
fn check_rejects_a_bad_pin_with_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[[upstream]]\nname = \"x\"\naddresses = [\"192.0.2.1\"]\npins = [\"key-fp:SHA256:nope\"]\n",
    );
    let out = Command::new(BIN).args(["check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("upstream[0].pins[0]"), "{stderr}");
    assert!(stderr.contains("expected key-fp:SHA256:<base64>"), "{stderr}");
}

#[test]
fn the_daemon_refuses_to_start_on_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[server]\nlisten = [\"127.0.0.1:0\"]\nbogus = 1\n");
    let out = Command::new(BIN).arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.bogus"));
}

#[tokio::test]
async fn the_daemon_answers_and_exits_zero_on_sigterm() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = common::private_listen_addr();
    let path = write_config(
        &dir,
        &format!(
            "[server]\nlisten = [\"{addr}\"]\n[[upstream]]\nname = \"t\"\naddresses = [\"{}\"]\ntls_port = {}\npins = [\"{}\"]\n",
            up.addr.ip(),
            up.addr.port(),
            up.leaf_key_pin
        ),
    );
    let mut guard = common::KillOnDrop(Some(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match udp_query(addr, &query(1, "a.test", RecordType::A), Duration::from_millis(300)).await {
            Ok(a) => break a,
            Err(_) if Instant::now() < deadline => continue,
            Err(e) => panic!("daemon never answered: {e}"),
        }
    };
    assert_eq!(answer_strings(&parse(&answer)), vec!["192.0.2.1".to_string()]);
    let child = guard.0.take().unwrap();
    // kill(2) through the `kill` command keeps the test free of libc.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Every connection attempt is logged with its id, address, port, transport, outcome
    // and elapsed time.
    let line = stderr.lines().find(|l| l.contains("connection attempt")).expect("attempt logged");
    for field in ["attempt=", "ip=", "port=", "transport=tls", "outcome=ready", "elapsed_ms="] {
        assert!(line.contains(field), "{field} missing in: {line}");
    }
}
