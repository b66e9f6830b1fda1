//! Batched UDP I/O: `recvmmsg` takes every datagram waiting (up to a batch) in one system
//! call, `sendmmsg` sends every answer of a batch in one, and answers of equal length to
//! one client leave as one UDP GSO send. On the cache-hit path the kernel's per-datagram
//! work is most of the cost (measured: ~7 µs of CPU per query with one `recvfrom` and one
//! `sendto` each, 4.4 µs with batches, 3.0 µs with GSO as well), so fewer passes through
//! it per query is where the speed is.
//!
//! The only unsafe code of the front end lives here, around the libc calls; the rest
//! sees safe slices and `SocketAddr`s.

use std::{
    io,
    mem::{size_of, zeroed},
    net::SocketAddr,
    ops::Range,
    os::fd::{AsRawFd, RawFd},
    sync::atomic::{AtomicBool, Ordering},
};

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams received at most per call.
pub const BATCH: usize = 32;
/// Bytes kept per received datagram: DNS queries are far smaller; a larger one arrives
/// cut (MSG_TRUNC) and is dropped.
pub const DATAGRAM_MAX: usize = 4096;

/// Buffers for one `recvmmsg` call, reused across calls.
pub struct RecvBatch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    truncated: [bool; BATCH],
    addrs: Vec<Option<SocketAddr>>,
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            bufs: vec![0; BATCH * DATAGRAM_MAX],
            lens: [0; BATCH],
            truncated: [false; BATCH],
            addrs: vec![None; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// Takes up to [`BATCH`] datagrams: on a non-blocking socket those already waiting
    /// (`WouldBlock` when there are none), on a blocking one at least one. Returns how
    /// many.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let fd: RawFd = socket.as_raw_fd();
        let mut names: [SockAddrStorage; BATCH] = std::array::from_fn(|_| SockAddrStorage::zeroed());
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iovs[i].iov_base = self.bufs[i * DATAGRAM_MAX..].as_mut_ptr().cast();
            iovs[i].iov_len = DATAGRAM_MAX;
            // SAFETY: SockAddrStorage is a sockaddr_storage, sized for every address family.
            hdrs[i].msg_hdr.msg_name = (unsafe { names[i].view_as::<libc::sockaddr_storage>() }
                as *mut libc::sockaddr_storage)
                .cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every pointer in `hdrs` points into `names`, `iovs` and `self.bufs`, which
        // outlive the call; the kernel writes at most the lengths given.
        let n = unsafe {
            libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as u32, libc::MSG_WAITFORONE, std::ptr::null_mut())
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        for i in 0..self.count {
            self.lens[i] = hdrs[i].msg_len as usize;
            self.truncated[i] = hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let len = hdrs[i].msg_hdr.msg_namelen;
            // SAFETY: the kernel filled `names[i]` with an address of `len` bytes.
            let storage = std::mem::replace(&mut names[i], SockAddrStorage::zeroed());
            self.addrs[i] = unsafe { SockAddr::new(storage, len) }.as_socket();
        }
        Ok(self.count)
    }

    /// Datagram `i` of the last call and its sender; None if it was cut or had no
    /// usable source address.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count || self.truncated[i] {
            return None;
        }
        let start = i * DATAGRAM_MAX;
        Some((&self.bufs[start..start + self.lens[i]], self.addrs[i]?))
    }
}

/// Linux's `UDP_SEGMENT` (`<linux/udp.h>`, since 4.18; not in the libc crate for glibc):
/// the control message that makes one send carry several datagrams.
const UDP_SEGMENT: libc::c_int = 103;
/// Answers at most this long are sent as segments of one send: with 48 octets of IPv6
/// and UDP headers, 1232 fill the IPv6 minimum MTU of 1280 (RFC 8200 §5; DNS Flag Day
/// 2020's size), so the kernel never refuses a segment for the path's MTU.
const SEGMENT_MAX: usize = 1232;
/// Cleared for good after the kernel refused a segmented send (an old kernel, or a
/// route through a device or transform that cannot take one).
static SEGMENTING: AtomicBool = AtomicBool::new(true);

/// Sends every `(answer, client)` in `out` with as few `sendmmsg` calls as possible, and
/// answers of equal length to the same client (a client that sent several queries from
/// one socket, as resolver libraries do for A and AAAA) as one UDP GSO send: the kernel
/// walks its send path once for the lot and cuts the datagrams at the end, which costs
/// far less than one pass each. `out` is reordered; order between datagrams means
/// nothing in UDP. A datagram the kernel refuses is skipped (not retried), as the
/// network might have dropped it; a segmented send refused for any reason but a full
/// buffer is sent again datagram by datagram, and segmenting is off from then on.
pub fn send(socket: &impl AsRawFd, out: &mut [(Vec<u8>, SocketAddr)]) {
    send_with(socket, out, &SEGMENTING);
}

