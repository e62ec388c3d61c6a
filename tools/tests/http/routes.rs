//! Every route of API.md on its happy path: statuses and exact fields.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use http_body_util::BodyExt;
use opledger::domain::reason::{ReasonCode, StartNotice};
use serde_json::{json, Value};

use crate::support::{
    actor, assert_event, assert_fields, assert_run, fixture_changes, ids, request, start_body, system, Api, C1,
    DECISION_FIELDS,
};

#[tokio::test]
async fn authority_appends_every_change_and_answers_the_positions() {
    let api = Api::seeded().await;
    let recorded = fixture_changes().as_array().map_or(0, Vec::len) as u64;
    assert_eq!(api.head(), recorded);
    let events = api.events().await;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let expected: Vec<String> =
        fixture_changes().as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, expected, "one event per change, in order");

    let body = json!({"changed_by": {"kind": "system"}, "changes": [
        {"type": "write_gate_changed", "tenant_id": "t3", "open": true},
        {"type": "tenant_lifecycle_changed", "tenant_id": "t2", "lifecycle": "archived"},
        {"type": "provider_connection_status_changed", "connection_id": "c2", "status": "consent_required"},
        {"type": "workspace_member_removed", "workspace_id": "w1", "actor_id": "outsider"},
        {"type": "tenant_member_removed", "tenant_id": "t1", "actor_id": "member"},
        {"type": "capability_revoked", "tenant_id": "t1", "actor_id": "viewer", "capability": "operations.view"},
        {"type": "operation_type_updated", "operation_type": "report", "required_capability": "tenant.report",
         "provider_backed": false, "writes": false, "system_authority_allowed": false, "max_attempts": 2}
    ]});
    let answer = api.post("/v1/authority", &api.service, &body).await.expect(StatusCode::OK);
    assert_eq!(answer, json!({"first_position": recorded + 1, "last_position": recorded + 7}));
    assert_eq!(api.head(), recorded + 7);
}

