//! Integrity and audit reads on the live ledger: `/v1/head`, `/v1/verify`,
//! `/v1/export`, `/v1/runs/{id}/explain` and `GET /v1/authority`.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn the_head_route_names_the_head_digest() {
    let api = Api::seeded().await;
    let head = api.get("/v1/head", &api.service).await.expect(StatusCode::OK);
    assert_eq!(head["position"], api.head());
    let digest = api.state.ledger().unwrap().log().head().digest();
    assert_eq!(head["digest"], digest);
    assert_eq!(head["hash"].as_str().map(str::len), Some(64));
}

#[tokio::test]
async fn verify_walks_the_live_log_and_replays_every_decision() {
    let api = Api::seeded().await;
    let run = api.start_accepted(&start_body("report", "t1", actor("u1"))).await;
    api.begin(run["id"].as_str().unwrap()).await.expect(StatusCode::OK);
    let report = api.get("/v1/verify", &api.service).await.expect(StatusCode::OK);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_checked"], api.head());
    assert_eq!(report["decisions_checked"], 1, "{report}");
    assert_eq!(report["start_decisions_checked"], 1, "{report}");
    assert_eq!(report["first_failure"], Value::Null);

    let head = api.state.ledger().unwrap().log().head();
    let matching = format!("/v1/verify?expect_head={}", head.digest());
    assert_eq!(api.get(&matching, &api.service).await.expect(StatusCode::OK)["ok"], true);
    let rewritten = format!("/v1/verify?expect_head={}:{}", head.position, "0".repeat(64));
    let report = api.get(&rewritten, &api.service).await.expect(StatusCode::OK);
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_failure"]["position"], head.position);
    api.get("/v1/verify?expect_head=nonsense", &api.service)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_query");
}

#[tokio::test]
async fn a_second_verify_while_one_runs_is_told_to_come_back() {
    let api = Api::seeded().await;
    let _running = std::sync::Arc::clone(api.state.verifies()).try_acquire_owned().unwrap();
    let busy = api.get("/v1/verify", &api.service).await;
    busy.expect_error(StatusCode::TOO_MANY_REQUESTS, "verify_busy");
}

