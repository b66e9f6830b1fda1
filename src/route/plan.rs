//! From the configured upstreams to routes: each domain goes to the set of upstreams that
//! list it, and the domains with the same set share one route (one set of connections,
//! raced and hedged among themselves).

use super::captive::CHECK_NAMES;
use crate::config::{Mode, UpstreamConfig};

/// One route: the domains it answers and the upstreams (indexes in the config) that
/// answer them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    pub domains: Vec<String>,
    pub upstreams: Vec<usize>,
    /// Its upstreams are `mode = "plain"` (the validator keeps a route all plain or none).
    pub plain: bool,
    /// It also answers the search domains of its one upstream's resolv.conf
    /// (`route_search`), which change with the file.
    pub search: bool,
    /// The connectivity-check names of a `captive_portal` upstream: used only while the
    /// default set has no connection up, and never cached ([`super::captive`]).
    pub captive: bool,
}

/// The routes of a config, in the order their first domain appears.
pub fn plan(upstreams: &[UpstreamConfig]) -> Vec<RoutePlan> {
    let mut routes: Vec<RoutePlan> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for u in upstreams {
        for domain in &u.domains {
            if seen.contains(&domain.as_str()) {
                continue;
            }
            seen.push(domain);
            let set: Vec<usize> = upstreams
                .iter()
                .enumerate()
                .filter(|(_, o)| o.domains.contains(domain))
                .map(|(i, _)| i)
                .collect();
            match routes.iter_mut().find(|r| r.upstreams == set) {
                Some(route) => route.domains.push(domain.clone()),
                None => routes.push(RoutePlan {
                    domains: vec![domain.clone()],
                    plain: set.iter().all(|&i| upstreams[i].mode == Mode::Plain),
                    upstreams: set,
                    search: false,
                    captive: false,
                }),
            }
        }
    }
    // A route_search upstream answers its file's search domains alone: with the route of
    // the domains only it lists, or a route of its own.
    for (i, u) in upstreams.iter().enumerate().filter(|(_, u)| u.route_search) {
        match routes.iter_mut().find(|r| r.upstreams == [i]) {
            Some(route) => route.search = true,
            None => routes.push(RoutePlan {
                domains: Vec::new(),
                upstreams: vec![i],
                plain: u.mode == Mode::Plain,
                search: true,
                captive: false,
            }),
        }
    }
    // A captive_portal upstream: a route of its own, for the connectivity checks only.
    for (i, u) in upstreams.iter().enumerate().filter(|(_, u)| u.captive_portal) {
        routes.push(RoutePlan {
            domains: CHECK_NAMES.iter().map(|d| d.to_string()).collect(),
            upstreams: vec![i],
            plain: u.mode == Mode::Plain,
            search: false,
            captive: true,
        });
    }
    routes
}

/// The default set: the upstreams without domains or route_search, which answer every
/// name no route claims.
pub fn default_set(upstreams: &[UpstreamConfig]) -> Vec<usize> {
    upstreams.iter().enumerate().filter(|(_, u)| !u.is_route_only()).map(|(i, _)| i).collect()
}

impl RoutePlan {
    /// The route's name in logs and metrics: its domains, and `search@UPSTREAM` for the
    /// search domains of an upstream's resolv.conf.
    pub fn name(&self, upstreams: &[UpstreamConfig]) -> String {
        if self.captive {
            return format!("captive@{}", upstreams[self.upstreams[0]].name);
        }
        let mut parts = self.domains.clone();
        if self.search {
            parts.push(format!("search@{}", upstreams[self.upstreams[0]].name));
        }
        parts.join(",")
    }
}
