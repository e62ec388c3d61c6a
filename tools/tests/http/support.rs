//! The router on a fresh data directory, driven with `oneshot`, and the
//! authority fixture every test starts from.
//!
//! Every request made through [`Api::request`] is checked against the parts
//! of API.md that hold for every route: never a 5xx, and every 4xx of a JSON
//! route carries `{"error": {"code", "message"}}`.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use opledger::{Durability, LogOptions};
use opledger_tools::server::{router, AppState};
use opledger_tools::tokens::Grant;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Over the 1 MiB request body limit of API.md.
pub const OVERSIZED_BODY_BYTES: usize = 1024 * 1024 + 1;

/// The tenant default connection of t1.
pub const C1: &str = "c1";

/// An answer of the router.
#[derive(Debug)]
pub struct Reply {
    pub method: Method,
    pub uri: String,
    pub status: StatusCode,
    pub content_type: String,
    pub headers: axum::http::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|error| {
            panic!("{} {} → {}: body is not JSON ({error}): {}", self.method, self.uri, self.status, self.text())
        })
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{} {}: body {}", self.method, self.uri, self.text());
        self.json()
    }

    /// Asserts an error of API.md: this status, this `error.code`, a message.
    #[track_caller]
    pub fn expect_error(&self, status: StatusCode, code: &str) -> Value {
        let body = self.expect(status);
        assert_eq!(body["error"]["code"], code, "{} {}: body {body}", self.method, self.uri);
        body
    }
}

/// Checks what API.md says of every answer, and that the answer is one the
/// OpenAPI document describes (its status, and a JSON body's schema).
fn check_contract(reply: &Reply) {
    if let Err(why) = crate::openapi_check::check(
        reply.method.as_str(),
        &reply.uri,
        reply.status.as_u16(),
        &reply.content_type,
        &reply.bytes,
    ) {
        panic!("docs/openapi.json does not describe this answer: {why}");
    }
    assert!(
        !reply.status.is_server_error(),
        "no 5xx anywhere: {} {} → {} {}",
        reply.method,
        reply.uri,
        reply.status,
        reply.text()
    );
    if reply.status.is_client_error() && !reply.uri.starts_with("/admin/") {
        let shape = serde_json::from_slice::<Value>(&reply.bytes).ok().filter(|body| {
            let code = body["error"]["code"].as_str().unwrap_or("");
            let message = body["error"]["message"].as_str().unwrap_or("");
            !code.is_empty()
                && code.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
                && !message.is_empty()
        });
        assert!(
            shape.is_some(),
            "API.md: 4xx bodies are {{\"error\": {{\"code\": \"snake_case\", \"message\": \"…\"}}}}: \
             {} {} → {} with content-type {:?} and body {:?}",
            reply.method,
            reply.uri,
            reply.status,
            reply.content_type,
            reply.text()
        );
    }
}

pub fn request(method: Method, uri: &str, token: Option<&str>, body: Option<Vec<u8>>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(bytes) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    builder.body(body).unwrap()
}

/// A server state on its own temporary data directory (and its log where
/// the test run puts it: `backend.rs`), with the projector following the
/// log as `opledger serve` runs it, and a service token.
pub struct Api {
    pub state: AppState,
    app: Router,
    pub service: String,
    follower: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
    _log: crate::backend::TestLog,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.follower.abort();
        self.state.ledger().unwrap().log().close();
    }
}

impl Api {
    /// An empty ledger.
    pub async fn empty() -> Api {
        Api::empty_with_clock(std::sync::Arc::new(chrono::Utc::now)).await
    }

