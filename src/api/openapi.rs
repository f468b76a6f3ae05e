//! The OpenAPI 3.1 document, generated from the handlers' annotations and the request and
//! response types they speak, served at `/api/v1/openapi.json` and rendered by the docs UI at
//! `/docs`. Who may call each operation comes from the route table itself, so the document's
//! security and its 401/403 answers cannot disagree with what the server enforces.

use std::sync::LazyLock;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use warp::http::Method;
use warp::reply::Response;

use super::errors::ErrorCode;
use super::router::{Access, ROUTES};
use super::{admin, events, groups, health, messages, sessions, ui, webhooks};

const API_TOKEN: &str = "api_token";
const ADMIN_TOKEN: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wagate",
        description = "A self-hosted WhatsApp REST gateway. Every error answers `{\"error\": \"<code>\", \"message\": \"…\"}`; the codes that an operation can answer are named on its responses."
    ),
    paths(
        health::health,
        health::ready,
        health::metrics,
        sessions::create,
        sessions::list,
        sessions::get,
        sessions::delete,
        sessions::status,
        sessions::connect,
        sessions::disconnect,
        sessions::logout,
        sessions::qr_code,
        sessions::pair,
        sessions::device,
        groups::list,
        groups::create,
        groups::get,
        groups::info,
        groups::set_subject,
        groups::set_description,
        groups::leave,
        groups::add_participants,
        groups::remove_participants,
        groups::promote,
        groups::demote,
        groups::invite_link,
        groups::join,
        groups::invite_info,
        groups::settings,
        messages::send_text,
        events::pull,
        events::stream,
        events::stream_all,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::update,
        webhooks::delete,
        webhooks::replay,
        admin::tree,
        admin::actor,
        admin::restart,
        admin::snapshot,
        ui::dashboard,
        ui::asset,
        ui::docs,
        ui::docs_file,
        openapi_json,
    ),
    components(schemas(ErrorCode)),
    modifiers(&AccessFromRoutes),
    tags(
        (name = "sessions", description = "WhatsApp sessions: create, pair, connect, inspect"),
        (name = "groups", description = "The groups of a session"),
        (name = "messages", description = "Sending messages"),
        (name = "events", description = "The durable event log: pull and server-sent events"),
        (name = "webhooks", description = "Signed webhooks fed from the event log"),
        (name = "admin", description = "The actor tree and stored snapshots (admin token)"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "ui", description = "The dashboard, these docs and this document"),
    )
)]
struct ApiDoc;

/// The crash trigger exists only in test builds, and so does its description.
#[cfg(feature = "test-server")]
#[derive(OpenApi)]
#[openapi(paths(admin::crash))]
struct TestOnlyDoc;

/// Sets each operation's security from the route table, and adds the answers that access
/// control gives: 401 `unauthorized` wherever a token is needed, 403 `forbidden` where only
/// the admin token opens the route.
struct AccessFromRoutes;

impl Modify for AccessFromRoutes {
    fn modify(&self, doc: &mut Document) {
        #[cfg(feature = "test-server")]
        doc.merge(TestOnlyDoc::openapi());
        let components = doc.components.get_or_insert_with(Default::default);
        for name in [API_TOKEN, ADMIN_TOKEN] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(if name == API_TOKEN {
                            "The API token: opens everything under /api/v1 but the admin endpoints"
                        } else {
                            "The admin token: opens everything"
                        }))
                        .build(),
                ),
            );
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                (Method::GET, &mut item.get),
                (Method::POST, &mut item.post),
                (Method::PUT, &mut item.put),
                (Method::DELETE, &mut item.delete),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation.as_mut() {
                    let access = ROUTES
                        .iter()
                        .find(|r| r.method == method && r.pattern == path)
                        .map(|r| r.access);
                    apply_access(operation, access);
                }
            }
        }
    }
}

