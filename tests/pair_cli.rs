//! `wagate pair` against a running server and the simulator: the QR code is drawn in the
//! terminal and the command exits 0 once the simulated phone scanned it; with `--phone` it
//! prints the pair code the phone then enters.

mod common;

use common::sim::Sim;
use common::*;
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// `wagate pair …` pointed at `server` the way an operator's shell would be.
fn pair_command(server: &TestServer, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"));
    cmd.arg("pair")
        .args(args)
        .env_clear()
        .env(
            "WAGATE_LISTEN",
            server.base_url().trim_start_matches("http://"),
        )
        .env("WAGATE_API_TOKEN", server.api_token())
        .current_dir(server.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn pair_draws_the_qr_and_exits_once_the_phone_scanned_it() {
    let sim = Sim::start().await;
    let server = TestServer::builder().whatsapp_url(sim.url()).start().await;
    let mut child = pair_command(&server, &["cli"]).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    // The command created the session; its QR code is drawn in block characters.
    let mut drawn = String::new();
    let shown = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = stdout.next_line().await {
            drawn.push_str(&line);
            drawn.push('\n');
            if line
                .chars()
                .filter(|c| matches!(c, '▀' | '▄' | '█'))
                .count()
                > 10
            {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(shown, Ok(true)), "no QR code drawn: {drawn}");
    assert!(drawn.contains("Link a device"), "{drawn}");
    let qr = server.api().get("/sessions/cli/qr").await.expect(200);
    sim.post_ok(
        "/scan-qr",
        json!({"qr": qr["qr_codes"][0], "phone_number": "6281230000091", "push_name": "Cli"}),
    )
    .await;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("pair exits once logged in")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let mut rest = String::new();
    while let Ok(Some(line)) = stdout.next_line().await {
        rest.push_str(&line);
    }
    assert!(rest.contains("logged in"), "{rest}");
    assert_eq!(server.session_status("cli").await, "logged_in");
}

#[tokio::test(flavor = "multi_thread")]
async fn pair_with_a_phone_number_prints_the_code_to_enter() {
    let sim = Sim::start().await;
    let server = TestServer::builder().whatsapp_url(sim.url()).start().await;
    let mut child = pair_command(&server, &["bycode", "--phone", "6281230000092"])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let code = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = stdout.next_line().await {
            let word = line.trim();
            if word.len() == 9 && word.as_bytes()[4] == b'-' {
                return Some(word.to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("a pair code is printed");
    sim.post_ok(
        "/enter-pair-code",
        json!({"phone_number": "6281230000092", "code": code}),
    )
    .await;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("pair exits once logged in")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    // Already logged in: nothing to do, still success.
    let again = pair_command(&server, &["bycode"]).output().await.unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already logged in"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pair_without_a_server_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args([
            "pair",
            "x",
            "--url",
            "http://127.0.0.1:9",
            "--timeout",
            "5s",
        ])
        .env_clear()
        .env("WAGATE_API_TOKEN", "some-token-123")
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach wagate"), "{err}");
}
