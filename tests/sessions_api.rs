//! The session endpoints (`sessions.md`), through HTTP against an in-process server.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn create_session_returns_201_with_session_object() {
    let srv = TestServer::start_in_process().await;
    let before = now_secs();
    let r = srv
        .api()
        .post_json("/sessions", &json!({"id": "shop-1", "name": "My Shop"}))
        .await;
    let body = r.expect(201);
    assert!(
        r.content_type().starts_with("application/json"),
        "content-type {:?}",
        r.content_type()
    );
    let s = &body["session"];
    assert_unpaired_session(s, "shop-1", "My Shop");
    let status = s["status"].as_str().unwrap();
    assert!(
        OFFLINE_TRYING.contains(&status),
        "a new session starts connecting at once; got {status:?}"
    );
    let created = int(&s["created_at"], "created_at");
    assert!(
        created >= before - 2 && created <= now_secs() + 2,
        "created_at {created} is not now ({before})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_session_without_body_generates_id() {
    let srv = TestServer::start_in_process().await;
    let r = srv.api().post("/sessions").await;
    let s = r.expect(201)["session"].clone();
    let id = s["id"].as_str().expect("id is a string").to_string();
    assert!(is_valid_session_id(&id), "generated id {id:?} is not valid");
    assert_unpaired_session(&s, &id, &id);
    // The generated id names a real session.
    assert_eq!(srv.session(&id).await["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn create_session_with_empty_object_generates_id_and_name_defaults_to_id() {
    let srv = TestServer::start_in_process().await;
    let s = srv
        .api()
        .post_json("/sessions", &json!({}))
        .await
        .expect(201)["session"]
        .clone();
    let id = s["id"].as_str().expect("id is a string").to_string();
    assert!(is_valid_session_id(&id), "generated id {id:?} is not valid");
    assert_eq!(s["name"], id.as_str(), "name defaults to the id: {s}");
    assert_unpaired_session(&s, &id, &id);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_session_with_only_name_generates_id() {
    let srv = TestServer::start_in_process().await;
    let s = srv
        .api()
        .post_json("/sessions", &json!({"name": "Front desk"}))
        .await
        .expect(201)["session"]
        .clone();
    let id = s["id"].as_str().expect("id is a string").to_string();
    assert!(is_valid_session_id(&id), "generated id {id:?} is not valid");
    assert_unpaired_session(&s, &id, "Front desk");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_session_with_only_id_defaults_name_to_id() {
    let srv = TestServer::start_in_process().await;
    let s = srv
        .api()
        .post_json("/sessions", &json!({"id": "alpha_2"}))
        .await
        .expect(201)["session"]
        .clone();
    assert_unpaired_session(&s, "alpha_2", "alpha_2");
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_session_ids_are_unique() {
    let srv = TestServer::start_in_process().await;
    let mut ids = BTreeSet::new();
    for _ in 0..5 {
        let s = srv
            .api()
            .post_json("/sessions", &json!({}))
            .await
            .expect(201)["session"]
            .clone();
        ids.insert(s["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 5, "generated ids repeat: {ids:?}");
    let list = srv.api().get("/sessions").await.expect(200);
    assert_eq!(list["total"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_session_accepts_64_char_id() {
    let srv = TestServer::start_in_process().await;
    let id = "a".repeat(63) + "Z";
    let s = srv.create_session(&id, "long").await;
    assert_eq!(s["id"], id.as_str());
    assert_eq!(srv.session(&id).await["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn create_session_with_taken_id_returns_409_session_exists() {
    let srv = TestServer::start_in_process().await;
    let first = srv.create_session("dup", "First").await;
    let r = srv
        .api()
        .post_json("/sessions", &json!({"id": "dup", "name": "Second"}))
        .await;
    r.expect_error(409, "session_exists");
    // The first one is untouched.
    let s = srv.session("dup").await;
    assert_eq!(s["name"], "First");
    assert_eq!(s["created_at"], first["created_at"]);
    assert_eq!(srv.api().get("/sessions").await.expect(200)["total"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_session_returns_session_object() {
    let srv = TestServer::start_in_process().await;
    let created = srv.create_session("s1", "Sales").await;
    let s = srv.session("s1").await;
    assert_unpaired_session(&s, "s1", "Sales");
    assert_eq!(s["created_at"], created["created_at"]);
    let status = s["status"].as_str().unwrap();
    assert!(OFFLINE_TRYING.contains(&status), "status {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_unknown_session_returns_404_session_not_found() {
    let srv = TestServer::start_in_process().await;
    srv.api()
        .get("/sessions/nobody")
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_sessions_is_empty_on_a_fresh_server() {
    let srv = TestServer::start_in_process().await;
    let body = srv.api().get("/sessions").await.expect(200);
    assert_eq!(body["sessions"], json!([]), "{body}");
    assert_eq!(body["total"], 0, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_sessions_returns_every_session_with_total() {
    let srv = TestServer::start_in_process().await;
    let names = [("a", "Alpha"), ("b", "Bravo"), ("c", "Charlie")];
    for (id, name) in names {
        srv.create_session(id, name).await;
    }
    let body = srv.api().get("/sessions").await.expect(200);
    assert_eq!(body["total"], 3, "{body}");
    let list = body["sessions"].as_array().expect("sessions is an array");
    assert_eq!(list.len(), 3, "{body}");
    for (id, name) in names {
        let s = list
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("session {id} missing from {body}"));
        assert_unpaired_session(s, id, name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_total_drops_after_delete() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    srv.create_session("b", "B").await;
    srv.api().delete("/sessions/a").await.expect(200);
    let body = srv.api().get("/sessions").await.expect(200);
    assert_eq!(body["total"], 1, "{body}");
    assert_eq!(body["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(body["sessions"][0]["id"], "b");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_status_returns_status_fields() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("st", "Status").await;
    let body = srv.api().get("/sessions/st/status").await.expect(200);
    let obj = body.as_object().expect("object");
    for key in [
        "status",
        "is_logged_in",
        "socket_alive",
        "phone_number",
        "push_name",
    ] {
        assert!(obj.contains_key(key), "status lacks {key:?}: {body}");
    }
    let status = body["status"].as_str().expect("status is a string");
    assert!(OFFLINE_TRYING.contains(&status), "status {status:?}");
    assert_eq!(body["is_logged_in"], false);
    // Nothing listens at the WhatsApp address: no socket can be up.
    assert_eq!(body["socket_alive"], false, "{body}");
    assert!(body["phone_number"].is_null(), "{body}");
    assert!(body["push_name"].is_null(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_without_whatsapp_keeps_trying_and_never_logs_in() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("lonely", "Lonely").await;
    // Sample for a while: it shows `connecting` throughout (a session that gave up would show
    // `disconnected`), and its actor holds a live connection attempt the whole time.
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < deadline {
        let s = srv.session("lonely").await;
        assert_eq!(s["status"], "connecting", "{s}");
        assert_eq!(s["is_logged_in"], false);
        let st = srv.api().get("/sessions/lonely/status").await.expect(200);
        assert_eq!(st["status"], "connecting", "{st}");
        let actor = srv.actor("session:lonely").await.expect(200);
        assert_eq!(actor["state"]["wanted_online"], true, "{actor}");
        assert!(
            actor["state"]["connection_generation"].is_u64(),
            "no connection attempt in progress: {actor}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_returns_success_and_session_stays_disconnected() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("d", "D").await;
    let body = srv.api().post("/sessions/d/disconnect").await.expect(200);
    assert_eq!(body, json!({"success": true}));
    // Acknowledged means done: disconnected right away, and it does not reconnect by itself.
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < deadline {
        let s = srv.session("d").await;
        assert_eq!(s["status"], "disconnected", "{s}");
        assert_eq!(s["is_logged_in"], false);
        let st = srv.api().get("/sessions/d/status").await.expect(200);
        assert_eq!(st["status"], "disconnected", "{st}");
        assert_eq!(st["socket_alive"], false, "{st}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_twice_is_harmless() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("d2", "D2").await;
    srv.api().post("/sessions/d2/disconnect").await.expect(200);
    let r = srv.api().post("/sessions/d2/disconnect").await;
    r.expect_not_5xx();
    assert_eq!(srv.session_status("d2").await, "disconnected");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_returns_success_with_status() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("c", "C").await;
    srv.api().post("/sessions/c/disconnect").await.expect(200);
    let body = srv.api().post("/sessions/c/connect").await.expect(200);
    let obj = body.as_object().expect("object");
    assert_eq!(body["success"], true, "{body}");
    let status = body["status"].as_str().expect("status is a string");
    assert!(
        SESSION_STATUSES.contains(&status),
        "status {status:?} is not a contract status"
    );
    assert!(OFFLINE_TRYING.contains(&status), "status {status:?}");
    assert_eq!(obj.len(), 2, "only success and status: {body}");
    let s = srv.session("c").await;
    let status = s["status"].as_str().unwrap_or_default();
    assert!(OFFLINE_TRYING.contains(&status), "status {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_on_a_connecting_session_is_harmless() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("cc", "CC").await;
    let body = srv.api().post("/sessions/cc/connect").await.expect(200);
    assert_eq!(body["success"], true, "{body}");
    let status = srv.session_status("cc").await;
    assert!(OFFLINE_TRYING.contains(&status.as_str()), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_and_connect_update_updated_at_not_created_at() {
    let srv = TestServer::start_in_process().await;
    let created = srv.create_session("u", "U").await;
    srv.api().post("/sessions/u/disconnect").await.expect(200);
    let s = srv.session("u").await;
    assert_eq!(s["created_at"], created["created_at"]);
    assert!(
        int(&s["updated_at"], "updated_at") >= int(&created["updated_at"], "updated_at"),
        "{s}"
    );
    assert_eq!(s["name"], "U");
}

#[tokio::test(flavor = "multi_thread")]
async fn qr_without_pending_code_returns_409() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("q", "Q").await;
    let r = srv.api().get("/sessions/q/qr").await;
    assert_eq!(r.code(), 409, "{}", r.text());
    r.error_body();
    for format in ["png", "svg"] {
        let r = srv
            .api()
            .get(&format!("/sessions/q/qr?format={format}"))
            .await;
        assert_eq!(r.code(), 409, "format={format}: {}", r.text());
        r.error_body();
    }
    // Also when the session is deliberately offline.
    srv.api().post("/sessions/q/disconnect").await.expect(200);
    let r = srv.api().get("/sessions/q/qr").await;
    assert_eq!(r.code(), 409, "{}", r.text());
    r.error_body();
}

#[tokio::test(flavor = "multi_thread")]
async fn device_before_pairing_returns_409_not_logged_in() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("dev", "Dev").await;
    srv.api()
        .get("/sessions/dev/device")
        .await
        .expect_error(409, "not_logged_in");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_from_a_session_not_logged_in_is_409_not_logged_in() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("rp", "Reply").await;
    for body in [
        serde_json::json!({"to": "628123456789", "text": "hi"}),
        serde_json::json!({"to": "628123456789", "text": "re", "quoted_id": "3EB0AA"}),
    ] {
        srv.api()
            .post_json("/sessions/rp/messages/text", &body)
            .await
            .expect_error(409, "not_logged_in");
    }
    srv.api()
        .post_json(
            "/sessions/nope/messages/text",
            &serde_json::json!({"to": "628123456789", "text": "re", "quoted_id": "3EB0AA"}),
        )
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_on_never_paired_session_returns_409_not_logged_in() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("lo", "Lo").await;
    srv.api()
        .post("/sessions/lo/logout")
        .await
        .expect_error(409, "not_logged_in");
    // The session is still there.
    assert_eq!(srv.session("lo").await["id"], "lo");
}

#[tokio::test(flavor = "multi_thread")]
async fn pair_without_phone_number_returns_400_validation() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("p", "P").await;
    let msg = srv
        .api()
        .post_json("/sessions/p/pair", &json!({}))
        .await
        .expect_error(400, "validation");
    assert!(
        msg.contains("phone_number"),
        "message names the field: {msg:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pair_with_bad_phone_number_returns_400_validation() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("p", "P").await;
    for bad in [
        json!({"phone_number": "not a phone"}),
        json!({"phone_number": ""}),
        json!({"phone_number": 628123456789u64}),
        json!({"phone_number": null}),
    ] {
        let msg = srv
            .api()
            .post_json("/sessions/p/pair", &bad)
            .await
            .expect_error(400, "validation");
        assert!(
            msg.contains("phone_number"),
            "message for {bad} names the field: {msg:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_session_returns_success_and_erases_it() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("gone", "Gone").await;
    srv.create_session("kept", "Kept").await;
    let body = srv.api().delete("/sessions/gone").await.expect(200);
    assert_eq!(body, json!({"success": true}));

    srv.api()
        .get("/sessions/gone")
        .await
        .expect_error(404, "session_not_found");
    srv.api()
        .get("/sessions/gone/status")
        .await
        .expect_error(404, "session_not_found");
    srv.admin()
        .get("/admin/sessions/gone/snapshot")
        .await
        .expect_error(404, "session_not_found");
    let dir = srv.data_dir().join("sessions").join("gone");
    let ok = wait_until(WAIT, || async { !dir.exists() }).await;
    assert!(ok, "{} still exists after delete", dir.display());
    // The other session is untouched.
    assert_eq!(srv.session("kept").await["name"], "Kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_unknown_session_returns_404_session_not_found() {
    let srv = TestServer::start_in_process().await;
    srv.api()
        .delete("/sessions/ghost")
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_twice_returns_404_the_second_time() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("twice", "T").await;
    srv.api().delete("/sessions/twice").await.expect(200);
    srv.api()
        .delete("/sessions/twice")
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_session_id_can_be_created_again() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("again", "Old").await;
    srv.api().delete("/sessions/again").await.expect(200);
    let s = srv.create_session("again", "New").await;
    assert_unpaired_session(&s, "again", "New");
    assert_eq!(srv.session("again").await["name"], "New");
    assert_eq!(srv.api().get("/sessions").await.expect(200)["total"], 1);
}

/// Every route under `/sessions/{id}` with a body that is valid where one is needed.
fn session_routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, format!("/sessions/{id}"), None),
        (Method::DELETE, format!("/sessions/{id}"), None),
        (Method::GET, format!("/sessions/{id}/status"), None),
        (Method::POST, format!("/sessions/{id}/connect"), None),
        (Method::POST, format!("/sessions/{id}/disconnect"), None),
        (Method::POST, format!("/sessions/{id}/logout"), None),
        (Method::GET, format!("/sessions/{id}/qr"), None),
        (
            Method::POST,
            format!("/sessions/{id}/pair"),
            Some(json!({"phone_number": "+628123456789"})),
        ),
        (Method::GET, format!("/sessions/{id}/device"), None),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_session_route_returns_404_for_unknown_session() {
    let srv = TestServer::start_in_process().await;
    for (method, path, body) in session_routes("unknown-1") {
        let mut rb = srv.api().request(method, &path);
        if let Some(b) = &body {
            rb = rb.json(b);
        }
        srv.api()
            .send(rb)
            .await
            .expect_error(404, "session_not_found");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_session_route_returns_400_for_invalid_id_in_path() {
    let srv = TestServer::start_in_process().await;
    let too_long = "x".repeat(65);
    for id in ["bad!id", "bad.id", too_long.as_str()] {
        for (method, path, body) in session_routes(id) {
            let mut rb = srv.api().request(method, &path);
            if let Some(b) = &body {
                rb = rb.json(b);
            }
            srv.api()
                .send(rb)
                .await
                .expect_error(400, "invalid_session_id");
        }
    }
}
