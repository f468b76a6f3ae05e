//! The admin endpoints (`admin.md`) and the probes outside `/api/v1`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn health_returns_200_without_token() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    srv.root(None).get("/health").await.expect_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_returns_200_without_token_once_up() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    let ok = wait_until(WAIT, || srv.is_ready()).await;
    assert!(ok, "GET /ready never answered 200");
    srv.root(None).get("/ready").await.expect_status(200);
}

/// Checks the Prometheus text exposition format, loosely: comments or `name{labels} value`.
fn assert_prometheus_text(text: &str) {
    let mut samples = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or_else(|| panic!("metric line without a value: {line:?}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        let rest = if line[name_end..].starts_with('{') {
            let close = line
                .rfind('}')
                .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
            &line[close + 1..]
        } else {
            &line[name_end..]
        };
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("metric line without a value: {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "bad sample value in {line:?}"
        );
        samples += 1;
    }
    assert!(samples > 0, "no samples in metrics output:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_returns_prometheus_text_with_admin_token() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    srv.create_session("m", "M").await;
    let r = srv.root(Some(ADMIN_TOKEN)).get("/metrics").await;
    r.expect_status(200);
    assert!(
        r.content_type()
            .starts_with("application/openmetrics-text; version=1.0.0"),
        "metrics content-type {:?}",
        r.content_type()
    );
    let text = r.text();
    assert_prometheus_text(&text);
    // Requests are counted by route template, never by raw path.
    assert!(
        text.contains(r#"route="/api/v1/sessions",status="201""#),
        "{text}"
    );
    assert!(text.contains(r#"wagate_sessions{status="#), "{text}");
    assert!(text.contains("wagate_http_request_duration_seconds_bucket"));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_require_the_admin_token() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    srv.root(None)
        .get("/metrics")
        .await
        .expect_error(401, "unauthorized");
    srv.root(Some("wrong-token"))
        .get("/metrics")
        .await
        .expect_error(401, "unauthorized");
    srv.root(Some(API_TOKEN))
        .get("/metrics")
        .await
        .expect_error(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_open_with_api_token_when_no_admin_token() {
    let srv = TestServer::start_in_process().await;
    let r = srv.root(Some(API_TOKEN)).get("/metrics").await;
    r.expect_status(200);
    assert_prometheus_text(&r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn actor_tree_is_rooted_at_supervisor() {
    let srv = TestServer::start_in_process().await;
    let tree = srv.actor_tree().await;
    let roots = tree["actors"].as_array().expect("actors is an array");
    assert_eq!(roots.len(), 1, "one root: {tree}");
    let root = &roots[0];
    assert_node_shape(root);
    assert_eq!(root["name"], "supervisor");
    assert_eq!(root["kind"], "supervisor");
    assert_eq!(root["status"], "running");
    // No sessions yet: only the webhook deliveries' actor.
    assert_eq!(child_names(root), ["webhooks"], "{root}");
    assert_eq!(root["children"][0]["kind"], "webhooks");
}

#[tokio::test(flavor = "multi_thread")]
async fn actor_tree_has_session_node_with_groups_and_invites_children() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    srv.create_session("b", "B").await;
    let tree = wait_for(WAIT, || async {
        let tree = srv.actor_tree().await;
        let root = tree["actors"][0].clone();
        let ok = ["a", "b"].iter().all(|id| {
            find_node(&root, &format!("session:{id}")).is_some_and(|n| {
                child_names(&n)
                    == [
                        format!("session:{id}/events"),
                        format!("session:{id}/groups"),
                        format!("session:{id}/invites"),
                    ]
            })
        });
        ok.then_some(tree)
    })
    .await
    .expect("session nodes with groups and invites children");
    let root = &tree["actors"][0];
    assert_eq!(
        child_names(root),
        ["session:a", "session:b", "webhooks"],
        "sessions and webhooks are the supervisor's children: {root}"
    );
    for id in ["a", "b"] {
        let session = find_node(root, &format!("session:{id}")).unwrap();
        assert_eq!(session["kind"], "session");
        for child in session["children"].as_array().unwrap() {
            let name = child["name"].as_str().unwrap();
            let kind = name.rsplit('/').next().unwrap();
            assert_eq!(child["kind"], kind, "{child}");
            assert_eq!(child["children"], json!([]), "{child}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_actor_node_has_contract_fields() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("f", "F").await;
    let ok = wait_until(WAIT, || async {
        srv.tree_node("session:f/invites").await.is_some()
    })
    .await;
    assert!(ok, "session:f/invites never appeared");
    let ok = wait_until(WAIT, || async {
        let tree = srv.actor_tree().await;
        all_nodes(&tree["actors"][0])
            .iter()
            .all(|n| n["status"] == "running")
    })
    .await;
    assert!(
        ok,
        "not every actor reached running: {}",
        srv.actor_tree().await
    );
    let tree = srv.actor_tree().await;
    let nodes = all_nodes(&tree["actors"][0]);
    assert_eq!(
        nodes.len(),
        6,
        "supervisor, webhooks, session, events, groups, invites: {tree}"
    );
    for n in nodes {
        assert_node_shape(&n);
        assert_eq!(n["restarts"], 0, "{n}");
        assert!(n["last_failure"].is_null(), "{n}");
    }
}

fn all_nodes(node: &Value) -> Vec<Value> {
    let mut out = vec![node.clone()];
    if let Some(cs) = node["children"].as_array() {
        for c in cs {
            out.extend(all_nodes(c));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn get_actor_by_encoded_name_returns_node_with_state() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    let ok = wait_until(WAIT, || async {
        srv.tree_node("session:a/groups").await.is_some()
    })
    .await;
    assert!(ok, "session:a/groups never appeared");
    for (name, kind) in [
        ("supervisor", "supervisor"),
        ("session:a", "session"),
        ("session:a/groups", "groups"),
        ("session:a/invites", "invites"),
    ] {
        let body = srv.actor(name).await.expect(200);
        assert_node_shape(&body);
        assert_eq!(body["name"], name, "{body}");
        assert_eq!(body["kind"], kind, "{body}");
        assert!(
            body.as_object().unwrap().contains_key("state"),
            "{name} has no \"state\": {body}"
        );
        assert!(!body["state"].is_null(), "{name} state is null: {body}");
    }
    // The path in the brief's own example form.
    srv.admin()
        .get("/admin/actors/session%3Aa%2Fgroups")
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_unknown_actor_returns_404() {
    let srv = TestServer::start_in_process().await;
    srv.actor("no-such-actor")
        .await
        .expect_error(404, "not_found");
    srv.actor("session:ghost/groups")
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_unknown_actor_returns_404() {
    let srv = TestServer::start_in_process().await;
    srv.restart_actor("session:ghost")
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_returns_saved_at() {
    let srv = TestServer::start_in_process().await;
    let before = now_secs();
    srv.create_session("snap", "Snapshot Owner Q7").await;
    let body = srv
        .admin()
        .get("/admin/sessions/snap/snapshot")
        .await
        .expect(200);
    assert!(body.is_object(), "snapshot is an object: {body}");
    let saved = body["saved_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("saved_at is not an integer: {body}"));
    assert!(
        saved >= before - 2 && saved <= now_secs() + 2,
        "saved_at {saved} is not recent ({before}): {body}"
    );
    // The snapshot is this session's record.
    let text = body.to_string();
    assert!(
        text.contains("Snapshot Owner Q7"),
        "snapshot does not hold the session's name: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_of_unknown_session_returns_404_session_not_found() {
    let srv = TestServer::start_in_process().await;
    srv.admin()
        .get("/admin/sessions/nope/snapshot")
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_with_invalid_session_id_returns_400() {
    let srv = TestServer::start_in_process().await;
    srv.admin()
        .get("/admin/sessions/bad!id/snapshot")
        .await
        .expect_error(400, "invalid_session_id");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_views_never_show_tokens() {
    let srv = TestServer::builder()
        .in_process()
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    srv.create_session("sec", "Sec").await;
    let ok = wait_until(WAIT, || async {
        srv.tree_node("session:sec/invites").await.is_some()
    })
    .await;
    assert!(ok, "session:sec/invites never appeared");
    let mut bodies = vec![
        srv.actor_tree().await.to_string(),
        srv.admin()
            .get("/admin/sessions/sec/snapshot")
            .await
            .expect(200)
            .to_string(),
        srv.root(Some(ADMIN_TOKEN)).get("/metrics").await.text(),
    ];
    for name in [
        "supervisor",
        "session:sec",
        "session:sec/events",
        "session:sec/groups",
        "session:sec/invites",
        "webhooks",
    ] {
        bodies.push(srv.actor(name).await.expect(200).to_string());
    }
    for body in bodies {
        assert!(!body.contains(API_TOKEN), "API token leaked: {body}");
        assert!(!body.contains(ADMIN_TOKEN), "admin token leaked: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_session_leaves_the_actor_tree() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("x", "X").await;
    srv.create_session("y", "Y").await;
    let ok = wait_until(WAIT, || async {
        srv.tree_node("session:x/invites").await.is_some()
    })
    .await;
    assert!(ok, "session:x/invites never appeared");
    srv.api().delete("/sessions/x").await.expect(200);
    let ok = wait_until(WAIT, || async {
        let tree = srv.actor_tree().await;
        let root = &tree["actors"][0];
        child_names(root) == ["session:y", "webhooks"]
            && find_node(root, "session:x/groups").is_none()
            && find_node(root, "session:x/invites").is_none()
    })
    .await;
    assert!(
        ok,
        "session:x still in the tree: {}",
        srv.actor_tree().await
    );
    srv.actor("session:x").await.expect_error(404, "not_found");
}
