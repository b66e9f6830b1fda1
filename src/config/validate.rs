//! Validation: the raw schema in, a [`Config`] the rest of the daemon can
//! trust out, or the first [`ConfigError`] with its key path.
//!
//! Every range, every security rule (RFC 7858 §3.1 ports, RFC 8310 strict
//! authentication) and every cross-field check lives here, so the other
//! modules never re-check their settings. The only I/O is reading a
//! configured `ca_file` once, to fail at startup rather than at the first
//! connection, and a `resolv_conf` file for its nameservers. `[server]` is
//! in `validate/server.rs`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, ServerName};

use super::operator;
use super::schema::defaults;
use super::schema::{RawCache, RawConfig, RawConnection, RawHealth, RawHedging, RawRacing, RawUpstream};
use super::{
    AddressSource, CaSource, CacheConfig, Config, ConfigError, ConfigOrigin, ConnectionConfig, EnvOverrides,
    HealthConfig, HedgingConfig, Mode, Pin, RacingConfig, UpstreamConfig,
};
use crate::upstream::resolv_conf::{self, Skip};

mod https;
mod route;
mod server;

/// Valid ranges, in the unit of the key (milliseconds for `*_ms`).
pub(crate) mod limits {
    use std::ops::RangeInclusive;

    pub const QUERY_TIMEOUT_MS: RangeInclusive<i64> = 100..=60_000;
    pub const TCP_IDLE_TIMEOUT_MS: RangeInclusive<i64> = 100..=3_600_000;
    pub const SERVER_MAX_INFLIGHT: RangeInclusive<i64> = 1..=1_000_000;
    pub const MAX_TCP_CLIENTS: RangeInclusive<i64> = 1..=100_000;
    pub const MAX_TCP_PER_CLIENT: RangeInclusive<i64> = 1..=100_000;
    pub const TCP_WRITE_TIMEOUT_MS: RangeInclusive<i64> = 100..=60_000;
    pub const THREADS: RangeInclusive<i64> = 0..=64;
    pub const CACHE_MAX_ENTRIES: RangeInclusive<i64> = 0..=10_000_000;
    pub const CACHE_MAX_BYTES: RangeInclusive<i64> = 0..=(16 << 30);
    /// RFC 8767 §4 recommends capping TTLs at 7 days.
    pub const TTL: RangeInclusive<i64> = 0..=604_800;
    /// RFC 2308 §7.1: SERVFAIL may be cached for at most 5 minutes.
    pub const SERVFAIL_TTL: RangeInclusive<i64> = 0..=300;
    pub const STALE_MAX_S: RangeInclusive<i64> = 0..=604_800;
    pub const STALE_ANSWER_AFTER_MS: RangeInclusive<i64> = 0..=60_000;
    pub const STALE_RECHECK_MS: RangeInclusive<i64> = 0..=600_000;
    pub const IDLE_TIMEOUT_MS: RangeInclusive<i64> = 100..=3_600_000;
    /// Message IDs are 16 bits (RFC 7766 §6.2.1: no ID reused in flight).
    pub const CONNECTION_MAX_INFLIGHT: RangeInclusive<i64> = 1..=65_535;
    /// RFC 8305 §5: MUST NOT be below 10 ms, SHOULD NOT exceed 2 s. Clamped.
    pub const ATTEMPT_DELAY_MS: RangeInclusive<i64> = 10..=2_000;
    pub const ATTEMPT_TIMEOUT_MS: RangeInclusive<i64> = 100..=60_000;
    pub const PLAIN_FALLBACK_DELAY_MS: RangeInclusive<i64> = 0..=60_000;
    pub const MAX_CONCURRENT_ATTEMPTS: RangeInclusive<i64> = 1..=64;
    pub const RACE_TIMEOUT_MS: RangeInclusive<i64> = 100..=300_000;
    pub const PORT: RangeInclusive<i64> = 1..=65_535;
    pub const HEDGE_MS: RangeInclusive<i64> = 10..=10_000;
    pub const DEAD_AFTER_UNANSWERED: RangeInclusive<i64> = 1..=1000;
    pub const DEAD_AFTER_SILENCE_MS: RangeInclusive<i64> = 100..=600_000;
}

