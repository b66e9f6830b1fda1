//! `stubborn::config`: every rejection names its file, key path and reason;
//! defaults, the embedded default and the example file are valid.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use stubborn::config::{AddressSource, CaSource, Config, ConfigOrigin, Mode, Pin, RefusedPolicy};

mod config_support;
use config_support::{FILE, PIN, UPSTREAM, assert_rejected, ok, parse, upstream};

// ---------------------------------------------------------------- pins

#[test]
fn malformed_pin_names_upstream_and_pin_index() {
    let text = format!(
        "{UPSTREAM}\n[[upstream]]\nname = \"b\"\naddresses = [\"192.0.2.2\"]\n\
         pins = [\"key-fp:SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n"
    );
    assert_rejected(
        &text,
        "upstream[1].pins[0]",
        "expected key-fp:SHA256:<base64> or cert-fp:SHA256:<base64> \
         (base64 decodes to 20 bytes, need 32)",
    );
}

#[test]
fn pin_with_unsupported_hash_is_rejected() {
    let text = upstream(&format!(
        "name = \"a\"\naddresses = [\"192.0.2.1\"]\npins = [\"{PIN}\", \"{}\"]",
        PIN.replace("SHA256", "sha384")
    ));
    assert_rejected(&text, "upstream[0].pins[1]", "only SHA256 is supported");
}

#[test]
fn pin_with_wrong_prefix_or_bad_base64_is_rejected() {
    let text = upstream(&format!(
        "name = \"a\"\naddresses = [\"192.0.2.1\"]\npins = [\"{}\"]",
        PIN.replace("key-fp", "spki")
    ));
    assert_rejected(&text, "upstream[0].pins[0]", "expected key-fp:SHA256:");
    let text = upstream("name = \"a\"\naddresses = [\"192.0.2.1\"]\npins = [\"key-fp:SHA256:@@@\"]");
    assert_rejected(&text, "upstream[0].pins[0]", "not valid base64");
}

#[test]
fn duplicate_pin_is_rejected() {
    let text = upstream(&format!(
        "name = \"a\"\naddresses = [\"192.0.2.1\"]\npins = [\"{PIN}\", \"{}\"]",
        PIN.replace("SHA256", "sha256")
    ));
    assert_rejected(&text, "upstream[0].pins[1]", "duplicate pin (also upstream[0].pins[0])");
}

#[test]
fn pins_are_parsed_in_order() {
    let cert_pin = PIN.replace("key-fp", "cert-fp");
    let config = ok(&upstream(&format!(
        "name = \"a\"\naddresses = [\"192.0.2.1\"]\npins = [\"{PIN}\", \"{cert_pin}\"]"
    )));
    let pins = &config.upstreams[0].pins;
    assert_eq!(pins.len(), 2);
    assert!(matches!(pins[0], Pin::KeySha256(_)));
    assert!(matches!(pins[1], Pin::CertSha256(_)));
    assert_eq!(pins[0].to_string(), PIN);
    // Pins without tls_name are enough for strict mode.
    assert_eq!(config.upstreams[0].tls_name, None);
    assert_eq!(config.upstreams[0].mode, Mode::Strict);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

// ------------------------------------------------------ authentication

#[test]
fn strict_upstream_without_pins_or_tls_name_is_rejected() {
    let text = upstream("name = \"a\"\naddresses = [\"192.0.2.1\"]\nmode = \"strict\"");
    let err = assert_rejected(&text, "upstream[0]", "nothing to authenticate");
    assert!(err.reason.contains("RFC 8310"), "{err}");
    // strict is the default mode.
    let text = upstream("name = \"a\"\naddresses = [\"192.0.2.1\"]");
    assert_rejected(&text, "upstream[0]", "nothing to authenticate");
}

#[test]
fn opportunistic_upstream_needs_no_authentication_but_warns() {
    let config = ok(&upstream("name = \"lan\"\naddresses = [\"192.168.1.1\"]\nmode = \"opportunistic\""));
    let u = &config.upstreams[0];
    assert_eq!(u.mode, Mode::Opportunistic);
    assert_eq!((u.tls_port, u.plain_port), (853, 53));
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].starts_with("upstream[0]: "), "{:?}", config.warnings);
    assert!(config.warnings[0].contains("opportunistic"));
}

#[test]
fn invalid_mode_is_rejected() {
    let text =
        upstream("name = \"a\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\"\nmode = \"Strict\"");
    assert_rejected(&text, "upstream[0].mode", "unknown variant `Strict`");
}

#[test]
fn tls_name_must_be_a_dns_name() {
    let base = "name = \"a\"\naddresses = [\"192.0.2.1\"]";
    assert_rejected(
        &upstream(&format!("{base}\ntls_name = \"not a name!\"")),
        "upstream[0].tls_name",
        "\"not a name!\" is not a valid DNS name",
    );
    assert_rejected(
        &upstream(&format!("{base}\ntls_name = \"*.example.com\"")),
        "upstream[0].tls_name",
        "is not a valid DNS name",
    );
    assert_rejected(
        &upstream(&format!("{base}\ntls_name = \"9.9.9.9\"")),
        "upstream[0].tls_name",
        "tls_name must be a DNS name",
    );
    assert_rejected(
        &upstream(&format!("{base}\ntls_name = \"\"")),
        "upstream[0].tls_name",
        "is not a valid DNS name",
    );
}

#[test]
fn tls_name_is_normalised() {
    let config = ok(&upstream("name = \"a\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"DNS.Quad9.net.\""));
    assert_eq!(config.upstreams[0].tls_name.as_deref(), Some("dns.quad9.net"));
}

// ----------------------------------------------------------- addresses

#[test]
fn upstream_address_must_be_an_ip_literal() {
    let text =
        upstream("name = \"a\"\naddresses = [\"192.0.2.1\", \"dns.example\"]\ntls_name = \"a.example\"");
    let err = assert_rejected(
        &text,
        "upstream[0].addresses[1]",
        "\"dns.example\" is not an IP literal (no bootstrap through the system resolver)",
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{FILE}: upstream[0].addresses[1]: \"dns.example\" is not an IP literal \
             (no bootstrap through the system resolver)"
        )
    );
}

