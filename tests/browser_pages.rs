//! What a browser loads without a token: the OpenAPI document, the docs UI and the dashboard,
//! all served from the binary itself.

mod common;

use common::*;

async fn server() -> TestServer {
    TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_public_openapi_3_1_with_both_tokens_and_the_events_endpoints() {
    let srv = server().await;
    let doc = srv.root(None).get("/api/v1/openapi.json").await.expect(200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for scheme in ["api_token", "admin_token"] {
        assert_eq!(
            doc["components"]["securitySchemes"][scheme]["scheme"],
            "bearer"
        );
    }
    for path in [
        "/api/v1/sessions/{id}/events",
        "/api/v1/sessions/{id}/events/stream",
        "/api/v1/events/stream",
        "/api/v1/webhooks/{id}/replay",
    ] {
        assert!(
            doc["paths"][path]["get"].is_object() || doc["paths"][path]["post"].is_object(),
            "{path}"
        );
    }
    // The same document whoever asks, and the same as the one the tests check answers against.
    let with_token = srv.api().get("/openapi.json").await.expect(200);
    assert_eq!(doc, with_token);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docs_ui_is_served_from_the_binary_and_reads_the_document() {
    let srv = server().await;
    let page = srv.root(None);
    let not_following = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = not_following.get(srv.url("/docs")).send().await.unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/docs/index.html");
    // Followed, it lands on the UI.
    let followed = page.get("/docs").await;
    assert_eq!(followed.code(), 200);
    assert!(followed.text().contains("swagger-ui"));
    let index = page.get("/docs/index.html").await;
    assert_eq!(index.code(), 200);
    assert!(index.content_type().starts_with("text/html"));
    assert!(index.text().contains("swagger-ui"), "{}", index.text());
    let init = page.get("/docs/swagger-initializer.js").await;
    assert_eq!(init.code(), 200);
    assert!(
        init.text().contains("/api/v1/openapi.json"),
        "{}",
        init.text()
    );
    let bundle = page.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.code(), 200);
    assert!(
        bundle.bytes.len() > 100_000,
        "the whole UI bundle is vendored"
    );
    page.get("/docs/nope.js")
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_is_three_files_under_a_strict_content_security_policy() {
    let srv = server().await;
    let page = srv.root(None);
    let index = page.get("/").await;
    assert_eq!(index.code(), 200);
    assert!(index.content_type().starts_with("text/html"));
    let csp = index.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let html = index.text();
    assert!(html.contains("/assets/app.js") && html.contains("/assets/app.css"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no outside URL"
    );
    let js = page.get("/assets/app.js").await;
    assert_eq!(js.code(), 200);
    assert!(js.content_type().starts_with("text/javascript"));
    let css = page.get("/assets/app.css").await;
    assert_eq!(css.code(), 200);
    assert!(css.content_type().starts_with("text/css"));
    page.get("/assets/other.js")
        .await
        .expect_error(404, "not_found");
    // The page is public; what it shows needs the token.
    srv.anon()
        .get("/sessions")
        .await
        .expect_error(401, "unauthorized");
}
