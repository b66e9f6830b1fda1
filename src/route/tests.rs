use hickory_proto::rr::Name;
use proptest::prelude::*;

use super::{RouteTable, domain_key};

fn table(entries: &[(&str, usize)]) -> RouteTable {
    RouteTable::new(entries.iter().map(|(d, r)| (domain_key(d).expect("a domain"), *r)))
}

fn route(t: &RouteTable, name: &str) -> Option<usize> {
    t.route(&Name::from_ascii(name).unwrap())
}

#[test]
fn a_domain_answers_itself_and_the_names_under_it_and_nothing_else() {
    let t = table(&[("corp.example", 1)]);
    assert_eq!(route(&t, "corp.example."), Some(1));
    assert_eq!(route(&t, "corp.example"), Some(1), "with or without the root dot");
    assert_eq!(route(&t, "a.b.corp.example."), Some(1));
    assert_eq!(route(&t, "xcorp.example."), None, "by label, not by string suffix");
    assert_eq!(route(&t, "example."), None, "above the domain");
    assert_eq!(route(&t, "corp.example.net."), None);
    assert_eq!(route(&t, "."), None);
}

#[test]
fn names_compare_without_regard_to_ascii_case() {
    let t = table(&[("Corp.EXAMPLE.", 3)]);
    assert_eq!(route(&t, "www.CORP.example."), Some(3));
}

#[test]
fn the_longest_matching_domain_wins() {
    let t = table(&[("example", 1), ("corp.example", 2), ("lab.corp.example", 3), ("10.in-addr.arpa", 4)]);
    assert_eq!(route(&t, "www.example."), Some(1));
    assert_eq!(route(&t, "www.corp.example."), Some(2));
    assert_eq!(route(&t, "host.lab.corp.example."), Some(3));
    assert_eq!(route(&t, "lab.corp.example."), Some(3));
    assert_eq!(route(&t, "4.3.2.10.in-addr.arpa."), Some(4));
    assert_eq!(route(&t, "4.3.2.11.in-addr.arpa."), None);
}

#[test]
fn an_empty_table_routes_nothing() {
    let t = RouteTable::default();
    assert!(t.is_empty());
    assert_eq!(route(&t, "corp.example."), None);
}

#[test]
fn the_root_and_malformed_text_are_not_domains() {
    assert!(domain_key(".").is_none());
    assert!(domain_key("").is_none());
    assert!(domain_key("a..b").is_none());
    assert!(domain_key(&"a".repeat(64)).is_none(), "a label over 63 octets");
}

/// A label from a small alphabet, so that generated names often share suffixes.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("corp".to_string()), "[a-c]{1,3}"]
}

fn name_labels() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(label(), 1..6)
}

proptest! {
    /// The table agrees with the definition: the route of the longest listed domain whose
    /// labels are a suffix of the name's (first listed wins a duplicate).
    #[test]
    fn the_route_is_that_of_the_longest_listed_suffix(
        domains in prop::collection::vec(name_labels(), 1..8),
        name in name_labels(),
        upper in any::<bool>(),
    ) {
        let entries: Vec<(String, usize)> =
            domains.iter().enumerate().map(|(i, d)| (d.join("."), i)).collect();
        let t = RouteTable::new(entries.iter().map(|(d, r)| (domain_key(d).unwrap(), *r)));
        let mut expected: Option<(usize, usize)> = None; // (labels, route)
        for (i, d) in domains.iter().enumerate() {
            let covers = d.len() <= name.len() && name[name.len() - d.len()..] == d[..];
            // Two covering domains of one length are the same domain: the first listed stays.
            let better = expected.is_none_or(|(n, _)| d.len() > n);
            if covers && better {
                expected = Some((d.len(), i));
            }
        }
        let text = name.join(".");
        let text = if upper { text.to_ascii_uppercase() } else { text };
        prop_assert_eq!(route(&t, &text), expected.map(|(_, r)| r));
    }
}
