//! Tests of the race. `timelines` and `limits` are scripted ("at t+Δ feed X,
//! expect actions Y"); each script checks that the race never wanted a wake-up
//! the script skipped, so every action in a timeline is accounted for. `order`
//! covers candidate ordering, `props` the property tests.

mod limits;
mod order;
mod props;
mod timelines;

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::*;

const V6A: &str = "[2001:db8::1]:853";
const V6B: &str = "[2001:db8::2]:853";
const V4A: &str = "192.0.2.1:853";
const V4B: &str = "192.0.2.2:853";
const V4C: &str = "192.0.2.3:853";

fn tls(upstream: usize, addr: &str) -> Candidate {
    Candidate { upstream, addr: addr.parse().unwrap(), transport: Transport::Tls }
}

fn plain(upstream: usize, addr: &str) -> Candidate {
    Candidate { upstream, addr: addr.parse().unwrap(), transport: Transport::Plain }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn connect(id: u64, candidate: Candidate) -> Action {
    Action::Connect { id: AttemptId(id), candidate }
}

fn cancel(id: u64) -> Action {
    Action::Cancel { id: AttemptId(id) }
}

fn won(id: u64) -> Action {
    Action::Won { id: AttemptId(id) }
}

fn gave_up(reasons: &[(u64, Candidate, FailReason)]) -> Action {
    Action::GaveUp { reasons: reasons.iter().map(|&(id, c, r)| (AttemptId(id), c, r)).collect() }
}

fn tcp_up(id: u64) -> Event {
    Event::TcpUp(AttemptId(id))
}

fn ready(id: u64) -> Event {
    Event::Ready(AttemptId(id))
}

fn failed(id: u64, reason: FailReason) -> Event {
    Event::Failed(AttemptId(id), reason)
}

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

/// A driver stand-in that moves time only forward and only as far as the race allows.
struct Script {
    race: Race,
    t0: Instant,
    now: Instant,
}

impl Script {
    fn new(tls: &[Candidate], plain: &[Candidate]) -> Self {
        Self::with(tls, plain, RaceConfig::default(), 0)
    }

    fn with(tls: &[Candidate], plain: &[Candidate], cfg: RaceConfig, first_id: u64) -> Self {
        let t0 = Instant::now();
        Script { race: Race::new(tls.to_vec(), plain.to_vec(), cfg, first_id, t0), t0, now: t0 }
    }

    fn ms_of(&self, t: Instant) -> u64 {
        t.duration_since(self.t0).as_millis() as u64
    }

    /// Move to t0 + `at` ms. When time moves forward, panics if actions were left
    /// unchecked or if the race asked to be woken earlier (a skipped timer).
    #[track_caller]
    fn at(&mut self, at: u64) -> &mut Self {
        let to = self.t0 + ms(at);
        assert!(to >= self.now, "script goes back in time to +{at}ms");
        if to == self.now {
            return self;
        }
        if let Some(a) = self.race.poll_action(self.now) {
            panic!("unchecked action at +{}ms: {a:?}", self.ms_of(self.now));
        }
        if let Some(wake) = self.race.poll_timeout() {
            assert!(wake >= to, "race wanted a wake-up at +{}ms, script jumped to +{at}ms", self.ms_of(wake));
        }
        self.now = to;
        self
    }

    fn feed(&mut self, event: Event) -> &mut Self {
        self.race.handle(event, self.now);
        self
    }

    /// Drain every action due now and compare with `want`, in order.
    #[track_caller]
    fn expect(&mut self, want: &[Action]) -> &mut Self {
        let mut got = Vec::new();
        while let Some(a) = self.race.poll_action(self.now) {
            got.push(a);
            assert!(got.len() < 1000, "poll_action never returns None");
        }
        assert_eq!(got, want, "actions at +{}ms", self.ms_of(self.now));
        self
    }

    #[track_caller]
    fn wakes_at(&mut self, at: u64) -> &mut Self {
        let wake = self.race.poll_timeout().map(|w| self.ms_of(w));
        assert_eq!(wake, Some(at), "poll_timeout at +{}ms", self.ms_of(self.now));
        self
    }

    #[track_caller]
    fn finished(&mut self) -> &mut Self {
        assert!(self.race.is_finished());
        assert_eq!(self.race.poll_timeout(), None);
        assert_eq!(self.race.poll_action(self.now), None);
        assert_eq!(self.race.attempts_alive(), 0);
        self
    }
}
