//! [`Notifier`]: the daemon's side of `sd_notify(3)`.
//!
//! Messages are formatted by sd-notify's [`NotifyState`] and sent as one datagram each to
//! the socket named by `NOTIFY_SOCKET`, captured once by [`Notifier::from_env`]. Capturing
//! (rather than calling `sd_notify::notify`, which reads the variable on every call) lets
//! a test point a notifier at its own socket without touching the process environment,
//! and also accepts abstract (`@name`) sockets, which sd-notify does not.
//!
//! Sending never fails the caller: the service manager is an observer, and a daemon that
//! cannot reach it should keep serving (systemd's own start/watchdog timeouts catch a
//! daemon that truly cannot). Failures are logged at warn.

use std::{
    ffi::{OsStr, OsString},
    io,
    os::unix::{
        ffi::OsStrExt,
        net::{SocketAddr as UnixAddr, UnixDatagram},
    },
    sync::Mutex,
    time::Duration,
};

use sd_notify::NotifyState;
use tracing::{debug, warn};

/// How long a send may block when the manager's queue is full. A notification is
/// worth less than a stalled runtime worker.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends readiness, status, reload, stop and watchdog notifications to the service
/// manager; every method is a no-op when there is none. Cheap to share (`Arc`), all
/// methods take `&self`.
pub struct Notifier {
    target: Option<Target>,
    /// `WATCHDOG_USEC` as given (for this process), never zero.
    watchdog: Option<Duration>,
    /// The last `STATUS=` sent, so that [`Notifier::status`] only sends changes.
    last_status: Mutex<Option<String>>,
}

struct Target {
    addr: UnixAddr,
    /// For log lines.
    display: OsString,
    socket: UnixDatagram,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` once. Safe to call at any
    /// time (it only reads the environment). Without `NOTIFY_SOCKET` every method is a
    /// no-op, and then [`Notifier::watchdog_interval`] is `None` too: there is nobody to
    /// ping.
    pub fn from_env() -> Notifier {
        let watchdog = sd_notify::watchdog_enabled();
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) if !path.is_empty() => Notifier::to_socket(&path, watchdog),
            _ => Notifier::disabled(),
        }
    }

    /// A notifier that never sends anything.
    pub fn disabled() -> Notifier {
        Notifier { target: None, watchdog: None, last_status: Mutex::new(None) }
    }

    /// A notifier sending to `socket` (a path, or `@name` for an abstract socket) with
    /// the given `WatchdogSec`. For tests, and for [`Notifier::from_env`]. An unusable
    /// address (a relative path, `vsock:`) gives a disabled notifier and a warning.
    pub fn to_socket(socket: &OsStr, watchdog: Option<Duration>) -> Notifier {
        let target = match Target::new(socket) {
            Ok(target) => Some(target),
            Err(err) => {
                warn!(notify_socket = ?socket, %err, "cannot use NOTIFY_SOCKET; not notifying the service manager");
                None
            }
        };
        let watchdog = target.as_ref().and(watchdog.filter(|d| !d.is_zero()));
        Notifier { target, watchdog, last_status: Mutex::new(None) }
    }

    /// Whether a service manager is listening (`NOTIFY_SOCKET` was set and usable).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1` with a first `STATUS=`. Send it only when the config is valid and every
    /// listener is bound; again after a reload (which ends the `RELOADING=1` state).
    pub fn ready(&self, status: &str) {
        let status = one_line(status);
        if self.send_logged(&[NotifyState::Ready, NotifyState::Status(&status)]) {
            self.remember(status);
        }
    }

