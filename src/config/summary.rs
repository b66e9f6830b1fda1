//! The human summary of a [`Config`] that `stubborn check` prints.

use std::time::Duration;

use super::{AddressSource, Config, ENV_ALLOW, ENV_LISTEN, Mode};

impl Config {
    /// A multi-line human summary, for `stubborn check`.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;

        let join = |items: Vec<String>| items.join(", ");
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        let mut out = String::new();
        let s = &self.server;
        let _ = writeln!(out, "config: {}", self.origin);
        let _ = writeln!(
            out,
            "listen: {} (UDP and TCP{})",
            join(s.listen.iter().map(ToString::to_string).collect()),
            if s.listen_from_env { format!("; from {ENV_LISTEN}") } else { String::new() }
        );
        let _ = writeln!(
            out,
            "allow: {}{}",
            join(s.allow.iter().map(ToString::to_string).collect()),
            if s.allow_from_env { format!(" (from {ENV_ALLOW})") } else { String::new() }
        );
        let _ = writeln!(
            out,
            "server: query_timeout {}, tcp_idle_timeout {}, max_inflight {}",
            ms(s.query_timeout),
            ms(s.tcp_idle_timeout),
            s.max_inflight
        );
        let _ = writeln!(
            out,
            "local_zones: {}",
            if s.local_zones {
                "on (answered here: localhost, invalid, local, onion, home.arpa, the RFC 6303 reverse zones)"
            } else {
                "off (every name is forwarded)"
            }
        );
        let k = &self.cache;
        if k.max_entries == 0 || k.max_bytes == 0 {
            let _ = writeln!(out, "cache: disabled");
        } else {
            let _ = writeln!(
                out,
                "cache: max_entries {}, max_bytes {}, ttl {}..={} s, negative <= {} s, servfail {} s, serve_stale {}, prefetch {}",
                k.max_entries,
                k.max_bytes,
                k.min_ttl,
                k.max_ttl,
                k.negative_max_ttl,
                k.servfail_ttl,
                if k.serve_stale {
                    format!(
                        "on (after {}, recheck {}, up to {} s)",
                        ms(k.stale_answer_after),
                        ms(k.stale_recheck),
                        k.stale_max.as_secs()
                    )
                } else {
                    "off".into()
                },
                if k.prefetch { "on" } else { "off" },
            );
        }
        let c = &self.connection;
        let _ = writeln!(
            out,
            "connection: idle_timeout {}, max_inflight {} per connection",
            ms(c.idle_timeout),
            c.max_inflight
        );
        let h = &self.hedging;
        if h.enabled {
            let _ = writeln!(
                out,
                "hedging: after {}..={} (adaptive), warm spare {}",
                ms(h.floor),
                ms(h.cap),
                if h.spare { "on" } else { "off" }
            );
        } else {
            let _ = writeln!(out, "hedging: off, warm spare {}", if h.spare { "on" } else { "off" });
        }
        let _ = writeln!(
            out,
            "health: a connection is dead after {} unanswered queries or {} of silence",
            self.health.dead_after_unanswered,
            ms(self.health.dead_after_silence)
        );
        let r = &self.racing;
        let _ = writeln!(
            out,
            "racing: attempt_delay {}, attempt_timeout {}, plain_fallback_delay {}, \
             max_concurrent_attempts {}, race_timeout {}",
            ms(r.attempt_delay),
            ms(r.attempt_timeout),
            ms(r.plain_fallback_delay),
            r.max_concurrent_attempts,
            ms(r.race_timeout)
        );
        match self.metrics.listen {
            Some(addr) => {
                let _ = writeln!(out, "metrics: http://{addr}/metrics");
            }
            None => {
                let _ = writeln!(out, "metrics: off");
            }
        }
        let _ = writeln!(out, "log: queries {}", if self.log.queries { "on" } else { "off" });
        for u in &self.upstreams {
            let _ = writeln!(out, "upstream {:?}:", u.name);
            let addresses = join(u.addresses.iter().map(ToString::to_string).collect());
            match &u.source {
                AddressSource::Static => {
                    let _ = writeln!(out, "  addresses: {addresses}");
                }
                AddressSource::ResolvConf(path) => {
                    let addresses = if addresses.is_empty() { "none yet".to_owned() } else { addresses };
                    let _ = writeln!(
                        out,
                        "  addresses: {addresses} (nameservers from {}, re-read when it changes)",
                        path.display()
                    );
                }
            }
            let https = u.https.as_ref().map_or(String::new(), |h| format!(", https {} {}", h.port, h.path));
            match u.mode {
                Mode::Strict => {
                    let _ = writeln!(out, "  ports: tls {}{https}", u.tls_port);
                }
                Mode::Opportunistic => {
                    let _ = writeln!(out, "  ports: tls {}{https}, plain {}", u.tls_port, u.plain_port);
                }
                Mode::Plain => {
                    let _ = writeln!(out, "  ports: plain {} (UDP; TCP when truncated)", u.plain_port);
                }
            }
            if !u.domains.is_empty() {
                let _ = writeln!(out, "  domains: {} (a route: these names only)", u.domains.join(", "));
            }
            let _ = writeln!(out, "  mode: {}", u.mode);
            let _ = writeln!(out, "  auth: {}", u.auth_summary());
        }
        let _ = writeln!(
            out,
            "routes (longest matching domain first; then the locally-served names; then default):"
        );
        for route in crate::route::plan(&self.upstreams) {
            let names: Vec<&str> = route.upstreams.iter().map(|&i| self.upstreams[i].name.as_str()).collect();
            let how = if route.plain { " (plain)" } else { "" };
            let mut domains = route.domains.join(", ");
            if route.captive {
                domains = "the connectivity checks, while no default upstream is connected".into();
            }
            if route.search {
                let sep = if domains.is_empty() { "" } else { ", " };
                domains = format!("{domains}{sep}the search domains of its resolv.conf");
            }
            let _ = writeln!(out, "  {domains} -> {}{how}", names.join(", "));
        }
        let defaults: Vec<&str> = crate::route::default_set(&self.upstreams)
            .iter()
            .map(|&i| self.upstreams[i].name.as_str())
            .collect();
        let _ = writeln!(out, "  default -> {}", defaults.join(", "));
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
}
