//! The access rule of SPEC section 6 over the JSON run routes and the HTML
//! Monitoring pages alike.

use std::collections::BTreeSet;

use axum::http::{header, Method, Request, StatusCode};
use opledger::domain::reason::ReasonCode;
use serde_json::json;

use crate::support::{actor, ids, start_body, system, Api, Reply};

/// The runs the matrix is checked on.
struct World {
    /// u1's queued run on t1 (w1).
    t1: String,
    /// member's blocked start on t1 (w1).
    blocked: String,
    /// A system run on t2 (w1).
    t2: String,
    /// u3's run on t3 (w2).
    t3: String,
}

async fn world(api: &Api) -> World {
    let t1 = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let blocked = api.start(&start_body("inventory_sync", "t1", actor("member"))).await.expect(StatusCode::OK);
    assert_eq!(blocked["result"], "blocked");
    let t2 = api.start_accepted(&start_body("report", "t2", system())).await;
    let t3 = api.start_accepted(&start_body("inventory_sync", "t3", actor("u3"))).await;
    let id = |run: &serde_json::Value| run["id"].as_str().unwrap().to_owned();
    World { t1: id(&t1), blocked: id(&blocked["run"]), t2: id(&t2), t3: id(&t3) }
}

/// `who` is an actor id, or `service`.
fn token(api: &Api, who: &str) -> String {
    match who {
        "service" => api.service.clone(),
        actor_id => api.actor(actor_id),
    }
}

/// The run ids an HTML list page shows, each with its "View run" link.
fn page_runs(page: &Reply) -> BTreeSet<String> {
    let text = page.text();
    let runs: BTreeSet<String> =
        text.split("data-run=\"").skip(1).filter_map(|rest| rest.split('"').next().map(str::to_owned)).collect();
    for run in &runs {
        let link = format!("<a href=\"/admin/operations/{run}\">View run</a>");
        assert!(text.contains(&link), "the list links {run} with \"View run\": {text}");
    }
    runs
}

#[tokio::test]
async fn run_detail_matrix_over_json_and_html() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let cases = [
        ("stranger", &w.t1, StatusCode::NOT_FOUND),
        ("outsider", &w.t1, StatusCode::NOT_FOUND),
        ("u3", &w.t1, StatusCode::NOT_FOUND),
        ("member", &w.t1, StatusCode::FORBIDDEN),
        ("member", &w.blocked, StatusCode::FORBIDDEN),
        ("viewer", &w.t1, StatusCode::OK),
        ("viewer", &w.blocked, StatusCode::OK),
        ("u1", &w.t1, StatusCode::OK),
        ("viewer", &w.t2, StatusCode::NOT_FOUND),
        ("outsider", &w.t2, StatusCode::NOT_FOUND),
        ("viewer", &w.t3, StatusCode::NOT_FOUND),
        ("u3", &w.t3, StatusCode::OK),
        ("u3", &w.t2, StatusCode::NOT_FOUND),
        ("viewer", &unknown, StatusCode::NOT_FOUND),
        ("member", &unknown, StatusCode::NOT_FOUND),
        ("stranger", &unknown, StatusCode::NOT_FOUND),
        ("service", &w.t1, StatusCode::OK),
        ("service", &w.blocked, StatusCode::OK),
        ("service", &w.t2, StatusCode::OK),
        ("service", &w.t3, StatusCode::OK),
        ("service", &unknown, StatusCode::NOT_FOUND),
    ];
    let unknown_body = api.get(&format!("/v1/runs/{unknown}"), &api.service).await.json();
    for (who, run, expected) in cases {
        let token = token(&api, who);
        let before = api.head();

        let reply = api.get(&format!("/v1/runs/{run}"), &token).await;
        assert_eq!(reply.status, expected, "JSON: {who} on run {run}: {}", reply.text());
        let body = reply.json();
        match expected {
            StatusCode::OK => assert_eq!(body["run"]["id"], run.as_str()),
            StatusCode::NOT_FOUND => {
                assert_eq!(body["error"]["code"], "not_found");
                assert_eq!(body, unknown_body, "a hidden run reads exactly like a missing one");
            }
            _ => assert_eq!(body["error"]["code"], "forbidden"),
        }

        let page = api.get(&format!("/admin/operations/{run}"), &token).await;
        assert_eq!(page.status, expected, "HTML: {who} on run {run}: {}", page.text());
        assert!(page.content_type.starts_with("text/html"), "{who}: {}", page.content_type);
        assert_eq!(page.text().contains(run.as_str()), expected == StatusCode::OK, "{who}: {}", page.text());
        assert_eq!(api.head(), before, "reads append nothing");
    }
}

