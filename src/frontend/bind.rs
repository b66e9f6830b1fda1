//! Binding the listening sockets: UDP (one SO_REUSEPORT socket per serving thread, with
//! datagrams spread evenly over them) and TCP on every listen address, the same port for
//! both.

use std::{
    io,
    net::{SocketAddr, TcpListener, UdpSocket},
    os::fd::AsRawFd,
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
                if udp_sockets > 1 {
                    if let Err(err) = steer_randomly(&udp[0], udp_sockets) {
                        warn!(%addr, %err, "cannot spread datagrams evenly over the serving threads; the kernel's hash of each client's address and port decides");
                    }
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

/// Makes the kernel hand each datagram for `first`'s SO_REUSEPORT group to one of its `n`
/// sockets at random (a classic BPF program: a random number modulo `n`). Without it the
/// kernel picks by a hash of the client's address and port, so a few clients can load
/// one serving thread and leave the other idle; each thread's misses go out on its own
/// connection, so an idle thread is lost throughput. Nothing else depends on which
/// socket a query arrives on.
fn steer_randomly(first: &UdpSocket, n: usize) -> io::Result<()> {
    let instruction = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let mut program = [
        // A = a random u32 (the SKF_AD_RANDOM ancillary load).
        instruction(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32,
        ),
        // A = A mod n: the index of a socket in the group, in the order they were bound.
        instruction(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, n as u32),
        instruction(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: the descriptor is open (we own the socket); the kernel copies the program
    // during the call, and `prog` points at `program`, both alive until it returns.
    let rc = unsafe {
        libc::setsockopt(
            first.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
