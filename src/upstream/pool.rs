//! The upstream pool: one live connection per upstream, opened on demand, and forwarding
//! with one retry when a connection dies under a query.
//!
//! Owns which connection a query uses. It never parses answers (the pipeline does) and
//! never bounds the client's total wait (the pipeline's `query_timeout` does).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::Mutex,
    time::{Instant, timeout},
};

use super::{
    connector::{AttemptContext, AttemptFailure, log_attempt, secure, tcp_connect},
    dot::{Connection, ConnectionLimits, QueryError},
    race::{Candidate, FailReason, Transport},
};
use crate::{
    config::{Config, UpstreamConfig},
    message::ClientQuery,
    tls::{TlsSetupError, UpstreamTls},
};

/// Why forwarding a query produced no answer; the pipeline turns it into SERVFAIL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream answered: {0}")]
    NoAnswer(String),
}

struct Upstream {
    config: UpstreamConfig,
    ctx: AttemptContext,
    /// The one connection to this upstream (RFC 7766 §6.2.2); the lock makes concurrent
    /// queries share a single connect.
    slot: Mutex<Option<Connection>>,
}

/// All upstreams of a config, with their connections.
pub struct Pool {
    upstreams: Vec<Upstream>,
    connect_timeout: Duration,
    next_attempt: AtomicU64,
}

impl Pool {
    pub fn new(config: &Config) -> Result<Self, TlsSetupError> {
        let limits = ConnectionLimits {
            idle_timeout: config.connection.idle_timeout,
            max_inflight: config.connection.max_inflight,
        };
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                Ok(Upstream {
                    ctx: AttemptContext {
                        upstream_name: Arc::from(u.name.as_str()),
                        tls: UpstreamTls::new(u)?,
                        limits,
                    },
                    config: u.clone(),
                    slot: Mutex::new(None),
                })
            })
            .collect::<Result<_, TlsSetupError>>()?;
        Ok(Self {
            upstreams,
            connect_timeout: config.connection.connect_timeout,
            next_attempt: AtomicU64::new(1),
        })
    }

    /// Forwards `query`, trying upstreams in config order. Each upstream gets an equal
    /// share of the remaining `budget`, so a silent first upstream cannot eat all of it.
    pub async fn forward(
        &self,
        query: &ClientQuery,
        budget: Duration,
    ) -> Result<Vec<u8>, ForwardError> {
        let deadline = Instant::now() + budget;
        let mut failures = Vec::new();
        for (index, upstream) in self.upstreams.iter().enumerate() {
            let left = self.upstreams.len() - index;
            let share = deadline.saturating_duration_since(Instant::now()) / left as u32;
            match timeout(share, self.forward_to(upstream, query)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(why)) => failures.push(format!("{}: {why}", upstream.config.name)),
                Err(_) => failures.push(format!(
                    "{}: no answer in {} ms",
                    upstream.config.name,
                    share.as_millis()
                )),
            }
        }
        Err(ForwardError::NoAnswer(failures.join("; ")))
    }

    async fn forward_to(
        &self,
        upstream: &Upstream,
        query: &ClientQuery,
    ) -> Result<Vec<u8>, String> {
        // RFC 7766 §6.2.4 / RFC 7858 §3.4: a query lost to a closing connection is retried
        // once on a fresh connection.
        for _ in 0..2 {
            let conn = self.connection(upstream).await?;
            let wire = query.upstream_wire(conn.info().transport == Transport::Tls);
            match conn.query(wire).await {
                Ok(answer) => return Ok(answer),
                Err(QueryError::Closed) => continue,
                Err(e @ QueryError::Malformed) => return Err(e.to_string()),
            }
        }
        Err("connection closed twice before answering".into())
    }

    /// The live connection to `upstream`, opening one if there is none.
    async fn connection(&self, upstream: &Upstream) -> Result<Connection, String> {
        let mut slot = upstream.slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let conn = self.connect_in_order(upstream).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Tries the upstream's addresses one after another on its TLS port. The racer
    /// replaces this with concurrent happy-eyeballs attempts.
    async fn connect_in_order(&self, upstream: &Upstream) -> Result<Connection, String> {
        let mut last = String::from("no addresses");
        for ip in &upstream.config.addresses {
            let candidate = Candidate {
                upstream: self.index_of(upstream),
                addr: (*ip, upstream.config.tls_port).into(),
                transport: Transport::Tls,
            };
            let id = self.next_attempt.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let attempt = async {
                let tcp = tcp_connect(candidate.addr).await?;
                secure(tcp, id, candidate, &upstream.ctx).await
            };
            let result =
                timeout(self.connect_timeout, attempt)
                    .await
                    .unwrap_or(Err(AttemptFailure {
                        reason: FailReason::Timeout,
                        detail: format!("no connection in {} ms", self.connect_timeout.as_millis()),
                    }));
            match result {
                Ok(conn) => {
                    log_attempt(id, candidate, &upstream.config.name, "ready", started, None);
                    return Ok(conn);
                }
                Err(failure) => {
                    let outcome = failure.reason.as_str();
                    log_attempt(
                        id,
                        candidate,
                        &upstream.config.name,
                        outcome,
                        started,
                        Some(&failure.detail),
                    );
                    last = format!(
                        "{}:{} {outcome}",
                        candidate.addr.ip(),
                        candidate.addr.port()
                    );
                }
            }
        }
        Err(last)
    }

    fn index_of(&self, upstream: &Upstream) -> usize {
        self.upstreams
            .iter()
            .position(|u| std::ptr::eq(u, upstream))
            .unwrap_or(0)
    }
}
