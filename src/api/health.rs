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
    let counters = [
        (
            "wagate_events_appended_total",
            "Events appended to the session logs.",
            m.events_appended,
        ),
        (
            "wagate_events_delivered_total",
            "Events delivered to webhooks.",
            m.events_delivered,
        ),
        (
            "wagate_webhook_failed_attempts_total",
            "Webhook delivery attempts that failed and will be retried.",
            m.delivery_failures,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP wagate_webhook_pending_events Events not yet delivered, per webhook."
    );
    let _ = writeln!(out, "# TYPE wagate_webhook_pending_events gauge");
    for w in &m.webhooks {
        let _ = writeln!(
            out,
            "wagate_webhook_pending_events{{webhook=\"{}\"}} {}",
            w.id, w.pending
        );
    }
    let _ = writeln!(
        out,
        "# HELP wagate_webhook_oldest_pending_age_seconds Age of the oldest undelivered event, per webhook."
    );
    let _ = writeln!(
        out,
        "# TYPE wagate_webhook_oldest_pending_age_seconds gauge"
    );
    for w in &m.webhooks {
        let _ = writeln!(
            out,
            "wagate_webhook_oldest_pending_age_seconds{{webhook=\"{}\"}} {}",
            w.id, w.oldest_pending_age_seconds
        );
    }
    warp::reply::with_header(out, "content-type", "text/plain; version=0.0.4").into_response()
}
