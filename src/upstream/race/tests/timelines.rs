//! The required scripted timelines (RFC 8305 §5 timing, RFC 8310 §5 policy).

use super::*;
use crate::upstream::race::FailReason::{Io, PinMismatch, Refused, Timeout, TlsAlert, Unreachable};

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
    let addrs = [ip("2001:db8::1"), ip("2001:db8::2"), ip("192.0.2.1"), ip("192.0.2.2")];
    let (tls_group, plain_group) = order_candidates(
        &[UpstreamAddrs {
            upstream: 0,
            addresses: &addrs,
            tls_port: 853,
            plain_port: 53,
            https_port: None,
            allow_plain: false,
        }],
        None,
    );
    assert_eq!(tls_group, vec![tls(0, V6A), tls(0, V4A), tls(0, V6B), tls(0, V4B)]);
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
            https_port: None,
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
            https_port: None,
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
    let (a, b, c, d, e) = (tls(0, V6A), tls(0, V4A), tls(0, V6B), tls(0, V4B), tls(1, V4C));
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
    Script::new(&[], &[]).at(0).expect(&[gave_up(&[])]).finished();
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
    let cfg = RaceConfig { max_concurrent_attempts: 8, ..RaceConfig::default() };
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

// DoH (RFC 8484) in the TLS group.

#[test]
fn with_853_silently_dropped_doh_on_the_same_address_starts_one_delay_later_and_wins() {
    let dot = tls(0, V4A);
    let doh = Candidate { upstream: 0, addr: "192.0.2.1:443".parse().unwrap(), transport: Transport::Https };
    Script::new(&[dot, doh], &[])
        .at(0)
        .expect(&[connect(0, dot)])
        .wakes_at(250)
        .at(250)
        .expect(&[connect(1, doh)])
        .at(270)
        .feed(tcp_up(1))
        .at(300)
        .feed(ready(1))
        .expect(&[won(1), cancel(0)])
        .finished();
}

#[test]
fn a_doh_attempt_handshaking_holds_plain_text_back_as_dot_does() {
    let doh = Candidate { upstream: 0, addr: "192.0.2.1:443".parse().unwrap(), transport: Transport::Https };
    let clear = plain(0, "192.0.2.1:53");
    Script::new(&[doh], &[clear])
        .at(0)
        .expect(&[connect(0, doh)])
        .at(10)
        .feed(tcp_up(0))
        // At the plain fallback delay (500 ms): TLS on 443 is handshaking, so 443 works
        // and plain text stays out.
        .at(500)
        .expect(&[])
        .at(700)
        .feed(ready(0))
        .expect(&[won(0)])
        .finished();
}
