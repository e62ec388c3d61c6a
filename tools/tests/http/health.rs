//! Health and recovery through the router: `/livez`, `/readyz` (and
//! `/healthz`), a read that cannot be served fresh answers 503 within its
//! bound instead of waiting, and the supervisor reopens a stopped store.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use opledger::domain::model::Principal;
use opledger::{Durability, LogOptions};
use opledger_tools::server::{router, supervisor, AppState};

use crate::backend::TestLog;
use opledger_tools::tokens::Grant;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::support::{request, start_body, system};

/// A test fails instead of hanging when a request is not answered in this.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

fn options() -> LogOptions {
    LogOptions { durability: Durability::Flush, cache_capacity_bytes: 4 << 20, ..Default::default() }
}

/// One request through the router, bounded by [`ANSWER_WAIT`]; status and JSON body.
async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let request = request(method, uri, token, body.map(|b| b.to_string().into_bytes()));
    let response =
        tokio::time::timeout(ANSWER_WAIT, app.clone().oneshot(request)).await.expect("answered in time").unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn authority() -> Value {
    json!({"changed_by": {"kind": "system"}, "changes": crate::support::fixture_changes()})
}

#[tokio::test]
async fn livez_and_readyz_answer_ok_on_a_healthy_server() {
    let dir = tempfile::tempdir().unwrap();
    let log = TestLog::fresh();
    let state = log.open_state(dir.path(), options());
    let app = router(state.clone());
    let (status, live) = call(&app, Method::GET, "/livez", None, None).await;
    assert_eq!((status, live), (StatusCode::OK, json!({"status": "ok"})));
    for path in ["/readyz", "/healthz"] {
        let (status, ready) = call(&app, Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {ready}");
        assert_eq!(ready["status"], "ok");
        assert_eq!(ready["head"], state.ledger().unwrap().log().head().digest());
    }
    state.ledger().unwrap().log().close();
}

/// Nothing follows the log here, so the projections never reach the head:
/// a read answers 503 `projection_unavailable` once its bound has passed.
#[tokio::test]
async fn a_read_the_projections_cannot_serve_answers_503_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = TestLog::fresh();
    let mut state = log.open_state(dir.path(), options());
    state.read_projection_wait = Duration::from_millis(200);
    let (service, _) = state.tokens.create(Grant::Service { name: "tests".into() }).unwrap();
    let actor = state.tokens.create(Grant::Actor { actor_id: "u1".into() }).unwrap().0;
    let app = router(state.clone());
    let changes = serde_json::from_value(crate::support::fixture_changes()).unwrap();
    state.ledger().unwrap().record_authority(Principal::System, changes).await.unwrap();
    let run = "01a227d8-82f5-760f-9489-a55149e25288";
    for (uri, token) in [
        ("/v1/runs?tenant_id=t1".to_owned(), &service),
        (format!("/v1/runs/{run}"), &service),
        ("/v1/audit".to_owned(), &service),
        ("/v1/notifications".to_owned(), &actor),
    ] {
        let (status, body) = call(&app, Method::GET, &uri, Some(token), None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
        assert_eq!(body["error"]["code"], "projection_unavailable", "{uri}: {body}");
    }
    state.ledger().unwrap().log().close();
}

/// A ledger that stopped is not ready (and says why) while `/livez` stays
/// 200; the supervisor then reopens the store with the checks of a restart
/// and writes are taken again, with every acknowledged write still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_ledger_is_reopened_by_the_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let log = TestLog::fresh();
    let state = log.open_state(dir.path(), options());
    let (service, _) = state.tokens.create(Grant::Service { name: "tests".into() }).unwrap();
    let app = router(state.clone());
    let (status, _) = call(&app, Method::POST, "/v1/authority", Some(&service), Some(&authority())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, started) =
        call(&app, Method::POST, "/v1/runs", Some(&service), Some(&start_body("report", "t1", system()))).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let acknowledged = started["run"]["id"].as_str().unwrap().to_owned();

    // The log fails under the ledger: its next append stops it.
    state.ledger().unwrap().log().close();
    let (status, refused) =
        call(&app, Method::POST, "/v1/runs", Some(&service), Some(&start_body("report", "t2", system()))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert_eq!(refused["error"]["code"], "ledger_stopped");
    let (status, unready) = call(&app, Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{unready}");
    assert_eq!(unready["status"], "unavailable");
    assert_eq!(unready["reason"], "ledger_stopped");
    assert!(unready["detail"].as_str().unwrap().contains("closed"), "{unready}");
    assert_eq!(call(&app, Method::GET, "/livez", None, None).await.0, StatusCode::OK);

    let supervisor = tokio::spawn(supervisor::run(state.clone()));
    let started_again = wait_for_write(&app, &service).await;
    assert_eq!(started_again["result"], "accepted");
    let (status, ready) = call(&app, Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let (status, detail) = call(&app, Method::GET, &format!("/v1/runs/{acknowledged}"), Some(&service), None).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["run"]["id"], acknowledged.as_str());
    let (_, metrics) = call(&app, Method::GET, "/metrics", Some(&service), None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(metrics.contains("opledger_store_reopens_total 1"), "{metrics}");
    assert!(metrics.contains("opledger_storage_errors_total 1\n"), "the failure is counted once: {metrics}");
    assert!(metrics.contains("opledger_store_reopen_attempts_total "), "{metrics}");
    supervisor.abort();
    let _ = supervisor.await;
    close(&state);
}

/// Retries a start until the reopened store takes it ([`ANSWER_WAIT`] at most).
async fn wait_for_write(app: &Router, service: &str) -> Value {
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    loop {
        let body = start_body("report", "t3", system());
        let (status, answer) = call(app, Method::POST, "/v1/runs", Some(service), Some(&body)).await;
        if status == StatusCode::CREATED {
            return answer;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
        assert!(tokio::time::Instant::now() < deadline, "no write taken after the reopen: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn close(state: &AppState) {
    if let Ok(core) = state.core() {
        core.ledger.log().close();
    }
}

/// A client of the event stream that stopped reading must not keep the
/// failed store open: the reopen goes through while it still holds its
/// response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_event_stream_does_not_hold_up_the_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = TestLog::fresh();
    let state = log.open_state(dir.path(), options());
    let (service, _) = state.tokens.create(Grant::Service { name: "tests".into() }).unwrap();
    let app = router(state.clone());
    assert_eq!(call(&app, Method::POST, "/v1/authority", Some(&service), Some(&authority())).await.0, StatusCode::OK);
    // More events than the stream buffers for one subscriber.
    for i in 0..STALLED_STREAM_EVENTS {
        let mut body = start_body("report", "t1", system());
        body["dedupe_key"] = json!(format!("k{i}"));
        assert_eq!(call(&app, Method::POST, "/v1/runs", Some(&service), Some(&body)).await.0, StatusCode::CREATED);
    }
    let stream = app.clone().oneshot(request(Method::GET, "/v1/events/stream?from=1", Some(&service), None));
    let stalled = tokio::time::timeout(ANSWER_WAIT, stream).await.unwrap().unwrap();
    assert_eq!(stalled.status(), StatusCode::OK);

    state.ledger().unwrap().log().close();
    let body = start_body("report", "t2", system());
    assert_eq!(
        call(&app, Method::POST, "/v1/runs", Some(&service), Some(&body)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let supervisor = tokio::spawn(supervisor::run(state.clone()));
    let started = wait_for_write(&app, &service).await;
    assert_eq!(started["result"], "accepted");
    drop(stalled);
    supervisor.abort();
    let _ = supervisor.await;
    close(&state);
}

/// Past the event stream's per-subscriber buffer (256).
const STALLED_STREAM_EVENTS: usize = 400;
