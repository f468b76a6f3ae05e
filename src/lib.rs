//! wagate: a self-hosted WhatsApp REST gateway.
//!
//! # Layout
//!
//! - [`config`]: `config.toml`, `WAGATE_*` environment variables and flags, loaded once.
//! - [`pair`]: `wagate pair`, pairing a session of the running server from a terminal.
//! - [`api`]: the HTTP edge (warp): one module per resource with its filters and handlers,
//!   `models` for bodies, `errors` for the one mapping of every error to the contract's JSON.
//! - `wagate_actors` (the `actors/` crate): the supervision tree, persistence and WhatsApp.
//!
//! [`run`] serves a listener until `shutdown` resolves, then stops the tree in order; `main`
//! only parses flags, sets up logging and binds.

pub mod api;
pub mod config;
pub mod host;
pub mod pair;
pub mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use config::Config;
use wagate_actors::Gateway;

/// How long in-flight HTTP requests may run on after shutdown starts.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until `shutdown` resolves; then stops accepting, stops the
/// actors in order and flushes the store.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    #[cfg(feature = "test-server")]
    tracing::warn!(
        "THIS BUILD HAS THE `test-server` FEATURE: WhatsApp's certificate chain is NOT verified \
         and test-only admin triggers are enabled. Never run it against real WhatsApp."
    );
    host::private_files();
    host::prepare_data_dir(&config.data_dir)?;
    let _data_dir_lock = host::DataDirLock::acquire(&config.data_dir)?;
    let stored_sessions = std::fs::read_dir(config.data_dir.join("sessions"))
        .map(|entries| entries.count() as u64)
        .unwrap_or(0);
    host::raise_open_files_limit(stored_sessions, config.http.max_connections as u64);
    let api_token = match &config.api_token {
        Some(token) => token.clone(),
        None => {
            let path = config.api_token_path();
            let (token, created) = config::load_or_create_api_token(&path)?;
            if created {
                announce_generated_token(&token, &path);
            } else {
                tracing::info!(path = %path.display(), "using the stored API token");
            }
            token
        }
    };
    if config.admin_token.is_none() {
        tracing::info!("no admin token configured: the API token also opens the admin endpoints");
    }
    let gateway = Gateway::start(config.settings()).await?;
    let ctx = Arc::new(api::Context {
        gateway,
        auth: api::Auth {
            api: api_token,
            admin: config.admin_token.clone(),
        },
        body_limit: config.body_limit,
        body_timeout: config.http.body_timeout,
    });
    let addr = listener.local_addr()?;
    tracing::info!("listening on http://{addr}");
    let limits = server::Limits {
        max_connections: config.http.max_connections,
        header_timeout: config.http.header_timeout,
        keep_alive: config.http.keep_alive,
    };
    let service = warp::service(api::routes(ctx.clone()));
    let streams = ctx.clone();
    let shutdown = async move {
        shutdown.await;
        // Event streams never end on their own; they must not hold up the HTTP drain.
        streams.gateway.begin_shutdown();
    };
    server::serve(listener, service, limits, shutdown, HTTP_DRAIN).await;
    tracing::info!("shutting down: HTTP stopped");
    ctx.gateway.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The one place a token is shown: on the terminal, once, when it is created. It goes to
/// stdout directly rather than through `tracing` so that it never lands in collected logs.
fn announce_generated_token(token: &config::Secret, path: &std::path::Path) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "Generated API token (stored in {}; it is not shown again):\n{}",
        path.display(),
        token.expose()
    );
    let _ = out.flush();
}
