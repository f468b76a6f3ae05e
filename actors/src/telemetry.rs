//! Prometheus metrics (`prometheus-client`): HTTP requests by route template and status,
//! WhatsApp round-trips by operation and outcome (both with latency histograms), events
//! appended and delivered, webhook delivery failures; gauges that describe the tree (sessions
//! by status, actors, restarts, live clients, per-webhook backlog) are set when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route template (`/api/v1/sessions/{id}`), never the raw path.
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub operation: String,
    /// `ok`, `error` or `timeout`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: String,
}

/// Latency buckets from 0.5 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Telemetry {
    registry: Registry,
    /// Serializes scrapes: gauges are set, then everything is encoded.
    scrape: Mutex<()>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub whatsapp_calls: Family<CallLabels, Counter>,
    pub whatsapp_latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
    pub events_appended: Counter,
    pub events_delivered: Counter,
    pub delivery_failures: Counter,
    pub sessions: Family<StatusLabels, Gauge>,
    pub actors: Gauge,
    actor_restarts: Counter,
    restarts_seen: AtomicU64,
    pub whatsapp_clients: Gauge,
    pub webhook_pending: Family<WebhookLabels, Gauge>,
    pub webhook_oldest_pending: Family<WebhookLabels, Gauge>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wagate");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests, by route template and status",
            http_requests.clone(),
        );
        let http_latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            http_latency.clone(),
        );
        let whatsapp_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "whatsapp_calls",
            "WhatsApp round-trips, by operation and outcome",
            whatsapp_calls.clone(),
        );
        let whatsapp_latency: Family<OperationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency);
        registry.register(
            "whatsapp_call_duration_seconds",
            "Time of a WhatsApp round-trip, by operation",
            whatsapp_latency.clone(),
        );
        let events_appended = Counter::default();
        registry.register(
            "events_appended",
            "Events appended to the session logs",
            events_appended.clone(),
        );
        let events_delivered = Counter::default();
        registry.register(
            "events_delivered",
            "Events delivered to webhooks",
            events_delivered.clone(),
        );
        let delivery_failures = Counter::default();
        registry.register(
            "webhook_failed_attempts",
            "Webhook delivery attempts that failed and will be retried",
            delivery_failures.clone(),
        );
        let sessions = Family::<StatusLabels, Gauge>::default();
        registry.register("sessions", "Sessions by status", sessions.clone());
        let actors = Gauge::default();
        registry.register(
            "actors",
            "Live actors in the supervision tree",
            actors.clone(),
        );
        let actor_restarts = Counter::default();
        registry.register(
            "actor_restarts",
            "Actor restarts since start",
            actor_restarts.clone(),
        );
        let whatsapp_clients = Gauge::default();
        registry.register(
            "whatsapp_clients",
            "Live WhatsApp clients",
            whatsapp_clients.clone(),
        );
        let webhook_pending = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "webhook_pending_events",
            "Events not yet delivered, per webhook",
            webhook_pending.clone(),
        );
        let webhook_oldest_pending = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "webhook_oldest_pending_age_seconds",
            "Age of the oldest undelivered event, per webhook",
            webhook_oldest_pending.clone(),
        );
        Self {
            registry,
            scrape: Mutex::new(()),
            http_requests,
            http_latency,
            whatsapp_calls,
            whatsapp_latency,
            events_appended,
            events_delivered,
            delivery_failures,
            sessions,
            actors,
            actor_restarts,
            restarts_seen: AtomicU64::new(0),
            whatsapp_clients,
            webhook_pending,
            webhook_oldest_pending,
        }
    }

    /// Brings the restart counter up to the tree's own total.
    pub fn sync_restarts(&self, total: u64) {
        let seen = self.restarts_seen.swap(total, Ordering::Relaxed);
        self.actor_restarts.inc_by(total.saturating_sub(seen));
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.http_latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn observe_whatsapp(&self, operation: &str, outcome: &str, took: Duration) {
        self.whatsapp_calls
            .get_or_create(&CallLabels {
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.whatsapp_latency
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition, after `set_gauges` updated what is read at scrape time.
    pub fn render(&self, set_gauges: impl FnOnce(&Self)) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        set_gauges(self);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_counters_and_gauges() {
        let t = Telemetry::new();
        t.observe_http(
            "GET",
            "/api/v1/sessions/{id}",
            200,
            Duration::from_millis(3),
        );
        t.observe_whatsapp("group_query", "timeout", Duration::from_secs(2));
        t.events_appended.inc_by(5);
        let text = t.render(|t| {
            t.sessions
                .get_or_create(&StatusLabels {
                    status: "logged_in".into(),
                })
                .set(2);
        });
        assert!(text.contains(
            r#"wagate_http_requests_total{method="GET",route="/api/v1/sessions/{id}",status="200"} 1"#
        ), "{text}");
        assert!(text.contains("wagate_http_request_duration_seconds_bucket"));
        assert!(text.contains(
            r#"wagate_whatsapp_calls_total{operation="group_query",outcome="timeout"} 1"#
        ));
        assert!(text.contains("wagate_events_appended_total 5"));
        assert!(text.contains(r#"wagate_sessions{status="logged_in"} 2"#));
        assert!(text.ends_with("# EOF\n"));
    }
}
