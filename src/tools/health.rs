//! `stubborn health`: is the daemon answering, and does an upstream work?
//!
//! One DNS query over UDP to the daemon, for a name every recursive resolver answers
//! (`. NS` by default), with [`BYPASS_CACHE_OPTION`] so that the answer must come from
//! an upstream now: a cached (or stale) answer would say nothing about whether an
//! upstream connection is up or can be raced. NOERROR is healthy; anything else (no
//! answer in time, SERVFAIL with the daemon's Extended DNS Error, REFUSED ...) is not,
//! and the reason fits on one line. `--local` only checks that the daemon answers at all
//! (`resolver.arpa.`, answered without leaving the host): a liveness check that a network
//! outage cannot fail.
//!
//! A client of the daemon: it never reads the daemon's state any other way.

use std::{
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        Name, RecordType,
        rdata::opt::{EdnsCode, EdnsOption},
    },
};
use tokio::{
    net::UdpSocket,
    time::{Instant, timeout_at},
};

use crate::{message::BYPASS_CACHE_OPTION, systemd};

/// The default question: the root's NS set, which every recursive resolver can answer.
pub const DEFAULT_NAME: &str = ".";
/// How long the daemon has to answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A healthy daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthy {
    pub server: SocketAddr,
    pub question: String,
    pub elapsed: Duration,
    pub local_only: bool,
}

impl fmt::Display for Healthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.local_only {
            write!(f, "healthy: {} answers (local check only: upstreams not tested)", self.server)
        } else {
            write!(
                f,
                "healthy: {} answered {} with NOERROR from an upstream in {} ms",
                self.server,
                self.question,
                self.elapsed.as_millis()
            )
        }
    }
}

/// Why the daemon is not healthy; each says so in one line.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("unhealthy: {server}: no answer to {question} within {} ms", .within.as_millis())]
    Timeout { server: SocketAddr, question: String, within: Duration },
    #[error("unhealthy: {server}: {source}")]
    Io { server: SocketAddr, source: io::Error },
    #[error("unhealthy: {0}")]
    Rcode(Box<BadRcode>),
    #[error("unhealthy: {0}")]
    Local(#[from] systemd::ProbeError),
}

/// The daemon answered, but not with NOERROR from an upstream.
#[derive(Debug)]
pub struct BadRcode {
    pub server: SocketAddr,
    pub question: String,
    pub rcode: String,
    /// The Extended DNS Error (RFC 8914) the daemon attached: code and text.
    pub ede: Option<(u16, String)>,
    hint: &'static str,
}

impl fmt::Display for BadRcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} answered {} with {}{}{}",
            self.server,
            self.question,
            self.rcode,
            ede_text(&self.ede),
            self.hint
        )
    }
}

fn ede_text(ede: &Option<(u16, String)>) -> String {
    match ede {
        Some((code, text)) if text.is_empty() => format!(" (EDE {code} {})", ede_name(*code)),
        Some((code, text)) => format!(" (EDE {code} {}: {text})", ede_name(*code)),
        None => String::new(),
    }
}

/// RFC 8914 §4 names of the codes a forwarder is likely to see.
fn ede_name(code: u16) -> &'static str {
    match code {
        0 => "Other Error",
        3 => "Stale Answer",
        6 => "DNSSEC Bogus",
        9 => "DNSKEY Missing",
        15 => "Blocked",
        18 => "Prohibited",
        20 => "Not Authoritative",
        21 => "Not Supported",
        22 => "No Reachable Authority",
        23 => "Network Error",
        _ => "",
    }
}

/// The address to probe for a daemon listening on `listen`: an unspecified address is
/// reached through the loopback address of its family.
pub fn probe_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

/// Only checks that the daemon at `server` answers (any RCODE), without upstreams.
pub async fn check_local(server: SocketAddr, within: Duration) -> Result<Healthy, Unhealthy> {
    let started = Instant::now();
    systemd::probe(server, within).await?;
    Ok(Healthy {
        server,
        question: systemd::watchdog::PROBE_NAME.to_owned(),
        elapsed: started.elapsed(),
        local_only: true,
    })
}

