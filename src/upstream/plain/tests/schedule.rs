//! The schedule on virtual time: scripted timelines, then property tests that drive it
//! as the tokio driver does (wake at `poll_timeout`, feed events, drain `poll_action`)
//! and check every action against an independent model.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use crate::upstream::plain::schedule::*;

const MS: Duration = Duration::from_millis(1);

fn drain(s: &mut Schedule, now: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    while let Some(a) = s.poll_action(now) {
        out.push(a);
        assert!(out.len() < 1000, "runaway actions: {out:?}");
    }
    out
}

fn send(server: usize) -> Action {
    Action::Send { server, resend: false }
}

fn resend(server: usize) -> Action {
    Action::Send { server, resend: true }
}

fn silent(sends: u8, waited_ms: u64) -> TryFailure {
    TryFailure::NoAnswer { proto: Proto::Udp, sends, waited: Duration::from_millis(waited_ms) }
}

#[test]
fn timings_follow_the_stagger_within_bounds() {
    let c = ScheduleConfig::new(250 * MS);
    assert_eq!(
        (c.retransmit_after, c.give_up, c.tcp_give_up, c.max_udp_sends),
        (500 * MS, 2000 * MS, 2000 * MS, 2)
    );
    let c = ScheduleConfig::new(Duration::ZERO);
    assert_eq!((c.retransmit_after, c.give_up), (100 * MS, 2000 * MS));
    let c = ScheduleConfig::new(Duration::from_secs(60));
    assert_eq!((c.retransmit_after, c.give_up), (2000 * MS, 6000 * MS));
}

#[test]
fn one_silent_server_is_sent_twice_then_given_up() {
    let t0 = Instant::now();
    let mut s = Schedule::new(1, ScheduleConfig::new(250 * MS), t0);
    assert_eq!(drain(&mut s, t0), [send(0)]);
    assert_eq!(s.poll_timeout(), Some(t0 + 500 * MS));
    assert_eq!(drain(&mut s, t0 + 499 * MS), []);
    assert_eq!(drain(&mut s, t0 + 500 * MS), [resend(0)]);
    assert_eq!(s.poll_timeout(), Some(t0 + 2000 * MS));
    let end = t0 + 2000 * MS;
    assert_eq!(
        drain(&mut s, end),
        [Action::Close { server: 0, why: silent(2, 2000) }, Action::GaveUp(vec![(0, silent(2, 2000))])]
    );
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(drain(&mut s, end + Duration::from_secs(100)), []);
}

#[test]
fn silent_servers_are_asked_a_stagger_apart_and_each_resent_once() {
    let t0 = Instant::now();
    let mut s = Schedule::new(3, ScheduleConfig::new(250 * MS), t0);
    let mut timeline = Vec::new();
    let mut now = t0;
    for _ in 0..20 {
        for a in drain(&mut s, now) {
            timeline.push(((now - t0).as_millis() as u64, a));
        }
        match s.poll_timeout() {
            Some(wake) => now = wake,
            None => break,
        }
    }
    let close = |server, ms| Action::Close { server, why: silent(2, ms) };
    assert_eq!(
        timeline,
        [
            (0, send(0)),
            (250, send(1)),
            (500, resend(0)),
            (500, send(2)),
            (750, resend(1)),
            (1000, resend(2)),
            (2000, close(0, 2000)),
            (2250, close(1, 2000)),
            (2500, close(2, 2000)),
            (2500, Action::GaveUp(vec![(0, silent(2, 2000)), (1, silent(2, 2000)), (2, silent(2, 2000))])),
        ]
    );
}

