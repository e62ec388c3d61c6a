//! `GET /v1/runs/summary` (counts of the whole filter by status and by
//! outcome, under the list's access rule), empty query fields as "no
//! filter", and list cursors that keep their filter in both directions.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::support::{actor, ids, start_body, system, Api};

/// The runs these tests count.
pub struct World {
    /// u1's failed run on t1, with a failure code and message.
    pub failed: String,
    /// u1's succeeded run on t1, with summary counts.
    pub succeeded: String,
    /// member's three blocked starts on t1, oldest first.
    pub blocked: Vec<String>,
}

/// The failure the failed run reports.
pub const FAILURE_CODE: &str = "provider_timeout";
pub const FAILURE_MESSAGE: &str = "The provider did not answer within 30 seconds";

/// On t1 (w1): a failed, a succeeded and a queued run by u1, three blocked
/// starts by member; a running system run on t2 (w1); a queued run by u3
/// on t3 (w2).
pub async fn world(api: &Api) -> World {
    let id = |run: &Value| run["id"].as_str().unwrap().to_owned();
    let failed = id(&api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await);
    api.begin(&failed).await.expect(StatusCode::OK);
    let failure = json!({"outcome": "failed", "failure": {"code": FAILURE_CODE, "message": FAILURE_MESSAGE}});
    api.complete(&failed, &failure).await.expect(StatusCode::OK);
    let succeeded = id(&api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await);
    api.begin(&succeeded).await.expect(StatusCode::OK);
    let done =
        json!({"outcome": "succeeded", "summary_counts": {"total": 10, "processed": 10, "succeeded": 9, "failed": 1}});
    api.complete(&succeeded, &done).await.expect(StatusCode::OK);
    api.start_accepted(&start_body("report", "t1", actor("u1"))).await;
    let mut blocked = Vec::new();
    for _ in 0..3 {
        let answer = api.start(&start_body("backup_sync", "t1", actor("member"))).await.expect(StatusCode::OK);
        assert_eq!(answer["result"], "blocked", "{answer}");
        blocked.push(id(&answer["run"]));
    }
    let running = id(&api.start_accepted(&start_body("report", "t2", system())).await);
    api.begin(&running).await.expect(StatusCode::OK);
    api.start_accepted(&start_body("inventory_sync", "t3", actor("u3"))).await;
    World { failed, succeeded, blocked }
}