#[tokio::test]
async fn starts_answer_accepted_deduped_scope_busy_and_blocked() {
    let api = Api::seeded().await;

    // accepted: 201 with the new run, its connection resolved to the tenant default and pinned.
    let reply = api.start(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let accepted = reply.expect(StatusCode::CREATED);
    assert_eq!(accepted["result"], "accepted");
    let run = &accepted["run"];
    assert_run(run);
    assert_eq!(run["operation_type"], "inventory_sync");
    assert_eq!(run["tenant_id"], "t1");
    assert_eq!(run["workspace_id"], "w1");
    assert_eq!(run["initiator"], actor("u1"));
    assert_eq!(run["authority_mode"], "actor_bound");
    assert_eq!(run["status"], "queued");
    assert_eq!(run["outcome"], "pending");
    assert_eq!(run["provider_connection_id"], C1);
    assert_eq!(run["attempts"], 0);
    assert!(run["queued_at"].is_string() && run["started_at"].is_null() && run["completed_at"].is_null());
    assert!(accepted["reason_code"].is_null() && accepted["next_step"].is_null(), "{accepted}");
    assert!(accepted.get("blocking_run").is_none_or(Value::is_null), "{accepted}");
    let first = run["id"].as_str().unwrap().to_owned();

    // deduped: 200 with the existing run; no new run.
    let deduped = api.start(&start_body("inventory_sync", "t1", actor("u1"))).await.expect(StatusCode::OK);
    assert_eq!(deduped["result"], "deduped");
    assert_run(&deduped["run"]);
    assert_eq!(deduped["run"]["id"], first.as_str());
    assert_eq!(deduped["next_step"], StartNotice::Deduped.next_step());

    // scope busy: 409, the blocking run, no new run, and the start answer shape.
    let busy = api.start(&start_body("backup_sync", "t1", actor("u1"))).await.expect(StatusCode::CONFLICT);
    assert_eq!(busy["result"], "scope_busy");
    assert_run(&busy["blocking_run"]);
    assert_eq!(busy["blocking_run"]["id"], first.as_str());
    assert!(busy.get("run").is_none_or(Value::is_null), "no new run on scope_busy: {busy}");
    assert_eq!(busy["next_step"], StartNotice::ScopeBusy.next_step());

    let all = api.get("/v1/runs", &api.service).await.expect(StatusCode::OK);
    assert_eq!(ids(&all["runs"]), vec![first.clone()], "deduped and scope_busy create no run");

    // blocked: 200 with the recorded terminal blocked start.
    let blocked = api.start(&start_body("inventory_sync", "t1", actor("member"))).await.expect(StatusCode::OK);
    assert_eq!(blocked["result"], "blocked");
    let run = &blocked["run"];
    assert_run(run);
    assert_eq!(run["status"], "completed");
    assert_eq!(run["outcome"], "blocked");
    assert_eq!(run["reason_code"], "capability_missing");
    assert_eq!(run["denial_class"], "capability");
    assert_eq!(run["next_step"], ReasonCode::CapabilityMissing.next_step());
    assert!(run["completed_at"].is_string(), "{run}");
    assert_eq!(blocked["reason_code"], "capability_missing");
    assert_eq!(blocked["next_step"], ReasonCode::CapabilityMissing.next_step());
    assert_ne!(run["id"], first.as_str());

    // A writing type meets t1's closed write gate; an explicit connection is pinned.
    let mut push = start_body("policy_push", "t1", actor("u1"));
    push["provider_connection_id"] = json!("c2");
    let gated = api.start(&push).await.expect(StatusCode::OK);
    assert_eq!(gated["result"], "blocked");
    assert_eq!(gated["reason_code"], "write_gate_closed");
    assert_eq!(gated["run"]["provider_connection_id"], "c2");

    // A system start, and a start on an explicit connection, dedupe key and context given.
    let scheduled = api.start_accepted(&start_body("report", "t2", system())).await;
    assert_eq!(scheduled["authority_mode"], "system_authority");
    assert!(scheduled["provider_connection_id"].is_null());
    let explicit = json!({"operation_type": "backup_sync", "tenant_id": "t1", "initiator": actor("u1"),
        "provider_connection_id": "c2", "context": {"note": "nightly"}, "dedupe_key": "k-1"});
    let pinned = api.start_accepted(&explicit).await;
    assert_eq!(pinned["provider_connection_id"], "c2");
}

#[tokio::test]
async fn a_batch_start_answers_the_first_start_with_its_follow_ups() {
    let api = Api::seeded().await;
    let body = json!({"operation_types": ["inventory_sync", "backup_sync", "report"], "tenant_id": "t1",
        "initiator": actor("u1")});
    let answer = api.post("/v1/runs/batch", &api.service, &body).await.expect(StatusCode::CREATED);
    assert_eq!(answer["result"], "accepted");
    assert_eq!(answer["follow_ups"], json!(["backup_sync", "report"]));
    assert_run(&answer["run"]);
    assert_eq!(answer["run"]["operation_type"], "inventory_sync");
    let first = answer["run"]["id"].as_str().unwrap().to_owned();

    // A second batch on the busy scope: the first start's answer, no follow-ups kept.
    let busy = api.post("/v1/runs/batch", &api.service, &body).await;
    let busy = busy.expect(StatusCode::OK);
    assert_eq!(busy["result"], "deduped", "the same identity is deduped first: {busy}");
    assert_eq!(busy["follow_ups"], json!([]));

    // When the first run ends, the next follow-up is admitted through the gate.
    api.begin(&first).await.expect(StatusCode::OK);
    api.complete(&first, &json!({"outcome": "succeeded"})).await.expect(StatusCode::OK);
    let next = api.get("/v1/runs?operation_type=backup_sync", &api.service).await.expect(StatusCode::OK);
    let runs = next["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{next}");
    assert_eq!(runs[0]["status"], "queued");
    assert_eq!(runs[0]["provider_connection_id"], C1);
}

#[tokio::test]
async fn begin_progress_and_complete_walk_the_lifecycle() {
    let api = Api::seeded().await;
    let run = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let id = run["id"].as_str().unwrap().to_owned();

    // Progress and complete before begin: the run is not running.
    let progress_uri = format!("/v1/runs/{id}/progress");
    let complete_uri = format!("/v1/runs/{id}/complete");
    let counts = json!({"summary_counts": {"total": 10, "processed": 4}}).to_string().into_bytes();
    let done = json!({"outcome": "succeeded"}).to_string().into_bytes();
    let service = Some(api.service.as_str());
    let conflict = StatusCode::CONFLICT;
    api.refused(Method::POST, &progress_uri, service, Some(counts.clone()), conflict, "illegal_transition").await;
    api.refused(Method::POST, &complete_uri, service, Some(done.clone()), conflict, "illegal_transition").await;

    let begun = api.begin(&id).await.expect(StatusCode::OK);
    assert_fields(&begun, &["decision", "run"], "begin answer");
    let decision = &begun["decision"];
    assert_fields(decision, &DECISION_FIELDS, "Decision");
    assert_eq!(decision["outcome"], "allowed");
    assert_eq!(decision["attempt"], 1);
    assert_eq!(decision["authority_mode"], "actor_bound");
    assert!(decision["reason_code"].is_null() && decision["denial_class"].is_null());
    assert_eq!(decision["retryable"], false);
    let checks = decision["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    for check in checks {
        assert_fields(check, &["check", "passed", "fact"], "check");
        assert_eq!(check["passed"], true, "{check}");
    }
    assert_eq!(decision["authority_position"], fixture_changes().as_array().unwrap().len());
    assert_run(&begun["run"]);
    assert_eq!(begun["run"]["status"], "running");
    assert_eq!(begun["run"]["attempts"], 1);
    assert!(begun["run"]["started_at"].is_string());
    assert_eq!(begun["run"]["latest_decision"]["outcome"], "allowed");

    // Begin again: 409, nothing appended.
    let begin_uri = format!("/v1/runs/{id}/begin");
    api.refused(Method::POST, &begin_uri, service, Some(b"{}".to_vec()), conflict, "illegal_transition").await;

    let report = json!({"summary_counts": {"total": 10, "processed": 4}});
    let progressed = api.post(&progress_uri, &api.service, &report).await.expect(StatusCode::OK);
    assert_run(&progressed["run"]);
    assert_eq!(progressed["run"]["summary_counts"], json!({"total": 10, "processed": 4}));
    assert_eq!(progressed["run"]["status"], "running");

    let completion = json!({"outcome": "partially_succeeded", "summary_counts": {"total": 10, "processed": 10,
        "succeeded": 8, "failed": 2}, "failure": {"code": "partial", "message": "2 items failed"}, "retryable": false});
    let completed = api.complete(&id, &completion).await.expect(StatusCode::OK);
    assert_fields(&completed, &["run"], "complete answer");
    let run = &completed["run"];
    assert_run(run);
    assert_eq!(run["status"], "completed");
    assert_eq!(run["outcome"], "partially_succeeded");
    assert_eq!(run["summary_counts"], json!({"total": 10, "processed": 10, "succeeded": 8, "failed": 2}));
    assert!(run["completed_at"].is_string());

    // After the end every transition is a 409 and appends nothing.
    api.refused(Method::POST, &complete_uri, service, Some(done), conflict, "illegal_transition").await;
    api.refused(Method::POST, &progress_uri, service, Some(counts), conflict, "illegal_transition").await;
    api.refused(Method::POST, &begin_uri, service, None, conflict, "illegal_transition").await;
}

#[tokio::test]
async fn a_retryable_failure_requeues_and_a_failure_completes() {
    let api = Api::seeded().await;
    let run = api.start_accepted(&start_body("report", "t1", actor("u1"))).await;
    let id = run["id"].as_str().unwrap();
    api.begin(id).await.expect(StatusCode::OK);
    let retry = json!({"outcome": "failed", "failure": {"message": "timeout"}, "retryable": true});
    let requeued = api.complete(id, &retry).await.expect(StatusCode::OK);
    assert_eq!(requeued["run"]["status"], "queued", "{requeued}");
    let again = api.begin(id).await.expect(StatusCode::OK);
    assert_eq!(again["decision"]["attempt"], 2);
    let failed = api.complete(id, &json!({"outcome": "failed", "failure": {"message": "gave up"}})).await;
    let failed = failed.expect(StatusCode::OK);
    assert_eq!(failed["run"]["status"], "completed");
    assert_eq!(failed["run"]["outcome"], "failed");
    assert_eq!(failed["run"]["attempts"], 2);
}

/// The seed scenario on the router: a grant revoked between start and begin.
#[tokio::test]
async fn begin_after_a_revocation_blocks_the_run() {
    let api = Api::seeded().await;
    let run = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let id = run["id"].as_str().unwrap();
    let revoked = api
        .authority(json!([{"type": "capability_revoked", "tenant_id": "t1", "actor_id": "u1",
            "capability": "tenant.sync"}]))
        .await;
    let revocation = revoked["first_position"].as_u64().unwrap();
    let answer = api.begin(id).await.expect(StatusCode::OK);
    let decision = &answer["decision"];
    assert_eq!(decision["outcome"], "denied");
    assert_eq!(decision["reason_code"], "capability_missing");
    assert_eq!(decision["denial_class"], "capability");
    assert_eq!(decision["retryable"], false);
    assert_eq!(decision["authority_position"], revocation);
    let failing: Vec<&Value> = decision["checks"].as_array().unwrap().iter().filter(|c| c["passed"] == false).collect();
    assert_eq!(failing.len(), 1, "{decision}");
    assert_eq!(failing[0]["check"], "capability");
    let run = &answer["run"];
    assert_eq!(run["status"], "completed");
    assert_eq!(run["outcome"], "blocked");
    assert_eq!(run["reason_code"], "capability_missing");
    assert_eq!(run["next_step"], ReasonCode::CapabilityMissing.next_step());
    // A blocked run takes no further transition.
    let begin = format!("/v1/runs/{id}/begin");
    let service = Some(api.service.as_str());
    api.refused(Method::POST, &begin, service, None, StatusCode::CONFLICT, "illegal_transition").await;
}

/// Runs on t1 (u1), t2 (system), t3 (u3), one blocked; returns their ids oldest first.
async fn some_runs(api: &Api) -> Vec<String> {
    let mut made = Vec::new();
    for key in ["a", "b", "c"] {
        let mut body = start_body("report", "t1", actor("u1"));
        body["dedupe_key"] = json!(key);
        made.push(api.start_accepted(&body).await["id"].as_str().unwrap().to_owned());
    }
    made.push(api.start_accepted(&start_body("report", "t2", system())).await["id"].as_str().unwrap().to_owned());
    made.push(
        api.start_accepted(&start_body("inventory_sync", "t3", actor("u3"))).await["id"].as_str().unwrap().to_owned(),
    );
    let blocked = api.start(&start_body("inventory_sync", "t1", actor("member"))).await.expect(StatusCode::OK);
    made.push(blocked["run"]["id"].as_str().unwrap().to_owned());
    made
}

#[tokio::test]
async fn the_run_list_filters_and_pages_newest_first() {
    let api = Api::seeded().await;
    let made = some_runs(&api).await;
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();

    let all = api.get("/v1/runs", &api.service).await.expect(StatusCode::OK);
    assert_fields(&all, &["runs", "next_cursor"], "run list");
    assert_eq!(ids(&all["runs"]), newest_first);
    assert!(all["next_cursor"].is_null(), "{all}");
    for run in all["runs"].as_array().unwrap() {
        assert_run(run);
    }

    let list = |query: &str| {
        let uri = format!("/v1/runs?{query}");
        let api = &api;
        async move { ids(&api.get(&uri, &api.service).await.expect(StatusCode::OK)["runs"]) }
    };
    assert_eq!(list("tenant_id=t2").await, vec![made[3].clone()]);
    assert_eq!(list("workspace_id=w2").await, vec![made[4].clone()]);
    assert_eq!(
        list("workspace_id=w1&tenant_id=t1").await,
        vec![made[5].clone(), made[2].clone(), made[1].clone(), made[0].clone()]
    );
    assert_eq!(list("outcome=blocked").await, vec![made[5].clone()]);
    assert_eq!(list("status=completed").await, vec![made[5].clone()]);
    assert_eq!(list("status=queued&operation_type=report").await.len(), 4);
    assert_eq!(list("initiator=system").await, vec![made[3].clone()]);
    assert_eq!(list("initiator=u3").await, vec![made[4].clone()]);
    assert_eq!(list("operation_type=inventory_sync&tenant_id=t1").await, vec![made[5].clone()]);
    assert_eq!(list("tenant_id=t9").await, Vec::<String>::new(), "a service token may filter on anything");

    // Pages of two follow each other through the cursor, without loss or repeat.
    let mut seen = Vec::new();
    let mut uri = "/v1/runs?limit=2".to_owned();
    for _ in 0..10 {
        let page = api.get(&uri, &api.service).await.expect(StatusCode::OK);
        let page_ids = ids(&page["runs"]);
        assert!(page_ids.len() <= 2, "{page}");
        seen.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/runs?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    let filtered = |query: &str| format!("/v1/runs?{query}");
    let service = Some(api.service.as_str());
    let bad = StatusCode::BAD_REQUEST;
    api.refused(Method::GET, &filtered("cursor=not-a-cursor"), service, None, bad, "invalid_cursor").await;
    api.refused(Method::GET, &filtered("status=sleeping"), service, None, bad, "invalid_request").await;
    api.refused(Method::GET, &filtered("outcome=great"), service, None, bad, "invalid_request").await;
}

#[tokio::test]
async fn the_run_detail_carries_the_run_and_its_timeline() {
    let api = Api::seeded().await;
    let run = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let id = run["id"].as_str().unwrap().to_owned();
    api.begin(&id).await.expect(StatusCode::OK);
    api.complete(&id, &json!({"outcome": "succeeded", "summary_counts": {"total": 1}})).await.expect(StatusCode::OK);

    let detail = api.get(&format!("/v1/runs/{id}"), &api.service).await.expect(StatusCode::OK);
    assert_fields(&detail, &["run", "timeline"], "run detail");
    assert_run(&detail["run"]);
    assert_eq!(detail["run"]["id"], id.as_str());
    assert_eq!(detail["run"]["outcome"], "succeeded");
    let timeline = detail["timeline"].as_array().unwrap();
    for event in timeline {
        assert_event(event);
        assert_eq!(event["stream"], timeline[0]["stream"], "one stream: the run's");
    }
    let types: Vec<&str> = timeline.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["run_queued", "legitimacy_evaluated", "run_started", "run_completed"]);
    let versions: Vec<u64> = timeline.iter().filter_map(|e| e["stream_version"].as_u64()).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let positions: Vec<u64> = timeline.iter().filter_map(|e| e["position"].as_u64()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(timeline[0]["data"]["spec"]["run_id"], id.as_str());
}

#[tokio::test]
async fn a_long_timeline_comes_in_pages() {
    use opledger_tools::server::reads::RUN_TIMELINE_PAGE_EVENTS_MAX as PAGE;
    let api = Api::seeded().await;
    let run = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let id = run["id"].as_str().unwrap().to_owned();
    api.begin(&id).await.expect(StatusCode::OK);
    // queued, evaluated, started: three events; progress makes it PAGE + 2.
    for n in 0..PAGE - 1 {
        let counts = json!({"summary_counts": {"processed": n}});
        api.post(&format!("/v1/runs/{id}/progress"), &api.service, &counts).await.expect(StatusCode::OK);
    }
    let first = api.get(&format!("/v1/runs/{id}"), &api.service).await.expect(StatusCode::OK);
    let versions = |page: &Value| {
        page["timeline"].as_array().unwrap().iter().map(|e| e["stream_version"].as_u64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(versions(&first), (1..=PAGE as u64).collect::<Vec<_>>());
    assert_eq!(first["timeline_next"], PAGE as u64 + 1);
    assert_eq!(first["run"]["summary_counts"]["processed"], PAGE as u64 - 2, "the run is the whole fold");
    let next = format!("/v1/runs/{id}?timeline_from={}", first["timeline_next"]);
    let second = api.get(&next, &api.service).await.expect(StatusCode::OK);
    assert_eq!(versions(&second), [PAGE as u64 + 1, PAGE as u64 + 2]);
    assert_eq!(second["timeline_next"], Value::Null);
    let page = api.get(&format!("/admin/operations/{id}"), &api.service).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains(&format!("timeline_from={}", PAGE as u64 + 1)), "the HTML page links the rest");
    let last = api.get(&format!("/admin/operations/{id}?timeline_from=3"), &api.service).await;
    assert!(!last.text().contains("Later events"), "the last page links nothing");
    let bad = format!("/v1/runs/{id}?timeline_from=first");
    api.refused(Method::GET, &bad, Some(api.service.as_str()), None, StatusCode::BAD_REQUEST, "invalid_query").await;
}

#[tokio::test]
async fn the_audit_trail_filters_and_reads_as_of_a_position() {
    let api = Api::seeded().await;
    let run = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let before_revocation = api.head();
    api.authority(json!([{"type": "capability_revoked", "tenant_id": "t1", "actor_id": "u1",
        "capability": "tenant.sync"}]))
        .await;
    api.begin(&id).await.expect(StatusCode::OK);

    let trail = api.get("/v1/audit", &api.service).await.expect(StatusCode::OK);
    assert_fields(&trail, &["entries", "next_cursor"], "audit page");
    let entries = trail["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"capability_revoked") && actions.contains(&"run_blocked"), "{actions:?}");

    let of_run = api.get(&format!("/v1/audit?run_id={id}"), &api.service).await.expect(StatusCode::OK);
    let of_run = of_run["entries"].as_array().unwrap();
    assert!(!of_run.is_empty());
    assert!(of_run.iter().all(|e| e["run_id"] == id.as_str()), "{of_run:?}");

    let uri = format!("/v1/audit?as_of={before_revocation}");
    let then = api.get(&uri, &api.service).await.expect(StatusCode::OK);
    let then = then["entries"].as_array().unwrap();
    assert!(!then.is_empty());
    assert!(then.iter().all(|e| e["position"].as_u64().unwrap() <= before_revocation), "{then:?}");
    assert!(then.iter().all(|e| e["action"] != "capability_revoked" && e["action"] != "run_blocked"), "{then:?}");

    let blocked = api.get("/v1/audit?action=run_blocked&tenant_id=t1", &api.service).await.expect(StatusCode::OK);
    assert_eq!(blocked["entries"].as_array().unwrap().len(), 1, "{blocked}");
    let by_admin = api.get("/v1/audit?actor_id=u-admin&limit=2", &api.service).await.expect(StatusCode::OK);
    assert_eq!(by_admin["entries"].as_array().unwrap().len(), 2);
    let cursor = by_admin["next_cursor"].as_str().expect("more entries by u-admin");
    let next = api.get(&format!("/v1/audit?actor_id=u-admin&limit=2&cursor={cursor}"), &api.service).await;
    let next = next.expect(StatusCode::OK);
    let first_positions: Vec<u64> =
        by_admin["entries"].as_array().unwrap().iter().filter_map(|e| e["position"].as_u64()).collect();
    let next_positions: Vec<u64> =
        next["entries"].as_array().unwrap().iter().filter_map(|e| e["position"].as_u64()).collect();
    assert!(!next_positions.is_empty());
    assert!(next_positions.iter().all(|p| p < first_positions.iter().min().unwrap()), "newest first, no repeat");
}

#[tokio::test]
async fn notifications_reach_the_initiator_through_either_token() {
    let api = Api::seeded().await;
    let run = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let id = run["id"].as_str().unwrap().to_owned();
    api.authority(json!([{"type": "capability_revoked", "tenant_id": "t1", "actor_id": "u1",
        "capability": "tenant.sync"}]))
        .await;
    api.begin(&id).await.expect(StatusCode::OK);

    let u1 = api.actor("u1");
    let own = api.get("/v1/notifications", &u1).await.expect(StatusCode::OK);
    let list = own["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{own}");
    let note = &list[0];
    assert_fields(note, &["id", "run_id", "outcome", "title", "body", "read", "created_at"], "notification");
    assert_eq!(note["run_id"], id.as_str());
    assert_eq!(note["outcome"], "blocked");
    assert_eq!(note["read"], false);
    assert!(note["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(note["body"].as_str().is_some_and(|b| !b.is_empty()));

    let by_service = api.get("/v1/notifications?actor_id=u1", &api.service).await.expect(StatusCode::OK);
    assert_eq!(by_service["notifications"], own["notifications"]);
    let same = api.get("/v1/notifications?actor_id=u1", &u1).await.expect(StatusCode::OK);
    assert_eq!(same["notifications"], own["notifications"]);

    let viewer = api.actor("viewer");
    let other = api.get("/v1/notifications", &viewer).await.expect(StatusCode::OK);
    assert_eq!(other["notifications"], json!([]), "only the initiator is notified");
    let system_runs = api.get("/v1/notifications?actor_id=system", &api.service).await.expect(StatusCode::OK);
    assert_eq!(system_runs["notifications"], json!([]));

    let forbidden = api.get("/v1/notifications?actor_id=u1", &viewer).await;
    forbidden.expect_error(StatusCode::FORBIDDEN, "forbidden");
    let missing = api.get("/v1/notifications", &api.service).await;
    missing.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn events_page_from_an_inclusive_position_with_next() {
    let api = Api::seeded().await;
    let head = api.head();
    let page = api.get("/v1/events?from=1&limit=3", &api.service).await.expect(StatusCode::OK);
    assert_fields(&page, &["events", "next"], "events page");
    let events = page["events"].as_array().unwrap();
    let positions: Vec<u64> = events.iter().filter_map(|e| e["position"].as_u64()).collect();
    assert_eq!(positions, [1, 2, 3]);
    assert_eq!(page["next"], 4);
    for event in events {
        assert_event(event);
    }

    let mut from = 1;
    let mut all = Vec::new();
    for _ in 0..100 {
        let page = api.get(&format!("/v1/events?from={from}&limit=7"), &api.service).await.expect(StatusCode::OK);
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            assert_eq!(page["next"], from, "an empty page keeps next at from");
            break;
        }
        assert_eq!(events[0]["position"], from, "from is inclusive");
        from = page["next"].as_u64().unwrap();
        all.extend(events);
    }
    let positions: Vec<u64> = all.iter().filter_map(|e| e["position"].as_u64()).collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());
    // The chain: each event's previous hash is the hash before it, where exposed.
    for pair in all.windows(2) {
        if let Some(previous) = pair[1].get("previous_hash") {
            assert_eq!(previous, &pair[0]["hash"]);
        }
    }
    let default = api.get("/v1/events", &api.service).await.expect(StatusCode::OK);
    assert_eq!(default["events"].as_array().unwrap().len() as u64, head, "from defaults to 1");
    assert_eq!(default["next"], head + 1);
}

/// Reads SSE frames until `count` `data:` lines arrived.
async fn data_lines(body: &mut axum::body::Body, count: usize) -> Vec<Value> {
    identified_events(body, count).await.into_iter().map(|(_, data)| data).collect()
}

#[tokio::test]
async fn the_event_stream_catches_up_then_follows_live() {
    let api = Api::seeded().await;
    let head = api.head();
    let uri = "/v1/events/stream?from=2";
    let response = tower::ServiceExt::oneshot(
        opledger_tools::server::router(api.state.clone()),
        request(Method::GET, uri, Some(&api.service), None),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let mut body = response.into_body();
    let caught_up = data_lines(&mut body, 3).await;
    let positions: Vec<u64> = caught_up.iter().filter_map(|e| e["position"].as_u64()).collect();
    assert_eq!(positions, [2, 3, 4]);
    for event in &caught_up {
        assert_event(event);
    }
    let rest = data_lines(&mut body, (head - 4) as usize).await;
    assert_eq!(rest.last().unwrap()["position"], head);

    api.start_accepted(&start_body("report", "t1", actor("u1"))).await;
    let live = data_lines(&mut body, 1).await;
    assert_eq!(live[0]["position"], head + 1);
    assert_eq!(live[0]["type"], "run_queued");
    drop(body);

    let unauthorized = api.request(Method::GET, uri, None, None).await;
    unauthorized.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn healthz_needs_no_token() {
    let api = Api::seeded().await;
    let health = api.request(Method::GET, "/healthz", None, None).await.expect(StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert!(health["head"].as_str().is_some_and(|h| h.starts_with(&format!("{}:", api.head()))), "{health}");
    let with_junk = api.request(Method::GET, "/healthz", Some("opl_nonsense"), None).await;
    assert_eq!(with_junk.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let api = Api::seeded().await;
    api.start_accepted(&start_body("report", "t1", actor("u1"))).await;
    api.start(&start_body("inventory_sync", "t1", actor("member"))).await.expect(StatusCode::OK);
    let reply = api.get("/metrics", &api.service).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type.starts_with("text/plain"), "{}", reply.content_type);
    let text = reply.text();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with('#') {
            assert!(line.starts_with("# TYPE ") || line.starts_with("# HELP "), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("name value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "a number: {line}");
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "{line}");
        if series.contains('{') {
            assert!(series.ends_with('}'), "{line}");
        }
    }
    assert!(text.contains(&format!("opledger_log_head_position {}", api.head())), "{text}");
    assert!(text.contains("opledger_starts_total{result=\"accepted\"} 1"), "{text}");
    assert!(text.contains("opledger_starts_total{result=\"blocked\"} 1"), "{text}");
    assert!(text.contains("opledger_http_requests_total{route=\"/v1/runs\",status=\"201\"} 1"), "{text}");
    let anonymous = api.request(Method::GET, "/metrics", None, None).await;
    anonymous.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn marking_a_notification_read() {
    let api = Api::seeded().await;
    let blocked = api.start(&start_body("inventory_sync", "t1", actor("member"))).await.expect(StatusCode::OK);
    let id = blocked["run"]["id"].as_str().unwrap();
    let member = api.actor("member");
    let inbox = api.get("/v1/notifications", &member).await.expect(StatusCode::OK);
    assert_eq!(inbox["notifications"][0]["read"], false);
    let uri = format!("/v1/notifications/{id}/read?actor_id=member");
    let marked = api.request(Method::POST, &uri, Some(&api.service), None).await;
    marked.expect(StatusCode::OK);
    let inbox = api.get("/v1/notifications", &member).await.expect(StatusCode::OK);
    assert_eq!(inbox["notifications"][0]["read"], true);
}

/// Reads SSE frames until `count` events arrived; each as (id, data).
async fn identified_events(body: &mut axum::body::Body, count: usize) -> Vec<(String, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let mut id = String::new();
    while events.len() < count {
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .expect("an SSE frame within the timeout")
            .expect("the stream goes on")
            .unwrap();
        let Ok(data) = frame.into_data() else { continue };
        buffer.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            if let Some(value) = line.trim_end().strip_prefix("id:") {
                id = value.trim().to_owned();
            } else if let Some(json) = line.trim_end().strip_prefix("data:") {
                events.push((std::mem::take(&mut id), serde_json::from_str(json.trim_start()).unwrap()));
            }
        }
    }
    events
}

#[tokio::test]
async fn stream_events_carry_their_position_as_id_and_a_reconnect_resumes_after_it() {
    let api = Api::seeded().await;
    let head = api.head();
    let open = |last_event_id: Option<&str>| {
        let mut request = request(Method::GET, "/v1/events/stream?from=1", Some(&api.service), None);
        if let Some(id) = last_event_id {
            request.headers_mut().insert("last-event-id", id.parse().unwrap());
        }
        tower::ServiceExt::oneshot(opledger_tools::server::router(api.state.clone()), request)
    };
    let response = open(None).await.unwrap();
    let mut body = response.into_body();
    let first = identified_events(&mut body, 3).await;
    for (id, event) in &first {
        assert_eq!(id, &event["position"].as_u64().unwrap().to_string(), "the SSE id is the position");
    }
    drop(body);

    // The browser reconnects to the same URL and names the last id it saw.
    let seen = &first[2].0;
    let response = open(Some(seen)).await.unwrap();
    let mut body = response.into_body();
    let resumed = identified_events(&mut body, (head - 3) as usize).await;
    let positions: Vec<u64> = resumed.iter().map(|(_, e)| e["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, (4..=head).collect::<Vec<_>>(), "resumes right after {seen}, not from `from`");
    drop(body);

    let mut bad = request(Method::GET, "/v1/events/stream", Some(&api.service), None);
    bad.headers_mut().insert("last-event-id", "soon".parse().unwrap());
    let bad = api.send(bad).await;
    bad.expect_error(StatusCode::BAD_REQUEST, "invalid_last_event_id");
}
