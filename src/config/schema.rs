//! The on-disk schema: what serde reads from the TOML file, before validation.
//!
//! Every struct denies unknown keys. Numbers are read as `i64` (TOML's integer
//! type) so that out-of-range values, negative ones included, reach
//! `validate.rs` and get a range message with their key path instead of a
//! serde type error. Nothing here checks meaning; nothing here is public.

use std::path::PathBuf;

use serde::Deserialize;

use super::Mode;

/// Default values, shared by the schema and the docs' tables.
pub(crate) mod defaults {
    pub const LISTEN: &[&str] = &["127.0.0.1:53", "[::1]:53"];
    pub const ALLOW: &[&str] = &["127.0.0.0/8", "::1/128"];
    pub const QUERY_TIMEOUT_MS: i64 = 4000;
    pub const TCP_IDLE_TIMEOUT_MS: i64 = 10_000;
    pub const SERVER_MAX_INFLIGHT: i64 = 4096;
    pub const MAX_TCP_CLIENTS: i64 = 512;
    pub const MAX_TCP_PER_CLIENT: i64 = 16;
    pub const TCP_WRITE_TIMEOUT_MS: i64 = 5000;
    pub const REFUSED: &str = "rate-limited";
    /// 0: one serving thread per core, up to [`crate::config::AUTO_THREADS_MAX`].
    pub const THREADS: i64 = 0;
    /// The locally-served names (localhost, the private reverse zones, ...) answered here.
    pub const LOCAL_ZONES: bool = true;

    pub const CACHE_MAX_ENTRIES: i64 = 10_000;
    pub const CACHE_MAX_BYTES: i64 = 64 << 20;
    pub const MIN_TTL: i64 = 0;
    pub const MAX_TTL: i64 = 86_400;
    pub const NEGATIVE_MAX_TTL: i64 = 3600;
    pub const SERVFAIL_TTL: i64 = 5;
    pub const SERVE_STALE: bool = false;
    pub const STALE_MAX_S: i64 = 86_400;
    pub const STALE_ANSWER_AFTER_MS: i64 = 1800;
    pub const STALE_RECHECK_MS: i64 = 30_000;
    pub const PREFETCH: bool = true;

    pub const IDLE_TIMEOUT_MS: i64 = 10_000;
    pub const CONNECTION_MAX_INFLIGHT: i64 = 256;

    pub const ATTEMPT_DELAY_MS: i64 = 250;
    pub const ATTEMPT_TIMEOUT_MS: i64 = 5000;
    pub const PLAIN_FALLBACK_DELAY_MS: i64 = 500;
    pub const MAX_CONCURRENT_ATTEMPTS: i64 = 4;
    pub const RACE_TIMEOUT_MS: i64 = 10_000;

    pub const HEDGING_ENABLED: bool = true;
    pub const HEDGE_FLOOR_MS: i64 = 50;
    pub const HEDGE_CAP_MS: i64 = 1000;
    pub const SPARE: bool = true;

    pub const DEAD_AFTER_UNANSWERED: i64 = 3;
    pub const DEAD_AFTER_SILENCE_MS: i64 = 2000;

    /// The name of a `resolv_conf` upstream that has none.
    pub const RESOLV_CONF_NAME: &str = "resolv.conf";

    pub const TLS_PORT: i64 = 853;
    pub const PLAIN_PORT: i64 = 53;

