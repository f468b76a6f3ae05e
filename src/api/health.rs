//! `/health` (process up), `/ready` (store open, supervisor running) and `/metrics`
//! (Prometheus text, admin token).

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
    let text = ctx.gateway.render_metrics().await;
    warp::reply::with_header(
        text,
        "content-type",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )
    .into_response()
}
