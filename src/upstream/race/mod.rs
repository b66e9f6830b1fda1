//! Happy-eyeballs connection race (RFC 8305) as a pure, sans-IO state machine.
//!
//! Owns: *which* candidate (upstream, address, port, transport) is tried next and
//! *when*, the per-attempt and per-race deadlines, the concurrency cap, the
//! TLS-before-plain-text policy gate, and the choice of the winner.
//!
//! Must never: open sockets, sleep, spawn tasks, log, or read a clock. Time only
//! enters as the `now` argument, so the tokio driver (and tests with paused time)
//! decide what "now" is. The race never invents a plain-text candidate: plain
//! ones come only from the caller's plain group, which [`order_candidates`]
//! builds only for upstreams that allow it (`opportunistic`, RFC 8310 §5).
//!
//! Rules, in short:
//! - the first attempt starts at once; each next one `attempt_delay` after the
//!   previous start, or at once after any hard failure ([`FailReason::is_hard`]);
//! - at most `max_concurrent_attempts` alive; a freed slot starts the next
//!   attempt as soon as its delay has passed;
//! - every attempt has its own `attempt_timeout` (from its start, renewed once at
//!   `TcpUp`); a silent attempt is cancelled then, never blocking the others;
//! - TLS candidates (DoT, and DoH each one place after the DoT candidate of its address)
//!   first; the plain group joins when every TLS candidate has
//!   failed, or from `plain_fallback_delay` on while no TLS attempt is
//!   handshaking (TCP up, TLS pending); once joined, the groups alternate;
//! - the first `Ready` wins and the rest are cancelled; `race_timeout` after the
//!   start, everything alive is cancelled and the race gives up.
//!
//! Driver contract (quinn-proto style):
//! 1. feed every socket outcome with [`Race::handle`];
//! 2. after every event and every wake-up, call [`Race::poll_action`] until it
//!    returns `None` and execute each [`Action`];
//! 3. sleep until [`Race::poll_timeout`] (or the next event), then go to 2.
//!
//! Events are applied as they arrive; timers (attempt timeouts, the next start,
//! the plain-text fallback, the race deadline) fire inside `poll_action`.

mod order;
#[cfg(test)]
mod tests;

pub use order::{UpstreamAddrs, order_candidates};

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::tls::CaCheck;
use tokio::time::Instant;

/// How DNS is carried over one candidate connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// DNS over TLS (RFC 7858), normally port 853.
    Tls,
    /// DNS over plain TCP (RFC 7766), normally port 53. Only ever offered for
    /// `opportunistic` upstreams. Also what a `plain` route-only upstream's answers
    /// came over (UDP, or TCP after truncation: `upstream/plain/`).
    Plain,
    /// DNS over HTTPS (RFC 8484) over HTTP/2, normally port 443: TLS with the same
    /// authentication as [`Transport::Tls`], so it races in the TLS group, after DoT.
    Https,
}

impl Transport {
    /// Short name for structured logs and metric labels: `"tls"`, `"plain"` or `"https"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Tls => "tls",
            Transport::Plain => "plain",
            Transport::Https => "https",
        }
    }

    /// How much this transport is preferred once it works: DoT, then DoH, then plain text.
    /// Speed only orders the candidates inside a race; this decides what a background race
    /// may replace (`upstream/pool/races.rs`).
    pub fn preference(&self) -> u8 {
        match self {
            Transport::Plain => 0,
            Transport::Https => 1,
            Transport::Tls => 2,
        }
    }

    /// Carried over TLS, so encrypted (and authenticated as the upstream's policy says):
    /// DoT and DoH are one group of a race; only plain text is a separate, policy-gated one.
    pub fn is_encrypted(&self) -> bool {
        matches!(self, Transport::Tls | Transport::Https)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One endpoint the race may connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Index of the upstream (in the caller's configuration) this endpoint belongs to.
    pub upstream: usize,
    /// IP address and port to connect to.
    pub addr: SocketAddr,
    /// What runs over the TCP connection.
    pub transport: Transport,
}

/// Number of one connection attempt. Ids only ever grow within a race, and a pool
/// can keep them growing across races by passing [`Race::next_id`] on as the next
/// race's `first_id`, so log lines and late events never confuse two attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptId(pub u64);

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a connection attempt ended without becoming ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// The TCP connection was refused (RST).
    Refused,
    /// ICMP unreachable (host, network or port).
    Unreachable,
    /// No answer in time: the attempt's own timeout, the race deadline, or a
    /// timeout the driver reported itself.
    Timeout,
    /// The TLS handshake failed (alert received or protocol error).
    TlsAlert,
    /// The server's key matched none of the upstream's pins (RFC 7858 §4.2:
    /// non-recoverable for this endpoint).
    PinMismatch,
    /// A pin matched a CA certificate and the leaf did not validate to it for the
    /// upstream's `tls_name`: which check failed. As final as a mismatch.
    CaPinRefused(CaCheck),
    /// Any other socket error.
    Io,
}

