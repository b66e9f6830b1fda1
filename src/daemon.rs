//! Wiring: config → upstream pool → pipeline → front end (and the metrics endpoint);
//! reloads; an orderly shutdown.
//!
//! Owns the daemon's parts and their lifetimes. It never answers queries itself.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tracing::{info, warn};

use crate::{
    config::Config,
    frontend::{BindError, Frontend, FrontendLimits, Listeners, bind, request::Acl},
    metrics::{MetricsServer, ServeError, Snapshot},
    netwatch::NetWatch,
    pipeline::Pipeline,
    route::Routes,
    systemd::{Inherited, status_line},
    tls::TlsSetupError,
    upstream::pool::{
        Pool, WarmReason, group_connections, group_health, keep_warm, network_changed, suspect_connections,
        watch_resolv_conf,
    },
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
    #[error(transparent)]
    FdLimit(#[from] crate::frontend::fd_limit::FdLimitError),
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
    /// The network change watch (`crate::netwatch`); stops with the daemon.
    _netwatch: Option<NetWatch>,
}

/// Sockets handed over by the service manager (socket activation), as listeners for
/// `threads` serving threads.
pub fn listeners_from(inherited: Vec<Inherited>, threads: usize) -> std::io::Result<Listeners> {
    let mut out = Listeners::default();
    for socket in inherited {
        let addr = socket.local_addr();
        match socket {
            Inherited::Udp { socket, .. } => {
                // One inherited socket: every serving thread reads the same one.
                let socket = socket.into_std()?;
                for _ in 1..threads {
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
        let listeners = bind(&config.server.listen, config.server.serving_threads())?;
        Self::start_on(config, listeners)
    }

    /// Starts serving on sockets bound elsewhere (socket activation, or bound before
    /// dropping root). Must run inside the tokio runtime.
    pub fn start_on(config: &Config, listeners: Listeners) -> Result<Self, StartError> {
        // Room for every client connection allowed, or a clear refusal now rather than
        // EMFILE under load.
        if let Some(raised) = crate::frontend::fd_limit::ensure(config.server.max_tcp_clients)? {
            info!(soft_limit = raised, "raised RLIMIT_NOFILE for server.max_tcp_clients");
        }
        let pipeline =
            Pipeline::new(pools(config, WarmReason::Start)?, config.server.query_timeout, &config.cache)
                .with_local_zones(config.server.local_zones)
                .with_routes(routes(config)?);
        let limits = FrontendLimits {
            max_in_flight: config.server.max_inflight,
            max_tcp_clients: config.server.max_tcp_clients,
            tcp_idle_timeout: config.server.tcp_idle_timeout,
            max_tcp_per_client: config.server.max_tcp_per_client,
            tcp_write_timeout: config.server.tcp_write_timeout,
            refused: config.server.refused,
        };
        let frontend = Frontend::start(
            listeners,
            pipeline.clone(),
            Acl::new(&config.server.allow),
            limits,
            config.log.queries,
            config.server.serving_threads(),
        )?;
        let netwatch = watch_network(&pipeline);
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
            _netwatch: netwatch,
        })
    }

    /// The address the metrics endpoint is bound to, when it runs.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.local_addr)
    }

    /// Applies a new, already validated config without dropping the cache or any query in
    /// flight: upstreams, timeouts, the access list and cache bounds change at once. Keys
    /// bound to sockets or privileges need a restart and are reported, not applied.
    pub fn reload(&mut self, mut config: Config) -> Result<(), StartError> {
        let (old, new) = (&self.config.server, &config.server);
        let needs_restart: Vec<&str> = [
            ("server.listen", old.listen != new.listen),
            ("server.user", old.user != new.user),
            ("server.max_inflight", old.max_inflight != new.max_inflight),
            ("server.max_tcp_clients", old.max_tcp_clients != new.max_tcp_clients),
            ("server.tcp_idle_timeout_ms", old.tcp_idle_timeout != new.tcp_idle_timeout),
            ("server.max_tcp_per_client", old.max_tcp_per_client != new.max_tcp_per_client),
            ("server.tcp_write_timeout_ms", old.tcp_write_timeout != new.tcp_write_timeout),
            ("server.refused", old.refused != new.refused),
            ("server.threads", old.threads != new.threads),
            ("metrics", self.config.metrics != config.metrics),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        // What the sockets and threads were made with stays, for the new pools (one per
        // serving thread, resolv.conf read without our own addresses) and later reloads.
        config.server.threads = self.config.server.threads;
        config.server.listen = self.config.server.listen.clone();
        self.pipeline.reconfigure(
            pools(&config, WarmReason::Reload)?,
            routes(&config)?,
            config.server.query_timeout,
            &config.cache,
            config.server.local_zones,
        );
        self.frontend.set_acl(Acl::new(&config.server.allow));
        self.frontend.set_log_queries(config.log.queries);
        for key in needs_restart {
            warn!(key, "changed in the config but needs a restart to take effect");
        }
        info!(origin = %config.origin, upstreams = config.upstreams.len(), "config reloaded");
        self.config = config;
        Ok(())
    }

    /// The upstream pool of the first serving thread (with `server.threads = 1`, the only
    /// one): its connections and counters.
    pub fn pool(&self) -> Pool {
        self.pipeline.pool()
    }

    /// Every upstream pool in use: one per serving thread, and TCP's.
    pub fn pools(&self) -> Vec<Pool> {
        self.pipeline.pools()
    }

    /// Client queries being resolved upstream right now (holding `server.max_inflight`
    /// slots).
    pub fn in_flight(&self) -> usize {
        self.frontend.in_flight()
    }

    /// Client TCP connections open right now.
    pub fn tcp_connections(&self) -> usize {
        self.frontend.tcp_connections()
    }

    /// The query pipeline (its cache).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The one-line status: upstreams up, the connection in use, cache entries.
    pub fn status(&self) -> String {
        let health = group_health(&self.pipeline.pools());
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

/// The upstream pools for `config`: one per serving thread and one for TCP, or a single
/// pool for both when one thread serves; resolv_conf upstreams watched for all of them.
/// TCP's pool (the last) races at once, and again after a resume, so the first query
/// finds a connection; the others borrow it.
fn pools(config: &Config, reason: WarmReason) -> Result<Vec<Pool>, TlsSetupError> {
    let pools = Pool::group(&config.default_set(), pools_per_group(config))?;
    watch_resolv_conf(&pools, &config.server.listen);
    keep_warm(&pools, reason);
    Ok(pools)
}

/// The routes of `config` ([`crate::route`]), each TLS route with as many pools as the
/// default set. Not pre-warmed: a route's names may never be asked.
fn routes(config: &Config) -> Result<Routes, TlsSetupError> {
    let routes = Routes::build(config, pools_per_group(config))?;
    for route in routes.names() {
        info!(route = %route, "route: these names go to their own upstreams");
    }
    Ok(routes)
}

/// One pool per serving thread and one for TCP, or one for both.
fn pools_per_group(config: &Config) -> usize {
    let threads = config.server.serving_threads();
    if threads > 1 { threads + 1 } else { 1 }
}

/// Watches the machine's links, addresses and routes: after a change, the pools in use
/// (read through the pipeline, so a reload's) drop their connections and the default
/// set races at once. None where rtnetlink is unavailable: a switch is then noticed by
/// its dead connections (health policy), as before.
fn watch_network(pipeline: &Pipeline) -> Option<NetWatch> {
    let pipeline = pipeline.clone();
    let on_change = move || {
        network_changed(&pipeline.pools());
        for group in pipeline.route_pool_groups() {
            suspect_connections(&group);
        }
    };
    match crate::netwatch::watch(on_change) {
        Ok(watch) => Some(watch),
        Err(err) => {
            warn!(%err, "cannot watch for network changes (rtnetlink): a network switch is noticed by its dead connections instead");
            None
        }
    }
}

/// What a scrape reads from the daemon: through the pipeline, so a reloaded pool and a
/// resized cache are what it sees.
fn snapshot_of(pipeline: Pipeline) -> crate::metrics::SnapshotFn {
    Arc::new(move || {
        let pools = pipeline.pools();
        let health = group_health(&pools);
        let mut connections = group_connections(&pools);
        for group in pipeline.route_pool_groups() {
            connections.extend(group_connections(&group));
        }
        Snapshot {
            cache_entries: pipeline.cache().len(),
            upstreams_up: health.up,
            upstreams_configured: health.total,
            connections,
        }
    })
}
