//! `[[upstream]] domains` and `mode = "plain"` (per-domain routes, issue 15 §2): what a
//! config may say, and the error for what it may not.

mod config_support;

use config_support::{PIN, UPSTREAM, assert_rejected, ok, upstream};
use stubborn::{
    config::Mode,
    route::{RoutePlan, plan},
};

fn pinned(name: &str, extra: &str) -> String {
    upstream(&format!("name = \"{name}\"\naddresses = [\"192.0.2.9\"]\npins = [\"{PIN}\"]\n{extra}"))
}

fn plain(name: &str, extra: &str) -> String {
    upstream(&format!("name = \"{name}\"\naddresses = [\"10.8.0.1\"]\nmode = \"plain\"\n{extra}"))
}

#[test]
fn domains_are_lowercased_without_the_trailing_dot() {
    let config =
        ok(&format!("{UPSTREAM}{}", pinned("vpn", "domains = [\"Corp.Example.\", \"10.in-addr.arpa\"]")));
    assert_eq!(config.upstreams[1].domains, vec!["corp.example", "10.in-addr.arpa"]);
    assert!(config.upstreams[0].domains.is_empty(), "no domains: the default set");
}

#[test]
fn bad_domains_are_rejected_with_their_index() {
    let at = |d: &str| format!("{UPSTREAM}{}", pinned("vpn", &format!("domains = [\"ok.example\", {d:?}]")));
    assert_rejected(&at("."), "upstream[1].domains[1]", "is the root, every name");
    assert_rejected(&at("a..b"), "upstream[1].domains[1]", "is not a domain name");
    assert_rejected(&at(&"x".repeat(64)), "upstream[1].domains[1]", "is not a domain name");
    assert_rejected(&at("has space.example"), "upstream[1].domains[1]", "is not a domain name");
    assert_rejected(
        &at("OK.example."),
        "upstream[1].domains[1]",
        "duplicate domain \"ok.example\" (also upstream[1].domains[0])",
    );
    let empty = format!("{UPSTREAM}{}", pinned("vpn", "domains = []"));
    assert_rejected(&empty, "upstream[1].domains", "empty: list the domains");
}

#[test]
fn a_default_set_is_required() {
    let text = pinned("vpn", "domains = [\"corp.example\"]");
    assert_rejected(&text, "upstream", "at least one without them");
}

#[test]
fn plain_needs_domains_and_nothing_that_authenticates() {
    assert_rejected(
        &format!("{UPSTREAM}{}", plain("router", "")),
        "upstream[1].mode",
        "\"plain\" needs domains",
    );
    for (extra, key) in
        [(format!("pins = [\"{PIN}\"]"), "pins"), ("tls_name = \"router.example\"".to_string(), "tls_name")]
    {
        let text = format!("{UPSTREAM}{}", plain("router", &format!("domains = [\"lan\"]\n{extra}")));
        assert_rejected(&text, &format!("upstream[1].{key}"), "is plain");
    }
    let config = ok(&format!("{UPSTREAM}{}", plain("router", "domains = [\"lan\"]\nplain_port = 5353")));
    assert_eq!(config.upstreams[1].mode, Mode::Plain);
    assert_eq!(config.upstreams[1].plain_port, 5353);
    assert_eq!(
        config.upstreams[1].auth_summary(),
        "none (plain: clear text, neither encrypted nor authenticated)"
    );
    assert!(
        config.warnings.iter().any(|w| w.contains("CLEAR TEXT") && w.contains("lan") && w.contains("5353")),
        "a plain route is logged at start: {:?}",
        config.warnings
    );
}

#[test]
fn upstreams_sharing_a_domain_are_all_plain_or_none() {
    let text = format!(
        "{UPSTREAM}{}{}",
        pinned("vpn", "domains = [\"corp.example\"]"),
        plain("router", "domains = [\"corp.example\"]")
    );
    assert_rejected(&text, "upstream[2].domains[0]", "must all be plain or all encrypted");
}

