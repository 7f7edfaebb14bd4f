//! The dashboard in a real browser: headless Chromium from Debian (`chromium`), driven over
//! WebDriver (`chromium-driver`'s `chromedriver`, started here on a free 127.0.0.1 port) with
//! `fantoccini`, against chip-service on the embedded default.
//!
//! The test opens `/dashboard`, types the tenant's API token, sets a marker in the page,
//! creates a chip through the page's form, waits for its QR code to appear, reads the image
//! inside the page and decodes it (`rqrr`) to the value `GET /v1/chips/{chip}/qr/raw` answers,
//! lets the simulated phone scan it, and waits until the page shows the chip WORKING (from the
//! event stream: the marker proves there was no reload). It then sends a test message through
//! the page, checks that every request the page made went to 127.0.0.1, saves a screenshot to
//! `target/dashboard.png`, and checks that neither the page nor its storage ever holds the
//! tenant's webhook HMAC key or container API key.
//!
//! Nothing leaves the machine: Chromium resolves no host name but 127.0.0.1 and sends anything
//! it would proxy to a dead local port. A missing browser or driver fails the test with the
//! install hint (`scripts/test-env.sh` installs both); it is never skipped.

mod common;

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use session_supervisor::ChipKey;
use tenant_isolation::{ChipId, TenantId};
use tokio::time::{Instant, sleep, timeout};

use common::{
    ADMIN, Service, build_embedded, decode_png, embedded_options, http_client, scan_when_ready,
    serve,
};

const TENANT: &str = "acme";
const CHIP: &str = "dash-1";
const CHAT: &str = "5511988887777";
const INSTALL_HINT: &str = "the browser test needs Debian's Chromium and its WebDriver: \
     `apt-get install -y chromium chromium-driver` (scripts/test-env.sh installs them); \
     CHIPFLEET_CHROMIUM and CHIPFLEET_CHROMEDRIVER override their paths";

/// The page's chip card.
const CARD: &str = "document.querySelector(`[data-chip=\"${arguments[0]}\"]`)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_chip_from_qr_to_working_live_in_chromium() {
    let chromium = executable("CHIPFLEET_CHROMIUM", "/usr/bin/chromium");
    let chromedriver = executable("CHIPFLEET_CHROMEDRIVER", "/usr/bin/chromedriver");
    timeout(Duration::from_secs(300), flow(&chromium, &chromedriver))
        .await
        .expect("the browser test finishes within 300 s");
}

