//! Running stubborn in-process against test upstreams: config text in, a bound daemon out.
#![allow(dead_code)]

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use stubborn::{
    config::{Config, ConfigOrigin},
    daemon::Daemon,
};
use tempfile::TempDir;

use crate::common::TestUpstream;

/// How a test authenticates an upstream.
pub enum Auth<'a> {
    /// `pins = [pin]` (no tls_name).
    Pin(&'a str),
    /// `pins = [pin]` and `tls_name` (a CA pin needs the name).
    PinWithName { pin: &'a str, tls_name: &'a str },
    /// `tls_name` + `ca_file` holding the upstream's CA.
    Ca { tls_name: &'a str },
}

/// One `[[upstream]]` block for `up`.
pub fn upstream_block(name: &str, up: &TestUpstream, auth: Auth<'_>, dir: &TempDir) -> String {
    let auth = match auth {
        Auth::Pin(pin) => format!("pins = [\"{pin}\"]\n"),
        Auth::PinWithName { pin, tls_name } => format!("pins = [\"{pin}\"]\ntls_name = \"{tls_name}\"\n"),
        Auth::Ca { tls_name } => {
            let path: PathBuf = dir.path().join(format!("{name}-ca.pem"));
            std::fs::write(&path, &up.ca_pem).unwrap();
            format!("tls_name = \"{tls_name}\"\nca_file = \"{}\"\n", path.display())
        }
    };
    format!(
        "[[upstream]]\nname = \"{name}\"\naddresses = [\"{}\"]\ntls_port = {}\n{auth}",
        up.addr.ip(),
        up.addr.port()
    )
}

/// A daemon listening on 127.0.0.1:<ephemeral> (UDP and TCP on the same port).
pub struct Stub {
    pub addr: SocketAddr,
    daemon: Option<Daemon>,
    pub dir: TempDir,
}

impl Stub {
    /// Starts a daemon with `[server]` extras and upstream blocks (built with `dir`).
    /// Unless the extras set `threads`, one thread serves (one upstream pool), so a test
    /// sees every query in [`Stub::pool`].
    pub async fn start(server_extra: &str, upstreams: &str, dir: TempDir) -> Stub {
        let threads = if server_extra.contains("threads") { "" } else { "threads = 1\n" };
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nquery_timeout_ms = 2000\n{threads}{server_extra}\n{upstreams}"
        );
        let config = Config::from_toml(&text, ConfigOrigin::Embedded)
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        let daemon = Daemon::start(&config).await.expect("daemon starts");
        Stub { addr: daemon.local_addrs[0], daemon: Some(daemon), dir }
    }

    /// A daemon with one upstream authenticated by its leaf key pin.
    pub async fn pinned(up: &TestUpstream) -> Stub {
        let dir = tempfile::tempdir().unwrap();
        let block = upstream_block("up", up, Auth::Pin(&up.leaf_key_pin), &dir);
        Stub::start("", &block, dir).await
    }

    /// The daemon's upstream pool.
    pub fn pool(&self) -> stubborn::upstream::pool::Pool {
        self.daemon.as_ref().expect("running").pool()
    }

    /// Every upstream pool of the daemon's default set (one per serving thread, and TCP's).
    pub fn pools(&self) -> Vec<stubborn::upstream::pool::Pool> {
        self.daemon.as_ref().expect("running").pools()
    }

    /// The running daemon.
    pub fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("running")
    }

    pub async fn shutdown(mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown().await;
        }
    }
}

pub const UDP_WAIT: Duration = Duration::from_secs(5);

/// The parsed form of a client's A-or-other query for `name`, as the front end hands it
/// to the pipeline: RD set, EDNS with 1232 octets, no DO, CD or AD.
pub fn client_query(
    id: u16,
    name: &str,
    rtype: hickory_proto::rr::RecordType,
) -> stubborn::message::ClientQuery {
    stubborn::message::ClientQuery {
        id,
        // from_ascii keeps the case as written (parse() would fold it, as IDNA does).
        query: hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii(name).expect("a valid name"),
            rtype,
        ),
        recursion_desired: true,
        checking_disabled: false,
        authentic_data: false,
        edns: Some(stubborn::message::ClientEdns { dnssec_ok: false, max_payload: 1232 }),
        bypass_cache: false,
    }
}