pub(crate) fn validate(
    raw: RawConfig,
    origin: ConfigOrigin,
    overrides: &EnvOverrides,
) -> Result<Config, ConfigError> {
    let mut v = Validator {
        file: origin.to_string(),
        base_dir: match &origin {
            ConfigOrigin::File(path) => path.parent().map(Path::to_path_buf),
            ConfigOrigin::Embedded => None,
        },
        warnings: Vec::new(),
    };
    let server = v.server(raw.server, overrides)?;
    let cache = v.cache(raw.cache)?;
    let connection = v.connection(raw.connection)?;
    let racing = v.racing(raw.racing)?;
    let hedging = v.hedging(raw.hedging)?;
    let health = v.health(raw.health)?;
    let metrics = operator::metrics(&v.file, raw.metrics, &server.listen, &mut v.warnings)?;
    let log = operator::log(raw.log);
    let upstreams = v.upstreams(raw.upstream, &server.listen)?;
    Ok(Config {
        origin,
        server,
        cache,
        connection,
        racing,
        hedging,
        health,
        metrics,
        log,
        upstreams,
        warnings: v.warnings,
    })
}

struct Validator {
    file: String,
    /// Relative `ca_file` and `resolv_conf` paths are taken from the config
    /// file's directory.
    base_dir: Option<PathBuf>,
    warnings: Vec<String>,
}

