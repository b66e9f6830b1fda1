//! Nameservers from a resolv.conf(5) file, for `[[upstream]] resolv_conf`
//! upstreams: the network's own resolvers, raced over TLS (853) and, being
//! opportunistic by nature, cleartext (53).
//!
//! Owns: reading the `nameserver` lines, the loop protection (never our own
//! listen addresses, never systemd-resolved's stubs) and noticing that the
//! file changed. Must never: spawn tasks, sleep, log, or follow anything but
//! `nameserver` lines. The caller drives [`ResolvConfWatch::poll`] from its
//! own timer and swaps the upstream's addresses.
//!
//! Syntax follows glibc and musl, so stubborn uses what the system resolver
//! would: a keyword starts the line (an indented line is not a keyword line),
//! `#` and `;` start comments, and the address is the first word after
//! `nameserver`; later words on the line are ignored. No limit of three
//! servers (libc's MAXNS): the race has its own caps.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// systemd-resolved's stub listeners (resolved.conf(5): 127.0.0.53 for
/// clients, 127.0.0.54 the "proxy" stub). Queries sent there go through
/// resolved, whose upstream is typically stubborn: a loop.
pub const RESOLVED_STUBS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 53), Ipv4Addr::new(127, 0, 0, 54)];

/// A resolv.conf is a few hundred bytes; anything this large is the wrong file
/// (and `/dev/zero` must not be read forever).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The `nameserver` addresses of a resolv.conf(5) text, in file order, each
/// once. Malformed lines are ignored, as libc does.
///
/// Zone ids: `fe80::1%eth0` names a link-local server through one interface.
/// [`IpAddr`] cannot carry the scope id, and without it a link-local address
/// cannot be connected to, so such servers are skipped (documented in
/// docs/configuration.md). A zone on any other address carries no meaning
/// and is dropped, keeping the address.
pub fn parse_nameservers(text: &str) -> Vec<IpAddr> {
    let mut servers: Vec<IpAddr> = Vec::new();
    for line in text.lines() {
        // libc: a comment runs from `#` or `;` to the end of the line.
        let line = match line.find(['#', ';']) {
            Some(at) => &line[..at],
            None => line,
        };
        if !line.starts_with("nameserver") {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("nameserver") {
            continue; // e.g. "nameservers 192.0.2.1"
        }
        let Some(word) = words.next() else { continue };
        let Some(ip) = parse_address(word) else {
            continue;
        };
        if !servers.contains(&ip) {
            servers.push(ip);
        }
    }
    servers
}

fn parse_address(word: &str) -> Option<IpAddr> {
    match word.split_once('%') {
        None => word.parse().ok(),
        Some((addr, _zone)) => match addr.parse().ok()? {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => None,
            IpAddr::V6(v6) => Some(IpAddr::V6(v6)),
            // A zone on an IPv4 address is not an address.
            IpAddr::V4(_) => None,
        },
    }
}

/// Why a listed nameserver is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// One of `server.listen`'s IPs: stubborn would query itself.
    OwnListen,
    /// 127.0.0.53 or 127.0.0.54 ([`RESOLVED_STUBS`]).
    ResolvedStub,
    /// `0.0.0.0` or `::`: "this host", whichever resolver listens there.
    Unspecified,
    /// Multicast (static `addresses` refuse it too) or broadcast.
    NotUnicast,
    /// `fe80::/10` without a scope id cannot be connected to.
    LinkLocal,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skip::OwnListen => "stubborn's own listen address",
            Skip::ResolvedStub => "systemd-resolved's stub, which would loop back to stubborn",
            Skip::Unspecified => "the unspecified address",
            Skip::NotUnicast => "not a unicast address",
            Skip::LinkLocal => "a link-local IPv6 address (no scope id)",
        })
    }
}

/// Why `ip` must not be used as a nameserver by a daemon listening on
/// `own_listen`, or `None` if it may. Other loopback addresses stay usable
/// (127.0.0.2 in a test namespace, Docker's 127.0.0.11, a local unbound).
/// IPs are compared, not ports: a resolver on our IP but another port is
/// still skipped, which errs on the side of never looping.
pub fn skip_reason(ip: IpAddr, own_listen: &[SocketAddr]) -> Option<Skip> {
    let ip = ip.to_canonical();
    if own_listen.iter().any(|l| l.ip().to_canonical() == ip) {
        return Some(Skip::OwnListen);
    }
    match ip {
        IpAddr::V4(v4) if RESOLVED_STUBS.contains(&v4) => Some(Skip::ResolvedStub),
        ip if ip.is_unspecified() => Some(Skip::Unspecified),
        ip if ip.is_multicast() => Some(Skip::NotUnicast),
        IpAddr::V4(v4) if v4.is_broadcast() => Some(Skip::NotUnicast),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(Skip::LinkLocal),
        _ => None,
    }
}