/// Asks the daemon at `server` for `name` NS, bypassing its cache; healthy on NOERROR.
pub async fn check(server: SocketAddr, name: &Name, within: Duration) -> Result<Healthy, Unhealthy> {
    let question = format!("\"{name} NS\"");
    let started = Instant::now();
    let deadline = started + within;
    let io_err = |source| Unhealthy::Io { server, source };
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io_err)?;
    socket.connect(server).await.map_err(io_err)?;
    let id: u16 = rand::random();
    socket.send(&health_query(id, name)).await.map_err(io_err)?;
    let mut buf = vec![0u8; 4096];
    let reply = loop {
        let timed_out = || Unhealthy::Timeout { server, question: question.clone(), within };
        let len = match timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Err(timed_out()),
            // ICMP port unreachable: nothing listens there.
            Ok(Err(err)) if err.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(Unhealthy::Io {
                    server,
                    source: io::Error::new(err.kind(), "nothing listens there (connection refused)"),
                });
            }
            Ok(res) => res.map_err(io_err)?,
        };
        match Message::from_vec(&buf[..len]) {
            Ok(msg) if msg.metadata.id == id && msg.metadata.message_type == MessageType::Response => {
                break msg;
            }
            _ => continue,
        }
    };
    judge(server, question, &reply, started.elapsed())
}

fn judge(
    server: SocketAddr,
    question: String,
    reply: &Message,
    elapsed: Duration,
) -> Result<Healthy, Unhealthy> {
    let rcode = reply.metadata.response_code;
    let ede = reply.edns.as_ref().and_then(|e| {
        match e.option(EdnsCode::Unknown(crate::message::EDNS_OPTION_EDE)) {
            Some(EdnsOption::Unknown(_, data)) if data.len() >= 2 => Some((
                u16::from_be_bytes([data[0], data[1]]),
                String::from_utf8_lossy(&data[2..]).into_owned(),
            )),
            _ => None,
        }
    });
    // EDE 3: a stale answer, which means no upstream answered.
    if rcode == ResponseCode::NoError && ede.as_ref().is_none_or(|(code, _)| *code != 3) {
        return Ok(Healthy { server, question, elapsed, local_only: false });
    }
    let hint = match rcode {
        ResponseCode::Refused => ": is this client in server.allow?",
        ResponseCode::NXDomain => {
            ": an upstream answered, but the name does not exist; pick a --name that does"
        }
        ResponseCode::NoError => ": a stale answer means no upstream answered",
        _ => "",
    };
    Err(Unhealthy::Rcode(Box::new(BadRcode { server, question, rcode: rcode_name(rcode), ede, hint })))
}

fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE {}", u16::from(other)),
    }
}

/// `name IN NS`, RD=1, EDNS with [`BYPASS_CACHE_OPTION`].
fn health_query(id: u16, name: &Name) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name.clone(), RecordType::NS));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.options_mut().insert(EdnsOption::Unknown(BYPASS_CACHE_OPTION, Vec::new()));
    msg.set_edns(edns);
    msg.to_vec().expect("a one-question query always encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(rcode: ResponseCode, ede: Option<(u16, &str)>) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        let mut edns = Edns::new();
        if let Some((code, text)) = ede {
            let mut data = code.to_be_bytes().to_vec();
            data.extend_from_slice(text.as_bytes());
            edns.options_mut().insert(EdnsOption::Unknown(15, data));
        }
        m.set_edns(edns);
        m
    }

    fn verdict(m: &Message) -> Result<Healthy, Unhealthy> {
        judge("127.0.0.1:53".parse().unwrap(), "\". NS\"".into(), m, Duration::from_millis(3))
    }

    #[test]
    fn noerror_is_healthy_and_everything_else_says_why() {
        assert!(verdict(&reply(ResponseCode::NoError, None)).is_ok());
        let err =
            verdict(&reply(ResponseCode::ServFail, Some((23, "no upstream connection: rst")))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unhealthy: 127.0.0.1:53 answered \". NS\" with SERVFAIL (EDE 23 Network Error: no upstream connection: rst)"
        );
        let err = verdict(&reply(ResponseCode::Refused, None)).unwrap_err();
        assert!(err.to_string().ends_with("with REFUSED: is this client in server.allow?"), "{err}");
        let err = verdict(&reply(ResponseCode::NoError, Some((3, "")))).unwrap_err();
        assert!(err.to_string().contains("EDE 3 Stale Answer"), "{err}");
    }

    #[test]
    fn the_query_asks_to_bypass_the_cache() {
        let q = Message::from_vec(&health_query(9, &Name::root())).unwrap();
        assert_eq!(q.queries[0].query_type(), RecordType::NS);
        assert!(q.metadata.recursion_desired);
        assert!(q.edns.unwrap().option(EdnsCode::Unknown(BYPASS_CACHE_OPTION)).is_some());
    }

    #[test]
    fn unspecified_listen_addresses_are_probed_on_loopback() {
        assert_eq!(probe_address("0.0.0.0:53".parse().unwrap()), "127.0.0.1:53".parse().unwrap());
        assert_eq!(probe_address("[::]:5353".parse().unwrap()), "[::1]:5353".parse().unwrap());
        assert_eq!(probe_address("10.0.0.1:53".parse().unwrap()), "10.0.0.1:53".parse().unwrap());
    }
}
