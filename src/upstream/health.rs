//! Upstream health as pure state: round-trip estimates, when a connection counts as dead,
//! when to hedge, and how long a failing endpoint sits out.
//!
//! Takes `now` as an argument and never reads a clock, sleeps or does I/O; the connection
//! task and the pool feed it what they observe.

use std::time::Duration;

use tokio::time::Instant;

/// Smoothed round-trip time and its variation (RFC 6298 §2, the estimator TCP uses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RttEstimate {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimate {
    pub fn observe(&mut self, sample: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// How long to wait for an answer before asking elsewhere too: SRTT + 4·RTTVAR (the
    /// RTO formula: late enough that a healthy link almost never hedges), within
    /// `floor..=cap`. Without a sample yet, the cap.
    pub fn hedge_delay(&self, floor: Duration, cap: Duration) -> Duration {
        match self.srtt {
            None => cap,
            Some(srtt) => (srtt + self.rttvar * 4).clamp(floor, cap),
        }
    }
}

/// When a connection is declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadPolicy {
    /// This many queries in a row given up on (by a hedge or the client) without any answer.
    pub unanswered: u32,
    /// No answer at all for this long while queries were waiting.
    pub silence: Duration,
}

/// Why a connection was declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    Unanswered(u32),
    Silent(Duration),
}

impl DeadReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadReason::Unanswered(_) => "unanswered queries",
            DeadReason::Silent(_) => "silent with queries waiting",
        }
    }
}

/// What one connection has seen of its upstream.
#[derive(Debug, Clone, Default)]
pub struct ConnectionHealth {
    pub rtt: RttEstimate,
    unanswered_streak: u32,
    /// Since when queries have waited with no answer arriving (None: nothing waiting).
    waiting_since: Option<Instant>,
}

impl ConnectionHealth {
    /// A query went out; `pending` is how many are in flight including it.
    pub fn on_sent(&mut self, now: Instant, pending: usize) {
        if pending == 1 || self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
    }

    /// An answer arrived after `rtt`; `pending` is how many are still in flight.
    pub fn on_answer(&mut self, rtt: Duration, now: Instant, pending: usize) {
        self.rtt.observe(rtt);
        self.on_heard(now, pending);
    }

    /// The upstream sent something (even a late answer to an abandoned query): it is
    /// alive, so the silence clock and the unanswered streak start over.
    pub fn on_heard(&mut self, now: Instant, pending: usize) {
        self.unanswered_streak = 0;
        self.waiting_since = (pending > 0).then_some(now);
    }

    /// `count` queries were given up on (their waiters left) with no answer. The silence
    /// clock keeps running even with nothing left in flight: a connection that owes an
    /// answer and has said nothing since is suspect, though no new query is sent on it
    /// (the pool may have moved its queries to the spare).
    pub fn on_abandoned(&mut self, count: u32, _pending: usize) {
        self.unanswered_streak += count;
    }

    /// The upstream answered a query with a failure rather than an answer (a DoH stream
    /// with an HTTP error status, or reset): it counts towards the unanswered streak like a
    /// query given up on, so an upstream that only fails dies as one that says nothing
    /// does; but it is alive, so the silence clock starts over as for any word from it.
    pub fn on_failed(&mut self, now: Instant, pending: usize) {
        self.unanswered_streak += 1;
        self.waiting_since = (pending > 0).then_some(now);
    }

    pub fn dead(&self, policy: DeadPolicy, now: Instant) -> Option<DeadReason> {
        if self.unanswered_streak >= policy.unanswered {
            return Some(DeadReason::Unanswered(self.unanswered_streak));
        }
        let silent = now.saturating_duration_since(self.waiting_since?);
        (silent >= policy.silence).then_some(DeadReason::Silent(silent))
    }

    /// When `dead` could next turn true by time alone.
    pub fn next_check(&self, policy: DeadPolicy) -> Option<Instant> {
        self.waiting_since.map(|since| since + policy.silence)
    }
}

/// Exponential backoff for an endpoint or upstream that keeps failing: 1 s, 2 s, 4 s … up
/// to 60 s; a success resets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(60);

    pub fn on_failure(&mut self, now: Instant) {
        self.on_failure_capped(now, Self::MAX);
    }

    /// Like [`Backoff::on_failure`], doubling only up to `max`.
    pub fn on_failure_capped(&mut self, now: Instant, max: Duration) {
        let shift = self.failures.min(6);
        let wait = (Self::FIRST * (1u32 << shift)).min(max);
        self.failures = self.failures.saturating_add(1);
        self.until = Some(now + wait);
    }

    pub fn on_success(&mut self) {
        *self = Self::default();
    }

    pub fn available(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now >= until)
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the back-off ends, if it is on.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }
}

/// Notices a suspend: the boot-time clock (which counts suspended time) ran ahead of the
/// monotonic clock (which does not). After one, every connection is suspect: the peer and
/// every middlebox may have dropped its state while we slept.
#[derive(Debug, Clone, Copy)]
pub struct SuspendDetector {
    last: Option<(Duration, Duration)>,
    threshold: Duration,
}

impl SuspendDetector {
    pub fn new(threshold: Duration) -> Self {
        Self { last: None, threshold }
    }