#[test]
fn upstream_address_with_a_port_gets_a_hint() {
    let text = upstream("name = \"a\"\naddresses = [\"192.0.2.1:853\"]\ntls_name = \"a.example\"");
    assert_rejected(&text, "upstream[0].addresses[0]", "give the port in tls_port");
}

#[test]
fn upstream_address_must_be_unicast_and_unique() {
    let text = upstream("name = \"a\"\naddresses = [\"0.0.0.0\"]\ntls_name = \"a.example\"");
    assert_rejected(&text, "upstream[0].addresses[0]", "not a unicast address");
    let text = upstream(
        "name = \"a\"\naddresses = [\"2620:fe::fe\", \"2620:00fe::00fe\"]\ntls_name = \"a.example\"",
    );
    assert_rejected(
        &text,
        "upstream[0].addresses[1]",
        "duplicate address 2620:fe::fe (also upstream[0].addresses[0])",
    );
}

#[test]
fn empty_addresses_are_rejected() {
    let text = upstream("name = \"a\"\naddresses = []\ntls_name = \"a.example\"");
    assert_rejected(&text, "upstream[0].addresses", "at least one IP address is required");
}

#[test]
fn missing_addresses_are_rejected() {
    let text = upstream("name = \"a\"\ntls_name = \"a.example\"");
    let err = assert_rejected(&text, "upstream[0]", "missing required key \"addresses\"");
    assert!(err.reason.contains("resolv_conf"), "{err}");
}

// --------------------------------------------------------------- names

#[test]
fn duplicate_upstream_names_are_rejected() {
    let text = format!(
        "{}{}{}",
        upstream("name = \"x\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\""),
        upstream("name = \"y\"\naddresses = [\"192.0.2.2\"]\ntls_name = \"a.example\""),
        upstream("name = \"x\"\naddresses = [\"192.0.2.3\"]\ntls_name = \"a.example\""),
    );
    assert_rejected(&text, "upstream[2].name", "duplicate name \"x\" (also upstream[0])");
}

#[test]
fn empty_name_is_rejected() {
    let text = upstream("name = \"  \"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\"");
    assert_rejected(&text, "upstream[0].name", "a name is required");
}

#[test]
fn missing_name_is_rejected() {
    let text = format!("{UPSTREAM}{}", upstream("addresses = [\"192.0.2.1\"]\ntls_name = \"a.example\""));
    assert_rejected(&text, "upstream[1]", "missing required key \"name\"");
}

#[test]
fn no_upstream_is_rejected() {
    assert_rejected("", "upstream", "at least one [[upstream]] is required");
    assert_rejected(
        "[server]\nlisten = [\"127.0.0.1:53\"]\n",
        "upstream",
        "at least one [[upstream]] is required",
    );
    assert_rejected("upstream = []\n", "upstream", "at least one [[upstream]] is required");
}

// --------------------------------------------------------------- ports

#[test]
fn upstream_port_zero_is_rejected() {
    let base = "name = \"a\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\"";
    assert_rejected(
        &upstream(&format!("{base}\ntls_port = 0")),
        "upstream[0].tls_port",
        "must be between 1 and 65535, got 0",
    );
    assert_rejected(
        &upstream(&format!("{base}\nplain_port = 0\nmode = \"opportunistic\"")),
        "upstream[0].plain_port",
        "must be between 1 and 65535, got 0",
    );
    assert_rejected(
        &upstream(&format!("{base}\ntls_port = 65536")),
        "upstream[0].tls_port",
        "must be between 1 and 65535, got 65536",
    );
}

#[test]
fn tls_port_53_is_rejected() {
    let text = upstream("name = \"a\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\"\ntls_port = 53");
    assert_rejected(&text, "upstream[0].tls_port", "RFC 7858 §3.1");
}

#[test]
fn opportunistic_plain_port_equal_to_tls_port_is_rejected() {
    let text = upstream(
        "name = \"a\"\naddresses = [\"192.0.2.1\"]\nmode = \"opportunistic\"\n\
         tls_port = 8853\nplain_port = 8853",
    );
    let err = assert_rejected(&text, "upstream[0].plain_port", "equals tls_port (8853)");
    assert!(err.reason.contains("RFC 7858 §3.1"), "{err}");
}

#[test]
fn plain_port_in_strict_mode_is_accepted_with_a_warning() {
    let config = ok(&upstream(
        "name = \"a\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\"\nplain_port = 5353",
    ));
    assert_eq!(config.upstreams[0].plain_port, 5353);
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].starts_with("upstream[0].plain_port: unused"));
}

#[test]
fn listen_port_zero_is_valid() {
    let config = ok(&format!("[server]\nlisten = [\"127.0.0.1:0\", \"[::1]:0\"]\n{UPSTREAM}"));
    assert_eq!(
        config.server.listen,
        vec!["127.0.0.1:0".parse::<SocketAddr>().unwrap(), "[::1]:0".parse::<SocketAddr>().unwrap()]
    );
}

// -------------------------------------------------------------- server

#[test]
fn bad_listen_address_is_rejected() {
    assert_rejected(
        &format!("[server]\nlisten = [\"127.0.0.1:53\", \"localhost:53\"]\n{UPSTREAM}"),
        "server.listen[1]",
        "\"localhost:53\" is not a socket address",
    );
    assert_rejected(
        &format!("[server]\nlisten = [\"127.0.0.1\"]\n{UPSTREAM}"),
        "server.listen[0]",
        "is not a socket address (expected IP:port",
    );
    assert_rejected(
        &format!("[server]\nlisten = [\"::1:53\"]\n{UPSTREAM}"),
        "server.listen[0]",
        "is not a socket address",
    );
}

