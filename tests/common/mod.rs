//! Shared test harness for stubborn's integration tests. Use it with `mod common;` at the
//! top of a `tests/*.rs` file.
//!
//! - [`upstream`]: [`TestUpstream`], an in-process DNS-over-TLS (or plain TCP/UDP) server on
//!   loopback with rcgen certificates, a fixed `test.` zone and switchable [`Fault`]s.
//! - [`pki`]: certificate chains and pin strings (`key-fp:SHA256:…`, `cert-fp:SHA256:…`).
//! - [`hostile`]: the misbehaviours of [`Fault::Hostile`], drawn from a seeded PRNG.
//! - [`dns`]: the answer table, query builders, response inspection, RFC 7766 framing.
//! - [`client`]: a minimal DoT/TCP/UDP client (not stubborn) for asserting on answers.
//! - [`doh_upstream`]: [`DohUpstream`], an in-process DNS-over-HTTPS server (HTTP/2) on
//!   loopback answering from the same table, with switchable [`DohFault`]s.
//!
//! Everything here talks only to loopback addresses. Not every test file uses every
//! helper, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod dns;
pub mod doh_upstream;
pub mod hostile;
pub mod pki;
pub mod upstream;

pub use client::{DotClient, client_config, dot_query, tcp_query, udp_query};
pub use doh_upstream::{DohFault, DohOptions, DohRequest, DohUpstream};
pub use pki::{ChainKind, cert_pin_of, key_pin_of_spki, spki_pin_of, unrelated_key_pin};
pub use upstream::{Fault, TestUpstream, TlsVersions, UpstreamOptions};

/// A listen address no other test in this process can take: a loopback address of its own
/// (127.77.x.y, which Linux routes to `lo`) with a port free there for UDP and TCP.
/// Picking a free port on 127.0.0.1 and handing it to a child is racy: until the child
/// binds, the kernel may give the same port to any other test's port-0 socket.
pub fn private_listen_addr() -> std::net::SocketAddr {
    use std::{
        net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
        sync::atomic::{AtomicU16, Ordering},
    };
    static NEXT: AtomicU16 = AtomicU16::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let ip = Ipv4Addr::new(127, 77, (n >> 8) as u8, (n & 0xff) as u8);
    loop {
        let udp = UdpSocket::bind((ip, 0)).unwrap();
        let addr: SocketAddr = udp.local_addr().unwrap();
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// Kills a child daemon if the test fails before stopping it, so no daemon outlives its
/// test (and holds the test runner's pipes open).
pub struct KillOnDrop(pub Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