#[tokio::test]
async fn verify_finishes_while_sixteen_clients_write_and_none_of_them_sees_an_error() {
    let api = std::sync::Arc::new(Api::seeded().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let (api, stop) = (std::sync::Arc::clone(&api), std::sync::Arc::clone(&stop));
            tokio::spawn(async move {
                let mut written = 0u32;
                // Bounded: each writer stops after 200 starts, or when told.
                while written < 200 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut body = start_body("report", "t1", system());
                    body["dedupe_key"] = json!(format!("writer-{writer}-{written}"));
                    let reply = api.start(&body).await;
                    assert!(reply.status.is_success(), "a writer saw {}: {}", reply.status, reply.text());
                    written += 1;
                }
                written
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Several walks while the writers go on, each must verify.
    let mut walks = 0;
    while walks < 5 {
        let before = api.head();
        let report = tokio::time::timeout_at(deadline, api.get("/v1/verify", &api.service)).await.unwrap();
        let report = report.expect(StatusCode::OK);
        assert_eq!(report["ok"], true, "walk {walks}: {report}");
        let checked = report["events_checked"].as_u64().unwrap();
        assert!(checked >= before, "the walk reaches at least the head it started at: {report}");
        let head = report["head"].as_str().unwrap();
        assert_eq!(head.split(':').next().unwrap().parse::<u64>().unwrap(), checked);
        walks += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    assert!(written > 0);
    let after = api.get("/v1/verify", &api.service).await.expect(StatusCode::OK);
    assert_eq!(after["ok"], true, "{after}");
    assert_eq!(after["events_checked"], api.head());
}

#[tokio::test]
async fn export_streams_the_log_as_json_lines_from_a_position() {
    let api = Api::seeded().await;
    api.start_accepted(&start_body("report", "t1", actor("u1"))).await;
    let whole = api.get("/v1/export", &api.service).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.content_type, "application/jsonl");
    let lines: Vec<Value> = whole.text().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines, api.events().await, "the export is the log, event for event");
    let resumed = api.get("/v1/export?from=5", &api.service).await;
    let resumed: Vec<Value> = resumed.text().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(resumed, lines[4..], "from is inclusive");
    let past = api.get(&format!("/v1/export?from={}", api.head() + 1), &api.service).await;
    assert_eq!((past.status, past.bytes.len()), (StatusCode::OK, 0));
}

#[tokio::test]
async fn explain_answers_every_decision_of_a_run() {
    let api = Api::seeded().await;
    let run = api.start_accepted(&start_body("report", "t1", actor("u1"))).await;
    let id = run["id"].as_str().unwrap();
    api.begin(id).await.expect(StatusCode::OK);
    let explained = api.get(&format!("/v1/runs/{id}/explain"), &api.service).await.expect(StatusCode::OK);
    assert_eq!(explained["run_id"], id);
    let gates: Vec<&str> =
        explained["decisions"].as_array().unwrap().iter().map(|d| d["gate"].as_str().unwrap()).collect();
    assert_eq!(gates, ["start", "begin"]);
    let checks = explained["decisions"][1]["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["source"]["type"] == "capability_granted"), "{explained}");
    let nobody = uuid::Uuid::nil();
    api.get(&format!("/v1/runs/{nobody}/explain"), &api.service)
        .await
        .expect_error(StatusCode::NOT_FOUND, "unknown_run");
}

#[tokio::test]
async fn authority_reads_back_as_of_any_position_with_filters() {
    let api = Api::seeded().await;
    let seeded = api.head();
    api.authority(
        json!([{"type": "capability_revoked", "tenant_id": "t1", "actor_id": "u1", "capability": "tenant.sync"}]),
    )
    .await;
    let u1_on_t1 = |as_of: u64| format!("/v1/authority?as_of={as_of}&tenant_id=t1&actor_id=u1");
    let before = api.get(&u1_on_t1(seeded), &api.service).await.expect(StatusCode::OK);
    let held: Vec<&str> = before["tenants"][0]["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["capability"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["operations.view", "tenant.sync"]);
    assert_eq!(before["as_of"], seeded);
    let after = api.get(&u1_on_t1(seeded + 1), &api.service).await.expect(StatusCode::OK);
    let held: Vec<&str> = after["tenants"][0]["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["capability"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["operations.view"], "revoked at {}", seeded + 1);
    let now = api.get("/v1/authority", &api.service).await.expect(StatusCode::OK);
    assert_eq!((now["as_of"].as_u64(), now["authority_position"].as_u64()), (Some(seeded + 1), Some(seeded + 1)));
    let workspaces: Vec<&str> =
        now["workspaces"].as_array().unwrap().iter().map(|w| w["workspace_id"].as_str().unwrap()).collect();
    assert_eq!(workspaces, ["w1", "w2"]);
    assert_eq!(now["catalog"].as_array().unwrap().len(), 4);
    let empty_fields = api.get("/v1/authority?tenant_id=&actor_id=", &api.service).await.expect(StatusCode::OK);
    assert_eq!(empty_fields, now, "an empty field is no filter");

    let past = format!("/v1/authority?as_of={}", api.head() + 1);
    api.get(&past, &api.service).await.expect_error(StatusCode::BAD_REQUEST, "invalid_as_of");
}

#[tokio::test]
async fn integrity_reads_are_for_service_tokens() {
    let api = Api::seeded().await;
    let viewer = api.actor("viewer");
    let run = api.start_accepted(&start_body("report", "t1", actor("u1"))).await;
    let explain = format!("/v1/runs/{}/explain", run["id"].as_str().unwrap());
    for uri in ["/v1/head", "/v1/verify", "/v1/export", "/v1/authority", &explain] {
        api.refused(Method::GET, uri, Some(&viewer), None, StatusCode::FORBIDDEN, "forbidden").await;
        api.refused(Method::GET, uri, None, None, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}
