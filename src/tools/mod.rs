//! The operator's tools, run as subcommands of the same binary: the health probe
//! (`stubborn health`) and the pin tool (`stubborn pin`).
//!
//! They are clients: they talk to a running daemon or to upstream servers over the
//! network, and never share state with a daemon in the same process.

pub mod health;
pub mod pin;
