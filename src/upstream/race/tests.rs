//! Scripted timelines: "at t+Δ feed X, expect actions Y". Each script checks that
//! the race never wanted a wake-up the script skipped, so every action in a
//! timeline is accounted for.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::FailReason::{Io, PinMismatch, Refused, Timeout, TlsAlert, Unreachable};
use super::*;

const V6A: &str = "[2001:db8::1]:853";
const V6B: &str = "[2001:db8::2]:853";
const V4A: &str = "192.0.2.1:853";
const V4B: &str = "192.0.2.2:853";
const V4C: &str = "192.0.2.3:853";

fn tls(upstream: usize, addr: &str) -> Candidate {
    Candidate {
        upstream,
        addr: addr.parse().unwrap(),
        transport: Transport::Tls,
    }
}

fn plain(upstream: usize, addr: &str) -> Candidate {
    Candidate {
        upstream,
        addr: addr.parse().unwrap(),
        transport: Transport::Plain,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn connect(id: u64, candidate: Candidate) -> Action {
    Action::Connect {
        id: AttemptId(id),
        candidate,
    }
}

fn cancel(id: u64) -> Action {
    Action::Cancel { id: AttemptId(id) }
}

fn won(id: u64) -> Action {
    Action::Won { id: AttemptId(id) }
}

fn gave_up(reasons: &[(u64, Candidate, FailReason)]) -> Action {
    Action::GaveUp {
        reasons: reasons
            .iter()
            .map(|&(id, c, r)| (AttemptId(id), c, r))
            .collect(),
    }
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
        Script {
            race: Race::new(tls.to_vec(), plain.to_vec(), cfg, first_id, t0),
            t0,
            now: t0,
        }
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
            assert!(
                wake >= to,
                "race wanted a wake-up at +{}ms, script jumped to +{at}ms",
                self.ms_of(wake)
            );
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
        assert_eq!(
            wake,
            Some(at),
            "poll_timeout at +{}ms",
            self.ms_of(self.now)
        );
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

// 1. All candidates succeed.

#[test]
fn all_succeed_first_wins_before_next_start() {
    let (a, b, c) = (tls(0, V6A), tls(0, V4A), tls(1, V6B));
    Script::new(&[a, b, c], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .wakes_at(250)
        .at(30)
        .feed(tcp_up(0))
        .expect(&[])
        .wakes_at(250)
        .at(60)
        .feed(ready(0))
        .expect(&[won(0)])
        .finished();
}

#[test]
fn all_succeed_at_once_first_ready_wins_rest_cancelled() {
    let (a, b, c) = (tls(0, V6A), tls(0, V4A), tls(1, V6B));
    Script::new(&[a, b, c], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .at(250)
        .expect(&[connect(1, b)])
        .at(500)
        .expect(&[connect(2, c)])
        .at(600)
        .feed(tcp_up(0))
        .feed(tcp_up(1))
        .feed(tcp_up(2))
        .feed(ready(0))
        .feed(ready(1))
        .feed(ready(2))
        .expect(&[won(0), cancel(1), cancel(2)])
        .finished();
}

// 2. First silently dropped.

#[test]
fn first_silently_dropped_second_starts_after_delay_and_wins() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    Script::new(&[a, b], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .wakes_at(250)
        .at(250)
        .expect(&[connect(1, b)])
        .at(290)
        .feed(tcp_up(1))
        .feed(ready(1))
        .expect(&[won(1), cancel(0)])
        .finished();
}

// 3. First refused.

#[test]
fn first_rst_next_starts_at_same_instant() {
    let (a, b, c) = (tls(0, V6A), tls(0, V4A), tls(0, V6B));
    Script::new(&[a, b, c], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .at(40)
        .feed(failed(0, Refused))
        .expect(&[connect(1, b)])
        // The stagger restarts from the new attempt.
        .wakes_at(290)
        .at(290)
        .expect(&[connect(2, c)]);
}

#[test]
fn every_hard_failure_starts_next_at_once() {
    for reason in [Refused, Unreachable, TlsAlert, PinMismatch, Io] {
        assert!(reason.is_hard());
        let (a, b) = (tls(0, V6A), tls(0, V4A));
        Script::new(&[a, b], &[])
            .at(0)
            .expect(&[connect(0, a)])
            .at(5)
            .feed(failed(0, reason))
            .expect(&[connect(1, b)]);
    }
}

#[test]
fn soft_failure_waits_for_attempt_delay() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    Script::new(&[a, b], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .at(40)
        .feed(failed(0, Timeout))
        .expect(&[])
        .wakes_at(250)
        .at(250)
        .expect(&[connect(1, b)]);
}

#[test]
fn hard_failure_of_older_attempt_starts_next_at_once() {
    // Any hard failure frees the schedule, not only the newest attempt's.
    let (a, b, c) = (tls(0, V6A), tls(0, V4A), tls(0, V6B));
    Script::new(&[a, b, c], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .at(250)
        .expect(&[connect(1, b)])
        .at(300)
        .feed(failed(0, Unreachable))
        .expect(&[connect(2, c)]);
}

// 4. IPv6 broken.

#[test]
fn ipv6_silently_broken_ipv4_wins_after_one_delay() {
    let addrs = [
        ip("2001:db8::1"),
        ip("2001:db8::2"),
        ip("192.0.2.1"),
        ip("192.0.2.2"),
    ];
    let (tls_group, plain_group) = order_candidates(
        &[UpstreamAddrs {
            upstream: 0,
            addresses: &addrs,
            tls_port: 853,
            plain_port: 53,
            allow_plain: false,
        }],
        None,
    );
    assert_eq!(
        tls_group,
        vec![tls(0, V6A), tls(0, V4A), tls(0, V6B), tls(0, V4B)]
    );
    assert!(plain_group.is_empty());
    Script::new(&tls_group, &plain_group)
        .at(0)
        .expect(&[connect(0, tls(0, V6A))])
        .at(250)
        .expect(&[connect(1, tls(0, V4A))])
        .at(275)
        .feed(tcp_up(1))
        .feed(ready(1))
        .expect(&[won(1), cancel(0)])
        .finished();
}

// 5. TCP up, TLS stalls.

#[test]
fn tcp_up_but_tls_stalls_next_attempt_still_starts_after_delay() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    Script::new(&[a, b], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .at(20)
        .feed(tcp_up(0))
        .expect(&[])
        .wakes_at(250)
        .at(250)
        .expect(&[connect(1, b)])
        .at(280)
        .feed(tcp_up(1))
        .feed(ready(1))
        .expect(&[won(1), cancel(0)])
        .finished();
}

#[test]
fn tcp_up_gives_the_handshake_a_fresh_attempt_timeout() {
    let a = tls(0, V4A);
    Script::new(&[a], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .wakes_at(5000)
        .at(4000)
        .feed(tcp_up(0))
        .expect(&[])
        .wakes_at(9000)
        .at(9000)
        .expect(&[cancel(0), gave_up(&[(0, a, Timeout)])])
        .finished();
}

#[test]
fn second_tcp_up_does_not_extend_again() {
    let a = tls(0, V4A);
    Script::new(&[a], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .at(100)
        .feed(tcp_up(0))
        .expect(&[])
        .at(3000)
        .feed(tcp_up(0))
        .expect(&[])
        .wakes_at(5100);
}

// 6. Strict.

#[test]
fn strict_never_connects_plain() {
    let addrs = [ip("2001:db8::1"), ip("192.0.2.1")];
    let (tls_group, plain_group) = order_candidates(
        &[UpstreamAddrs {
            upstream: 0,
            addresses: &addrs,
            tls_port: 853,
            plain_port: 53,
            allow_plain: false,
        }],
        None,
    );
    assert!(plain_group.is_empty(), "strict yields no plain candidate");
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    assert_eq!(tls_group, vec![a, b]);
    Script::new(&tls_group, &plain_group)
        .at(0)
        .expect(&[connect(0, a)])
        .at(250)
        .expect(&[connect(1, b)])
        .wakes_at(5000)
        // Past the plain fallback delay: nothing to fall back to.
        .at(500)
        .expect(&[])
        .at(5000)
        .expect(&[cancel(0)])
        .at(5250)
        .expect(&[cancel(1), gave_up(&[(0, a, Timeout), (1, b, Timeout)])])
        .finished();
}

#[test]
fn strict_hard_failures_give_up_without_plain() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    Script::new(&[a, b], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .at(1)
        .feed(failed(0, Refused))
        .expect(&[connect(1, b)])
        .at(2)
        .feed(failed(1, Refused))
        .expect(&[gave_up(&[(0, a, Refused), (1, b, Refused)])])
        .finished();
}

// 7. Opportunistic, 853 dropped, 53 open.

#[test]
fn opportunistic_853_dropped_53_open_plain_wins_after_fallback_delay() {
    let addrs = [ip("192.0.2.1")];
    let (tls_group, plain_group) = order_candidates(
        &[UpstreamAddrs {
            upstream: 0,
            addresses: &addrs,
            tls_port: 853,
            plain_port: 53,
            allow_plain: true,
        }],
        None,
    );
    let (t, p) = (tls(0, V4A), plain(0, "192.0.2.1:53"));
    assert_eq!((tls_group.clone(), plain_group.clone()), (vec![t], vec![p]));
    Script::new(&tls_group, &plain_group)
        .at(0)
        .expect(&[connect(0, t)])
        .wakes_at(500)
        .at(500)
        .expect(&[connect(1, p)])
        .at(510)
        .feed(tcp_up(1))
        .feed(ready(1))
        .expect(&[won(1), cancel(0)])
        .finished();
}

#[test]
fn tls_only_background_race_after_plain_fallback() {
    // The pool re-races TLS alone (ids continuing) while the plain connection serves.
    let t = tls(0, V4A);
    Script::with(&[t], &[], RaceConfig::default(), 2)
        .at(0)
        .expect(&[connect(2, t)])
        .wakes_at(5000)
        .at(40)
        .feed(tcp_up(2))
        .expect(&[])
        .at(90)
        .feed(ready(2))
        .expect(&[won(2)])
        .finished();
}

#[test]
fn plain_joins_at_once_when_all_tls_failed_before_the_delay() {
    let (t, p) = (tls(0, V4A), plain(0, "192.0.2.1:53"));
    Script::new(&[t], &[p])
        .at(0)
        .expect(&[connect(0, t)])
        .at(30)
        .feed(failed(0, Refused))
        .expect(&[connect(1, p)]);
}

// 8. Everything fails.

#[test]
fn everything_fails_gave_up_lists_every_reason() {
    let (a, b, c, d, e) = (
        tls(0, V6A),
        tls(0, V4A),
        tls(0, V6B),
        tls(0, V4B),
        tls(1, V4C),
    );
    let p = plain(1, "192.0.2.3:53");
    let mut s = Script::new(&[a, b, c, d, e], &[p]);
    s.at(0)
        .expect(&[connect(0, a)])
        .at(10)
        .feed(failed(0, Refused))
        .expect(&[connect(1, b)])
        .at(20)
        .feed(failed(1, Unreachable))
        .expect(&[connect(2, c)])
        .at(30)
        .feed(tcp_up(2))
        .expect(&[])
        .at(50)
        .feed(failed(2, TlsAlert))
        .expect(&[connect(3, d)])
        .at(60)
        .feed(tcp_up(3))
        .at(70)
        .feed(failed(3, PinMismatch))
        .expect(&[connect(4, e)])
        // e is silent; TLS is not exhausted yet, so plain waits for its delay.
        .wakes_at(500)
        .at(500)
        .expect(&[connect(5, p)])
        .at(510)
        .feed(failed(5, Io))
        .expect(&[])
        .wakes_at(5070)
        .at(5070)
        .expect(&[
            cancel(4),
            gave_up(&[
                (0, a, Refused),
                (1, b, Unreachable),
                (2, c, TlsAlert),
                (3, d, PinMismatch),
                (4, e, Timeout),
                (5, p, Io),
            ]),
        ])
        .finished();
    assert_eq!(s.race.pin_mismatches().collect::<Vec<_>>(), vec![d]);
}

#[test]
fn no_candidates_gives_up_at_once() {
    Script::new(&[], &[])
        .at(0)
        .expect(&[gave_up(&[])])
        .finished();
}

// 9. Handshaking TLS holds plain back.

#[test]
fn handshaking_tls_holds_plain_back_until_it_fails() {
    let (t, p) = (tls(0, V4A), plain(0, "192.0.2.1:53"));
    Script::new(&[t], &[p])
        .at(0)
        .expect(&[connect(0, t)])
        .at(100)
        .feed(tcp_up(0))
        .expect(&[])
        .wakes_at(500)
        .at(500)
        .expect(&[])
        .wakes_at(5100)
        .at(700)
        .feed(failed(0, TlsAlert))
        .expect(&[connect(1, p)]);
}

#[test]
fn handshaking_tls_holds_plain_back_until_its_timeout() {
    let (t, p) = (tls(0, V4A), plain(0, "192.0.2.1:53"));
    Script::new(&[t], &[p])
        .at(0)
        .expect(&[connect(0, t)])
        .at(100)
        .feed(tcp_up(0))
        .at(500)
        .expect(&[])
        .wakes_at(5100)
        .at(5100)
        .expect(&[cancel(0), connect(1, p)]);
}

#[test]
fn handshaking_tls_that_succeeds_means_no_plain_at_all() {
    let (t, p) = (tls(0, V4A), plain(0, "192.0.2.1:53"));
    Script::new(&[t], &[p])
        .at(0)
        .expect(&[connect(0, t)])
        .at(100)
        .feed(tcp_up(0))
        .at(500)
        .expect(&[])
        .at(800)
        .feed(ready(0))
        .expect(&[won(0)])
        .finished();
}

#[test]
fn plain_joins_once_no_tls_is_handshaking_any_more() {
    // Only a *currently* handshaking TLS attempt holds plain back: once it fails,
    // a silent TLS attempt (no TcpUp) does not.
    let (t1, t2, p) = (tls(0, V6A), tls(0, V4A), plain(0, "192.0.2.1:53"));
    Script::new(&[t1, t2], &[p])
        .at(0)
        .expect(&[connect(0, t1)])
        .at(100)
        .feed(tcp_up(0))
        .at(250)
        .expect(&[connect(1, t2)])
        .at(500)
        .expect(&[])
        .at(700)
        .feed(failed(0, TlsAlert))
        .expect(&[connect(2, p)]);
}

#[test]
fn plain_group_stays_joined_and_alternates_with_tls() {
    let (t0, t1, t2) = (tls(0, V6A), tls(0, V4A), tls(0, V6B));
    let (p0, p1) = (plain(0, "[2001:db8::1]:53"), plain(0, "192.0.2.1:53"));
    let cfg = RaceConfig {
        max_concurrent_attempts: 8,
        ..RaceConfig::default()
    };
    Script::with(&[t0, t1, t2], &[p0, p1], cfg, 0)
        .at(0)
        .expect(&[connect(0, t0)])
        .at(250)
        .expect(&[connect(1, t1)])
        .at(500)
        .expect(&[connect(2, p0)])
        .at(600)
        .feed(tcp_up(1))
        .expect(&[])
        .at(750)
        .expect(&[connect(3, t2)])
        // TLS 1 is handshaking now, but plain has joined for good.
        .at(1000)
        .expect(&[connect(4, p1)])
        .at(1010)
        .feed(ready(1))
        .expect(&[won(1), cancel(0), cancel(2), cancel(3), cancel(4)])
        .finished();
}

#[test]
fn plain_only_race_starts_plain_at_once() {
    // No TLS candidate at all means TLS is trivially exhausted.
    let p = plain(0, "192.0.2.1:53");
    Script::new(&[], &[p]).at(0).expect(&[connect(0, p)]);
}

// 10. Timeouts, cap, late events, ids.

#[test]
fn attempt_timeout_cancels_silent_attempt_others_continue() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    Script::new(&[a, b], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .at(250)
        .expect(&[connect(1, b)])
        .at(300)
        .feed(tcp_up(1))
        .expect(&[])
        .wakes_at(5000)
        .at(5000)
        .expect(&[cancel(0)])
        // A late success of the cancelled attempt is ignored.
        .at(5001)
        .feed(ready(0))
        .expect(&[])
        .at(5100)
        .feed(ready(1))
        .expect(&[won(1)])
        .finished();
}

#[test]
fn race_timeout_cancels_everything_and_gives_up() {
    let cands = [
        tls(0, V6A),
        tls(0, V4A),
        tls(0, V6B),
        tls(0, V4B),
        tls(0, V4C),
    ];
    let cfg = RaceConfig {
        race_timeout: ms(1000),
        ..RaceConfig::default()
    };
    Script::with(&cands, &[], cfg, 0)
        .at(0)
        .expect(&[connect(0, cands[0])])
        .at(250)
        .expect(&[connect(1, cands[1])])
        .at(500)
        .expect(&[connect(2, cands[2])])
        .at(750)
        .expect(&[connect(3, cands[3])])
        .at(800)
        .feed(tcp_up(3))
        .expect(&[])
        .wakes_at(1000)
        .at(1000)
        .expect(&[
            cancel(0),
            cancel(1),
            cancel(2),
            cancel(3),
            gave_up(&[
                (0, cands[0], Timeout),
                (1, cands[1], Timeout),
                (2, cands[2], Timeout),
                (3, cands[3], Timeout),
            ]),
        ])
        .finished()
        .feed(ready(3))
        .expect(&[]);
}

#[test]
fn cap_respected_and_freed_slot_starts_next() {
    let (a, b, c, d) = (tls(0, V6A), tls(0, V4A), tls(0, V6B), tls(0, V4B));
    let cfg = RaceConfig {
        max_concurrent_attempts: 2,
        ..RaceConfig::default()
    };
    let mut s = Script::with(&[a, b, c, d], &[], cfg, 0);
    s.at(0)
        .expect(&[connect(0, a)])
        .at(250)
        .expect(&[connect(1, b)])
        // At the cap, the start instant is no wake-up; attempt 0's deadline is.
        .wakes_at(5000)
        .at(500)
        .expect(&[]);
    assert_eq!(s.race.attempts_alive(), 2);
    // A slot frees after the delay has passed: the next starts at once.
    s.at(600)
        .feed(failed(0, Timeout))
        .expect(&[connect(2, c)])
        // A slot frees before the delay has passed: the next waits for it.
        .at(700)
        .feed(failed(2, Timeout))
        .expect(&[])
        .wakes_at(850)
        .at(850)
        .expect(&[connect(3, d)])
        .at(900)
        .feed(ready(3))
        .expect(&[won(3), cancel(1)])
        .finished();
}

#[test]
fn cap_of_one_is_sequential_with_timeouts() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    let cfg = RaceConfig {
        max_concurrent_attempts: 1,
        ..RaceConfig::default()
    };
    Script::with(&[a, b], &[], cfg, 0)
        .at(0)
        .expect(&[connect(0, a)])
        .wakes_at(5000)
        .at(5000)
        .expect(&[cancel(0), connect(1, b)])
        .wakes_at(10000)
        .at(10000)
        .expect(&[cancel(1), gave_up(&[(0, a, Timeout), (1, b, Timeout)])])
        .finished();
}

#[test]
fn zero_cap_is_clamped_to_one() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    let cfg = RaceConfig {
        max_concurrent_attempts: 0,
        ..RaceConfig::default()
    };
    Script::with(&[a, b], &[], cfg, 0)
        .at(0)
        .expect(&[connect(0, a)])
        .wakes_at(5000);
}

#[test]
fn late_and_unknown_events_are_ignored() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    let mut s = Script::new(&[a, b], &[]);
    s.at(0)
        // Events for ids never handed out.
        .feed(ready(0))
        .feed(failed(7, Refused))
        .expect(&[connect(0, a)])
        .at(250)
        .expect(&[connect(1, b)])
        .at(260)
        .feed(ready(1))
        .expect(&[won(1), cancel(0)])
        .finished();
    for ev in [
        tcp_up(0),
        ready(0),
        failed(0, Refused),
        ready(1),
        failed(1, Io),
        ready(2),
        tcp_up(99),
    ] {
        s.at(300).feed(ev).expect(&[]).finished();
    }
}

#[test]
fn events_after_gave_up_are_ignored() {
    let a = tls(0, V6A);
    Script::new(&[a], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .at(1)
        .feed(failed(0, Io))
        .expect(&[gave_up(&[(0, a, Io)])])
        .finished()
        .feed(ready(0))
        .feed(failed(0, Refused))
        .expect(&[])
        .finished();
}

#[test]
fn duplicate_failed_event_counts_once() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    Script::new(&[a, b], &[])
        .at(0)
        .expect(&[connect(0, a)])
        .at(1)
        .feed(failed(0, Refused))
        .feed(failed(0, Io))
        .expect(&[connect(1, b)])
        .at(2)
        .feed(failed(1, Refused))
        .expect(&[gave_up(&[(0, a, Refused), (1, b, Refused)])]);
}

#[test]
fn ids_grow_from_first_id_and_continue_across_races() {
    let (a, b, c) = (tls(0, V6A), tls(0, V4A), tls(0, V6B));
    let mut s = Script::with(&[a, b, c], &[], RaceConfig::default(), 1000);
    assert_eq!(s.race.next_id(), 1000);
    s.at(0)
        .expect(&[connect(1000, a)])
        .at(250)
        .expect(&[connect(1001, b)])
        .at(260)
        .feed(failed(1001, Refused))
        .expect(&[connect(1002, c)])
        .at(300)
        .feed(ready(1002))
        .expect(&[won(1002), cancel(1000)]);
    assert_eq!(s.race.next_id(), 1003);
    Script::with(&[a], &[], RaceConfig::default(), s.race.next_id())
        .at(0)
        .expect(&[connect(1003, a)]);
    assert_eq!(AttemptId(1003).to_string(), "1003");
}

#[test]
fn pin_mismatch_takes_the_endpoint_out_of_the_race() {
    // Two upstreams sharing an address (same (addr, transport)), and another address.
    let (a0, a1, b0) = (tls(0, V4A), tls(1, V4A), tls(0, V4B));
    let mut s = Script::new(&[a0, a1, b0], &[]);
    s.at(0)
        .expect(&[connect(0, a0)])
        .at(40)
        .feed(failed(0, PinMismatch))
        .expect(&[connect(1, b0)])
        .at(300)
        .feed(ready(1))
        .expect(&[won(1)])
        .finished();
    assert_eq!(s.race.pin_mismatches().collect::<Vec<_>>(), vec![a0]);
}

#[test]
fn wrong_group_and_duplicate_candidates_are_dropped() {
    let (t, p) = (tls(0, V4A), plain(0, "192.0.2.1:53"));
    // A plain candidate in the TLS list never races as TLS, and vice versa.
    Script::new(&[p], &[t]).at(0).expect(&[gave_up(&[])]);
    let b = tls(0, V4B);
    Script::new(&[t, t, b], &[])
        .at(0)
        .expect(&[connect(0, t)])
        .at(250)
        .expect(&[connect(1, b)])
        .wakes_at(5000);
}

#[test]
fn poll_timeout_says_poll_now_after_an_unpolled_event() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    let mut s = Script::new(&[a, b], &[]);
    s.at(0)
        .expect(&[connect(0, a)])
        .at(30)
        .feed(failed(0, Refused));
    assert_eq!(s.race.poll_timeout(), Some(s.t0 + ms(30)));
    s.expect(&[connect(1, b)]).wakes_at(5030);
}

#[test]
fn time_never_runs_backwards() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    let t0 = Instant::now();
    let mut race = Race::new(vec![a, b], vec![], RaceConfig::default(), 0, t0);
    assert_eq!(race.poll_action(t0 + ms(100)), Some(connect(0, a)));
    // An event stamped earlier than what the race has seen is taken as "now".
    race.handle(tcp_up(0), t0);
    assert_eq!(race.poll_action(t0), None);
    assert_eq!(race.poll_timeout(), Some(t0 + ms(350)));
}

#[test]
fn attempt_delay_is_clamped_by_race_new() {
    let (a, b, c) = (tls(0, V6A), tls(0, V4A), tls(0, V6B));
    let fast = RaceConfig {
        attempt_delay: Duration::ZERO,
        ..RaceConfig::default()
    };
    Script::with(&[a, b], &[], fast, 0)
        .at(0)
        .expect(&[connect(0, a)])
        .wakes_at(10);
    let slow = RaceConfig {
        attempt_delay: ms(60_000),
        ..RaceConfig::default()
    };
    Script::with(&[a, b, c], &[], slow, 0)
        .at(0)
        .expect(&[connect(0, a)])
        .wakes_at(2000);
}

#[test]
fn config_defaults_and_clamp() {
    let d = RaceConfig::default();
    assert_eq!(d.attempt_delay, ms(250));
    assert_eq!(d.attempt_timeout, ms(5000));
    assert_eq!(d.plain_fallback_delay, ms(500));
    assert_eq!(d.max_concurrent_attempts, 4);
    assert_eq!(d.race_timeout, ms(10_000));
    assert_eq!(d.clamped(), d);
    let wild = RaceConfig {
        attempt_delay: ms(1),
        attempt_timeout: Duration::MAX,
        plain_fallback_delay: Duration::MAX,
        max_concurrent_attempts: 0,
        race_timeout: Duration::MAX,
    }
    .clamped();
    assert_eq!(wild.attempt_delay, ms(10));
    assert_eq!(wild.max_concurrent_attempts, 1);
    assert_eq!(wild.attempt_timeout, RaceConfig::MAX_TIMEOUT);
    assert_eq!(wild.plain_fallback_delay, RaceConfig::MAX_TIMEOUT);
    assert_eq!(wild.race_timeout, RaceConfig::MAX_TIMEOUT);
    let long = RaceConfig {
        attempt_delay: ms(2001),
        ..d
    };
    assert_eq!(long.clamped().attempt_delay, ms(2000));
    // Huge durations must not overflow instant arithmetic.
    let t0 = Instant::now();
    let mut race = Race::new(vec![tls(0, V4A)], vec![], wild, 0, t0);
    assert!(race.poll_action(t0).is_some());
    assert!(race.poll_timeout().is_some());
}

#[test]
fn fail_reason_names_and_hardness() {
    let all = [
        (Refused, "rst", true),
        (Unreachable, "unreachable", true),
        (Timeout, "timeout", false),
        (TlsAlert, "tls-alert", true),
        (PinMismatch, "pin-mismatch", true),
        (Io, "io", true),
    ];
    for (reason, name, hard) in all {
        assert_eq!(reason.as_str(), name);
        assert_eq!(reason.to_string(), name);
        assert_eq!(reason.is_hard(), hard, "{name}");
    }
    assert_eq!(Transport::Tls.as_str(), "tls");
    assert_eq!(Transport::Plain.to_string(), "plain");
    assert_eq!(ready(3).id(), AttemptId(3));
    assert_eq!(failed(4, Io).id(), AttemptId(4));
}

// order_candidates

fn up(upstream: usize, addresses: &[IpAddr], allow_plain: bool) -> UpstreamAddrs<'_> {
    UpstreamAddrs {
        upstream,
        addresses,
        tls_port: 853,
        plain_port: 53,
        allow_plain,
    }
}

fn addrs_of(group: &[Candidate]) -> Vec<String> {
    group.iter().map(|c| c.addr.to_string()).collect()
}

#[test]
fn order_interleaves_ipv6_first_fafc_one() {
    let addrs = [
        ip("192.0.2.1"),
        ip("2001:db8::1"),
        ip("192.0.2.2"),
        ip("2001:db8::2"),
    ];
    let (t, p) = order_candidates(&[up(0, &addrs, false)], None);
    assert_eq!(addrs_of(&t), [V6A, V4A, V6B, V4B]);
    assert!(p.is_empty());
}

#[test]
fn order_unequal_family_counts() {
    let more_v6 = [
        ip("2001:db8::1"),
        ip("2001:db8::2"),
        ip("2001:db8::3"),
        ip("192.0.2.1"),
    ];
    let (t, _) = order_candidates(&[up(0, &more_v6, false)], None);
    assert_eq!(addrs_of(&t), [V6A, V4A, V6B, "[2001:db8::3]:853"]);
    let more_v4 = [
        ip("192.0.2.1"),
        ip("192.0.2.2"),
        ip("192.0.2.3"),
        ip("2001:db8::1"),
    ];
    let (t, _) = order_candidates(&[up(0, &more_v4, false)], None);
    assert_eq!(addrs_of(&t), [V6A, V4A, V4B, V4C]);
    let only_v4 = [ip("192.0.2.2"), ip("192.0.2.1")];
    let (t, _) = order_candidates(&[up(0, &only_v4, false)], None);
    assert_eq!(addrs_of(&t), [V4B, V4A]);
    let (t, p) = order_candidates(&[up(0, &[], true)], None);
    assert!(t.is_empty() && p.is_empty());
}

#[test]
fn order_ipv4_mapped_counts_as_ipv4() {
    let addrs = [ip("::ffff:192.0.2.9"), ip("2001:db8::1")];
    let (t, _) = order_candidates(&[up(0, &addrs, false)], None);
    assert_eq!(addrs_of(&t), [V6A, "[::ffff:192.0.2.9]:853"]);
}

#[test]
fn order_keeps_upstream_order_and_per_upstream_policy() {
    let strict = [ip("2001:db8::1"), ip("192.0.2.1")];
    let opportunistic = [ip("192.0.2.2")];
    let (t, p) = order_candidates(&[up(1, &opportunistic, true), up(0, &strict, false)], None);
    assert_eq!(t, vec![tls(1, V4B), tls(0, V6A), tls(0, V4A)]);
    assert_eq!(p, vec![plain(1, "192.0.2.2:53")]);
    assert!(p.iter().all(|c| c.transport == Transport::Plain));
}

#[test]
fn order_uses_the_given_ports() {
    let addrs = [ip("192.0.2.1")];
    let u = UpstreamAddrs {
        upstream: 3,
        addresses: &addrs,
        tls_port: 8853,
        plain_port: 5353,
        allow_plain: true,
    };
    let (t, p) = order_candidates(&[u], None);
    assert_eq!(t, vec![tls(3, "192.0.2.1:8853")]);
    assert_eq!(p, vec![plain(3, "192.0.2.1:5353")]);
}

#[test]
fn order_last_winner_first_if_present() {
    let a0 = [ip("2001:db8::1"), ip("192.0.2.1")];
    let a1 = [ip("2001:db8::2"), ip("192.0.2.2")];
    let ups = [up(0, &a0, true), up(1, &a1, true)];
    let (t, _) = order_candidates(&ups, Some(tls(1, V4B)));
    assert_eq!(t, vec![tls(1, V4B), tls(0, V6A), tls(0, V4A), tls(1, V6B)]);
    // Gone since (not among the candidates any more): normal order.
    let (t, _) = order_candidates(&ups, Some(tls(2, V4C)));
    assert_eq!(t, vec![tls(0, V6A), tls(0, V4A), tls(1, V6B), tls(1, V4B)]);
    // A plain winner leads the plain group, never the TLS group.
    let (t, p) = order_candidates(&ups, Some(plain(0, "192.0.2.1:53")));
    assert_eq!(t[0], tls(0, V6A));
    assert_eq!(
        p,
        vec![
            plain(0, "192.0.2.1:53"),
            plain(0, "[2001:db8::1]:53"),
            plain(1, "[2001:db8::2]:53"),
            plain(1, "192.0.2.2:53"),
        ]
    );
}

#[test]
fn order_drops_duplicates() {
    let addrs = [ip("192.0.2.1"), ip("192.0.2.1"), ip("2001:db8::1")];
    let (t, p) = order_candidates(&[up(0, &addrs, true), up(0, &addrs, true)], None);
    assert_eq!(t, vec![tls(0, V6A), tls(0, V4A)]);
    assert_eq!(p.len(), 2);
}
