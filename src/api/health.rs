//! `/health` (process up), `/ready` (store open, supervisor running) and `/metrics`
//! (Prometheus text, admin token).

use std::fmt::Write;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{Ctx, json, json_status};

pub fn health() -> Response {
    json(&serde_json::json!({"status": "ok"}))
}

pub fn ready(ctx: &Ctx) -> Response {
    if ctx.gateway.is_ready() {
        json_status(&serde_json::json!({"status": "ready"}), StatusCode::OK)
    } else {
        json_status(
            &serde_json::json!({"status": "not_ready"}),
            StatusCode::SERVICE_UNAVAILABLE,
        )
    }
}

pub async fn metrics(ctx: &Ctx) -> Response {
    let m = ctx.gateway.metrics().await;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP wagate_sessions Sessions by status.");
    let _ = writeln!(out, "# TYPE wagate_sessions gauge");
    for (status, n) in &m.sessions_by_status {
        let _ = writeln!(out, "wagate_sessions{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP wagate_actors Live actors in the supervision tree."
    );
    let _ = writeln!(out, "# TYPE wagate_actors gauge");
    let _ = writeln!(out, "wagate_actors {}", m.actors);
    let _ = writeln!(
        out,
        "# HELP wagate_actor_restarts_total Actor restarts since start."
    );
    let _ = writeln!(out, "# TYPE wagate_actor_restarts_total counter");
    let _ = writeln!(out, "wagate_actor_restarts_total {}", m.restarts_total);
    let _ = writeln!(out, "# HELP wagate_whatsapp_clients Live WhatsApp clients.");
    let _ = writeln!(out, "# TYPE wagate_whatsapp_clients gauge");
    let _ = writeln!(out, "wagate_whatsapp_clients {}", m.live_clients);
    warp::reply::with_header(out, "content-type", "text/plain; version=0.0.4").into_response()
}
