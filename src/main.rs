//! The `stubborn` command: run the daemon, or check a config.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use stubborn::{config::Config, daemon::Daemon};
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
        None => run(config),
    }
}

fn init_logging(level: &str) {
    // hickory-server logs two INFO lines per request; keep it to warnings.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},hickory_server=warn,hickory_proto=warn")));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            error!(%err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        info!(origin = %config.origin, upstreams = config.upstreams.len(), "starting");
        let daemon = match Daemon::start(&config).await {
            Ok(d) => d,
            Err(err) => {
                error!(%err, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
        }
        daemon.shutdown().await;
        ExitCode::SUCCESS
    })
}
