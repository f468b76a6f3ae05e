//! Authentication and the error table of the contract: every client mistake gets the
//! documented status and a `{"error", "message"}` JSON body, never a 5xx.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// One request of each route family, for a session `a` that exists.
fn api_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/sessions", None),
        (Method::POST, "/sessions", Some(json!({"id": "new-one"}))),
        (Method::GET, "/sessions/a", None),
        (Method::DELETE, "/sessions/a", None),
        (Method::GET, "/sessions/a/status", None),
        (Method::POST, "/sessions/a/connect", None),
        (Method::POST, "/sessions/a/disconnect", None),
        (Method::POST, "/sessions/a/logout", None),
        (Method::GET, "/sessions/a/qr", None),
        (
            Method::POST,
            "/sessions/a/pair",
            Some(json!({"phone_number": "+628123456789"})),
        ),
        (Method::GET, "/sessions/a/device", None),
        (Method::GET, "/sessions/a/groups", None),
        (
            Method::POST,
            "/sessions/a/messages/text",
            Some(json!({"to": "628123456789", "text": "hi"})),
        ),
    ]
}

/// One request of each admin route (under `/api/v1`).
fn admin_routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/admin/actors"),
        (Method::GET, "/admin/actors/supervisor"),
        (Method::GET, "/admin/actors/session%3Aa%2Fgroups"),
        (Method::POST, "/admin/actors/session%3Aa%2Finvites/restart"),
        (Method::GET, "/admin/sessions/a/snapshot"),
    ]
}

async fn send(api: &Api, method: Method, path: &str, body: Option<&Value>) -> Reply {
    let mut rb = api.request(method, path);
    if let Some(b) = body {
        rb = rb.json(b);
    }
    api.send(rb).await
}

