//! The race driver under paused tokio time, with scripted fake attempts: what starts when,
//! who wins, and that losers are aborted (their sockets dropped).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::{Instant, sleep};

use super::*;
use crate::upstream::{
    connection::{ConnectionInfo, ConnectionLimits},
    race::{RaceConfig, Transport},
};

#[derive(Clone, Copy)]
enum Script {
    /// The SYN is dropped: nothing ever happens.
    Silent,
    /// RST at once.
    Rst,
    /// TCP up after the first delay, usable after the second.
    Ready(u64, u64),
    /// TCP up, then the handshake never finishes.
    Stall,
}

/// Counts attempts whose future was dropped before it finished (aborted losers).
struct DropGuard(Arc<AtomicUsize>, bool);
impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn candidate(i: u16, v6: bool) -> Candidate {
    let addr: SocketAddr =
        if v6 { format!("[2001:db8::{i}]:853") } else { format!("192.0.2.{i}:853") }.parse().unwrap();
    Candidate { upstream: 0, addr, transport: Transport::Tls }
}

fn fake_connection(c: Candidate, id: AttemptId) -> Connection {
    let (ours, theirs) = tokio::io::duplex(1024);
    // Keep the far end open for the test's life so the connection stays up.
    std::mem::forget(theirs);
    let info = ConnectionInfo {
        upstream: 0,
        upstream_name: Arc::from("fake"),
        peer: c.addr,
        transport: c.transport,
        authenticated: true,
        attempt: id.0,
    };
    crate::upstream::dot::spawn(
        ours,
        info,
        ConnectionLimits {
            idle_timeout: Duration::from_secs(60),
            max_inflight: 8,
            dead: crate::upstream::health::DeadPolicy { unanswered: 3, silence: Duration::from_secs(2) },
        },
    )
}

async fn run(scripts: Vec<(Candidate, Script)>) -> (RaceResult, Duration, usize) {
    let started = Instant::now();
    let aborted = Arc::new(AtomicUsize::new(0));
    let tls: Vec<Candidate> = scripts.iter().map(|(c, _)| *c).collect();
    let race = Race::new(tls, Vec::new(), RaceConfig::default(), 1, started);
    let scripts = Arc::new(scripts);
    let counter = aborted.clone();
    let result = drive_race_with(race, vec![Arc::from("fake")], move |id, cand, report| {
        let script = scripts.iter().find(|(c, _)| *c == cand).unwrap().1;
        let counter = counter.clone();
        async move {
            let mut guard = DropGuard(counter, false);
            match script {
                Script::Silent => std::future::pending::<()>().await,
                Script::Rst => {
                    report.failed(AttemptFailure { reason: FailReason::Refused, detail: "rst".into() })
                }
                Script::Stall => {
                    report.tcp_up();
                    std::future::pending::<()>().await
                }
                Script::Ready(tcp, tls) => {
                    sleep(Duration::from_millis(tcp)).await;
                    report.tcp_up();
                    sleep(Duration::from_millis(tls)).await;
                    report.ready(fake_connection(cand, id));
                }
            }
            guard.1 = true;
        }
    })
    .await;
    // Let aborted tasks be dropped.
    tokio::task::yield_now().await;
    (result, started.elapsed(), aborted.load(Ordering::SeqCst))
}

fn winner(r: &RaceResult) -> SocketAddr {
    r.outcome.as_ref().expect("a winner").info().peer
}

#[tokio::test(start_paused = true)]
async fn a_silent_first_attempt_costs_one_attempt_delay_not_a_timeout() {
    let (a, b) = (candidate(1, false), candidate(2, false));
    let (result, took, aborted) = run(vec![(a, Script::Silent), (b, Script::Ready(1, 2))]).await;
    assert_eq!(winner(&result), b.addr);
    assert_eq!(took, Duration::from_millis(253), "250 ms stagger + 3 ms to connect");
    assert_eq!(aborted, 1, "the silent attempt was cancelled");
}

#[tokio::test(start_paused = true)]
async fn an_rst_starts_the_next_attempt_at_once() {
    let (a, b) = (candidate(1, false), candidate(2, false));
    let (result, took, _) = run(vec![(a, Script::Rst), (b, Script::Ready(1, 2))]).await;
    assert_eq!(winner(&result), b.addr);
    assert_eq!(took, Duration::from_millis(3));
}

#[tokio::test(start_paused = true)]
async fn broken_ipv6_loses_to_ipv4_after_one_delay() {
    let order = crate::upstream::race::order_candidates(
        &[crate::upstream::race::UpstreamAddrs {
            upstream: 0,
            addresses: &[
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
            ],
            tls_port: 853,
            plain_port: 53,
            https_port: None,
            allow_plain: false,
        }],
        None,
    )
    .0;
    assert!(order[0].addr.is_ipv6() && order[1].addr.is_ipv4(), "interleaved, IPv6 first");
    let scripts = order
        .iter()
        .map(|c| (*c, if c.addr.is_ipv6() { Script::Silent } else { Script::Ready(1, 1) }))
        .collect();
    let (result, took, aborted) = run(scripts).await;
    assert!(winner(&result).is_ipv4());
    assert_eq!(took, Duration::from_millis(252));
    assert_eq!(aborted, 1, "the one IPv6 attempt started is cancelled; the second never started");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_handshake_does_not_hold_the_next_attempt() {
    let (a, b) = (candidate(1, false), candidate(2, false));
    let (result, took, aborted) = run(vec![(a, Script::Stall), (b, Script::Ready(1, 1))]).await;
    assert_eq!(winner(&result), b.addr);
    assert_eq!(took, Duration::from_millis(252));
    assert_eq!(aborted, 1);
}

#[tokio::test(start_paused = true)]
async fn everything_failing_gives_up_with_every_reason() {
    let (a, b, c) = (candidate(1, false), candidate(2, true), candidate(3, false));
    let (result, took, _) = run(vec![(a, Script::Rst), (b, Script::Silent), (c, Script::Rst)]).await;
    let Err(reasons) = result.outcome else { panic!("expected the race to give up") };
    assert_eq!(reasons.len(), 3);
    assert!(reasons.iter().any(|(_, cand, r)| *cand == b && *r == FailReason::Timeout));
    assert_eq!(took, RaceConfig::default().attempt_timeout, "the silent one ends at its own timeout");
}

#[tokio::test(start_paused = true)]
async fn a_slow_handshake_loses_to_a_later_faster_attempt() {
    let (a, b) = (candidate(1, false), candidate(2, false));
    // a is slow to finish, b starts at +250 and is quick: both end up ready.
    let (result, _, _) = run(vec![(a, Script::Ready(1, 300)), (b, Script::Ready(1, 1))]).await;
    assert_eq!(winner(&result), b.addr);
    assert!(result.next_id >= 3, "ids keep growing: {}", result.next_id);
}