#[test]
fn duplicate_listen_address_is_rejected() {
    assert_rejected(
        &format!("[server]\nlisten = [\"127.0.0.1:53\", \"127.0.0.1:53\"]\n{UPSTREAM}"),
        "server.listen[1]",
        "duplicate address 127.0.0.1:53 (also server.listen[0])",
    );
}

#[test]
fn empty_listen_list_is_rejected() {
    assert_rejected(
        &format!("[server]\nlisten = []\n{UPSTREAM}"),
        "server.listen",
        "at least one address to listen on is required",
    );
}

#[test]
fn bad_cidr_is_rejected() {
    assert_rejected(
        &format!("[server]\nallow = [\"127.0.0.0/8\", \"10.0.0.0/33\"]\n{UPSTREAM}"),
        "server.allow[1]",
        "\"10.0.0.0/33\" is not a CIDR network",
    );
    assert_rejected(
        &format!("[server]\nallow = [\"lan\"]\n{UPSTREAM}"),
        "server.allow[0]",
        "is not a CIDR network",
    );
}

#[test]
fn empty_allow_list_is_rejected() {
    assert_rejected(
        &format!("[server]\nallow = []\n{UPSTREAM}"),
        "server.allow",
        "every client would be refused",
    );
}

#[test]
fn allow_accepts_bare_addresses_and_clears_host_bits() {
    let config = ok(&format!("[server]\nallow = [\"192.0.2.7\", \"10.1.2.3/8\", \"fe80::1\"]\n{UPSTREAM}"));
    let allow: Vec<String> = config.server.allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["192.0.2.7/32", "10.0.0.0/8", "fe80::1/128"]);
}

#[test]
fn timeouts_out_of_range_are_rejected() {
    let cases = [
        ("server", "query_timeout_ms", "99", "between 100 and 60000, got 99"),
        ("server", "query_timeout_ms", "60001", "between 100 and 60000, got 60001"),
        ("server", "query_timeout_ms", "-1", "got -1"),
        ("server", "tcp_idle_timeout_ms", "0", "between 100 and 3600000, got 0"),
        ("connection", "idle_timeout_ms", "0", "between 100 and 3600000, got 0"),
        ("hedging", "floor_ms", "5", "between 10 and 10000"),
        ("health", "dead_after_unanswered", "0", "between 1 and 1000"),
        ("health", "dead_after_silence_ms", "50", "between 100 and 600000"),
        ("racing", "attempt_timeout_ms", "0", "between 100 and 60000"),
        ("racing", "plain_fallback_delay_ms", "-5", "between 0 and 60000, got -5"),
        ("racing", "race_timeout_ms", "300001", "between 100 and 300000"),
    ];
    for (section, key, value, fragment) in cases {
        assert_rejected(
            &format!("[{section}]\n{key} = {value}\n{UPSTREAM}"),
            &format!("{section}.{key}"),
            fragment,
        );
    }
}

#[test]
fn tcp_front_end_keys_have_defaults_ranges_and_named_errors() {
    let config = ok(UPSTREAM);
    assert_eq!(config.server.max_tcp_per_client, 16);
    assert_eq!(config.server.tcp_write_timeout, Duration::from_millis(5000));
    assert_eq!(config.server.refused, RefusedPolicy::RateLimited);
    let config = ok(&format!(
        "[server]\nmax_tcp_per_client = 1\ntcp_write_timeout_ms = 100\nrefused = \"drop\"\n{UPSTREAM}"
    ));
    assert_eq!(config.server.max_tcp_per_client, 1);
    assert_eq!(config.server.tcp_write_timeout, Duration::from_millis(100));
    assert_eq!(config.server.refused, RefusedPolicy::Drop);
    assert_rejected(
        &format!("[server]\nmax_tcp_per_client = 0\n{UPSTREAM}"),
        "server.max_tcp_per_client",
        "must be between 1 and 100000, got 0",
    );
    assert_rejected(
        &format!("[server]\ntcp_write_timeout_ms = 99\n{UPSTREAM}"),
        "server.tcp_write_timeout_ms",
        "must be between 100 and 60000, got 99",
    );
    assert_rejected(
        &format!("[server]\nrefused = \"sometimes\"\n{UPSTREAM}"),
        "server.refused",
        "\"sometimes\" is not a policy (expected \"rate-limited\" or \"drop\")",
    );
}

#[test]
fn zero_max_inflight_is_rejected() {
    assert_rejected(
        &format!("[server]\nmax_inflight = 0\n{UPSTREAM}"),
        "server.max_inflight",
        "between 1 and 1000000, got 0",
    );
    assert_rejected(
        &format!("[connection]\nmax_inflight = 0\n{UPSTREAM}"),
        "connection.max_inflight",
        "between 1 and 65535, got 0",
    );
    assert_rejected(
        &format!("[connection]\nmax_inflight = 65536\n{UPSTREAM}"),
        "connection.max_inflight",
        "between 1 and 65535, got 65536",
    );
    assert_rejected(
        &format!("[racing]\nmax_concurrent_attempts = 0\n{UPSTREAM}"),
        "racing.max_concurrent_attempts",
        "between 1 and 64, got 0",
    );
    assert_rejected(
        &format!("[cache]\nmax_entries = -1\n{UPSTREAM}"),
        "cache.max_entries",
        "between 0 and 10000000, got -1",
    );
}

#[test]
fn cache_can_be_disabled() {
    let config = ok(&format!("[cache]\nmax_entries = 0\n{UPSTREAM}"));
    assert_eq!(config.cache.max_entries, 0);
    assert!(config.summary().contains("cache: disabled"));
}