    /// The metrics endpoint is off unless `metrics.listen` is set.
    pub const METRICS_ALLOW_REMOTE: bool = false;
    /// Query logging is off by default: a log of every name asked is private data.
    pub const LOG_QUERIES: bool = false;
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub connection: RawConnection,
    #[serde(default)]
    pub racing: RawRacing,
    #[serde(default)]
    pub hedging: RawHedging,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServer {
    pub listen: Vec<String>,
    pub allow: Vec<String>,
    pub query_timeout_ms: i64,
    pub tcp_idle_timeout_ms: i64,
    pub max_inflight: i64,
    pub max_tcp_clients: i64,
    pub max_tcp_per_client: i64,
    pub tcp_write_timeout_ms: i64,
    pub refused: String,
    pub threads: i64,
    pub user: Option<String>,
    pub local_zones: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: strings(defaults::LISTEN),
            allow: strings(defaults::ALLOW),
            query_timeout_ms: defaults::QUERY_TIMEOUT_MS,
            tcp_idle_timeout_ms: defaults::TCP_IDLE_TIMEOUT_MS,
            max_inflight: defaults::SERVER_MAX_INFLIGHT,
            max_tcp_clients: defaults::MAX_TCP_CLIENTS,
            max_tcp_per_client: defaults::MAX_TCP_PER_CLIENT,
            tcp_write_timeout_ms: defaults::TCP_WRITE_TIMEOUT_MS,
            refused: defaults::REFUSED.to_owned(),
            threads: defaults::THREADS,
            user: None,
            local_zones: defaults::LOCAL_ZONES,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCache {
    pub max_entries: i64,
    pub max_bytes: i64,
    pub min_ttl: i64,
    pub max_ttl: i64,
    pub negative_max_ttl: i64,
    pub servfail_ttl: i64,
    pub serve_stale: bool,
    pub stale_max_s: i64,
    pub stale_answer_after_ms: i64,
    pub stale_recheck_ms: i64,
    pub prefetch: bool,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_entries: defaults::CACHE_MAX_ENTRIES,
            max_bytes: defaults::CACHE_MAX_BYTES,
            min_ttl: defaults::MIN_TTL,
            max_ttl: defaults::MAX_TTL,
            negative_max_ttl: defaults::NEGATIVE_MAX_TTL,
            servfail_ttl: defaults::SERVFAIL_TTL,
            serve_stale: defaults::SERVE_STALE,
            stale_max_s: defaults::STALE_MAX_S,
            stale_answer_after_ms: defaults::STALE_ANSWER_AFTER_MS,
            stale_recheck_ms: defaults::STALE_RECHECK_MS,
            prefetch: defaults::PREFETCH,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConnection {
    pub idle_timeout_ms: i64,
    pub max_inflight: i64,
}

impl Default for RawConnection {
    fn default() -> Self {
        RawConnection {
            idle_timeout_ms: defaults::IDLE_TIMEOUT_MS,
            max_inflight: defaults::CONNECTION_MAX_INFLIGHT,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRacing {
    pub attempt_delay_ms: i64,
    pub attempt_timeout_ms: i64,
    pub plain_fallback_delay_ms: i64,
    pub max_concurrent_attempts: i64,
    pub race_timeout_ms: i64,
}

impl Default for RawRacing {
    fn default() -> Self {
        RawRacing {
            attempt_delay_ms: defaults::ATTEMPT_DELAY_MS,
            attempt_timeout_ms: defaults::ATTEMPT_TIMEOUT_MS,
            plain_fallback_delay_ms: defaults::PLAIN_FALLBACK_DELAY_MS,
            max_concurrent_attempts: defaults::MAX_CONCURRENT_ATTEMPTS,
            race_timeout_ms: defaults::RACE_TIMEOUT_MS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHedging {
    pub enabled: bool,
    pub floor_ms: i64,
    pub cap_ms: i64,
    pub spare: bool,
}

impl Default for RawHedging {
    fn default() -> Self {
        RawHedging {
            enabled: defaults::HEDGING_ENABLED,
            floor_ms: defaults::HEDGE_FLOOR_MS,
            cap_ms: defaults::HEDGE_CAP_MS,
            spare: defaults::SPARE,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHealth {
    pub dead_after_unanswered: i64,
    pub dead_after_silence_ms: i64,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            dead_after_unanswered: defaults::DEAD_AFTER_UNANSWERED,
            dead_after_silence_ms: defaults::DEAD_AFTER_SILENCE_MS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMetrics {
    pub listen: Option<String>,
    pub allow_remote: bool,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics { listen: None, allow_remote: defaults::METRICS_ALLOW_REMOTE }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    pub queries: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { queries: defaults::LOG_QUERIES }
    }
}

/// One `[[upstream]]` table. `name` and exactly one of `addresses` and
/// `resolv_conf` are required, but read as `Option` so that `validate.rs`
/// reports them missing with the table's index (and can default the name of
/// a `resolv_conf` upstream). `plain_port` stays an `Option` so that setting
/// it in strict mode, where it is never used, can be warned about; `mode`, so
/// that its default can depend on `resolv_conf` and an explicit `"strict"`
/// there can be refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    #[serde(default)]
    pub tls_name: Option<String>,
    #[serde(default)]
    pub pins: Vec<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_tls_port")]
    pub tls_port: i64,
    #[serde(default)]
    pub plain_port: Option<i64>,
    #[serde(default)]
    pub https_port: Option<i64>,
    #[serde(default)]
    pub https_path: Option<String>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub domains: Option<Vec<String>>,
    #[serde(default)]
    pub route_search: bool,
    #[serde(default)]
    pub captive_portal: bool,
}

fn default_tls_port() -> i64 {
    defaults::TLS_PORT
}
