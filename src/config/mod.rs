//! Configuration: the TOML file, its embedded default, and the validated
//! [`Config`] every other module reads.
//!
//! This module owns the key names, defaults, valid ranges and the security
//! rules a configuration must satisfy before the daemon starts (strict
//! upstreams must have something to authenticate, no cleartext on the DoT
//! port, IP literals only so nothing bootstraps through the system resolver,
//! `resolv_conf` upstreams always opportunistic and never pointed back at
//! stubborn). It never opens a socket, never logs (warnings are returned in
//! [`Config::warnings`] for the caller to log) and never changes a value
//! silently except the documented clamp of `racing.attempt_delay_ms`.
//!
//! Layout: `schema.rs` is the serde view of the file (unknown keys denied),
//! `validate.rs` turns it into the types below, `operator.rs` validates the
//! operator sections (`[metrics]`, `[log]`) and the environment overrides
//! (`STUBBORN_LISTEN`, `STUBBORN_ALLOW`), `pin.rs` parses pins, `locate.rs`
//! turns `toml` errors into key paths with line and column, `summary.rs` writes
//! what `stubborn check` prints.
//! The reference for users is `docs/configuration.md`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::upstream::race::Transport;

mod locate;
mod operator;
mod pin;
mod schema;
mod summary;
mod validate;

pub use pin::{Pin, PinParseError};

/// Where [`Config::resolve`] looks when no path is given.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/stubborn/stubborn.toml";

/// Environment variable naming the config file when `--config` is not given (the
/// container image's knob; `--config` wins over it).
pub const ENV_CONFIG: &str = "STUBBORN_CONFIG";
/// Environment variable replacing `[server] listen`: comma-separated socket addresses.
pub const ENV_LISTEN: &str = "STUBBORN_LISTEN";
/// Environment variable replacing `[server] allow`: comma-separated networks (CIDR).
pub const ENV_ALLOW: &str = "STUBBORN_ALLOW";

/// The embedded default configuration (`config/default.toml`), as text.
pub const EMBEDDED_DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where it came from, for messages.
    pub origin: ConfigOrigin,
    pub server: ServerConfig,
    pub cache: CacheConfig,
    pub connection: ConnectionConfig,
    pub racing: RacingConfig,
    pub hedging: HedgingConfig,
    pub health: HealthConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    /// In file order; at least one.
    pub upstreams: Vec<UpstreamConfig>,
    /// Accepted but worth a log line at warn (a clamped value, an
    /// opportunistic upstream, a single pin, an ignored key). Each starts with
    /// its key path.
    pub warnings: Vec<String>,
}

/// Where a [`Config`] was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    File(PathBuf),
    Embedded,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::File(path) => write!(f, "{}", path.display()),
            ConfigOrigin::Embedded => f.write_str("<embedded default>"),
        }
    }
}

/// `[server]`: the client-facing side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// UDP and TCP on each. Port 0 is allowed (tests bind ephemeral ports).
    pub listen: Vec<SocketAddr>,
    /// Clients outside these networks get REFUSED. Never empty; host bits
    /// cleared.
    pub allow: Vec<ipnet::IpNet>,
    /// Every client query is answered within this (SERVFAIL at worst).
    pub query_timeout: Duration,
    /// Idle client TCP connections are closed after this.
    pub tcp_idle_timeout: Duration,
    /// Cap on client queries being resolved upstream at once. At least 1.
    pub max_inflight: usize,
    /// Cap on open client TCP connections. At least 1.
    pub max_tcp_clients: usize,
    /// Cap on open client TCP connections from one IP address. At least 1.
    pub max_tcp_per_client: usize,
    /// A write to a client TCP connection that cannot finish within this closes it.
    pub tcp_write_timeout: Duration,
    /// What UDP clients outside `allow` get.
    pub refused: RefusedPolicy,
    /// Threads serving UDP, each with its own sockets and upstream connections; 0 means
    /// one per core, up to [`AUTO_THREADS_MAX`]. See [`ServerConfig::serving_threads`].
    pub threads: usize,
    /// When started as root: the account to switch to once the sockets are bound.
    pub user: Option<String>,
    /// Answer the locally-served names here ([`crate::local`]): localhost, invalid, the
    /// private and special reverse zones, home.arpa, local, onion. On by default.
    pub local_zones: bool,
    /// `listen` came from the `STUBBORN_LISTEN` environment variable, not the file.
    pub listen_from_env: bool,
    /// `allow` came from the `STUBBORN_ALLOW` environment variable, not the file.
    pub allow_from_env: bool,
}