/// `servers` without those stubborn must never query (see [`skip_reason`]),
/// order kept.
pub fn usable(servers: Vec<IpAddr>, own_listen: &[SocketAddr]) -> Vec<IpAddr> {
    servers.into_iter().filter(|ip| skip_reason(*ip, own_listen).is_none()).collect()
}

/// Reads `path` and returns every listed nameserver ([`parse_nameservers`],
/// unfiltered). Bytes that are not UTF-8 (in a comment, a search domain)
/// do not make the file unreadable.
pub fn read_nameservers(path: &Path) -> io::Result<Vec<IpAddr>> {
    let mut file = open(path)?;
    read_open(&mut file)
}

fn open(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

fn read_open(file: &mut File) -> io::Result<Vec<IpAddr>> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes: not a resolv.conf"),
        ));
    }
    Ok(parse_nameservers(&String::from_utf8_lossy(&bytes)))
}

/// What identifies one version of the file: a rename over it (how
/// NetworkManager, resolvconf and systemd-resolved replace it atomically)
/// changes the inode, an in-place rewrite the times or the length. ctime
/// also catches a `chmod` that makes an unreadable file readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(file: &File) -> io::Result<FileStamp> {
        let m = file.metadata()?;
        Ok(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// What the last poll saw.
#[derive(Debug)]
enum Seen {
    /// Read; `servers` is the usable list last reported.
    Read { stamp: FileStamp, servers: Vec<IpAddr> },
    /// Reported as an error. `stamp` when the file could be opened and
    /// stat'ed but not read.
    Failed { kind: io::ErrorKind, stamp: Option<FileStamp> },
}

/// Notices changes to one resolv.conf, by polling: call [`poll`](Self::poll)
/// from a timer (every 2 s is plenty; inotify would miss a replaced symlink
/// target and needs a task). Cheap when nothing changed: one `open` and one
/// `fstat`, no read.
#[derive(Debug)]
pub struct ResolvConfWatch {
    path: PathBuf,
    own_listen: Vec<SocketAddr>,
    last: Option<Seen>,
}

impl ResolvConfWatch {
    /// Watches `path`, filtering with [`usable`] against `own_listen`
    /// (`server.listen`), so a caller cannot forget the loop protection.
    /// Nothing is read yet: the first [`poll`](Self::poll) reports the
    /// current list.
    pub fn new(path: impl Into<PathBuf>, own_listen: &[SocketAddr]) -> ResolvConfWatch {
        ResolvConfWatch { path: path.into(), own_listen: own_listen.to_vec(), last: None }
    }

    /// The watched file, for log lines.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Some(Ok(servers))`: the usable nameservers, on the first poll and
    /// whenever they differ from the last reported list (possibly empty: a
    /// laptop gone offline). `Some(Err(e))`: the file cannot be read (gone,
    /// unreadable, not a regular file); reported once per kind of failure,
    /// and the next successful read is always reported. `None`: nothing new,
    /// including a rewrite that lists the same servers (NetworkManager
    /// rewrites the file on every DHCP renewal).
    ///
    /// On `Err`, keep the current addresses: a file being replaced can be
    /// missing for an instant, and stale resolvers beat none.
    pub fn poll(&mut self) -> Option<io::Result<Vec<IpAddr>>> {
        match self.check() {
            Ok(servers) => servers.map(Ok),
            Err((e, stamp)) => {
                let repeated = matches!(
                    self.last,
                    Some(Seen::Failed { kind, stamp: seen }) if kind == e.kind() && seen == stamp
                );
                self.last = Some(Seen::Failed { kind: e.kind(), stamp });
                if repeated { None } else { Some(Err(e)) }
            }
        }
    }

    fn check(&mut self) -> Result<Option<Vec<IpAddr>>, (io::Error, Option<FileStamp>)> {
        let mut file = open(&self.path).map_err(|e| (e, None))?;
        let stamp = FileStamp::of(&file).map_err(|e| (e, None))?;
        match &self.last {
            Some(Seen::Read { stamp: seen, .. }) if *seen == stamp => return Ok(None),
            // Same unreadable version as last time: already reported.
            Some(Seen::Failed { stamp: Some(seen), .. }) if *seen == stamp => return Ok(None),
            _ => {}
        }
        let servers = read_open(&mut file).map_err(|e| (e, Some(stamp)))?;
        let servers = usable(servers, &self.own_listen);
        match self.last.replace(Seen::Read { stamp, servers: servers.clone() }) {
            Some(Seen::Read { servers: seen, .. }) if seen == servers => Ok(None),
            _ => Ok(Some(servers)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn listen(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    // ------------------------------------------------------------ parsing

    #[test]
    fn parses_nameserver_lines_in_order() {
        let text = "nameserver 192.0.2.1\nnameserver 2001:db8::53\nnameserver\t198.51.100.7\n";
        assert_eq!(parse_nameservers(text), ips(&["192.0.2.1", "2001:db8::53", "198.51.100.7"]));
    }

    #[test]
    fn comments_and_other_keywords_are_ignored() {
        let text = "\
# Generated by NetworkManager
; another comment style
search example.com corp.example
domain example.com
options edns0 trust-ad ndots:2
sortlist 130.155.160.0/255.255.240.0
#nameserver 192.0.2.99
;nameserver 192.0.2.98
nameserver 192.0.2.1 # the router
nameserver 192.0.2.2;second

nameserver 192.0.2.3   \r
";
        assert_eq!(parse_nameservers(text), ips(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]));
    }

    #[test]
    fn keyword_must_start_the_line_and_be_the_whole_word() {
        // As in glibc and musl: indented lines are not keyword lines.
        let text = "  nameserver 192.0.2.1\nnameservers 192.0.2.2\nNAMESERVER 192.0.2.3\n\
                    nameserver192.0.2.4\nnameserver 192.0.2.5\n";
        assert_eq!(parse_nameservers(text), ips(&["192.0.2.5"]));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let text = "nameserver\nnameserver dns.example\nnameserver 192.0.2.300\n\
                    nameserver 192.0.2.1:53\nnameserver [2001:db8::1]\nnameserver 10.1\n\
                    \u{0}\u{7f}garbage\nnameserver 192.0.2.9 extra words\n";
        assert_eq!(parse_nameservers(text), ips(&["192.0.2.9"]));
        assert!(parse_nameservers("").is_empty());
        assert!(parse_nameservers("\n\n# only comments\n").is_empty());
    }

    #[test]
    fn duplicates_are_dropped_keeping_the_first() {
        let text = "nameserver 192.0.2.1\nnameserver 2620:fe::fe\nnameserver 192.0.2.1\n\
                    nameserver 2620:00fe::00fe\nnameserver 192.0.2.2\n";
        assert_eq!(parse_nameservers(text), ips(&["192.0.2.1", "2620:fe::fe", "192.0.2.2"]));
    }

    #[test]
    fn zone_ids() {
        // Link-local with a zone: the scope id cannot be kept, so it is skipped.
        // A zone on a global address means nothing and is dropped.
        let text = "nameserver fe80::1%eth0\nnameserver 2001:db8::1%eth0\n\
                    nameserver 192.0.2.1%eth0\nnameserver fe80::2\n";
        assert_eq!(parse_nameservers(text), ips(&["2001:db8::1", "fe80::2"]));
    }

    // ---------------------------------------------------------- filtering

    #[test]
    fn own_listen_addresses_are_skipped_by_ip_whatever_the_port() {
        let own = listen(&["127.0.0.1:53", "[::1]:5353"]);
        let servers = ips(&["127.0.0.1", "192.0.2.1", "::1", "::ffff:127.0.0.1"]);
        assert_eq!(usable(servers, &own), ips(&["192.0.2.1"]));
        assert_eq!(skip_reason("::1".parse().unwrap(), &own), Some(Skip::OwnListen));
    }

    #[test]
    fn resolved_stubs_and_unspecified_are_skipped() {
        let own = listen(&["127.0.0.1:53"]);
        let servers = ips(&[
            "127.0.0.53",
            "127.0.0.54",
            "::ffff:127.0.0.53",
            "0.0.0.0",
            "::",
            "224.0.0.251",
            "ff02::fb",
            "255.255.255.255",
            "fe80::1",
            "192.0.2.1",
        ]);
        assert_eq!(usable(servers, &own), ips(&["192.0.2.1"]));
        let reason = |s: &str| skip_reason(s.parse().unwrap(), &own);
        assert_eq!(reason("127.0.0.53"), Some(Skip::ResolvedStub));
        assert_eq!(reason("127.0.0.54"), Some(Skip::ResolvedStub));
        assert_eq!(reason("0.0.0.0"), Some(Skip::Unspecified));
        assert_eq!(reason("::"), Some(Skip::Unspecified));
        assert_eq!(reason("fe80::1"), Some(Skip::LinkLocal));
    }

    #[test]
    fn other_loopback_addresses_stay_usable() {
        let own = listen(&["127.0.0.1:53", "[::1]:53"]);
        let servers = ips(&["127.0.0.2", "127.0.0.11", "127.0.0.55", "192.0.2.1"]);
        assert_eq!(usable(servers.clone(), &own), servers);
        // A wildcard listen is not "every address": only exact IPs are ours.
        let own = listen(&["0.0.0.0:53", "[::]:53"]);
        assert_eq!(usable(ips(&["127.0.0.1", "10.0.0.1"]), &own), ips(&["127.0.0.1", "10.0.0.1"]));
    }

    // ------------------------------------------------------------ the watch

    /// Writes a new version the way NetworkManager and resolvconf do: a temp
    /// file renamed over the old one.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn watch_reports_changes_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.1\nnameserver 127.0.0.53\n").unwrap();
        let mut watch = ResolvConfWatch::new(&path, &listen(&["127.0.0.1:53"]));
        assert_eq!(watch.path(), path);

        assert_eq!(watch.poll().unwrap().unwrap(), ips(&["192.0.2.1"]));
        assert!(watch.poll().is_none());
        assert!(watch.poll().is_none());

        replace(&path, "nameserver 198.51.100.1\nnameserver 127.0.0.1\nnameserver 2001:db8::1\n");
        assert_eq!(watch.poll().unwrap().unwrap(), ips(&["198.51.100.1", "2001:db8::1"]));
        assert!(watch.poll().is_none());

        std::fs::remove_file(&path).unwrap();
        let err = watch.poll().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // Reported once, not at every tick.
        assert!(watch.poll().is_none());

        // Back: reported, even with the list it had before.
        replace(&path, "nameserver 198.51.100.1\nnameserver 2001:db8::1\n");
        assert_eq!(watch.poll().unwrap().unwrap(), ips(&["198.51.100.1", "2001:db8::1"]));
    }

    #[test]
    fn watch_ignores_rewrites_with_the_same_servers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.1\n").unwrap();
        let mut watch = ResolvConfWatch::new(&path, &[]);
        assert_eq!(watch.poll().unwrap().unwrap(), ips(&["192.0.2.1"]));
        replace(&path, "# renewed\nsearch example\nnameserver 192.0.2.1\n");
        assert!(watch.poll().is_none());
        // The new version was recorded: a later real change is still seen.
        replace(&path, "nameserver 192.0.2.2\n");
        assert_eq!(watch.poll().unwrap().unwrap(), ips(&["192.0.2.2"]));
    }

    #[test]
    fn watch_sees_an_in_place_rewrite_and_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.1\n").unwrap();
        let mut watch = ResolvConfWatch::new(&path, &[]);
        assert!(watch.poll().unwrap().is_ok());
        // Same inode, different length.
        std::fs::write(&path, "nameserver 192.0.2.10\nnameserver 192.0.2.11\n").unwrap();
        assert_eq!(watch.poll().unwrap().unwrap(), ips(&["192.0.2.10", "192.0.2.11"]));
        // Offline: no nameserver is an empty list, not an error.
        std::fs::write(&path, "").unwrap();
        assert_eq!(watch.poll().unwrap().unwrap(), Vec::<IpAddr>::new());
        assert!(watch.poll().is_none());
    }

    #[test]
    fn watch_follows_a_retargeted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.conf");
        let b = dir.path().join("b.conf");
        std::fs::write(&a, "nameserver 192.0.2.1\n").unwrap();
        std::fs::write(&b, "nameserver 192.0.2.2\n").unwrap();
        let link = dir.path().join("resolv.conf");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let mut watch = ResolvConfWatch::new(&link, &[]);
        assert_eq!(watch.poll().unwrap().unwrap(), ips(&["192.0.2.1"]));
        let tmp = dir.path().join("link.tmp");
        std::os::unix::fs::symlink(&b, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert_eq!(watch.poll().unwrap().unwrap(), ips(&["192.0.2.2"]));
    }

    #[test]
    fn a_directory_or_device_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_nameservers(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let mut watch = ResolvConfWatch::new(dir.path(), &[]);
        assert!(watch.poll().unwrap().is_err());
        assert!(watch.poll().is_none());
        if Path::new("/dev/zero").exists() {
            assert!(read_nameservers(Path::new("/dev/zero")).is_err());
        }
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let mut text = "nameserver 192.0.2.1\n".to_owned();
        text.push_str(&"#".repeat(MAX_FILE_BYTES as usize));
        std::fs::write(&path, text).unwrap();
        let err = read_nameservers(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn non_utf8_bytes_do_not_make_the_file_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, b"search caf\xe9.example\nnameserver 192.0.2.1\n").unwrap();
        assert_eq!(read_nameservers(&path).unwrap(), ips(&["192.0.2.1"]));
    }
}
