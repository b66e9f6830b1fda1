//! When to ask which nameserver of a plain upstream, as a pure, sans-IO state machine.
//!
//! Owns the order and timing of one exchange: which server is asked next and when, the
//! one UDP retransmission, the switch to TCP on truncation, each try's give-up time and
//! the end of the exchange. Never opens sockets, reads a clock or logs: time comes in as
//! `now`, as in `upstream/race/`.
//!
//! Rules:
//! - server 0 is asked at once; each next server `stagger` after the one before it, or at
//!   once when a try ends without an answer (port unreachable, an error without a
//!   question, given up): a dropped packet costs one stagger, never a timeout;
//! - a UDP try is sent again on its socket, same ID, `retransmit_after` after its first
//!   send, up to `max_udp_sends` sends in all (RFC 1035 §4.2.1: UDP queries are
//!   retransmitted; the same ID lets a late answer to the first send still count);
//! - a truncated UDP answer (TC) turns the try into a TCP try to the same server
//!   (RFC 7766 §5), which has `tcp_give_up` of its own;
//! - a UDP try ends `give_up` after its first send;
//! - the exchange gives up once every server was asked and every try ended.
//!
//! The first valid answer ends the exchange in the driver; nothing here needs to know.
//!
//! Driver contract: feed what a try reports with [`Schedule::handle`]; after every event
//! and wake-up, drain [`Schedule::poll_action`]; sleep until [`Schedule::poll_timeout`].

use std::{collections::VecDeque, fmt, io, time::Duration};

use tokio::time::Instant;

use crate::upstream::connection::rcode_name;

/// UDP sends per server (the first and one retransmission).
pub(crate) const MAX_UDP_SENDS: u8 = 2;
/// The shortest wait before a retransmission, whatever the stagger: a reply slower
/// than this over a network is common enough that resending sooner only adds load.
const MIN_RETRANSMIT: Duration = Duration::from_millis(100);
/// A server that answers nothing valid within this long after its first send is given
/// up on (at least; see [`ScheduleConfig::new`]). A recursive resolver behind a VPN
/// can take a second or more for a name it has not cached.
const MIN_GIVE_UP: Duration = Duration::from_secs(2);
/// The most any one try waits, whatever the stagger.
const MAX_GIVE_UP: Duration = Duration::from_secs(10);

/// The timings of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScheduleConfig {
    /// The next server is asked this long after the previous one while no answer came.
    pub stagger: Duration,
    /// A UDP query is sent again this long after its previous send.
    pub retransmit_after: Duration,
    /// UDP sends per server in all, the first included (at least 1).
    pub max_udp_sends: u8,
    /// A UDP try ends this long after its first send.
    pub give_up: Duration,
    /// A TCP try ends this long after it began.
    pub tcp_give_up: Duration,
}

impl ScheduleConfig {
    /// Timings derived from the stagger: retransmit after 2 × stagger (at least 100 ms,
    /// at most 2 s), give a try 3 × that (at least 2 s, at most 10 s), the same for TCP.
    /// With the default 250 ms stagger: resend at 500 ms, give up at 2 s.
    pub fn new(stagger: Duration) -> Self {
        let retransmit_after = (stagger * 2).clamp(MIN_RETRANSMIT, Duration::from_secs(2));
        let give_up = (retransmit_after * 3).clamp(MIN_GIVE_UP, MAX_GIVE_UP);
        Self { stagger, retransmit_after, max_udp_sends: MAX_UDP_SENDS, give_up, tcp_give_up: give_up }
    }
}

/// UDP or TCP, for logs and reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// Why one try to one server ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TryFailure {
    /// Nothing valid came back in the try's time.
    NoAnswer { proto: Proto, sends: u8, waited: Duration },
    /// ICMP port unreachable (ECONNREFUSED on the connected UDP socket), or a TCP reset.
    Refused(Proto),
    /// An error answer without a question (FORMERR, REFUSED, NOTIMP; RFC 7858 §3.3
    /// matches it by ID alone): the server will not answer this query.
    NoQuestion(u8),
    /// The TCP connection closed before an answer.
    Closed,
    /// Over TCP, messages that answer another query and never this one.
    Unmatched,
    /// Another socket error (no route, address family not available, ...).
    Io(Proto, io::ErrorKind),
}

impl TryFailure {
    /// A socket error of `proto`.
    pub fn from_io(proto: Proto, err: &io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => TryFailure::Refused(proto),
            io::ErrorKind::UnexpectedEof => TryFailure::Closed,
            kind => TryFailure::Io(proto, kind),
        }
    }
}

impl fmt::Display for TryFailure {
    // This text reaches the client in the EDE of its SERVFAIL: short and plain.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryFailure::NoAnswer { proto: Proto::Udp, sends, waited } => {
                write!(f, "no answer to {sends} udp queries in {} ms", waited.as_millis())
            }
            TryFailure::NoAnswer { proto: Proto::Tcp, waited, .. } => {
                write!(f, "no tcp answer in {} ms", waited.as_millis())
            }
            TryFailure::Refused(Proto::Udp) => f.write_str("port unreachable"),
            TryFailure::Refused(Proto::Tcp) => f.write_str("tcp connection refused"),
            TryFailure::NoQuestion(rcode) => write!(f, "answered {} without a question", rcode_name(*rcode)),
            TryFailure::Closed => f.write_str("tcp closed before the answer"),
            TryFailure::Unmatched => f.write_str("tcp answers did not match the query"),
            TryFailure::Io(proto, kind) => write!(f, "{} error: {kind}", proto.as_str()),
        }
    }
}

