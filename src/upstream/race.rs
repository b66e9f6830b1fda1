//! placeholder until the race branch lands
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tls,
    Plain,
}
impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tls => "tls",
            Transport::Plain => "plain",
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    Refused,
    Unreachable,
    Timeout,
    TlsAlert,
    PinMismatch,
    Io,
}
impl FailReason {
    pub fn is_hard(&self) -> bool {
        !matches!(self, FailReason::Timeout)
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            FailReason::Refused => "rst",
            FailReason::Unreachable => "unreachable",
            FailReason::Timeout => "timeout",
            FailReason::TlsAlert => "tls-alert",
            FailReason::PinMismatch => "pin-mismatch",
            FailReason::Io => "io",
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    pub upstream: usize,
    pub addr: std::net::SocketAddr,
    pub transport: Transport,
}
