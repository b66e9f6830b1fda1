//! `[[upstream]] https_port` and `https_path` (DNS over HTTPS, RFC 8484): what is accepted,
//! what is refused, and what the error names.

mod config_support;

use config_support::{assert_rejected, ok, upstream};

const BASE: &str = "name = \"a\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\"";

fn with(lines: &str) -> String {
    upstream(&format!("{BASE}\n{lines}"))
}

#[test]
fn https_is_off_unless_https_port_is_set_and_the_path_defaults_to_dns_query() {
    let config = ok(&upstream(BASE));
    assert_eq!(config.upstreams[0].https, None);
    let config = ok(&with("https_port = 443"));
    let https = config.upstreams[0].https.as_ref().expect("DoH on");
    assert_eq!((https.port, https.path.as_str()), (443, "/dns-query"));
    let config = ok(&with("https_port = 8443\nhttps_path = \"/resolve/v1\""));
    let https = config.upstreams[0].https.as_ref().unwrap();
    assert_eq!((https.port, https.path.as_str()), (8443, "/resolve/v1"));
}

#[test]
fn the_https_port_is_a_port_of_its_own() {
    assert_rejected(&with("https_port = 0"), "upstream[0].https_port", "");
    assert_rejected(&with("https_port = 70000"), "upstream[0].https_port", "");
    assert_rejected(&with("https_port = 53"), "upstream[0].https_port", "must not be 53");
    assert_rejected(&with("https_port = 853"), "upstream[0].https_port", "equals tls_port (853)");
    let opportunistic = upstream(
        "name = \"a\"\naddresses = [\"192.0.2.1\"]\nmode = \"opportunistic\"\nplain_port = 5353\nhttps_port = 5353",
    );
    assert_rejected(&opportunistic, "upstream[0].https_port", "equals plain_port");
    // Strict never uses plain_port, so it cannot clash there.
    ok(&with("plain_port = 443\nhttps_port = 443"));
}

#[test]
fn the_path_is_a_path_alone() {
    assert_rejected(&with("https_path = \"/dns-query\""), "upstream[0].https_path", "without https_port");
    assert_rejected(
        &with("https_port = 443\nhttps_path = \"dns-query\""),
        "upstream[0].https_path",
        "start with \"/\"",
    );
    assert_rejected(
        &with("https_port = 443\nhttps_path = \"/dns-query{?dns}\""),
        "upstream[0].https_path",
        "sent by POST",
    );
    assert_rejected(&with("https_port = 443\nhttps_path = \"/q?dns=x\""), "upstream[0].https_path", "'?'");
    assert_rejected(&with("https_port = 443\nhttps_path = \"/a b\""), "upstream[0].https_path", "' '");
}

#[test]
fn a_plain_upstream_has_no_https() {
    let plain = |line: &str| {
        upstream(&format!(
            "name = \"lan\"\naddresses = [\"192.168.1.1\"]\nmode = \"plain\"\ndomains = [\"lan\"]\n{line}"
        )) + &upstream(BASE)
    };
    assert_rejected(&plain("https_port = 443"), "upstream[0].https_port", "is plain");
    assert_rejected(&plain("https_path = \"/dns-query\""), "upstream[0].https_path", "is plain");
}
