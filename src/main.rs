//! The `stubborn` command: run the daemon, check a config, probe a running daemon's
//! health, or discover and check upstream pins.

/// jemalloc, not glibc's malloc: cache entries live long and are allocated among many
/// short-lived buffers, and glibc left that heap fragmented: after 50 000 unique names
/// at 500 queries in flight, 58 MiB of RSS of which 34 MiB free but not returnable
/// (malloc_trim freed nothing); jemalloc's size-class slabs hold the same in 25 MiB, at
/// the same or lower CPU per query (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (a C string). One arena: the daemon
/// has a handful of threads, and per-CPU arenas only add idle memory.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 10] = b"narenas:1\0";

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use hickory_proto::rr::Name;
use stubborn::{
    config::{Config, ENV_CONFIG, EnvOverrides},
    daemon::{Daemon, listeners_from},
    frontend::bind,
    systemd::{self, Notifier, PrivDrop},
    tools::{health, pin},
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// A local DNS-over-TLS stub resolver.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file. Default: $STUBBORN_CONFIG if set, else /etc/stubborn/stubborn.toml if it
    /// exists, else the embedded default. STUBBORN_LISTEN (comma-separated IP:port) and
    /// STUBBORN_ALLOW (comma-separated CIDR) replace its [server] listen and allow.
    #[arg(long, global = true, env = ENV_CONFIG)]
    config: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace). RUST_LOG, when set, takes precedence.
    /// Default: info for the daemon and check, warn for health and pin.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config and print a summary (exit 0 when valid, 2 when not).
    Check,
    /// Probe a running daemon: exit 0 when it answers and an upstream works (NOERROR for
    /// NAME NS, asked past the cache), 1 otherwise, with one line saying why.
    Health {
        /// The daemon's IP:PORT. Default: the config's first listen address, or 127.0.0.1:53.
        #[arg(long)]
        server: Option<String>,
        /// The name to ask for (type NS); it must exist. Default: the root zone.
        #[arg(long, default_value = health::DEFAULT_NAME)]
        name: String,
        /// Only check that the daemon answers (resolver.arpa, never forwarded), not its
        /// upstreams: for liveness probes that a network outage must not fail.
        #[arg(long)]
        local: bool,
        /// How long the daemon has to answer, in milliseconds.
        #[arg(long, default_value_t = health::DEFAULT_TIMEOUT.as_millis() as u64)]
        timeout_ms: u64,
    },
    /// Print the key-fp and cert-fp pins of every certificate a DNS-over-TLS server
    /// presents (any certificate is accepted: a discovery tool), or with --check test the
    /// config's pins against the live servers (exit 1 if an upstream would fail).
    Pin {
        /// The server: IP or IP:PORT ([IPv6]:PORT); the port defaults to 853.
        #[arg(required_unless_present = "check", conflicts_with = "check")]
        target: Option<String>,
        /// The name to send as SNI (default: none, as stubborn sends without tls_name).
        #[arg(long, conflicts_with = "check")]
        tls_name: Option<String>,
        /// Check every pinned upstream of the config instead.
        #[arg(long)]
        check: bool,
    },
}

/// Exit code for an invalid config or command line.
const EXIT_CONFIG: u8 = 2;
/// How often the systemd STATUS= line is recomputed (sent only when it changes).
const STATUS_EVERY: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet_tool = matches!(cli.command, Some(Command::Health { .. } | Command::Pin { .. }));
    init_logging(cli.log_level.as_deref().unwrap_or(if quiet_tool { "warn" } else { "info" }));
    let overrides = EnvOverrides::from_env();
    match cli.command {
        Some(Command::Health { server, name, local, timeout_ms }) => {
            health_command(cli.config, &overrides, server, &name, local, Duration::from_millis(timeout_ms))
        }
        Some(Command::Pin { target, tls_name, check }) => match (target, check) {
            (Some(target), false) => pin_command(&target, tls_name.as_deref()),
            _ => pin_check_command(cli.config, &overrides),
        },
        Some(Command::Check) => match load(cli.config.as_deref(), &overrides) {
            Some(config) => {
                println!("{}", config.summary());
                println!("config OK");
                ExitCode::SUCCESS
            }
            None => ExitCode::from(EXIT_CONFIG),
        },
        None => match load(cli.config.as_deref(), &overrides) {
            Some(config) => run(config, cli.config, overrides),
            None => ExitCode::from(EXIT_CONFIG),
        },
    }
}

