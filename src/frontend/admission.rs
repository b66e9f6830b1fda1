//! Who may take front-end resources, decided without sockets: the per-source cap on
//! open TCP connections, the global rate of REFUSED answers to UDP clients outside
//! `allow`, and the pause after a failed `accept()`. Time is passed in, so each is
//! tested on made-up instants.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The address a client is counted under: an IPv4 client on a dual-stack socket
/// (`::ffff:a.b.c.d`) is the IPv4 client.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Open TCP connections per client address, capped. Only addresses with a connection
/// open have an entry, so it holds at most as many as there are connections.
#[derive(Debug)]
pub struct PerSource {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection counted in a [`PerSource`]; dropping it uncounts it.
#[derive(Debug)]
pub struct SourceSlot {
    table: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::new(HashMap::new()) })
    }

    /// A slot for one more connection from `ip`, or None when it has `max` open.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let ip = canonical(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot { table: self.clone(), ip })
    }

    /// Connections open from `ip`.
    #[cfg(test)]
    pub fn open(&self, ip: IpAddr) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).get(&canonical(ip)).copied().unwrap_or(0)
    }

    /// Addresses with a connection open.
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).values().filter(|n| **n > 0).count()
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A token bucket: `per_second` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// Starts full.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// Takes a token at `now` if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            // A clock that went backwards (it cannot, monotonic) would add nothing.
            let earned = now.saturating_duration_since(last).as_secs_f64() * self.per_second;
            self.tokens = (self.tokens + earned).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The first pause after a failed `accept()`, doubled per failure in a row up to
/// [`ACCEPT_PAUSE_MAX`].
pub const ACCEPT_PAUSE_FIRST: Duration = Duration::from_millis(5);
pub const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// How long to pause after `accept()` fails. Out of descriptors or memory (EMFILE,
/// ENFILE, ENOBUFS, ENOMEM) the listener stays readable, so accepting again at once
/// would spin; errors about one connection (it was aborted or reset before we took it)
/// need no pause.
#[derive(Debug)]
pub struct AcceptBackoff {
    next: Duration,
    failures: u64,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self { next: ACCEPT_PAUSE_FIRST, failures: 0 }
    }
}

impl AcceptBackoff {
    /// After a failed accept: the pause before the next, or None for none.
    pub fn failed(&mut self, err: &io::Error) -> Option<Duration> {
        use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
        if matches!(err.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
            return None;
        }
        self.failures += 1;
        let pause = self.next;
        self.next = (self.next * 2).min(ACCEPT_PAUSE_MAX);
        Some(pause)
    }

    /// After an accepted connection: the next failure pauses briefly again.
    pub fn accepted(&mut self) {
        self.next = ACCEPT_PAUSE_FIRST;
    }

    /// Failures that paused, since start (for rate-limited logging).
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_at_most_max_connections_and_a_closed_one_frees_a_slot() {
        let table = PerSource::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let first = table.try_open(a).unwrap();
        let _second = table.try_open("::ffff:127.0.0.2".parse().unwrap()).unwrap();
        assert!(table.try_open(a).is_none(), "the mapped address is the same client");
        let _other = table.try_open(b).expect("another client is counted apart");
        assert_eq!(table.open(a), 2);
        drop(first);
        assert_eq!(table.open(a), 1);
        assert!(table.try_open(a).is_some());
    }

    #[test]
    fn the_table_forgets_a_source_once_its_last_connection_closes() {
        let table = PerSource::new(4);
        let slots: Vec<SourceSlot> =
            (1..=100u8).map(|i| table.try_open(IpAddr::from([127, 0, 1, i])).unwrap()).collect();
        assert_eq!(table.sources(), 100);
        drop(slots);
        assert_eq!(table.sources(), 0);
        assert!(table.open.lock().unwrap().is_empty());
    }

    #[test]
    fn a_burst_gets_at_most_the_bucket_then_the_rate() {
        let mut bucket = TokenBucket::new(20, 20);
        let t0 = Instant::now();
        // 10 000 packets within one millisecond: the burst, then nothing.
        let first = (0..10_000).filter(|_| bucket.take(t0 + Duration::from_micros(0))).count();
        assert_eq!(first, 20);
        // Then 1000 packets a second for 5 s: 20 a second get through.
        let mut passed = 0;
        for i in 1..=5000u64 {
            passed += usize::from(bucket.take(t0 + Duration::from_millis(i)));
        }
        assert!((99..=101).contains(&passed), "{passed} over 5 s at 20/s");
        // A long quiet spell saves up no more than the burst.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..1000).filter(|_| bucket.take(later)).count(), 20);
    }

    #[test]
    fn accept_failures_back_off_up_to_a_cap_and_reset_on_success() {
        let mut backoff = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<Duration> = (0..12).map(|_| backoff.failed(&emfile).unwrap()).collect();
        assert_eq!(pauses[0], ACCEPT_PAUSE_FIRST);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0] && w[1] <= ACCEPT_PAUSE_MAX));
        assert_eq!(*pauses.last().unwrap(), ACCEPT_PAUSE_MAX);
        assert_eq!(backoff.failures(), 12);
        backoff.accepted();
        assert_eq!(backoff.failed(&emfile), Some(ACCEPT_PAUSE_FIRST));
        // One connection's trouble is no reason to pause.
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.failed(&aborted), None);
    }
}
