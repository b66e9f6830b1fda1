//! Dropping root after binding, for `[server] user` when stubborn is started as root
//! without systemd (under systemd, `DynamicUser=` and `AmbientCapabilities=` do this
//! better).
//!
//! The user is looked up in `/etc/passwd` by reading the file: `getpwnam(3)` goes through
//! NSS, which may consult LDAP/sssd and through them DNS, the service stubborn itself
//! provides. Users that exist only in such databases cannot be named; use a local one.
//!
//! The order is the classic one (CERT POS36-C): supplementary groups, then the group, then
//! the user, then a check that root cannot be regained. libc's `setgroups`/`setgid`/
//! `setuid` (glibc and musl alike) apply to every thread of the process, as POSIX
//! requires, so this may run inside the tokio runtime after its threads exist. Linux
//! clears the permitted and effective capabilities on the switch from uid 0 (no
//! `PR_SET_KEEPCAPS`), so sockets bound before the drop keep working and no new
//! privileged port can be bound afterwards.

use std::{
    ffi::OsStr,
    io,
    path::{Path, PathBuf},
};

/// Where [`drop_privileges`] looks users up.
pub const PASSWD_PATH: &str = "/etc/passwd";

/// A local account: the name and the ids to switch to (its primary group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// What [`drop_privileges`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivDrop {
    /// Was root; now runs as `account` with no supplementary groups.
    Dropped(Account),
    /// Not running as root (effective uid `euid`): nothing to drop, nothing changed. Log it
    /// when a user was configured, since the setting then has no effect.
    NotRoot { euid: u32 },
}

/// Why privileges could not be dropped. The daemon must not continue as root after any
/// of these.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("cannot read {}: {source}", .path.display())]
    ReadPasswd { path: PathBuf, source: io::Error },
    #[error("user {user:?} is not in {} (stubborn does not use NSS; add a local user)", .path.display())]
    UnknownUser { user: String, path: PathBuf },
    #[error("{}:{line}: malformed entry for user {user:?}", .path.display())]
    MalformedEntry { user: String, path: PathBuf, line: usize },
    #[error("user {user:?} has uid 0; refusing to \"drop\" to root")]
    TargetIsRoot { user: String },
    #[error(
        "user {user:?} has primary group 0 (root); refusing to run in the root group (give it a group of its own)"
    )]
    TargetGroupIsRoot { user: String },
    #[error("{call} failed: {source}")]
    Syscall { call: &'static str, source: io::Error },
    #[error("still privileged after switching to uid {uid}: {detail}")]
    StillPrivileged { uid: u32, detail: String },
}

/// When running as root (effective uid 0): looks `user` up in `/etc/passwd`, clears the
/// supplementary groups, switches to its primary group and its uid, and checks that
/// uid 0 cannot be regained. Call it after every listener is bound and before serving
/// the first query. When not root, changes nothing and returns [`PrivDrop::NotRoot`].
pub fn drop_privileges(user: &str) -> Result<PrivDrop, PrivError> {
    drop_privileges_using(Path::new(PASSWD_PATH), user)
}

/// [`drop_privileges`] with another passwd file (tests).
pub fn drop_privileges_using(passwd: &Path, user: &str) -> Result<PrivDrop, PrivError> {
    // SAFETY: geteuid cannot fail and has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Ok(PrivDrop::NotRoot { euid });
    }
    let text = std::fs::read_to_string(passwd)
        .map_err(|source| PrivError::ReadPasswd { path: passwd.to_owned(), source })?;
    let account = lookup_user(&text, user).map_err(|e| match e {
        Lookup::NotFound => PrivError::UnknownUser { user: user.to_owned(), path: passwd.to_owned() },
        Lookup::Malformed { line } => {
            PrivError::MalformedEntry { user: user.to_owned(), path: passwd.to_owned(), line }
        }
    })?;
    check_target(&account)?;
    switch_to(&account)?;
    Ok(PrivDrop::Dropped(account))
}

/// Refuses an account that would keep root's powers: uid 0, or primary gid 0 (the root
/// group owns files and devices a DNS daemon has no business writing, e.g. group-writable
/// ones under /etc; setgroups clears the supplementary groups but this one would stay).
pub fn check_target(account: &Account) -> Result<(), PrivError> {
    if account.uid == 0 {
        return Err(PrivError::TargetIsRoot { user: account.name.clone() });
    }
    if account.gid == 0 {
        return Err(PrivError::TargetGroupIsRoot { user: account.name.clone() });
    }
    Ok(())
}

/// Whether a service manager started us: systemd sets `INVOCATION_ID` for every unit it
/// runs, and `NOTIFY_SOCKET` for `Type=notify` ones. Empty values count as unset.
pub fn under_service_manager(notify_socket: Option<&OsStr>, invocation_id: Option<&OsStr>) -> bool {
    notify_socket.is_some_and(|v| !v.is_empty()) || invocation_id.is_some_and(|v| !v.is_empty())
}

/// [`under_service_manager`] from this process's environment.
pub fn under_service_manager_now() -> bool {
    under_service_manager(
        std::env::var_os("NOTIFY_SOCKET").as_deref(),
        std::env::var_os("INVOCATION_ID").as_deref(),
    )
}

/// Whether to warn that the daemon keeps running as root: effective uid 0, no
/// `[server] user` to drop to, and no service manager (under systemd, the unit decides:
/// `DynamicUser=`, `User=`, capabilities and sandboxing do it better than we can).
pub fn warn_staying_root(euid: u32, user_configured: bool, under_service_manager: bool) -> bool {
    euid == 0 && !user_configured && !under_service_manager
}

