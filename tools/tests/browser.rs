//! The operator console in a real headless browser (Debian's chromium,
//! driven through chromedriver's W3C WebDriver API): sign in as an entitled
//! viewer, load the run list, submit the filter form (a time range too),
//! page "Older" and "Newer" through a filtered list, turn auto-refresh on
//! and off, follow "View run", search a run by id, read the inbox; then
//! sign in as a service and walk the audit trail (from a check's position
//! on a run page) and the authority state. Every page is reached by
//! clicking links and submitting forms, and photographed into
//! `target/browser/` (1280×800).
//!
//! The screenshots in `docs/screenshots/` (shown in README.md) are copies
//! of these, refreshed by hand, never by the test:
//!
//! ```sh
//! cargo test -p opledger-tools --test browser
//! cp target/browser/console-{list,run-decisions,run-lease,inbox,audit-entry,authority}.png docs/screenshots/
//! ```
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
use opledger::domain::lifecycle::{Completion, FailureReport};
use opledger::domain::model::{ConnectionStatus, Lifecycle, OperationTypeSpec, Principal, RunOutcome, WorkerOutcome};
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
    http_as(port, method, path, body, None)
}

/// [`http`] with a bearer token.
fn http_as(port: u16, method: &str, path: &str, body: Option<&Value>, token: Option<&str>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let authorization = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
                     "--disable-sync", "--window-size=1280,800", format!("--user-data-dir={}", profile.display())]
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

    /// Whether the `option` (or checkbox) `css` names is selected.
    fn selected(&self, css: &str) -> bool {
        let element = self.find("css selector", css);
        self.call("GET", &format!("/element/{element}/selected"), None).as_bool().unwrap()
    }

    fn clear(&self, element: &str) {
        self.call("POST", &format!("/element/{element}/clear"), Some(json!({})));
    }

    /// Clicks `element` and waits until the page it leads to has loaded:
    /// chromedriver may answer a click before the navigation it starts (a
    /// form post and its redirect) has even begun.
    fn click_to(&self, element: &str, path: &str) {
        self.click_until(element, &|url| url.ends_with(path));
    }

    /// Clicks `element` and waits for a loaded page whose URL is `arrived`
    /// and differs from the one the click was made on.
    fn click_until(&self, element: &str, arrived: &dyn Fn(&str) -> bool) {
        let before = self.url();
        self.click(element);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready =
                self.call("POST", "/execute/sync", Some(json!({"script": "return document.readyState", "args": []})));
            let url = self.url();
            if url != before && arrived(&url) && ready == "complete" {
                return;
            }
            assert!(Instant::now() < deadline, "no page as expected after the click; at {url}");
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

/// The failure the failed run reports.
const FAILURE_CODE: &str = "provider_timeout";
const FAILURE_MESSAGE: &str = "The provider did not answer within 30 seconds";

/// The runs of the seed scenario.
struct Seeded {
    /// Queued, then blocked at begin: the capability was revoked.
    blocked: String,
    /// Failed with [`FAILURE_CODE`] and [`FAILURE_MESSAGE`].
    failed: String,
    /// A system run on t2 (which u1 may not see), running on a lease.
    running: String,
    /// The log position of the revocation.
    revoked_at: u64,
}

/// The seed scenario: u1 may view t1; a sync fails, one succeeds; a sync is
/// queued, the capability is revoked, the worker's begin is refused: the
/// run is blocked; two more starts are blocked at the start gate.
fn seed(state: &opledger_tools::server::AppState) -> Seeded {
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
            C::TenantRegistered { tenant_id: s("t2"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
            C::ProviderConnectionRegistered {
                connection_id: s("c2"),
                tenant_id: s("t2"),
                status: ConnectionStatus::Ready,
            },
            C::DefaultProviderConnectionSet { tenant_id: s("t2"), connection_id: s("c2") },
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
        let ledger = state.ledger().unwrap();
        ledger.record_authority(Principal::actor("u-admin"), world).await.unwrap();
        let request = || StartRequest {
            operation_type: s("inventory_sync"),
            tenant_id: s("t1"),
            initiator: Principal::actor("u1"),
            provider_connection_id: None,
            context: json!({}),
            dedupe_key: None,
        };
        let complete = |outcome, failure| Completion { outcome, summary_counts: None, failure, retryable: None };
        let failed = ledger.start(request()).await.unwrap().run().id;
        ledger.begin(failed).await.unwrap();
        let failure = FailureReport { code: Some(s(FAILURE_CODE)), message: s(FAILURE_MESSAGE) };
        ledger.complete(failed, complete(WorkerOutcome::Failed, Some(failure))).await.unwrap();
        let succeeded = ledger.start(request()).await.unwrap().run().id;
        ledger.begin(succeeded).await.unwrap();
        ledger.complete(succeeded, complete(WorkerOutcome::Succeeded, None)).await.unwrap();
        let run = ledger.start(request()).await.unwrap().run().id;
        let revoke = C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") };
        let (revoked_at, _) = ledger.record_authority(Principal::actor("u-admin"), vec![revoke]).await.unwrap();
        ledger.begin(run).await.unwrap();
        for _ in 0..2 {
            let answer = ledger.start(request()).await.unwrap();
            assert_eq!(answer.run().outcome, RunOutcome::Blocked, "blocked at the start gate");
        }
        let scheduled = StartRequest { tenant_id: s("t2"), initiator: Principal::System, ..request() };
        let running = ledger.start(scheduled).await.unwrap().run().id;
        ledger.begin(running).await.unwrap();
        Seeded { blocked: run.to_string(), failed: failed.to_string(), running: running.to_string(), revoked_at }
    })
}

/// Every `data-run` row of a list page, in page order, with its outcome.
fn rows(source: &str) -> Vec<(String, String)> {
    source
        .split("<tr data-run=\"")
        .skip(1)
        .map(|row| {
            let id = row.split('"').next().unwrap().to_owned();
            let outcome = row.split("data-outcome=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
            (id, outcome)
        })
        .collect()
}

/// The count a list page's chart shows for `outcome`, and its total.
fn chart_numbers(source: &str, outcome: &str) -> (u64, u64) {
    let count = source.split(&format!("<g data-outcome=\"{outcome}\" data-count=\"")).nth(1).unwrap();
    let total = source.split("data-total=\"").nth(1).unwrap();
    let number = |text: &str| text.split('"').next().unwrap().parse::<u64>().unwrap();
    (number(count), number(total))
}

#[test]
fn an_entitled_viewer_follows_view_run_to_the_blocked_run() {
    let dir = tempfile::tempdir().unwrap();
    let state = open_state(dir.path(), LogOptions { durability: Durability::Flush, ..LogOptions::default() }).unwrap();
    let seeded = seed(&state);
    let (token, _) = state.tokens.create(Grant::Actor { actor_id: s("u1") }).unwrap();
    let (service, _) = state.tokens.create(Grant::Service { name: s("host-app") }).unwrap();
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
    let outcomes: Vec<(String, String)> = rows(&list);
    assert!(outcomes.contains(&(seeded.blocked.clone(), s("blocked"))), "its outcome badge says blocked: {outcomes:?}");
    assert!(outcomes.contains(&(seeded.failed.clone(), s("failed"))), "{outcomes:?}");
    assert!(list.contains("Operations by outcome"), "the chart is there");
    assert_eq!(chart_numbers(&list, "blocked"), (3, 5), "blocked is never counted as failed");
    assert_eq!(chart_numbers(&list, "failed"), (1, 5));
    // What the browser built, not just what was sent: every label and
    // number of the chart is a text of its bar's group (an unclosed SVG
    // element would swallow them, and they would not be drawn).
    let script = "return Array.from(document.querySelectorAll('figure.chart svg text'))\
                  .map(t => t.parentNode.tagName + ':' + t.textContent)";
    let labels = driver.call("POST", "/execute/sync", Some(json!({"script": script, "args": []})));
    let labels: Vec<&str> = labels.as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    for label in ["g:succeeded", "g:partially succeeded", "g:failed", "g:blocked", "g:pending", "g:3", "g:1", "g:0"] {
        assert!(labels.contains(&label), "{label} in {labels:?}");
    }
    assert!(labels.iter().all(|label| label.starts_with("g:")), "{labels:?}");
    // The chart over time as drawn: blocked and failed are segments of
    // their own, with a height, under a legend that names them.
    let script = "return Array.from(document.querySelectorAll('figure.over-time svg rect[data-series]'))\
                  .map(r => r.dataset.series + ':' + r.dataset.count + ':' + (r.getBBox().height > 0))";
    let drawn = driver.call("POST", "/execute/sync", Some(json!({"script": script, "args": []})));
    let drawn: Vec<&str> = drawn.as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    let total = |series: &str| -> u64 {
        drawn
            .iter()
            .filter(|d| d.starts_with(&format!("{series}:")))
            .map(|d| d.split(':').nth(1).unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!((total("blocked"), total("failed")), (3, 1), "{drawn:?}");
    assert!(drawn.iter().all(|d| d.ends_with(":true")), "every segment is drawn: {drawn:?}");
    let script =
        "return Array.from(document.querySelectorAll('figure.over-time g[data-legend] text')).map(t => t.textContent)";
    let legend = driver.call("POST", "/execute/sync", Some(json!({"script": script, "args": []})));
    for word in ["blocked", "failed", "succeeded", "pending"] {
        assert!(legend.as_array().unwrap().iter().any(|t| t == word), "{word} in the legend: {legend}");
    }
    driver.screenshot("console-list.png");

    // The filter form as a person uses it: pick an outcome, leave the other
    // fields empty, press the button. The browser sends the empty fields.
    driver.click(&driver.find("css selector", "select[name=outcome] option[value=blocked]"));
    let submit = || driver.find("css selector", "form.filters button[type=submit]");
    driver.click_until(&submit(), &|url| url.ends_with("&outcome=blocked&status=&from=&to=&limit="));
    let filtered = driver.source();
    assert!(filtered.contains("<h1>Operations</h1>"), "a 200 page, not an error: {filtered}");
    let blocked = rows(&filtered);
    assert_eq!(blocked.len(), 3, "{blocked:?}");
    assert!(blocked.iter().all(|(_, outcome)| outcome == "blocked"), "{blocked:?}");
    let summary = http_as(port, "GET", "/v1/runs/summary?outcome=blocked", None, Some(&token));
    assert_eq!(summary["by_outcome"]["blocked"], 3, "{summary}");
    assert_eq!(chart_numbers(&filtered, "blocked"), (3, summary["total"].as_u64().unwrap()));

    // A small page: the filter is kept going older and newer.
    driver.type_into(&driver.find("css selector", "input[name=limit]"), "2");
    driver.click_until(&submit(), &|url| url.ends_with("&outcome=blocked&status=&from=&to=&limit=2"));
    let first = driver.source();
    let first_rows = rows(&first);
    assert_eq!(first_rows, blocked[..2], "the two newest blocked runs");
    assert!(!first.contains("Newer operations"), "nothing is newer than the first page");
    let kept = |url: &str| url.contains("outcome=blocked") && url.contains("limit=2") && url.contains("cursor=");
    driver.click_until(&driver.find("link text", "Older operations"), &kept);
    let second = driver.source();
    assert!(second.contains("<h1>Operations</h1>"), "page 2 is a page, not an invalid cursor: {second}");
    assert_eq!(rows(&second), blocked[2..], "page 2 of the same filter");
    assert!(driver.selected("select[name=outcome] option[value=blocked]"), "the form still shows the filter");
    assert_eq!(chart_numbers(&second, "blocked"), (3, 3), "the chart counts the whole filter on every page");
    driver.screenshot("console-list-page-2.png");
    driver.click_until(&driver.find("link text", "Newer operations"), &kept);
    let back = driver.source();
    assert_eq!(rows(&back), first_rows, "back on page 1");
    assert!(!back.contains("Newer operations"));

    // A failed run's page shows its failure.
    driver.click(&driver.find("css selector", "select[name=outcome] option[value=failed]"));
    driver.clear(&driver.find("css selector", "input[name=limit]"));
    driver.click_until(&submit(), &|url| url.ends_with("&outcome=failed&status=&from=&to=&limit="));
    assert_eq!(rows(&driver.source()), [(seeded.failed.clone(), s("failed"))]);
    driver.click_to(&driver.find("link text", "View run"), &format!("/admin/operations/{}", seeded.failed));
    let failed = driver.source();
    assert!(failed.contains(FAILURE_CODE) && failed.contains(FAILURE_MESSAGE), "the failure is shown: {failed}");
    assert!(failed.contains("<td>write gate</td>") && !failed.contains("WriteGate"), "checks in operator words");
    driver.screenshot("console-run-failed.png");

    driver.go(&format!("{base}/admin/operations"));
    let view_blocked = format!("tr[data-run=\"{}\"] a", seeded.blocked);
    driver.click_to(&driver.find("css selector", &view_blocked), &format!("/admin/operations/{}", seeded.blocked));
    let detail = driver.source();
    assert!(detail.contains("capability_missing"), "the reason code is shown");
    assert!(detail.contains("Ask a tenant owner to grant the capability"), "the next step is shown");
    assert!(detail.contains("c1"), "the pinned connection is shown");
    assert!(detail.contains("legitimacy_evaluated") && detail.contains("run_blocked"), "the timeline is shown");
    assert!(detail.contains("was revoked from actor u1"), "the failing check's fact is shown");
    let path = driver.screenshot("console-run-blocked.png");
    assert!(std::fs::metadata(path).unwrap().len() > 1000);
    // Every decision, not only the latest: the start gate's and attempt 1's.
    assert!(detail.contains(r#"data-gate="start" data-attempt="0" data-outcome="allowed""#), "{detail}");
    assert!(detail.contains(r#"data-gate="begin" data-attempt="1" data-outcome="denied""#), "{detail}");
    assert!(!detail.contains("/admin/audit"), "an actor's positions are not links to the audit trail");
    let scroll = "document.querySelector('section.decision').scrollIntoView()";
    driver.call("POST", "/execute/sync", Some(json!({"script": scroll, "args": []})));
    driver.screenshot("console-run-decisions.png");

    viewer_console(&driver, &seeded);

    // Signing out ends the session: the pages ask for a token again.
    driver.click_to(&driver.find("xpath", "//button[text()='Sign out']"), "/admin/login");
    driver.go(&format!("{base}/admin/operations"));
    assert!(driver.source().contains("401"), "signed out, no page");

    driver.go(&format!("{base}/admin/login"));
    driver.type_into(&driver.find("css selector", "input[name=token]"), &service);
    driver.click_to(&driver.find("css selector", "button[type=submit]"), "/admin/operations");
    service_console(&driver, &seeded);
}

/// Sets a `datetime-local` field as a person picking a time would: typing
/// into one depends on the browser's locale, so the value is set directly.
fn set_time(driver: &Driver, name: &str, value: &str) {
    let script = format!("document.querySelector('form.filters input[name={name}]').value = arguments[0];");
    driver.call("POST", "/execute/sync", Some(json!({"script": script, "args": [value]})));
}

/// What u1, an actor, does beyond the list and a run: a time range, the
/// auto-refresh, the search by run id and the inbox.
fn viewer_console(driver: &Driver, seeded: &Seeded) {
    driver.click_to(&driver.find("css selector", "nav.console a[href='/admin/operations']"), "/admin/operations");
    let list = driver.source();
    assert!(!list.contains(r#"href="/admin/audit""#), "no audit trail for an actor");

    // A time range from the form, kept by "Older operations".
    set_time(driver, "from", "2000-01-01T00:00:00");
    driver.type_into(&driver.find("css selector", "input[name=limit]"), "2");
    let submit = driver.find("css selector", "form.filters button[type=submit]");
    // A browser may drop zero seconds from the field's value.
    driver.click_until(&submit, &|url| url.contains("from=2000-01-01T00%3A00") && url.ends_with("&limit=2"));
    assert_eq!(rows(&driver.source()).len(), 2, "the range holds every run, two a page");
    let kept = |url: &str| url.contains("from=2000-01-01T00%3A00%3A00Z") && url.contains("cursor=");
    driver.click_until(&driver.find("link text", "Older operations"), &kept);
    assert_eq!(rows(&driver.source()).len(), 2, "page 2 of the range");
    driver.screenshot("console-list-range.png");

    // Auto-refresh: a link adds `refresh=30`, the server answers with a Refresh header.
    driver.click_until(&driver.find("partial link text", "Refresh every"), &|url| url.contains("refresh=30"));
    assert!(driver.selected("input[name=refresh]"), "the form shows the page refreshing");
    assert!(driver.source().contains("This page reloads every 30 s"));
    driver.click_until(&driver.find("link text", "Stop refreshing"), &|url| !url.contains("refresh="));

    // The search goes straight to a run, or answers "no such run".
    driver.type_into(&driver.find("css selector", "form.search input[name=run]"), &seeded.failed);
    let go = driver.find("css selector", "form.search button[type=submit]");
    driver.click_to(&go, &format!("/admin/operations/{}", seeded.failed));
    assert!(driver.source().contains(FAILURE_MESSAGE), "the failed run's page");
    driver.type_into(&driver.find("css selector", "form.search input[name=run]"), &seeded.running);
    driver.click_until(&driver.find("css selector", "form.search button[type=submit]"), &|url| {
        url.contains("/admin/search?run=")
    });
    assert!(driver.source().contains("no such run"), "a run on t2 is hidden from u1, as an unknown one");

    // The inbox: u1's notifications, newest first, unread marked.
    driver.click_to(&driver.find("css selector", "nav.console a[href='/admin/inbox']"), "/admin/inbox");
    let inbox = driver.source();
    assert!(inbox.contains("Inbox of u1") && inbox.contains(r#"<tr class="unread""#), "{inbox}");
    let notified: Vec<String> =
        inbox.split(" data-run=\"").skip(1).map(|rest| rest.split('"').next().unwrap().to_owned()).collect();
    let (blocked, failed) =
        (notified.iter().position(|r| *r == seeded.blocked), notified.iter().position(|r| *r == seeded.failed));
    assert!(blocked.unwrap() < failed.unwrap(), "newest first: {notified:?}");
    driver.screenshot("console-inbox.png");

    // One a page from the form, then "Older notifications" to the second.
    driver.type_into(&driver.find("css selector", "form.filters input[name=limit]"), "1");
    driver
        .click_until(&driver.find("css selector", "form.filters button[type=submit]"), &|url| url.contains("limit=1"));
    let first = driver.source();
    assert!(first.contains(&format!(r#"data-run="{}""#, notified[0])) && first.matches(" data-run=\"").count() == 1);
    driver.click_until(&driver.find("link text", "Older notifications"), &|url| url.contains("cursor="));
    let second = driver.source();
    assert!(second.contains(&format!(r#"data-run="{}""#, notified[1])), "{second}");
    assert_eq!(second.matches(" data-run=\"").count(), 1, "still one a page");
}

/// What a service session adds: a running run's lease, a check's position
/// followed to its audit entry, the audit trail's filters, the authority
/// state as of a position.
fn service_console(driver: &Driver, seeded: &Seeded) {
    driver.type_into(&driver.find("css selector", "form.search input[name=run]"), &seeded.running);
    let go = driver.find("css selector", "form.search button[type=submit]");
    driver.click_to(&go, &format!("/admin/operations/{}", seeded.running));
    let running = driver.source();
    assert!(running.contains(r#"data-lease="live""#) && running.contains("Lease of attempt 1"), "{running}");
    driver.screenshot("console-run-lease.png");

    driver.type_into(&driver.find("css selector", "form.search input[name=run]"), &seeded.blocked);
    let go = driver.find("css selector", "form.search button[type=submit]");
    driver.click_to(&go, &format!("/admin/operations/{}", seeded.blocked));
    let revocation = format!("section[data-attempt='1'] a.position[href='/admin/audit?as_of={}']", seeded.revoked_at);
    driver.click_to(&driver.find("css selector", &revocation), &format!("/admin/audit?as_of={}", seeded.revoked_at));
    let audit = driver.source();
    let marked = format!(r#"<tr class="as-of" data-position="{}""#, seeded.revoked_at);
    assert!(audit.contains(&marked) && audit.contains("capability_revoked"), "{audit}");
    driver.screenshot("console-audit-entry.png");

    // The audit trail of one run, through its filter form.
    driver.click_to(&driver.find("css selector", "nav.console a[href='/admin/audit']"), "/admin/audit");
    driver.type_into(&driver.find("css selector", "form.filters input[name=run_id]"), &seeded.blocked);
    let filter = driver.find("css selector", "form.filters button[type=submit]");
    driver.click_until(&filter, &|url| url.contains(&format!("run_id={}", seeded.blocked)));
    let trail = driver.source();
    assert!(trail.contains("run_blocked") && trail.contains("legitimacy_evaluated"), "{trail}");
    let revocation_row = format!(r#"data-position="{}""#, seeded.revoked_at);
    assert!(!trail.contains(&revocation_row), "only the run's entries");
    driver.screenshot("console-audit.png");

    // The authority state just before the revocation: u1 still held tenant.sync.
    driver.click_to(&driver.find("css selector", "nav.console a[href='/admin/authority']"), "/admin/authority");
    assert!(!driver.source().contains("u1: tenant.sync"), "revoked as of the head");
    let before = (seeded.revoked_at - 1).to_string();
    driver.type_into(&driver.find("css selector", "form.filters input[name=as_of]"), &before);
    driver.type_into(&driver.find("css selector", "form.filters input[name=tenant_id]"), "t1");
    let show = driver.find("css selector", "form.filters button[type=submit]");
    driver.click_until(&show, &|url| url.contains(&format!("as_of={before}")));
    let authority = driver.source();
    assert!(authority.contains("u1: tenant.sync") && authority.contains("Authority as of position"), "{authority}");
    driver.screenshot("console-authority.png");
}