#[tokio::test]
async fn run_list_matrix_over_json_and_html() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    let set = |runs: &[&String]| runs.iter().map(|r| (*r).clone()).collect::<BTreeSet<String>>();
    let t1 = set(&[&w.t1, &w.blocked]);
    let none = BTreeSet::new();
    let all = set(&[&w.t1, &w.blocked, &w.t2, &w.t3]);
    let cases: Vec<(&str, &str, StatusCode, BTreeSet<String>)> = vec![
        // Without a filter: only what the actor may see.
        ("viewer", "", StatusCode::OK, t1.clone()),
        ("u1", "", StatusCode::OK, t1.clone()),
        ("member", "", StatusCode::OK, none.clone()),
        ("outsider", "", StatusCode::OK, none.clone()),
        ("stranger", "", StatusCode::OK, none.clone()),
        ("service", "", StatusCode::OK, all.clone()),
        // A tenant filter.
        ("viewer", "tenant_id=t1", StatusCode::OK, t1.clone()),
        ("viewer", "tenant_id=t2", StatusCode::NOT_FOUND, none.clone()),
        ("viewer", "tenant_id=t3", StatusCode::NOT_FOUND, none.clone()),
        ("viewer", "tenant_id=t404", StatusCode::NOT_FOUND, none.clone()),
        ("member", "tenant_id=t1", StatusCode::FORBIDDEN, none.clone()),
        ("outsider", "tenant_id=t1", StatusCode::NOT_FOUND, none.clone()),
        ("stranger", "tenant_id=t1", StatusCode::NOT_FOUND, none.clone()),
        // A workspace filter.
        ("viewer", "workspace_id=w1", StatusCode::OK, t1.clone()),
        ("viewer", "workspace_id=w2", StatusCode::NOT_FOUND, none.clone()),
        ("viewer", "workspace_id=w404", StatusCode::NOT_FOUND, none.clone()),
        ("member", "workspace_id=w1", StatusCode::FORBIDDEN, none.clone()),
        ("outsider", "workspace_id=w1", StatusCode::FORBIDDEN, none.clone()),
        ("stranger", "workspace_id=w1", StatusCode::NOT_FOUND, none.clone()),
        ("u3", "workspace_id=w1", StatusCode::NOT_FOUND, none.clone()),
        // Both.
        ("viewer", "workspace_id=w1&tenant_id=t1", StatusCode::OK, t1.clone()),
        ("viewer", "workspace_id=w2&tenant_id=t1", StatusCode::NOT_FOUND, none.clone()),
        // Other filters keep the rule.
        ("viewer", "outcome=blocked", StatusCode::OK, BTreeSet::from([w.blocked.clone()])),
        ("viewer", "operation_type=report", StatusCode::OK, none.clone()),
        // A service token sees every run that matches.
        ("service", "tenant_id=t2", StatusCode::OK, BTreeSet::from([w.t2.clone()])),
        ("service", "workspace_id=w2", StatusCode::OK, BTreeSet::from([w.t3.clone()])),
        ("service", "workspace_id=w1", StatusCode::OK, set(&[&w.t1, &w.blocked, &w.t2])),
    ];
    for (who, query, expected, runs) in cases {
        let token = token(&api, who);
        let reply = api.get(&format!("/v1/runs?{query}"), &token).await;
        assert_eq!(reply.status, expected, "JSON: {who} ?{query}: {}", reply.text());
        let body = reply.json();
        match expected {
            StatusCode::OK => {
                let listed: BTreeSet<String> = ids(&body["runs"]).into_iter().collect();
                assert_eq!(listed, runs, "JSON: {who} ?{query}");
            }
            StatusCode::NOT_FOUND => assert_eq!(body["error"]["code"], "not_found", "{who} ?{query}"),
            _ => assert_eq!(body["error"]["code"], "forbidden", "{who} ?{query}"),
        }

        let page = api.get(&format!("/admin/operations?{query}"), &token).await;
        assert_eq!(page.status, expected, "HTML: {who} ?{query}: {}", page.text());
        assert!(page.content_type.starts_with("text/html"), "{}", page.content_type);
        if expected == StatusCode::OK {
            assert_eq!(page_runs(&page), runs, "HTML: {who} ?{query}");
        }
    }
}