#[test]
fn stale_recheck_defaults_to_30_s_and_is_bounded() {
    let config = ok(&format!("[cache]\nserve_stale = true\n{UPSTREAM}"));
    assert_eq!(config.cache.stale_recheck, std::time::Duration::from_secs(30), "RFC 8767 §5");
    assert_eq!(config.cache.settings().failure_recheck, config.cache.stale_recheck);
    assert!(config.summary().contains("recheck 30000 ms"), "{}", config.summary());
    let off = ok(&format!("[cache]\nstale_recheck_ms = 0\n{UPSTREAM}"));
    assert_eq!(off.cache.stale_recheck, std::time::Duration::ZERO);
    assert_rejected(
        &format!("[cache]\nstale_recheck_ms = 600001\n{UPSTREAM}"),
        "cache.stale_recheck_ms",
        "between 0 and 600000, got 600001",
    );
}

// --------------------------------------------------------- resolv_conf

/// A resolv.conf with `text` in a fresh directory (kept alive by the guard).
fn resolv_conf_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// `resolv_conf = "PATH"` as a TOML line.
fn resolv_conf_key(path: &Path) -> String {
    format!("resolv_conf = {:?}", path.display().to_string())
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn resolv_conf_upstream_takes_the_usable_nameservers() {
    let (_dir, path) = resolv_conf_file(
        "# Generated by NetworkManager
search example.com
         nameserver 127.0.0.53
nameserver 192.0.2.1
nameserver 127.0.0.1
         nameserver ::1
nameserver 0.0.0.0
nameserver 2001:db8::53
         nameserver fe80::1%eth0
nameserver 192.0.2.1
nameserver 127.0.0.2
         options edns0
",
    );
    let config = ok(&upstream(&resolv_conf_key(&path)));
    let u = &config.upstreams[0];
    // Own listen addresses (the default 127.0.0.1 and ::1), resolved's stub,
    // unspecified and link-local skipped; other loopback kept; file order.
    assert_eq!(u.addresses, ips(&["192.0.2.1", "2001:db8::53", "127.0.0.2"]));
    assert_eq!(u.source, AddressSource::ResolvConf(path.clone()));
    // Defaults: name, opportunistic, ports, no authentication.
    assert_eq!(u.name, "resolv.conf");
    assert_eq!(u.mode, Mode::Opportunistic);
    assert_eq!((u.tls_port, u.plain_port), (853, 53));
    assert_eq!((u.tls_name.as_deref(), u.pins.len()), (None, 0));
    assert_eq!(u.ca, CaSource::WebPki);
    // The only warning is the usual one for an opportunistic upstream.
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].starts_with("upstream[0]: upstream \"resolv.conf\" is opportunistic"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn resolv_conf_skips_the_configured_listen_addresses() {
    let (_dir, path) = resolv_conf_file(
        "nameserver 192.0.2.53
nameserver 127.0.0.1
nameserver 192.0.2.54
",
    );
    let config = ok(&format!(
        "[server]
listen = [\"192.0.2.53:53\", \"[2001:db8::1]:5353\"]
\
         allow = [\"192.0.2.0/24\"]
{}",
        upstream(&resolv_conf_key(&path))
    ));
    // 127.0.0.1 is not ours here, so it stays.
    assert_eq!(config.upstreams[0].addresses, ips(&["127.0.0.1", "192.0.2.54"]));
}

#[test]
fn resolv_conf_and_addresses_are_mutually_exclusive() {
    let (_dir, path) = resolv_conf_file("nameserver 192.0.2.1\n");
    let text = format!(
        "{UPSTREAM}{}",
        upstream(&format!("name = \"b\"\naddresses = [\"192.0.2.2\"]\n{}", resolv_conf_key(&path)))
    );
    assert_rejected(&text, "upstream[1]", "addresses and resolv_conf are mutually exclusive");
}

#[test]
fn resolv_conf_with_strict_mode_is_rejected() {
    let (_dir, path) = resolv_conf_file("nameserver 192.0.2.1\n");
    // Even with something to authenticate: the servers come from the network.
    let text = upstream(&format!(
        "{}\nmode = \"strict\"\ntls_name = \"a.example\"\npins = [\"{PIN}\"]",
        resolv_conf_key(&path)
    ));
    let err = assert_rejected(&text, "upstream[0].mode", "must not be \"strict\" with resolv_conf");
    assert!(err.reason.contains("cannot be authenticated (RFC 8310 §5)"), "{err}");
    assert!(err.reason.contains("always opportunistic"), "{err}");
}

#[test]
fn resolv_conf_is_checked_for_strict_before_the_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let text = upstream(&format!("{}\nmode = \"strict\"", resolv_conf_key(&dir.path().join("missing"))));
    assert_rejected(&text, "upstream[0].mode", "must not be \"strict\"");
}

#[test]
fn resolv_conf_accepts_explicit_opportunistic_pins_tls_name_and_ports() {
    let (_dir, path) = resolv_conf_file("nameserver 192.0.2.1\n");
    let config = ok(&upstream(&format!(
        "name = \"lan\"\n{}\nmode = \"opportunistic\"\ntls_name = \"Router.Example.\"\n\
         pins = [\"{PIN}\", \"{}\"]\ntls_port = 8853\nplain_port = 5353",
        resolv_conf_key(&path),
        PIN.replace("key-fp", "cert-fp")
    )));
    let u = &config.upstreams[0];
    assert_eq!(u.name, "lan");
    assert_eq!(u.mode, Mode::Opportunistic);
    assert_eq!(u.tls_name.as_deref(), Some("router.example"));
    assert_eq!(u.pins.len(), 2);
    assert_eq!((u.tls_port, u.plain_port), (8853, 5353));
    assert_eq!(u.auth_summary(), "pins: 2 (SNI router.example)");
}

#[test]
fn resolv_conf_upstream_keeps_the_opportunistic_port_rule() {
    let (_dir, path) = resolv_conf_file("nameserver 192.0.2.1\n");
    let text = upstream(&format!("{}\nplain_port = 853", resolv_conf_key(&path)));
    assert_rejected(&text, "upstream[0].plain_port", "equals tls_port (853)");
}

#[test]
fn unreadable_resolv_conf_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.conf");
    assert_rejected(
        &upstream(&resolv_conf_key(&missing)),
        "upstream[0].resolv_conf",
        &format!("cannot read {}: ", missing.display()),
    );
    // A directory is not a resolv.conf either.
    assert_rejected(&upstream(&resolv_conf_key(dir.path())), "upstream[0].resolv_conf", "not a regular file");
    assert_rejected(&upstream("resolv_conf = \"\""), "upstream[0].resolv_conf", "empty: a path is required");
}

#[test]
fn resolv_conf_without_nameservers_is_a_warning() {
    // A laptop offline: the file exists but lists nothing.
    let (_dir, path) = resolv_conf_file("# no connection\nsearch example.com\n");
    let config = ok(&upstream(&resolv_conf_key(&path)));
    assert!(config.upstreams[0].addresses.is_empty());
    let warning = config
        .warnings
        .iter()
        .find(|w| w.starts_with("upstream[0].resolv_conf: "))
        .unwrap_or_else(|| panic!("{:?}", config.warnings));
    assert!(warning.contains(&format!("{} lists no nameserver", path.display())), "{warning}");
    assert!(warning.contains("re-read when it changes"), "{warning}");
    assert!(
        config.summary().contains(&format!(
            "  addresses: none yet (nameservers from {}, re-read when it changes)",
            path.display()
        )),
        "{}",
        config.summary()
    );
}

#[test]
fn resolv_conf_with_only_loops_is_a_warning_that_says_why() {
    // systemd-resolved's stub-resolv.conf, with stubborn as resolved's upstream.
    let (_dir, path) =
        resolv_conf_file("nameserver 127.0.0.53\nnameserver 127.0.0.1\noptions edns0 trust-ad\n");
    let config = ok(&upstream(&resolv_conf_key(&path)));
    assert!(config.upstreams[0].addresses.is_empty());
    let warning = config
        .warnings
        .iter()
        .find(|w| w.starts_with("upstream[0].resolv_conf: "))
        .unwrap_or_else(|| panic!("{:?}", config.warnings));
    for fragment in [
        "no usable nameserver in",
        "127.0.0.53 skipped: systemd-resolved's stub",
        "127.0.0.1 skipped: stubborn's own listen address",
        "/run/systemd/resolve/resolv.conf",
    ] {
        assert!(warning.contains(fragment), "{fragment:?} not in {warning}");
    }
}

#[test]
fn resolv_conf_default_names_must_be_unique() {
    let (_dir, path) = resolv_conf_file("nameserver 192.0.2.1\n");
    let text = format!("{}{}", upstream(&resolv_conf_key(&path)), upstream(&resolv_conf_key(&path)));
    let err = assert_rejected(&text, "upstream[1]", "duplicate name \"resolv.conf\" (also upstream[0])");
    assert!(err.reason.contains("set name"), "{err}");
    // Named apart, the same file twice is fine.
    let text = format!(
        "{}{}",
        upstream(&resolv_conf_key(&path)),
        upstream(&format!("name = \"again\"\n{}", resolv_conf_key(&path)))
    );
    let config = ok(&text);
    assert_eq!(config.upstreams[1].name, "again");
    // An explicit name clashing with the default is reported at .name.
    let text = format!(
        "{}{}",
        upstream(&resolv_conf_key(&path)),
        upstream("name = \"resolv.conf\"\naddresses = [\"192.0.2.2\"]\ntls_name = \"a.example\"")
    );
    assert_rejected(&text, "upstream[1].name", "duplicate name \"resolv.conf\"");
}

#[test]
fn missing_name_is_still_required_without_resolv_conf() {
    let text = upstream("addresses = [\"192.0.2.1\"]\nmode = \"opportunistic\"");
    assert_rejected(&text, "upstream[0]", "missing required key \"name\"");
}

#[test]
fn relative_resolv_conf_is_taken_from_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
    let config_path = dir.path().join("stubborn.toml");
    std::fs::write(&config_path, upstream("resolv_conf = \"resolv.conf\"")).unwrap();
    let config = Config::load(&config_path).unwrap();
    let u = &config.upstreams[0];
    assert_eq!(u.source, AddressSource::ResolvConf(dir.path().join("resolv.conf")));
    assert_eq!(u.addresses, ips(&["192.0.2.1"]));
}

#[test]
fn summary_names_the_resolv_conf_source() {
    let (_dir, path) = resolv_conf_file("nameserver 192.0.2.1\nnameserver 2001:db8::1\n");
    let summary = ok(&format!("{UPSTREAM}{}", upstream(&resolv_conf_key(&path)))).summary();
    for line in [
        "upstream \"a\":",
        "  addresses: 192.0.2.1\n",
        "upstream \"resolv.conf\":",
        &format!(
            "  addresses: 192.0.2.1, 2001:db8::1 (nameservers from {}, re-read when it changes)\n",
            path.display()
        ),
        "  ports: tls 853, plain 53",
        "  mode: opportunistic",
        "  auth: none (opportunistic: encrypted but unauthenticated)",
    ] {
        assert!(summary.contains(line), "missing {line:?} in:\n{summary}");
    }
}

// ------------------------------------------------------------- ca_file

fn self_signed_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["ca.example".to_owned()]).unwrap().cert.pem()
}

