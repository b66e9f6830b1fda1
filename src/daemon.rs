//! Wiring: config → upstream pool → pipeline → listeners; and an orderly shutdown.
//!
//! Owns the sockets the daemon listens on and the drain on shutdown (stop taking queries,
//! let the ones in flight finish for a bounded time). It never answers queries itself.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool, atomic::Ordering},
    time::Duration,
};

use hickory_server::Server;
use tokio::{
    net::{TcpListener, UdpSocket},
    time::{Instant, sleep},
};
use tracing::{info, warn};

use crate::{
    config::Config,
    pipeline::Pipeline,
    server::{Handler, InFlightGauge},
    tls::TlsSetupError,
    upstream::pool::Pool,
};

/// How long in-flight queries may run on after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("no listen address could be bound")]
    NothingBound,
}

/// A running daemon: its bound addresses and what is needed to stop it.
pub struct Daemon {
    server: Server<Handler>,
    /// Addresses actually bound (UDP and TCP share each one, also when the port was 0).
    pub local_addrs: Vec<SocketAddr>,
    draining: Arc<AtomicBool>,
    in_flight: InFlightGauge,
    pool: Pool,
}

impl Daemon {
    /// Binds every listen address and starts serving.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let pool = Pool::new(config)?;
        pool.watch_resolv_conf(&config.server.listen);
        let pipeline = Arc::new(Pipeline::new(
            pool.clone(),
            config.server.query_timeout,
            &config.cache,
        ));
        let draining = Arc::new(AtomicBool::new(false));
        let handler = Handler::new(pipeline, config.server.max_inflight, draining.clone());
        let in_flight = handler.in_flight_gauge();
        let mut server = Server::with_access(handler, [], config.server.allow.iter().copied());

        let mut local_addrs = Vec::new();
        for &addr in &config.server.listen {
            match bind_pair(addr).await {
                Ok((udp, tcp)) => {
                    let bound = udp
                        .local_addr()
                        .map_err(|source| StartError::Bind { addr, source })?;
                    server.register_socket(udp);
                    server.register_listener(tcp, config.server.tcp_idle_timeout, 64);
                    info!(addr = %bound, "listening on udp and tcp");
                    local_addrs.push(bound);
                }
                Err(source) if addr.is_ipv6() && ipv6_unavailable(&source) => {
                    warn!(%addr, error = %source, "IPv6 is unavailable here; skipping this listen address");
                }
                Err(source) => return Err(StartError::Bind { addr, source }),
            }
        }
        if local_addrs.is_empty() {
            return Err(StartError::NothingBound);
        }
        Ok(Self {
            server,
            local_addrs,
            draining,
            in_flight,
            pool,
        })
    }

    /// The upstream pool (its connections and counters).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Stops taking queries, lets the ones in flight finish for up to [`DRAIN_TIMEOUT`],
    /// then closes every listener.
    pub async fn shutdown(mut self) {
        self.draining.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.in_flight.current() > 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        let unfinished = self.in_flight.current();
        if unfinished > 0 {
            warn!(unfinished, "shutting down with queries still in flight");
        }
        if let Err(err) = self.server.shutdown_gracefully().await {
            warn!(%err, "listener error during shutdown");
        }
        info!("stopped");
    }
}

/// Binds UDP and TCP on one address. With port 0 both get the same ephemeral port, so a
/// test (or a user) has one address to query over either transport.
async fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    const TRIES: usize = 16;
    let mut last = None;
    for _ in 0..TRIES {
        let udp = UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("could not bind")))
}

fn ipv6_unavailable(err: &io::Error) -> bool {
    // EAFNOSUPPORT (no IPv6 in the kernel) or EADDRNOTAVAIL (::1 not configured).
    matches!(
        err.kind(),
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
    ) || err.raw_os_error() == Some(97)
}
