//! Everything on the upstream side: connections, the happy-eyeballs race, the pool.
pub mod connection;
pub mod connector;
pub mod doh;
pub mod dot;
pub mod health;
pub mod plain;
pub mod pool;
pub mod race;
pub mod resolv_conf;
