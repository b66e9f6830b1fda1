//! What the config tests share: a file name for errors, a valid upstream, and asserting
//! a rejection by its key path and reason.
#![allow(dead_code)]

use std::path::PathBuf;

use stubborn::config::{Config, ConfigError, ConfigOrigin};

pub const FILE: &str = "/test/stubborn.toml";

/// A valid upstream, to append to configs that test something else.
pub const UPSTREAM: &str = r#"
[[upstream]]
name = "a"
addresses = ["192.0.2.1"]
tls_name = "a.example"
"#;

pub const PIN: &str = "key-fp:SHA256:INSZEZpDoWKiavosV2/xVT8O83vk/RRwS+LTiL+IpHs=";

pub fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, ConfigOrigin::File(PathBuf::from(FILE)))
}

pub fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("expected a valid config, got: {e}\n{text}"))
}

/// Asserts the error's key path exactly, a fragment of its reason, and that
/// its Display is `file: key: reason`.
#[track_caller]
pub fn assert_rejected(text: &str, key: &str, fragment: &str) -> ConfigError {
    let err = match parse(text) {
        Ok(config) => panic!("expected an error at {key}, got {config:#?}"),
        Err(err) => err,
    };
    assert_eq!(err.file, FILE, "{err}");
    assert_eq!(err.key, key, "{err}");
    assert!(err.reason.contains(fragment), "reason {:?} lacks {fragment:?}", err.reason);
    let shown = err.to_string();
    assert!(shown.starts_with(&format!("{FILE}: {key}: ")), "Display {shown:?}");
    assert!(shown.contains(fragment), "Display {shown:?}");
    err
}

/// One upstream with the given body lines (name and addresses included).
pub fn upstream(body: &str) -> String {
    format!("[[upstream]]\n{body}\n")
}
