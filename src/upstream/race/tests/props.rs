//! Property tests: random candidate lists, configurations and event scripts,
//! driven the way the tokio driver drives the race (wake at `poll_timeout`, feed
//! events, drain `poll_action`). An independent model checks every action.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use tokio::time::Instant;

use crate::upstream::race::*;

#[derive(Clone, Debug)]
enum Kind {
    TcpUp,
    Ready,
    Failed(FailReason),
}

#[derive(Clone, Debug)]
struct Step {
    /// Time since the previous step.
    dt_ms: u64,
    /// Aim at an alive attempt (usually) or at any id, known or not.
    aim_alive: bool,
    pick: Index,
    kind: Kind,
}

fn arb_reason() -> impl Strategy<Value = FailReason> {
    prop_oneof![
        Just(FailReason::Refused),
        Just(FailReason::Unreachable),
        Just(FailReason::Timeout),
        Just(FailReason::TlsAlert),
        Just(FailReason::PinMismatch),
        Just(FailReason::CaPinRefused(crate::tls::CaCheck::Expired)),
        Just(FailReason::Io),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![
        3 => Just(Kind::TcpUp),
        1 => Just(Kind::Ready),
        4 => arb_reason().prop_map(Kind::Failed),
    ];
    (0u64..1500, prop::bool::weighted(0.85), any::<Index>(), kind)
        .prop_map(|(dt_ms, aim_alive, pick, kind)| Step { dt_ms, aim_alive, pick, kind })
}

/// A small address pool, so that duplicates and shared endpoints across
/// upstreams (relevant for pin mismatches) happen often.
fn arb_candidate(transport: Transport) -> impl Strategy<Value = Candidate> {
    (0usize..3, 0u8..4, any::<bool>()).prop_map(move |(upstream, host, v6)| {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(host)))
        } else {
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, host))
        };
        let port = match transport {
            Transport::Tls => 853,
            Transport::Plain => 53,
            Transport::Https => 443,
        };
        Candidate { upstream, addr: SocketAddr::new(ip, port), transport }
    })
}

/// A candidate of the TLS group: DoT or DoH, which race as one group.
fn arb_encrypted() -> impl Strategy<Value = Candidate> {
    prop_oneof![arb_candidate(Transport::Tls), arb_candidate(Transport::Https)]
}

