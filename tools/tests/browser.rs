//! The Monitoring pages in a real headless browser (Debian's chromium,
//! driven through chromedriver's W3C WebDriver API): sign in as an entitled
//! viewer, load the run list, follow "View run", check what an operator sees
//! and keep screenshots in `target/browser/`.
//!
//! Needs `chromium` and `chromedriver` (Debian: chromium, chromium-driver);
//! `scripts/test` installs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::model::{ConnectionStatus, Lifecycle, OperationTypeSpec, Principal};
use opledger::domain::start_gate::StartRequest;
use opledger::{Durability, LogOptions};
use opledger_tools::server::{open_state, serve};
use opledger_tools::tokens::Grant;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request to a loopback address; returns the body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    // chromedriver keeps connections open whatever the request says, so
    // read exactly the body the headers announce.
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    let body_start = loop {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "connection closed before the headers ended");
        response.extend_from_slice(&buffer[..read]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&response[..body_start]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map(|value| value.trim().parse::<usize>().unwrap());
    let complete = |response: &[u8]| match length {
        Some(length) => response.len() >= body_start + length,
        None => response.ends_with(b"0\r\n\r\n"),
    };
    while !complete(&response) {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "connection closed before the body ended");
        response.extend_from_slice(&buffer[..read]);
    }
    let body = String::from_utf8_lossy(&response[body_start..]).into_owned();
    let body = if length.is_none() { dechunk(&body) } else { body };
    serde_json::from_str(&body).unwrap_or(Value::String(body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

struct Driver {
    process: Child,
    port: u16,
    session: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (apt-get install chromium chromium-driver; scripts/test does it)");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap().keep();
        let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1280,900", format!("--user-data-dir={}", profile.display())]
        }}}});
        let answer = http(port, "POST", "/session", Some(&capabilities));
        let session =
            answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {answer}")).to_owned();
        Driver { process, port, session }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = http(self.port, method, &format!("/session/{}{path}", self.session), body.as_ref());
        assert!(answer["value"].get("error").is_none(), "{method} {path}: {answer}");
        answer["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    fn find(&self, using: &str, value: &str) -> String {
        let found = self.call("POST", "/element", Some(json!({"using": using, "value": value})));
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    fn click(&self, element: &str) {
        self.call("POST", &format!("/element/{element}/click"), Some(json!({})));
    }

    fn type_into(&self, element: &str, text: &str) {
        self.call("POST", &format!("/element/{element}/value"), Some(json!({"text": text})));
    }

    fn source(&self) -> String {
        self.call("GET", "/source", None).as_str().unwrap().to_owned()
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_owned()
    }

    /// Clicks `element` and waits until the page it leads to has loaded:
    /// chromedriver may answer a click before the navigation it starts (a
    /// form post and its redirect) has even begun.
    fn click_to(&self, element: &str, path: &str) {
        self.click(element);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready =
                self.call("POST", "/execute/sync", Some(json!({"script": "return document.readyState", "args": []})));
            if self.url().ends_with(path) && ready == "complete" {
                return;
            }
            assert!(Instant::now() < deadline, "no page at {path} after the click; at {}", self.url());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let encoded = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/browser");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http(self.port, "DELETE", &format!("/session/{}", self.session), None);
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// The seed scenario: u1 may view t1; a sync is queued, the capability is
/// revoked, the worker's begin is refused: the run is blocked.
fn seed(state: &opledger_tools::server::AppState) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let world = vec![
            C::WorkspaceRegistered { workspace_id: s("w1") },
            C::TenantRegistered { tenant_id: s("t1"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
            C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("u1") },
            C::TenantMemberAdded { tenant_id: s("t1"), actor_id: s("u1") },
            C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") },
            C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("operations.view") },
            C::ProviderConnectionRegistered {
                connection_id: s("c1"),
                tenant_id: s("t1"),
                status: ConnectionStatus::Ready,
            },
            C::DefaultProviderConnectionSet { tenant_id: s("t1"), connection_id: s("c1") },
            C::OperationTypeRegistered(OperationTypeSpec {
                operation_type: s("inventory_sync"),
                required_capability: s("tenant.sync"),
                provider_backed: true,
                writes: false,
                system_authority_allowed: true,
                max_attempts: 3,
                lease_seconds: opledger::domain::model::LEASE_SECONDS_DEFAULT,
            }),
        ];
        state.ledger().record_authority(Principal::actor("u-admin"), world).await.unwrap();
        let request = StartRequest {
            operation_type: s("inventory_sync"),
            tenant_id: s("t1"),
            initiator: Principal::actor("u1"),
            provider_connection_id: None,
            context: json!({}),
            dedupe_key: None,
        };
        let run = state.ledger().start(request).await.unwrap().run().id;
        let revoke = C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") };
        state.ledger().record_authority(Principal::actor("u-admin"), vec![revoke]).await.unwrap();
        state.ledger().begin(run).await.unwrap();
        run.to_string()
    })
}

#[test]
fn an_entitled_viewer_follows_view_run_to_the_blocked_run() {
    let dir = tempfile::tempdir().unwrap();
    let state = open_state(dir.path(), LogOptions { durability: Durability::Flush, ..LogOptions::default() }).unwrap();
    let run_id = seed(&state);
    let (token, _) = state.tokens.create(Grant::Actor { actor_id: s("u1") }).unwrap();
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        runtime.block_on(serve(state, address)).unwrap();
    });
    while TcpStream::connect(address).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let base = format!("http://127.0.0.1:{port}");
    let driver = Driver::start();

    driver.go(&format!("{base}/admin/operations"));
    assert!(driver.source().contains("401"), "no token, no page");

    driver.go(&format!("{base}/admin/login"));
    let field = driver.find("css selector", "input[name=token]");
    driver.type_into(&field, &token);
    driver.click_to(&driver.find("css selector", "button[type=submit]"), "/admin/operations");
    let list = driver.source();
    assert!(list.contains("Operations") && list.contains("inventory_sync"), "the run is listed");
    assert!(list.contains(r#"data-outcome="blocked""#), "its outcome badge says blocked");
    assert!(!list.contains(r#"data-outcome="failed""#), "blocked is never shown as failed");
    assert!(list.contains("Outcomes over time"), "the chart is there");
    driver.screenshot("monitoring-list.png");

    driver.click_to(&driver.find("link text", "View run"), &format!("/admin/operations/{run_id}"));
    let detail = driver.source();
    assert!(detail.contains("capability_missing"), "the reason code is shown");
    assert!(detail.contains("Ask a tenant owner to grant the capability"), "the next step is shown");
    assert!(detail.contains("c1"), "the pinned connection is shown");
    assert!(detail.contains("legitimacy_evaluated") && detail.contains("run_blocked"), "the timeline is shown");
    assert!(detail.contains("was revoked from actor u1"), "the failing check's fact is shown");
    let path = driver.screenshot("monitoring-run.png");
    assert!(std::fs::metadata(path).unwrap().len() > 1000);
}