impl FailReason {
    /// A hard failure is a definite answer ("not here"), so waiting out the
    /// connection attempt delay would only waste time: the next attempt starts at
    /// once. Only a timeout is soft: silence says nothing about the next candidate.
    pub fn is_hard(&self) -> bool {
        !matches!(self, FailReason::Timeout)
    }

    /// The pins refused what the server presented: no retry to the same endpoint helps.
    pub fn is_pin_refusal(&self) -> bool {
        matches!(self, FailReason::PinMismatch | FailReason::CaPinRefused(_))
    }

    /// Short name for structured logs (`outcome=...`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FailReason::Refused => "rst",
            FailReason::Unreachable => "unreachable",
            FailReason::Timeout => "timeout",
            FailReason::TlsAlert => "tls-alert",
            FailReason::PinMismatch => "pin-mismatch",
            FailReason::CaPinRefused(_) => "ca-pin-refused",
            FailReason::Io => "io",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Say which check failed: this text reaches the EDE clients get.
            FailReason::CaPinRefused(check) => write!(f, "{} ({check})", self.as_str()),
            _ => f.write_str(self.as_str()),
        }
    }
}

/// Something the driver observed about one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The TCP handshake completed (optional: `Ready` without it is fine).
    TcpUp(AttemptId),
    /// The connection is usable: for TLS, handshake done and key verified.
    Ready(AttemptId),
    /// The attempt failed and its socket is already closed by the driver.
    Failed(AttemptId, FailReason),
}

impl Event {
    /// The attempt this event is about.
    pub fn id(&self) -> AttemptId {
        match *self {
            Event::TcpUp(id) | Event::Ready(id) | Event::Failed(id, _) => id,
        }
    }
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a connection attempt (TCP connect, then TLS for [`Transport::Tls`], and TLS
    /// then HTTP/2 for [`Transport::Https`]).
    Connect {
        /// Id to report events under.
        id: AttemptId,
        /// Where to connect.
        candidate: Candidate,
    },
    /// Abort the attempt and close its socket; later events for it are ignored.
    Cancel {
        /// The attempt to abort.
        id: AttemptId,
    },
    /// This attempt won: keep its connection. Emitted at most once, before the
    /// `Cancel`s of the losers; the race is finished after those.
    Won {
        /// The winning attempt.
        id: AttemptId,
    },
    /// No attempt succeeded; the race is finished. Lists every attempt that was
    /// started, ordered by id, with why it ended (attempts killed by their own
    /// timeout or by the race deadline are listed as [`FailReason::Timeout`]).
    /// Pin mismatches appear here too, and also in [`Race::pin_mismatches`].
    GaveUp {
        /// `(attempt, candidate, reason)` for every started attempt.
        reasons: Vec<(AttemptId, Candidate, FailReason)>,
    },
}

/// Timing and size knobs of one race. Use [`RaceConfig::clamped`] (which
/// [`Race::new`] applies itself) to bring values into safe bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaceConfig {
    /// Head start each attempt gets before the next one starts (RFC 8305 §5
    /// "Connection Attempt Delay").
    pub attempt_delay: Duration,
    /// How long one attempt may stay silent, measured from its start, and again
    /// from its `TcpUp` (that second allowance is for the TLS handshake).
    pub attempt_timeout: Duration,
    /// How long after the race start the plain-text group may join while no TLS
    /// attempt is handshaking.
    pub plain_fallback_delay: Duration,
    /// Most attempts alive at once.
    pub max_concurrent_attempts: usize,
    /// Overall deadline of the race, from its start.
    pub race_timeout: Duration,
}

