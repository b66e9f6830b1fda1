//! Batched UDP I/O: `recvmmsg` takes every datagram waiting (up to a batch) in one system
//! call, `sendmmsg` sends every answer of a batch in one. On the cache-hit path system
//! calls are most of the cost (measured: ~7 µs of CPU per query with one `recvfrom` and
//! one `sendto` each), so fewer calls per query is where the speed is.
//!
//! The only unsafe code of the front end lives here, around the two libc calls; the rest
//! sees safe slices and `SocketAddr`s.

use std::{
    io,
    mem::{size_of, zeroed},
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
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

/// Sends every `(answer, client)` in `out` with as few `sendmmsg` calls as possible. A
/// datagram the kernel refuses is skipped (logged by the caller's counters, not retried).
pub fn send(socket: &impl AsRawFd, out: &[(Vec<u8>, SocketAddr)]) {
    let fd = socket.as_raw_fd();
    let mut rest = out;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(BATCH)];
        let names: Vec<SockAddr> = chunk.iter().map(|(_, to)| SockAddr::from(*to)).collect();
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, ((wire, _), name)) in chunk.iter().zip(&names).enumerate() {
            iovs[i].iov_base = wire.as_ptr() as *mut libc::c_void;
            iovs[i].iov_len = wire.len();
            hdrs[i].msg_hdr.msg_name = name.as_ptr() as *mut libc::c_void;
            hdrs[i].msg_hdr.msg_namelen = name.len();
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the headers point at `iovs`, `names` and the answers in `chunk`, all alive
        // for the call; the kernel only reads them.
        let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), chunk.len() as u32, 0) };
        // On an error the first datagram is the one the kernel refused: skip it.
        let done = if sent <= 0 { 1 } else { sent as usize };
        rest = &rest[done.min(rest.len())..];
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
        let replies: Vec<(Vec<u8>, SocketAddr)> =
            got.iter().map(|d| (d.clone(), client.local_addr().unwrap())).collect();
        send(&server, &replies);
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 10]);
        }
    }
}
