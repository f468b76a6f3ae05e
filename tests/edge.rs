//! The edge's routing and parsing, in-process: 405 with `Allow`, literal paths before JIDs,
//! the bearer scheme, query flags, required fields, oversized targets and bodies. Each answer
//! is the contract's JSON.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn wrong_method_is_405_naming_the_allowed_methods() {
    let srv = TestServer::start_in_process().await;
    for (method, path, allow) in [
        (Method::PATCH, "/sessions/a", "GET, DELETE"),
        (Method::PUT, "/sessions", "POST, GET"),
        (Method::GET, "/sessions/a/groups/join", "POST"),
        (Method::POST, "/sessions/a/groups/invite-info", "GET"),
        (
            Method::PUT,
            "/sessions/a/groups/120363000000000001@g.us/participants",
            "POST, DELETE",
        ),
    ] {
        let r = srv.api().call(method.clone(), path).await;
        r.expect_error(405, "method_not_allowed");
        assert_eq!(r.header("allow").as_deref(), Some(allow), "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn literal_group_paths_are_never_read_as_group_jids() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    // Not logged in: the route was found and its input accepted, so the session answers.
    srv.api()
        .post_json("/sessions/a/groups/join", &json!({"code": "AbCdEfGhIjK"}))
        .await
        .expect_error(409, "not_logged_in");
    srv.api()
        .get("/sessions/a/groups/invite-info?code=AbCdEfGhIjK")
        .await
        .expect_error(409, "not_logged_in");
    srv.api()
        .get("/sessions/a/groups/not-a-jid")
        .await
        .expect_error(400, "invalid_jid");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bearer_scheme_is_case_insensitive() {
    let srv = TestServer::start_in_process().await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = srv
            .api()
            .send(
                srv.client()
                    .get(srv.url("/api/v1/sessions"))
                    .header("authorization", format!("{scheme} {API_TOKEN}")),
            )
            .await;
        r.expect(200);
    }
    srv.anon()
        .send(
            srv.client()
                .get(srv.url("/api/v1/sessions"))
                .header("authorization", format!("Basic {API_TOKEN}")),
        )
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn boolean_flags_accept_true_false_one_zero_only() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    for flag in ["true", "false", "1", "0"] {
        srv.api()
            .get(&format!("/sessions/a/groups?refresh={flag}"))
            .await
            .expect_error(409, "not_logged_in");
    }
    for (path, name) in [
        ("/sessions/a/groups?refresh=yes", "refresh"),
        (
            "/sessions/a/groups/120363000000000001@g.us/invite-link?reset=maybe",
            "reset",
        ),
    ] {
        let message = srv.api().get(path).await.expect_error(400, "validation");
        assert!(message.contains(name), "{message}");
        assert!(message.contains("true, false, 1 or 0"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_description_change_needs_the_description_field() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    let path = "/sessions/a/groups/120363000000000001@g.us/description";
    for body in [
        json!({}),
        json!({"prev_id": null}),
        json!({"prev_id": "abc"}),
    ] {
        let message = srv
            .api()
            .send(srv.api().request(Method::PUT, path).json(&body))
            .await
            .expect_error(400, "validation");
        assert!(message.contains("description"), "{body}: {message}");
    }
    // `null` is a deletion: accepted, and refused only because the session is offline.
    srv.api()
        .send(
            srv.api()
                .request(Method::PUT, path)
                .json(&json!({"description": null})),
        )
        .await
        .expect_error(409, "not_logged_in");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overlong_target_is_414_json() {
    let srv = TestServer::start_in_process().await;
    let long = "a".repeat(9 * 1024);
    srv.api()
        .get(&format!("/sessions/{long}"))
        .await
        .expect_error(414, "validation");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_upload_gets_413_and_the_connection_stays_usable() {
    let srv = TestServer::start_in_process().await;
    let api = srv.api();
    for _ in 0..3 {
        api.post_raw(
            "/sessions",
            "application/json",
            format!("{{\"name\":\"{}\"}}", "x".repeat(2 * DEFAULT_BODY_LIMIT)).into_bytes(),
        )
        .await
        .expect_error(413, "payload_too_large");
        api.get("/sessions").await.expect(200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_are_404_json_and_the_api_asks_for_its_token_first() {
    let srv = TestServer::start_in_process().await;
    srv.api()
        .get("/nothing/here")
        .await
        .expect_error(404, "not_found");
    srv.root(None)
        .get("/favicon.ico")
        .await
        .expect_error(404, "not_found");
    // Under the API, a caller without a token learns nothing of which routes exist.
    srv.anon()
        .get("/nothing/here")
        .await
        .expect_error(401, "unauthorized");
    srv.anon()
        .call(Method::PUT, "/sessions")
        .await
        .expect_error(401, "unauthorized");
    srv.root(Some("wrong"))
        .get("/api/v1/nothing/here")
        .await
        .expect_error(401, "unauthorized");
    srv.api()
        .call(Method::PUT, "/sessions")
        .await
        .expect_error(405, "method_not_allowed");
}

/// A raw connection to the server, for requests no HTTP client would send.
async fn raw(srv: &TestServer) -> tokio::net::TcpStream {
    let addr = srv.base_url().trim_start_matches("http://").to_owned();
    tokio::net::TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed
        .ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_sent_request_is_closed_while_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let srv = TestServer::builder()
        .in_process()
        .env("WAGATE_HTTP_HEADER_TIMEOUT", "1s")
        .start()
        .await;
    let mut slow = raw(&srv).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: wagate\r\n")
        .await
        .unwrap();
    // Others keep being served meanwhile.
    srv.root(None).get("/health").await.expect(200);
    let closed = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the half-sent request is still open");
    srv.root(None).get("/health").await.expect(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_sent_body_gets_408_and_the_connection_closes() {
    use tokio::io::AsyncWriteExt;
    let srv = TestServer::builder()
        .in_process()
        .env("WAGATE_HTTP_BODY_TIMEOUT", "1s")
        .start()
        .await;
    let mut slow = raw(&srv).await;
    let head = format!(
        "POST /api/v1/sessions HTTP/1.1\r\nHost: wagate\r\nAuthorization: Bearer {API_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\":"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut slow, Duration::from_secs(5))
        .await
        .expect("the connection closes");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert_eq!(srv.api().get("/sessions").await.expect(200)["total"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_connection_cap_new_clients_are_served_once_idle_ones_close() {
    let srv = TestServer::builder()
        .in_process()
        .env("WAGATE_HTTP_MAX_CONNECTIONS", "4")
        .env("WAGATE_HTTP_HEADER_TIMEOUT", "1s")
        .start()
        .await;
    // Four connections that never send anything hold every slot.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(raw(&srv).await);
    }
    // Served once an idle one hits the header timeout and frees its slot, not before: by
    // the time the answer comes, the server has closed at least one of them.
    srv.root(None).unpooled().get("/health").await.expect(200);
    let mut freed = 0;
    for stream in &mut idle {
        if read_until_closed(stream, Duration::from_millis(50))
            .await
            .is_some()
        {
            freed += 1;
        }
    }
    assert!(
        freed > 0,
        "a fifth connection was served past the cap of four"
    );
    srv.api().unpooled().get("/sessions").await.expect(200);
    for mut stream in idle {
        assert!(
            read_until_closed(&mut stream, Duration::from_secs(5))
                .await
                .is_some(),
            "an idle connection outlived the header timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_until_keep_alive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = TestServer::builder()
        .in_process()
        .env("WAGATE_HTTP_HEADER_TIMEOUT", "1s")
        .env("WAGATE_HTTP_KEEP_ALIVE", "3s")
        .start()
        .await;
    let request = b"GET /health HTTP/1.1\r\nHost: wagate\r\n\r\n";
    let mut conn = raw(&srv).await;
    let mut buf = vec![0u8; 4096];
    conn.write_all(request).await.unwrap();
    let n = conn.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle for twice the header timeout: still open, and serves the next request.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    conn.write_all(request).await.unwrap();
    let n = conn.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "the idle connection was closed before keep-alive"
    );
    // Idle past keep-alive: closed.
    let started = std::time::Instant::now();
    assert!(
        read_until_closed(&mut conn, Duration::from_secs(6))
            .await
            .is_some(),
        "an idle connection outlived keep-alive"
    );
    assert!(started.elapsed() >= Duration::from_millis(2500));
    // A request that stops halfway is still cut at the header timeout.
    let mut slow = raw(&srv).await;
    slow.write_all(request).await.unwrap();
    let _ = slow.read(&mut buf).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    assert!(
        read_until_closed(&mut slow, Duration::from_secs(5))
            .await
            .is_some()
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "cut at the header timeout"
    );
}