impl RaceConfig {
    /// RFC 8305 §5: the Connection Attempt Delay MUST NOT be below 10 ms.
    pub const MIN_ATTEMPT_DELAY: Duration = Duration::from_millis(10);
    /// RFC 8305 §5: the Connection Attempt Delay SHOULD NOT exceed 2 s.
    pub const MAX_ATTEMPT_DELAY: Duration = Duration::from_secs(2);
    /// Upper bound for the other durations, so instant arithmetic can never
    /// overflow; no sane configuration comes near it.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

    /// The same configuration with RFC 8305 §5 bounds applied: `attempt_delay`
    /// in 10 ms..=2 s, `max_concurrent_attempts` at least 1, other durations at
    /// most [`Self::MAX_TIMEOUT`]. Zero timeouts are kept: they mean "give up at once".
    #[must_use]
    pub fn clamped(self) -> Self {
        RaceConfig {
            attempt_delay: self.attempt_delay.clamp(Self::MIN_ATTEMPT_DELAY, Self::MAX_ATTEMPT_DELAY),
            attempt_timeout: self.attempt_timeout.min(Self::MAX_TIMEOUT),
            plain_fallback_delay: self.plain_fallback_delay.min(Self::MAX_TIMEOUT),
            max_concurrent_attempts: self.max_concurrent_attempts.max(1),
            race_timeout: self.race_timeout.min(Self::MAX_TIMEOUT),
        }
    }
}

impl Default for RaceConfig {
    fn default() -> Self {
        RaceConfig {
            // RFC 8305 §5 recommends 250 ms.
            attempt_delay: Duration::from_millis(250),
            attempt_timeout: Duration::from_secs(5),
            plain_fallback_delay: Duration::from_millis(500),
            max_concurrent_attempts: 4,
            race_timeout: Duration::from_secs(10),
        }
    }
}

/// One started, not yet ended attempt.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    id: AttemptId,
    candidate: Candidate,
    /// When it is cancelled as timed out; moved on by `TcpUp`.
    deadline: Instant,
    /// TCP is up, TLS handshake in progress: this holds the plain group back.
    tcp_up: bool,
}

/// A happy-eyeballs race over TLS candidates, then (policy permitting) plain ones.
/// See the module documentation for the driver contract.
#[derive(Debug)]
pub struct Race {
    cfg: RaceConfig,
    /// Race start + `plain_fallback_delay`.
    plain_join_at: Instant,
    /// Race start + `race_timeout`.
    deadline: Instant,
    tls_pending: VecDeque<Candidate>,
    plain_pending: VecDeque<Candidate>,
    /// Once true, plain candidates may start; never goes back to false.
    plain_joined: bool,
    /// Group of the most recent start, to alternate the groups once both are live.
    last_started: Option<Transport>,
    /// Alive attempts, ordered by id.
    alive: Vec<Attempt>,
    /// Earliest instant the next attempt may start.
    next_start_at: Instant,
    next_id: u64,
    /// Every attempt that ended without winning, in the order they ended.
    ended: Vec<(AttemptId, Candidate, FailReason)>,
    pin_mismatches: Vec<Candidate>,
    /// Decided actions not yet handed to the driver, oldest first.
    outbox: VecDeque<Action>,
    /// An event changed the state since the last `poll_action`.
    needs_poll: bool,
    /// Won or gave up (the outbox may still hold the final actions).
    decided: bool,
    /// Latest `now` seen; time never runs backwards inside the race.
    last_now: Instant,
}

impl Race {
    /// A race starting at `now`, whose first attempt gets id `first_id`.
    ///
    /// `tls` and `plain` are tried in the given order (see [`order_candidates`]).
    /// Pass an empty `plain` for strict upstreams. Candidates in the wrong list
    /// (a `Plain` one in `tls` or vice versa) and exact duplicates are dropped, so
    /// a caller bug can never race plain text as if it were TLS. `cfg` is
    /// [clamped](RaceConfig::clamped).
    #[must_use]
    pub fn new(
        tls: Vec<Candidate>,
        plain: Vec<Candidate>,
        cfg: RaceConfig,
        first_id: u64,
        now: Instant,
    ) -> Race {
        let cfg = cfg.clamped();
        Race {
            cfg,
            plain_join_at: now + cfg.plain_fallback_delay,
            deadline: now + cfg.race_timeout,
            tls_pending: group(tls, Transport::is_encrypted),
            plain_pending: group(plain, |t| *t == Transport::Plain),
            plain_joined: false,
            last_started: None,
            alive: Vec::new(),
            next_start_at: now,
            next_id: first_id,
            ended: Vec::new(),
            pin_mismatches: Vec::new(),
            outbox: VecDeque::new(),
            needs_poll: false,
            decided: false,
            last_now: now,
        }
    }