/// `server.refused`: what a UDP query from outside `allow` gets. Its source address may
/// be forged, so an answer to it may go to a victim: REFUSED only at a bounded rate, or
/// nothing. (TCP clients outside `allow` are closed at accept.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedPolicy {
    /// REFUSED, at most [`crate::frontend::REFUSED_PER_SECOND`] a second in all.
    RateLimited,
    /// No answer at all.
    Drop,
}

/// `server.threads = 0` serves on one thread per core, but on no more than this: each
/// thread keeps its own upstream connections, and a stub resolver's load rarely needs
/// more cores than this to stay far ahead of its upstreams.
pub const AUTO_THREADS_MAX: usize = 4;

impl ServerConfig {
    /// How many threads serve UDP: `threads`, or for 0 one per core (at most
    /// [`AUTO_THREADS_MAX`]). Always at least 1.
    pub fn serving_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(AUTO_THREADS_MAX),
            n => n,
        }
    }
}

/// `[metrics]`: the Prometheus text endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics` over HTTP; None (the default): no endpoint.
    /// Loopback unless `allow_remote`.
    pub listen: Option<SocketAddr>,
    /// Allow a non-loopback `listen` (the endpoint has no authentication).
    pub allow_remote: bool,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// One log line per client query (name, type, rcode, latency, upstream). Off by
    /// default: the names a host looks up are private.
    pub queries: bool,
}

/// What the environment overrides in any config file ([`ENV_LISTEN`], [`ENV_ALLOW`]):
/// the two keys a container needs to change without a config file of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvOverrides {
    /// `STUBBORN_LISTEN`, unparsed: validation reports its errors.
    pub listen: Option<String>,
    /// `STUBBORN_ALLOW`, unparsed.
    pub allow: Option<String>,
}

impl EnvOverrides {
    /// Reads the process environment. An empty variable counts as unset.
    pub fn from_env() -> Self {
        let read = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        EnvOverrides { listen: read(ENV_LISTEN), allow: read(ENV_ALLOW) }
    }
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// 0 disables the cache.
    pub max_entries: usize,
    /// Bytes charged to cached answers at most; 0 disables the cache.
    pub max_bytes: usize,
    /// TTL clamps, in seconds (RFC 2181 §8).
    pub min_ttl: u32,
    pub max_ttl: u32,
    /// Negative answers (RFC 2308 §5) are kept at most this long.
    pub negative_max_ttl: u32,
    /// Upstream SERVFAIL answers are kept this long (RFC 2308 §7.1); 0: never.
    pub servfail_ttl: u32,
    /// Serve expired answers when upstreams fail or are late (RFC 8767).
    pub serve_stale: bool,
    /// How long past expiry an answer may still be served stale.
    pub stale_max: Duration,
    /// With serve_stale: how long a client waits for upstream before getting stale data
    /// (RFC 8767 §5, "client response timer").
    pub stale_answer_after: Duration,
    /// With serve_stale: after a failed refresh, stale data is served at once for this
    /// long, without asking upstream (RFC 8767 §5, "failure recheck timer").
    pub stale_recheck: Duration,
    /// Refresh in the background on a hit in the last 10% of an answer's TTL.
    pub prefetch: bool,
}

impl CacheConfig {
    /// The settings of the cache itself.
    pub fn settings(&self) -> crate::cache::CacheConfig {
        crate::cache::CacheConfig {
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
            min_ttl: self.min_ttl,
            max_ttl: self.max_ttl,
            negative_max_ttl: self.negative_max_ttl,
            servfail_ttl: self.servfail_ttl,
            serve_stale: self.serve_stale,
            stale_max: self.stale_max,
            failure_recheck: self.stale_recheck,
            prefetch_percent: if self.prefetch { 10 } else { 0 },
            ..crate::cache::CacheConfig::default()
        }
    }
}

