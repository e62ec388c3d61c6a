//! Reading one's writes (`server/positions.rs`) on one node: every
//! successful write names the position it reached, every read takes
//! `min_position` (waiting, bounded) and leaves the route's own strict
//! query parsing untouched. Reads across nodes:
//! `tools/tests/postgres_nodes.rs`.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{actor, start_body, Api};

#[tokio::test]
async fn a_write_names_its_position_and_a_read_waits_for_it() {
    let api = Api::seeded().await;
    let started = api.start(&start_body("inventory_sync", "t1", actor("u1"))).await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.text());
    let position: u64 = started.headers["opledger-position"].to_str().unwrap().parse().unwrap();
    assert_eq!(position, api.head(), "the position the write reached");
    let run = started.json()["run"]["id"].as_str().unwrap().to_owned();
    let read = api.get(&format!("/v1/runs/{run}?min_position={position}"), &api.service).await;
    assert_eq!(read.expect(StatusCode::OK)["run"]["id"], json!(run));
    let listed = api.get(&format!("/v1/runs?tenant_id=t1&limit=5&min_position={position}"), &api.service).await;
    assert_eq!(listed.expect(StatusCode::OK)["runs"][0]["id"], json!(run), "the route's own parameters still apply");
    let unknown = api.get(&format!("/v1/runs?min_position={position}&no_such_filter=1"), &api.service).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "a route still refuses what it does not know");
    let ahead = api.get(&format!("/v1/runs/{run}?min_position={}", position + 1), &api.service).await;
    ahead.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    let bad = api.get("/v1/runs?min_position=-1", &api.service).await;
    bad.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    let refused = api.post("/v1/runs", &api.service, &json!({"operation_type": 1})).await;
    assert!(refused.status.is_client_error());
    assert!(refused.headers.get("opledger-position").is_none(), "only a successful write names a position");
}