/// [`send`], with the switch that a refused segmented send clears.
fn send_with(socket: &impl AsRawFd, out: &mut [(Vec<u8>, SocketAddr)], segmenting_on: &AtomicBool) {
    let segmenting = segmenting_on.load(Ordering::Relaxed);
    if segmenting && out.len() > 1 {
        // Stable: answers of equal length to one client keep their order.
        out.sort_by(|(a, to_a), (b, to_b)| to_a.cmp(to_b).then(b.len().cmp(&a.len())));
    }
    let mut rest = &out[..];
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(BATCH)];
        let runs = segment_runs(chunk, segmenting);
        match send_runs(socket.as_raw_fd(), chunk, &runs) {
            Sent::All => rest = &rest[chunk.len()..],
            // The kernel stopped early without saying why: the next call starts at the
            // first message left and gets the error, if there is one, for that message.
            Sent::Until(next) => rest = &rest[runs[next].start..],
            Sent::Refused(failed, err) => {
                let run = runs[failed].clone();
                if err.kind() == io::ErrorKind::Interrupted {
                    rest = &rest[run.start..];
                    continue;
                }
                // A full buffer drops the run, as the network may; any other refusal
                // of a segmented send says this kernel or route cannot segment: its
                // answers go again one datagram each, and no segmenting from now on.
                let transient =
                    matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM));
                if run.len() > 1 && !transient {
                    segmenting_on.store(false, Ordering::Relaxed);
                    send_with(&socket.as_raw_fd(), &mut chunk[run.clone()].to_vec(), segmenting_on);
                }
                rest = &rest[run.end..];
            }
        }
    }
}

/// How far one `sendmmsg` got.
enum Sent {
    All,
    /// Messages before this run left; the kernel stopped there (it reports no error
    /// once some messages left).
    Until(usize),
    /// The kernel refused this run, the first of the call, with this error.
    Refused(usize, io::Error),
}