    /// An empty ledger whose log reads `clock` (lease tests move time on).
    pub async fn empty_with_clock(clock: opledger::log::Clock) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            durability: Durability::Flush,
            cache_capacity_bytes: 4 * 1024 * 1024,
            clock,
            ..LogOptions::default()
        };
        let log = crate::backend::TestLog::fresh();
        let state = log.open_state(dir.path(), options);
        let follower = tokio::spawn({
            let projector = state.projector().unwrap();
            async move {
                let _ = projector.follow().await;
            }
        });
        let (service, _) = state.tokens.create(Grant::Service { name: "tests".into() }).unwrap();
        let app = router(state.clone());
        Api { state, app, service, follower, _dir: dir, _log: log }
    }

    /// The ledger with the authority fixture ([`fixture_changes`]) recorded.
    pub async fn seeded() -> Api {
        Api::seed(Api::empty().await).await
    }

    /// [`Api::seeded`] on a log that reads `clock`.
    pub async fn seeded_with_clock(clock: opledger::log::Clock) -> Api {
        Api::seed(Api::empty_with_clock(clock).await).await
    }

    async fn seed(api: Api) -> Api {
        let body = json!({"changed_by": {"kind": "actor", "id": "u-admin"}, "changes": fixture_changes()});
        let reply = api.post("/v1/authority", &api.service, &body).await;
        let answer = reply.expect(StatusCode::OK);
        let count = fixture_changes().as_array().map_or(0, Vec::len) as u64;
        assert_eq!(answer, json!({"first_position": 1, "last_position": count}));
        api
    }

    pub fn actor(&self, actor_id: &str) -> String {
        self.state.tokens.create(Grant::Actor { actor_id: actor_id.into() }).unwrap().0
    }

    /// The log head position: what "nothing appended" is checked on.
    pub fn head(&self) -> u64 {
        self.state.ledger().unwrap().log().head().position
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let method = request.method().clone();
        let uri = request.uri().to_string();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("").to_owned();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        let reply = Reply { method, uri, status, content_type, headers, bytes };
        check_contract(&reply);
        reply
    }

    pub async fn request(&self, method: Method, uri: &str, token: Option<&str>, body: Option<Vec<u8>>) -> Reply {
        self.send(request(method, uri, token, body)).await
    }

    pub async fn get(&self, uri: &str, token: &str) -> Reply {
        self.request(Method::GET, uri, Some(token), None).await
    }

    pub async fn post(&self, uri: &str, token: &str, body: &Value) -> Reply {
        self.request(Method::POST, uri, Some(token), Some(body.to_string().into_bytes())).await
    }

    /// Sends a request that must be refused with `status` and `code`, and
    /// checks that nothing was appended.
    #[track_caller]
    pub fn refused<'a>(
        &'a self,
        method: Method,
        uri: &'a str,
        token: Option<&'a str>,
        body: Option<Vec<u8>>,
        status: StatusCode,
        code: &'a str,
    ) -> impl std::future::Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let before = self.head();
            let reply = self.request(method, uri, token, body).await;
            assert_eq!(reply.status, status, "{} {} (from {caller}): body {}", reply.method, reply.uri, reply.text());
            let body = reply.json();
            assert_eq!(body["error"]["code"], code, "{} {} (from {caller}): {body}", reply.method, reply.uri);
            assert_eq!(self.head(), before, "{} {} (from {caller}) was refused but appended", reply.method, uri);
            body
        }
    }

    /// A start as API.md shows it.
    pub async fn start(&self, body: &Value) -> Reply {
        self.post("/v1/runs", &self.service, body).await
    }

    /// Starts and expects `accepted`; returns the run.
    pub async fn start_accepted(&self, body: &Value) -> Value {
        let answer = self.start(body).await.expect(StatusCode::CREATED);
        assert_eq!(answer["result"], "accepted", "{answer}");
        answer["run"].clone()
    }

    pub async fn begin(&self, run_id: &str) -> Reply {
        self.post(&format!("/v1/runs/{run_id}/begin"), &self.service, &json!({})).await
    }

    pub async fn complete(&self, run_id: &str, body: &Value) -> Reply {
        self.post(&format!("/v1/runs/{run_id}/complete"), &self.service, body).await
    }

    pub async fn authority(&self, changes: Value) -> Value {
        let body = json!({"changed_by": {"kind": "actor", "id": "u-admin"}, "changes": changes});
        self.post("/v1/authority", &self.service, &body).await.expect(StatusCode::OK)
    }

    /// The whole log through `/v1/events`.
    pub async fn events(&self) -> Vec<Value> {
        let body = self.get("/v1/events?from=1&limit=1000", &self.service).await.expect(StatusCode::OK);
        body["events"].as_array().cloned().unwrap_or_default()
    }
}