    /// `STATUS=line`, only when it differs from the last one sent. Returns whether a
    /// message was sent, so a caller may call this as often as it likes.
    pub fn status(&self, line: &str) -> bool {
        if self.target.is_none() {
            return false;
        }
        let line = one_line(line);
        if self.last_status().as_deref() == Some(line.as_str()) {
            return false;
        }
        let sent = self.send_logged(&[NotifyState::Status(&line)]);
        if sent {
            self.remember(line);
        }
        sent
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC now), as systemd ≥ 253 requires
    /// for `Type=notify-reload` and older versions ignore. Follow it with
    /// [`Notifier::ready`] when the reload is done, whether it succeeded or not.
    pub fn reloading(&self) {
        if self.target.is_none() {
            return;
        }
        const STATUS: &str = "reloading configuration";
        let sent = match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send_logged(&[NotifyState::Reloading, now, NotifyState::Status(STATUS)]),
            Err(err) => {
                warn!(%err, "cannot read CLOCK_MONOTONIC; sending RELOADING=1 without MONOTONIC_USEC");
                self.send_logged(&[NotifyState::Reloading, NotifyState::Status(STATUS)])
            }
        };
        if sent {
            self.remember(STATUS.to_owned());
        }
    }

    /// `STOPPING=1`: send it first thing on SIGTERM/SIGINT, before draining.
    pub fn stopping(&self) {
        const STATUS: &str = "stopping: answering queries in flight";
        if self.send_logged(&[NotifyState::Stopping, NotifyState::Status(STATUS)]) {
            self.remember(STATUS.to_owned());
        }
    }

    /// How often to send `WATCHDOG=1`: half of `WatchdogSec` (`sd_watchdog_enabled(3)`
    /// recommends that), or `None` when the watchdog is off or there is no manager.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// `WATCHDOG=1`. Call it only after checking that the daemon still works.
    pub fn watchdog_ping(&self) {
        self.send_logged(&[NotifyState::Watchdog]);
    }

    /// Sends `states` as one datagram. `Ok` without sending when disabled. The
    /// convenience methods above log errors instead of returning them.
    pub fn send(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let msg = message(states);
        let sent = target.socket.send_to_addr(msg.as_bytes(), &target.addr)?;
        if sent == msg.len() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::WriteZero, "notification truncated"))
        }
    }

    fn send_logged(&self, states: &[NotifyState<'_>]) -> bool {
        let Some(target) = &self.target else {
            return false;
        };
        match self.send(states) {
            Ok(()) => {
                debug!(notify = %message(states).trim_end().replace('\n', " "), "notified the service manager");
                true
            }
            Err(err) => {
                warn!(notify_socket = ?target.display, %err, "cannot notify the service manager");
                false
            }
        }
    }

    fn last_status(&self) -> Option<String> {
        self.last_status.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn remember(&self, status: String) {
        *self.last_status.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(status);
    }
}

impl Target {
    fn new(socket: &OsStr) -> io::Result<Target> {
        let bytes = socket.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => UnixAddr::from_pathname(socket)?,
            Some(b'@') => abstract_addr(&bytes[1..])?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "expected an absolute path or @abstract-name",
                ));
            }
        };
        let socket_fd = UnixDatagram::unbound()?;
        socket_fd.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Target { addr, display: socket.to_owned(), socket: socket_fd })
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<UnixAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    UnixAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_: &[u8]) -> io::Result<UnixAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract sockets exist only on Linux"))
}

/// The datagram for `states`: one `KEY=value` per line (sd_notify(3)).
fn message(states: &[NotifyState<'_>]) -> String {
    let mut msg = String::new();
    for state in states {
        msg.push_str(&state.to_string());
        msg.push('\n');
    }
    msg
}

/// A newline would end the `STATUS=` field and start a bogus one.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_assignment_per_line() {
        assert_eq!(
            message(&[NotifyState::Ready, NotifyState::Status("1/1 upstreams up")]),
            "READY=1\nSTATUS=1/1 upstreams up\n"
        );
        assert_eq!(message(&[NotifyState::Watchdog]), "WATCHDOG=1\n");
    }

    #[test]
    fn status_lines_cannot_inject_fields() {
        assert_eq!(one_line("a\nREADY=1\r\nb"), "a READY=1  b");
    }

    #[test]
    fn a_disabled_notifier_does_nothing() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        assert!(!n.status("x"));
        n.ready("x");
        n.reloading();
        n.stopping();
        n.watchdog_ping();
        assert_eq!(n.watchdog_interval(), None);
        assert!(n.send(&[NotifyState::Ready]).is_ok());
    }

    #[test]
    fn relative_paths_and_vsock_are_refused() {
        for bad in ["run/notify", "vsock:2:1234", ""] {
            let n = Notifier::to_socket(OsStr::new(bad), Some(Duration::from_secs(30)));
            assert!(!n.is_enabled(), "{bad}");
            assert_eq!(n.watchdog_interval(), None, "{bad}");
        }
    }

    #[test]
    fn the_watchdog_interval_is_half_of_watchdog_sec() {
        let dir = std::env::temp_dir();
        let path = dir.join("stubborn-notify-unit-test.sock");
        let n = Notifier::to_socket(path.as_os_str(), Some(Duration::from_secs(30)));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
        let n = Notifier::to_socket(path.as_os_str(), Some(Duration::ZERO));
        assert_eq!(n.watchdog_interval(), None);
        let n = Notifier::to_socket(path.as_os_str(), None);
        assert_eq!(n.watchdog_interval(), None);
    }
}
