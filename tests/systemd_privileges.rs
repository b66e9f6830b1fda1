//! `[server] user`: dropping root after binding, in a child process (a uid switch is for
//! the whole process and cannot be undone). Needs root; without root the tests say so
//! and pass, except under `CI=true`, where they fail.

mod systemd_support;

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt,
    process::Command,
    sync::mpsc,
};

use stubborn::systemd::{
    PrivDrop, PrivError,
    privileges::{Account, drop_privileges_using},
};
use systemd_support::*;

const UID: u32 = 4242;
const GID: u32 = 4243;

/// The child half. `STUBBORN_TEST_CHILD` = the user to drop to, `STUBBORN_TEST_PASSWD` =
/// the passwd file.
#[test]
#[ignore = "child process of the tests in this file"]
fn child_drop_privileges() {
    let (Some(user), Some(passwd)) =
        (std::env::var_os("STUBBORN_TEST_CHILD"), std::env::var_os("STUBBORN_TEST_PASSWD"))
    else {
        return;
    };
    let user = user.into_string().unwrap();
    // A socket bound before the drop, as the daemon's listeners are.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // A thread that exists before the drop, as tokio's workers do: credentials are per
    // thread in Linux, so libc must switch every thread.
    let (ask, asked) = mpsc::channel::<()>();
    let (tell, told) = mpsc::channel::<(u32, u32)>();
    let worker = std::thread::spawn(move || {
        asked.recv().unwrap();
        // SAFETY: getters without preconditions.
        tell.send(unsafe { (libc::getuid(), libc::geteuid()) }).unwrap();
    });

    match drop_privileges_using(passwd.as_ref(), &user) {
        Ok(PrivDrop::Dropped(Account { uid, gid, .. })) => println!("CHILD: dropped {uid}:{gid}"),
        Ok(PrivDrop::NotRoot { euid }) => println!("CHILD: not root {euid}"),
        Err(e @ PrivError::TargetIsRoot { .. }) => println!("CHILD: target is root: {e}"),
        Err(e @ PrivError::UnknownUser { .. }) => println!("CHILD: unknown user: {e}"),
        Err(e) => println!("CHILD: error: {e}"),
    }
    // SAFETY: getters without preconditions; getgroups(0, NULL) only counts.
    let (uid, euid, gid, egid, groups) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
            libc::getgroups(0, std::ptr::null_mut()),
        )
    };
    println!("CHILD: ids {uid} {euid} {gid} {egid} groups={groups}");
    ask.send(()).unwrap();
    let (t_uid, t_euid) = told.recv().unwrap();
    worker.join().unwrap();
    println!("CHILD: other thread {t_uid} {t_euid}");
    let cap_eff = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_owned()))
        .unwrap();
    println!("CHILD: CapEff {cap_eff}");
    // The socket bound as root still serves.
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).unwrap();
    println!("CHILD: accept {}", listener.accept().is_ok());
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true: the privilege-drop tests need root");
    eprintln!("not root: skipping the privilege-drop test");
    true
}

fn passwd_file() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    write!(
        f,
        "root:x:0:0:root:/root:/bin/sh\n\
         stubtest:x:{UID}:{GID}::/nonexistent:/usr/sbin/nologin\n"
    )
    .unwrap();
    f
}

fn run_child(user: &str, passwd: &std::path::Path, as_uid: Option<(u32, u32)>) -> Vec<String> {
    let mut cmd = Command::new(this_test_binary());
    cmd.args(child_test_args("child_drop_privileges"))
        .env("STUBBORN_TEST_CHILD", user)
        .env("STUBBORN_TEST_PASSWD", passwd);
    if let Some((uid, gid)) = as_uid {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    child_lines(&out.stdout)
}

#[test]
fn root_drops_to_the_named_user_in_every_thread_and_keeps_its_sockets() {
    if skip_unless_root() {
        return;
    }
    let passwd = passwd_file();
    let lines = run_child("stubtest", passwd.path(), None);
    assert_eq!(
        lines,
        [
            format!("dropped {UID}:{GID}"),
            format!("ids {UID} {UID} {GID} {GID} groups=0"),
            format!("other thread {UID} {UID}"),
            "CapEff 0000000000000000".to_owned(),
            "accept true".to_owned(),
        ]
    );
}

#[test]
fn dropping_to_root_or_to_an_unknown_user_is_refused() {
    if skip_unless_root() {
        return;
    }
    let passwd = passwd_file();
    let lines = run_child("root", passwd.path(), None);
    assert!(lines[0].starts_with("target is root:"), "{lines:?}");
    assert!(lines[1].starts_with("ids 0 0 0 0"), "{lines:?}");
    let lines = run_child("nosuchuser", passwd.path(), None);
    assert!(lines[0].starts_with("unknown user:") && lines[0].contains("does not use NSS"), "{lines:?}");
    assert!(lines[1].starts_with("ids 0 0 0 0"), "{lines:?}");
}

#[test]
fn a_process_that_is_not_root_changes_nothing() {
    if skip_unless_root() {
        return;
    }
    // Started as an unprivileged user (as under DynamicUser=): nothing to drop.
    let passwd = passwd_file();
    let lines = run_child("stubtest", passwd.path(), Some((4300, 4300)));
    assert_eq!(lines[0], "not root 4300");
    assert!(lines[1].starts_with("ids 4300 4300 4300 4300"), "{lines:?}");
}