/// Every write route of a run's life with a body that is valid for it
/// (on `run`).
pub fn write_routes(run: &str) -> Vec<(String, Value)> {
    vec![
        (
            "/v1/authority".to_owned(),
            json!({"changed_by": {"kind": "system"}, "changes": [{"type": "workspace_registered", "workspace_id": "w9"}]}),
        ),
        ("/v1/runs".to_owned(), start_body("report", "t1", actor("u1"))),
        ("/v1/runs/batch".to_owned(), json!({"operation_types": ["report"], "tenant_id": "t1", "initiator": system()})),
        (format!("/v1/runs/{run}/begin"), json!({})),
        (format!("/v1/runs/{run}/progress"), json!({"summary_counts": {"total": 1}})),
        (format!("/v1/runs/{run}/complete"), json!({"outcome": "succeeded"})),
    ]
}

/// A start request of API.md.
pub fn start_body(operation_type: &str, tenant_id: &str, initiator: Value) -> Value {
    json!({"operation_type": operation_type, "tenant_id": tenant_id, "initiator": initiator, "context": {}})
}

pub fn actor(id: &str) -> Value {
    json!({"kind": "actor", "id": id})
}

pub fn system() -> Value {
    json!({"kind": "system"})
}

/// Workspaces w1 (tenants t1, t2) and w2 (tenant t3).
///
/// - `u1`: member of w1 and t1, holds `tenant.sync` and `operations.view` on t1 (the initiator);
/// - `viewer`: member of w1 and t1 with `operations.view`;
/// - `member`: member of w1 and t1 without `operations.view`;
/// - `outsider`: member of w1 only;
/// - `stranger`: member of nothing;
/// - `u3`: member of w2 and t3 with `tenant.sync` and `operations.view`.
///
/// Connections c1 (t1's default), c2 (t1), c3 (t3's default), all ready.
/// Operation types: `inventory_sync` and `backup_sync` (provider-backed,
/// read-only), `report` (not provider-backed), `policy_push`
/// (provider-backed, writes: t1's write gate is closed).
pub fn fixture_changes() -> Value {
    let member = |workspace: &str, tenant: &str, actor: &str| {
        vec![
            json!({"type": "workspace_member_added", "workspace_id": workspace, "actor_id": actor}),
            json!({"type": "tenant_member_added", "tenant_id": tenant, "actor_id": actor}),
        ]
    };
    let grant = |tenant: &str, actor: &str, capability: &str| json!({"type": "capability_granted", "tenant_id": tenant, "actor_id": actor, "capability": capability});
    let operation = |name: &str, provider_backed: bool, writes: bool| {
        json!({"type": "operation_type_registered", "operation_type": name, "required_capability": "tenant.sync",
               "provider_backed": provider_backed, "writes": writes, "system_authority_allowed": true,
               "max_attempts": 3})
    };
    let mut changes = vec![
        json!({"type": "workspace_registered", "workspace_id": "w1"}),
        json!({"type": "workspace_registered", "workspace_id": "w2"}),
        json!({"type": "tenant_registered", "tenant_id": "t1", "workspace_id": "w1", "lifecycle": "active"}),
        json!({"type": "tenant_registered", "tenant_id": "t2", "workspace_id": "w1", "lifecycle": "active"}),
        json!({"type": "tenant_registered", "tenant_id": "t3", "workspace_id": "w2", "lifecycle": "active"}),
    ];
    changes.extend(member("w1", "t1", "u1"));
    changes.push(grant("t1", "u1", "tenant.sync"));
    changes.push(grant("t1", "u1", "operations.view"));
    changes.extend(member("w1", "t1", "viewer"));
    changes.push(grant("t1", "viewer", "operations.view"));
    changes.extend(member("w1", "t1", "member"));
    changes.push(json!({"type": "workspace_member_added", "workspace_id": "w1", "actor_id": "outsider"}));
    changes.extend(member("w2", "t3", "u3"));
    changes.push(grant("t3", "u3", "tenant.sync"));
    changes.push(grant("t3", "u3", "operations.view"));
    changes.extend([
        json!({"type": "provider_connection_registered", "connection_id": "c1", "tenant_id": "t1", "status": "ready"}),
        json!({"type": "provider_connection_registered", "connection_id": "c2", "tenant_id": "t1", "status": "ready"}),
        json!({"type": "provider_connection_registered", "connection_id": "c3", "tenant_id": "t3", "status": "ready"}),
        json!({"type": "default_provider_connection_set", "tenant_id": "t1", "connection_id": "c1"}),
        json!({"type": "default_provider_connection_set", "tenant_id": "t3", "connection_id": "c3"}),
        operation("inventory_sync", true, false),
        operation("backup_sync", true, false),
        operation("report", false, false),
        operation("policy_push", true, true),
    ]);
    Value::Array(changes)
}

