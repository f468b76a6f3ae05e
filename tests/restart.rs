//! Process lifecycle: graceful shutdown, restart after a hard kill, the generated token.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_zero() {
    let mut srv = TestServer::start().await;
    srv.create_session("a", "A").await;
    let status = srv.terminate().await;
    assert!(
        status.success(),
        "SIGTERM exit status {status}\n{}",
        srv.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_exits_zero() {
    let mut srv = TestServer::start().await;
    srv.create_session("a", "A").await;
    let status = srv.interrupt().await;
    assert!(
        status.success(),
        "SIGINT exit status {status}\n{}",
        srv.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_on_idle_server_exits_zero() {
    let mut srv = TestServer::start().await;
    let status = srv.terminate().await;
    assert!(status.success(), "exit status {status}\n{}", srv.output());
}

/// The fields that must survive a restart unchanged.
fn identity(s: &Value) -> (Value, Value, Value) {
    (s["id"].clone(), s["name"].clone(), s["created_at"].clone())
}

async fn wait_for_session_subtree(srv: &TestServer, id: &str) -> Value {
    let name = format!("session:{id}");
    let node = wait_for(WAIT, || async {
        srv.tree_node(&name).await.filter(|n| {
            child_names(n)
                == [
                    format!("{name}/events"),
                    format!("{name}/groups"),
                    format!("{name}/invites"),
                ]
        })
    })
    .await;
    node.unwrap_or_else(|| {
        panic!(
            "{name} with events, groups and invites children never appeared\n{}",
            srv.output()
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_survive_kill9_with_same_identity_and_wanted_state() {
    let mut srv = TestServer::start().await;
    let ids = [
        ("north", "North Store"),
        ("south", "South Store"),
        ("east", "East Store"),
    ];
    let mut before = Vec::new();
    for (id, name) in ids {
        before.push(srv.create_session(id, name).await);
    }
    srv.api()
        .post("/sessions/south/disconnect")
        .await
        .expect(200);
    assert_eq!(srv.session_status("south").await, "disconnected");

    srv.kill9();
    srv.start_again().await;
    srv.wait_ready().await;

    let list = srv.api().get("/sessions").await.expect(200);
    assert_eq!(list["total"], 3, "{list}");
    let sessions = list["sessions"].as_array().unwrap();
    for old in &before {
        let id = old["id"].as_str().unwrap();
        let now = sessions
            .iter()
            .find(|s| s["id"] == old["id"])
            .unwrap_or_else(|| panic!("session {id} lost across kill -9: {list}"));
        assert_eq!(identity(now), identity(old), "session {id} changed");
        assert_eq!(identity(&srv.session(id).await), identity(old));
    }

    // The deliberately disconnected one stays offline.
    for _ in 0..5 {
        assert_eq!(srv.session_status("south").await, "disconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The others want to be online again: they try to connect.
    for id in ["north", "east"] {
        let status = srv.session_status(id).await;
        assert!(
            OFFLINE_TRYING.contains(&status.as_str()),
            "{id} status {status:?}"
        );
        let seen_connecting = wait_until(WAIT, || async {
            srv.session_status(id).await == "connecting"
        })
        .await;
        assert!(
            seen_connecting,
            "{id} never went back to connecting after the restart"
        );
    }

    // The actor tree is rebuilt: every session with its events, groups and invites, and the
    // webhook deliveries.
    for (id, _) in ids {
        wait_for_session_subtree(&srv, id).await;
    }
    let tree = srv.actor_tree().await;
    let root = &tree["actors"][0];
    assert_eq!(root["name"], "supervisor");
    assert_eq!(
        child_names(root),
        ["session:east", "session:north", "session:south", "webhooks"],
        "{tree}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_survive_graceful_restart() {
    let mut srv = TestServer::start().await;
    let a = srv.create_session("keep-a", "Keep A").await;
    let b = srv.create_session("keep-b", "Keep B").await;
    srv.api()
        .post("/sessions/keep-b/disconnect")
        .await
        .expect(200);
    srv.restart().await;
    srv.wait_ready().await;
    assert_eq!(identity(&srv.session("keep-a").await), identity(&a));
    assert_eq!(identity(&srv.session("keep-b").await), identity(&b));
    assert_eq!(srv.session_status("keep-b").await, "disconnected");
    let status = srv.session_status("keep-a").await;
    assert!(OFFLINE_TRYING.contains(&status.as_str()), "{status:?}");
    assert_eq!(srv.api().get("/sessions").await.expect(200)["total"], 2);
    wait_for_session_subtree(&srv, "keep-a").await;
    wait_for_session_subtree(&srv, "keep-b").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_after_restart_brings_disconnected_session_back() {
    let mut srv = TestServer::start().await;
    srv.create_session("back", "Back").await;
    srv.api()
        .post("/sessions/back/disconnect")
        .await
        .expect(200);
    srv.kill9();
    srv.start_again().await;
    srv.wait_ready().await;
    assert_eq!(srv.session_status("back").await, "disconnected");
    let body = srv.api().post("/sessions/back/connect").await.expect(200);
    assert_eq!(body["success"], true);
    // It now wants to be online, and that also survives a restart.
    srv.kill9();
    srv.start_again().await;
    srv.wait_ready().await;
    let seen_connecting = wait_until(WAIT, || async {
        srv.session_status("back").await == "connecting"
    })
    .await;
    assert!(
        seen_connecting,
        "connect was not remembered across a restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_session_is_gone_after_restart() {
    let mut srv = TestServer::start().await;
    srv.create_session("doomed", "Doomed").await;
    srv.create_session("stays", "Stays").await;
    srv.api().delete("/sessions/doomed").await.expect(200);
    let dir = srv.data_dir().join("sessions").join("doomed");

    srv.kill9();
    srv.start_again().await;
    srv.wait_ready().await;

    srv.api()
        .get("/sessions/doomed")
        .await
        .expect_error(404, "session_not_found");
    let list = srv.api().get("/sessions").await.expect(200);
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["sessions"][0]["id"], "stays");
    srv.admin()
        .get("/admin/sessions/doomed/snapshot")
        .await
        .expect_error(404, "session_not_found");
    assert!(!dir.exists(), "{} came back after restart", dir.display());
    wait_for_session_subtree(&srv, "stays").await;
    assert!(
        srv.tree_node("session:doomed").await.is_none(),
        "deleted session has actors again: {}",
        srv.actor_tree().await
    );
    // The id is free.
    srv.create_session("doomed", "Reborn").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_api_token_is_stored_0600_printed_once_and_reused() {
    let mut srv = TestServer::builder().generated_token().start().await;
    let token = srv.api_token().to_string();
    assert!(
        token.len() >= 16,
        "token {token:?} is too short to be a secret"
    );
    assert_ne!(token, API_TOKEN);

    let file = srv.token_file();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "api-token file mode {mode:o}");

    // The token works, and a wrong one does not.
    srv.api().get("/sessions").await.expect(200);
    srv.api_with_token("wrong")
        .get("/sessions")
        .await
        .expect_error(401, "unauthorized");
    // Without an admin token, the API token also opens admin routes.
    srv.api().get("/admin/actors").await.expect(200);

    let printed = wait_until(Duration::from_secs(5), || async {
        srv.stdout_lines().iter().any(|l| l.contains(&token))
    })
    .await;
    assert!(printed, "token not printed to stdout\n{}", srv.output());

    let status = srv.terminate().await;
    assert!(status.success(), "exit {status}");
    let printed_times = srv
        .stdout_lines()
        .iter()
        .filter(|l| l.contains(&token))
        .count();
    assert_eq!(printed_times, 1, "token printed {printed_times} times");

    // Second start: same token from the file, not printed again.
    srv.start_again().await;
    assert_eq!(srv.api_token(), token, "token changed across restarts");
    srv.api().get("/sessions").await.expect(200);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "api-token file mode {mode:o} after restart");
    let status = srv.terminate().await;
    assert!(status.success(), "exit {status}");
    assert!(
        !srv.stdout_lines().iter().any(|l| l.contains(&token)),
        "token printed again on the second start\n{}",
        srv.output()
    );
    assert!(
        !srv.stderr_lines().iter().any(|l| l.contains(&token)),
        "token written to the log\n{}",
        srv.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_api_token_is_never_printed() {
    let mut srv = TestServer::start().await;
    srv.create_session("a", "A").await;
    let status = srv.terminate().await;
    assert!(status.success());
    let all: Vec<String> = srv
        .stdout_lines()
        .into_iter()
        .chain(srv.stderr_lines())
        .collect();
    assert!(
        !all.iter().any(|l| l.contains(API_TOKEN)),
        "configured token appears in output\n{}",
        srv.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_on_the_same_data_dir_exits_naming_the_holder() {
    let srv = TestServer::start().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(srv.data_dir())
        .env("WAGATE_API_TOKEN", API_TOKEN)
        .env("WAGATE_WHATSAPP_URL", UNREACHABLE_WHATSAPP_URL)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run a second wagate");
    assert!(!output.status.success(), "the second process must not run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("pid {}", srv.pid())),
        "the error names the holder's pid {}: {stderr}",
        srv.pid()
    );
    // The first one is untouched.
    srv.api().get("/sessions").await.expect(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" --listen 127.0.0.1:0 --data-dir \"$1\"")
        .arg(env!("CARGO_BIN_EXE_wagate"))
        .arg(dir.path().join("data"))
        .env("WAGATE_API_TOKEN", API_TOKEN)
        .env("WAGATE_WHATSAPP_URL", UNREACHABLE_WHATSAPP_URL)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start wagate under a low soft limit");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("open-files limit") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("an open-files limit line at start");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    assert_eq!(field("soft_before"), 256, "{line}");
    assert_eq!(field("soft"), field("hard"), "{line}");
}