/// Every run of the list `query` names, page by page at one run a page.
async fn whole_list(api: &Api, token: &str, query: &str) -> Vec<Value> {
    let (mut runs, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let cursor_part = cursor.as_deref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page = api.get(&format!("/v1/runs?{query}&limit=1{cursor_part}"), token).await.expect(StatusCode::OK);
        runs.extend(page["runs"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return runs,
        }
    }
}

/// The summary the runs of a list should have.
fn expected_summary(runs: &[Value]) -> Value {
    let tally = |field: &str, names: &[&str]| {
        let mut counts: BTreeMap<String, u64> = names.iter().map(|n| ((*n).to_owned(), 0)).collect();
        for run in runs {
            *counts.entry(run[field].as_str().unwrap().to_owned()).or_default() += 1;
        }
        counts
    };
    json!({
        "total": runs.len(),
        "by_status": tally("status", &["queued", "running", "completed"]),
        "by_outcome": tally("outcome", &["pending", "succeeded", "partially_succeeded", "failed", "blocked", "cancelled"]),
        "complete": true,
    })
}

#[tokio::test]
async fn the_summary_counts_every_run_of_the_filters_by_status_and_outcome() {
    let api = Api::seeded().await;
    world(&api).await;
    let everything = api.get("/v1/runs/summary", &api.service).await.expect(StatusCode::OK);
    assert_eq!(
        everything,
        json!({"total": 8, "by_status": {"queued": 2, "running": 1, "completed": 5},
               "by_outcome": {"pending": 3, "succeeded": 1, "partially_succeeded": 0, "failed": 1, "blocked": 3, "cancelled": 0},
               "complete": true}),
        "every known status and outcome, zeros included"
    );
    for query in [
        "",
        "tenant_id=t1",
        "workspace_id=w1",
        "outcome=blocked",
        "workspace_id=w1&status=completed",
        "initiator=system",
        "initiator=u1&operation_type=inventory_sync",
        "tenant_id=t2&outcome=failed",
    ] {
        let summary = api.get(&format!("/v1/runs/summary?{query}"), &api.service).await.expect(StatusCode::OK);
        let runs = whole_list(&api, &api.service, query).await;
        assert_eq!(summary, expected_summary(&runs), "?{query}: the counts of the whole list, not of one page");
    }
}

#[tokio::test]
async fn the_summary_follows_the_access_rule_of_the_list() {
    let api = Api::seeded().await;
    world(&api).await;
    let viewer = api.actor("viewer");
    let summary = api.get("/v1/runs/summary", &viewer).await.expect(StatusCode::OK);
    assert_eq!(summary, expected_summary(&whole_list(&api, &viewer, "").await));
    assert_eq!(summary["total"], 6, "t1's runs only: {summary}");
    assert_eq!(summary["by_status"]["running"], 0, "the system run on t2 is not counted: {summary}");
    let stranger = api.actor("stranger");
    assert_eq!(api.get("/v1/runs/summary", &stranger).await.expect(StatusCode::OK)["total"], 0);
    let member = api.actor("member");
    for (token, query, status, code) in [
        (&viewer, "tenant_id=t2", StatusCode::NOT_FOUND, "not_found"),
        (&viewer, "tenant_id=t404", StatusCode::NOT_FOUND, "not_found"),
        (&viewer, "workspace_id=w2", StatusCode::NOT_FOUND, "not_found"),
        (&member, "tenant_id=t1", StatusCode::FORBIDDEN, "forbidden"),
        (&member, "workspace_id=w1", StatusCode::FORBIDDEN, "forbidden"),
    ] {
        api.get(&format!("/v1/runs/summary?{query}"), token).await.expect_error(status, code);
        api.get(&format!("/v1/runs?{query}"), token).await.expect_error(status, code);
    }
    api.request(axum::http::Method::GET, "/v1/runs/summary", None, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn empty_query_fields_mean_no_filter() {
    let api = Api::seeded().await;
    world(&api).await;
    let service = &api.service;
    let blocked = api.get("/v1/runs?outcome=blocked", service).await.expect(StatusCode::OK);
    assert_eq!(ids(&blocked["runs"]).len(), 3);
    let empties =
        "workspace_id=&tenant_id=&operation_type=&initiator=&outcome=blocked&status=&from=&to=&limit=&cursor=";
    let with_empties = api.get(&format!("/v1/runs?{empties}"), service).await.expect(StatusCode::OK);
    assert_eq!(with_empties, blocked, "as a browser's form sends it");
    let all = api.get("/v1/runs", service).await.expect(StatusCode::OK);
    assert_eq!(api.get("/v1/runs?status=", service).await.expect(StatusCode::OK), all);
    let summary = api.get("/v1/runs/summary?outcome=blocked", service).await.expect(StatusCode::OK);
    let empties = "workspace_id=&tenant_id=&operation_type=&initiator=&outcome=blocked&status=&from=&to=";
    assert_eq!(api.get(&format!("/v1/runs/summary?{empties}"), service).await.expect(StatusCode::OK), summary);
    // A value that is there is still checked.
    api.get("/v1/runs?status=done", service).await.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    api.get("/v1/runs?limit=many", service).await.expect_error(StatusCode::BAD_REQUEST, "invalid_query");
    api.get("/v1/runs?colour=red", service).await.expect_error(StatusCode::BAD_REQUEST, "invalid_query");
    // An empty field is an absent one, whatever its name: it changes nothing.
    assert_eq!(api.get("/v1/runs?colour=", service).await.expect(StatusCode::OK), all);
}

#[tokio::test]
async fn the_summary_refuses_paging_parameters() {
    let api = Api::seeded().await;
    for query in ["limit=2", "cursor=00", "outcome=blocked&limit=1"] {
        let uri = format!("/v1/runs/summary?{query}");
        api.get(&uri, &api.service).await.expect_error(StatusCode::BAD_REQUEST, "invalid_query");
    }
}

#[tokio::test]
async fn cursors_keep_their_filter_in_both_directions() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    let viewer = api.actor("viewer");
    let list = |query: String| {
        let (api, viewer) = (&api, &viewer);
        async move { api.get(&format!("/v1/runs?{query}"), viewer).await }
    };
    let first = list("outcome=blocked&limit=2".into()).await.expect(StatusCode::OK);
    let newest: Vec<String> = w.blocked.iter().rev().cloned().collect();
    assert_eq!(ids(&first["runs"]), newest[..2]);
    assert_eq!(first["prev_cursor"], Value::Null, "nothing is newer than the first page");
    let next = first["next_cursor"].as_str().unwrap();
    let second = list(format!("outcome=blocked&limit=2&cursor={next}")).await.expect(StatusCode::OK);
    assert_eq!(ids(&second["runs"]), newest[2..]);
    let prev = second["prev_cursor"].as_str().expect("page 2 has a way back");
    let back = list(format!("outcome=blocked&limit=2&cursor={prev}")).await.expect(StatusCode::OK);
    assert_eq!(back["runs"], first["runs"], "back from page 2 is page 1");
    assert_eq!(back["prev_cursor"], Value::Null);

    // Another filter's cursor: a clear 400, never another list's runs.
    for query in [format!("cursor={next}"), format!("tenant_id=t1&cursor={next}"), format!("cursor={prev}")] {
        let refused = list(query).await.expect_error(StatusCode::BAD_REQUEST, "invalid_cursor");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains("only valid with the filter it was listed with"), "{message}");
    }
}
