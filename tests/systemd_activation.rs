//! Socket activation: descriptors passed at 3, 4, … with `LISTEN_FDS`/`LISTEN_PID`, as
//! systemd passes the sockets of `stubborn.socket`.
//!
//! Taking over descriptors changes the whole process, so each case runs in a child: this
//! test binary re-executed to run one `#[ignore]`d `child_*` test, through
//! `sh -c 'export LISTEN_PID=$$; exec …'` so that `LISTEN_PID` is the child's own pid.
//! The `binary_*` test runs the real daemon the same way; it becomes live when
//! `Daemon::start` uses `inherited_listeners()` (issue 6).

mod common;
mod systemd_support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::{
    TestUpstream, UpstreamOptions,
    dns::{answer_strings, parse, query},
    tcp_query, udp_query,
};
use hickory_proto::rr::RecordType;
use stubborn::systemd::{ActivationError, Inherited, inherited_listeners};
use systemd_support::*;

const CHILD_WAIT: Duration = Duration::from_secs(10);

/// The child half: what `inherited_listeners` makes of the descriptors it was given.
/// `STUBBORN_TEST_CHILD` says what to do after listing them.
#[test]
#[ignore = "child process of the tests in this file"]
fn child_inherited_listeners() {
    let Some(mode) = std::env::var_os("STUBBORN_TEST_CHILD") else {
        return;
    };
    // Outside the runtime: refused, descriptors left alone.
    match inherited_listeners() {
        Err(ActivationError::NoRuntime) => println!("CHILD: outside runtime: refused"),
        Ok(None) => println!("CHILD: outside runtime: none"),
        other => println!("CHILD: outside runtime: {other:?}"),
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let listeners = match inherited_listeners() {
            Ok(Some(l)) => l,
            Ok(None) => {
                println!("CHILD: none");
                return;
            }
            Err(e) => {
                println!("CHILD: error: {e}");
                return;
            }
        };
        for l in &listeners {
            println!("CHILD: {l}");
        }
        match inherited_listeners() {
            Err(ActivationError::AlreadyTaken) => println!("CHILD: again: already taken"),
            other => println!("CHILD: again: {other:?}"),
        }
        println!("CHILD: env LISTEN_FDS={:?}", std::env::var("LISTEN_FDS").ok());
        if mode != "serve" {
            return;
        }
        // Answer one datagram on each UDP socket and one connection on each TCP one.
        for l in listeners {
            let served = tokio::time::timeout(CHILD_WAIT, async {
                match l {
                    Inherited::Udp { socket, .. } => {
                        let mut buf = [0u8; 64];
                        let (n, from) = socket.recv_from(&mut buf).await?;
                        let mut reply = b"pong:".to_vec();
                        reply.extend_from_slice(&buf[..n]);
                        socket.send_to(&reply, from).await?;
                    }
                    Inherited::Tcp { listener, .. } => {
                        let (mut conn, _) = listener.accept().await?;
                        tokio::io::AsyncWriteExt::write_all(&mut conn, b"pong").await?;
                    }
                }
                std::io::Result::Ok(())
            })
            .await;
            println!("CHILD: served: {served:?}");
        }
    });
}

/// Runs the child with `fds` at 3, 4, … and `LISTEN_FDS` = their count.
/// `listen_pid`: `None` = the child's own pid (as systemd does), `Some(p)` = `p`.
fn spawn_child(mode: &str, fds: &[RawFd], listen_pid: Option<u32>) -> std::process::Child {
    let mut cmd = match listen_pid {
        None => with_own_pid_in("LISTEN_PID", this_test_binary()),
        Some(pid) => {
            let mut cmd = Command::new(this_test_binary());
            cmd.env("LISTEN_PID", pid.to_string());
            cmd
        }
    };
    cmd.args(child_test_args("child_inherited_listeners"))
        .env("STUBBORN_TEST_CHILD", mode)
        .env("LISTEN_FDS", fds.len().to_string())
        .env_remove("LISTEN_FDNAMES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    pass_fds(&mut cmd, fds);
    cmd.spawn().unwrap()
}

fn finish(child: std::process::Child) -> (Vec<String>, Output) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (child_lines(&out.stdout), out)
}

fn ping_udp(addr: SocketAddr) -> Vec<u8> {
    let local = if addr.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" };
    let sock = UdpSocket::bind(local).unwrap();
    sock.set_read_timeout(Some(CHILD_WAIT)).unwrap();
    sock.send_to(b"ping", addr).unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("the child answers on the inherited UDP socket");
    buf[..n].to_vec()
}

fn ping_tcp(addr: SocketAddr) -> Vec<u8> {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(CHILD_WAIT)).unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).expect("the child answers on the inherited TCP socket");
    reply
}

fn ipv6_pair() -> Option<(UdpSocket, TcpListener)> {
    let udp = UdpSocket::bind("[::1]:0").ok()?;
    let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
    Some((udp, tcp))
}

