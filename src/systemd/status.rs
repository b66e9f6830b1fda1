//! The one-line `STATUS=` shown by `systemctl status stubborn`. Pure formatting.

use std::{fmt::Write, net::SocketAddr};

/// `2/2 upstreams up; via 9.9.9.9:853 tls; cache 812 entries`.
///
/// `up` of `total` upstreams have a live connection (or are not in backoff; the caller
/// decides what "up" means), `via` is the address and transport (`"tls"` or `"plain"`)
/// of the connection answering most recently, `None` when none is. The line changes only
/// when one of these does, so the caller can recompute it often and let
/// [`Notifier::status`](super::Notifier::status) drop repeats. Do not feed it values that
/// change on every query (a query counter): every change is a message to PID 1.
pub fn status_line(up: usize, total: usize, via: Option<(SocketAddr, &str)>, cache_entries: usize) -> String {
    let mut line = format!("{up}/{total} upstreams up; ");
    match via {
        Some((addr, transport)) => {
            let _ = write!(line, "via {addr} {transport}; ");
        }
        None => line.push_str("no upstream connected; "),
    }
    let noun = if cache_entries == 1 { "entry" } else { "entries" };
    let _ = write!(line, "cache {cache_entries} {noun}");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example() {
        assert_eq!(
            status_line(2, 2, Some(("9.9.9.9:853".parse().unwrap(), "tls")), 812),
            "2/2 upstreams up; via 9.9.9.9:853 tls; cache 812 entries"
        );
    }

    #[test]
    fn ipv6_plain_and_singular() {
        assert_eq!(
            status_line(1, 3, Some(("[2620:fe::fe]:53".parse().unwrap(), "plain")), 1),
            "1/3 upstreams up; via [2620:fe::fe]:53 plain; cache 1 entry"
        );
    }

    #[test]
    fn nothing_up() {
        assert_eq!(status_line(0, 2, None, 0), "0/2 upstreams up; no upstream connected; cache 0 entries");
    }
}
