//! Leases, heartbeats, fencing and cancel over HTTP (issue 10, parts 1
//! and 2). Time is the log's clock, moved on by the test; the reaper's pass
//! is the ledger method the server's reaper task calls every second.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{actor, start_body, Api};

/// A clock that reads the real time plus an offset the test moves on.
#[derive(Clone, Default)]
struct TestClock(Arc<AtomicI64>);

impl TestClock {
    fn clock(&self) -> opledger::log::Clock {
        let offset = Arc::clone(&self.0);
        Arc::new(move || chrono::Utc::now() + chrono::Duration::seconds(offset.load(Ordering::SeqCst)))
    }

    fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

async fn api() -> (Api, TestClock) {
    let clock = TestClock::default();
    (Api::seeded_with_clock(clock.clock()).await, clock)
}

/// Registers an operation type with its own lease and attempts.
async fn leased_type(api: &Api, name: &str, lease_seconds: u32, max_attempts: u32) {
    api.authority(json!([{"type": "operation_type_registered", "operation_type": name,
        "required_capability": "tenant.sync", "provider_backed": true, "writes": false,
        "system_authority_allowed": true, "max_attempts": max_attempts, "lease_seconds": lease_seconds}]))
        .await;
}

/// Starts and begins a run; answers with its id and the begin answer.
async fn running(api: &Api, operation_type: &str) -> (String, Value) {
    let run = api.start_accepted(&start_body(operation_type, "t1", actor("u1"))).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let begun = api.begin(&id).await.expect(StatusCode::OK);
    assert_eq!(begun["run"]["status"], "running");
    (id, begun)
}

fn time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value.as_str().and_then(|text| text.parse().ok()).unwrap_or_else(|| panic!("not a time: {value}"))
}

async fn reap(api: &Api) -> usize {
    api.state.ledger().unwrap().reap_lapsed_leases().await.unwrap().len()
}

#[tokio::test]
async fn begin_answers_with_the_attempt_and_its_lease_and_heartbeats_append_only_past_half() {
    let (api, clock) = api().await;
    leased_type(&api, "leased_sync", 60, 3).await;
    let (id, begun) = running(&api, "leased_sync").await;
    assert_eq!(begun["run"]["attempt"], 1);
    let started = time(&begun["run"]["started_at"]);
    let expires = time(&begun["run"]["lease_expires_at"]);
    assert_eq!(expires - started, chrono::Duration::seconds(60));

    let head = api.head();
    let uri = format!("/v1/runs/{id}/heartbeat");
    let early = api.post(&uri, &api.service, &json!({})).await.expect(StatusCode::OK);
    assert_eq!(time(&early["run"]["lease_expires_at"]), expires, "lease not half used: nothing renewed");
    assert_eq!(api.head(), head, "a heartbeat early in the lease appends nothing");

    clock.advance(40);
    let renewed = api.post(&uri, &api.service, &json!({"attempt": 1})).await.expect(StatusCode::OK);
    assert!(time(&renewed["run"]["lease_expires_at"]) > expires + chrono::Duration::seconds(30));
    assert_eq!(api.head(), head + 1, "past half the lease a heartbeat appends lease_renewed");
    assert_eq!(api.events().await.last().unwrap()["type"], "lease_renewed");

    clock.advance(30);
    assert_eq!(reap(&api).await, 0, "the renewed lease holds past the first expiry");
    let detail = api.get(&format!("/v1/runs/{id}"), &api.service).await.expect(StatusCode::OK);
    assert_eq!(detail["run"]["status"], "running");
}

