//! stubborn: a local DNS-over-TLS stub resolver.
//!
//! Layout:
//! - [`config`]: the TOML schema, its validation and the embedded default.
//! - [`daemon`]: wiring and shutdown.
//! - [`pipeline`]: one query in, one answer out, bounded in time.
//! - [`cache`]: answers in wire form with TTLs, negative caching and serve-stale; pure.
//! - [`message`]: pure shaping of queries and answers between the two sides (EDNS, padding).
//! - [`upstream`]: connections, the happy-eyeballs race, the pool.
//! - [`tls`]: rustls client configs and the pin verifier.
//! - [`systemd`]: readiness/status/watchdog notifications, socket activation, privilege drop.
//! - [`frontend`]: the client side (UDP and TCP listeners, request checks, the query log).
//! - [`local`]: the names answered here and never forwarded (localhost, private reverse zones, ...); pure.
//! - [`metrics`]: counters, histograms and the Prometheus text endpoint.
//! - [`tools`]: the operator's commands: the health probe and the pin tool.
pub mod cache;
pub mod config;
pub mod daemon;
pub mod frontend;
/// Fuzz harnesses (docs/fuzzing.md); not used by the daemon.
#[doc(hidden)]
pub mod fuzz;
pub mod local;
pub mod message;
pub mod metrics;
pub mod netwatch;
pub mod pipeline;
pub mod route;
pub mod scrub;
pub mod systemd;
pub mod tls;
pub mod tools;
pub mod upstream;
mod wire;
