//! The control API's shapes and error handling, and the binary's start-up line.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn control_api_shapes_and_errors() {
    let sim = start_sim().await;
    let (status, body) = http(&sim, "POST", "/accounts", Some("{not json")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "bad_request");
    assert!(body["message"].is_string());

    let (status, body) = post(
        &sim,
        "/accounts",
        serde_json::json!({"phone_number": "6285500000001", "push_name": "Sim One"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"phone_number": "6285500000001", "jid": "6285500000001@s.whatsapp.net", "push_name": "Sim One"})
    );
    let (status, _) = post(
        &sim,
        "/accounts",
        serde_json::json!({"phone_number": "6285500000001"}),
    )
    .await;
    assert_eq!(status, 409);
    let (status, body) = post(&sim, "/accounts", serde_json::json!({})).await;
    assert_eq!(status, 201);
    assert!(
        body["phone_number"]
            .as_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_digit())
    );

    let (status, body) = get(&sim, "/accounts/6285500000001").await;
    assert_eq!(status, 200);
    assert_eq!(body["devices"], serde_json::json!([]));
    assert!(body["lid"].as_str().unwrap().ends_with("@lid"));
    let (status, body) = get(&sim, "/accounts/6285500000099").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    let (status, body) = post(&sim, "/scan-qr", serde_json::json!({"qr": "2@abc,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,1"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, _) = post(&sim, "/scan-qr", serde_json::json!({"qr": "garbage"})).await;
    assert_eq!(status, 400);
    let (status, _) = post(&sim, "/faults", serde_json::json!({"kind": "nonsense"})).await;
    assert_eq!(status, 400);
    let (status, body) = post(
        &sim,
        "/faults",
        serde_json::json!({"kind": "stall", "duration_ms": 10}),
    )
    .await;
    assert_eq!((status, body["success"].as_bool()), (200, Some(true)));
    let (status, body) = http(&sim, "DELETE", "/faults", None).await;
    assert_eq!((status, body["success"].as_bool()), (200, Some(true)));

    let stats = stats(&sim).await;
    for key in [
        "connections",
        "active_connections",
        "handshakes",
        "logins",
        "pairings",
        "unlinks",
        "unknown_iqs",
        "messages_routed",
    ] {
        assert!(stats[key].is_u64(), "{key} missing in {stats}");
    }
    assert!(stats["iqs"].is_object());
    sim.shutdown().await;
}

#[test]
fn binary_prints_one_line_with_both_urls() {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wa-sim"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let parts: Vec<&str> = line.trim().split(' ').collect();
    assert_eq!(parts.len(), 4, "{line:?}");
    assert_eq!(parts[0], "wa-sim");
    assert!(
        parts[1].starts_with("ws://127.0.0.1:") && parts[1].ends_with("/ws/chat"),
        "{line:?}"
    );
    assert_eq!(parts[2], "control");
    let port = parts[1]
        .trim_start_matches("ws://127.0.0.1:")
        .trim_end_matches("/ws/chat");
    assert_eq!(parts[3], format!("http://127.0.0.1:{port}/control"));
}
