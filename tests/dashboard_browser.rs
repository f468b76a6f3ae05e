//! The dashboard in a real browser: headless Chromium, driven through ChromeDriver, signs in
//! with the admin token, creates a session, shows its QR code; the simulated phone scans the
//! code the page shows (read off a screenshot), and the page shows `logged_in` live. Then it
//! disconnects and connects the session, shows its groups and a crashed actor, and deletes the
//! session. Any console error fails the test.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`; `.ci/run`
//! installs them). `CHROMEDRIVER` and `CHROMIUM` override their paths.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::sim::Sim;
use common::{ADMIN_TOKEN, TestServer, wait_for};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A ChromeDriver on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn program(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_owned())
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let path = program("CHROMEDRIVER", "/usr/bin/chromedriver");
    let child = Command::new(&path)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{path} did not start ({e}); install Debian's chromium and chromium-driver")
        });
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let ready = common::wait_until(STEP_TIMEOUT, || async {
        http.get(format!("{url}/status")).send().await.is_ok()
    })
    .await;
    assert!(ready, "chromedriver answered on {url}");
    Driver { child, url }
}

async fn open_browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": program("CHROMIUM", "/usr/bin/chromium"),
            "args": args,
        },
        "goog:loggingPrefs": {"browser": "ALL"},
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    // ChromeDriver speaks plain HTTP on loopback: no TLS connector is needed.
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// The browser's console since the last call, through ChromeDriver's log endpoint.
async fn console(driver: &Driver, browser: &Client) -> Vec<Value> {
    let session = browser
        .session_id()
        .await
        .expect("session id")
        .expect("a session");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer: Value = http
        .post(format!("{}/session/{session}/se/log", driver.url))
        .json(&json!({"type": "browser"}))
        .send()
        .await
        .expect("log request")
        .json()
        .await
        .expect("log JSON");
    // A driver without the log endpoint would make the console check vacuous: fail instead.
    answer["value"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("ChromeDriver returned no browser log: {answer}"))
}

