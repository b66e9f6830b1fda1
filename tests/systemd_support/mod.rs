//! Helpers shared by `tests/systemd_*.rs`: playing the service manager's notify socket,
//! passing descriptors 3, 4, … to a child like systemd does, and re-running one
//! `#[ignore]`d test of the current test binary as a child process (for what changes the
//! whole process: inherited descriptors, uid switches).
#![allow(dead_code)]

use std::{
    io,
    net::{SocketAddr, TcpListener, UdpSocket},
    os::{fd::RawFd, unix::process::CommandExt},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use tempfile::TempDir;
use tokio::time::{Instant, timeout_at};

pub const BIN: &str = env!("CARGO_BIN_EXE_stubborn");

/// The service manager's end of `NOTIFY_SOCKET`: a unix datagram socket in a temp dir.
pub struct NotifySocket {
    pub dir: TempDir,
    pub path: PathBuf,
    socket: tokio::net::UnixDatagram,
    /// The same socket, for reads that must not wait for the reactor (tokio's
    /// `try_recv` reports WouldBlock until the reactor has seen the socket readable).
    raw: std::os::unix::net::UnixDatagram,
}

impl NotifySocket {
    /// Binds `<tempdir>/notify`. Needs a tokio runtime.
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let raw = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        raw.set_nonblocking(true).unwrap();
        let socket = tokio::net::UnixDatagram::from_std(raw.try_clone().unwrap()).unwrap();
        NotifySocket { dir, path, socket, raw }
    }

    /// The next datagram, if one arrives within `within`.
    pub async fn recv(&self, within: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(within, self.socket.recv(&mut buf)).await.ok()?.unwrap();
        Some(String::from_utf8(buf[..n].to_vec()).expect("notifications are UTF-8"))
    }

    /// The next datagram if one is queued now (never waits; works under paused time).
    pub fn try_recv(&self) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        match self.raw.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8(buf[..n].to_vec()).unwrap()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Every datagram queued now.
    pub fn drain(&self) -> Vec<String> {
        std::iter::from_fn(|| self.try_recv()).collect()
    }

    /// Receives until a datagram satisfies `pred`, within `within`. Returns it and the
    /// datagrams before it, or `None` with what was seen.
    pub async fn recv_until(
        &self,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<(String, Vec<String>), Vec<String>> {
        let deadline = Instant::now() + within;
        let mut before = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            match timeout_at(deadline, self.socket.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
                    if pred(&msg) {
                        return Ok((msg, before));
                    }
                    before.push(msg);
                }
                Ok(Err(e)) => panic!("notify socket: {e}"),
                Err(_) => return Err(before),
            }
        }
    }
}

/// The `KEY=value` lines of one notification.
pub fn fields(msg: &str) -> Vec<(&str, &str)> {
    msg.lines().filter(|l| !l.is_empty()).map(|l| l.split_once('=').expect("KEY=value")).collect()
}

/// The value of `key` in one notification.
pub fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    fields(msg).into_iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Arranges for `fds` to become descriptors 3, 4, … in the child (without
/// close-on-exec), as systemd passes `ListenStream=`/`ListenDatagram=` sockets. The
/// caller keeps `fds` open until the child is spawned.
pub fn pass_fds(cmd: &mut Command, fds: &[RawFd]) {
    const MAX: usize = 8;
    assert!(fds.len() <= MAX);
    let mut sources = [0 as RawFd; MAX];
    sources[..fds.len()].copy_from_slice(fds);
    let count = fds.len();
    // SAFETY: the closure runs between fork and exec and only calls fcntl and dup2,
    // which are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // First move every source above the targets, so that a source already
            // sitting at 3 or 4 is not clobbered by an earlier dup2.
            let mut high = [0 as RawFd; MAX];
            for i in 0..count {
                let fd = libc::fcntl(sources[i], libc::F_DUPFD_CLOEXEC, 100);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                high[i] = fd;
            }
            for (i, &fd) in high.iter().enumerate().take(count) {
                // dup2 clears FD_CLOEXEC on the new descriptor.
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// `program args…` run through `sh` so that the environment variable `var`
/// (`LISTEN_PID`, `WATCHDOG_PID`) holds the pid of `program` itself (`exec` keeps the
/// shell's pid), as systemd sets it.
pub fn with_own_pid_in(var: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    assert!(var.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(format!(r#"export {var}=$$; exec "$0" "$@""#)).arg(program);
    cmd
}

/// The arguments that make this test binary run only the `#[ignore]`d test `name`.
pub fn child_test_args(name: &str) -> [&str; 6] {
    [name, "--exact", "--ignored", "--nocapture", "--test-threads=1", "--quiet"]
}

/// The path of the running test binary.
pub fn this_test_binary() -> PathBuf {
    std::env::current_exe().unwrap()
}

/// Lines the child printed with `CHILD: `, without the prefix.
pub fn child_lines(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("CHILD: ").map(str::to_owned))
        .collect()
}

/// A loopback port free for both UDP and TCP, with both sockets bound on it.
pub fn bound_pair() -> (UdpSocket, TcpListener) {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
}

/// Sends `signal` (e.g. "HUP") to `pid` with kill(1).
pub fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A config for the real binary: listen on `listen`, one upstream pinned by key.
pub fn daemon_config(listen: &str, upstream: SocketAddr, pin: &str) -> String {
    format!(
        "[server]\nlisten = [\"{listen}\"]\nquery_timeout_ms = 1500\n\
         [[upstream]]\nname = \"t\"\naddresses = [\"{}\"]\ntls_port = {}\npins = [\"{pin}\"]\n",
        upstream.ip(),
        upstream.port()
    )
}
