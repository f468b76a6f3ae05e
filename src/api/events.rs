//! `/sessions/{id}/events`: a session's event log, pulled page by page or followed as a
//! server-sent-event stream (contract: `events.md`). Both read the same log, so a consumer
//! can switch between them by seq.

use futures_util::{Stream, StreamExt};
use std::convert::Infallible;
use std::time::Duration;
use warp::Reply;
use warp::http::{HeaderValue, header};
use warp::reply::Response;

use super::Ctx;
use super::errors::ApiError;
use super::errors::ErrorBody;
use super::models::EventPage;
use super::request::{Request, session_id};
use wagate_actors::event_log::{StoredEvent, is_event_type};

/// The contract's keep-alive: a comment at least this often.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// `after`: a seq; `None` when absent, which reads from the oldest event still held.
fn seq(field: &str, raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    raw.map(|v| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| ApiError::validation(field, format!("'{v}' is not a seq (0 or more)")))
    })
    .transpose()
}

/// `types=a,b`: known event types only; `None` when absent (all types).
pub fn types(raw: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let list: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err(ApiError::validation(
            "types",
            "name at least one event type",
        ));
    }
    if let Some(unknown) = list.iter().find(|t| !is_event_type(t)) {
        return Err(ApiError::validation(
            "types",
            format!("'{unknown}' is not an event type"),
        ));
    }
    Ok(Some(list))
}

fn limit(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| ApiError::validation("limit", format!("must be 1-{MAX_LIMIT}")))
}

/// `GET /sessions/{id}/events?after&limit&types`.
#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/events",
    tag = "events",
    summary = "A page of the session's event log",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("after" = Option<u64>, Query, description = "Events after this seq; when absent, from the oldest event still held (never 410)"),
        ("limit" = Option<usize>, Query, description = "1-1000, default 100"),
        ("types" = Option<String>, Query, description = "Comma-separated event types (default all)"),
    ),
    responses(
        (status = 200, description = "Events in seq order", body = EventPage),
        (status = 400, description = "`validation`, `invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 410, description = "`events_expired`", body = ErrorBody),
    ),
)]
pub async fn pull(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = req.session()?;
    let after = seq("after", req.query("after"))?;
    let limit = limit(req.query("limit"))?;
    let types = types(req.query("types"))?;
    let page = ctx.gateway.events(&id, after, limit, types).await?;
    // The stored envelopes are the bytes every transport sends; they are spliced in as they are.
    let mut body = Vec::with_capacity(
        64 + page
            .events
            .iter()
            .map(|e| e.envelope.len() + 1)
            .sum::<usize>(),
    );
    body.extend_from_slice(b"{\"events\":[");
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&event.envelope);
    }
    body.extend_from_slice(format!("],\"next_after\":{}}}", page.next_after).as_bytes());
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `GET /sessions/{id}/events/stream?types&after`, resumable with `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/events/stream",
    tag = "events",
    summary = "Follow the session's event log (server-sent events)",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("after" = Option<u64>, Query, description = "Replay from after this seq; when absent, from the oldest event still held (never 410); `Last-Event-ID` wins"),
        ("types" = Option<String>, Query, description = "Comma-separated event types (default all)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: one event per envelope (`id` = seq, `event` = type, `data` = envelope); a comment every 15 s", content_type = "text/event-stream", body = String),
        (status = 400, description = "`validation`, `invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 410, description = "`events_expired`", body = ErrorBody),
    ),
)]
pub async fn stream(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = req.session()?;
    let after = match req.header("last-event-id") {
        Some(resume) => seq("Last-Event-ID", Some(resume))?,
        None => seq("after", req.query("after"))?,
    };
    let types = types(req.query("types"))?;
    let events = ctx.gateway.event_stream(&id, after, types)?;
    Ok(sse(events))
}

#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "events",
    summary = "Follow the events of every session, live (server-sent events)",
    params(
        ("types" = Option<String>, Query, description = "Comma-separated event types (default all)"),
        ("sessions" = Option<String>, Query, description = "Comma-separated session ids (default every session)"),
    ),
    responses(
        (status = 200, description = "`text/event-stream` of the events that happen from now on, in seq order per session; each envelope names its session. Without `sessions`, a session created while the stream is open is followed from its first event. To resume after a gap, pull each session from its last seq.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`validation`, `invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ),
)]
pub async fn stream_all(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let types = types(req.query("types"))?;
    let sessions = req
        .query("sessions")
        .map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(session_id)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let events = ctx.gateway.live_events(sessions, types)?;
    Ok(sse(events))
}

/// Events as server-sent events: `id` the seq, `event` the type, `data` the stored envelope.
fn sse(events: impl Stream<Item = StoredEvent> + Send + Sync + 'static) -> Response {
    let events = events.map(|event| {
        let data = String::from_utf8_lossy(&event.envelope).into_owned();
        Ok::<_, Infallible>(
            warp::sse::Event::default()
                .id(event.seq.to_string())
                .event(event.kind)
                .data(data),
        )
    });
    let stream = warp::sse::keep_alive().interval(KEEP_ALIVE).stream(events);
    let mut response = warp::sse::reply(stream).into_response();
    // Proxies must not buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_checked() {
        assert_eq!(seq("after", None).unwrap(), None);
        assert_eq!(seq("after", Some("42")).unwrap(), Some(42));
        assert_eq!(seq("after", Some("-1")).unwrap_err().code(), "validation");
        assert_eq!(limit(None).unwrap(), 100);
        assert_eq!(limit(Some("1000")).unwrap(), 1000);
        assert!(limit(Some("0")).is_err());
        assert!(limit(Some("1001")).is_err());
        assert_eq!(types(None).unwrap(), None);
        assert_eq!(
            types(Some("message.received, group.updated")).unwrap(),
            Some(vec!["message.received".into(), "group.updated".into()])
        );
        assert!(types(Some("message.nope")).is_err());
        assert!(types(Some(",")).is_err());
    }
}
