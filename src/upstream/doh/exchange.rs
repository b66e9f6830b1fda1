//! One DNS exchange over an HTTP/2 stream (RFC 8484), as pure functions: the request a
//! query becomes, and what a response must be before its body is an answer.
//!
//! Never touches a socket or a clock; `task.rs` feeds it what h2 delivered. Each check
//! here is a way a hostile or broken server could otherwise put something that is not
//! this query's answer in front of the cache.

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};

use crate::{
    upstream::dot::framing::{question_bytes, questionless_error, same_question},
    wire,
};

/// RFC 8484 §6: the one media type of a DNS message over HTTP, both ways.
pub const DNS_MESSAGE: &str = "application/dns-message";
/// The largest DNS message (RFC 1035 §4.2.2: a 16-bit length): a longer body is refused
/// before it is read to the end.
pub const MAX_ANSWER: usize = 65_535;

/// Why one stream produced no answer. The query fails at once (RFC 8484 §4.2.1: a non-2xx
/// status carries no DNS answer) and the failure counts against the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFailure {
    /// The response's status was not 2xx.
    Status(u16),
    /// A 2xx response whose content type is not `application/dns-message` (or is missing).
    ContentType,
    /// The body (or its Content-Length) is over 65535 octets.
    TooLarge,
    /// The body is not an answer to the query sent: unreadable, another question, an ID
    /// other than 0, or not a response.
    NotTheAnswer,
    /// The server reset the stream (RST_STREAM, or a GOAWAY that excluded it), with its
    /// HTTP/2 error code (RFC 9113 §7).
    Reset(u32),
    /// Any other HTTP/2 protocol error on the stream.
    Protocol,
}

impl fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamFailure::Status(code) => write!(f, "HTTP status {code}"),
            StreamFailure::ContentType => write!(f, "content type is not {DNS_MESSAGE}"),
            StreamFailure::TooLarge => write!(f, "body over {MAX_ANSWER} octets"),
            StreamFailure::NotTheAnswer => f.write_str("body is not the answer to the query"),
            StreamFailure::Reset(code) => write!(f, "stream reset (HTTP/2 error {code:#x})"),
            StreamFailure::Protocol => f.write_str("HTTP/2 protocol error"),
        }
    }
}

/// Where queries go on one DoH server: built once per connection.
#[derive(Debug, Clone)]
pub struct Endpoint {
    uri: Uri,
}

impl Endpoint {
    /// `authority` is what `:authority` carries (the `tls_name`, or the address literal
    /// with IPv6 in brackets) and `path` the configured `https_path`.
    pub fn new(authority: &str, path: &str) -> Result<Self, http::Error> {
        let uri = Uri::builder().scheme("https").authority(authority).path_and_query(path).build()?;
        Ok(Self { uri })
    }

    /// The request head for one query of `len` octets: POST (RFC 8484 §4.1: no base64 and
    /// no URI length limit, and nothing in a URI a log elsewhere could keep), the media
    /// type both ways.
    pub fn request(&self, len: usize) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        let headers = req.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(DNS_MESSAGE));
        headers.insert(header::ACCEPT, HeaderValue::from_static(DNS_MESSAGE));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        req
    }
}

/// Sets the query's ID to 0 (RFC 8484 §4.1: the stream, not the ID, matches the answer,
/// and a constant ID keeps HTTP caches friendly) and returns the caller's.
pub fn zero_id(wire: &mut [u8]) -> u16 {
    let id = u16::from_be_bytes([wire[0], wire[1]]);
    wire[..2].copy_from_slice(&[0, 0]);
    id
}

/// Checks a response head before its body is read: a 2xx status (RFC 8484 §4.2.1), the
/// DNS media type (parameters allowed, case-insensitive per RFC 9110 §8.3.1), and a
/// declared length no longer than a DNS message.
pub fn check_head(status: StatusCode, headers: &HeaderMap) -> Result<(), StreamFailure> {
    if !status.is_success() {
        return Err(StreamFailure::Status(status.as_u16()));
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    if !media.is_some_and(|m| m.eq_ignore_ascii_case(DNS_MESSAGE)) {
        return Err(StreamFailure::ContentType);
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err(StreamFailure::TooLarge);
    }
    Ok(())
}

/// The seconds an HTTP cache on the way held the answer (RFC 9111 §5.1), if it says.
pub fn age(headers: &HeaderMap) -> u32 {
    headers.get(header::AGE).and_then(|v| v.to_str().ok()?.trim().parse::<u32>().ok()).unwrap_or(0)
}

/// What a complete body is to the query sent with `question` under ID 0.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The answer, its ID set back to the client's.
    Message(Vec<u8>),
    /// An error answer without a question (RFC 7858 §3.3's case, here matched by stream):
    /// the server could not read the query, refused it, or does not implement it.
    Questionless(u8),
}

/// Checks `body` against the query and hands it back as the client's: a response (QR) to
/// ID 0 with the same question, or a questionless error. `age` seconds (the `Age` header)
/// come off every TTL, so a cache on the path cannot make an answer live longer (RFC 8484
/// §5.1).
pub fn accept_answer(
    body: Bytes,
    question: &[u8],
    client_id: u16,
    age: u32,
) -> Result<Answer, StreamFailure> {
    if body.len() > MAX_ANSWER {
        return Err(StreamFailure::TooLarge);
    }
    if body.len() < wire::HEADER_LEN || body[..2] != [0, 0] || body[2] & 0x80 == 0 {
        return Err(StreamFailure::NotTheAnswer);
    }
    match question_bytes(&body) {
        Some(theirs) if same_question(question, theirs) => {}
        Some(_) => return Err(StreamFailure::NotTheAnswer),
        None => {
            return questionless_error(&body).map(Answer::Questionless).ok_or(StreamFailure::NotTheAnswer);
        }
    }
    let mut answer = body.to_vec();
    answer[..2].copy_from_slice(&client_id.to_be_bytes());
    if age > 0 {
        let scanned = wire::scan(&answer).map_err(|_| StreamFailure::NotTheAnswer)?;
        for rr in &scanned.records {
            let ttl = rr.ttl.saturating_sub(age);
            answer[rr.ttl_offset..rr.ttl_offset + 4].copy_from_slice(&ttl.to_be_bytes());
        }
    }
    Ok(Answer::Message(answer))
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;
