//! The `wagate` binary: flags, logging, bind, then [`wagate::run`] until SIGINT or SIGTERM.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use wagate::config::{Config, Overrides};

/// A self-hosted WhatsApp REST gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file, layered over the built-in defaults (default: ./config.toml when
    /// present). Every key is optional.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:3000 (overrides WAGATE_LISTEN).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory for everything wagate stores (overrides WAGATE_DATA_DIR).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pair a session of the running server from this terminal (QR code, or pair code with
    /// --phone); exits 0 once it is logged in.
    Pair {
        /// The session to pair (created when it does not exist).
        session: String,
        /// Pair by code for this phone number instead of by QR code.
        #[arg(long, value_name = "NUMBER")]
        phone: Option<String>,
        /// The server's base URL (default: from the configuration's listen address).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Give up after this long (humantime, e.g. 5m).
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        config: wagate::config::config_file(cli.config),
        listen: cli.listen,
        data_dir: cli.data_dir,
    };
    let config = match Config::load(&overrides, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            init_logging("info");
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Pair {
        session,
        phone,
        url,
        timeout,
    }) = cli.command
    {
        init_logging("warn");
        let args = wagate::pair::PairArgs {
            session,
            phone,
            url,
            timeout,
        };
        return match wagate::pair::run(&config, args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.print_config {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(config.to_redacted_toml().as_bytes());
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log);
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %config.listen, "cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match wagate::run(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