async fn flow(chromium: &Path, chromedriver: &Path) {
    let service = start_service().await;
    let base = format!("http://{}", service.addr);
    let http = http_client(None);

    // A tenant and its token (the admin API), and the secrets the page must never see.
    let token = create_tenant(&http, &base).await;
    let tenant = TenantId::new(TENANT).expect("a tenant id");
    let stored = service
        .embedded
        .directory()
        .get(&tenant)
        .await
        .expect("the tenant is stored")
        .secrets;
    let secrets = [
        stored.webhook_hmac_key.expose_secret().to_owned(),
        stored.container_api_key.expose_secret().to_owned(),
    ];
    for secret in &secrets {
        assert!(secret.len() >= 16, "a real secret to look for");
    }

    // The assets: the page with its Content-Security-Policy, its script and style sheet.
    let page = http
        .get(format!("{base}/dashboard"))
        .send()
        .await
        .expect("GET /dashboard");
    assert_eq!(page.status().as_u16(), 200);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/html"));
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("img-src 'self' blob: data:"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    for asset in ["/dashboard/app.js", "/dashboard/app.css"] {
        let answer = http
            .get(format!("{base}{asset}"))
            .send()
            .await
            .expect("an asset");
        assert_eq!(answer.status().as_u16(), 200, "{asset}");
    }

    // The browser.
    let log = target_dir().join("dashboard-chromedriver.log");
    let driver = Chromedriver::start(chromedriver, &log);
    let client = browser(&driver, chromium).await;

    // Sign in: the token goes into the password field, never into a URL.
    goto(&client, &format!("{base}/dashboard")).await;
    run(
        &client,
        "performance.setResourceTimingBufferSize(100000); return true;",
        vec![],
    )
    .await;
    fill(&client, "#token", &token).await;
    click(&client, "#connect").await;
    wait_for(
        &client,
        "the page signed in with a live event stream",
        Duration::from_secs(30),
        "return document.body.dataset.state === 'connected' \
             && document.body.dataset.stream === 'live' ? true : null;",
        vec![],
    )
    .await;
    let href = run(&client, "return location.href;", vec![]).await;
    assert_eq!(
        href,
        json!(format!("{base}/dashboard")),
        "no token in the URL"
    );
    let marker = run(
        &client,
        "window.__marker = 42; return window.__marker;",
        vec![],
    )
    .await;
    assert_eq!(marker, json!(42));

    // A chip, created through the page's form.
    fill(&client, "#new-id", CHIP).await;
    fill(&client, "#new-phone", "5511999990002").await;
    fill(&client, "#new-country", "BR").await;
    click(&client, "#create").await;
    let created = wait_for(
        &client,
        "the create form's answer",
        Duration::from_secs(30),
        "const r = document.getElementById('create-result'); \
         return r.dataset.status === 'ok' || r.dataset.status === 'error' \
             ? [r.dataset.status, r.textContent] : null;",
        vec![],
    )
    .await;
    assert_eq!(created[0], "ok", "the page created the chip: {created}");

    // Its QR code appears, fetched with the token into a blob: URL; the image the page shows
    // decodes to the value the raw-QR endpoint answers (WAHA refreshes it: compare with the
    // value just before and just after reading the page).
    let src = wait_for(
        &client,
        "the QR code in the page",
        Duration::from_secs(90),
        &format!(
            "const img = {CARD}?.querySelector('img.qr'); \
             return img && img.complete && img.naturalWidth > 0 ? img.src : null;"
        ),
        vec![json!(CHIP)],
    )
    .await;
    assert!(
        src.as_str().is_some_and(|s| s.starts_with("blob:")),
        "the QR image is a blob: URL: {src}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let qr_value = loop {
        let before = raw_qr(&http, &base, &token).await;
        let drawn = run(
            &client,
            &format!(
                "const img = {CARD}?.querySelector('img.qr'); \
                 if (!img || !img.complete || img.naturalWidth === 0) return null; \
                 const canvas = document.createElement('canvas'); \
                 canvas.width = img.naturalWidth; \
                 canvas.height = img.naturalHeight; \
                 canvas.getContext('2d').drawImage(img, 0, 0); \
                 return canvas.toDataURL('image/png');"
            ),
            vec![json!(CHIP)],
        )
        .await;
        let after = raw_qr(&http, &base, &token).await;
        let decoded = drawn.as_str().map(decode_qr);
        if let Some(Ok(value)) = &decoded
            && (before.as_deref() == Some(value.as_str())
                || after.as_deref() == Some(value.as_str()))
        {
            break value.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the page's QR code decodes to the raw value: decoded {decoded:?}, raw {before:?} / {after:?}"
        );
        sleep(Duration::from_millis(300)).await;
    };
    assert!(!qr_value.is_empty());

    // The simulated phone scans; the page turns the chip WORKING from the stream, no reload.
    let session =
        ChipKey::new(tenant.clone(), ChipId::new(CHIP).expect("a chip id")).session_name();
    scan_when_ready(&service.embedded, &tenant, session.as_str()).await;
    wait_for(
        &client,
        "the chip WORKING in the page",
        Duration::from_secs(90),
        &format!(
            "const card = {CARD}; return card && card.dataset.phase === 'working' ? true : null;"
        ),
        vec![json!(CHIP)],
    )
    .await;
    wait_for(
        &client,
        "the QR code gone once logged in",
        Duration::from_secs(10),
        &format!("return {CARD}.querySelector('img.qr') === null ? true : null;"),
        vec![json!(CHIP)],
    )
    .await;
    let marker = run(&client, "return window.__marker;", vec![]).await;
    assert_eq!(marker, json!(42), "the page was not reloaded");

    // A test message through the page (its own Idempotency-Key).
    run(
        &client,
        "document.getElementById('send-chip').value = arguments[0]; return true;",
        vec![json!(CHIP)],
    )
    .await;
    fill(&client, "#send-chat", CHAT).await;
    click(&client, "#send").await;
    let sent = wait_for(
        &client,
        "the test message's answer",
        Duration::from_secs(90),
        "const r = document.getElementById('send-result'); \
         return r.dataset.status && r.dataset.status !== 'busy' \
             ? [r.dataset.status, r.textContent] : null;",
        vec![],
    )
    .await;
    assert_eq!(sent[0], "sent", "the page sent the message: {sent}");

    // Every request the page made went to 127.0.0.1.
    let entries = run(
        &client,
        "return performance.getEntriesByType('navigation') \
             .concat(performance.getEntriesByType('resource')) \
             .map((entry) => { \
                 const inner = entry.name.startsWith('blob:') ? entry.name.slice(5) : entry.name; \
                 try { const url = new URL(inner); return [entry.name, url.protocol, url.hostname]; } \
                 catch (error) { return [entry.name, 'unparsed', '']; } \
             });",
        vec![],
    )
    .await;
    let entries = entries.as_array().cloned().unwrap_or_default();
    assert!(
        entries.len() >= 5,
        "the page's requests are recorded: {entries:?}"
    );
    let mut script_loaded = false;
    for entry in &entries {
        let name = entry[0].as_str().unwrap_or_default();
        let protocol = entry[1].as_str().unwrap_or_default();
        let host = entry[2].as_str().unwrap_or_default();
        let local = match protocol {
            "http:" | "https:" | "ws:" | "wss:" => host == "127.0.0.1",
            "data:" => true,
            _ => false,
        };
        assert!(local, "the page made a request off the machine: {name}");
        script_loaded |= name.ends_with("/dashboard/app.js");
    }
    assert!(script_loaded, "{entries:?}");

    // A screenshot for people.
    let png = client.screenshot().await.expect("a screenshot");
    let shot = target_dir().join("dashboard.png");
    if let Some(dir) = shot.parent() {
        std::fs::create_dir_all(dir).expect("the target directory");
    }
    std::fs::write(&shot, png).expect("the screenshot is saved");
    eprintln!("dashboard screenshot: {}", shot.display());

    // No tenant secret in the page, its DOM or its storage.
    let source = client.source().await.expect("the page's source");
    let state = run(
        &client,
        "return [document.documentElement.outerHTML, document.body.innerText, \
                 JSON.stringify(Object.assign({}, window.sessionStorage))];",
        vec![],
    )
    .await;
    let mut seen = vec![source];
    seen.extend(
        state
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned)),
    );
    assert_eq!(seen.len(), 4);
    assert!(
        seen[0].contains(CHIP),
        "the source is the live page: it shows the chip"
    );
    for secret in &secrets {
        for text in &seen {
            assert!(
                !text.contains(secret.as_str()),
                "a tenant secret reached the page ({} bytes)",
                text.len()
            );
        }
    }

    client.close().await.expect("the browser session closes");
    drop(driver);
    service.stop().await;
}

