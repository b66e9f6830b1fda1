//! From the configured upstreams to routes: each domain goes to the set of upstreams that
//! list it, and the domains with the same set share one route (one set of connections,
//! raced and hedged among themselves).

use crate::config::{Mode, UpstreamConfig};

/// One route: the domains it answers and the upstreams (indexes in the config) that
/// answer them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    pub domains: Vec<String>,
    pub upstreams: Vec<usize>,
    /// Its upstreams are `mode = "plain"` (the validator keeps a route all plain or none).
    pub plain: bool,
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
                }),
            }
        }
    }
    routes
}

/// The default set: the upstreams without domains, which answer every name no route
/// claims.
pub fn default_set(upstreams: &[UpstreamConfig]) -> Vec<usize> {
    upstreams.iter().enumerate().filter(|(_, u)| u.domains.is_empty()).map(|(i, _)| i).collect()
}