fn with_ca_file(path: &Path) -> String {
    upstream(&format!(
        "name = \"a\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\"\nca_file = {:?}",
        path.display().to_string()
    ))
}

#[test]
fn missing_ca_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.pem");
    assert_rejected(&with_ca_file(&path), "upstream[0].ca_file", &format!("cannot read {}", path.display()));
}

#[test]
fn ca_file_without_certificates_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.pem");
    std::fs::write(&path, "not a PEM file\n").unwrap();
    assert_rejected(&with_ca_file(&path), "upstream[0].ca_file", "no PEM certificates found");
}

#[test]
fn ca_file_with_a_broken_certificate_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.pem");
    let pem =
        format!("{}-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n", self_signed_pem());
    std::fs::write(&path, pem).unwrap();
    assert_rejected(
        &with_ca_file(&path),
        "upstream[0].ca_file",
        "certificate #2 is not a usable CA certificate",
    );
}

#[test]
fn ca_file_with_certificates_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roots.pem");
    std::fs::write(&path, format!("{}{}", self_signed_pem(), self_signed_pem())).unwrap();
    let config = ok(&with_ca_file(&path));
    assert_eq!(config.upstreams[0].ca, CaSource::File(path.clone()));
    assert!(
        config.summary().contains(&format!("auth: CA (file {}) + name a.example", path.display())),
        "{}",
        config.summary()
    );
}