/// `[connection]`: upstream connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Idle upstream connections are closed after this.
    pub idle_timeout: Duration,
    /// Cap on in-flight queries per upstream connection, 1..=65535.
    pub max_inflight: usize,
}

/// `[racing]`: happy eyeballs (RFC 8305) between an upstream's candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RacingConfig {
    /// Connection Attempt Delay, already clamped to 10 ms..=2 s.
    pub attempt_delay: Duration,
    pub attempt_timeout: Duration,
    /// Extra delay before plain-text candidates (opportunistic only).
    pub plain_fallback_delay: Duration,
    /// At least 1.
    pub max_concurrent_attempts: usize,
    pub race_timeout: Duration,
}

/// `[hedging]`: asking a second connection when the first is slow to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HedgingConfig {
    pub enabled: bool,
    /// The hedge delay follows each connection's SRTT + 4·RTTVAR, within floor..=cap.
    pub floor: Duration,
    pub cap: Duration,
    /// Keep a warm spare connection (to another upstream or address) for hedges and
    /// fail-over, when there is more than one address.
    pub spare: bool,
}

/// `[health]`: when an upstream connection is declared dead and replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Queries in a row given up on with no answer.
    pub dead_after_unanswered: u32,
    /// No answer for this long while queries wait.
    pub dead_after_silence: Duration,
}

/// One `[[upstream]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Unique, non-empty. `"resolv.conf"` for a `resolv_conf` upstream
    /// without one.
    pub name: String,
    /// No duplicates, unicast. For [`AddressSource::Static`]: the configured
    /// IP literals, non-empty. For [`AddressSource::ResolvConf`]: the usable
    /// nameservers the file listed at load time (see
    /// [`crate::upstream::resolv_conf::usable`]), possibly none; the daemon
    /// replaces them when the file changes.
    pub addresses: Vec<IpAddr>,
    /// Where `addresses` come from.
    pub source: AddressSource,
    /// The authentication domain name: SNI, and the name checked against the
    /// CA roots when there are no pins. Lowercase, no trailing dot.
    pub tls_name: Option<String>,
    /// If non-empty, some certificate in the chain must match one of these;
    /// CA validation and validity dates are then not checked.
    pub pins: Vec<Pin>,
    /// Roots for CA validation (used when `pins` is empty).
    pub ca: CaSource,
    /// Never 0, never 53.
    pub tls_port: u16,
    /// Never 0; differs from `tls_port` when opportunistic. Unused when strict.
    pub plain_port: u16,
    /// DNS over HTTPS (RFC 8484) on the same addresses: `https_port` and `https_path`.
    /// None: no DoH candidates. Never for `mode = "plain"`.
    pub https: Option<HttpsEndpoint>,
    /// [`Mode::Strict`] or [`Mode::Opportunistic`] for [`AddressSource::ResolvConf`];
    /// [`Mode::Plain`] only with `domains`.
    pub mode: Mode,
    /// The domains this upstream answers, and nothing else (a route, [`crate::route`]):
    /// lowercase, without the trailing dot, each once. Empty (and no `route_search`):
    /// one of the default set.
    pub domains: Vec<String>,
    /// A `resolv_conf` upstream that also answers its file's `search`/`domain` names,
    /// following the file ([`crate::route`]); it is then not one of the default set.
    pub route_search: bool,
    /// A `resolv_conf` upstream that answers the connectivity-check names while the default
    /// set has no connection up (`crate::route::captive`); then not one of the default set.
    pub captive_portal: bool,
}

impl UpstreamConfig {
    /// Answers only the names of a route (its `domains`, its file's search domains, the
    /// connectivity checks), never the default set's.
    pub fn is_route_only(&self) -> bool {
        !self.domains.is_empty() || self.route_search || self.captive_portal
    }

    /// Every (address, transport) a race may try on `ip`: DoT, DoH when configured, and
    /// the plain port (raced only when the mode allows it).
    pub fn endpoints(&self, ip: IpAddr) -> impl Iterator<Item = (SocketAddr, Transport)> + '_ {
        let https = self.https.as_ref().map(|h| (SocketAddr::new(ip, h.port), Transport::Https));
        [(SocketAddr::new(ip, self.tls_port), Transport::Tls)]
            .into_iter()
            .chain(https)
            .chain([(SocketAddr::new(ip, self.plain_port), Transport::Plain)])
    }
}

