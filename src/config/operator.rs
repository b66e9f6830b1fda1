//! The operator sections: `[metrics]` and `[log]`, and the environment variables
//! that override the file (`STUBBORN_LISTEN`, `STUBBORN_ALLOW`).
//!
//! Owns the rule that the metrics endpoint stays on loopback unless the file
//! says otherwise (it has no authentication, and query counts by rcode tell a
//! network observer what the host is doing). Never opens the endpoint itself.

use std::net::SocketAddr;

use super::schema::{RawLog, RawMetrics};
use super::{ConfigError, ENV_ALLOW, ENV_LISTEN, LogConfig, MetricsConfig};

/// The `file` part of errors in an environment variable.
pub(super) const ENV_ORIGIN: &str = "environment";

/// The entries of a `STUBBORN_LISTEN` or `STUBBORN_ALLOW` value: comma- or
/// whitespace-separated.
pub(super) fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The key path of entry `i` of the listen list, in the file or the environment.
pub(super) fn listen_key(from_env: bool, i: Option<usize>) -> String {
    let base = if from_env { ENV_LISTEN } else { "server.listen" };
    match i {
        Some(i) => format!("{base}[{i}]"),
        None => base.to_owned(),
    }
}

/// The key path of entry `i` of the allow list, in the file or the environment.
pub(super) fn allow_key(from_env: bool, i: Option<usize>) -> String {
    let base = if from_env { ENV_ALLOW } else { "server.allow" };
    match i {
        Some(i) => format!("{base}[{i}]"),
        None => base.to_owned(),
    }
}

pub(super) fn metrics(
    file: &str,
    raw: RawMetrics,
    server_listen: &[SocketAddr],
    warnings: &mut Vec<String>,
) -> Result<MetricsConfig, ConfigError> {
    let error = |reason: String| ConfigError::new(file, "metrics.listen", reason);
    let Some(text) = raw.listen else {
        if raw.allow_remote {
            warnings.push("metrics.allow_remote: unused: metrics.listen is not set".to_owned());
        }
        return Ok(MetricsConfig { listen: None, allow_remote: raw.allow_remote });
    };
    let addr: SocketAddr = text.trim().parse().map_err(|_| {
        error(format!("{text:?} is not a socket address (expected IP:port, IPv6 in brackets: [::1]:9153)"))
    })?;
    if !addr.ip().is_loopback() && !raw.allow_remote {
        return Err(error(format!(
            "{addr} is not a loopback address; the endpoint has no authentication, so serving it \
             beyond this host needs metrics.allow_remote = true"
        )));
    }
    if addr.port() != 0 {
        if let Some(i) = server_listen.iter().position(|l| *l == addr) {
            return Err(error(format!("{addr} is also server.listen[{i}], where DNS over TCP is served")));
        }
    }
    Ok(MetricsConfig { listen: Some(addr), allow_remote: raw.allow_remote })
}

pub(super) fn log(raw: RawLog) -> LogConfig {
    LogConfig { queries: raw.queries }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_overrides_split_on_commas_and_spaces() {
        assert_eq!(split_list("127.0.0.1:53, [::1]:53"), vec!["127.0.0.1:53", "[::1]:53"]);
        assert_eq!(split_list(" 0.0.0.0:5353 "), vec!["0.0.0.0:5353"]);
        assert!(split_list(" , ").is_empty());
    }

    #[test]
    fn keys_name_the_file_or_the_variable() {
        assert_eq!(listen_key(false, Some(1)), "server.listen[1]");
        assert_eq!(listen_key(true, Some(0)), "STUBBORN_LISTEN[0]");
        assert_eq!(listen_key(true, None), "STUBBORN_LISTEN");
        assert_eq!(allow_key(false, Some(2)), "server.allow[2]");
        assert_eq!(allow_key(true, Some(0)), "STUBBORN_ALLOW[0]");
    }
}