#[test]
fn inherited_udp_and_tcp_sockets_are_taken_over_and_serve() {
    let (udp, tcp) = bound_pair();
    let addr = udp.local_addr().unwrap();
    let v6 = ipv6_pair();
    let mut fds = vec![udp.as_raw_fd(), tcp.as_raw_fd()];
    let mut expected = vec![format!("udp {addr}"), format!("tcp {addr}")];
    if let Some((u6, t6)) = &v6 {
        fds.extend([u6.as_raw_fd(), t6.as_raw_fd()]);
        let a6 = u6.local_addr().unwrap();
        expected.extend([format!("udp {a6}"), format!("tcp {a6}")]);
    } else {
        eprintln!("no ::1 here; testing IPv4 only");
    }
    let child = spawn_child("serve", &fds, None);
    // Our copies are not needed any more; queued datagrams and connections wait in the
    // shared sockets until the child reads them.
    drop((udp, tcp));
    assert_eq!(ping_udp(addr), b"pong:ping");
    assert_eq!(ping_tcp(addr), b"pong");
    if let Some((u6, t6)) = v6 {
        let a6 = u6.local_addr().unwrap();
        drop((u6, t6));
        assert_eq!(ping_udp(a6), b"pong:ping");
        assert_eq!(ping_tcp(a6), b"pong");
    }
    let (lines, _) = finish(child);
    let mut want = vec!["outside runtime: refused".to_owned()];
    want.extend(expected);
    want.extend([
        "again: already taken".to_owned(),
        // The environment is read, never unset.
        format!("env LISTEN_FDS={:?}", Some(fds.len().to_string())),
    ]);
    want.extend(std::iter::repeat_n("served: Ok(Ok(()))".to_owned(), fds.len()));
    assert_eq!(lines, want);
}

#[test]
fn descriptors_meant_for_another_process_are_left_alone() {
    let (udp, tcp) = bound_pair();
    // LISTEN_PID names another process (a parent that forgot to unset it).
    let child = spawn_child("list", &[udp.as_raw_fd(), tcp.as_raw_fd()], Some(1));
    let (lines, _) = finish(child);
    assert_eq!(lines, ["outside runtime: none", "none"]);
    // LISTEN_FDS=0.
    let child = spawn_child("list", &[], None);
    let (lines, _) = finish(child);
    assert_eq!(lines, ["outside runtime: none", "none"]);
}

#[test]
fn descriptors_we_cannot_serve_on_are_refused_by_number() {
    // A pipe (ListenFIFO=), a unix socket, and a TCP socket that is not listening
    // (Accept=yes hands over connections): each fails the whole call, naming the fd.
    let (pipe_read, _pipe_write) = std::io::pipe().unwrap();
    let (unix_a, _unix_b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let tcp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    tcp.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let (udp, _) = bound_pair();
    let cases: [(&str, RawFd, &str); 3] = [
        ("pipe", pipe_read.as_raw_fd(), "inherited fd 4:"),
        ("unix", unix_a.as_raw_fd(), "address family"),
        ("tcp", tcp.as_raw_fd(), "is not listening"),
    ];
    for (what, fd, expect) in cases {
        // The good UDP socket at 3, the bad one at 4.
        let child = spawn_child("list", &[udp.as_raw_fd(), fd], None);
        let (lines, _) = finish(child);
        assert_eq!(lines.len(), 2, "{what}: {lines:?}");
        assert!(
            lines[1].starts_with("error: inherited fd 4:") && lines[1].contains(expect),
            "{what}: {lines:?}"
        );
    }
}

#[tokio::test]
async fn binary_serves_on_inherited_sockets_instead_of_binding() {
    let up = TestUpstream::start(UpstreamOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stubborn.toml");
    // The configured address is another free port: with sockets passed in, it must not
    // be bound.
    let configured = common::private_listen_addr();
    std::fs::File::create(&config)
        .unwrap()
        .write_all(daemon_config(&configured.to_string(), up.addr, &up.leaf_key_pin).as_bytes())
        .unwrap();
    let (udp, tcp) = bound_pair();
    let addr = udp.local_addr().unwrap();
    let mut cmd = with_own_pid_in("LISTEN_PID", BIN);
    cmd.arg("--config")
        .arg(&config)
        .env("LISTEN_FDS", "2")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    pass_fds(&mut cmd, &[udp.as_raw_fd(), tcp.as_raw_fd()]);
    let mut child = common::KillOnDrop(Some(cmd.spawn().unwrap()));
    drop((udp, tcp));

    let wire = query(1, "a.test", RecordType::A);
    let answer =
        udp_query(addr, &wire, Duration::from_secs(10)).await.expect("answers on the inherited UDP socket");
    assert_eq!(answer_strings(&parse(&answer)), ["192.0.2.1"]);
    let answer = tcp_query(addr, &wire).await.expect("answers on the inherited TCP socket");
    assert_eq!(answer_strings(&parse(&answer)), ["192.0.2.1"]);
    assert!(
        UdpSocket::bind(configured).is_ok() && TcpListener::bind(configured).is_ok(),
        "the configured listen address was bound as well"
    );

    let child = child.0.take().unwrap();
    kill(child.id(), "TERM");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
