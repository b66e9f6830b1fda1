//! The `stubborn` command: run the daemon, or check a config.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use stubborn::{
    config::Config,
    daemon::{Daemon, listeners_from, udp_sockets_per_address},
    frontend::bind,
    systemd::{self, Notifier, PrivDrop},
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// A local DNS-over-TLS stub resolver.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file. Default: /etc/stubborn/stubborn.toml if it exists, else the embedded default.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace). RUST_LOG, when set, takes precedence.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config and print a summary (exit 0 when valid, 2 when not).
    Check,
}

/// Exit code for an invalid config or command line.
const EXIT_CONFIG: u8 = 2;
/// How often the systemd STATUS= line is recomputed (sent only when it changes).
const STATUS_EVERY: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    let config = match Config::resolve(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("stubborn: invalid config: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in &config.warnings {
        warn!(origin = %config.origin, "{warning}");
    }
    match cli.command {
        Some(Command::Check) => {
            println!("{}", config.summary());
            println!("config OK");
            ExitCode::SUCCESS
        }
        None => run(config, cli.config),
    }
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},hickory_proto=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run(config: Config, config_path: Option<PathBuf>) -> ExitCode {
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
                listeners_from(inherited).map_err(|e| e.to_string())
            }
            Ok(None) => bind(&config.server.listen, udp_sockets_per_address()).map_err(|e| e.to_string()),
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
                    match Config::resolve(config_path.as_deref()) {
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
