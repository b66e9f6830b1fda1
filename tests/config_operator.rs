//! The operator keys: `[metrics]`, `[log]`, the environment overrides (`STUBBORN_LISTEN`,
//! `STUBBORN_ALLOW`, `STUBBORN_CONFIG`), and every example config shipped in config/, deploy/ and docs/
//! passing `stubborn check`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use stubborn::config::{Config, ConfigError, ConfigOrigin, EnvOverrides};

const FILE: &str = "/test/stubborn.toml";
const UPSTREAM: &str = "[[upstream]]\nname = \"a\"\naddresses = [\"192.0.2.1\"]\ntls_name = \"a.example\"\n";
const BIN: &str = env!("CARGO_BIN_EXE_stubborn");

fn parse_with(text: &str, overrides: &EnvOverrides) -> Result<Config, ConfigError> {
    Config::from_toml_with(&format!("{text}\n{UPSTREAM}"), ConfigOrigin::File(PathBuf::from(FILE)), overrides)
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with(text, &EnvOverrides::default())
}

#[test]
fn metrics_and_query_logging_are_off_by_default() {
    let config = parse("").unwrap();
    assert_eq!(config.metrics.listen, None);
    assert!(!config.metrics.allow_remote);
    assert!(!config.log.queries);
    assert!(config.summary().contains("metrics: off\nlog: queries off\n"), "{}", config.summary());
}

#[test]
fn a_loopback_metrics_address_is_accepted() {
    for addr in ["127.0.0.1:9153", "[::1]:9153", "127.0.0.2:0"] {
        let config = parse(&format!("[metrics]\nlisten = \"{addr}\"\n[log]\nqueries = true")).unwrap();
        assert_eq!(config.metrics.listen, Some(addr.parse::<SocketAddr>().unwrap()));
        assert!(config.log.queries);
    }
    let config = parse("[metrics]\nlisten = \"127.0.0.1:9153\"").unwrap();
    assert!(config.summary().contains("metrics: http://127.0.0.1:9153/metrics"), "{}", config.summary());
}

#[test]
fn a_remote_metrics_address_needs_allow_remote_and_the_error_says_so() {
    for addr in ["0.0.0.0:9153", "192.0.2.7:9153", "[::]:9153"] {
        let err = parse(&format!("[metrics]\nlisten = \"{addr}\"")).unwrap_err();
        assert_eq!((err.file.as_str(), err.key.as_str()), (FILE, "metrics.listen"), "{err}");
        assert!(err.reason.contains("metrics.allow_remote = true"), "{err}");
        let config = parse(&format!("[metrics]\nlisten = \"{addr}\"\nallow_remote = true")).unwrap();
        assert!(config.metrics.allow_remote);
    }
}