async fn click(browser: &Client, css: &str) {
    let element = browser
        .wait()
        .at_most(STEP_TIMEOUT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} on the page: {e}"));
    element
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn text_of(browser: &Client, css: &str) -> Option<String> {
    let element = browser.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

/// Waits until the element's text is `want`; the last text seen otherwise.
async fn wait_for_text(browser: &Client, css: &str, want: &str) -> Result<(), Option<String>> {
    let mut last = None;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        last = text_of(browser, css).await;
        if last.as_deref() == Some(want) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// Waits until the element's text contains `part`.
async fn page_shows(browser: &Client, css: &str, part: &str) -> bool {
    wait_for(STEP_TIMEOUT, || async {
        text_of(browser, css).await.filter(|t| t.contains(part))
    })
    .await
    .is_some()
}

/// The QR code as the page shows it, read off a screenshot of the image.
async fn qr_on_page(browser: &Client) -> Option<String> {
    let image = browser.find(Locator::Css("#qr-image")).await.ok()?;
    if !image.is_displayed().await.ok()? {
        return None;
    }
    let loaded = browser
        .execute(
            "const i = document.querySelector('#qr-image'); return i.complete && i.naturalWidth > 0;",
            vec![],
        )
        .await
        .ok()?;
    if loaded != Value::Bool(true) {
        return None;
    }
    let png = image.screenshot().await.ok()?;
    let pixels = image::load_from_memory(&png).ok()?.to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(pixels);
    let grids = prepared.detect_grids();
    let (_, text) = grids.first()?.decode().ok()?;
    Some(text)
}

#[tokio::test]
async fn the_dashboard_pairs_a_session_by_qr_and_shows_it_logged_in_live() {
    let sim = Sim::start().await;
    let server = TestServer::builder()
        .whatsapp_url(sim.url())
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().expect("a browser profile dir");
    let browser = open_browser(&driver, profile.path()).await;

    browser
        .goto(&server.url("/"))
        .await
        .expect("the dashboard loads");
    browser
        .wait()
        .at_most(STEP_TIMEOUT)
        .for_element(Locator::Css("#token"))
        .await
        .expect("the sign-in form")
        .send_keys(ADMIN_TOKEN)
        .await
        .expect("typing the token");
    browser
        .find(Locator::Css("#sign-in"))
        .await
        .expect("the sign-in button")
        .click()
        .await
        .expect("signing in");

    // Signed in: the actor tree shows the supervisor.
    assert!(
        page_shows(&browser, "#actor-tree", "supervisor").await,
        "the actor tree after sign-in"
    );

    browser
        .find(Locator::Css("#new-session-id"))
        .await
        .expect("the new-session form")
        .send_keys("browser1")
        .await
        .expect("typing the id");
    browser
        .find(Locator::Css("#create-session"))
        .await
        .expect("the create button")
        .click()
        .await
        .expect("creating the session");
    wait_for_text(&browser, "#session-id", "browser1")
        .await
        .expect("the new session is selected");

    // The phone scans exactly what the page shows.
    let qr = wait_for(STEP_TIMEOUT, || qr_on_page(&browser))
        .await
        .expect("a readable QR code on the page");
    let pending = server.api().get("/sessions/browser1/qr").await.expect(200);
    assert!(
        pending["qr_codes"]
            .as_array()
            .is_some_and(|codes| codes.iter().any(|c| c == &qr)),
        "the page shows one of the session's codes: {qr} vs {pending}"
    );
    let (status, scanned) = sim
        .post(
            "/scan-qr",
            json!({"qr": qr, "phone_number": "6281100000001", "push_name": "Browser Phone"}),
        )
        .await;
    assert_eq!(status, 200, "{scanned}");

    if let Err(last) = wait_for_text(&browser, "#session-status", "logged_in").await {
        panic!(
            "the page shows logged_in (last: {last:?})\n{}",
            server.output()
        );
    }
    wait_for_text(&browser, "[data-session=\"browser1\"] .status", "logged_in")
        .await
        .expect("the session list shows logged_in");
    assert_eq!(
        server.api().get("/sessions/browser1").await.expect(200)["status"],
        "logged_in"
    );
    let qr_hidden = wait_for(STEP_TIMEOUT, || async {
        match browser.find(Locator::Css("#qr-image")).await {
            Ok(image) => (!image.is_displayed().await.unwrap_or(true)).then_some(()),
            Err(_) => Some(()),
        }
    })
    .await;
    assert!(qr_hidden.is_some(), "the QR code goes away once logged in");
    assert!(
        page_shows(&browser, "#actor-tree", "session:browser1").await,
        "the actor tree shows the new session"
    );

    // A group made elsewhere shows once the page reloads the groups: after a reconnect.
    let member = sim.user("6281100000002").await;
    let api = server.api();
    api.post_json(
        "/sessions/browser1/groups",
        &json!({"name": "Browser Group", "participants": [member]}),
    )
    .await
    .expect(200);
    click(&browser, "#disconnect").await;
    wait_for_text(&browser, "#session-status", "disconnected")
        .await
        .expect("the page shows the session disconnected");
    click(&browser, "#connect").await;
    wait_for_text(&browser, "#session-status", "logged_in")
        .await
        .expect("the page shows the session back");
    assert!(
        page_shows(&browser, "#groups", "Browser Group").await,
        "the session's groups on the page"
    );

    // A crashed actor shows with its failure in the tree.
    server
        .admin()
        .post("/admin/actors/session:browser1%2Fgroups/crash")
        .await
        .expect(202);
    assert!(
        page_shows(
            &browser,
            "#actor-tree .has-failure",
            "session:browser1/groups"
        )
        .await,
        "the failed actor is marked in the tree"
    );

    // Delete asks in the page first, then the session is gone.
    click(&browser, "#delete").await;
    click(&browser, "#delete-confirm").await;
    let gone = wait_for(STEP_TIMEOUT, || async {
        browser
            .find(Locator::Css("[data-session=\"browser1\"]"))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "the deleted session leaves the list");
    api.get("/sessions/browser1")
        .await
        .expect_error(404, "session_not_found");

    let errors: Vec<Value> = console(&driver, &browser)
        .await
        .into_iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .collect();
    browser.close().await.expect("closing the browser");
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
