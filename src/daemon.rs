//! Wiring: config → upstream pool → pipeline → front end; and an orderly shutdown.
//!
//! Owns the daemon's parts and their lifetimes. It never answers queries itself.

use std::{thread::available_parallelism, time::Duration};

use tracing::info;

use crate::{
    config::Config,
    frontend::{BindError, Frontend, FrontendLimits, Listeners, bind, request::Acl},
    pipeline::Pipeline,
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
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot serve: {0}")]
    Serve(#[from] std::io::Error),
}

/// A running daemon: its bound addresses and what is needed to stop it.
pub struct Daemon {
    frontend: Frontend,
    /// Addresses actually bound (UDP and TCP share each one, also when the port was 0).
    pub local_addrs: Vec<SocketAddr>,
    pipeline: Pipeline,
}

use std::net::SocketAddr;

impl Daemon {
    /// Binds every listen address and starts serving. Must run inside the tokio runtime.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let cores = available_parallelism().map_or(1, |n| n.get());
        let listeners = bind(&config.server.listen, cores)?;
        Self::start_on(config, listeners)
    }

    /// Starts serving on sockets bound elsewhere (socket activation, tests).
    pub fn start_on(config: &Config, listeners: Listeners) -> Result<Self, StartError> {
        let pool = Pool::new(config)?;
        pool.watch_resolv_conf(&config.server.listen);
        let pipeline = Pipeline::new(pool, config.server.query_timeout, &config.cache);
        let limits = FrontendLimits {
            max_in_flight: config.server.max_inflight,
            max_tcp_clients: config.server.max_tcp_clients,
            tcp_idle_timeout: config.server.tcp_idle_timeout,
        };
        let frontend = Frontend::start(listeners, pipeline.clone(), Acl::new(&config.server.allow), limits)?;
        Ok(Self { local_addrs: frontend.local_addrs.clone(), frontend, pipeline })
    }

    /// The upstream pool (its connections and counters).
    pub fn pool(&self) -> &crate::upstream::pool::Pool {
        self.pipeline.pool()
    }

    /// The query pipeline (its cache).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Stops taking queries, lets the ones in flight finish for up to [`DRAIN_TIMEOUT`],
    /// then closes every listener.
    pub async fn shutdown(self) {
        self.frontend.shutdown(DRAIN_TIMEOUT).await;
        info!("stopped");
    }
}
