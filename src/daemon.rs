//! Wiring: config → upstream pool → pipeline → front end (and the metrics endpoint);
//! reloads; an orderly shutdown.
//!
//! Owns the daemon's parts and their lifetimes. It never answers queries itself.

use std::{net::SocketAddr, sync::Arc, thread::available_parallelism, time::Duration};

use tracing::{info, warn};

use crate::{
    config::Config,
    frontend::{BindError, Frontend, FrontendLimits, Listeners, bind, request::Acl},
    metrics::{MetricsServer, ServeError, Snapshot},
    pipeline::Pipeline,
    systemd::{Inherited, status_line},
    tls::TlsSetupError,
    upstream::pool::Pool,
};

/// How long in-flight queries may run on after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the daemon could not start, or a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot serve: {0}")]
    Serve(#[from] std::io::Error),
    #[error(transparent)]
    Metrics(#[from] ServeError),
}

/// A running daemon: its bound addresses and what is needed to reload or stop it.
pub struct Daemon {
    frontend: Frontend,
    /// Addresses actually bound (UDP and TCP share each one, also when the port was 0).
    pub local_addrs: Vec<SocketAddr>,
    pipeline: Pipeline,
    config: Config,
    /// The Prometheus endpoint, when `[metrics] listen` is set.
    metrics: Option<MetricsServer>,
}

/// UDP sockets (and threads) per listen address: one per core.
pub fn udp_sockets_per_address() -> usize {
    available_parallelism().map_or(1, |n| n.get())
}

/// Sockets handed over by the service manager (socket activation), as listeners.
pub fn listeners_from(inherited: Vec<Inherited>) -> std::io::Result<Listeners> {
    let mut out = Listeners::default();
    for socket in inherited {
        let addr = socket.local_addr();
        match socket {
            Inherited::Udp { socket, .. } => {
                // One inherited socket: every UDP thread reads the same one.
                let socket = socket.into_std()?;
                for _ in 1..udp_sockets_per_address() {
                    out.udp.push(socket.try_clone()?);
                }
                out.udp.push(socket);
            }
            Inherited::Tcp { listener, .. } => out.tcp.push(listener.into_std()?),
        }
        if !out.addrs.contains(&addr) {
            out.addrs.push(addr);
        }
    }
    Ok(out)
}

impl Daemon {
    /// Binds every listen address and starts serving. Must run inside the tokio runtime.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let listeners = bind(&config.server.listen, udp_sockets_per_address())?;
        Self::start_on(config, listeners)
    }

    /// Starts serving on sockets bound elsewhere (socket activation, or bound before
    /// dropping root). Must run inside the tokio runtime.
    pub fn start_on(config: &Config, listeners: Listeners) -> Result<Self, StartError> {
        let pool = Pool::new(config)?;
        pool.watch_resolv_conf(&config.server.listen);
        let pipeline = Pipeline::new(pool, config.server.query_timeout, &config.cache);
        let limits = FrontendLimits {
            max_in_flight: config.server.max_inflight,
            max_tcp_clients: config.server.max_tcp_clients,
            tcp_idle_timeout: config.server.tcp_idle_timeout,
        };
        let frontend = Frontend::start(
            listeners,
            pipeline.clone(),
            Acl::new(&config.server.allow),
            limits,
            config.log.queries,
        )?;
        let metrics = match config.metrics.listen {
            Some(addr) => Some(MetricsServer::start(addr, snapshot_of(pipeline.clone()))?),
            None => None,
        };
        Ok(Self {
            local_addrs: frontend.local_addrs.clone(),
            frontend,
            pipeline,
            config: config.clone(),
            metrics,
        })
    }

    /// The address the metrics endpoint is bound to, when it runs.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.local_addr)
    }

    /// Applies a new, already validated config without dropping the cache or any query in
    /// flight: upstreams, timeouts, the access list and cache bounds change at once. Keys
    /// bound to sockets or privileges need a restart and are reported, not applied.
    pub fn reload(&mut self, config: Config) -> Result<(), StartError> {
        let pool = Pool::new(&config)?;
        pool.watch_resolv_conf(&self.config.server.listen);
        self.pipeline.reconfigure(pool, config.server.query_timeout, &config.cache);
        self.frontend.set_acl(Acl::new(&config.server.allow));
        self.frontend.set_log_queries(config.log.queries);
        if self.config.metrics != config.metrics {
            warn!(key = "metrics", "changed in the config but needs a restart to take effect");
        }
        let (old, new) = (&self.config.server, &config.server);
        for (key, changed) in [
            ("server.listen", old.listen != new.listen),
            ("server.user", old.user != new.user),
            ("server.max_inflight", old.max_inflight != new.max_inflight),
            ("server.max_tcp_clients", old.max_tcp_clients != new.max_tcp_clients),
            ("server.tcp_idle_timeout_ms", old.tcp_idle_timeout != new.tcp_idle_timeout),
        ] {
            if changed {
                warn!(key, "changed in the config but needs a restart to take effect");
            }
        }
        info!(origin = %config.origin, upstreams = config.upstreams.len(), "config reloaded");
        self.config = config;
        Ok(())
    }

    /// The upstream pool in use (its connections and counters).
    pub fn pool(&self) -> Pool {
        self.pipeline.pool()
    }

    /// The query pipeline (its cache).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The one-line status: upstreams up, the connection in use, cache entries.
    pub fn status(&self) -> String {
        let health = self.pipeline.pool().health();
        let via = health.via.map(|(addr, transport)| (addr, transport.as_str()));
        status_line(health.up, health.total, via, self.pipeline.cache().len())
    }

    /// Stops taking queries, lets the ones in flight finish for up to [`DRAIN_TIMEOUT`],
    /// then closes every listener.
    pub async fn shutdown(self) {
        drop(self.metrics);
        self.frontend.shutdown(DRAIN_TIMEOUT).await;
        info!("stopped");
    }
}

/// What a scrape reads from the daemon: through the pipeline, so a reloaded pool and a
/// resized cache are what it sees.
fn snapshot_of(pipeline: Pipeline) -> crate::metrics::SnapshotFn {
    Arc::new(move || {
        let pool = pipeline.pool();
        let health = pool.health();
        Snapshot {
            cache_entries: pipeline.cache().len(),
            upstreams_up: health.up,
            upstreams_configured: health.total,
            connections: pool.connections_up(),
        }
    })
}