#[test]
fn bad_metrics_settings_are_rejected_with_their_key() {
    let err = parse("[metrics]\nlisten = \"localhost:9153\"").unwrap_err();
    assert_eq!(err.key, "metrics.listen");
    assert!(err.reason.contains("is not a socket address"), "{err}");
    let err =
        parse("[server]\nlisten = [\"127.0.0.1:9153\"]\n[metrics]\nlisten = \"127.0.0.1:9153\"").unwrap_err();
    assert!(err.reason.contains("server.listen[0]"), "{err}");
    let err = parse("[metrics]\nport = 9153").unwrap_err();
    assert_eq!(err.key, "metrics.port");
    assert!(err.reason.contains("unknown key (expected listen or allow_remote)"), "{err}");
    let err = parse("[log]\nquery = true").unwrap_err();
    assert_eq!(err.key, "log.query");
    let config = parse("[metrics]\nallow_remote = true").unwrap();
    assert!(
        config.warnings.iter().any(|w| w.starts_with("metrics.allow_remote: unused")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn stubborn_listen_replaces_the_listen_list_and_names_itself_in_errors() {
    let env = |v: &str| EnvOverrides { listen: Some(v.to_owned()), allow: None };
    let config =
        parse_with("[server]\nlisten = [\"127.0.0.1:53\"]", &env("0.0.0.0:5353, [::]:5353")).unwrap();
    assert_eq!(
        config.server.listen,
        vec!["0.0.0.0:5353".parse::<SocketAddr>().unwrap(), "[::]:5353".parse().unwrap()]
    );
    assert!(config.server.listen_from_env);
    assert!(config.summary().contains("(UDP and TCP; from STUBBORN_LISTEN)"), "{}", config.summary());
    let err = parse_with("", &env("127.0.0.1:53,nope")).unwrap_err();
    assert_eq!((err.file.as_str(), err.key.as_str()), ("environment", "STUBBORN_LISTEN[1]"), "{err}");
    assert_eq!(
        err.to_string(),
        "environment: STUBBORN_LISTEN[1]: \"nope\" is not a socket address (expected IP:port, IPv6 in brackets: [::1]:53)"
    );
    let err = parse_with("", &env("127.0.0.1:53 127.0.0.1:53")).unwrap_err();
    assert!(err.reason.contains("also STUBBORN_LISTEN[0]"), "{err}");
    let err = parse_with("", &env(" , ")).unwrap_err();
    assert_eq!(err.key, "STUBBORN_LISTEN");
}

#[test]
fn stubborn_allow_replaces_the_allow_list() {
    let env = |v: &str| EnvOverrides { listen: None, allow: Some(v.to_owned()) };
    let config = parse_with("", &env("127.0.0.0/8,172.16.0.0/12 10.1.2.3/8")).unwrap();
    let shown: Vec<String> = config.server.allow.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["127.0.0.0/8", "172.16.0.0/12", "10.0.0.0/8"]);
    assert!(config.summary().contains("(from STUBBORN_ALLOW)"), "{}", config.summary());
    let err = parse_with("", &env("10.0.0.0/8,everyone")).unwrap_err();
    assert_eq!((err.file.as_str(), err.key.as_str()), ("environment", "STUBBORN_ALLOW[1]"), "{err}");
    assert!(err.reason.contains("is not a CIDR network"), "{err}");
}

fn check(path: &Path) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .env_remove("STUBBORN_LISTEN")
        .env_remove("STUBBORN_ALLOW")
        .env_remove("STUBBORN_CONFIG")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stubborn check {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_environment_reaches_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, UPSTREAM).unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .env("STUBBORN_CONFIG", &path)
        .env("STUBBORN_LISTEN", "127.0.0.1:5300")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("config: {}", path.display())), "{stdout}");
    assert!(stdout.contains("listen: 127.0.0.1:5300 (UDP and TCP; from STUBBORN_LISTEN)"), "{stdout}");
    // --config wins over STUBBORN_CONFIG.
    let out = Command::new(BIN)
        .args(["check", "--config", "config/default.toml"])
        .env("STUBBORN_CONFIG", "/nonexistent.toml")
        .env_remove("STUBBORN_LISTEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// ```toml blocks of a Markdown file that are whole configs (they have an upstream).
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks.retain(|b| b.contains("[[upstream]]"));
    blocks
}

/// The text under `stubborn.toml: |` in a YAML file (a ConfigMap), dedented.
fn yaml_embedded_config(yaml: &str) -> Option<String> {
    let mut lines = yaml.lines().skip_while(|l| !l.trim_end().ends_with("stubborn.toml: |"));
    let header = lines.next()?;
    let base = header.len() - header.trim_start().len();
    let body: Vec<&str> =
        lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > base).collect();
    let indent =
        body.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min()?;
    Some(body.iter().map(|l| l.get(indent..).unwrap_or("")).collect::<Vec<_>>().join("\n"))
}

#[test]
fn every_shipped_example_config_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for folder in ["config", "deploy", "deploy/kubernetes"] {
        for entry in std::fs::read_dir(folder).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    files.sort();
    for path in files {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "toml" => {
                check(&path);
                checked.push(path.display().to_string());
            }
            "yaml" | "yml" => {
                if let Some(text) = yaml_embedded_config(&std::fs::read_to_string(&path).unwrap()) {
                    let out = dir.path().join(format!("{}.toml", checked.len()));
                    std::fs::write(&out, text).unwrap();
                    check(&out);
                    checked.push(format!("{} (embedded stubborn.toml)", path.display()));
                }
            }
            _ => {}
        }
    }
    for doc in ["docs/container.md", "docs/operations.md", "docs/configuration.md", "README.md"] {
        for (i, block) in toml_blocks(&std::fs::read_to_string(doc).unwrap()).into_iter().enumerate() {
            let out = dir.path().join(format!("{}.toml", checked.len()));
            std::fs::write(&out, block).unwrap();
            check(&out);
            checked.push(format!("{doc} block {i}"));
        }
    }
    for must in ["config/stubborn.toml", "config/default.toml", "deploy/stubborn.toml", "deploy/kubernetes"] {
        assert!(checked.iter().any(|c| c.contains(must)), "{must} not checked: {checked:?}");
    }
    assert!(checked.iter().any(|c| c.starts_with("docs/container.md")), "{checked:?}");
}