#[test]
fn relative_ca_file_is_taken_from_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("roots.pem"), self_signed_pem()).unwrap();
    let config_path = dir.path().join("stubborn.toml");
    std::fs::write(
        &config_path,
        upstream(
            "name = \"a\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\"\n\
             ca_file = \"roots.pem\"",
        ),
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    assert_eq!(config.upstreams[0].ca, CaSource::File(dir.path().join("roots.pem")));
}

#[test]
fn ca_file_with_pins_is_accepted_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roots.pem");
    std::fs::write(&path, self_signed_pem()).unwrap();
    let cert_pin = PIN.replace("key-fp", "cert-fp");
    let text = upstream(&format!(
        "name = \"a\"\naddresses = [\"192.0.2.1\"]\npins = [\"{PIN}\", \"{cert_pin}\"]\n\
         ca_file = {:?}",
        path.display().to_string()
    ));
    let config = ok(&text);
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].starts_with("upstream[0].ca_file: ignored"));
}

// --------------------------------------------------------- unknown keys

#[test]
fn unknown_top_level_key_is_rejected() {
    let err = assert_rejected(
        &format!("[serer]\nlisten = []\n{UPSTREAM}"),
        "serer",
        "unknown key (expected one of server, cache, connection, racing, hedging, health, metrics, log, upstream)",
    );
    assert!(err.reason.contains("line 1, column 2"), "{err}");
    assert_rejected(&format!("verbose = true\n{UPSTREAM}"), "verbose", "unknown key");
}

#[test]
fn unknown_server_key_is_rejected() {
    let err = assert_rejected(
        &format!("[server]\nlisten = [\"127.0.0.1:53\"]\nlistn = []\n{UPSTREAM}"),
        "server.listn",
        "unknown key (expected one of listen, allow, query_timeout_ms, \
         tcp_idle_timeout_ms, max_inflight, max_tcp_clients, max_tcp_per_client, \
         tcp_write_timeout_ms, refused, threads, user, local_zones)",
    );
    assert!(err.reason.ends_with("(line 3, column 1)"), "{err}");
}

#[test]
fn local_zones_are_on_by_default_and_a_boolean() {
    assert!(ok(UPSTREAM).server.local_zones, "on by default");
    assert!(!ok(&format!("[server]\nlocal_zones = false\n{UPSTREAM}")).server.local_zones);
    assert!(ok(&format!("[server]\nlocal_zones = true\n{UPSTREAM}")).server.local_zones);
    assert_rejected(
        &format!("[server]\nlocal_zones = \"no\"\n{UPSTREAM}"),
        "server.local_zones",
        "invalid type: string \"no\", expected a boolean",
    );
    assert!(ok(UPSTREAM).summary().contains("local_zones: on"));
    assert!(ok(&format!("[server]\nlocal_zones = false\n{UPSTREAM}")).summary().contains("local_zones: off"));
}

#[test]
fn unknown_key_in_other_sections_is_rejected() {
    assert_rejected(
        &format!("[cache]\nsize = 5\n{UPSTREAM}"),
        "cache.size",
        "unknown key (expected one of max_entries, max_bytes, min_ttl, max_ttl, negative_max_ttl, servfail_ttl, serve_stale, stale_max_s, stale_answer_after_ms, stale_recheck_ms, prefetch)",
    );
    assert_rejected(
        &format!("[connection]\nidle_timeout = 5\n{UPSTREAM}"),
        "connection.idle_timeout",
        "unknown key",
    );
    assert_rejected(
        &format!("[racing]\nattempt_delay = 5\n{UPSTREAM}"),
        "racing.attempt_delay",
        "unknown key",
    );
}

#[test]
fn unknown_upstream_key_is_rejected() {
    let text = format!(
        "{UPSTREAM}{}",
        upstream(&format!("name = \"b\"\naddresses = [\"192.0.2.2\"]\npin = [\"{PIN}\"]"))
    );
    assert_rejected(
        &text,
        "upstream[1].pin",
        "unknown key (expected one of name, addresses, resolv_conf, tls_name, pins, \
         ca_file, tls_port, plain_port, https_port, https_path, mode, domains, route_search, \
         captive_portal)",
    );
}

#[test]
fn unknown_key_in_inline_and_dotted_forms_is_rejected() {
    assert_rejected(&format!("server.listn = 1\n{UPSTREAM}"), "server.listn", "unknown key");
    assert_rejected(
        "upstream = [{ name = \"a\", addresses = [\"192.0.2.1\"], tls = \"x\" }]\n",
        "upstream[0].tls",
        "unknown key",
    );
}

// ----------------------------------------------- TOML syntax and types

