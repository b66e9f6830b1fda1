//! Per-domain routes (split DNS): which upstreams answer a name.
//!
//! An `[[upstream]]` with `domains = [...]` answers exactly those domains and the names
//! under them, and nothing else; upstreams without `domains` form the default set. The
//! longest matching domain over all upstreams wins; upstreams that list the same domain
//! share it (and race and hedge among themselves, as the default set does). A route is
//! consulted before the locally-served names (`crate::local`), so a route can claim
//! `10.in-addr.arpa` or `home.arpa`.
//!
//! Pure: [`RouteTable`] maps a name to a route (an index into the caller's targets) by
//! longest suffix, one hash lookup per label of the name, on the miss path only. Names
//! compare as DNS names do: by label, ASCII case-insensitively (RFC 4343 §3), so
//! `xcorp.example` is not under `corp.example`.

use std::collections::HashMap;

use hickory_proto::rr::Name;

pub mod captive;
mod plan;
mod search;
mod targets;
#[cfg(test)]
mod tests;

pub use plan::{RoutePlan, default_set, plan};
pub use search::{parse_search, read_search};
pub use targets::{Route, Routes, Upstream, Via};

/// Which route answers a name: an index into the route targets the table was built for.
pub type RouteId = usize;

/// Domains to routes; built once per configuration generation (and again when a
/// resolv.conf's search domains change).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// A domain's labels, lowercase, in wire form without the root label, to its route.
    by_domain: HashMap<Box<[u8]>, RouteId>,
    /// The most labels of any domain: longer suffixes of a name cannot match.
    max_labels: usize,
}

/// A domain as routes key it: lowercase wire labels without the root. None for text that
/// is not a domain name of at least one label (the validator reports why).
pub fn domain_key(domain: &str) -> Option<Box<[u8]>> {
    let name = Name::from_ascii(domain).ok()?;
    if name.num_labels() == 0 {
        return None;
    }
    Some(wire_labels(name.iter()))
}

fn wire_labels<'a>(labels: impl Iterator<Item = &'a [u8]>) -> Box<[u8]> {
    let mut key = Vec::with_capacity(64);
    for label in labels {
        key.push(label.len() as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    key.into_boxed_slice()
}

impl RouteTable {
    /// A table of `(domain key, route)` pairs ([`domain_key`]). A domain listed twice keeps
    /// its first route: the caller merges upstreams sharing a domain into one route first.
    pub fn new(entries: impl IntoIterator<Item = (Box<[u8]>, RouteId)>) -> Self {
        let mut by_domain = HashMap::new();
        let mut max_labels = 0;
        for (key, route) in entries {
            max_labels = max_labels.max(label_count(&key));
            by_domain.entry(key).or_insert(route);
        }
        Self { by_domain, max_labels }
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// The route of `name`: that of the longest listed domain equal to it or above it;
    /// None when no domain covers it (the default set answers).
    pub fn route(&self, name: &Name) -> Option<RouteId> {
        if self.by_domain.is_empty() {
            return None;
        }
        let labels: Vec<&[u8]> = name.iter().collect();
        // Only the last `max_labels` labels can match; the longest suffix is tried first.
        let first = labels.len().saturating_sub(self.max_labels);
        let key = wire_labels(labels[first..].iter().copied());
        let mut at = 0;
        while at < key.len() {
            if let Some(&route) = self.by_domain.get(&key[at..]) {
                return Some(route);
            }
            at += 1 + usize::from(key[at]);
        }
        None
    }
}

fn label_count(key: &[u8]) -> usize {
    let (mut at, mut count) = (0, 0);
    while at < key.len() {
        at += 1 + usize::from(key[at]);
        count += 1;
    }
    count
}