    /// Apply one event. Events for unknown ids, for attempts that already ended or
    /// were cancelled, and any event after the race is decided are ignored.
    pub fn handle(&mut self, event: Event, now: Instant) {
        let now = self.observe(now);
        if self.decided {
            return;
        }
        let Some(pos) = self.alive.iter().position(|a| a.id == event.id()) else {
            return;
        };
        self.needs_poll = true;
        match event {
            Event::TcpUp(_) => {
                let attempt = &mut self.alive[pos];
                if !attempt.tcp_up {
                    // The TLS handshake gets a full allowance of its own.
                    attempt.tcp_up = true;
                    attempt.deadline = now + self.cfg.attempt_timeout;
                }
            }
            Event::Ready(_) => self.win(pos),
            Event::Failed(_, reason) => {
                let attempt = self.alive.remove(pos);
                self.ended.push((attempt.id, attempt.candidate, reason));
                if reason.is_hard() {
                    self.next_start_at = self.next_start_at.min(now);
                }
                if reason.is_pin_refusal() {
                    self.exclude_endpoint(attempt.candidate);
                }
            }
        }
    }

    /// The next action for the driver, or `None` when there is nothing to do
    /// until the next event or [`Race::poll_timeout`]. Call in a loop.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        let now = self.observe(now);
        if self.outbox.is_empty() {
            self.needs_poll = false;
            self.advance(now);
        }
        self.outbox.pop_front()
    }

    /// The next instant at which [`Race::poll_action`] has something to do, or
    /// `None` once the race is finished. Never later than the race deadline.
    /// With actions still queued, or after an event not yet followed by
    /// `poll_action`, it is the latest `now` seen, meaning "poll at once".
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.outbox.is_empty() {
            return Some(self.last_now);
        }
        if self.decided {
            return None;
        }
        if self.needs_poll {
            return Some(self.last_now);
        }
        let mut wake = self.deadline;
        for attempt in &self.alive {
            wake = wake.min(attempt.deadline);
        }
        // Once the fallback instant has passed without a join, only an event or an
        // attempt deadline (both covered) can let the plain group in.
        if !self.plain_joined && !self.plain_pending.is_empty() && self.plain_join_at > self.last_now {
            wake = wake.min(self.plain_join_at);
        }
        // At the cap, a freed slot (an event or an attempt deadline) triggers the
        // next start, so the start instant itself is no wake-up.
        if self.alive.len() < self.cfg.max_concurrent_attempts && self.has_startable() {
            wake = wake.min(self.next_start_at);
        }
        Some(wake)
    }

    /// True once the race has won or given up and all its actions were polled.
    pub fn is_finished(&self) -> bool {
        self.decided && self.outbox.is_empty()
    }

    /// The id the next attempt would get; pass it as the next race's `first_id`.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Candidates whose attempt failed with a pin refusal ([`FailReason::is_pin_refusal`]) in this
    /// race, in the order they failed, whether the race was won or not, so the
    /// pool can back those endpoints off. No further attempt goes to the same
    /// (address, transport) in this race.
    pub fn pin_mismatches(&self) -> impl Iterator<Item = Candidate> + '_ {
        self.pin_mismatches.iter().copied()
    }

    /// Number of attempts currently alive (started, not ended, not cancelled).
    pub fn attempts_alive(&self) -> usize {
        self.alive.len()
    }

    /// The effective (clamped) configuration.
    pub fn config(&self) -> &RaceConfig {
        &self.cfg
    }

    fn observe(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    /// Fire every timer due at `now`, in a fixed order: race deadline, attempt
    /// timeouts (which free slots), plain-group join, next start, give-up.
    fn advance(&mut self, now: Instant) {
        if self.decided {
            return;
        }
        if now >= self.deadline {
            self.give_up_at_deadline();
            return;
        }
        self.expire_attempts(now);
        self.maybe_join_plain(now);
        self.maybe_start_next(now);
        if self.alive.is_empty() && self.tls_pending.is_empty() && self.plain_pending.is_empty() {
            self.give_up();
        }
    }

    /// A silent attempt never blocks the others (background.md: the connector that
    /// waited 10 s per address); it simply runs out its own clock.
    fn expire_attempts(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.alive.len() {
            if self.alive[i].deadline <= now {
                let attempt = self.alive.remove(i);
                self.outbox.push_back(Action::Cancel { id: attempt.id });
                self.ended.push((attempt.id, attempt.candidate, FailReason::Timeout));
            } else {
                i += 1;
            }
        }
    }

    /// RFC 8310 §5 lets opportunistic fall back to cleartext, but security must not
    /// be decided by speed: plain text joins only when TLS is exhausted, or when
    /// TLS got nowhere within the fallback delay. A TLS attempt that reached TCP
    /// and is handshaking is evidence that 853 works, so it holds plain back.
    fn maybe_join_plain(&mut self, now: Instant) {
        if self.plain_joined {
            return;
        }
        let tls_alive = self.alive.iter().any(|a| a.candidate.transport.is_encrypted());
        let tls_handshaking = self.alive.iter().any(|a| a.candidate.transport.is_encrypted() && a.tcp_up);
        let tls_exhausted = self.tls_pending.is_empty() && !tls_alive;
        let tls_stuck = now >= self.plain_join_at && !tls_handshaking;
        if tls_exhausted || tls_stuck {
            self.plain_joined = true;
        }
    }

    /// RFC 8305 §5: stagger attempts by the Connection Attempt Delay rather than
    /// starting them all at once, and keep earlier attempts running.
    fn maybe_start_next(&mut self, now: Instant) {
        if self.alive.len() >= self.cfg.max_concurrent_attempts || now < self.next_start_at {
            return;
        }
        let Some(candidate) = self.take_next_candidate() else {
            return;
        };
        let id = AttemptId(self.next_id);
        self.next_id += 1;
        self.last_started = Some(candidate.transport);
        self.next_start_at = now + self.cfg.attempt_delay;
        self.alive.push(Attempt { id, candidate, deadline: now + self.cfg.attempt_timeout, tcp_up: false });
        self.outbox.push_back(Action::Connect { id, candidate });
    }

    fn has_startable(&self) -> bool {
        !self.tls_pending.is_empty() || (self.plain_joined && !self.plain_pending.is_empty())
    }

    /// TLS first. Once plain has joined, the groups alternate (plain first), so the
    /// fallback is not stuck behind a long TLS list and TLS still keeps going.
    fn take_next_candidate(&mut self) -> Option<Candidate> {
        let plain_ready = self.plain_joined && !self.plain_pending.is_empty();
        let plain_turn = self.tls_pending.is_empty() || self.last_started != Some(Transport::Plain);
        if plain_ready && plain_turn { self.plain_pending.pop_front() } else { self.tls_pending.pop_front() }
    }

    /// RFC 7858 §4.2: a pin mismatch is not recoverable, so trying the same
    /// endpoint again in this race would only fail again.
    fn exclude_endpoint(&mut self, bad: Candidate) {
        if !self.pin_mismatches.contains(&bad) {
            self.pin_mismatches.push(bad);
        }
        let same = |c: &Candidate| c.addr == bad.addr && c.transport == bad.transport;
        self.tls_pending.retain(|c| !same(c));
        self.plain_pending.retain(|c| !same(c));
    }

    /// RFC 8305 §5: the first success cancels every other attempt.
    fn win(&mut self, pos: usize) {
        let winner = self.alive.remove(pos);
        self.outbox.push_back(Action::Won { id: winner.id });
        for loser in self.alive.drain(..) {
            self.outbox.push_back(Action::Cancel { id: loser.id });
        }
        self.decided = true;
    }

    fn give_up_at_deadline(&mut self) {
        for attempt in std::mem::take(&mut self.alive) {
            self.outbox.push_back(Action::Cancel { id: attempt.id });
            self.ended.push((attempt.id, attempt.candidate, FailReason::Timeout));
        }
        self.give_up();
    }

    fn give_up(&mut self) {
        let mut reasons = std::mem::take(&mut self.ended);
        reasons.sort_by_key(|&(id, _, _)| id);
        self.outbox.push_back(Action::GaveUp { reasons });
        self.decided = true;
    }
}

/// Keep only candidates of `transport`, first occurrence of each.
fn group(candidates: Vec<Candidate>, belongs: impl Fn(&Transport) -> bool) -> VecDeque<Candidate> {
    let mut out: VecDeque<Candidate> = VecDeque::with_capacity(candidates.len());
    for c in candidates {
        if belongs(&c.transport) && !out.contains(&c) {
            out.push_back(c);
        }
    }
    out
}