#[test]
fn syntax_error_names_section_and_position() {
    let text = format!("{UPSTREAM}tls_port = = 853\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key, "upstream[0]", "{err}");
    assert!(err.reason.starts_with("TOML syntax error at line 6, column "), "{err}");
    assert!(err.to_string().starts_with(&format!("{FILE}: upstream[0]: TOML syntax error")));
}

#[test]
fn syntax_error_before_any_table_has_no_key() {
    let err = parse("listen = [\"127.0.0.1:53\"\n").unwrap_err();
    assert_eq!(err.key, "", "{err}");
    assert!(err.reason.starts_with("TOML syntax error at line "), "{err}");
    assert!(err.to_string().starts_with(&format!("{FILE}: TOML syntax error")));
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let err = parse(&format!("[server]\nmax_inflight = 1\nmax_inflight = 2\n{UPSTREAM}")).unwrap_err();
    assert_eq!(err.key, "server", "{err}");
    assert!(err.reason.contains("line 3"), "{err}");
}

#[test]
fn type_errors_name_the_key_and_position() {
    let err = assert_rejected(
        &format!("[server]\nlisten = \"127.0.0.1:53\"\n{UPSTREAM}"),
        "server.listen",
        "invalid type: string \"127.0.0.1:53\", expected an array",
    );
    assert!(err.reason.ends_with("(line 2, column 10)"), "{err}");
    assert_rejected(
        &format!("[server]\nquery_timeout_ms = \"4s\"\n{UPSTREAM}"),
        "server.query_timeout_ms",
        "invalid type: string \"4s\"",
    );
    assert_rejected(
        &format!("[server]\nlisten = [\"127.0.0.1:53\", 53]\n{UPSTREAM}"),
        "server.listen[1]",
        "invalid type: integer `53`",
    );
    assert_rejected(
        &upstream("name = \"a\"\naddresses = \"192.0.2.1\"\ntls_name = \"a.example\""),
        "upstream[0].addresses",
        "expected an array",
    );
    assert_rejected(
        &format!("server = 5\n{UPSTREAM}"),
        "server",
        "invalid type: integer `5`, expected a table",
    );
    assert_rejected(
        &format!("[server]\nmax_inflight = 1.5\n{UPSTREAM}"),
        "server.max_inflight",
        "invalid type: floating point `1.5`, expected an integer",
    );
}

#[test]
fn single_bracket_upstream_table_gets_a_hint() {
    assert_rejected(
        "[upstream]\nname = \"a\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\"\n",
        "upstream",
        "write each upstream as an [[upstream]] table",
    );
}

// ----------------------------------------------------- files and origin

#[test]
fn unreadable_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.file, path.display().to_string());
    assert_eq!(err.key, "");
    assert!(err.reason.starts_with("cannot read: "), "{err}");
    assert_eq!(err.to_string(), format!("{}: {}", path.display(), err.reason));
}

#[test]
fn load_reports_errors_with_the_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stubborn.toml");
    std::fs::write(&path, "[server]\nlistn = []\n").unwrap();
    let err = Config::load(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: server.listn: unknown key (expected one of listen, allow, query_timeout_ms, \
             tcp_idle_timeout_ms, max_inflight, max_tcp_clients, max_tcp_per_client, \
             tcp_write_timeout_ms, refused, threads, user, local_zones) (line 2, column 1)",
            path.display()
        )
    );
}

#[test]
fn explicit_path_is_loaded_by_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stubborn.toml");
    std::fs::write(&path, UPSTREAM).unwrap();
    let config = Config::resolve(Some(&path)).unwrap();
    assert_eq!(config.origin, ConfigOrigin::File(path.clone()));
    assert_eq!(config.origin.to_string(), path.display().to_string());
    assert!(Config::resolve(Some(&dir.path().join("missing.toml"))).is_err());
}

#[test]
fn embedded_origin_is_named_in_errors() {
    let err = Config::from_toml("", ConfigOrigin::Embedded).unwrap_err();
    assert_eq!(err.to_string(), "<embedded default>: upstream: at least one [[upstream]] is required");
}

// ------------------------------------------------ defaults and examples

#[test]
fn embedded_default_is_valid() {
    let config = Config::embedded_default();
    assert_eq!(config.origin, ConfigOrigin::Embedded);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(
        config.server.listen,
        vec!["127.0.0.1:53".parse::<SocketAddr>().unwrap(), "[::1]:53".parse::<SocketAddr>().unwrap()]
    );
    let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["uncensoreddns", "quad9"]);
    for u in &config.upstreams {
        assert_eq!(u.mode, Mode::Strict, "{}", u.name);
        assert!(u.pins.is_empty(), "{}", u.name);
        assert_eq!(u.ca, CaSource::WebPki, "{}", u.name);
        assert_eq!(u.tls_port, 853, "{}", u.name);
    }
    let ips =
        |i: usize| -> Vec<String> { config.upstreams[i].addresses.iter().map(ToString::to_string).collect() };
    assert_eq!(ips(0), ["89.233.43.71", "2a01:3a0:53:53::"]);
    assert_eq!(config.upstreams[0].tls_name.as_deref(), Some("unicast.uncensoreddns.org"));
    assert_eq!(ips(1), ["9.9.9.9", "149.112.112.112", "2620:fe::fe", "2620:fe::9"]);
    assert_eq!(config.upstreams[1].tls_name.as_deref(), Some("dns.quad9.net"));
    // DoH only where the operator documents it on the same addresses (Quad9's DoH stamps).
    assert_eq!(config.upstreams[0].https, None);
    let https = config.upstreams[1].https.as_ref().expect("quad9 serves DoH on its addresses");
    assert_eq!((https.port, https.path.as_str()), (443, "/dns-query"));
}

#[test]
fn example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/stubborn.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.upstreams.len(), 3);
    let modes: Vec<Mode> = config.upstreams.iter().map(|u| u.mode).collect();
    assert_eq!(modes, [Mode::Strict, Mode::Strict, Mode::Opportunistic]);
    assert_eq!(config.upstreams[1].pins.len(), 1);
    // Every value written in the example is the default.
    let defaults = ok(UPSTREAM);
    assert_eq!(config.server, defaults.server);
    assert_eq!(config.cache, defaults.cache);
    assert_eq!(config.connection, defaults.connection);
    assert_eq!(config.racing, defaults.racing);
    // A single pin and an opportunistic upstream: one warning each.
    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
    assert!(config.warnings[0].starts_with("upstream[1].pins:"));
    assert!(config.warnings[1].starts_with("upstream[2]:"));
}

