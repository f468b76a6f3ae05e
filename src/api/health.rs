//! `/health` (process up), `/ready` (store open, supervisor running) and `/metrics`
//! (Prometheus text, admin token).

use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::models::Health;
use super::{Ctx, json, json_status};

#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    summary = "The process is up",
    responses(
        (status = 200, description = "`status` is `ok`", body = Health),
    ),
)]
pub fn health() -> Response {
    json(&Health { status: "ok" })
}

#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    summary = "The store is open and the supervisor runs",
    responses(
        (status = 200, description = "`status` is `ready`", body = Health),
        (status = 503, description = "`status` is `not_ready`", body = Health),
    ),
)]
pub fn ready(ctx: &Ctx) -> Response {
    if ctx.gateway.is_ready() {
        json(&Health { status: "ready" })
    } else {
        json_status(
            &Health {
                status: "not_ready",
            },
            StatusCode::SERVICE_UNAVAILABLE,
        )
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics (OpenMetrics text)",
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
    ),
)]
pub async fn metrics(ctx: &Ctx) -> Response {
    let text = ctx.gateway.render_metrics().await;
    warp::reply::with_header(
        text,
        "content-type",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )
    .into_response()
}
