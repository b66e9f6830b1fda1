//! Plain DNS to a route-only upstream: UDP, and TCP when the UDP answer is truncated
//! (RFC 1035 §4.2.1, RFC 7766 §5). No TLS: a VPN's or home router's resolver speaks only
//! this, and such an upstream is meant only for the names routed to it.
//!
//! Every exchange is a fresh UDP socket `connect()`ed to the server (so the kernel drops
//! datagrams from anyone else) under a fresh random ID, and an answer counts only with
//! that ID, QR set and the same question (RFC 5452 §9.2, §10): an off-path forger must
//! guess both the port and the ID, and a datagram that answers nothing is ignored, never
//! taken as the end of the exchange. When to ask which server, the retransmission and the
//! give-up times are the pure `schedule.rs`; this file is its tokio driver.

mod exchange;
mod schedule;
#[cfg(test)]
mod tests;

use std::{
    future::{Future, poll_fn},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    net::UdpSocket,
    time::{Instant, sleep_until},
};
use tracing::debug;

use self::{
    exchange::{Report, tcp_exchange, udp_answer, udp_wire},
    schedule::{Action, Event, Proto, Schedule, ScheduleConfig, TryFailure},
};
use super::{
    connection::{ConnectionInfo, QueryError},
    dot::framing::question_bytes,
    pool::ForwardError,
    race::Transport,
};
use crate::message::ClientQuery;

/// A route-only upstream spoken to in plain DNS: its nameservers, asked in order.
#[derive(Clone)]
pub struct PlainUpstream {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: usize,
    name: Arc<str>,
    servers: Mutex<Vec<SocketAddr>>,
    config: ScheduleConfig,
    /// Numbers each try (one server, one transport), for logs and `ConnectionInfo`.
    ids: Arc<AtomicU64>,
}

impl PlainUpstream {
    /// `upstream`: index of the `[[upstream]]` in the config (for ConnectionInfo.upstream);
    /// `name`: its name; `servers`: address+port of each nameserver, in order.
    pub fn new(upstream: usize, name: &str, servers: Vec<SocketAddr>, stagger: Duration) -> Self {
        Self::with_attempt_ids(upstream, name, servers, stagger, Arc::new(AtomicU64::new(1)))
    }