/// Where an upstream serves DNS over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsEndpoint {
    /// Never 0, 53, `tls_port` or `plain_port`.
    pub port: u16,
    /// The request path: starts with `/`, no query or fragment, printable ASCII; default
    /// `/dns-query`.
    pub path: String,
}

/// Where an upstream's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSource {
    /// `addresses = [...]`: fixed for the daemon's lifetime.
    Static,
    /// `resolv_conf = PATH`: the `nameserver` lines of that file, re-read
    /// when it changes ([`crate::upstream::resolv_conf::ResolvConfWatch`]).
    /// Relative paths are resolved against the config file's directory.
    ResolvConf(PathBuf),
}

impl UpstreamConfig {
    /// `"pins: N"`, `"CA (webpki) + name X"`, or `"none"`: how this
    /// upstream's TLS server is authenticated.
    pub fn auth_summary(&self) -> String {
        if self.mode == Mode::Plain {
            "none (plain: clear text, neither encrypted nor authenticated)".to_owned()
        } else if !self.pins.is_empty() {
            match &self.tls_name {
                Some(name) => format!("pins: {} (SNI {name})", self.pins.len()),
                None => format!("pins: {}", self.pins.len()),
            }
        } else if let Some(name) = &self.tls_name {
            match &self.ca {
                CaSource::WebPki => format!("CA (webpki) + name {name}"),
                CaSource::File(path) => format!("CA (file {}) + name {name}", path.display()),
            }
        } else {
            "none (opportunistic: encrypted but unauthenticated)".to_owned()
        }
    }
}

/// Trust anchors for CA + hostname validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// The Mozilla roots embedded through `webpki-roots`.
    WebPki,
    /// A PEM bundle, checked at load time to hold at least one certificate.
    /// Relative paths are resolved against the config file's directory.
    File(PathBuf),
}

/// RFC 8310 usage profile of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Encrypted and authenticated, or nothing (RFC 8310 §5).
    #[default]
    Strict,
    /// Authenticated if possible, else encrypted only, else cleartext on
    /// `plain_port`, each use logged.
    Opportunistic,
    /// Cleartext only, over UDP on `plain_port` (TCP when an answer is truncated): a
    /// VPN's or a router's resolver for its own names. Allowed only with `domains`.
    Plain,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Strict => "strict",
            Mode::Opportunistic => "opportunistic",
            Mode::Plain => "plain",
        })
    }
}

/// A configuration that cannot be used: which file, which key, why.
///
/// `key` is a path such as `upstream[1].pins[0]` or `server.listen[0]`
/// (0-based indexes in file order); it is empty when the whole file is at
/// fault (it cannot be read). For TOML syntax and type errors `reason` ends
/// with the line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{reason}", key_prefix(.key))]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() { String::new() } else { format!("{key}: ") }
}

impl ConfigError {
    pub(crate) fn new(file: impl Into<String>, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { file: file.into(), key: key.into(), reason: reason.into() }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &EnvOverrides::default())
    }

    fn load_with(path: &Path, overrides: &EnvOverrides) -> Result<Config, ConfigError> {
        let origin = ConfigOrigin::File(path.to_path_buf());
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(origin.to_string(), "", format!("cannot read: {e}")))?;
        Config::from_toml_with(&text, origin, overrides)
    }

    /// Parses and validates `text`; `origin` names it in errors and resolves
    /// relative `ca_file` paths.
    pub fn from_toml(text: &str, origin: ConfigOrigin) -> Result<Config, ConfigError> {
        Config::from_toml_with(text, origin, &EnvOverrides::default())
    }

    /// [`Config::from_toml`] with `overrides` applied before validation, so an
    /// overridden value is checked like one from the file (its errors name the
    /// variable).
    pub fn from_toml_with(
        text: &str,
        origin: ConfigOrigin,
        overrides: &EnvOverrides,
    ) -> Result<Config, ConfigError> {
        let raw: schema::RawConfig =
            toml::from_str(text).map_err(|e| locate::toml_error(&origin.to_string(), text, &e))?;
        validate::validate(raw, origin, overrides)
    }

    /// The embedded default (`config/default.toml`): strict, two public DoT
    /// resolvers authenticated by web PKI roots and hostname.
    pub fn embedded_default() -> Config {
        match Config::from_toml(EMBEDDED_DEFAULT_TOML, ConfigOrigin::Embedded) {
            Ok(config) => config,
            // A unit test parses it; this cannot happen in a tested build.
            Err(e) => panic!("embedded default configuration is invalid: {e}"),
        }
    }

    /// The configuration to run with: `explicit` if given (it must load),
    /// else [`SYSTEM_CONFIG_PATH`] if it exists, else the embedded default.
    pub fn resolve(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        resolve_with(explicit, Path::new(SYSTEM_CONFIG_PATH), &EnvOverrides::default())
    }

    /// [`Config::resolve`] with the environment's overrides applied to whichever
    /// config is chosen (the daemon and its tools use this).
    pub fn resolve_overridden(
        explicit: Option<&Path>,
        overrides: &EnvOverrides,
    ) -> Result<Config, ConfigError> {
        resolve_with(explicit, Path::new(SYSTEM_CONFIG_PATH), overrides)
    }
}