#[tokio::test]
async fn a_lapsed_lease_requeues_and_the_lost_workers_late_calls_are_fenced() {
    let (api, clock) = api().await;
    let (id, _) = running(&api, "inventory_sync").await;
    clock.advance(299);
    assert_eq!(reap(&api).await, 0, "not lapsed before the lease ends");
    clock.advance(2);
    assert_eq!(reap(&api).await, 1);
    let types: Vec<Value> = api.events().await.iter().rev().take(2).map(|e| e["type"].clone()).collect();
    assert_eq!(types, [json!("run_requeued"), json!("attempt_abandoned")]);
    let detail = api.get(&format!("/v1/runs/{id}"), &api.service).await.expect(StatusCode::OK);
    assert_eq!((&detail["run"]["status"], &detail["run"]["attempt"]), (&json!("queued"), &json!(2)));
    let summaries: Vec<&str> =
        detail["timeline"].as_array().unwrap().iter().filter_map(|e| e["summary"].as_str()).collect();
    assert!(summaries.contains(&"attempt 1 abandoned: worker lost, lease expired"), "{summaries:?}");

    let begun = api.begin(&id).await.expect(StatusCode::OK);
    assert_eq!(begun["decision"]["attempt"], 2, "the next begin decides afresh");

    let late = |path: &str| format!("/v1/runs/{id}/{path}");
    let counts = json!({"summary_counts": {"processed": 1}, "attempt": 1}).to_string().into_bytes();
    let done = json!({"outcome": "succeeded", "attempt": 1}).to_string().into_bytes();
    let beat = json!({"attempt": 1}).to_string().into_bytes();
    let (service, conflict) = (Some(api.service.as_str()), StatusCode::CONFLICT);
    api.refused(Method::POST, &late("progress"), service, Some(counts), conflict, "lease_expired").await;
    api.refused(Method::POST, &late("heartbeat"), service, Some(beat), conflict, "lease_expired").await;
    api.refused(Method::POST, &late("complete"), service, Some(done), conflict, "lease_expired").await;

    let finished = api.complete(&id, &json!({"outcome": "succeeded", "attempt": 2})).await.expect(StatusCode::OK);
    assert_eq!(finished["run"]["outcome"], "succeeded", "the running attempt is not ended by the lost worker");
    let report = api.get("/v1/verify", &api.service).await.expect(StatusCode::OK);
    assert_eq!((&report["ok"], &report["abandonments_checked"]), (&json!(true), &json!(1)), "{report}");
}

#[tokio::test]
async fn a_lapsed_last_attempt_fails_as_worker_lost_everywhere_and_frees_the_scope() {
    let (api, clock) = api().await;
    leased_type(&api, "once_sync", 5, 1).await;
    let (id, _) = running(&api, "once_sync").await;
    let busy = api.start(&start_body("inventory_sync", "t1", actor("u1"))).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "the running attempt holds the scope");
    clock.advance(6);
    assert_eq!(reap(&api).await, 1);

    let detail = api.get(&format!("/v1/runs/{id}"), &api.service).await.expect(StatusCode::OK);
    assert_eq!((&detail["run"]["status"], &detail["run"]["outcome"]), (&json!("completed"), &json!("failed")));
    assert_eq!(detail["run"]["failure"]["code"], "worker_lost");
    let late = json!({"outcome": "succeeded", "attempt": 1}).to_string().into_bytes();
    let uri = format!("/v1/runs/{id}/complete");
    api.refused(Method::POST, &uri, Some(&api.service), Some(late), StatusCode::CONFLICT, "lease_expired").await;

    let inbox = api.get("/v1/notifications?actor_id=u1", &api.service).await.expect(StatusCode::OK);
    let note = &inbox["notifications"][0];
    assert_eq!((&note["title"], &note["outcome"]), (&json!("once_sync failed"), &json!("failed")), "{note}");
    assert!(note["body"].as_str().unwrap().contains("lease expired"), "{note}");
    let audit = api.get("/v1/audit?action=attempt_abandoned", &api.service).await.expect(StatusCode::OK);
    let entry = &audit["entries"][0];
    assert!(entry["summary"].as_str().unwrap().contains("abandoned: the worker stopped reporting"), "{entry}");

    api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
}

