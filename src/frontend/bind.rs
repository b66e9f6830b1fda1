//! Binding the listening sockets: UDP (one SO_REUSEPORT socket per core, so both cores
//! take packets) and TCP on every listen address, the same port for both.

use std::{
    io,
    net::{SocketAddr, TcpListener, UdpSocket},
};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::warn;

/// Sockets ready to serve (blocking mode off).
#[derive(Debug, Default)]
pub struct Listeners {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
    /// The addresses bound, one per listen address (UDP and TCP share the port).
    pub addrs: Vec<SocketAddr>,
}

/// Why the daemon could not listen.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("no listen address could be bound")]
    NothingBound,
}

/// The UDP receive buffer we ask for: bursts of queries wait here instead of being lost.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// Binds every address in `listen`, with `udp_sockets` UDP sockets each. An IPv6 address
/// is skipped with a warning when IPv6 is unavailable.
pub fn bind(listen: &[SocketAddr], udp_sockets: usize) -> Result<Listeners, BindError> {
    let mut out = Listeners::default();
    for &addr in listen {
        match bind_one(addr, udp_sockets.max(1), &mut out) {
            Ok(bound) => out.addrs.push(bound),
            Err(source) if addr.is_ipv6() && ipv6_unavailable(&source) => {
                warn!(%addr, error = %source, "IPv6 is unavailable here; skipping this listen address");
            }
            Err(source) => return Err(BindError::Bind { addr, source }),
        }
    }
    if out.addrs.is_empty() {
        return Err(BindError::NothingBound);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr, udp_sockets: usize, out: &mut Listeners) -> io::Result<SocketAddr> {
    // With port 0, UDP and TCP get the same ephemeral port, so a test (or a user) has one
    // address to query over either transport.
    const TRIES: usize = 16;
    let mut last = None;
    for _ in 0..TRIES {
        let first = udp_socket(addr)?;
        let bound = first.local_addr()?;
        match tcp_listener(bound) {
            Ok(tcp) => {
                let mut udp = vec![first];
                for _ in 1..udp_sockets {
                    udp.push(udp_socket(bound)?);
                }
                out.udp.extend(udp);
                out.tcp.push(tcp);
                return Ok(bound);
            }
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("could not bind")))
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn ipv6_unavailable(err: &io::Error) -> bool {
    // EAFNOSUPPORT (no IPv6 in the kernel) or EADDRNOTAVAIL (::1 not configured).
    matches!(err.kind(), io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported)
        || err.raw_os_error() == Some(libc::EAFNOSUPPORT)
}
