//! What a network change is: the machine's addresses, routes and links, read from the
//! kernel's tables and put in a canonical form that changes only when they do. Pure: the
//! driver reads the texts; the counters in them (a route's use and reference counts, an
//! IPv6 address's DAD flags) are left out, or every packet would be a "change".

/// The routes of `/proc/net/route`: interface, destination, gateway, flags, metric, mask.
pub fn routes_v4(text: &str) -> Vec<String> {
    pick(text.lines().skip(1), &[0, 1, 2, 3, 6, 7], 8)
}

/// The routes of `/proc/net/ipv6_route`: destination and length, source and length, next
/// hop, metric, flags, interface (not the reference and use counts).
pub fn routes_v6(text: &str) -> Vec<String> {
    pick(text.lines(), &[0, 1, 2, 3, 4, 5, 8, 9], 10)
}

/// The addresses of `/proc/net/if_inet6`: address, interface index, prefix length, scope,
/// interface (not the flags: duplicate address detection changes them a moment after an
/// address appears).
pub fn addresses_v6(text: &str) -> Vec<String> {
    pick(text.lines(), &[0, 1, 2, 3, 5], 6)
}

/// The chosen columns of each line that has at least `min` of them, sorted.
fn pick<'a>(lines: impl Iterator<Item = &'a str>, columns: &[usize], min: usize) -> Vec<String> {
    let mut out: Vec<String> = lines
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words.len() >= min).then(|| columns.iter().map(|&c| words[c]).collect::<Vec<_>>().join(" "))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
        wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn counters_do_not_make_a_change_and_a_new_gateway_does() {
        let busy = V4.replace("\t0\t0\t600\t00000000", "\t3\t9123\t600\t00000000");
        assert_eq!(routes_v4(V4), routes_v4(&busy), "RefCnt and Use change with traffic");
        let moved = V4.replace("0101A8C0", "0101000A");
        assert_ne!(routes_v4(V4), routes_v4(&moved));
        assert_eq!(routes_v4(V4).len(), 2, "the header is not a route");
    }

    #[test]
    fn ipv6_routes_and_addresses_ignore_counters_and_dad_flags() {
        let route = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n";
        let used = route.replace("00000001 00000000 00000001", "00000007 000004d2 00000001");
        assert_eq!(routes_v6(route), routes_v6(&used));
        assert_ne!(routes_v6(route), routes_v6(&route.replace("eth0", "wlan0")));
        let tentative = "fd000000000000000000000000000002 04 40 00 c0     eth0\n";
        let settled = "fd000000000000000000000000000002 04 40 00 80     eth0\n";
        assert_eq!(addresses_v6(tentative), addresses_v6(settled));
        assert_ne!(addresses_v6(settled), addresses_v6(&settled.replace("0002 04", "0003 04")));
    }

    #[test]
    fn order_does_not_matter_and_junk_lines_are_skipped() {
        let a = "x 1 2 3 4 5\ny 1 2 3 4 5\nshort line\n";
        let b = "y 1 2 3 4 5\nx 1 2 3 4 5\n";
        assert_eq!(addresses_v6(a), addresses_v6(b));
    }
}