fn arb_config() -> impl Strategy<Value = RaceConfig> {
    (0u64..3000, 0u64..8000, 0u64..2000, 0usize..6, 0u64..15_000).prop_map(
        |(delay, attempt, plain, cap, race)| RaceConfig {
            attempt_delay: Duration::from_millis(delay),
            attempt_timeout: Duration::from_millis(attempt),
            plain_fallback_delay: Duration::from_millis(plain),
            max_concurrent_attempts: cap,
            race_timeout: Duration::from_millis(race),
        },
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Failed(FailReason),
    Cancelled,
    Won,
}

#[derive(Clone, Copy, Debug)]
struct Open {
    candidate: Candidate,
    tcp_up: bool,
    deadline: Instant,
}

/// Independent model of what the race may do, fed the same inputs.
struct Model {
    t0: Instant,
    cfg: RaceConfig,
    first_id: u64,
    tls: Vec<Candidate>,
    plain: Vec<Candidate>,
    connected: BTreeMap<u64, Candidate>,
    open: BTreeMap<u64, Open>,
    ended: BTreeMap<u64, End>,
    excluded: Vec<(SocketAddr, Transport)>,
    plain_joined: bool,
    last_connect: Option<Instant>,
    hard_failure_since_connect: bool,
    ready_fed: Option<u64>,
    won: Option<u64>,
    gave_up: bool,
    /// Decided, and the actions of that instant were all drained.
    done: bool,
    decided_at: Option<Instant>,
}

impl Model {
    fn new(t0: Instant, cfg: RaceConfig, first_id: u64, tls: &[Candidate], plain: &[Candidate]) -> Self {
        let dedup = |list: &[Candidate]| {
            let mut out: Vec<Candidate> = Vec::new();
            for c in list {
                if !out.contains(c) {
                    out.push(*c);
                }
            }
            out
        };
        Model {
            t0,
            cfg: cfg.clamped(),
            first_id,
            tls: dedup(tls),
            plain: dedup(plain),
            connected: BTreeMap::new(),
            open: BTreeMap::new(),
            ended: BTreeMap::new(),
            excluded: Vec::new(),
            plain_joined: false,
            last_connect: None,
            hard_failure_since_connect: false,
            ready_fed: None,
            won: None,
            gave_up: false,
            done: false,
            decided_at: None,
        }
    }

    fn race_deadline(&self) -> Instant {
        self.t0 + self.cfg.race_timeout
    }

    fn decided(&self) -> bool {
        self.won.is_some() || self.gave_up
    }

    /// Candidates of `list` not yet connected nor excluded, in order.
    fn pending(&self, list: &[Candidate]) -> Vec<Candidate> {
        list.iter()
            .copied()
            .filter(|c| !self.connected.values().any(|d| d == c))
            .filter(|c| !self.excluded.contains(&(c.addr, c.transport)))
            .collect()
    }

    fn tls_open(&self) -> impl Iterator<Item = &Open> {
        self.open.values().filter(|o| o.candidate.transport.is_encrypted())
    }

    /// Mirror of the join rule; evaluated at every point the race could evaluate it.
    fn update_plain_join(&mut self, now: Instant) {
        let exhausted = self.pending(&self.tls).is_empty() && self.tls_open().next().is_none();
        let stuck = now >= self.t0 + self.cfg.plain_fallback_delay && !self.tls_open().any(|o| o.tcp_up);
        if exhausted || stuck {
            self.plain_joined = true;
        }
    }

    fn end(&mut self, id: u64, how: End) {
        assert!(self.open.remove(&id).is_some(), "attempt {id} ended while not open");
        assert!(self.ended.insert(id, how).is_none(), "attempt {id} ended twice");
    }

    fn feed(&mut self, race: &mut Race, event: Event, now: Instant) {
        race.handle(event, now);
        if self.decided() {
            return;
        }
        let id = event.id().0;
        if !self.open.contains_key(&id) {
            return;
        }
        match event {
            Event::TcpUp(_) => {
                let o = self.open.get_mut(&id).unwrap();
                if !o.tcp_up {
                    o.tcp_up = true;
                    o.deadline = now + self.cfg.attempt_timeout;
                }
            }
            Event::Ready(_) => self.ready_fed = Some(id),
            Event::Failed(_, reason) => {
                let c = self.open[&id].candidate;
                self.end(id, End::Failed(reason));
                if reason.is_hard() {
                    self.hard_failure_since_connect = true;
                }
                if reason.is_pin_refusal() {
                    self.excluded.push((c.addr, c.transport));
                }
            }
        }
    }

    fn drain(&mut self, race: &mut Race, now: Instant) {
        self.update_plain_join(now);
        let mut n = 0;
        while let Some(action) = race.poll_action(now) {
            n += 1;
            assert!(n < 100, "poll_action does not run dry");
            assert!(!self.done, "action after the race finished: {action:?}");
            self.check(action, now);
            self.update_plain_join(now);
        }
        if self.decided() {
            self.done = true;
        }
        assert_eq!(race.is_finished(), self.done);
        assert_eq!(race.attempts_alive(), self.open.len());
        assert_eq!(race.next_id(), self.first_id + self.connected.len() as u64);
        assert!(self.ready_fed.is_none(), "Ready for an alive attempt did not win");
        match race.poll_timeout() {
            None => assert!(self.done, "no wake-up but not finished"),
            Some(wake) => {
                assert!(!self.done);
                assert!(wake > now, "wake-up not in the future after draining");
                assert!(wake <= self.race_deadline(), "wake-up after the race deadline");
                self.check_liveness(now, wake);
            }
        }
        // Timers never lag: nothing alive is past its own deadline.
        for (id, o) in &self.open {
            assert!(o.deadline > now, "attempt {id} outlived its timeout");
        }
    }

    /// The race wakes in time for the next start and for the plain fallback.
    fn check_liveness(&self, now: Instant, wake: Instant) {
        let plain_pending = !self.pending(&self.plain).is_empty();
        let startable = !self.pending(&self.tls).is_empty() || (self.plain_joined && plain_pending);
        if startable && self.open.len() < self.cfg.max_concurrent_attempts {
            let due = match self.last_connect {
                Some(last) if !self.hard_failure_since_connect => last + self.cfg.attempt_delay,
                _ => now,
            };
            assert!(due > now, "a due attempt was not started");
            assert!(wake <= due, "wake-up after the next start is due");
        }
        let join_at = self.t0 + self.cfg.plain_fallback_delay;
        if !self.plain_joined && plain_pending && join_at > now {
            assert!(wake <= join_at, "wake-up after the plain fallback instant");
        }
    }

    fn check(&mut self, action: Action, now: Instant) {
        match action {
            Action::Connect { id, candidate } => {
                assert!(!self.decided(), "Connect after the decision");
                assert!(now < self.race_deadline(), "Connect at/after the race deadline");
                assert_eq!(id.0, self.first_id + self.connected.len() as u64, "ids consecutive");
                assert!(self.open.len() < self.cfg.max_concurrent_attempts, "cap exceeded");
                if let Some(last) = self.last_connect {
                    if !self.hard_failure_since_connect {
                        assert!(
                            now - last >= self.cfg.attempt_delay,
                            "started before the attempt delay without a hard failure"
                        );
                    }
                }
                // Each group is walked in order, skipping excluded endpoints.
                match candidate.transport {
                    Transport::Tls | Transport::Https => {
                        assert_eq!(self.pending(&self.tls).first(), Some(&candidate));
                    }
                    Transport::Plain => {
                        assert!(!self.plain.is_empty(), "plain Connect in a strict race");
                        assert!(self.plain_joined, "plain Connect before the plain group joined");
                        assert_eq!(self.pending(&self.plain).first(), Some(&candidate));
                    }
                }
                self.last_connect = Some(now);
                self.hard_failure_since_connect = false;
                self.connected.insert(id.0, candidate);
                self.open.insert(
                    id.0,
                    Open { candidate, tcp_up: false, deadline: now + self.cfg.attempt_timeout },
                );
            }
            Action::Cancel { id } => {
                let o = *self.open.get(&id.0).expect("Cancel of an attempt that is not alive");
                if self.won.is_none() {
                    assert!(
                        now >= o.deadline || now >= self.race_deadline(),
                        "Cancel of attempt {id} before any deadline"
                    );
                }
                self.end(id.0, End::Cancelled);
            }
            Action::Won { id } => {
                assert!(!self.decided(), "second decision");
                assert_eq!(self.ready_fed.take(), Some(id.0), "Won without a Ready");
                self.end(id.0, End::Won);
                self.won = Some(id.0);
                self.decided_at = Some(now);
            }
            Action::GaveUp { reasons } => {
                assert!(!self.decided(), "second decision");
                assert!(self.open.is_empty(), "GaveUp with attempts alive");
                if now < self.race_deadline() {
                    assert!(self.pending(&self.tls).is_empty(), "GaveUp with TLS left");
                    assert!(self.pending(&self.plain).is_empty(), "GaveUp with plain left");
                }
                let want: Vec<(AttemptId, Candidate, FailReason)> = self
                    .connected
                    .iter()
                    .map(|(&id, &c)| {
                        let reason = match self.ended[&id] {
                            End::Failed(r) => r,
                            End::Cancelled => FailReason::Timeout,
                            End::Won => unreachable!(),
                        };
                        (AttemptId(id), c, reason)
                    })
                    .collect();
                assert_eq!(reasons, want);
                self.gave_up = true;
                self.decided_at = Some(now);
            }
        }
    }

    fn pick_id(&self, step: &Step) -> u64 {
        if step.aim_alive && !self.open.is_empty() {
            let ids: Vec<u64> = self.open.keys().copied().collect();
            ids[step.pick.index(ids.len())]
        } else {
            // Known, ended, not yet issued, or below first_id.
            let span = self.connected.len() + 3;
            (self.first_id + step.pick.index(span) as u64).saturating_sub(1)
        }
    }
}

fn run(tls: Vec<Candidate>, plain: Vec<Candidate>, cfg: RaceConfig, first_id: u64, steps: Vec<Step>) {
    let t0 = Instant::now();
    let mut race = Race::new(tls.clone(), plain.clone(), cfg, first_id, t0);
    let mut model = Model::new(t0, cfg, first_id, &tls, &plain);
    let mut now = t0;
    model.drain(&mut race, now);
    let mut wakes = 0;
    for step in steps {
        let target = now + Duration::from_millis(step.dt_ms);
        // Wake up at every timer up to the event's instant, like the driver would.
        while let Some(wake) = race.poll_timeout().filter(|&w| w <= target) {
            now = wake;
            model.drain(&mut race, now);
            wakes += 1;
            assert!(wakes < 10_000, "wake-up loop");
        }
        now = target;
        let id = AttemptId(model.pick_id(&step));
        let event = match step.kind {
            Kind::TcpUp => Event::TcpUp(id),
            Kind::Ready => Event::Ready(id),
            Kind::Failed(r) => Event::Failed(id, r),
        };
        model.feed(&mut race, event, now);
        model.drain(&mut race, now);
    }
    // No more events: time alone must finish the race by its deadline.
    while let Some(wake) = race.poll_timeout() {
        now = wake;
        model.drain(&mut race, now);
        wakes += 1;
        assert!(wakes < 10_000, "race never finishes");
    }
    assert!(race.is_finished());
    assert!(model.open.is_empty());
    assert!(model.decided_at.unwrap() <= model.race_deadline());
    assert_eq!(model.ended.len(), model.connected.len(), "an attempt never ended");
    assert_eq!(race.poll_action(now + Duration::from_secs(60)), None);
    let pins: Vec<Candidate> = race.pin_mismatches().collect();
    for c in &pins {
        assert!(model.excluded.contains(&(c.addr, c.transport)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn race_invariants_hold(
        tls in prop::collection::vec(arb_encrypted(), 1..8),
        plain in prop::collection::vec(arb_candidate(Transport::Plain), 0..6),
        cfg in arb_config(),
        first_id in 0u64..1_000_000,
        steps in prop::collection::vec(arb_step(), 0..40),
    ) {
        run(tls, plain, cfg, first_id, steps);
    }

    #[test]
    fn silent_network_gives_up_by_the_deadline(
        tls in prop::collection::vec(arb_encrypted(), 1..8),
        plain in prop::collection::vec(arb_candidate(Transport::Plain), 0..6),
        cfg in arb_config(),
    ) {
        // Every packet dropped: only timers move the race.
        run(tls, plain, cfg, 0, Vec::new());
    }

    #[test]
    fn strict_never_yields_plain(
        addrs in prop::collection::vec(any::<bool>().prop_flat_map(|v6| (Just(v6), 0u8..6)), 0..8),
        last_is_plain in any::<bool>(),
        steps in prop::collection::vec(arb_step(), 0..30),
    ) {
        let ips: Vec<IpAddr> = addrs
            .iter()
            .map(|&(v6, h)| if v6 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(h)))
            } else {
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, h))
            })
            .collect();
        let ups = [UpstreamAddrs { upstream: 0, addresses: &ips, tls_port: 853, plain_port: 53, https_port: None, allow_plain: false }];
        let last = ips.first().map(|&ip| Candidate {
            upstream: 0,
            addr: SocketAddr::new(ip, if last_is_plain { 53 } else { 853 }),
            transport: if last_is_plain { Transport::Plain } else { Transport::Tls },
        });
        let (tls, plain) = order_candidates(&ups, last);
        prop_assert!(plain.is_empty());
        prop_assert!(tls.iter().all(|c| c.transport == Transport::Tls && c.addr.port() == 853));
        if !tls.is_empty() {
            // The model's checks reject any plain Connect when the plain list is empty.
            run(tls, plain, RaceConfig::default(), 0, steps);
        }
    }

    #[test]
    fn order_is_a_family_interleaving_permutation(
        addrs in prop::collection::vec(any::<bool>().prop_flat_map(|v6| (Just(v6), 0u8..=255)), 0..12),
        allow_plain in any::<bool>(),
    ) {
        let ips: Vec<IpAddr> = addrs
            .iter()
            .map(|&(v6, h)| if v6 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(h)))
            } else {
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, h))
            })
            .collect();
        let mut distinct: Vec<IpAddr> = Vec::new();
        for ip in &ips {
            if !distinct.contains(ip) {
                distinct.push(*ip);
            }
        }
        let ups = [UpstreamAddrs { upstream: 0, addresses: &ips, tls_port: 853, plain_port: 53, https_port: None, allow_plain }];
        let (tls, plain) = order_candidates(&ups, None);
        let got: Vec<IpAddr> = tls.iter().map(|c| c.addr.ip()).collect();
        // Same addresses, each once.
        prop_assert_eq!(got.len(), distinct.len());
        prop_assert!(distinct.iter().all(|ip| got.contains(ip)));
        // Within one family the given order is kept.
        for fam_v6 in [true, false] {
            let given: Vec<_> = distinct.iter().filter(|ip| ip.is_ipv6() == fam_v6).collect();
            let ordered: Vec<_> = got.iter().filter(|ip| ip.is_ipv6() == fam_v6).collect();
            prop_assert_eq!(given, ordered);
        }
        // Alternating while both families last, IPv6 first.
        let n6 = distinct.iter().filter(|ip| ip.is_ipv6()).count();
        let n4 = distinct.len() - n6;
        for (i, ip) in got.iter().enumerate().take(2 * n6.min(n4)) {
            prop_assert_eq!(ip.is_ipv6(), i % 2 == 0);
        }
        prop_assert_eq!(plain.len(), if allow_plain { tls.len() } else { 0 });
    }
}