#[test]
fn a_server_that_fails_fast_starts_the_next_at_once() {
    let t0 = Instant::now();
    let mut s = Schedule::new(3, ScheduleConfig::new(250 * MS), t0);
    assert_eq!(drain(&mut s, t0), [send(0)]);
    let t = t0 + 3 * MS;
    s.handle(Event::Failed(0, TryFailure::Refused(Proto::Udp)), t);
    assert_eq!(
        drain(&mut s, t),
        [Action::Close { server: 0, why: TryFailure::Refused(Proto::Udp) }, send(1)]
    );
    // The stagger now counts from server 1's start.
    assert_eq!(s.poll_timeout(), Some(t + 250 * MS));
    // An error answer without a question ends a try the same way.
    let t = t + 40 * MS;
    s.handle(Event::Failed(1, TryFailure::NoQuestion(5)), t);
    assert_eq!(drain(&mut s, t), [Action::Close { server: 1, why: TryFailure::NoQuestion(5) }, send(2)]);
    // A second report from a closed try changes nothing.
    s.handle(Event::Failed(1, TryFailure::Closed), t);
    s.handle(Event::Truncated(0), t);
    s.handle(Event::Failed(7, TryFailure::Closed), t);
    assert_eq!(drain(&mut s, t), []);
    s.handle(Event::Failed(2, TryFailure::Refused(Proto::Udp)), t);
    assert_eq!(
        drain(&mut s, t),
        [
            Action::Close { server: 2, why: TryFailure::Refused(Proto::Udp) },
            Action::GaveUp(vec![
                (0, TryFailure::Refused(Proto::Udp)),
                (1, TryFailure::NoQuestion(5)),
                (2, TryFailure::Refused(Proto::Udp)),
            ]),
        ]
    );
}

#[test]
fn truncation_moves_the_server_to_tcp_with_its_own_time() {
    let t0 = Instant::now();
    let mut s = Schedule::new(2, ScheduleConfig::new(250 * MS), t0);
    assert_eq!(drain(&mut s, t0), [send(0)]);
    let tc = t0 + 5 * MS;
    s.handle(Event::Truncated(0), tc);
    assert_eq!(drain(&mut s, tc), [Action::Tcp { server: 0 }]);
    // A second TC (the answer to a resend) does not open a second TCP try.
    s.handle(Event::Truncated(0), tc + MS);
    assert_eq!(drain(&mut s, tc + MS), []);
    // No UDP resend to a server on TCP; the next server still comes a stagger later.
    assert_eq!(s.poll_timeout(), Some(t0 + 250 * MS));
    assert_eq!(drain(&mut s, t0 + 250 * MS), [send(1)]);
    assert_eq!(drain(&mut s, t0 + 750 * MS), [resend(1)]);
    let tcp_end = tc + 2000 * MS;
    assert_eq!(s.poll_timeout(), Some(tcp_end));
    let why = TryFailure::NoAnswer { proto: Proto::Tcp, sends: 1, waited: 2000 * MS };
    assert_eq!(drain(&mut s, tcp_end), [Action::Close { server: 0, why }]);
}

#[test]
fn no_servers_gives_up_at_once() {
    let t0 = Instant::now();
    let mut s = Schedule::new(0, ScheduleConfig::new(250 * MS), t0);
    assert_eq!(drain(&mut s, t0), [Action::GaveUp(vec![])]);
    assert_eq!(s.poll_timeout(), None);
}

// Property tests.

#[derive(Clone, Copy, Debug, PartialEq)]
enum M {
    Unasked,
    Udp { first: Instant, sends: u8 },
    Tcp { since: Instant },
    Ended(TryFailure),
}

#[derive(Clone, Debug)]
struct Step {
    dt_ms: u64,
    /// Aim at an open try (usually), or at any index, valid or not.
    aim_open: bool,
    pick: prop::sample::Index,
    event: Option<TryFailure>,
}