#[tokio::test]
async fn the_run_page_shows_the_blocked_reason_and_next_step() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    let viewer = api.actor("viewer");
    let page = api.get(&format!("/admin/operations/{}", w.blocked), &viewer).await;
    assert_eq!(page.status, StatusCode::OK);
    let text = page.text();
    let reason = ReasonCode::CapabilityMissing;
    assert!(text.contains(reason.as_str()), "the reason code: {text}");
    assert!(text.contains(reason.operator_message()), "the reason in words: {text}");
    assert!(text.contains(&format!("Next step: {}", reason.next_step())), "the next step: {text}");
    assert!(text.contains("data-outcome=\"blocked\""), "{text}");

    let list = api.get("/admin/operations", &viewer).await;
    assert_eq!(list.status, StatusCode::OK);
    let shown = page_runs(&list);
    assert!(shown.contains(&w.blocked) && shown.contains(&w.t1), "{}", list.text());
    assert!(list.text().contains("capability_missing"), "the list shows the reason: {}", list.text());

    // A browser signs in once and sends its session cookie instead of the header.
    let record = api.state.tokens.authenticate_record(&viewer).unwrap().unwrap();
    let session = api.state.sessions.open(record.id);
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("/admin/operations/{}", w.blocked))
        .header(header::COOKIE, format!("theme=dark; opledger_session={session}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let by_cookie = api.send(request).await;
    assert_eq!(by_cookie.status, StatusCode::OK);
    assert!(by_cookie.text().contains(reason.next_step()));
}

#[tokio::test]
async fn losing_the_view_capability_then_the_membership_hides_the_run() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    let viewer = api.actor("viewer");
    let detail = format!("/v1/runs/{}", w.t1);
    api.get(&detail, &viewer).await.expect(StatusCode::OK);
    api.authority(json!([{"type": "capability_revoked", "tenant_id": "t1", "actor_id": "viewer",
        "capability": "operations.view"}]))
        .await;
    api.get(&detail, &viewer).await.expect_error(StatusCode::FORBIDDEN, "forbidden");
    api.get("/v1/runs?tenant_id=t1", &viewer).await.expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(api.get("/v1/runs", &viewer).await.expect(StatusCode::OK)["runs"], json!([]));
    api.authority(json!([{"type": "tenant_member_removed", "tenant_id": "t1", "actor_id": "viewer"}])).await;
    api.get(&detail, &viewer).await.expect_error(StatusCode::NOT_FOUND, "not_found");
    let page = api.get(&format!("/admin/operations/{}", w.t1), &viewer).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_login_form_sets_a_session_cookie() {
    let api = Api::seeded().await;
    let form = api.request(Method::GET, "/admin/login", None, None).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.text().contains("name=\"token\""), "{}", form.text());
    let viewer = api.actor("viewer");
    let login = |token: &str| {
        Request::builder()
            .method(Method::POST)
            .uri("/admin/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(format!("token={token}")))
            .unwrap()
    };
    let response =
        tower::ServiceExt::oneshot(opledger_tools::server::router(api.state.clone()), login(&viewer)).await.unwrap();
    assert!(response.status().is_redirection(), "{}", response.status());
    assert_eq!(response.headers().get(header::LOCATION).unwrap(), "/admin/operations");
    let cookie = response.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned();
    assert!(cookie.starts_with("opledger_session=") && cookie.contains("HttpOnly"), "{cookie}");
    assert!(!cookie.contains(&viewer), "the session cookie is not the token: {cookie}");
    let refused = api.send(login("opl_nonsense")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}