fn apply_access(operation: &mut Operation, access: Option<Access>) {
    let api = || SecurityRequirement::new(API_TOKEN, Vec::<String>::new());
    let admin = || SecurityRequirement::new(ADMIN_TOKEN, Vec::<String>::new());
    let (security, errors): (Vec<SecurityRequirement>, &[(u16, ErrorCode)]) = match access {
        // An operation the router lacks stays public here; the route-set test catches it.
        Some(Access::Public) | None => (vec![SecurityRequirement::default()], &[]),
        Some(Access::Api) => (vec![api(), admin()], &[(401, ErrorCode::Unauthorized)]),
        Some(Access::Admin) => (
            vec![admin()],
            &[(401, ErrorCode::Unauthorized), (403, ErrorCode::Forbidden)],
        ),
    };
    operation.security = Some(security);
    for (status, code) in errors {
        let key = status.to_string();
        let description = match operation.responses.responses.get(&key) {
            // 403 may already name `not_group_admin`: the access code joins it.
            Some(utoipa::openapi::RefOr::T(existing)) => {
                format!("{}, `{}`", existing.description, code.as_str())
            }
            _ => format!("`{}`", code.as_str()),
        };
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build();
        operation.responses.responses.insert(key, response.into());
    }
}

/// The document, built once.
pub static DOCUMENT: LazyLock<Document> = LazyLock::new(ApiDoc::openapi);

static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    DOCUMENT
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"internal\", \"message\": \"{e}\"}}"))
});

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "ui",
    summary = "This document",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)),
)]
pub fn openapi_json() -> Response {
    let body: &'static str = &DOCUMENT_JSON;
    ui::file(
        body,
        warp::http::HeaderValue::from_static("application/json"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn document_routes() -> BTreeSet<(String, String)> {
        let mut set = BTreeSet::new();
        for (path, item) in &DOCUMENT.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
                ("HEAD", &item.head),
                ("OPTIONS", &item.options),
                ("TRACE", &item.trace),
            ] {
                if op.is_some() {
                    set.insert((method.to_owned(), path.clone()));
                }
            }
        }
        set
    }

    #[test]
    fn the_document_describes_exactly_the_routes_the_server_answers() {
        let router: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.pattern.to_owned()))
            .collect();
        let document = document_routes();
        let missing: Vec<_> = router.difference(&document).collect();
        let extra: Vec<_> = document.difference(&router).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "routes without a description: {missing:?}; described routes the server lacks: {extra:?}"
        );
    }

    #[test]
    fn it_is_openapi_3_1_with_both_bearer_schemes() {
        let json: serde_json::Value = serde_json::from_str(&DOCUMENT_JSON).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemes = &json["components"]["securitySchemes"];
        assert_eq!(schemes[API_TOKEN]["scheme"], "bearer");
        assert_eq!(schemes[ADMIN_TOKEN]["scheme"], "bearer");
    }

    #[test]
    fn access_shows_in_security_and_in_the_error_answers() {
        let json: serde_json::Value = serde_json::from_str(&DOCUMENT_JSON).unwrap();
        let op = |path: &str, method: &str| json["paths"][path][method].clone();
        let health = op("/health", "get");
        assert_eq!(health["security"], serde_json::json!([{}]));
        assert!(health["responses"].get("401").is_none());
        let sessions = op("/api/v1/sessions", "get");
        assert_eq!(
            sessions["security"],
            serde_json::json!([{API_TOKEN: []}, {ADMIN_TOKEN: []}])
        );
        assert!(sessions["responses"]["401"].is_object());
        let tree = op("/api/v1/admin/actors", "get");
        assert_eq!(tree["security"], serde_json::json!([{ADMIN_TOKEN: []}]));
        assert!(
            tree["responses"]["403"]["description"]
                .as_str()
                .unwrap()
                .contains("forbidden")
        );
        let subject = op("/api/v1/sessions/{id}/groups/{group_jid}/subject", "put");
        let forbidden = subject["responses"]["403"]["description"].as_str().unwrap();
        assert!(forbidden.contains("not_group_admin"), "{forbidden}");
    }

    #[test]
    fn every_error_code_is_in_the_error_schema() {
        let json: serde_json::Value = serde_json::from_str(&DOCUMENT_JSON).unwrap();
        let codes = &json["components"]["schemas"]["ErrorCode"]["enum"];
        for code in [
            "session_not_found",
            "events_expired",
            "whatsapp_timeout",
            "forbidden",
        ] {
            assert!(
                codes.as_array().unwrap().iter().any(|c| c == code),
                "{code} in {codes}"
            );
        }
    }
}