#[test]
fn the_plan_groups_domains_by_the_upstreams_that_share_them() {
    let text = format!(
        "{UPSTREAM}{}{}{}",
        pinned("vpn1", "domains = [\"corp.example\", \"lab.example\"]"),
        upstream(&format!(
            "name = \"vpn2\"\naddresses = [\"192.0.2.10\"]\npins = [\"{PIN}\"]\ndomains = [\"corp.example\"]"
        )),
        plain("router", "domains = [\"home.arpa\", \"lan\"]"),
    );
    let config = ok(&text);
    let route = |domains: &[&str], upstreams: &[usize], plain: bool| RoutePlan {
        domains: domains.iter().map(|d| d.to_string()).collect(),
        upstreams: upstreams.to_vec(),
        plain,
        search: false,
        captive: false,
    };
    assert_eq!(
        plan(&config.upstreams),
        vec![
            route(&["corp.example"], &[1, 2], false),
            route(&["lab.example"], &[1], false),
            route(&["home.arpa", "lan"], &[3], true),
        ]
    );
    let summary = config.summary();
    assert!(summary.contains("  corp.example -> vpn1, vpn2\n"), "{summary}");
    assert!(summary.contains("  home.arpa, lan -> router (plain)\n"), "{summary}");
    assert!(summary.contains("  default -> a\n"), "{summary}");
}

#[test]
fn route_search_needs_resolv_conf_and_makes_the_upstream_a_route() {
    let text = format!("{UPSTREAM}{}", pinned("vpn", "route_search = true"));
    assert_rejected(&text, "upstream[1].route_search", "needs resolv_conf");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resolv.conf");
    std::fs::write(&file, "nameserver 10.8.0.1\nsearch corp.example\n").unwrap();
    let vpn =
        upstream(&format!("resolv_conf = \"{}\"\nmode = \"plain\"\nroute_search = true", file.display()));
    let config = ok(&format!("{UPSTREAM}{vpn}"));
    assert!(config.upstreams[1].route_search);
    assert_eq!(stubborn::route::default_set(&config.upstreams), vec![0]);
    let plans = plan(&config.upstreams);
    assert_eq!(plans.len(), 1);
    assert!(plans[0].search && plans[0].plain && plans[0].domains.is_empty());
    assert_eq!(plans[0].name(&config.upstreams), "search@resolv.conf");
    assert!(config.summary().contains("  the search domains of its resolv.conf -> resolv.conf (plain)\n"));
    // Alone, it leaves no default set.
    assert_rejected(&vpn, "upstream", "at least one without them");
}

#[test]
fn captive_portal_needs_resolv_conf_and_routes_the_connectivity_checks() {
    let text = format!("{UPSTREAM}{}", pinned("hotel", "captive_portal = true"));
    assert_rejected(
        &text,
        "upstream[1].captive_portal",
        "a captive portal is found through the network's own",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resolv.conf");
    std::fs::write(&file, "nameserver 10.0.0.1\n").unwrap();
    let hotel =
        upstream(&format!("resolv_conf = \"{}\"\nmode = \"plain\"\ncaptive_portal = true", file.display()));
    let config = ok(&format!("{UPSTREAM}{hotel}"));
    assert_eq!(stubborn::route::default_set(&config.upstreams), vec![0], "not one of the default set");
    let plans = plan(&config.upstreams);
    assert_eq!(plans.len(), 1);
    assert!(plans[0].captive && plans[0].plain);
    assert!(plans[0].domains.iter().any(|d| d == "detectportal.firefox.com"));
    assert!(plans[0].domains.iter().any(|d| d == "captive.apple.com"));
    assert_eq!(plans[0].name(&config.upstreams), "captive@resolv.conf");
    assert!(config.summary().contains(
        "  the connectivity checks, while no default upstream is connected -> resolv.conf (plain)\n"
    ));
    // Every name a check uses is a valid route domain.
    for name in stubborn::route::captive::CHECK_NAMES {
        assert!(stubborn::route::domain_key(name).is_some(), "{name}");
    }
}
