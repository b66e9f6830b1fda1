//! Timeouts, the cap, late events, ids, configuration bounds.

use super::*;
use crate::upstream::race::FailReason::{Io, PinMismatch, Refused, Timeout, TlsAlert, Unreachable};
use crate::{tls::CaCheck, upstream::race::FailReason};

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
    let cands = [tls(0, V6A), tls(0, V4A), tls(0, V6B), tls(0, V4B), tls(0, V4C)];
    let cfg = RaceConfig { race_timeout: ms(1000), ..RaceConfig::default() };
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
    let cfg = RaceConfig { max_concurrent_attempts: 2, ..RaceConfig::default() };
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
    let cfg = RaceConfig { max_concurrent_attempts: 1, ..RaceConfig::default() };
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
    let cfg = RaceConfig { max_concurrent_attempts: 0, ..RaceConfig::default() };
    Script::with(&[a, b], &[], cfg, 0).at(0).expect(&[connect(0, a)]).wakes_at(5000);
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
    for ev in [tcp_up(0), ready(0), failed(0, Refused), ready(1), failed(1, Io), ready(2), tcp_up(99)] {
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
    Script::with(&[a], &[], RaceConfig::default(), s.race.next_id()).at(0).expect(&[connect(1003, a)]);
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
fn a_ca_pin_refusal_takes_the_endpoint_out_like_a_mismatch() {
    let (a0, a1, b0) = (tls(0, V4A), tls(1, V4A), tls(0, V4B));
    let mut s = Script::new(&[a0, a1, b0], &[]);
    s.at(0)
        .expect(&[connect(0, a0)])
        .at(40)
        .feed(failed(0, FailReason::CaPinRefused(CaCheck::NameMismatch)))
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
    s.at(0).expect(&[connect(0, a)]).at(30).feed(failed(0, Refused));
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
    let fast = RaceConfig { attempt_delay: Duration::ZERO, ..RaceConfig::default() };
    Script::with(&[a, b], &[], fast, 0).at(0).expect(&[connect(0, a)]).wakes_at(10);
    let slow = RaceConfig { attempt_delay: ms(60_000), ..RaceConfig::default() };
    Script::with(&[a, b, c], &[], slow, 0).at(0).expect(&[connect(0, a)]).wakes_at(2000);
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
    let long = RaceConfig { attempt_delay: ms(2001), ..d };
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
    // A CA pin refusal says which check failed: the text reaches the EDE clients get.
    let ca = FailReason::CaPinRefused(CaCheck::NameMismatch);
    assert_eq!(ca.as_str(), "ca-pin-refused");
    assert_eq!(ca.to_string(), "ca-pin-refused (leaf not valid for tls_name)");
    assert!(
        ca.is_hard() && ca.is_pin_refusal() && PinMismatch.is_pin_refusal() && !TlsAlert.is_pin_refusal()
    );
    assert_eq!(Transport::Tls.as_str(), "tls");
    assert_eq!(Transport::Plain.to_string(), "plain");
    assert_eq!(ready(3).id(), AttemptId(3));
    assert_eq!(failed(4, Io).id(), AttemptId(4));
}

#[test]
fn finished_as_soon_as_the_last_action_is_taken() {
    let (a, b) = (tls(0, V6A), tls(0, V4A));
    let t0 = Instant::now();
    let mut race = Race::new(vec![a, b], vec![], RaceConfig::default(), 0, t0);
    let t = t0 + ms(250);
    assert_eq!(race.poll_action(t0), Some(connect(0, a)));
    assert_eq!(race.poll_action(t0), None);
    assert_eq!(race.poll_action(t), Some(connect(1, b)));
    race.handle(ready(0), t);
    assert!(!race.is_finished());
    assert_eq!(race.poll_timeout(), Some(t), "queued actions: poll at once");
    assert_eq!(race.poll_action(t), Some(won(0)));
    assert_eq!(race.poll_action(t), Some(cancel(1)));
    assert!(race.is_finished());
    assert_eq!(race.poll_timeout(), None);
    assert_eq!(race.poll_action(t + ms(20_000)), None);
}
