//! Network changes: a Wi-Fi switch, a cable pulled, a VPN up or down. The kernel tells of
//! every link, address and route change on an rtnetlink socket; on one, after the burst
//! settles, the tables are read again, and when they really differ (`fingerprint.rs`:
//! not a route's counters, not an address's DAD flags) the daemon's callback runs: its
//! pools treat every connection as suspect, forget their back-offs and race at once, as
//! after a resume, so the first query after the switch does not wait on a connection
//! that died with the old network.
//!
//! The socket is read for wake-ups only: what changed is learned from the tables, not by
//! parsing the messages, so a lost notification (ENOBUFS) costs nothing but a re-read.

mod fingerprint;

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use tokio::{io::unix::AsyncFd, task::JoinHandle, time::sleep};
use tracing::{debug, info, warn};

/// Notifications closer together than this are one change (an interface coming up sends a
/// link, several addresses and routes within milliseconds).
const SETTLE: Duration = Duration::from_millis(250);

/// The running watch; dropping it stops it.
pub struct NetWatch {
    task: JoinHandle<()>,
}

impl Drop for NetWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The machine's links, addresses and routes, canonical (see `fingerprint.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    links_and_v4: Vec<String>,
    v6_addresses: Vec<String>,
    v4_routes: Vec<String>,
    v6_routes: Vec<String>,
}

impl Snapshot {
    fn read() -> Snapshot {
        let file = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        Snapshot {
            links_and_v4: interfaces(),
            v6_addresses: fingerprint::addresses_v6(&file("/proc/net/if_inet6")),
            v4_routes: fingerprint::routes_v4(&file("/proc/net/route")),
            v6_routes: fingerprint::routes_v6(&file("/proc/net/ipv6_route")),
        }
    }

    /// What differs from `before`, for the log line.
    fn changed_parts(&self, before: &Snapshot) -> Vec<&'static str> {
        [
            ("links or IPv4 addresses", self.links_and_v4 != before.links_and_v4),
            ("IPv6 addresses", self.v6_addresses != before.v6_addresses),
            ("IPv4 routes", self.v4_routes != before.v4_routes),
            ("IPv6 routes", self.v6_routes != before.v6_routes),
        ]
        .into_iter()
        .filter_map(|(what, changed)| changed.then_some(what))
        .collect()
    }
}

/// Watches for network changes and calls `on_change` after each. Must be called inside
/// the runtime. An error (no rtnetlink, as in some sandboxes) means no watch: suspends
/// and dead-connection detection still work.
pub fn watch(on_change: impl Fn() + Send + 'static) -> io::Result<NetWatch> {
    let socket = register(open()?)?;
    let task = tokio::spawn(async move {
        let mut last = Snapshot::read();
        loop {
            if let Err(err) = notified(&socket).await {
                warn!(%err, "cannot read network change notifications; no longer watching");
                return;
            }
            // Let the burst settle: each further notification restarts the wait.
            loop {
                tokio::select! {
                    _ = sleep(SETTLE) => break,
                    more = notified(&socket) => if more.is_err() { break },
                }
            }
            let now = Snapshot::read();
            let parts = now.changed_parts(&last);
            if parts.is_empty() {
                debug!("network notification without a change in links, addresses or routes");
                continue;
            }
            info!(changed = %parts.join(", "), "network changed: every upstream connection is suspect");
            last = now;
            on_change();
        }
    });
    Ok(NetWatch { task })
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged for as long as it lives,
    // and the AsyncFd owns it.
    unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))
}

/// An rtnetlink socket subscribed to link, address and route changes.
fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = (libc::RTMGRP_LINK
        | libc::RTMGRP_IPV4_IFADDR
        | libc::RTMGRP_IPV4_ROUTE
        | libc::RTMGRP_IPV6_IFADDR
        | libc::RTMGRP_IPV6_ROUTE) as u32;
    // SAFETY: addr is a valid sockaddr_nl of the length given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Waits for notifications and reads every one queued. An overrun (ENOBUFS: more came
/// than the socket holds) is a notification too: the tables are read again anyway.
async fn notified(socket: &AsyncFd<OwnedFd>) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let mut guard = socket.readable().await?;
        let mut got = false;
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe {
                libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
            };
            if n > 0 {
                got = true;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::ENOBUFS) => got = true,
                Some(libc::EINTR) => {}
                _ if n == 0 => break,
                _ => return Err(err),
            }
        }
        guard.clear_ready();
        if got {
            return Ok(());
        }
    }
}

/// Each interface's state (up, running) and IPv4 addresses, sorted: a link going down or
/// a DHCP lease on a new network.
fn interfaces() -> Vec<String> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut at = list;
    while !at.is_null() {
        // SAFETY: at points into the list getifaddrs made, until freeifaddrs.
        let entry = unsafe { &*at };
        at = entry.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string for every entry.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }.to_string_lossy();
        let state = entry.ifa_flags & (libc::IFF_UP | libc::IFF_RUNNING) as u32;
        let addr = entry.ifa_addr;
        // SAFETY: a non-null ifa_addr points to a sockaddr whose family says its type.
        if !addr.is_null() && i32::from(unsafe { (*addr).sa_family }) == libc::AF_INET {
            // SAFETY: family AF_INET: it is a sockaddr_in.
            let ip = unsafe { (*addr.cast::<libc::sockaddr_in>()).sin_addr.s_addr };
            out.push(format!("{name} {state:x} {}", std::net::Ipv4Addr::from(u32::from_be(ip))));
        } else {
            out.push(format!("{name} {state:x}"));
        }
    }
    // SAFETY: list came from getifaddrs and is not used after this.
    unsafe { libc::freeifaddrs(list) };
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_of_this_machine_reads_and_is_stable() {
        let a = Snapshot::read();
        let b = Snapshot::read();
        assert!(a.changed_parts(&b).is_empty(), "nothing changed between two reads: {a:?} {b:?}");
        assert!(a.links_and_v4.iter().any(|l| l.starts_with("lo ")), "the loopback interface: {a:?}");
    }

    #[tokio::test]
    async fn the_socket_opens_and_subscribes() {
        // Sandboxes without rtnetlink exist; where it is there, it must open and bind.
        if let Ok(fd) = open() {
            assert!(register(fd).is_ok());
        }
    }
}