/// Splits `chunk` (sorted by client, longest answer first) into runs that can each leave
/// as one send: equal lengths to one client, of at most [`SEGMENT_MAX`] octets, and
/// optionally one shorter answer last (GSO allows a short final segment). Without
/// `segmenting`, one run per answer.
fn segment_runs(chunk: &[(Vec<u8>, SocketAddr)], segmenting: bool) -> Vec<Range<usize>> {
    let mut runs = Vec::with_capacity(chunk.len());
    let mut start = 0;
    while start < chunk.len() {
        let (first, to) = (&chunk[start].0, chunk[start].1);
        let mut end = start + 1;
        if segmenting && !first.is_empty() && first.len() <= SEGMENT_MAX {
            while end < chunk.len() && chunk[end].1 == to && chunk[end].0.len() <= first.len() {
                end += 1;
                if chunk[end - 1].0.len() < first.len() {
                    break;
                }
            }
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// One `sendmmsg` of `runs` (at most [`BATCH`], at least one), each run one message.
fn send_runs(fd: RawFd, chunk: &[(Vec<u8>, SocketAddr)], runs: &[Range<usize>]) -> Sent {
    let names: Vec<SockAddr> = runs.iter().map(|run| SockAddr::from(chunk[run.start].1)).collect();
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    // One control message per run: a cmsghdr and a u16, aligned as cmsghdr needs.
    let mut controls = [[0u64; 4]; BATCH];
    for (i, (wire, _)) in chunk.iter().enumerate() {
        iovs[i].iov_base = wire.as_ptr() as *mut libc::c_void;
        iovs[i].iov_len = wire.len();
    }
    for (m, (run, name)) in runs.iter().zip(&names).enumerate() {
        let hdr = &mut hdrs[m].msg_hdr;
        hdr.msg_name = name.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = name.len();
        // The run's answers are adjacent in `chunk`, so their iovecs are too (a pointer
        // into the whole array: the kernel reads `run.len()` of them).
        hdr.msg_iov = iovs[run.start..].as_mut_ptr();
        hdr.msg_iovlen = run.len();
        if run.len() > 1 {
            let segment = chunk[run.start].0.len() as u16;
            hdr.msg_control = controls[m].as_mut_ptr().cast();
            // SAFETY: CMSG_* only compute sizes and offsets within `controls[m]`, which
            // holds CMSG_SPACE(2) = 24 octets with room to spare.
            unsafe {
                hdr.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
                let cmsg = libc::CMSG_FIRSTHDR(hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
            }
        }
    }
    // SAFETY: the headers point at `iovs`, `names`, `controls` and the answers in
    // `chunk`, all alive for the call; the kernel only reads them.
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), runs.len() as u32, 0) };
    match usize::try_from(sent) {
        // Zero sent with no error cannot happen for at least one message; should it,
        // counting it as refused still moves the caller on.
        Err(_) | Ok(0) => Sent::Refused(0, io::Error::last_os_error()),
        Ok(n) if n >= runs.len() => Sent::All,
        Ok(n) => Sent::Until(n),
    }
}

#[cfg(test)]
mod tests {
    use std::{net::UdpSocket, time::Duration};

    use super::*;

    #[test]
    fn a_batch_round_trip_over_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for i in 0..5u8 {
            client.send_to(&[i; 10], server.local_addr().unwrap()).unwrap();
        }
        client.send_to(&vec![9; DATAGRAM_MAX + 10], server.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        let mut cut = 0;
        while got.len() + cut < 6 {
            let n = batch.recv(&server).unwrap();
            for i in 0..n {
                match batch.get(i) {
                    Some((data, from)) => {
                        assert_eq!(from, client.local_addr().unwrap());
                        got.push(data.to_vec());
                    }
                    None => cut += 1,
                }
            }
        }
        assert_eq!(got.len(), 5);
        assert_eq!(cut, 1, "an oversized datagram is reported cut, not served");
        let mut replies: Vec<(Vec<u8>, SocketAddr)> =
            got.iter().map(|d| (d.clone(), client.local_addr().unwrap())).collect();
        send(&server, &mut replies);
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 10]);
        }
    }

    fn to(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn runs_are_equal_lengths_to_one_client_with_at_most_one_shorter_last() {
        let sizes = |chunk: &[(Vec<u8>, SocketAddr)], runs: &[Range<usize>]| -> Vec<Vec<usize>> {
            runs.iter().map(|r| chunk[r.clone()].iter().map(|(w, _)| w.len()).collect()).collect()
        };
        // Sorted as `send` sorts: by client, longest first.
        let chunk: Vec<(Vec<u8>, SocketAddr)> =
            [(60, 1), (60, 1), (60, 1), (50, 1), (50, 1), (40, 2), (40, 2)]
                .iter()
                .map(|&(len, port)| (vec![0; len], to(port)))
                .collect();
        let runs = segment_runs(&chunk, true);
        assert_eq!(sizes(&chunk, &runs), [vec![60, 60, 60, 50], vec![50], vec![40, 40]]);
        assert_eq!(segment_runs(&chunk, false).len(), 7, "one run per answer without segmenting");
        let big = vec![(vec![0; SEGMENT_MAX + 1], to(1)), (vec![0; SEGMENT_MAX + 1], to(1))];
        assert_eq!(segment_runs(&big, true).len(), 2, "answers over SEGMENT_MAX go one by one");
    }

    #[test]
    fn a_segmented_send_arrives_as_the_separate_datagrams() {
        segmented_round_trip(UdpSocket::bind("127.0.0.1:0").unwrap());
    }

    #[test]
    fn a_segmented_send_over_ipv6_arrives_as_the_separate_datagrams() {
        // Where the machine has no ::1 there is nothing to test.
        if let Ok(server) = UdpSocket::bind("[::1]:0") {
            segmented_round_trip(server);
        }
    }

    fn segmented_round_trip(server: UdpSocket) {
        let ip = server.local_addr().unwrap().ip();
        let clients: Vec<UdpSocket> = (0..2).map(|_| UdpSocket::bind((ip, 0)).unwrap()).collect();
        let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
        let mut out = Vec::new();
        // Client 0: four of 30 octets and one of 20 (one segmented send); client 1: three
        // of different lengths, interleaved with client 0's.
        for (i, (len, c)) in
            [(30, 0), (25, 1), (30, 0), (20, 0), (35, 1), (30, 0), (30, 0), (10, 1)].into_iter().enumerate()
        {
            let wire = vec![i as u8; len];
            expected[c].push(wire.clone());
            out.push((wire, clients[c].local_addr().unwrap()));
        }
        send(&server, &mut out);
        assert!(SEGMENTING.load(Ordering::Relaxed), "the kernel took the segmented sends");
        for (client, want) in clients.iter().zip(&mut expected) {
            client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while got.len() < want.len() {
                let (n, from) = client.recv_from(&mut buf).unwrap();
                assert_eq!(from, server.local_addr().unwrap());
                got.push(buf[..n].to_vec());
            }
            got.sort();
            want.sort();
            assert_eq!(&got, want, "each answer whole and on its own");
        }
    }

    #[test]
    fn a_refused_segmented_send_is_sent_again_datagram_by_datagram() {
        // The kernel refuses a segmented send from a socket without UDP checksums
        // (SO_NO_CHECK); single datagrams it still takes.
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option of the right size.
        let set = unsafe {
            libc::setsockopt(
                server.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "SO_NO_CHECK set");
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out: Vec<(Vec<u8>, SocketAddr)> =
            (0..4u8).map(|i| (vec![i; 40], client.local_addr().unwrap())).collect();
        let segmenting = AtomicBool::new(true);
        send_with(&server, &mut out, &segmenting);
        assert!(!segmenting.load(Ordering::Relaxed), "the refusal turned segmenting off");
        let mut buf = [0u8; 64];
        for i in 0..4u8 {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 40], "every answer still arrives, in order");
        }
    }
}
