//! Shared test harness for stubborn's integration tests. Use it with `mod common;` at the
//! top of a `tests/*.rs` file.
//!
//! - [`upstream`]: [`TestUpstream`], an in-process DNS-over-TLS (or plain TCP/UDP) server on
//!   loopback with rcgen certificates, a fixed `test.` zone and switchable [`Fault`]s.
//! - [`pki`]: certificate chains and pin strings (`key-fp:SHA256:…`, `cert-fp:SHA256:…`).
//! - [`dns`]: the answer table, query builders, response inspection, RFC 7766 framing.
//! - [`client`]: a minimal DoT/TCP/UDP client (not stubborn) for asserting on answers.
//!
//! Everything here talks only to loopback addresses. Not every test file uses every
//! helper, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod dns;
pub mod pki;
pub mod upstream;

pub use client::{DotClient, client_config, dot_query, tcp_query, udp_query};
pub use pki::{ChainKind, cert_pin_of, key_pin_of_spki, spki_pin_of, unrelated_key_pin};
pub use upstream::{Fault, TestUpstream, TlsVersions, UpstreamOptions};
