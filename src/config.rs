//! TEMPORARY stub of the config types (replaced by the config branch).
use std::{net::{IpAddr, SocketAddr}, path::PathBuf, time::Duration};

#[derive(Debug, Clone)]
pub enum ConfigOrigin { File(PathBuf), Embedded }
#[derive(Debug, Clone)]
pub struct Config { pub origin: ConfigOrigin, pub server: ServerConfig, pub cache: CacheConfig, pub connection: ConnectionConfig, pub racing: RacingConfig, pub upstreams: Vec<UpstreamConfig>, pub warnings: Vec<String> }
#[derive(Debug, Clone)]
pub struct ServerConfig { pub listen: Vec<SocketAddr>, pub allow: Vec<ipnet::IpNet>, pub query_timeout: Duration, pub tcp_idle_timeout: Duration, pub max_inflight: usize }
#[derive(Debug, Clone)]
pub struct CacheConfig { pub max_entries: usize }
#[derive(Debug, Clone)]
pub struct ConnectionConfig { pub idle_timeout: Duration, pub connect_timeout: Duration, pub max_inflight: usize }
#[derive(Debug, Clone)]
pub struct RacingConfig { pub attempt_delay: Duration, pub attempt_timeout: Duration, pub plain_fallback_delay: Duration, pub max_concurrent_attempts: usize, pub race_timeout: Duration }
#[derive(Debug, Clone)]
pub struct UpstreamConfig { pub name: String, pub addresses: Vec<IpAddr>, pub tls_name: Option<String>, pub pins: Vec<Pin>, pub ca: CaSource, pub tls_port: u16, pub plain_port: u16, pub mode: Mode }
#[derive(Debug, Clone)]
pub enum CaSource { WebPki, File(PathBuf) }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode { Strict, Opportunistic }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin { KeySha256([u8; 32]), CertSha256([u8; 32]) }
impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pin::KeySha256(h) => write!(f, "key-fp:SHA256:{}", data_encoding::BASE64.encode(h)),
            Pin::CertSha256(h) => write!(f, "cert-fp:SHA256:{}", data_encoding::BASE64.encode(h)),
        }
    }
}
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError { pub file: String, pub key: String, pub reason: String }
impl std::fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self { ConfigOrigin::File(p) => write!(f, "{}", p.display()), ConfigOrigin::Embedded => f.write_str("<embedded default>") }
    }
}
impl Config {
    pub fn resolve(_explicit: Option<&std::path::Path>) -> Result<Config, ConfigError> { Err(ConfigError { file: "stub".into(), key: "".into(), reason: "stub".into() }) }
    pub fn summary(&self) -> String { String::new() }
}