// --- the service ----------------------------------------------------------------------------

/// chip-service on the embedded default ([`embedded_options`]), its supervisor running, on
/// 127.0.0.1.
async fn start_service() -> Service {
    let embedded = build_embedded(embedded_options(), true).await;
    serve(embedded, None).await
}

/// Creates the tenant; answers its API token.
async fn create_tenant(http: &reqwest::Client, base: &str) -> String {
    let answer = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&json!({
            "id": TENANT,
            "limits": {"max_chips": 5, "max_running_sessions": 5, "max_sends_per_day": 100},
        }))
        .send()
        .await
        .expect("the tenant is created");
    assert_eq!(answer.status().as_u16(), 201);
    let body: Value = answer.json().await.expect("a JSON answer");
    body["api_token"]
        .as_str()
        .expect("the tenant's API token")
        .to_owned()
}

/// The raw QR value the API answers now (`None` outside a QR window).
async fn raw_qr(http: &reqwest::Client, base: &str, token: &str) -> Option<String> {
    let answer = http
        .get(format!("{base}/v1/chips/{CHIP}/qr/raw"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    if answer.status().as_u16() != 200 {
        return None;
    }
    let body: Value = answer.json().await.ok()?;
    body["value"].as_str().map(str::to_owned)
}

/// Decodes the QR code of a `data:image/png;base64,` URL.
fn decode_qr(data_url: &str) -> Result<String, String> {
    let encoded = data_url
        .strip_prefix("data:image/png;base64,")
        .ok_or_else(|| "not a PNG data URL".to_owned())?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("base64: {e}"))?;
    decode_png(&bytes)
}

/// The workspace's target directory (`CARGO_TARGET_DIR` when set).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

// --- the browser ----------------------------------------------------------------------------

/// `var`'s path, else `default`; fails loudly, with the install hint, when it does not run.
fn executable(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{} is missing: {INSTALL_HINT}",
        path.display()
    );
    let version = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{} does not run ({e}): {INSTALL_HINT}", path.display()));
    assert!(
        version.status.success(),
        "{} --version failed ({}): {INSTALL_HINT}",
        path.display(),
        version.status
    );
    path
}