#[tokio::test]
async fn cancel_ends_a_queued_run_with_its_own_outcome_everywhere() {
    let (api, _) = api().await;
    let run = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let id = run["id"].as_str().unwrap();
    let uri = format!("/v1/runs/{id}/cancel");
    let body = json!({"cancelled_by": actor("ops"), "reason": "wrong tenant, password=hunter2"});
    let cancelled = api.post(&uri, &api.service, &body).await.expect(StatusCode::OK);
    assert_eq!((&cancelled["run"]["status"], &cancelled["run"]["outcome"]), (&json!("completed"), &json!("cancelled")));
    let everything = api.events().await.iter().map(Value::to_string).collect::<String>();
    assert!(!everything.contains("hunter2"), "the reason is sanitized before the log");

    let again = json!({"cancelled_by": actor("ops")}).to_string().into_bytes();
    api.refused(Method::POST, &uri, Some(&api.service), Some(again), StatusCode::CONFLICT, "illegal_transition").await;

    let listed = api.get("/v1/runs?outcome=cancelled", &api.service).await.expect(StatusCode::OK);
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1);
    let failed = api.get("/v1/runs?outcome=failed", &api.service).await.expect(StatusCode::OK);
    assert_eq!(failed["runs"], json!([]), "cancelled is not failed");
    let list = api.get("/admin/operations?outcome=cancelled", &api.service).await;
    assert!(list.text().contains(r#"data-outcome="cancelled""#), "its own badge: {}", list.text());
    let inbox = api.get("/v1/notifications?actor_id=u1", &api.service).await.expect(StatusCode::OK);
    let note = &inbox["notifications"][0];
    assert_eq!((&note["title"], &note["outcome"]), (&json!("inventory_sync cancelled"), &json!("cancelled")));
    assert!(note["body"].as_str().unwrap().contains("cancelled by actor ops"), "{note}");
    let audit = api.get("/v1/audit?action=run_cancelled&actor_id=ops", &api.service).await.expect(StatusCode::OK);
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit}");
    let page = api.get(&format!("/admin/operations/{id}"), &api.service).await;
    assert!(page.text().contains("Cancelled by actor ops: wrong tenant"), "the Monitoring page says who and why");

    api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
}

#[tokio::test]
async fn a_running_worker_learns_of_the_cancel_as_run_cancelled() {
    let (api, _) = api().await;
    let (id, _) = running(&api, "inventory_sync").await;
    api.post(&format!("/v1/runs/{id}/cancel"), &api.service, &json!({"cancelled_by": {"kind": "system"}}))
        .await
        .expect(StatusCode::OK);
    let (service, conflict) = (Some(api.service.as_str()), StatusCode::CONFLICT);
    for (path, body) in [
        ("progress", json!({"summary_counts": {}, "attempt": 1})),
        ("heartbeat", json!({})),
        ("complete", json!({"outcome": "succeeded"})),
    ] {
        let uri = format!("/v1/runs/{id}/{path}");
        api.refused(Method::POST, &uri, service, Some(body.to_string().into_bytes()), conflict, "run_cancelled").await;
    }
    let report = api.get("/v1/verify", &api.service).await.expect(StatusCode::OK);
    assert_eq!((&report["ok"], &report["cancellations_checked"]), (&json!(true), &json!(1)), "{report}");
}

#[tokio::test]
async fn cancel_admits_the_next_follow_up_of_a_batch() {
    let (api, _) = api().await;
    let batch = json!({"operation_types": ["inventory_sync", "backup_sync"], "tenant_id": "t1",
        "initiator": actor("u1")});
    let answer = api.post("/v1/runs/batch", &api.service, &batch).await.expect(StatusCode::CREATED);
    let first = answer["run"]["id"].as_str().unwrap();
    api.post(&format!("/v1/runs/{first}/cancel"), &api.service, &json!({"cancelled_by": actor("ops")}))
        .await
        .expect(StatusCode::OK);
    let queued = api.get("/v1/runs?operation_type=backup_sync", &api.service).await.expect(StatusCode::OK);
    assert_eq!(queued["runs"][0]["status"], "queued", "{queued}");
}

#[tokio::test]
async fn the_catalog_bounds_lease_seconds_and_unknown_runs_are_404() {
    let (api, _) = api().await;
    let change = json!({"changed_by": actor("u-admin"), "changes": [{"type": "operation_type_registered",
        "operation_type": "short", "required_capability": "tenant.sync", "provider_backed": false,
        "writes": false, "system_authority_allowed": true, "max_attempts": 1, "lease_seconds": 4}]});
    let body = Some(change.to_string().into_bytes());
    let (service, bad) = (Some(api.service.as_str()), StatusCode::BAD_REQUEST);
    api.refused(Method::POST, "/v1/authority", service, body, bad, "invalid_authority_change").await;
    let missing = format!("/v1/runs/{}/heartbeat", uuid::Uuid::now_v7());
    api.refused(Method::POST, &missing, service, Some(b"{}".to_vec()), StatusCode::NOT_FOUND, "unknown_run").await;
    let cancel = format!("/v1/runs/{}/cancel", uuid::Uuid::now_v7());
    let body = json!({"cancelled_by": actor("ops")}).to_string().into_bytes();
    api.refused(Method::POST, &cancel, service, Some(body), StatusCode::NOT_FOUND, "unknown_run").await;
}
