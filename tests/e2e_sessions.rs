//! Sessions end to end: the real wagate binary drives its real WhatsApp client against
//! `wa-sim` on loopback. Pairing by QR and by pair code, logging back in after `kill -9`,
//! disconnect/connect/logout/delete, the phone unlinking the device, dropped sockets and a
//! stalled server.

mod common;

use common::sim::Sim;
use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Fresh pairings wait for the phone's app-state keys; logins are quick.
const PAIRING: Duration = Duration::from_secs(60);

async fn gateway(sim: &Sim) -> TestServer {
    TestServer::builder().whatsapp_url(sim.url()).start().await
}

/// A gateway that waits 2 s for WhatsApp, for tests of a WhatsApp that does not answer.
async fn gateway_quick_to_give_up(sim: &Sim) -> TestServer {
    TestServer::builder()
        .whatsapp_url(sim.url())
        .env("WAGATE_WHATSAPP_REQUEST_TIMEOUT", "2s")
        .env("WAGATE_SUPERVISION_CALL_TIMEOUT", "6s")
        .start()
        .await
}

async fn status_of(server: &TestServer, id: &str) -> String {
    server.api().get(&format!("/sessions/{id}")).await.json()["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn wait_status(server: &TestServer, id: &str, want: &str, timeout: Duration) {
    let ok = wait_until(timeout, || async { status_of(server, id).await == want }).await;
    assert!(
        ok,
        "session {id} never became {want} (now {})",
        status_of(server, id).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn qr_pairing_logs_in_with_the_clients_real_codes() {
    let sim = Sim::start().await;
    let server = gateway(&sim).await;
    let api = server.api();
    api.post_json("/sessions", &json!({"id": "qr", "name": "QR"}))
        .await
        .expect(201);

    let qr = wait_for(Duration::from_secs(20), || async {
        let r = api.get("/sessions/qr/qr").await;
        (r.code() == 200).then(|| r.json())
    })
    .await
    .expect("a pending QR code");
    assert_eq!(qr["status"], "waiting_for_qr");
    assert!(qr["timeout_seconds"].as_u64().unwrap() > 0, "{qr}");
    let code = qr["qr_codes"][0].as_str().unwrap().to_string();
    assert_eq!(
        code.split(',').count(),
        5,
        "a real client QR string: {code}"
    );
    assert_eq!(status_of(&server, "qr").await, "waiting_for_qr");

    // The PNG decodes to the same string; the SVG is an SVG.
    let png = api.get("/sessions/qr/qr?format=png").await;
    assert_eq!(png.code(), 200);
    assert_eq!(png.content_type(), "image/png");
    let image = image::load_from_memory(&png.bytes)
        .expect("a PNG")
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1);
    let (_, decoded) = grids[0].decode().expect("decodable QR");
    assert_eq!(decoded, code);
    let svg = api.get("/sessions/qr/qr?format=svg").await;
    assert_eq!(svg.code(), 200);
    assert!(svg.text().contains("<svg"));
    api.get("/sessions/qr/qr?format=gif")
        .await
        .expect_error(400, "validation");
    api.get("/sessions/qr/device")
        .await
        .expect_error(409, "not_logged_in");

    let (status, linked) = sim
        .post(
            "/scan-qr",
            json!({"qr": code, "phone_number": "6281230000001", "push_name": "Alice"}),
        )
        .await;
    assert_eq!(status, 200, "{linked}");
    wait_status(&server, "qr", "logged_in", PAIRING).await;

    let session = api.get("/sessions/qr").await.expect(200);
    assert_eq!(session["phone_number"], "6281230000001");
    assert_eq!(session["push_name"], "Alice");
    assert_eq!(session["is_logged_in"], true);
    assert!(session["last_connected_at"].as_i64().unwrap() > 0);
    let device = api.get("/sessions/qr/device").await.expect(200);
    assert_eq!(device["phone_number"], "6281230000001");
    assert_eq!(
        device["device_id"],
        linked["jid"]
            .as_str()
            .unwrap()
            .split([':', '@'])
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    );
    assert_eq!(
        device["lid"].as_str().unwrap().split(':').next(),
        linked["lid"].as_str().unwrap().split(':').next()
    );
    let status = api.get("/sessions/qr/status").await.expect(200);
    assert_eq!(status["status"], "logged_in");
    assert_eq!(status["socket_alive"], true);
    // No QR is pending once logged in, and pairing again is refused.
    api.get("/sessions/qr/qr")
        .await
        .expect_error(409, "no_qr_pending");
    api.post_json(
        "/sessions/qr/pair",
        &json!({"phone_number": "6281230000001"}),
    )
    .await
    .expect_error(409, "already_logged_in");
    assert_eq!(sim.stats().await["pairings"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pair_code_pairing_logs_in() {
    let sim = Sim::start().await;
    let server = gateway(&sim).await;
    let api = server.api();
    api.post_json("/sessions", &json!({"id": "code"}))
        .await
        .expect(201);
    // The socket must be up (the QR flow starts in parallel) before a code can be requested.
    wait_status(&server, "code", "waiting_for_qr", Duration::from_secs(20)).await;
    let pair = api
        .post_json(
            "/sessions/code/pair",
            &json!({"phone_number": "+62 812-3000-0002"}),
        )
        .await
        .expect(200);
    let code = pair["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 9, "ABCD-EFGH: {code}");
    let first_timeout = pair["timeout_seconds"].as_u64().unwrap();
    assert!(first_timeout > 0);
    // Asking again for the same number answers the outstanding code, with what is left of it.
    let again = api
        .post_json(
            "/sessions/code/pair",
            &json!({"phone_number": "6281230000002"}),
        )
        .await
        .expect(200);
    assert_eq!(again["code"], code.as_str());
    assert!(again["timeout_seconds"].as_u64().unwrap() <= first_timeout);
    // Another number has to wait for it to expire, and is told how long.
    let message = api
        .post_json(
            "/sessions/code/pair",
            &json!({"phone_number": "6281230000009"}),
        )
        .await
        .expect_error(409, "pair_code_pending");
    assert!(message.contains(" s"), "{message}");
    let (status, linked) = sim
        .post(
            "/enter-pair-code",
            json!({"phone_number": "6281230000002", "code": code}),
        )
        .await;
    assert_eq!(status, 200, "{linked}");
    wait_status(&server, "code", "logged_in", PAIRING).await;
    let device = api.get("/sessions/code/device").await.expect(200);
    assert_eq!(device["phone_number"], "6281230000002");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_restart_logs_every_session_back_in_without_pairing() {
    let sim = Sim::start().await;
    let mut server = gateway(&sim).await;
    sim.pair_by_qr(&server, "one", "6281230000011", "One").await;
    sim.pair_by_qr(&server, "two", "6281230000012", "Two").await;
    let before = sim.stats().await;
    assert_eq!(before["pairings"], 2, "{before}");

    server.kill9();
    server.restart().await;
    wait_status(&server, "one", "logged_in", Duration::from_secs(30)).await;
    wait_status(&server, "two", "logged_in", Duration::from_secs(30)).await;
    let after = sim.stats().await;
    assert_eq!(after["pairings"], 2, "no new pairing: {after}");
    assert!(
        after["logins"].as_u64().unwrap() >= before["logins"].as_u64().unwrap() + 2,
        "{before} -> {after}"
    );
    let session = server.api().get("/sessions/one").await.expect(200);
    assert_eq!(session["phone_number"], "6281230000011");
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_connect_logout_and_delete_follow_the_contract() {
    let sim = Sim::start().await;
    let mut server = gateway(&sim).await;
    sim.pair_by_qr(&server, "dc", "6281230000021", "Dee").await;
    sim.pair_by_qr(&server, "gone", "6281230000022", "Gone")
        .await;
    let api = server.api();

    // disconnect keeps credentials and stays offline across a restart.
    api.post("/sessions/dc/disconnect").await.expect(200);
    wait_status(&server, "dc", "disconnected", Duration::from_secs(10)).await;
    let logins = sim.stats().await["logins"].as_u64().unwrap();
    server.kill9();
    server.restart().await;
    wait_status(&server, "gone", "logged_in", Duration::from_secs(30)).await;
    assert_eq!(status_of(&server, "dc").await, "disconnected");
    let api = server.api();
    let status = api.get("/sessions/dc/status").await.expect(200);
    assert_eq!(status["socket_alive"], false);
    assert_eq!(status["phone_number"], "6281230000021");
    // Paired, though offline: the device is still this one.
    let device = api.get("/sessions/dc/device").await.expect(200);
    assert_eq!(device["phone_number"], "6281230000021");
    assert!(device["device_id"].as_u64().is_some(), "{device}");

    // connect brings it back without pairing.
    let reply = api.post("/sessions/dc/connect").await.expect(200);
    assert_eq!(reply["success"], true);
    wait_status(&server, "dc", "logged_in", Duration::from_secs(30)).await;
    let stats = sim.stats().await;
    assert_eq!(stats["pairings"], 2, "{stats}");
    assert!(stats["logins"].as_u64().unwrap() > logins);

    // logout unlinks the device at WhatsApp and leaves the session logged_out.
    api.post("/sessions/dc/logout").await.expect(200);
    assert_eq!(status_of(&server, "dc").await, "logged_out");
    let (_, account) = sim.get("/accounts/6281230000021").await;
    assert_eq!(
        account["devices"].as_array().map(Vec::len),
        Some(0),
        "{account}"
    );
    assert!(
        !server.data_dir().join("sessions/dc").exists(),
        "credentials erased"
    );
    let session = api.get("/sessions/dc").await.expect(200);
    assert_eq!(session["phone_number"], Value::Null);
    api.get("/sessions/dc/device")
        .await
        .expect_error(409, "not_logged_in");

    // DELETE unlinks and erases everything.
    api.delete("/sessions/gone").await.expect(200);
    let (_, account) = sim.get("/accounts/6281230000022").await;
    assert_eq!(
        account["devices"].as_array().map(Vec::len),
        Some(0),
        "{account}"
    );
    api.get("/sessions/gone")
        .await
        .expect_error(404, "session_not_found");
    assert!(!server.data_dir().join("sessions/gone").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn phone_unlinking_the_device_logs_the_session_out() {
    let sim = Sim::start().await;
    let server = gateway(&sim).await;
    sim.pair_by_qr(&server, "unl", "6281230000031", "Una").await;
    assert!(server.data_dir().join("sessions/unl").exists());
    let (status, reply) = sim.post("/accounts/6281230000031/unlink", json!({})).await;
    assert_eq!(status, 200, "{reply}");
    wait_status(&server, "unl", "logged_out", Duration::from_secs(30)).await;
    let erased = wait_until(Duration::from_secs(10), || async {
        !server.data_dir().join("sessions/unl").exists()
    })
    .await;
    assert!(erased, "credentials of an unlinked device are erased");
    let session = server.api().get("/sessions/unl").await.expect(200);
    assert_eq!(session["is_logged_in"], false);
    assert_eq!(session["phone_number"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_socket_reconnects_by_itself() {
    let sim = Sim::start().await;
    let server = gateway(&sim).await;
    sim.pair_by_qr(&server, "drop", "6281230000041", "Drop")
        .await;
    let before = sim.stats().await;
    let (status, reply) = sim
        .post(
            "/faults",
            json!({"kind": "drop_socket", "phone_number": "6281230000041"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let back = wait_until(Duration::from_secs(30), || async {
        let stats = sim.stats().await;
        stats["logins"].as_u64() > before["logins"].as_u64()
            && status_of(&server, "drop").await == "logged_in"
    })
    .await;
    assert!(back, "the session logged in again by itself");
    assert_eq!(sim.stats().await["pairings"], before["pairings"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_under_the_data_dir_is_owner_only_after_pairing() {
    use std::os::unix::fs::PermissionsExt;
    let sim = Sim::start().await;
    let server = gateway(&sim).await;
    sim.pair_by_qr(&server, "private", "6281230000061", "Private")
        .await;
    // Something of everything: the session record, its credentials, a group in the cache.
    server
        .api()
        .post_json(
            "/sessions/private/groups",
            &json!({"name": "Private", "participants": []}),
        )
        .await
        .expect(200);
    let mut pending = vec![server.data_dir().to_path_buf()];
    let mut checked = 0;
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if meta.is_file() {
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        }
        checked += 1;
    }
    assert!(checked > 5, "only {checked} entries under the data dir");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_session_fails_instead_of_taking_the_account_back() {
    let sim = Sim::start().await;
    let mut server = gateway(&sim).await;
    sim.pair_by_qr(&server, "twin", "6281230000051", "Twin")
        .await;
    let before = sim.stats().await;
    let (status, reply) = sim
        .post(
            "/faults",
            json!({"kind": "stream_error", "phone_number": "6281230000051", "error": "replaced"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    wait_status(&server, "twin", "failed", Duration::from_secs(20)).await;
    // The admin view names why, once the connection is gone.
    let named = wait_until(Duration::from_secs(20), || async {
        let node = server.actor("session:twin").await.expect(200);
        node["last_failure"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("replaced"))
    })
    .await;
    assert!(named, "{}", server.actor("session:twin").await.expect(200));
    // No loop: it does not log in again by itself, not even after a restart.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.stats().await["logins"], before["logins"]);
    server.restart().await;
    assert_eq!(status_of(&server, "twin").await, "failed");
    // `connect` is the operator's way back.
    server
        .api()
        .post("/sessions/twin/connect")
        .await
        .expect(200);
    wait_status(&server, "twin", "logged_in", PAIRING).await;
    assert_eq!(sim.stats().await["pairings"], before["pairings"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_server_answers_504_in_time_and_the_actor_stays_responsive() {
    let sim = Sim::start().await;
    let server = gateway_quick_to_give_up(&sim).await;
    sim.pair_by_qr(&server, "stall", "6281230000051", "Stall")
        .await;
    let (status, reply) = sim
        .post("/faults", json!({"kind": "stall", "duration_ms": 8000}))
        .await;
    assert_eq!(status, 200, "{reply}");

    let api = server.api();
    let slow = {
        let api = api.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = api.get("/sessions/stall/groups?refresh=true").await;
            (r, started.elapsed())
        })
    };
    // While WhatsApp is silent, the session still answers at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    api.get("/sessions/stall").await.expect(200);
    api.get("/sessions/stall/status").await.expect(200);
    let quick = started.elapsed();
    let (reply, took) = slow.await.unwrap();
    reply.expect_error(504, "whatsapp_timeout");
    assert!(
        took < Duration::from_secs(6),
        "answered within the timeout, took {took:?}"
    );
    assert!(
        quick < Duration::from_secs(1),
        "status answered while WhatsApp stalled, took {quick:?}"
    );
    sim.call(reqwest::Method::DELETE, "/faults", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_session_never_runs_two_clients_and_logs_back_in() {
    let sim = Sim::start().await;
    let server = gateway(&sim).await;
    sim.pair_by_qr(&server, "crashy", "6281230000061", "Crashy")
        .await;
    let before = sim.stats().await;
    assert_eq!(before["active_connections"], 1, "{before}");
    let mut logins = before["logins"].as_u64().unwrap();
    for _ in 0..2 {
        server
            .admin()
            .post("/admin/actors/session%3Acrashy/crash")
            .await
            .expect(202);
        // While the actor restarts, WhatsApp never sees a second socket for this device.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = sim.stats().await;
            assert!(
                stats["active_connections"].as_u64().unwrap() <= 1,
                "two clients at once: {stats}"
            );
            let now = stats["logins"].as_u64().unwrap();
            if now > logins && status_of(&server, "crashy").await == "logged_in" {
                logins = now;
                break;
            }
            assert!(Instant::now() < deadline, "never logged back in: {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let after = sim.stats().await;
    assert_eq!(after["pairings"], before["pairings"], "no new pairing");
    let node = server
        .admin()
        .get("/admin/actors/session%3Acrashy")
        .await
        .expect(200);
    assert!(node["restarts"].as_u64().unwrap() >= 2, "{node}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_that_goes_silent_shows_connecting_within_the_bound_and_comes_back() {
    let sim = Sim::start().await;
    let server = TestServer::builder()
        .whatsapp_url(sim.url())
        .env("WAGATE_WHATSAPP_LINK_CHECK_INTERVAL", "1s")
        .env("WAGATE_WHATSAPP_LINK_CHECK_TIMEOUT", "1s")
        .env("WAGATE_WHATSAPP_LINK_CHECK_FAILURES", "2")
        .start()
        .await;
    sim.pair_by_qr(&server, "quiet", "6281230000071", "Quiet")
        .await;
    // The socket stays open but WhatsApp says nothing for 12 s.
    let (status, reply) = sim
        .post(
            "/faults",
            json!({"kind": "stall", "duration_ms": 12000, "phone_number": "6281230000071"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let stalled_at = Instant::now();
    let noticed = wait_for(Duration::from_secs(10), || async {
        (server.session_status("quiet").await == "connecting").then(Instant::now)
    })
    .await
    .expect("the silent link is noticed");
    // interval + failures x timeout = 3 s, plus scheduling slack.
    assert!(
        noticed.duration_since(stalled_at) < Duration::from_secs(6),
        "noticed after {:?}",
        noticed.duration_since(stalled_at)
    );
    let back = wait_until(Duration::from_secs(40), || async {
        server.session_status("quiet").await == "logged_in"
    })
    .await;
    assert!(
        back,
        "logged in again once WhatsApp answers\n{}",
        server.output()
    );
    sim.call(reqwest::Method::DELETE, "/faults", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_is_retried_a_few_times_then_fails() {
    let sim = Sim::start().await;
    let server = TestServer::builder()
        .whatsapp_url(sim.url())
        .env("WAGATE_WHATSAPP_RECONNECT_BACKOFF_MIN", "100ms")
        .env("WAGATE_WHATSAPP_RECONNECT_BACKOFF_MAX", "300ms")
        .start()
        .await;
    sim.pair_by_qr(&server, "clash", "6281230000081", "Clash")
        .await;
    let conflict =
        json!({"kind": "stream_error", "phone_number": "6281230000081", "error": "conflict"});
    // One conflict: the session comes back by itself.
    let before = sim.stats().await["logins"].as_u64().unwrap();
    sim.post_ok("/faults", conflict.clone()).await;
    let relogged = wait_until(Duration::from_secs(20), || async {
        sim.stats().await["logins"].as_u64().unwrap() > before
            && status_of(&server, "clash").await == "logged_in"
    })
    .await;
    assert!(
        relogged,
        "a single conflict is retried\n{}",
        server.output()
    );
    // Conflicts that keep coming: failed, with the reason, and no more logins.
    let mut failed = false;
    for _ in 0..8 {
        let _ = wait_until(Duration::from_secs(10), || async {
            status_of(&server, "clash").await == "logged_in"
        })
        .await;
        sim.post("/faults", conflict.clone()).await;
        if wait_until(Duration::from_secs(3), || async {
            status_of(&server, "clash").await == "failed"
        })
        .await
        {
            failed = true;
            break;
        }
    }
    assert!(
        failed,
        "repeated conflicts end in failed\n{}",
        server.output()
    );
    let named = wait_until(Duration::from_secs(10), || async {
        server.actor("session:clash").await.expect(200)["last_failure"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("conflict"))
    })
    .await;
    assert!(named, "{}", server.actor("session:clash").await.expect(200));
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_of_an_offline_session_connects_to_unlink_the_device() {
    let sim = Sim::start().await;
    let server = gateway_quick_to_give_up(&sim).await;
    sim.pair_by_qr(&server, "off", "6281230000061", "Off").await;
    let api = server.api();
    api.post("/sessions/off/disconnect").await.expect(200);
    wait_status(&server, "off", "disconnected", Duration::from_secs(10)).await;
    let devices = || async {
        sim.get_ok("/accounts/6281230000061").await["devices"]
            .as_array()
            .map(Vec::len)
    };
    assert_eq!(devices().await, Some(1));

    // WhatsApp does not answer: the logout changes nothing, and says so.
    sim.post_ok("/faults", json!({"kind": "stall", "duration_ms": 8000}))
        .await;
    api.post("/sessions/off/logout")
        .await
        .expect_error(504, "whatsapp_timeout");
    sim.call(reqwest::Method::DELETE, "/faults", None).await;
    wait_status(&server, "off", "disconnected", Duration::from_secs(10)).await;
    assert!(
        server.data_dir().join("sessions/off").exists(),
        "credentials kept"
    );
    assert_eq!(devices().await, Some(1));

    // WhatsApp answers: the logout connects, unlinks the device, and erases the credentials.
    api.post("/sessions/off/logout").await.expect(200);
    assert_eq!(status_of(&server, "off").await, "logged_out");
    assert_eq!(
        devices().await,
        Some(0),
        "the device is unlinked at WhatsApp"
    );
    assert!(!server.data_dir().join("sessions/off").exists());
}
