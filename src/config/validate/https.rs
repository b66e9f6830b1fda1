//! `[[upstream]] https_port` and `https_path`: DNS over HTTPS (RFC 8484) on the upstream's
//! own addresses.

use super::super::{ConfigError, HttpsEndpoint};
use super::Validator;

/// RFC 8484 §3 names no default path; this is the one the public services and unbound's
/// `http-endpoint` use.
pub(crate) const DEFAULT_PATH: &str = "/dns-query";

impl Validator {
    /// The DoH endpoint, if `https_port` is set. `plain_port` is given when plain text may
    /// be used (opportunistic): the ports must all differ, so that no transport is ever
    /// sent to another's port.
    pub(super) fn https(
        &self,
        at: &str,
        port: Option<i64>,
        path: Option<String>,
        tls_port: u16,
        plain_port: Option<u16>,
    ) -> Result<Option<HttpsEndpoint>, ConfigError> {
        let Some(port) = port else {
            if path.is_some() {
                return Err(self.error(
                    format!("{at}.https_path"),
                    "set without https_port: DNS over HTTPS is used only on the port given \
                     by https_port (443 for the public services)",
                ));
            }
            return Ok(None);
        };
        let key = format!("{at}.https_port");
        let port = self.port(&key, port)?;
        if port == 53 {
            return Err(self.error(key, "must not be 53: the cleartext DNS port is never used for HTTPS"));
        }
        if port == tls_port {
            return Err(self.error(
                key,
                format!("equals tls_port ({tls_port}): one port cannot serve both DNS over TLS and HTTPS"),
            ));
        }
        if plain_port == Some(port) {
            return Err(self.error(
                key,
                format!("equals plain_port ({port}): cleartext DNS must never go to the HTTPS port"),
            ));
        }
        let path = match path {
            None => DEFAULT_PATH.to_string(),
            Some(path) => self.https_path(&format!("{at}.https_path"), path)?,
        };
        Ok(Some(HttpsEndpoint { port, path }))
    }

    /// A URI path (RFC 3986 §3.3) sent as `:path`: absolute, printable ASCII without
    /// spaces, and no query or fragment: queries are POSTed (RFC 8484 §4.1), so a URI
    /// template's `{?dns}` has no place here.
    fn https_path(&self, key: &str, path: String) -> Result<String, ConfigError> {
        if !path.starts_with('/') {
            return Err(
                self.error(key, format!("{path:?} must start with \"/\" (for example \"{DEFAULT_PATH}\")"))
            );
        }
        if let Some(bad) = path.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '{' | '}'))
        {
            return Err(self.error(
                key,
                format!(
                    "{path:?} contains {bad:?}: give the path alone (queries are sent by POST, \
                     so a template such as {{?dns}} or a query string is not needed)"
                ),
            ));
        }
        if http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
            return Err(self.error(key, format!("{path:?} is not a valid URI path")));
        }
        Ok(path)
    }
}
