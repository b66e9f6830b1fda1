//! `server.max_tcp_clients` against `RLIMIT_NOFILE`: each client connection is a
//! descriptor, so a cap above what the process may open would end in `accept()` failing
//! with EMFILE (and upstream connections failing with it) instead of the cap's orderly
//! refusal. At start the soft limit is raised (up to the hard one) to make room, or the
//! start is refused with a message that names the key.

/// Descriptors kept for everything but client connections: listeners, upstream
/// connections (per serving thread, with spares and races), the metrics endpoint,
/// log and config files.
pub const FD_RESERVE: u64 = 256;

/// What to do about the descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdPlan {
    /// The soft limit already leaves room.
    Enough,
    /// Raise the soft limit to this (at most the hard limit).
    Raise(u64),
    /// Even the hard limit is too low.
    Refuse { needed: u64, hard: u64 },
}

/// Why the daemon will not start with this `max_tcp_clients`.
#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    #[error(
        "server.max_tcp_clients = {max_tcp_clients} needs about {needed} open files, but \
         RLIMIT_NOFILE allows at most {hard}: lower server.max_tcp_clients to {fits} or less, \
         or raise the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn)"
    )]
    TooLow { max_tcp_clients: usize, needed: u64, hard: u64, fits: u64 },
    #[error(
        "cannot read or raise RLIMIT_NOFILE (server.max_tcp_clients = {max_tcp_clients} needs {needed}): {source}"
    )]
    System { max_tcp_clients: usize, needed: u64, source: std::io::Error },
}

/// The decision for `max_tcp_clients` under the limits `soft` and `hard`.
pub fn plan(max_tcp_clients: usize, soft: u64, hard: u64) -> FdPlan {
    let needed = (max_tcp_clients as u64).saturating_add(FD_RESERVE);
    if needed <= soft {
        FdPlan::Enough
    } else if needed <= hard {
        FdPlan::Raise(needed)
    } else {
        FdPlan::Refuse { needed, hard }
    }
}

/// The error for a [`FdPlan::Refuse`].
pub fn refusal(max_tcp_clients: usize, needed: u64, hard: u64) -> FdLimitError {
    FdLimitError::TooLow { max_tcp_clients, needed, hard, fits: hard.saturating_sub(FD_RESERVE) }
}

/// Applies [`plan`] to this process: Ok(Some(new soft limit)) when it was raised.
pub fn ensure(max_tcp_clients: usize) -> Result<Option<u64>, FdLimitError> {
    let needed = (max_tcp_clients as u64).saturating_add(FD_RESERVE);
    let system = |source| FdLimitError::System { max_tcp_clients, needed, source };
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(system(std::io::Error::last_os_error()));
    }
    match plan(max_tcp_clients, limit.rlim_cur, limit.rlim_max) {
        FdPlan::Enough => Ok(None),
        FdPlan::Refuse { needed, hard } => Err(refusal(max_tcp_clients, needed, hard)),
        FdPlan::Raise(to) => {
            limit.rlim_cur = to;
            // SAFETY: setrlimit reads the struct we own.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
                return Err(system(std::io::Error::last_os_error()));
            }
            Ok(Some(to))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_enough_changes_nothing() {
        assert_eq!(plan(512, 1024, 4096), FdPlan::Enough);
        assert_eq!(plan(768, 1024, 1024), FdPlan::Enough);
    }

    #[test]
    fn a_soft_limit_too_low_is_raised_to_what_is_needed() {
        assert_eq!(plan(4096, 1024, 524_288), FdPlan::Raise(4096 + FD_RESERVE));
        assert_eq!(plan(100_000, 1024, u64::MAX), FdPlan::Raise(100_000 + FD_RESERVE));
    }

    #[test]
    fn a_hard_limit_too_low_refuses_the_start_naming_the_key() {
        let FdPlan::Refuse { needed, hard } = plan(4096, 1024, 1024) else { panic!("refused") };
        let message = refusal(4096, needed, hard).to_string();
        assert!(
            message.starts_with("server.max_tcp_clients = 4096 needs about 4352 open files"),
            "{message}"
        );
        assert!(message.contains("at most 1024"), "{message}");
        assert!(message.contains("to 768 or less"), "{message}");
    }

    #[test]
    fn this_process_can_serve_the_default() {
        assert!(ensure(512).is_ok());
    }
}