/// What a try reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A valid UDP answer with TC set: ask again over TCP.
    Truncated(usize),
    /// The try ended without an answer; the driver already stopped reading it.
    Failed(usize, TryFailure),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send the query over UDP: from a fresh socket under a fresh ID, or again on the
    /// try's socket under its ID when `resend`.
    Send { server: usize, resend: bool },
    /// The UDP answer was truncated: close the UDP try, ask the server over TCP.
    Tcp { server: usize },
    /// The server's try is over without an answer: close it. Later reports from it are
    /// ignored.
    Close { server: usize, why: TryFailure },
    /// Every server was asked and every try ended: the exchange failed. Emitted once,
    /// last; lists each server with its reason, in order.
    GaveUp(Vec<(usize, TryFailure)>),
}

#[derive(Debug, Clone, Copy)]
enum Server {
    Unasked,
    Udp { first_sent: Instant, sends: u8 },
    Tcp { since: Instant },
    Ended(TryFailure),
}

/// The schedule of one exchange over `n` servers.
#[derive(Debug)]
pub(crate) struct Schedule {
    config: ScheduleConfig,
    servers: Vec<Server>,
    /// Servers are asked in order: the next one not asked yet.
    next: usize,
    /// When `next` is asked, unless something asks it sooner.
    next_at: Instant,
    actions: VecDeque<Action>,
    gave_up: bool,
}

impl Schedule {
    pub fn new(servers: usize, config: ScheduleConfig, now: Instant) -> Self {
        let config = ScheduleConfig { max_udp_sends: config.max_udp_sends.max(1), ..config };
        Self {
            config,
            servers: vec![Server::Unasked; servers],
            next: 0,
            next_at: now,
            actions: VecDeque::new(),
            gave_up: false,
        }
    }

    pub fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Truncated(server) => {
                if let Some(s @ Server::Udp { .. }) = self.servers.get_mut(server) {
                    *s = Server::Tcp { since: now };
                    self.actions.push_back(Action::Tcp { server });
                }
            }
            Event::Failed(server, why) => {
                if matches!(self.servers.get(server), Some(Server::Udp { .. } | Server::Tcp { .. })) {
                    self.end(server, why, now);
                }
            }
        }
    }

    fn end(&mut self, server: usize, why: TryFailure, now: Instant) {
        self.servers[server] = Server::Ended(why);
        self.actions.push_back(Action::Close { server, why });
        // This server will not answer: the next one now, not a stagger later.
        self.next_at = self.next_at.min(now);
    }

    /// The next thing to do at `now`, or `None` until [`poll_timeout`](Self::poll_timeout)
    /// or the next event.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        if self.gave_up {
            return None;
        }
        let c = self.config;
        for server in 0..self.servers.len() {
            match self.servers[server] {
                Server::Udp { first_sent, sends } => {
                    if now >= first_sent + c.give_up {
                        let why = TryFailure::NoAnswer { proto: Proto::Udp, sends, waited: c.give_up };
                        self.end(server, why, now);
                    } else if sends < c.max_udp_sends && now >= first_sent + c.retransmit_after * sends.into()
                    {
                        self.servers[server] = Server::Udp { first_sent, sends: sends + 1 };
                        self.actions.push_back(Action::Send { server, resend: true });
                    }
                }
                Server::Tcp { since } if now >= since + c.tcp_give_up => {
                    let why = TryFailure::NoAnswer { proto: Proto::Tcp, sends: 1, waited: c.tcp_give_up };
                    self.end(server, why, now);
                }
                _ => {}
            }
        }
        if self.next < self.servers.len() && now >= self.next_at {
            self.servers[self.next] = Server::Udp { first_sent: now, sends: 1 };
            self.actions.push_back(Action::Send { server: self.next, resend: false });
            self.next += 1;
            self.next_at = now + c.stagger;
        }
        if self.next == self.servers.len() && self.actions.is_empty() {
            let reasons: Option<Vec<(usize, TryFailure)>> = self
                .servers
                .iter()
                .enumerate()
                .map(|(i, s)| match s {
                    Server::Ended(why) => Some((i, *why)),
                    _ => None,
                })
                .collect();
            if let Some(reasons) = reasons {
                self.gave_up = true;
                self.actions.push_back(Action::GaveUp(reasons));
            }
        }
        self.actions.pop_front()
    }

    /// When [`poll_action`](Self::poll_action) next has something to do without an
    /// event; `None` once the exchange gave up (or with actions still to drain).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.gave_up || !self.actions.is_empty() {
            return None;
        }
        let c = self.config;
        let next = (self.next < self.servers.len()).then_some(self.next_at);
        self.servers
            .iter()
            .filter_map(|s| match *s {
                Server::Udp { first_sent, sends } if sends < c.max_udp_sends => {
                    Some((first_sent + c.retransmit_after * sends.into()).min(first_sent + c.give_up))
                }
                Server::Udp { first_sent, .. } => Some(first_sent + c.give_up),
                Server::Tcp { since } => Some(since + c.tcp_give_up),
                _ => None,
            })
            .chain(next)
            .min()
    }
}