/// Debian's chromedriver on a free 127.0.0.1 port; killed (with the browsers it started) on
/// drop.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start(binary: &Path, log: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free local port")
            .port();
        if let Some(dir) = log.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Its own process group: dropping the guard ends the browsers it started too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{} does not start ({e}): {INSTALL_HINT}", binary.display())
            });
        let mut driver = Chromedriver { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return driver;
            }
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited at start ({status}; log: {}): {INSTALL_HINT}",
                    log.display()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chromedriver does not listen on 127.0.0.1:{port} within 20 s (log: {})",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", group.as_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session of headless Chromium that reaches nothing but 127.0.0.1.
async fn browser(driver: &Chromedriver, chromium: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium.display().to_string(),
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                // No host name resolves but 127.0.0.1; anything proxied goes to a dead port.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--proxy-server=127.0.0.1:9",
                "--proxy-bypass-list=127.0.0.1",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--window-size=1280,1000",
            ],
        }),
    );
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(capabilities);
    builder
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| panic!("a WebDriver session of Chromium: {e}; {INSTALL_HINT}"))
}

async fn goto(client: &Client, url: &str) {
    client
        .goto(url)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
}

async fn fill(client: &Client, css: &str, text: &str) {
    let field = client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("the field {css}: {e}"));
    field
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
}

async fn click(client: &Client, css: &str) {
    let button = client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("the button {css}: {e}"));
    button
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Runs `script` (a function body: `return` answers; `arguments` are `args`) in the page.
async fn run(client: &Client, script: &str, args: Vec<Value>) -> Value {
    client
        .execute(script, args)
        .await
        .unwrap_or_else(|e| panic!("the script failed: {e}\n{script}"))
}

/// Runs `script` until it answers something else than `null`; answers that.
async fn wait_for(
    client: &Client,
    what: &str,
    within: Duration,
    script: &str,
    args: Vec<Value>,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let value = run(client, script, args.clone()).await;
        if !value.is_null() {
            return value;
        }
        if Instant::now() >= deadline {
            let page = run(
                client,
                "return document.body.innerText.slice(0, 4000);",
                vec![],
            )
            .await;
            panic!(
                "{what} within {within:?}; the page shows:\n{}",
                page.as_str().unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(150)).await;
    }
}
