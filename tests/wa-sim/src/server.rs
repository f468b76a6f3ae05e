//! The single HTTP/1.1 listener: `/ws/chat` upgrades to the WhatsApp websocket, `/control/*`
//! is the JSON control API.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha1::Digest as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::world::Sim;

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Accepts connections until `shutdown` flips to true.
pub async fn run(sim: Arc<Sim>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        tracing::trace!(%peer, "tcp connection");
        let sim = sim.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service_shutdown = conn_shutdown.clone();
            let service = hyper::service::service_fn(move |req| {
                route(sim.clone(), req, service_shutdown.clone())
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        tracing::trace!("http connection ended: {e}");
                    }
                }
                _ = conn_shutdown.changed() => {}
            }
        });
    }
    // Drop every live connection: their writer tasks would otherwise keep sockets open.
    let mut world = sim.world();
    for conn in world.conns.values() {
        let _ = conn.kill.send(true);
    }
    world.conns.clear();
    drop(world);
    tracing::debug!("listener stopped");
}

fn json_response(status: u16, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn route(
    sim: Arc<Sim>,
    mut req: Request<Incoming>,
    shutdown: watch::Receiver<bool>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/ws/chat" || path == "/ws" {
        return Ok(upgrade(sim, &mut req, shutdown));
    }
    if let Some(rest) = path.strip_prefix("/control") {
        let method = req.method().as_str().to_string();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return Ok(json_response(
                    400,
                    &serde_json::json!({"error": "bad_request", "message": e.to_string()}),
                ));
            }
        };
        let reply = crate::control::handle(&sim, &method, rest, &body).await;
        return Ok(json_response(reply.status, &reply.body));
    }
    Ok(json_response(
        404,
        &serde_json::json!({"error": "not_found", "message": format!("nothing at {path}")}),
    ))
}

fn upgrade(
    sim: Arc<Sim>,
    req: &mut Request<Incoming>,
    mut shutdown: watch::Receiver<bool>,
) -> Response<Full<Bytes>> {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec());
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = key.filter(|_| is_upgrade) else {
        return json_response(
            400,
            &serde_json::json!({"error": "bad_request", "message": "expected a websocket upgrade"}),
        );
    };
    let mut hasher = sha1::Sha1::new();
    hasher.update(&key);
    hasher.update(WS_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(hasher.finalize());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return;
            }
        };
        let ws = tokio_websockets::ServerBuilder::new().serve(TokioIo::new(upgraded));
        tokio::select! {
            _ = crate::conn::serve(sim, ws) => {}
            _ = shutdown.changed() => {}
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}
