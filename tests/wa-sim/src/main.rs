//! Binary entry point: serves the simulator on one loopback port until killed, after
//! printing exactly one line with the websocket and control URLs.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser)]
#[command(name = "wa-sim", about = "Protocol-level WhatsApp simulator for tests")]
struct Args {
    /// Loopback address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Do not send the primary phone's app-state key share to new companions.
    #[arg(long)]
    no_key_share: bool,
    /// Accept IK reconnects in one round trip instead of answering with XXfallback.
    #[arg(long)]
    accept_ik: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = wa_sim::SimConfig {
        listen: args.listen,
        key_share: !args.no_key_share,
        accept_ik: args.accept_ik,
        ..Default::default()
    };
    let handle = match wa_sim::start(config).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "wa-sim {} control {}",
            handle.ws_url(),
            handle.control_url()
        );
        let _ = stdout.flush();
    }
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    std::process::ExitCode::SUCCESS
}
