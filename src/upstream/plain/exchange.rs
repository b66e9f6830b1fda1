//! The wire side of a plain exchange: the query as sent, which received message counts
//! as its answer, and the one-query TCP exchange after a truncated UDP answer.

use std::{io, net::SocketAddr, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, Interest},
    net::{TcpStream, UdpSocket},
};
use tracing::debug;

use super::schedule::{Proto, TryFailure};
use crate::upstream::dot::framing::{push_frame, question_bytes, questionless_error, same_question};

/// The largest UDP message (a server may ignore our EDNS size): a shorter buffer would
/// cut a datagram silently, and a cut answer can still carry the right question.
const UDP_BUFFER: usize = 65_535;
/// Datagrams read from one socket before the exchange's timers get a turn.
const DATAGRAMS_PER_WAKE: usize = 32;
/// Frames read on one TCP connection before giving up on it: a server sends one answer,
/// and anything else there is not worth waiting for long.
const TCP_FRAMES: usize = 4;

/// The query without its edns-tcp-keepalive option: `upstream_wire` asks for it (every
/// other upstream transport is TCP), and RFC 7828 §3.2.1 forbids it in UDP queries. Our
/// one TCP query per connection has no use for it either. `upstream_wire(false)` ends
/// with the OPT's RDLENGTH 4 and the empty option (code 11, length 0); anything else is
/// left as it is.
pub(super) fn udp_wire(mut wire: Vec<u8>) -> Vec<u8> {
    const TAIL: [u8; 6] = [0, 4, 0, 11, 0, 0];
    let n = wire.len();
    if n >= TAIL.len() && wire[n - TAIL.len()..] == TAIL {
        wire.truncate(n - 4);
        wire[n - 6..n - 4].copy_from_slice(&[0, 0]);
    }
    wire
}

/// What a received message is to the query sent under `id` with `question`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Its answer.
    Answer,
    /// Its answer, truncated (TC): ask again over TCP (RFC 7766 §5).
    Truncated,
    /// An error answer without a question under its ID (RFC 7858 §3.3): the server will
    /// not answer it.
    NoQuestion(u8),
    /// Not an answer to it (another ID, a query, another question, malformed): ignore.
    Ignore,
}

/// Judges `message`: an answer needs the ID, QR and the same question, the name
/// compared without case (RFC 5452 §9.1, RFC 4343). Never panics on any octets.
pub(super) fn judge(message: &[u8], id: u16, question: &[u8]) -> Verdict {
    if message.len() < 12 || message[..2] != id.to_be_bytes() || message[2] & 0x80 == 0 {
        return Verdict::Ignore;
    }
    match question_bytes(message) {
        Some(q) if same_question(q, question) => {
            if message[2] & 0x02 != 0 {
                Verdict::Truncated
            } else {
                Verdict::Answer
            }
        }
        Some(_) => Verdict::Ignore,
        None => questionless_error(message).map_or(Verdict::Ignore, Verdict::NoQuestion),
    }
}

/// What one try produced.
pub(super) enum Report {
    /// A valid answer, still under the try's ID.
    Answer(Vec<u8>),
    /// A valid UDP answer with TC set.
    Truncated,
    Failed(TryFailure),
}

/// Waits on a UDP try's connected socket for what it has to report: the answer, a
/// truncated answer, an error answer without a question, or a socket error. Datagrams
/// that answer nothing asked are ignored (RFC 5452 §9.1), however many come.
pub(super) async fn udp_answer(socket: Arc<UdpSocket>, id: u16, question: Vec<u8>) -> Report {
    let failed = |e: &io::Error| Report::Failed(TryFailure::from_io(Proto::Udp, e));
    let mut buf = Vec::new();
    loop {
        // ICMP port unreachable is left on the socket as an error (ECONNREFUSED), with no
        // data to read: only ERROR readiness wakes us for it, READABLE alone would not.
        let ready = match socket.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(ready) => ready,
            Err(e) => return failed(&e),
        };
        if ready.is_readable() {
            if buf.is_empty() {
                buf = vec![0u8; UDP_BUFFER];
            }
            for _ in 0..DATAGRAMS_PER_WAKE {
                match socket.try_recv(&mut buf) {
                    Ok(n) => match judge(&buf[..n], id, &question) {
                        Verdict::Answer => return Report::Answer(buf[..n].to_vec()),
                        Verdict::Truncated => return Report::Truncated,
                        Verdict::NoQuestion(rcode) => return Report::Failed(TryFailure::NoQuestion(rcode)),
                        Verdict::Ignore => debug!(len = n, "ignoring a datagram that answers nothing asked"),
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return failed(&e),
                }
            }
        }
        if ready.is_read_closed() {
            // Never for a UDP socket nobody shut down; a final state, so end rather than
            // wake on it again and again.
            return Report::Failed(TryFailure::Io(Proto::Udp, io::ErrorKind::NotConnected));
        }
        if ready.is_error() {
            // SO_ERROR, which reading it clears; none after all clears the readiness.
            let pending = socket.try_io(Interest::ERROR, || match socket.take_error() {
                Ok(Some(e)) | Err(e) => Ok(e),
                Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
            });
            if let Ok(e) = pending {
                return failed(&e);
            }
        }
        // Let the exchange's timers run between batches, whatever floods the socket.
        tokio::task::yield_now().await;
    }
}

/// Asks `server` over one TCP connection, under a fresh ID, and reads its answer (RFC
/// 7766 §5). The answer is taken even with TC set: there is nothing further to fall back
/// to. The connection closes when this ends or is dropped; the caller bounds the time.
pub(super) async fn tcp_exchange(server: SocketAddr, query: Vec<u8>, question: Vec<u8>) -> Report {
    match tcp_answer(server, query, question).await {
        Ok(answer) => Report::Answer(answer),
        Err(why) => Report::Failed(why),
    }
}

async fn tcp_answer(
    server: SocketAddr,
    mut query: Vec<u8>,
    question: Vec<u8>,
) -> Result<Vec<u8>, TryFailure> {
    let io = |e: io::Error| TryFailure::from_io(Proto::Tcp, &e);
    let id: u16 = rand::random();
    query[..2].copy_from_slice(&id.to_be_bytes());
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    // The length prefix and the message in one write (RFC 7766 §8).
    let mut out = Vec::with_capacity(2 + query.len());
    push_frame(&mut out, &query);
    stream.write_all(&out).await.map_err(io)?;
    for _ in 0..TCP_FRAMES {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.map_err(io)?;
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut message).await.map_err(io)?;
        match judge(&message, id, &question) {
            Verdict::Answer | Verdict::Truncated => return Ok(message),
            Verdict::NoQuestion(rcode) => return Err(TryFailure::NoQuestion(rcode)),
            Verdict::Ignore => {}
        }
    }
    Err(TryFailure::Unmatched)
}
