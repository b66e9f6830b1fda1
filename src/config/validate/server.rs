//! `[server]`: listen addresses and the access list (or the environment's
//! `STUBBORN_LISTEN` / `STUBBORN_ALLOW` in their place), timeouts, bounds, the user.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::super::operator::{self, ENV_ORIGIN, allow_key, listen_key};
use super::super::schema::RawServer;
use super::super::{ConfigError, EnvOverrides, RefusedPolicy, ServerConfig};
use super::{Validator, limits};

impl Validator {
    pub(super) fn server(
        &mut self,
        raw: RawServer,
        overrides: &EnvOverrides,
    ) -> Result<ServerConfig, ConfigError> {
        // STUBBORN_LISTEN replaces the file's list; its errors name the variable.
        let (entries, from_env) = match &overrides.listen {
            Some(text) => (operator::split_list(text), true),
            None => (raw.listen, false),
        };
        let listen_error = |i: Option<usize>, reason: String| {
            ConfigError::new(if from_env { ENV_ORIGIN } else { &self.file }, listen_key(from_env, i), reason)
        };
        if entries.is_empty() {
            return Err(listen_error(None, "empty: at least one address to listen on is required".into()));
        }
        let mut listen: Vec<SocketAddr> = Vec::with_capacity(entries.len());
        for (i, text) in entries.iter().enumerate() {
            // Port 0 is accepted on purpose: tests bind ephemeral ports.
            let addr: SocketAddr = text.trim().parse().map_err(|_| {
                listen_error(
                    Some(i),
                    format!(
                        "{text:?} is not a socket address \
                         (expected IP:port, IPv6 in brackets: [::1]:53)"
                    ),
                )
            })?;
            if let Some(first) = listen.iter().position(|a| *a == addr && addr.port() != 0) {
                return Err(listen_error(
                    Some(i),
                    format!("duplicate address {addr} (also {})", listen_key(from_env, Some(first))),
                ));
            }
            listen.push(addr);
        }

        // STUBBORN_ALLOW replaces the file's list, like STUBBORN_LISTEN.
        let (entries, allow_from_env) = match &overrides.allow {
            Some(text) => (operator::split_list(text), true),
            None => (raw.allow, false),
        };
        let allow_error = |i: Option<usize>, reason: String| {
            ConfigError::new(
                if allow_from_env { ENV_ORIGIN } else { &self.file },
                allow_key(allow_from_env, i),
                reason,
            )
        };
        if entries.is_empty() {
            return Err(allow_error(
                None,
                "empty: every client would be refused; list at least one network (CIDR)".into(),
            ));
        }
        let mut allow = Vec::with_capacity(entries.len());
        for (i, text) in entries.iter().enumerate() {
            let text_trimmed = text.trim();
            // A bare address means that host only (/32 or /128).
            let net = text_trimmed
                .parse::<IpNet>()
                .or_else(|_| text_trimmed.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    allow_error(
                        Some(i),
                        format!("{text:?} is not a CIDR network (expected e.g. 127.0.0.0/8 or ::1/128)"),
                    )
                })?;
            allow.push(net.trunc());
        }

        Ok(ServerConfig {
            listen,
            allow,
            query_timeout: self.millis(
                "server.query_timeout_ms",
                raw.query_timeout_ms,
                limits::QUERY_TIMEOUT_MS,
            )?,
            tcp_idle_timeout: self.millis(
                "server.tcp_idle_timeout_ms",
                raw.tcp_idle_timeout_ms,
                limits::TCP_IDLE_TIMEOUT_MS,
            )?,
            max_inflight: self.count("server.max_inflight", raw.max_inflight, limits::SERVER_MAX_INFLIGHT)?,
            max_tcp_clients: self.count(
                "server.max_tcp_clients",
                raw.max_tcp_clients,
                limits::MAX_TCP_CLIENTS,
            )?,
            max_tcp_per_client: self.count(
                "server.max_tcp_per_client",
                raw.max_tcp_per_client,
                limits::MAX_TCP_PER_CLIENT,
            )?,
            tcp_write_timeout: self.millis(
                "server.tcp_write_timeout_ms",
                raw.tcp_write_timeout_ms,
                limits::TCP_WRITE_TIMEOUT_MS,
            )?,
            refused: match raw.refused.as_str() {
                "rate-limited" => RefusedPolicy::RateLimited,
                "drop" => RefusedPolicy::Drop,
                other => {
                    return Err(self.error(
                        "server.refused",
                        format!("{other:?} is not a policy (expected \"rate-limited\" or \"drop\")"),
                    ));
                }
            },
            threads: self.count("server.threads", raw.threads, limits::THREADS)?,
            user: match raw.user {
                None => None,
                Some(user) => Some(self.user(user)?),
            },
            local_zones: raw.local_zones,
            listen_from_env: from_env,
            allow_from_env,
        })
    }

    /// A POSIX portable user name (no `root`: dropping to root is no drop).
    fn user(&self, user: String) -> Result<String, ConfigError> {
        let portable = !user.is_empty()
            && user.len() <= 32
            && !user.starts_with('-')
            && user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !portable {
            return Err(self.error("server.user", format!("{user:?} is not a valid user name")));
        }
        if user == "root" {
            return Err(self.error("server.user", "must not be root (it is the account being left)"));
        }
        Ok(user)
    }
}