/// Sends `Authorization: <value>` verbatim.
async fn send_with_header(srv: &TestServer, method: Method, path: &str, value: &str) -> Reply {
    let api = srv.anon();
    api.send(
        api.request(method, path)
            .header(reqwest::header::AUTHORIZATION, value),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_token_returns_401_on_every_route_family() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    srv.create_session("a", "A").await;
    for (method, path, body) in api_routes() {
        send(&srv.anon(), method, path, body.as_ref())
            .await
            .expect_error(401, "unauthorized");
    }
    for (method, path) in admin_routes() {
        send(&srv.anon(), method, path, None)
            .await
            .expect_error(401, "unauthorized");
    }
    srv.root(None)
        .get("/metrics")
        .await
        .expect_error(401, "unauthorized");
    // Nothing was changed by the rejected requests.
    let list = srv.api().get("/sessions").await.expect(200);
    assert_eq!(list["total"], 1, "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_token_returns_401_on_every_route_family() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    srv.create_session("a", "A").await;
    let wrong = srv.api_with_token("not-the-token");
    for (method, path, body) in api_routes() {
        send(&wrong, method, path, body.as_ref())
            .await
            .expect_error(401, "unauthorized");
    }
    for (method, path) in admin_routes() {
        send(&wrong, method, path, None)
            .await
            .expect_error(401, "unauthorized");
    }
    srv.root(Some("not-the-token"))
        .get("/metrics")
        .await
        .expect_error(401, "unauthorized");
    // A prefix or an extension of the real token is not the token.
    let prefix = &API_TOKEN[..API_TOKEN.len() - 1];
    let longer = format!("{API_TOKEN}x");
    for token in [prefix, longer.as_str()] {
        srv.api_with_token(token)
            .get("/sessions")
            .await
            .expect_error(401, "unauthorized");
    }
    assert_eq!(srv.session("a").await["id"], "a");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_authorization_header_returns_401() {
    let srv = TestServer::start_in_process().await;
    let basic = "Basic dGVzdDp0ZXN0".to_string();
    let raw = API_TOKEN.to_string();
    let token_scheme = format!("Token {API_TOKEN}");
    let no_space = format!("Bearer{API_TOKEN}");
    for value in [
        basic.as_str(),
        raw.as_str(),
        token_scheme.as_str(),
        no_space.as_str(),
        "Bearer",
        "Bearer ",
        "",
    ] {
        let r = send_with_header(&srv, Method::GET, "/sessions", value).await;
        assert_eq!(r.code(), 401, "Authorization {value:?}: {}", r.text());
        r.expect_error(401, "unauthorized");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_token_on_admin_routes_returns_403_when_admin_token_set() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    srv.create_session("a", "A").await;
    for (method, path) in admin_routes() {
        send(&srv.api(), method, path, None)
            .await
            .expect_error(403, "forbidden");
    }
    srv.root(Some(API_TOKEN))
        .get("/metrics")
        .await
        .expect_error(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_token_opens_admin_routes() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    srv.create_session("a", "A").await;
    srv.admin().get("/admin/actors").await.expect(200);
    srv.admin()
        .get("/admin/actors/supervisor")
        .await
        .expect(200);
    srv.admin()
        .get("/admin/sessions/a/snapshot")
        .await
        .expect(200);
    srv.root(Some(ADMIN_TOKEN))
        .get("/metrics")
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_token_also_opens_every_api_route() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    srv.create_session("a", "A").await;
    let admin = srv.api_with_token(ADMIN_TOKEN);
    for (method, path, body) in api_routes() {
        let r = send(&admin, method.clone(), path, body.as_ref()).await;
        assert!(
            !matches!(r.code(), 401 | 403),
            "{method} {path} refused the admin token: {}",
            r.text()
        );
    }
    assert_eq!(admin.get("/sessions").await.expect(200)["total"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_token_opens_admin_routes_without_admin_token() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    srv.api().get("/admin/actors").await.expect(200);
    srv.api().get("/admin/actors/supervisor").await.expect(200);
    srv.api()
        .get("/admin/sessions/a/snapshot")
        .await
        .expect(200);
    srv.root(Some(API_TOKEN))
        .get("/metrics")
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_need_no_token_even_with_tokens_configured() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    srv.root(None).get("/health").await.expect_status(200);
    srv.wait_ready().await;
    // A wrong token on a probe is not a reason to refuse it.
    srv.root(Some("garbage"))
        .get("/health")
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_returns_400_invalid_json() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    for body in [
        &b"{\"id\":"[..],
        b"{id: 1}",
        b"not json",
        b"{\"name\": \"x\",}",
    ] {
        srv.api()
            .post_raw("/sessions", "application/json", body.to_vec())
            .await
            .expect_error(400, "invalid_json");
    }
    srv.api()
        .post_raw(
            "/sessions/a/pair",
            "application/json",
            b"{\"phone_number\":".to_vec(),
        )
        .await
        .expect_error(400, "invalid_json");
    assert_eq!(srv.api().get("/sessions").await.expect(200)["total"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_field_type_returns_400_validation_naming_the_field() {
    let srv = TestServer::start_in_process().await;
    for body in [
        json!({"name": 5}),
        json!({"name": ["x"]}),
        json!({"name": {}}),
    ] {
        let msg = srv
            .api()
            .post_json("/sessions", &body)
            .await
            .expect_error(400, "validation");
        assert!(
            msg.contains("name"),
            "message for {body} names the field: {msg:?}"
        );
    }
    for body in [json!({"id": 5}), json!({"id": true})] {
        let r = srv.api().post_json("/sessions", &body).await;
        r.expect_error(400, "validation");
        let msg = r.json()["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains("id"),
            "message for {body} names the field: {msg:?}"
        );
    }
    assert_eq!(srv.api().get("/sessions").await.expect(200)["total"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn non_object_json_body_returns_400() {
    let srv = TestServer::start_in_process().await;
    for body in [json!([1, 2]), json!("a string"), json!(42)] {
        srv.api()
            .post_json("/sessions", &body)
            .await
            .expect_error(400, "validation");
    }
    assert_eq!(srv.api().get("/sessions").await.expect(200)["total"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_session_id_in_body_returns_400_invalid_session_id() {
    let srv = TestServer::start_in_process().await;
    let too_long = "a".repeat(65);
    for id in [
        "bad id!",
        "",
        too_long.as_str(),
        "ü-umlaut",
        "a/b",
        "a.b",
        "a:b",
    ] {
        let r = srv
            .api()
            .post_json("/sessions", &json!({"id": id, "name": "x"}))
            .await;
        assert_eq!(r.code(), 400, "id {id:?}: {}", r.text());
        r.expect_error(400, "invalid_session_id");
    }
    assert_eq!(srv.api().get("/sessions").await.expect(200)["total"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_session_id_in_path_returns_400_invalid_session_id() {
    let srv = TestServer::start_in_process().await;
    let too_long = "b".repeat(65);
    for id in ["bad!id", too_long.as_str(), "bad%20id"] {
        srv.api()
            .get(&format!("/sessions/{id}"))
            .await
            .expect_error(400, "invalid_session_id");
        srv.api()
            .post(&format!("/sessions/{id}/connect"))
            .await
            .expect_error(400, "invalid_session_id");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_route_returns_404_not_found_json() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    for path in ["/nope", "/sessions/a/nonsense", "/sessions/a/status/extra"] {
        srv.api().get(path).await.expect_error(404, "not_found");
    }
    srv.root(None)
        .get("/no-such-page")
        .await
        .expect_error(404, "not_found");
    srv.root(Some(API_TOKEN))
        .get("/api/v2/sessions")
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_method_returns_405_method_not_allowed_json() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    for (method, path) in [
        (Method::PUT, "/sessions"),
        (Method::PATCH, "/sessions"),
        (Method::DELETE, "/sessions"),
        (Method::GET, "/sessions/a/connect"),
        (Method::POST, "/sessions/a/status"),
        (Method::PUT, "/sessions/a"),
    ] {
        let r = srv.api().call(method.clone(), path).await;
        assert_eq!(r.code(), 405, "{method} {path}: {}", r.text());
        r.expect_error(405, "method_not_allowed");
    }
    // Nothing was deleted or changed.
    assert_eq!(srv.session("a").await["name"], "A");
}

/// A valid session-create body of exactly `len` bytes: the JSON padded with whitespace,
/// so the size is the only thing wrong with it when it is too large.
fn padded_body(id: &str, len: usize) -> Vec<u8> {
    let mut body = serde_json::to_vec(&json!({"id": id, "name": "Padded"})).unwrap();
    assert!(body.len() <= len);
    body.resize(len, b' ');
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_default_limit_returns_413() {
    let srv = TestServer::start_in_process().await;
    // The server may close the connection after refusing the body: no connection reuse.
    let api = srv.api().unpooled();
    api.post_raw(
        "/sessions",
        "application/json",
        padded_body("big", DEFAULT_BODY_LIMIT + 1),
    )
    .await
    .expect_error(413, "payload_too_large");
    api.get("/sessions/big")
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn body_at_default_limit_is_accepted() {
    let srv = TestServer::start_in_process().await;
    let api = srv.api().unpooled();
    let r = api
        .post_raw(
            "/sessions",
            "application/json",
            padded_body("biggish", DEFAULT_BODY_LIMIT),
        )
        .await;
    assert_eq!(r.expect(201)["session"]["id"], "biggish");
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_configured_limit_returns_413() {
    let srv = TestServer::builder()
        .in_process()
        .env("WAGATE_BODY_LIMIT", "2048")
        .start()
        .await;
    let api = srv.api().unpooled();
    api.post_raw("/sessions", "application/json", padded_body("big", 2049))
        .await
        .expect_error(413, "payload_too_large");
    api.post_raw(
        "/sessions",
        "application/json",
        padded_body("big", 64 * 1024),
    )
    .await
    .expect_error(413, "payload_too_large");
    let s = api
        .post_raw("/sessions", "application/json", padded_body("small", 2048))
        .await
        .expect(201);
    assert_eq!(s["session"]["id"], "small");
    let list = api.get("/sessions").await.expect(200);
    assert_eq!(list["total"], 1, "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn body_limit_from_config_file_applies() {
    let srv = TestServer::builder()
        .in_process()
        .config(config_with(&[("", "body_limit", "4096")]))
        .start()
        .await;
    let api = srv.api().unpooled();
    api.post_raw("/sessions", "application/json", padded_body("big", 4097))
        .await
        .expect_error(413, "payload_too_large");
    api.post_raw("/sessions", "application/json", padded_body("fits", 4096))
        .await
        .expect(201);
}

#[tokio::test(flavor = "multi_thread")]
async fn env_overrides_config_file() {
    let srv = TestServer::builder()
        .in_process()
        .config(config_with(&[("", "body_limit", "4096")]))
        .env("WAGATE_BODY_LIMIT", "65536")
        .start()
        .await;
    let api = srv.api().unpooled();
    api.post_raw("/sessions", "application/json", padded_body("mid", 8192))
        .await
        .expect(201);
    api.post_raw("/sessions", "application/json", padded_body("big", 65537))
        .await
        .expect_error(413, "payload_too_large");
}

#[tokio::test(flavor = "multi_thread")]
async fn non_json_content_type_returns_415() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    let body = br#"{"id": "plain", "name": "x"}"#.to_vec();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        srv.api()
            .post_raw("/sessions", ct, body.clone())
            .await
            .expect_error(415, "unsupported_media_type");
    }
    srv.api()
        .post_raw(
            "/sessions/a/pair",
            "text/plain",
            br#"{"phone_number": "+628123456789"}"#.to_vec(),
        )
        .await
        .expect_error(415, "unsupported_media_type");
    assert_eq!(srv.api().get("/sessions").await.expect(200)["total"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_content_type_with_charset_is_accepted() {
    let srv = TestServer::start_in_process().await;
    let r = srv
        .api()
        .post_raw(
            "/sessions",
            "application/json; charset=utf-8",
            br#"{"id": "cs", "name": "Charset"}"#.to_vec(),
        )
        .await;
    assert_eq!(r.expect(201)["session"]["id"], "cs");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_mistakes_never_return_5xx() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    srv.create_session("a", "A").await;
    let api = srv.api();
    let long = "z".repeat(500);
    let mut replies = vec![
        api.get("/sessions/a/qr?format=gif").await,
        api.get("/sessions/a/qr?format=").await,
        api.get(&format!("/sessions/{long}")).await,
        api.get("/sessions/%FF%FE").await,
        api.get("/sessions/a%2Fb").await,
        api.post_raw("/sessions", "application/json", Vec::new())
            .await,
        api.post_raw("/sessions", "application/json", b"null".to_vec())
            .await,
        api.post_raw("/sessions", "application/json", vec![0xff, 0xfe, 0x00])
            .await,
        api.post_raw("/sessions/a/pair", "application/json", b"[]".to_vec())
            .await,
        api.post_json("/sessions/a/pair", &json!({"phone_number": long}))
            .await,
        api.post_json("/sessions", &json!({"id": "ok-id", "name": "", "extra": 1}))
            .await,
        srv.admin().get("/admin/actors/%ZZ").await,
        srv.admin().get("/admin/actors/").await,
        srv.admin().post("/admin/actors/supervisor/nonsense").await,
        srv.admin().get("/admin/sessions/%20/snapshot").await,
    ];
    replies.push(api.post_raw("/sessions", "", b"{}".to_vec()).await);
    for r in &replies {
        r.expect_not_5xx();
        if r.status.is_client_error() {
            r.error_body();
        }
    }
    // The server is still fine.
    srv.root(None).get("/health").await.expect_status(200);
    assert_eq!(srv.session("a").await["id"], "a");
}
