//! `[[upstream]] domains` (per-domain routes, [`crate::route`]) and `mode = "plain"`,
//! which only a route may use.

use std::collections::HashMap;

use super::super::{AddressSource, CaSource, ConfigError, Mode, UpstreamConfig};
use super::Validator;
use crate::route::domain_key;

impl Validator {
    /// The domains an upstream answers: each a DNS name below the root, lowercase, once.
    pub(super) fn domains(&self, at: &str, raw: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
        let Some(raw) = raw else { return Ok(Vec::new()) };
        if raw.is_empty() {
            return Err(self.error(
                format!("{at}.domains"),
                "empty: list the domains this upstream answers, or remove domains to make \
                 it one of the default set, which answers every other name",
            ));
        }
        let mut out: Vec<String> = Vec::with_capacity(raw.len());
        for (j, text) in raw.iter().enumerate() {
            let key = format!("{at}.domains[{j}]");
            let trimmed = text.trim_end_matches('.');
            if trimmed.is_empty() {
                return Err(self.error(
                    key,
                    format!(
                        "{text:?} is the root, every name: an upstream for every name is one \
                         without domains (the default set)"
                    ),
                ));
            }
            if domain_key(trimmed).is_none() || trimmed.contains(char::is_whitespace) {
                return Err(self.error(
                    key,
                    format!(
                        "{text:?} is not a domain name (labels of 1 to 63 octets separated \
                         by dots, at most 253 in all)"
                    ),
                ));
            }
            let domain = trimmed.to_ascii_lowercase();
            if let Some(first) = out.iter().position(|d| *d == domain) {
                return Err(
                    self.error(key, format!("duplicate domain {domain:?} (also {at}.domains[{first}])"))
                );
            }
            out.push(domain);
        }
        Ok(out)
    }

    /// `mode = "plain"`: a route's resolver that speaks only cleartext DNS. Never part of
    /// the default set, never with anything that would suggest it is authenticated.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plain_upstream(
        &mut self,
        at: &str,
        name: &str,
        domains: &[String],
        route_search: bool,
        pins: &[String],
        tls_name: &Option<String>,
        ca: &CaSource,
        plain_port: u16,
    ) -> Result<(), ConfigError> {
        if domains.is_empty() && !route_search {
            return Err(self.error(
                format!("{at}.mode"),
                "\"plain\" needs domains (or route_search): only a route (a VPN's or a router's resolver for \
                 its own names) may be cleartext; the default set answers every other name \
                 and is always encrypted. Add domains = [...], or use strict or opportunistic",
            ));
        }
        let authenticating = [
            ("pins", !pins.is_empty()),
            ("tls_name", tls_name.is_some()),
            ("ca_file", matches!(ca, CaSource::File(_))),
        ];
        if let Some((key, _)) = authenticating.iter().find(|(_, set)| *set) {
            return Err(self.error(
                format!("{at}.{key}"),
                format!(
                    "upstream {name:?} is plain: nothing is encrypted or authenticated, so \
                     {key} would do nothing; remove it, or use mode strict"
                ),
            ));
        }
        let mut names = domains.to_vec();
        if route_search {
            names.push("its resolv.conf's search domains or the connectivity checks".into());
        }
        self.warnings.push(format!(
            "{at}: upstream {name:?} is plain: queries for {} go in CLEAR TEXT (UDP, and TCP \
             when truncated) to port {plain_port}",
            names.join(", ")
        ));
        Ok(())
    }

    /// `route_search` and `captive_portal`: both are about the network's own resolver,
    /// the one its resolv.conf names.
    pub(super) fn needs_resolv_conf(
        &self,
        at: &str,
        key: &str,
        raw: bool,
        source: &AddressSource,
    ) -> Result<bool, ConfigError> {
        if raw && *source == AddressSource::Static {
            let why = if key == "route_search" {
                "needs resolv_conf: the search domains routed are those of the upstream's \
                 resolv.conf file; with addresses, list the domains in domains"
            } else {
                "needs resolv_conf: a captive portal is found through the network's own \
                 resolver, the one its resolv.conf names"
            };
            return Err(self.error(format!("{at}.{key}"), why));
        }
        Ok(raw)
    }

    /// Across upstreams: a default set exists, and the upstreams sharing a domain are all
    /// plain or none of them (a route is raced as one set, over one kind of transport).
    pub(super) fn routes(&self, upstreams: &[UpstreamConfig]) -> Result<(), ConfigError> {
        if upstreams.iter().all(UpstreamConfig::is_route_only) {
            return Err(self.error(
                "upstream",
                "every upstream has domains (or route_search, captive_portal): at least one \
                 without them is needed to answer every other name (the default set)",
            ));
        }
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        for (i, u) in upstreams.iter().enumerate() {
            for (j, domain) in u.domains.iter().enumerate() {
                let Some(&first) = first_of.get(domain.as_str()) else {
                    first_of.insert(domain, i);
                    continue;
                };
                if (upstreams[first].mode == Mode::Plain) != (u.mode == Mode::Plain) {
                    return Err(self.error(
                        format!("upstream[{i}].domains[{j}]"),
                        format!(
                            "{domain:?} is also a domain of upstream[{first}] ({:?}, {}), and \
                             upstreams sharing a domain must all be plain or all encrypted",
                            upstreams[first].name, upstreams[first].mode
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
