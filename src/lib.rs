//! stubborn: a local DNS-over-TLS stub resolver.
pub mod config;
pub mod upstream;