fn resolve_with(
    explicit: Option<&Path>,
    system: &Path,
    overrides: &EnvOverrides,
) -> Result<Config, ConfigError> {
    if let Some(path) = explicit {
        return Config::load_with(path, overrides);
    }
    match std::fs::metadata(system) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Config::from_toml_with(EMBEDDED_DEFAULT_TOML, ConfigOrigin::Embedded, overrides)
        }
        // Present, or present but unreadable: load, so the error is reported.
        _ => Config::load_with(system, overrides),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_without_warnings() {
        let config = Config::from_toml(EMBEDDED_DEFAULT_TOML, ConfigOrigin::Embedded)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(config, Config::embedded_default());
        assert!(config.upstreams.iter().all(|u| u.mode == Mode::Strict));
        assert!(config.upstreams.iter().all(|u| u.pins.is_empty()));
        assert!(config.upstreams.iter().all(|u| u.ca == CaSource::WebPki));
    }

    #[test]
    fn origin_display() {
        assert_eq!(ConfigOrigin::Embedded.to_string(), "<embedded default>");
        assert_eq!(
            ConfigOrigin::File("/etc/stubborn/stubborn.toml".into()).to_string(),
            "/etc/stubborn/stubborn.toml"
        );
    }

    #[test]
    fn error_display_omits_an_empty_key() {
        let e = ConfigError::new("f.toml", "server.listen[0]", "bad");
        assert_eq!(e.to_string(), "f.toml: server.listen[0]: bad");
        let e = ConfigError::new("f.toml", "", "cannot read: gone");
        assert_eq!(e.to_string(), "f.toml: cannot read: gone");
    }

    #[test]
    fn resolve_prefers_explicit_then_system_then_embedded() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let none = EnvOverrides::default();
        let config = resolve_with(None, &missing, &none).unwrap();
        assert_eq!(config.origin, ConfigOrigin::Embedded);

        let system = dir.path().join("system.toml");
        std::fs::write(
            &system,
            "[[upstream]]\nname = \"a\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\"\n",
        )
        .unwrap();
        let config = resolve_with(None, &system, &none).unwrap();
        assert_eq!(config.origin, ConfigOrigin::File(system.clone()));

        // An explicit path must exist: no fallback.
        let err = resolve_with(Some(&missing), &system, &none).unwrap_err();
        assert_eq!(err.key, "");
        assert!(err.reason.starts_with("cannot read: "), "{err}");
        assert_eq!(err.file, missing.display().to_string());
    }

    #[test]
    fn summary_names_every_upstream_and_its_auth() {
        let summary = Config::embedded_default().summary();
        assert!(summary.starts_with("config: <embedded default>\n"), "{summary}");
        assert!(summary.contains("listen: 127.0.0.1:53, [::1]:53"), "{summary}");
        assert!(summary.contains("upstream \"uncensoreddns\":"), "{summary}");
        assert!(summary.contains("auth: CA (webpki) + name unicast.uncensoreddns.org"), "{summary}");
        assert!(summary.contains("auth: CA (webpki) + name dns.quad9.net"), "{summary}");
    }
}