fn switch_to(account: &Account) -> Result<(), PrivError> {
    let check = |call: &'static str, rc: libc::c_int| {
        if rc == 0 { Ok(()) } else { Err(PrivError::Syscall { call, source: io::Error::last_os_error() }) }
    };
    // SAFETY: plain syscalls on integers; setgroups(0, NULL) clears the list and never
    // reads the pointer.
    unsafe {
        check("setgroups", libc::setgroups(0, std::ptr::null()))?;
        check("setgid", libc::setgid(account.gid))?;
        check("setuid", libc::setuid(account.uid))?;
    }
    // SAFETY: getters without preconditions; setuid(0) is the documented probe for a
    // leftover saved uid or CAP_SETUID, and fails with EPERM when the drop worked.
    let (ruid, euid, rgid, egid, regained) =
        unsafe { (libc::getuid(), libc::geteuid(), libc::getgid(), libc::getegid(), libc::setuid(0) == 0) };
    let still = |detail: String| Err(PrivError::StillPrivileged { uid: account.uid, detail });
    if regained {
        return still("setuid(0) succeeded".to_owned());
    }
    if (ruid, euid) != (account.uid, account.uid) || (rgid, egid) != (account.gid, account.gid) {
        return still(format!("uid {ruid}/{euid}, gid {rgid}/{egid} (real/effective)"));
    }
    Ok(())
}

/// Why [`lookup_user`] found no account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    NotFound,
    /// The user's line (1-based) has no numeric uid and gid.
    Malformed {
        line: usize,
    },
}

/// Finds `user` in passwd(5) text: `name:password:uid:gid:gecos:home:shell`. Blank lines,
/// `#` comments and NIS compat lines (`+…`, `-…`) are skipped; the first match wins, as
/// in glibc's files backend.
pub fn lookup_user(passwd: &str, user: &str) -> Result<Account, Lookup> {
    if user.is_empty() {
        return Err(Lookup::NotFound);
    }
    for (index, line) in passwd.lines().enumerate() {
        if line.is_empty() || line.starts_with(['#', '+', '-']) {
            continue;
        }
        let mut fields = line.split(':');
        if fields.next() != Some(user) {
            continue;
        }
        let _password = fields.next();
        let uid = fields.next().and_then(|f| f.parse::<u32>().ok());
        let gid = fields.next().and_then(|f| f.parse::<u32>().ok());
        return match (uid, gid) {
            (Some(uid), Some(gid)) => Ok(Account { name: user.to_owned(), uid, gid }),
            _ => Err(Lookup::Malformed { line: index + 1 }),
        };
    }
    Err(Lookup::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
+nisuser

nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
stubborn:x:998:997::/nonexistent:/usr/sbin/nologin
broken:x:abc:1::/:/bin/false
stubborn:x:1:1::/:/bin/false
";

    #[test]
    fn finds_users_by_exact_name() {
        assert_eq!(
            lookup_user(PASSWD, "stubborn"),
            Ok(Account { name: "stubborn".into(), uid: 998, gid: 997 })
        );
        assert_eq!(lookup_user(PASSWD, "nobody").unwrap().uid, 65534);
        assert_eq!(lookup_user(PASSWD, "root").unwrap().uid, 0);
    }

    #[test]
    fn prefixes_comments_and_nis_lines_do_not_match() {
        assert_eq!(lookup_user(PASSWD, "stub"), Err(Lookup::NotFound));
        assert_eq!(lookup_user(PASSWD, "# a comment"), Err(Lookup::NotFound));
        assert_eq!(lookup_user(PASSWD, "+nisuser"), Err(Lookup::NotFound));
        assert_eq!(lookup_user(PASSWD, ""), Err(Lookup::NotFound));
    }

    #[test]
    fn a_target_with_uid_or_primary_gid_0_is_refused() {
        let account = |uid, gid| Account { name: "x".into(), uid, gid };
        assert!(matches!(check_target(&account(0, 0)), Err(PrivError::TargetIsRoot { .. })));
        assert!(matches!(check_target(&account(0, 5)), Err(PrivError::TargetIsRoot { .. })));
        let err = check_target(&account(998, 0)).unwrap_err();
        assert!(matches!(err, PrivError::TargetGroupIsRoot { .. }), "{err}");
        assert!(err.to_string().contains("primary group 0"), "{err}");
        assert!(check_target(&account(998, 997)).is_ok());
        // From a passwd line: a user in the root group.
        let wheel = lookup_user("op:x:1000:0::/:/bin/sh\n", "op").unwrap();
        assert!(check_target(&wheel).is_err());
    }

    #[test]
    fn staying_root_is_warned_about_only_outside_a_service_manager_without_a_user() {
        assert!(warn_staying_root(0, false, false));
        assert!(!warn_staying_root(0, true, false), "the user is dropped to");
        assert!(!warn_staying_root(0, false, true), "the unit decides");
        assert!(!warn_staying_root(1000, false, false), "not root");
    }

    #[test]
    fn a_service_manager_is_recognised_by_its_environment() {
        let s = |v: &'static str| Some(OsStr::new(v));
        assert!(!under_service_manager(None, None));
        assert!(under_service_manager(s("/run/systemd/notify"), None));
        assert!(under_service_manager(None, s("0123456789abcdef0123456789abcdef")));
        assert!(!under_service_manager(s(""), s("")), "empty means unset");
    }

    #[test]
    fn a_non_numeric_uid_is_reported_with_its_line() {
        assert_eq!(lookup_user(PASSWD, "broken"), Err(Lookup::Malformed { line: 7 }));
    }
}