/// The fields of a Run in API.md.
pub const RUN_FIELDS: [&str; 18] = [
    "id",
    "operation_type",
    "tenant_id",
    "workspace_id",
    "initiator",
    "authority_mode",
    "status",
    "outcome",
    "provider_connection_id",
    "attempts",
    "latest_decision",
    "reason_code",
    "denial_class",
    "next_step",
    "summary_counts",
    "queued_at",
    "started_at",
    "completed_at",
];

/// The fields of an Event in API.md.
pub const EVENT_FIELDS: [&str; 8] =
    ["position", "id", "stream", "stream_version", "type", "recorded_at", "data", "hash"];

/// The fields of a Decision in API.md.
pub const DECISION_FIELDS: [&str; 8] = [
    "attempt",
    "outcome",
    "authority_mode",
    "denial_class",
    "reason_code",
    "retryable",
    "checks",
    "authority_position",
];

#[track_caller]
pub fn assert_fields(value: &Value, fields: &[&str], what: &str) {
    let object = value.as_object().unwrap_or_else(|| panic!("{what} is not an object: {value}"));
    for field in fields {
        assert!(object.contains_key(*field), "{what} lacks {field:?}: {value}");
    }
}

#[track_caller]
pub fn assert_run(run: &Value) {
    assert_fields(run, &RUN_FIELDS, "Run");
    assert!(uuid::Uuid::parse_str(run["id"].as_str().unwrap_or("")).is_ok(), "run ids are UUIDs: {run}");
    for time in ["queued_at", "started_at", "completed_at"] {
        if let Some(text) = run[time].as_str() {
            assert!(chrono::DateTime::parse_from_rfc3339(text).is_ok(), "{time} is RFC 3339: {text}");
            assert!(text.ends_with('Z') || text.ends_with("+00:00"), "{time} is UTC: {text}");
        }
    }
}

#[track_caller]
pub fn assert_event(event: &Value) {
    assert_fields(event, &EVENT_FIELDS, "Event");
    assert!(event["position"].as_u64().is_some_and(|p| p >= 1), "{event}");
    assert!(uuid::Uuid::parse_str(event["id"].as_str().unwrap_or("")).is_ok(), "event ids are UUIDs: {event}");
    assert!(event["stream"].is_string() && event["type"].is_string() && event["hash"].is_string(), "{event}");
    assert!(event["stream_version"].as_u64().is_some_and(|v| v >= 1), "{event}");
    let recorded = event["recorded_at"].as_str().unwrap_or("");
    assert!(chrono::DateTime::parse_from_rfc3339(recorded).is_ok(), "recorded_at is RFC 3339: {event}");
}

pub fn ids(runs: &Value) -> Vec<String> {
    runs.as_array()
        .map(|runs| runs.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}