fn arb_failure() -> impl Strategy<Value = TryFailure> {
    prop_oneof![
        Just(TryFailure::Refused(Proto::Udp)),
        Just(TryFailure::Refused(Proto::Tcp)),
        (1u8..16).prop_map(TryFailure::NoQuestion),
        Just(TryFailure::Closed),
        Just(TryFailure::Unmatched),
        Just(TryFailure::Io(Proto::Udp, std::io::ErrorKind::NetworkUnreachable)),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    // `None`: a truncated answer.
    let event = prop_oneof![1 => Just(None), 2 => arb_failure().prop_map(Some)];
    (0u64..2500, prop::bool::weighted(0.8), any::<prop::sample::Index>(), event)
        .prop_map(|(dt_ms, aim_open, pick, event)| Step { dt_ms, aim_open, pick, event })
}

fn arb_config() -> impl Strategy<Value = ScheduleConfig> {
    prop_oneof![
        (0u64..3000).prop_map(|ms| ScheduleConfig::new(Duration::from_millis(ms))),
        (0u64..1000, 0u64..1500, 0u8..4, 0u64..3000, 0u64..3000).prop_map(|(st, re, max, gu, tg)| {
            ScheduleConfig {
                stagger: Duration::from_millis(st),
                retransmit_after: Duration::from_millis(re),
                max_udp_sends: max,
                give_up: Duration::from_millis(gu),
                tcp_give_up: Duration::from_millis(tg),
            }
        }),
    ]
}

struct Model {
    cfg: ScheduleConfig,
    servers: Vec<M>,
    starts: Vec<Instant>,
    sends: Vec<u8>,
    /// A try ended without an answer since the last server was first asked.
    ended_since_start: bool,
    gave_up_at: Option<Instant>,
}

impl Model {
    fn asked(&self) -> usize {
        self.starts.len()
    }

    fn check(&mut self, action: &Action, now: Instant) {
        assert!(self.gave_up_at.is_none(), "{action:?} after giving up");
        let c = self.cfg;
        match *action {
            Action::Send { server, resend: false } => {
                assert_eq!(server, self.asked(), "servers are asked in order");
                if let Some(&prev) = self.starts.last() {
                    assert!(now <= prev + c.stagger, "next server later than a stagger after the previous");
                    assert!(now >= prev + c.stagger || self.ended_since_start, "next server early");
                }
                self.ended_since_start = false;
                self.servers[server] = M::Udp { first: now, sends: 1 };
                self.starts.push(now);
                self.sends[server] = 1;
            }
            Action::Send { server, resend: true } => {
                let M::Udp { first, sends } = self.servers[server] else {
                    panic!("resend to {server} in {:?}", self.servers[server]);
                };
                assert!(now >= first + c.retransmit_after * sends.into(), "resend early");
                assert!(now < first + c.give_up, "resend after giving up");
                self.servers[server] = M::Udp { first, sends: sends + 1 };
                self.sends[server] += 1;
                assert!(self.sends[server] <= c.max_udp_sends.max(1), "too many sends to {server}");
            }
            Action::Tcp { .. } => panic!("TCP without a truncation"),
            Action::Close { server, why } => {
                match (self.servers[server], why) {
                    (
                        M::Udp { first, sends },
                        TryFailure::NoAnswer { proto: Proto::Udp, sends: s, waited },
                    ) => {
                        assert_eq!((now, s, waited), (first + c.give_up, sends, c.give_up));
                    }
                    (M::Tcp { since }, TryFailure::NoAnswer { proto: Proto::Tcp, waited, .. }) => {
                        assert_eq!((now, waited), (since + c.tcp_give_up, c.tcp_give_up));
                    }
                    (state, why) => panic!("close of {server} in {state:?} for {why:?} on no event"),
                }
                self.end(server, why);
            }
            Action::GaveUp(ref reasons) => {
                assert_eq!(self.asked(), self.servers.len());
                let ended: Vec<(usize, TryFailure)> = (self.servers.iter().enumerate())
                    .map(|(i, s)| match s {
                        M::Ended(why) => (i, *why),
                        other => panic!("gave up with {i} in {other:?}"),
                    })
                    .collect();
                assert_eq!(reasons, &ended);
                self.gave_up_at = Some(now);
            }
        }
    }

    fn end(&mut self, server: usize, why: TryFailure) {
        self.servers[server] = M::Ended(why);
        self.ended_since_start = true;
    }

    /// Nothing is overdue after a drain: every timer the schedule owed at `now` fired.
    fn check_nothing_overdue(&self, now: Instant) {
        if self.gave_up_at.is_some() {
            return;
        }
        let c = self.cfg;
        if self.asked() < self.servers.len() {
            let prev = *self.starts.last().expect("server 0 is asked at once");
            assert!(now < prev + c.stagger, "next server overdue");
            assert!(!self.ended_since_start, "a failure did not start the next server");
        }
        for s in &self.servers {
            match *s {
                M::Udp { first, sends } => {
                    assert!(now < first + c.give_up, "give-up overdue");
                    if sends < c.max_udp_sends {
                        assert!(now < first + c.retransmit_after * sends.into(), "resend overdue");
                    }
                }
                M::Tcp { since } => assert!(now < since + c.tcp_give_up, "tcp give-up overdue"),
                M::Unasked | M::Ended(_) => {}
            }
        }
        if self.asked() == self.servers.len() {
            assert!(self.servers.iter().any(|s| !matches!(s, M::Ended(_))), "all ended and no give-up");
        }
    }

    fn drain(&mut self, s: &mut Schedule, now: Instant) {
        for a in drain(s, now) {
            self.check(&a, now);
        }
        self.check_nothing_overdue(now);
    }
}

fn run(n: usize, cfg: ScheduleConfig, steps: Vec<Step>) {
    let t0 = Instant::now();
    let mut s = Schedule::new(n, cfg, t0);
    let mut m = Model {
        cfg,
        servers: vec![M::Unasked; n],
        starts: Vec::new(),
        sends: vec![0; n],
        ended_since_start: false,
        gave_up_at: None,
    };
    let mut now = t0;
    m.drain(&mut s, now);
    let wake_until = |s: &mut Schedule, m: &mut Model, now: &mut Instant, until: Option<Instant>| {
        for _ in 0..10_000 {
            match s.poll_timeout() {
                Some(wake) if until.is_none_or(|u| wake <= u) => {
                    assert!(wake >= *now, "a wake-up in the past");
                    *now = wake;
                    m.drain(s, *now);
                }
                _ => return,
            }
        }
        panic!("runaway wake-ups");
    };
    for step in steps {
        let at = now + Duration::from_millis(step.dt_ms);
        wake_until(&mut s, &mut m, &mut now, Some(at));
        now = at;
        let open: Vec<usize> =
            (0..n).filter(|&i| matches!(m.servers[i], M::Udp { .. } | M::Tcp { .. })).collect();
        let server = if step.aim_open && !open.is_empty() {
            open[step.pick.index(open.len())]
        } else {
            step.pick.index(n + 2)
        };
        let state = m.servers.get(server).copied();
        let (event, expect) = match step.event {
            None => {
                let expect = matches!(state, Some(M::Udp { .. })).then_some(Action::Tcp { server });
                (Event::Truncated(server), expect)
            }
            Some(why) => {
                let open = matches!(state, Some(M::Udp { .. } | M::Tcp { .. }));
                (Event::Failed(server, why), open.then_some(Action::Close { server, why }))
            }
        };
        s.handle(event, now);
        let actions = drain(&mut s, now);
        let rest = match expect {
            Some(expected) => {
                assert_eq!(actions.first(), Some(&expected), "the event's action comes first");
                match expected {
                    Action::Tcp { server } => m.servers[server] = M::Tcp { since: now },
                    Action::Close { server, why } => m.end(server, why),
                    _ => unreachable!(),
                }
                &actions[1..]
            }
            None => {
                assert!(actions.is_empty(), "an ignored event acted: {actions:?}");
                &actions[..]
            }
        };
        for a in rest {
            m.check(a, now);
        }
        m.check_nothing_overdue(now);
    }
    wake_until(&mut s, &mut m, &mut now, None);
    let end = m.gave_up_at.expect("the exchange gives up by itself");
    // Server k is asked by k × stagger; a try lasts give_up, and TCP after a truncation
    // tcp_give_up more.
    let bound = cfg.stagger * n.saturating_sub(1) as u32 + cfg.give_up + cfg.tcp_give_up;
    assert!(end - t0 <= bound, "gave up after {:?}, bound {bound:?}", end - t0);
    assert!(m.sends.iter().all(|&k| k >= 1 && k <= cfg.max_udp_sends.max(1)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn schedule_invariants_hold(
        n in 0usize..6,
        cfg in arb_config(),
        steps in prop::collection::vec(arb_step(), 0..24),
    ) {
        run(n, cfg, steps);
    }

    #[test]
    fn silent_servers_give_up_in_bounded_time(n in 0usize..8, cfg in arb_config()) {
        run(n, cfg, Vec::new());
    }
}
