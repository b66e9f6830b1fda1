//! The systemd-facing edge of the daemon: `sd_notify(3)` messages (readiness, status,
//! reload, stop, watchdog), socket activation (`sd_listen_fds(3)`), and dropping root
//! after binding when started without systemd.
//!
//! Owns the wire format of those interfaces and nothing else. It never decides *when* to
//! notify (the daemon's wiring does), never binds a socket, never reads the config, and
//! never consults NSS or the system resolver (user lookup parses `/etc/passwd` itself:
//! a DNS daemon must not depend on the resolver it provides).
//!
//! Every part is a no-op outside systemd: without `NOTIFY_SOCKET` the [`Notifier`] sends
//! nothing, without `LISTEN_FDS`/`LISTEN_PID` [`inherited_listeners`] returns `None`.
//!
//! Environment variables are read, never unset. sd-notify's `*_and_unset_env` variants
//! are `unsafe` (they race with any thread reading the environment, and the daemon binds
//! inside the tokio runtime, so threads exist by then). Unsetting only matters for child
//! processes, and stubborn starts none; instead [`Notifier::from_env`] captures what it
//! needs once, and [`inherited_listeners`] takes ownership of the descriptors at most once
//! per process.
//!
//! Layout:
//! - `notify`: [`Notifier`].
//! - `activation`: [`inherited_listeners`], [`Inherited`].
//! - `status`: [`status_line`], the one-line `STATUS=`.
//! - `watchdog`: [`run_watchdog`], which pings only while [`probe`] (or another check)
//!   shows that queries get answered.
//! - `privileges`: [`drop_privileges`] for `[server] user`.

pub mod activation;
pub mod notify;
pub mod privileges;
pub mod status;
pub mod watchdog;

pub use activation::{ActivationError, Inherited, inherited_listeners};
pub use notify::Notifier;
pub use privileges::{Account, PrivDrop, PrivError, drop_privileges};
pub use status::status_line;
pub use watchdog::{ProbeError, probe, run_watchdog};