/// The config to use, its warnings logged; None (error printed) when it is invalid.
fn load(path: Option<&std::path::Path>, overrides: &EnvOverrides) -> Option<Config> {
    match Config::resolve_overridden(path, overrides) {
        Ok(config) => {
            for warning in &config.warnings {
                warn!(origin = %config.origin, "{warning}");
            }
            Some(config)
        }
        Err(err) => {
            eprintln!("stubborn: invalid config: {err}");
            None
        }
    }
}

/// A runtime for a tool: one thread is plenty.
fn tool_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => Some(rt),
        Err(err) => {
            println!("stubborn: cannot start the runtime: {err}");
            None
        }
    }
}

/// `stubborn health`: 0 healthy, 1 not (never 2, which container HEALTHCHECKs reserve).
fn health_command(
    config_path: Option<PathBuf>,
    overrides: &EnvOverrides,
    server: Option<String>,
    name: &str,
    local: bool,
    within: Duration,
) -> ExitCode {
    let unhealthy = |why: String| {
        println!("unhealthy: {why}");
        ExitCode::FAILURE
    };
    let server = match server {
        Some(text) => match text.parse() {
            Ok(addr) => addr,
            Err(_) => return unhealthy(format!("--server {text:?} is not IP:PORT")),
        },
        None => match Config::resolve_overridden(config_path.as_deref(), overrides) {
            Ok(config) => health::probe_address(config.server.listen[0]),
            Err(err) => {
                return unhealthy(format!("cannot tell where the daemon listens: {err}; pass --server"));
            }
        },
    };
    if server.port() == 0 {
        return unhealthy(format!("the config listens on port 0 ({server}); pass --server"));
    }
    let name = match Name::from_ascii(name) {
        Ok(mut name) => {
            name.set_fqdn(true);
            name
        }
        Err(err) => return unhealthy(format!("--name {name:?}: {err}")),
    };
    let Some(runtime) = tool_runtime() else { return ExitCode::FAILURE };
    let result = runtime.block_on(async {
        if local {
            health::check_local(server, within).await
        } else {
            health::check(server, &name, within).await
        }
    });
    match result {
        Ok(healthy) => {
            println!("{healthy}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("{why}");
            ExitCode::FAILURE
        }
    }
}

/// `stubborn pin IP[:PORT]`: 0 with the chain printed, 1 when the server could not be read,
/// 2 for a bad address or name.
fn pin_command(target: &str, tls_name: Option<&str>) -> ExitCode {
    let addr = match pin::parse_target(target) {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("stubborn pin: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(runtime) = tool_runtime() else { return ExitCode::FAILURE };
    match runtime.block_on(pin::discover(addr, tls_name)) {
        Ok(chain) => {
            print!("{}", pin::report(addr, tls_name, &chain));
            ExitCode::SUCCESS
        }
        Err(err @ pin::PinToolError::BadName(_)) => {
            eprintln!("stubborn pin: {err}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(err) => {
            eprintln!("stubborn pin: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `stubborn pin --check`: 0 when no pinned upstream would fail, 1 when one would, 2 for
/// an invalid config.
fn pin_check_command(config_path: Option<PathBuf>, overrides: &EnvOverrides) -> ExitCode {
    let Some(config) = load(config_path.as_deref(), overrides) else { return ExitCode::from(EXIT_CONFIG) };
    let Some(runtime) = tool_runtime() else { return ExitCode::FAILURE };
    match runtime.block_on(pin::check_config(&config)) {
        Ok((checks, unpinned)) => {
            print!("{}", pin::check_report(&checks, &unpinned));
            if checks.iter().any(pin::UpstreamCheck::would_fail) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(err) => {
            eprintln!("stubborn pin --check: {err}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    // hickory-proto logs a warn line for every malformed EDNS option it parses, and any
    // local client can send those: at warn, a flood of such datagrams becomes a flood of
    // log lines (tests/netns/flood.sh). Our own warnings about client input are rate-limited.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},hickory_proto=error")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run(config: Config, config_path: Option<PathBuf>, overrides: EnvOverrides) -> ExitCode {
    let notifier = Arc::new(Notifier::from_env());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            error!(%err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Handlers first: SIGHUP's default action would kill a daemon being reloaded.
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
        else {
            error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        info!(origin = %config.origin, upstreams = config.upstreams.len(), "starting");
        let listeners = match systemd::inherited_listeners() {
            Ok(Some(inherited)) => {
                info!(sockets = inherited.len(), "using the sockets passed by the service manager");
                listeners_from(inherited, config.server.serving_threads()).map_err(|e| e.to_string())
            }
            Ok(None) => {
                bind(&config.server.listen, config.server.serving_threads()).map_err(|e| e.to_string())
            }
            Err(err) => Err(format!("socket activation: {err}")),
        };
        let listeners = match listeners {
            Ok(l) => l,
            Err(err) => {
                error!(%err, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        // Bound: root is no longer needed (no query is answered before this).
        if let Some(user) = &config.server.user {
            match systemd::drop_privileges(user) {
                Ok(PrivDrop::Dropped(account)) => info!(user = %account.name, uid = account.uid, "dropped root"),
                Ok(PrivDrop::NotRoot { euid }) => warn!(euid, user, "server.user is set but we are not root"),
                Err(err) => {
                    error!(%err, "cannot drop privileges; refusing to run as root");
                    return ExitCode::FAILURE;
                }
            }
        }
        if config.server.user.is_none() {
            // SAFETY: geteuid cannot fail and has no preconditions.
            let euid = unsafe { libc::geteuid() };
            if systemd::privileges::warn_staying_root(euid, false, systemd::privileges::under_service_manager_now()) {
                warn!(
                    "running as root with no [server] user and no service manager: set server.user to a local \
                     account so that root is dropped once the sockets are bound"
                );
            }
        }
        let mut daemon = match Daemon::start_on(&config, listeners) {
            Ok(d) => d,
            Err(err) => {
                error!(%err, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        notifier.ready(&daemon.status());
        let watchdog = notifier.watchdog_interval().map(|every| {
            let probe_addr = daemon.local_addrs[0];
            tokio::spawn(systemd::run_watchdog(notifier.clone(), every, move || async move {
                systemd::probe(probe_addr, every / 2).await.is_ok()
            }))
        });
        let mut status_tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
                _ = int.recv() => { info!("SIGINT: shutting down"); break; }
                _ = hup.recv() => {
                    info!("SIGHUP: reloading the config");
                    notifier.reloading();
                    match Config::resolve_overridden(config_path.as_deref(), &overrides) {
                        Ok(new) => {
                            for warning in &new.warnings {
                                warn!(origin = %new.origin, "{warning}");
                            }
                            if let Err(err) = daemon.reload(new) {
                                error!(%err, "reload refused; keeping the current config");
                            }
                        }
                        Err(err) => error!(%err, "reload refused: invalid config; keeping the current config"),
                    }
                    notifier.ready(&daemon.status());
                }
                _ = status_tick.tick() => { notifier.status(&daemon.status()); }
            }
        }
        notifier.stopping();
        if let Some(w) = watchdog {
            w.abort();
        }
        daemon.shutdown().await;
        ExitCode::SUCCESS
    })
}