#[test]
fn example_config_commented_resolv_conf_upstream_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/stubborn.toml");
    let example = std::fs::read_to_string(path).unwrap();
    let (_dir, resolv) = resolv_conf_file("nameserver 192.0.2.1\n");
    // Uncomment the block that starts at "# [[upstream]]".
    let lines: Vec<&str> = example.lines().collect();
    let start = lines.iter().position(|l| *l == "# [[upstream]]").expect("a commented resolv_conf example");
    let block: Vec<String> = lines[start..]
        .iter()
        .take_while(|l| l.starts_with("# "))
        .map(|l| l["# ".len()..].replace("/etc/resolv.conf", &resolv.display().to_string()))
        .collect();
    assert!(block.iter().any(|l| l.starts_with("resolv_conf = ")), "{block:?}");
    let config = ok(&format!("{example}\n{}\n", block.join("\n")));
    let u = config.upstreams.last().unwrap();
    assert_eq!(u.name, "resolv.conf");
    assert_eq!(u.mode, Mode::Opportunistic);
    assert_eq!(u.source, AddressSource::ResolvConf(resolv.clone()));
    assert_eq!(u.addresses, ips(&["192.0.2.1"]));
}

#[test]
fn defaults_apply_when_sections_are_omitted() {
    let config = ok(UPSTREAM);
    assert_eq!(config.origin, ConfigOrigin::File(PathBuf::from(FILE)));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let s = &config.server;
    assert_eq!(
        s.listen,
        vec!["127.0.0.1:53".parse::<SocketAddr>().unwrap(), "[::1]:53".parse::<SocketAddr>().unwrap()]
    );
    let allow: Vec<String> = s.allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(s.query_timeout, Duration::from_millis(4000));
    assert_eq!(s.tcp_idle_timeout, Duration::from_millis(10_000));
    assert_eq!(s.max_inflight, 4096);
    assert_eq!(config.cache.max_entries, 10_000);
    let c = &config.connection;
    assert_eq!(c.idle_timeout, Duration::from_millis(10_000));
    assert_eq!(c.max_inflight, 256);
    let r = &config.racing;
    assert_eq!(r.attempt_delay, Duration::from_millis(250));
    assert_eq!(r.attempt_timeout, Duration::from_millis(5000));
    assert_eq!(r.plain_fallback_delay, Duration::from_millis(500));
    assert_eq!(r.max_concurrent_attempts, 4);
    assert_eq!(r.race_timeout, Duration::from_millis(10_000));
    let u = &config.upstreams[0];
    assert_eq!(u.name, "a");
    assert_eq!(u.addresses, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(u.tls_name.as_deref(), Some("a.example"));
    assert!(u.pins.is_empty());
    assert_eq!(u.ca, CaSource::WebPki);
    assert_eq!((u.tls_port, u.plain_port), (853, 53));
    assert_eq!(u.mode, Mode::Strict);
    assert_eq!(u.source, AddressSource::Static);
}

#[test]
fn keys_omitted_within_a_section_take_defaults() {
    let config = ok(&format!("[server]\nmax_inflight = 10\n[racing]\nrace_timeout_ms = 2000\n{UPSTREAM}"));
    assert_eq!(config.server.max_inflight, 10);
    assert_eq!(config.server.query_timeout, Duration::from_millis(4000));
    assert_eq!(config.server.listen.len(), 2);
    assert_eq!(config.racing.race_timeout, Duration::from_millis(2000));
    assert_eq!(config.racing.attempt_delay, Duration::from_millis(250));
}

#[test]
fn attempt_delay_is_clamped_with_a_warning() {
    for (value, clamped) in [("5", 10), ("0", 10), ("-3", 10), ("5000", 2000)] {
        let config = ok(&format!("[racing]\nattempt_delay_ms = {value}\n{UPSTREAM}"));
        assert_eq!(config.racing.attempt_delay, Duration::from_millis(clamped), "{value}");
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        let warning = &config.warnings[0];
        assert!(warning.starts_with("racing.attempt_delay_ms: "), "{warning}");
        assert!(warning.contains(&format!("using {clamped} ms")), "{warning}");
        assert!(warning.contains("RFC 8305"), "{warning}");
    }
    for (value, kept) in [("10", 10), ("2000", 2000)] {
        let config = ok(&format!("[racing]\nattempt_delay_ms = {value}\n{UPSTREAM}"));
        assert_eq!(config.racing.attempt_delay, Duration::from_millis(kept));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }
}

#[test]
fn single_pin_warns_about_a_backup_pin() {
    let config = ok(&upstream(&format!("name = \"a\"\naddresses = [\"192.0.2.1\"]\npins = [\"{PIN}\"]")));
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].contains("backup pin"));
}

#[test]
fn summary_shows_auth_ports_and_warnings() {
    let text = format!(
        "{}{}",
        upstream(&format!(
            "name = \"pinned\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"p.example\"\n\
             pins = [\"{PIN}\"]"
        )),
        upstream(
            "name = \"lan\"\naddresses = [\"192.168.1.1\"]\nmode = \"opportunistic\"\n\
             plain_port = 5353"
        )
    );
    let summary = ok(&text).summary();
    for line in [
        &format!("config: {FILE}"),
        "listen: 127.0.0.1:53, [::1]:53 (UDP and TCP)",
        "allow: 127.0.0.0/8, ::1/128",
        "upstream \"pinned\":",
        "  addresses: 192.0.2.1",
        "  ports: tls 853",
        "  mode: strict",
        "  auth: pins: 1 (SNI p.example)",
        "upstream \"lan\":",
        "  ports: tls 853, plain 5353",
        "  mode: opportunistic",
        "  auth: none (opportunistic: encrypted but unauthenticated)",
        "warning: upstream[0].pins: only one pin",
        "warning: upstream[1]: upstream \"lan\" is opportunistic",
    ] {
        assert!(summary.lines().any(|l| l.starts_with(line)), "missing {line:?} in:\n{summary}");
    }
}