impl Validator {
    fn error(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.file, key, reason)
    }

    fn int(&self, key: &str, value: i64, range: RangeInclusive<i64>) -> Result<i64, ConfigError> {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self
                .error(key, format!("must be between {} and {}, got {value}", range.start(), range.end())))
        }
    }

    fn count(&self, key: &str, value: i64, range: RangeInclusive<i64>) -> Result<usize, ConfigError> {
        // In range means non-negative and small, so the cast is lossless.
        self.int(key, value, range).map(|n| n as usize)
    }

    fn millis(&self, key: &str, value: i64, range: RangeInclusive<i64>) -> Result<Duration, ConfigError> {
        self.int(key, value, range).map(|ms| Duration::from_millis(ms as u64))
    }

    fn cache(&mut self, raw: RawCache) -> Result<CacheConfig, ConfigError> {
        let ttl = |v: &Self, key: &str, value: i64| v.int(key, value, limits::TTL).map(|t| t as u32);
        let min_ttl = ttl(self, "cache.min_ttl", raw.min_ttl)?;
        let max_ttl = ttl(self, "cache.max_ttl", raw.max_ttl)?;
        if min_ttl > max_ttl {
            return Err(self.error("cache.min_ttl", format!("must not exceed cache.max_ttl ({max_ttl})")));
        }
        Ok(CacheConfig {
            max_entries: self.count("cache.max_entries", raw.max_entries, limits::CACHE_MAX_ENTRIES)?,
            max_bytes: self.count("cache.max_bytes", raw.max_bytes, limits::CACHE_MAX_BYTES)?,
            min_ttl,
            max_ttl,
            negative_max_ttl: ttl(self, "cache.negative_max_ttl", raw.negative_max_ttl)?,
            servfail_ttl: self.int("cache.servfail_ttl", raw.servfail_ttl, limits::SERVFAIL_TTL)? as u32,
            serve_stale: raw.serve_stale,
            stale_max: Duration::from_secs(self.int(
                "cache.stale_max_s",
                raw.stale_max_s,
                limits::STALE_MAX_S,
            )? as u64),
            stale_answer_after: self.millis(
                "cache.stale_answer_after_ms",
                raw.stale_answer_after_ms,
                limits::STALE_ANSWER_AFTER_MS,
            )?,
            stale_recheck: self.millis(
                "cache.stale_recheck_ms",
                raw.stale_recheck_ms,
                limits::STALE_RECHECK_MS,
            )?,
            prefetch: raw.prefetch,
        })
    }

    fn connection(&mut self, raw: RawConnection) -> Result<ConnectionConfig, ConfigError> {
        Ok(ConnectionConfig {
            idle_timeout: self.millis(
                "connection.idle_timeout_ms",
                raw.idle_timeout_ms,
                limits::IDLE_TIMEOUT_MS,
            )?,
            max_inflight: self.count(
                "connection.max_inflight",
                raw.max_inflight,
                limits::CONNECTION_MAX_INFLIGHT,
            )?,
        })
    }

    fn racing(&mut self, raw: RawRacing) -> Result<RacingConfig, ConfigError> {
        let range = limits::ATTEMPT_DELAY_MS;
        let delay = raw.attempt_delay_ms.clamp(*range.start(), *range.end());
        if delay != raw.attempt_delay_ms {
            self.warnings.push(format!(
                "racing.attempt_delay_ms: {} ms is outside {}..={} ms (RFC 8305 §5); using {delay} ms",
                raw.attempt_delay_ms,
                range.start(),
                range.end(),
            ));
        }
        Ok(RacingConfig {
            attempt_delay: Duration::from_millis(delay as u64),
            attempt_timeout: self.millis(
                "racing.attempt_timeout_ms",
                raw.attempt_timeout_ms,
                limits::ATTEMPT_TIMEOUT_MS,
            )?,
            plain_fallback_delay: self.millis(
                "racing.plain_fallback_delay_ms",
                raw.plain_fallback_delay_ms,
                limits::PLAIN_FALLBACK_DELAY_MS,
            )?,
            max_concurrent_attempts: self.count(
                "racing.max_concurrent_attempts",
                raw.max_concurrent_attempts,
                limits::MAX_CONCURRENT_ATTEMPTS,
            )?,
            race_timeout: self.millis(
                "racing.race_timeout_ms",
                raw.race_timeout_ms,
                limits::RACE_TIMEOUT_MS,
            )?,
        })
    }

    fn hedging(&mut self, raw: RawHedging) -> Result<HedgingConfig, ConfigError> {
        let floor = self.millis("hedging.floor_ms", raw.floor_ms, limits::HEDGE_MS)?;
        let cap = self.millis("hedging.cap_ms", raw.cap_ms, limits::HEDGE_MS)?;
        if cap < floor {
            return Err(self.error(
                "hedging.cap_ms",
                format!("must not be below hedging.floor_ms ({} ms)", raw.floor_ms),
            ));
        }
        Ok(HedgingConfig { enabled: raw.enabled, floor, cap, spare: raw.spare })
    }

    fn health(&mut self, raw: RawHealth) -> Result<HealthConfig, ConfigError> {
        Ok(HealthConfig {
            dead_after_unanswered: self.count(
                "health.dead_after_unanswered",
                raw.dead_after_unanswered,
                limits::DEAD_AFTER_UNANSWERED,
            )? as u32,
            dead_after_silence: self.millis(
                "health.dead_after_silence_ms",
                raw.dead_after_silence_ms,
                limits::DEAD_AFTER_SILENCE_MS,
            )?,
        })
    }

    fn upstreams(
        &mut self,
        raw: Vec<RawUpstream>,
        own_listen: &[SocketAddr],
    ) -> Result<Vec<UpstreamConfig>, ConfigError> {
        if raw.is_empty() {
            return Err(self.error("upstream", "at least one [[upstream]] is required"));
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, upstream) in raw.into_iter().enumerate() {
            let name_defaulted = upstream.name.is_none();
            let validated = self.upstream(i, upstream, own_listen)?;
            if let Some(first) = seen.insert(validated.name.clone(), i) {
                let hint = if name_defaulted {
                    " (the default name of a resolv_conf upstream; set name)"
                } else {
                    ""
                };
                return Err(self.error(
                    if name_defaulted { format!("upstream[{i}]") } else { format!("upstream[{i}].name") },
                    format!("duplicate name {:?} (also upstream[{first}]){hint}", validated.name),
                ));
            }
            out.push(validated);
        }
        self.routes(&out)?;
        Ok(out)
    }

    fn upstream(
        &mut self,
        i: usize,
        raw: RawUpstream,
        own_listen: &[SocketAddr],
    ) -> Result<UpstreamConfig, ConfigError> {
        let at = format!("upstream[{i}]");

        let name = match raw.name {
            None if raw.resolv_conf.is_some() => defaults::RESOLV_CONF_NAME.to_owned(),
            None => return Err(self.error(&at, "missing required key \"name\"")),
            Some(name) if name.trim().is_empty() => {
                return Err(self.error(format!("{at}.name"), "empty: a name is required"));
            }
            Some(name) if name.chars().any(char::is_control) => {
                return Err(self.error(format!("{at}.name"), format!("{name:?} contains control characters")));
            }
            Some(name) => name,
        };

        // Exactly one of addresses and resolv_conf; a resolv_conf upstream is
        // opportunistic (checked before its file is read).
        let mode = match (&raw.addresses, &raw.resolv_conf, raw.mode) {
            (Some(_), Some(_), _) => {
                return Err(self.error(
                    &at,
                    "addresses and resolv_conf are mutually exclusive: list the resolvers \
                     in addresses, or take them from a resolv.conf file, not both",
                ));
            }
            (None, None, _) => {
                return Err(self.error(
                    &at,
                    "missing required key \"addresses\" (or \"resolv_conf\" to take the \
                     nameservers from a resolv.conf file)",
                ));
            }
            (None, Some(_), Some(Mode::Strict)) => {
                return Err(self.error(
                    format!("{at}.mode"),
                    "must not be \"strict\" with resolv_conf: the resolvers a network hands \
                     out cannot be authenticated (RFC 8310 §5), so a resolv_conf upstream \
                     is always opportunistic; remove mode, or list a resolver you can \
                     authenticate in addresses with pins or tls_name",
                ));
            }
            (None, Some(_), Some(Mode::Plain)) => Mode::Plain,
            (None, Some(_), _) => Mode::Opportunistic,
            (Some(_), None, mode) => mode.unwrap_or_default(),
        };
        let domains = self.domains(&at, raw.domains)?;
        let (addresses, source) = match (raw.addresses, raw.resolv_conf) {
            (Some(list), _) => (self.static_addresses(&at, &list)?, AddressSource::Static),
            (None, Some(path)) => {
                let (path, addresses) = self.resolv_conf(&at, &name, &path, own_listen)?;
                (addresses, AddressSource::ResolvConf(path))
            }
            (None, None) => unreachable!("rejected above"),
        };
        let route_search = self.needs_resolv_conf(&at, "route_search", raw.route_search, &source)?;
        let captive_portal = self.needs_resolv_conf(&at, "captive_portal", raw.captive_portal, &source)?;

        let tls_name =
            raw.tls_name.as_deref().map(|text| self.tls_name(&format!("{at}.tls_name"), text)).transpose()?;

        let mut pins: Vec<Pin> = Vec::with_capacity(raw.pins.len());
        for (j, text) in raw.pins.iter().enumerate() {
            let key = format!("{at}.pins[{j}]");
            let pin: Pin = text.parse().map_err(|e: super::PinParseError| self.error(&key, e.to_string()))?;
            if let Some(first) = pins.iter().position(|p| *p == pin) {
                return Err(self.error(key, format!("duplicate pin (also {at}.pins[{first}])")));
            }
            pins.push(pin);
        }

        let ca = match raw.ca_file {
            None => CaSource::WebPki,
            Some(path) => CaSource::File(self.ca_file(&format!("{at}.ca_file"), &path)?),
        };

        let tls_port = self.port(&format!("{at}.tls_port"), raw.tls_port)?;
        if tls_port == 53 {
            // RFC 7858 §3.1: an alternative DoT port MUST NOT be 53.
            return Err(self.error(
                format!("{at}.tls_port"),
                "must not be 53: DNS over TLS never shares the cleartext DNS port (RFC 7858 §3.1)",
            ));
        }
        let plain_port = match raw.plain_port {
            Some(port) => self.port(&format!("{at}.plain_port"), port)?,
            None => super::schema::defaults::PLAIN_PORT as u16,
        };

        match mode {
            Mode::Strict => {
                if pins.is_empty() && tls_name.is_none() {
                    return Err(self.error(
                        &at,
                        "strict mode needs pins or tls_name, and neither is set: \
                         nothing to authenticate (RFC 8310 §5, §6)",
                    ));
                }
                if raw.plain_port.is_some() {
                    self.warnings.push(format!(
                        "{at}.plain_port: unused: upstream {name:?} is strict and never \
                         sends cleartext"
                    ));
                }
            }
            Mode::Opportunistic => {
                if plain_port == tls_port {
                    return Err(self.error(
                        format!("{at}.plain_port"),
                        format!(
                            "equals tls_port ({tls_port}): cleartext DNS must never be sent \
                             to the DNS-over-TLS port (RFC 7858 §3.1)"
                        ),
                    ));
                }
                self.warnings.push(format!(
                    "{at}: upstream {name:?} is opportunistic: its queries may go \
                     unauthenticated or in cleartext (RFC 8310 §5)"
                ));
            }
            Mode::Plain if raw.https_port.is_some() || raw.https_path.is_some() => {
                let key = if raw.https_port.is_some() { "https_port" } else { "https_path" };
                return Err(self.error(
                    format!("{at}.{key}"),
                    format!(
                        "upstream {name:?} is plain: DNS over HTTPS is encrypted, so it does not                          belong to a plain upstream; remove {key}, or use mode strict"
                    ),
                ));
            }
            Mode::Plain => self.plain_upstream(
                &at,
                &name,
                &domains,
                route_search || captive_portal,
                &raw.pins,
                &tls_name,
                &ca,
                plain_port,
            )?,
        }

        let https = self.https(
            &at,
            raw.https_port,
            raw.https_path,
            tls_port,
            (mode == Mode::Opportunistic).then_some(plain_port),
        )?;

        if pins.len() == 1 {
            self.warnings.push(format!(
                "{at}.pins: only one pin for {name:?}; RFC 7858 §4.2 recommends a backup pin \
                 so a key change does not lock the upstream out"
            ));
        }
        if !pins.is_empty() && matches!(ca, CaSource::File(_)) {
            self.warnings.push(format!(
                "{at}.ca_file: ignored: upstream {name:?} has pins, which replace CA validation"
            ));
        }

        Ok(UpstreamConfig {
            name,
            addresses,
            source,
            tls_name,
            pins,
            ca,
            tls_port,
            plain_port,
            https,
            mode,
            domains,
            route_search,
            captive_portal,
        })
    }

    fn static_addresses(&self, at: &str, raw: &[String]) -> Result<Vec<IpAddr>, ConfigError> {
        if raw.is_empty() {
            return Err(self.error(format!("{at}.addresses"), "empty: at least one IP address is required"));
        }
        let mut addresses: Vec<IpAddr> = Vec::with_capacity(raw.len());
        for (j, text) in raw.iter().enumerate() {
            let key = format!("{at}.addresses[{j}]");
            let addr = self.upstream_address(&key, text)?;
            if let Some(first) = addresses.iter().position(|a| *a == addr) {
                return Err(
                    self.error(key, format!("duplicate address {addr} (also {at}.addresses[{first}])"))
                );
            }
            addresses.push(addr);
        }
        Ok(addresses)
    }

    /// Reads the file now, so a wrong path fails at startup. No usable
    /// nameserver is only a warning: a laptop offline has none, and the
    /// daemon re-reads the file when it changes.
    fn resolv_conf(
        &mut self,
        at: &str,
        name: &str,
        path: &Path,
        own_listen: &[SocketAddr],
    ) -> Result<(PathBuf, Vec<IpAddr>), ConfigError> {
        let key = format!("{at}.resolv_conf");
        if path.as_os_str().is_empty() {
            return Err(self.error(key, "empty: a path is required"));
        }
        let path = match &self.base_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        };
        let shown = path.display();
        let listed = resolv_conf::read_nameservers(&path)
            .map_err(|e| self.error(&key, format!("cannot read {shown}: {e}")))?;
        let skipped: Vec<(IpAddr, Skip)> = listed
            .iter()
            .filter_map(|ip| resolv_conf::skip_reason(*ip, own_listen).map(|why| (*ip, why)))
            .collect();
        let addresses = resolv_conf::usable(listed, own_listen);
        if addresses.is_empty() {
            let found = if skipped.is_empty() {
                format!("{shown} lists no nameserver")
            } else {
                let reasons: Vec<String> =
                    skipped.iter().map(|(ip, why)| format!("{ip} skipped: {why}")).collect();
                format!("no usable nameserver in {shown} ({})", reasons.join("; "))
            };
            let hint = if skipped.iter().any(|(_, why)| *why == Skip::ResolvedStub) {
                "; with systemd-resolved, /run/systemd/resolve/resolv.conf lists the \
                 network's own servers"
            } else {
                ""
            };
            self.warnings.push(format!(
                "{key}: {found}; upstream {name:?} has no addresses until the file lists \
                 one (it is re-read when it changes){hint}"
            ));
        }
        Ok((path, addresses))
    }

    fn upstream_address(&self, key: &str, text: &str) -> Result<IpAddr, ConfigError> {
        let trimmed = text.trim();
        let addr: IpAddr = match trimmed.parse() {
            Ok(addr) => addr,
            Err(_) => {
                let hint = if trimmed.parse::<SocketAddr>().is_ok() {
                    "; give the port in tls_port / plain_port"
                } else {
                    " (no bootstrap through the system resolver)"
                };
                return Err(self.error(key, format!("{text:?} is not an IP literal{hint}")));
            }
        };
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(self.error(key, format!("{addr} is not a unicast address")));
        }
        Ok(addr)
    }

    /// The authentication domain name (RFC 8310 §7): a DNS name, stored
    /// lowercase without a trailing dot (SNI carries no trailing dot, RFC 6066 §3).
    fn tls_name(&self, key: &str, text: &str) -> Result<String, ConfigError> {
        let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
        match ServerName::try_from(name.as_str()) {
            Ok(ServerName::DnsName(_)) => Ok(name),
            Ok(_) => Err(self.error(
                key,
                format!(
                    "{text:?} is an IP address; tls_name must be a DNS name (the \
                     authentication domain name, RFC 8310 §7)"
                ),
            )),
            Err(_) => Err(self.error(key, format!("{text:?} is not a valid DNS name"))),
        }
    }

    fn port(&self, key: &str, value: i64) -> Result<u16, ConfigError> {
        self.int(key, value, limits::PORT).map(|p| p as u16)
    }

    /// Reads the PEM file now: every certificate must parse as a trust anchor,
    /// and there must be at least one.
    fn ca_file(&self, key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
        let path = match &self.base_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        };
        let shown = path.display();
        let io_error = |e: &std::io::Error| self.error(key, format!("cannot read {shown}: {e}"));
        let items = CertificateDer::pem_file_iter(&path).map_err(|e| match e {
            pem::Error::Io(e) => io_error(&e),
            other => self.error(key, format!("{shown}: {other}")),
        })?;
        let mut count = 0usize;
        for item in items {
            let der = item.map_err(|e| match e {
                pem::Error::Io(e) => io_error(&e),
                other => self.error(key, format!("{shown}: invalid PEM: {other}")),
            })?;
            webpki::anchor_from_trusted_cert(&der).map_err(|e| {
                self.error(
                    key,
                    format!("{shown}: certificate #{} is not a usable CA certificate: {e}", count + 1),
                )
            })?;
            count += 1;
        }
        if count == 0 {
            return Err(self.error(key, format!("{shown}: no PEM certificates found")));
        }
        Ok(path)
    }
}
