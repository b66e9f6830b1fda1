//! Socket activation: the listening sockets systemd (or any manager speaking
//! `sd_listen_fds(3)`) bound for us and passed as descriptors 3, 4, ….
//!
//! sd-notify's `listen_fds` checks `LISTEN_PID` against our pid and marks the descriptors
//! close-on-exec; this module takes ownership of them (once per process), classifies each
//! with socket2 and hands them over as tokio sockets. It never binds and never reads the
//! config: whether inherited sockets replace the configured `listen` addresses is the
//! daemon's decision.

use std::{
    fmt, io,
    net::SocketAddr,
    os::fd::{FromRawFd, OwnedFd, RawFd},
    sync::atomic::{AtomicBool, Ordering},
};

use socket2::{Domain, Socket, Type};

/// Set when [`inherited_listeners`] has taken ownership of the descriptors: taking them
/// twice would close them twice.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// One listening socket received from the service manager.
#[derive(Debug)]
pub enum Inherited {
    /// A `ListenDatagram=` socket.
    Udp { socket: tokio::net::UdpSocket, local: SocketAddr },
    /// A `ListenStream=` socket, already listening.
    Tcp { listener: tokio::net::TcpListener, local: SocketAddr },
}

impl Inherited {
    /// The address it is bound to, for log lines.
    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Inherited::Udp { local, .. } | Inherited::Tcp { local, .. } => *local,
        }
    }

    /// `"udp"` or `"tcp"`, for log lines.
    pub fn transport(&self) -> &'static str {
        match self {
            Inherited::Udp { .. } => "udp",
            Inherited::Tcp { .. } => "tcp",
        }
    }
}

impl fmt::Display for Inherited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.transport(), self.local_addr())
    }
}

/// Why the inherited descriptors cannot be used. Each names the descriptor at fault, so
/// a wrong `.socket` unit is easy to find.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("LISTEN_FDS/LISTEN_PID: {0}")]
    Environment(io::Error),
    #[error("socket activation needs a running tokio runtime")]
    NoRuntime,
    #[error("the inherited descriptors were already taken")]
    AlreadyTaken,
    #[error("inherited fd {fd}: {source}")]
    Descriptor { fd: RawFd, source: io::Error },
    #[error("inherited fd {fd}: {what}; expected an IPv4/IPv6 UDP socket or listening TCP socket")]
    Unsupported { fd: RawFd, what: String },
}

/// The sockets passed by socket activation, or `None` when this process was not socket
/// activated (`LISTEN_PID` unset or not our pid, or `LISTEN_FDS` unset or 0).
///
/// Must be called from inside the tokio runtime (converting to tokio sockets registers
/// them with its reactor); outside it returns [`ActivationError::NoRuntime`] without
/// touching the descriptors. Takes ownership of descriptors `3..3+LISTEN_FDS`: a second
/// call returns [`ActivationError::AlreadyTaken`]. Any descriptor that is not an inet UDP
/// socket or a listening inet TCP socket fails the whole call (all are then closed): a
/// daemon serving on fewer sockets than its `.socket` unit promises is worse than one that
/// refuses to start. The environment is left as it is (see the module docs of
/// [`crate::systemd`]).
pub fn inherited_listeners() -> Result<Option<Vec<Inherited>>, ActivationError> {
    let fds = sd_notify::listen_fds().map_err(ActivationError::Environment)?;
    if fds.len() == 0 {
        return Ok(None);
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ActivationError::NoRuntime);
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(ActivationError::AlreadyTaken);
    }
    // Own every descriptor first, so that an error on one still closes the rest.
    let owned: Vec<(RawFd, Socket)> = fds
        .map(|fd| {
            // SAFETY: LISTEN_PID named this process, so the manager passed us descriptors
            // 3..3+LISTEN_FDS and nothing else in stubborn owns them; TAKEN makes this
            // the only place that ever wraps them.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            (fd, Socket::from(owned))
        })
        .collect();
    owned.into_iter().map(|(fd, socket)| classify(fd, socket)).collect::<Result<Vec<_>, _>>().map(Some)
}

/// Turns one inherited socket into a tokio socket, checking that it is one we can serve
/// on.
fn classify(fd: RawFd, socket: Socket) -> Result<Inherited, ActivationError> {
    let io_err = |source| ActivationError::Descriptor { fd, source };
    // getsockopt fails with ENOTSOCK on a FIFO or file (ListenFIFO=, ListenSpecial=).
    let kind = socket.r#type().map_err(io_err)?;
    let domain = socket.domain().map_err(io_err)?;
    if domain != Domain::IPV4 && domain != Domain::IPV6 {
        return Err(ActivationError::Unsupported { fd, what: format!("address family {domain:?}") });
    }
    let local = socket
        .local_addr()
        .map_err(io_err)?
        .as_socket()
        .ok_or_else(|| ActivationError::Unsupported { fd, what: "not an inet address".to_owned() })?;
    socket.set_nonblocking(true).map_err(io_err)?;
    if kind == Type::DGRAM {
        let socket = tokio::net::UdpSocket::from_std(socket.into()).map_err(io_err)?;
        Ok(Inherited::Udp { socket, local })
    } else if kind == Type::STREAM {
        if !socket.is_listener().map_err(io_err)? {
            return Err(ActivationError::Unsupported {
                fd,
                what: format!("TCP socket on {local} is not listening (Accept=yes?)"),
            });
        }
        let listener = tokio::net::TcpListener::from_std(socket.into()).map_err(io_err)?;
        Ok(Inherited::Tcp { listener, local })
    } else {
        Err(ActivationError::Unsupported { fd, what: format!("socket type {kind:?}") })
    }
}