    /// Feeds one reading of (monotonic, boot-time); true when a suspend happened since the
    /// previous reading.
    pub fn observe(&mut self, monotonic: Duration, boottime: Duration) -> bool {
        let jumped = self.last.is_some_and(|(m, b)| {
            let awake = monotonic.saturating_sub(m);
            let total = boottime.saturating_sub(b);
            total.saturating_sub(awake) >= self.threshold
        });
        self.last = Some((monotonic, boottime));
        jumped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rtt_follows_rfc_6298() {
        let mut e = RttEstimate::default();
        assert_eq!(e.hedge_delay(50 * MS, 1000 * MS), 1000 * MS, "no sample: the cap");
        e.observe(100 * MS);
        assert_eq!(e.srtt(), Some(100 * MS));
        assert_eq!(e.hedge_delay(50 * MS, 1000 * MS), 300 * MS, "100 + 4·50");
        e.observe(100 * MS);
        // rttvar = 3/4·50 + 1/4·0 = 37.5; srtt stays 100.
        assert_eq!(e.hedge_delay(50 * MS, 1000 * MS), Duration::from_micros(250_000));
        for _ in 0..50 {
            e.observe(2 * MS);
        }
        assert_eq!(e.hedge_delay(50 * MS, 1000 * MS), 50 * MS, "the floor holds");
    }

    #[test]
    fn failed_streams_count_towards_death_but_are_a_sign_of_life() {
        let policy = DeadPolicy { unanswered: 3, silence: Duration::from_secs(2) };
        let t0 = Instant::now();
        let mut h = ConnectionHealth::default();
        h.on_sent(t0, 1);
        h.on_failed(t0, 0);
        // Nothing waits: an idle connection whose last query failed is not silent.
        assert_eq!(h.next_check(policy), None);
        assert_eq!(h.dead(policy, t0 + 10 * policy.silence), None);
        h.on_sent(t0, 2);
        h.on_failed(t0 + 100 * MS, 1);
        assert_eq!(h.next_check(policy), Some(t0 + 100 * MS + policy.silence), "the clock starts over");
        h.on_failed(t0, 0);
        assert_eq!(h.dead(policy, t0), Some(DeadReason::Unanswered(3)));
        h.on_answer(MS, t0, 0);
        assert_eq!(h.dead(policy, t0), None, "an answer ends the streak");
    }

    #[test]
    fn a_streak_of_abandoned_queries_kills_a_connection_and_an_answer_resets_it() {
        let policy = DeadPolicy { unanswered: 3, silence: Duration::from_secs(2) };
        let t0 = Instant::now();
        let mut h = ConnectionHealth::default();
        h.on_sent(t0, 1);
        h.on_abandoned(2, 0);
        assert_eq!(h.dead(policy, t0), None);
        h.on_sent(t0, 1);
        h.on_answer(10 * MS, t0, 0);
        h.on_abandoned(2, 0);
        assert_eq!(h.dead(policy, t0), None, "the answer reset the streak");
        h.on_abandoned(1, 0);
        assert_eq!(h.dead(policy, t0), Some(DeadReason::Unanswered(3)));
    }

    #[test]
    fn silence_with_queries_waiting_kills_a_connection_silence_without_does_not() {
        let policy = DeadPolicy { unanswered: 3, silence: Duration::from_secs(2) };
        let t0 = Instant::now();
        let mut h = ConnectionHealth::default();
        assert_eq!(h.dead(policy, t0 + Duration::from_secs(60)), None, "idle is not dead");
        h.on_sent(t0, 1);
        assert_eq!(h.next_check(policy), Some(t0 + Duration::from_secs(2)));
        assert_eq!(h.dead(policy, t0 + 1999 * MS), None);
        assert!(matches!(h.dead(policy, t0 + Duration::from_secs(2)), Some(DeadReason::Silent(_))));
        // An answer restarts the clock for what is still waiting.
        h.on_answer(10 * MS, t0 + 1900 * MS, 1);
        assert_eq!(h.dead(policy, t0 + 3 * Duration::from_secs(1)), None);
    }

    #[test]
    fn a_connection_owing_an_abandoned_answer_dies_of_silence_even_with_nothing_in_flight() {
        let policy = DeadPolicy { unanswered: 3, silence: Duration::from_secs(2) };
        let t0 = Instant::now();
        let mut h = ConnectionHealth::default();
        h.on_sent(t0, 1);
        // The hedge answered elsewhere; the query is abandoned; nothing else is sent here.
        h.on_abandoned(1, 0);
        assert_eq!(h.dead(policy, t0 + 1999 * MS), None);
        assert!(matches!(h.dead(policy, t0 + Duration::from_secs(2)), Some(DeadReason::Silent(_))));
        // But any word from the upstream clears it.
        h.on_heard(t0 + 1500 * MS, 0);
        assert_eq!(h.dead(policy, t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(b.available(t0));
        let mut waits = Vec::new();
        for _ in 0..9 {
            b.on_failure(t0);
            let mut t = t0;
            while !b.available(t) {
                t += Duration::from_millis(500);
            }
            waits.push((t - t0).as_secs());
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.on_success();
        assert!(b.available(t0));
    }

    #[test]
    fn a_suspend_is_a_boottime_jump_the_monotonic_clock_did_not_see() {
        let s = Duration::from_secs;
        let mut d = SuspendDetector::new(s(2));
        assert!(!d.observe(s(100), s(100)));
        assert!(!d.observe(s(110), s(110)), "awake: both advance together");
        assert!(!d.observe(s(111), s(112)), "1 s of drift is below the threshold");
        assert!(d.observe(s(112), s(3712)), "an hour asleep");
        assert!(!d.observe(s(113), s(3713)));
    }
}