    /// As [`new`](Self::new), numbering tries from `ids`: pass the pool group's counter so
    /// that an attempt id in the log is one connection or exchange daemon-wide.
    pub fn with_attempt_ids(
        upstream: usize,
        name: &str,
        servers: Vec<SocketAddr>,
        stagger: Duration,
        ids: Arc<AtomicU64>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                upstream,
                name: Arc::from(name),
                servers: Mutex::new(servers),
                config: ScheduleConfig::new(stagger),
                ids,
            }),
        }
    }

    /// Replaces the servers (a resolv.conf upstream whose file changed). Exchanges under
    /// way keep the list they started with.
    pub fn set_servers(&self, servers: Vec<SocketAddr>) {
        *self.inner.servers.lock().unwrap_or_else(|e| e.into_inner()) = servers;
    }

    pub fn servers(&self) -> Vec<SocketAddr> {
        self.inner.servers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forwards `query`; the answer (its ID set back to query.id) and a ConnectionInfo
    /// describing the server that answered (transport Transport::Plain, authenticated:
    /// false, attempt: a per-exchange id). The caller bounds the total time with its
    /// query_timeout; this ends by itself too, once every server was tried and given up
    /// on (`ScheduleConfig::new` in `schedule.rs` has the times: about 2 s per server).
    pub async fn forward(&self, query: &ClientQuery) -> Result<(Vec<u8>, Arc<ConnectionInfo>), ForwardError> {
        let servers = self.servers();
        let wire = udp_wire(query.upstream_wire(false));
        let question = question_bytes(&wire).ok_or(ForwardError::Query(QueryError::Malformed))?.to_vec();
        let mut schedule = Schedule::new(servers.len(), self.inner.config, Instant::now());
        let mut tries: Vec<Option<Try>> = servers.iter().map(|_| None).collect();
        loop {
            let now = Instant::now();
            while let Some(action) = schedule.poll_action(now) {
                match action {
                    Action::Send { server, resend: false } => {
                        let (slot, sent) = self.first_send(servers[server], &wire, &question).await;
                        tries[server] = slot;
                        if let Err(why) = sent {
                            schedule.handle(Event::Failed(server, why), now);
                        }
                    }
                    Action::Send { server, resend: true } => {
                        if let Some(Try { udp: Some((socket, sent)), .. }) = &tries[server] {
                            if let Err(why) = send(socket, sent).await {
                                schedule.handle(Event::Failed(server, why), now);
                            }
                        }
                    }
                    Action::Tcp { server } => {
                        self.log_end(tries[server].as_ref(), servers[server], &"truncated");
                        tries[server] = Some(Try {
                            proto: Proto::Tcp,
                            udp: None,
                            outcome: Box::pin(tcp_exchange(servers[server], wire.clone(), question.clone())),
                            attempt: self.next_attempt(),
                            started: now,
                        });
                    }
                    Action::Close { server, why } => {
                        self.log_end(tries[server].take().as_ref(), servers[server], &why);
                    }
                    Action::GaveUp(reasons) => {
                        let reason = self.give_up_reason(&servers, &reasons);
                        debug!(upstream = %self.inner.name, %reason, "plain upstream: every nameserver failed");
                        return Err(ForwardError::NoConnection(reason));
                    }
                }
            }
            // Never None here: a try is open or a server is still to ask, or it gave up.
            let wake = schedule.poll_timeout().unwrap_or(now + Duration::from_secs(1));
            let (server, report) = tokio::select! {
                report = poll_fn(|cx| poll_tries(cx, &mut tries)) => report,
                _ = sleep_until(wake) => continue,
            };
            let now = Instant::now();
            match report {
                Report::Answer(mut answer) => {
                    answer[..2].copy_from_slice(&query.id.to_be_bytes());
                    let info = self.answered(&tries, &servers, server);
                    return Ok((answer, info));
                }
                Report::Truncated => schedule.handle(Event::Truncated(server), now),
                Report::Failed(why) => schedule.handle(Event::Failed(server, why), now),
            }
        }
    }

    fn next_attempt(&self) -> u64 {
        self.inner.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Opens a UDP try: a fresh socket connected to `server`, the query under a fresh ID,
    /// sent once. The try (when the socket opened) and how the send went.
    async fn first_send(
        &self,
        server: SocketAddr,
        wire: &[u8],
        question: &[u8],
    ) -> (Option<Try>, Result<(), TryFailure>) {
        let io = |e: std::io::Error| TryFailure::from_io(Proto::Udp, &e);
        let attempt = self.next_attempt();
        let started = Instant::now();
        // An ephemeral port chosen by the kernel (RFC 5452 §9.2: random source ports).
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = match UdpSocket::bind(local).await {
            Ok(socket) => Arc::new(socket),
            Err(e) => {
                // No try to log its end later: say it here.
                let why = io(e);
                self.log_try(attempt, server, Proto::Udp, &why, Duration::ZERO);
                return (None, Err(why));
            }
        };
        let mut query = wire.to_vec();
        let id: u16 = rand::random();
        query[..2].copy_from_slice(&id.to_be_bytes());
        let sent = match socket.connect(server).await {
            Ok(()) => send(&socket, &query).await,
            Err(e) => Err(io(e)),
        };
        let outcome = Box::pin(udp_answer(socket.clone(), id, question.to_vec()));
        (Some(Try { proto: Proto::Udp, udp: Some((socket, query)), outcome, attempt, started }), sent)
    }

    /// The answering server's description, after logging every try's end.
    fn answered(&self, tries: &[Option<Try>], servers: &[SocketAddr], winner: usize) -> Arc<ConnectionInfo> {
        for (i, t) in tries.iter().enumerate() {
            self.log_end(t.as_ref(), servers[i], &if i == winner { "answer" } else { "answered elsewhere" });
        }
        Arc::new(ConnectionInfo {
            upstream: self.inner.upstream,
            upstream_name: self.inner.name.clone(),
            peer: servers[winner],
            transport: Transport::Plain,
            authenticated: false,
            attempt: tries[winner].as_ref().map_or(0, |t| t.attempt),
        })
    }

    fn log_end(&self, t: Option<&Try>, server: SocketAddr, outcome: &dyn std::fmt::Display) {
        if let Some(t) = t {
            self.log_try(t.attempt, server, t.proto, outcome, t.started.elapsed());
        }
    }

    fn log_try(
        &self,
        attempt: u64,
        server: SocketAddr,
        transport: Proto,
        outcome: &dyn std::fmt::Display,
        elapsed: Duration,
    ) {
        debug!(
            attempt,
            upstream = %self.inner.name,
            ip = %server.ip(),
            port = server.port(),
            transport = transport.as_str(),
            %outcome,
            elapsed_ms = elapsed.as_millis() as u64,
            "plain upstream exchange"
        );
    }

    /// "name: 192.0.2.1:53 port unreachable, 192.0.2.2:53 no answer to 2 udp queries in
    /// 2000 ms": the text of the client's EDE, each server with its reason.
    fn give_up_reason(&self, servers: &[SocketAddr], reasons: &[(usize, TryFailure)]) -> String {
        if reasons.is_empty() {
            return format!("{}: no nameservers", self.inner.name);
        }
        let each: Vec<String> = reasons.iter().map(|(i, why)| format!("{} {why}", servers[*i])).collect();
        format!("{}: {}", self.inner.name, each.join(", "))
    }
}

/// One server's try in an exchange: UDP (its socket kept for a retransmission) or TCP.
struct Try {
    proto: Proto,
    /// The UDP socket and the query as sent on it, under the try's ID.
    udp: Option<(Arc<UdpSocket>, Vec<u8>)>,
    /// Reads the try's socket until it has something to report. Dropping it (with the
    /// socket) ends the try.
    outcome: Pin<Box<dyn Future<Output = Report> + Send>>,
    attempt: u64,
    started: Instant,
}

/// Sends a UDP try's query, the first time or again: same socket, same ID, so an
/// answer to either send counts.
async fn send(socket: &UdpSocket, query: &[u8]) -> Result<(), TryFailure> {
    // An ICMP error from an earlier send may surface here as ECONNREFUSED.
    socket.send(query).await.map(drop).map_err(|e| TryFailure::from_io(Proto::Udp, &e))
}

/// Polls every open try; ready with the first that has something to report.
fn poll_tries(cx: &mut Context<'_>, tries: &mut [Option<Try>]) -> Poll<(usize, Report)> {
    for (server, t) in tries.iter_mut().enumerate() {
        if let Some(t) = t {
            if let Poll::Ready(report) = t.outcome.as_mut().poll(cx) {
                // A finished future must not be polled again, should the try stay open.
                t.outcome = Box::pin(std::future::pending());
                return Poll::Ready((server, report));
            }
        }
    }
    Poll::Pending
}
