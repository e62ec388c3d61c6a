//! The operator console beyond the run list's filters and chart
//! (`monitoring_pages.rs`): the time range, the search by run id, the
//! auto-refresh, a run's decisions and lease, the inbox, the audit trail
//! and the authority state, each under its access rule.

use axum::http::{header, StatusCode};
use serde_json::{json, Value};

use crate::summary::world;
use crate::support::{actor, start_body, Api, Reply};

/// The run ids of a page's rows, in page order.
fn rows(page: &Reply) -> Vec<String> {
    let text = page.text();
    text.split("<tr data-run=\"").skip(1).filter_map(|rest| rest.split('"').next().map(str::to_owned)).collect()
}

/// The target of the link with `rel`, unescaped.
fn link(page: &Reply, rel: &str) -> Option<String> {
    let text = page.text();
    let rest = text.split(&format!("rel=\"{rel}\" href=\"")).nth(1)?;
    Some(rest.split('"').next()?.replace("&amp;", "&"))
}

/// The `data-code` of an error page.
fn code(page: &Reply) -> String {
    let text = page.text();
    text.split("data-code=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_time_range_filters_the_list_and_paging_keeps_it() {
    let api = Api::seeded().await;
    world(&api).await;
    let viewer = api.actor("viewer");
    let all = api.get("/admin/operations", &viewer).await;
    assert_eq!(rows(&all).len(), 6, "{}", all.text());

    // What a browser's datetime-local field sends: no zone, read as UTC.
    let since = api.get("/admin/operations?from=2000-01-01T00:00&to=", &viewer).await;
    assert_eq!(since.status, StatusCode::OK, "{}", since.text());
    assert_eq!(rows(&since), rows(&all));
    assert!(since.text().contains(r#"name="from" type="datetime-local" step="1" value="2000-01-01T00:00:00""#));
    let before = api.get("/admin/operations?to=2000-01-01T00:00", &viewer).await;
    assert!(rows(&before).is_empty() && before.text().contains("No operations match."), "{}", before.text());
    assert!(before.text().contains(r#"data-total="0""#), "the chart counts the range too");
    let future = api.get("/admin/operations?from=2999-01-01T00:00:00Z", &viewer).await;
    assert!(rows(&future).is_empty());

    let first = api.get("/admin/operations?from=2000-01-01T00:00&limit=2", &viewer).await;
    assert_eq!(rows(&first), rows(&all)[..2]);
    let older = link(&first, "next").expect("an Older operations link");
    assert!(older.contains("from=2000-01-01T00%3A00%3A00Z") && older.contains("limit=2"), "{older}");
    let second = api.get(&older, &viewer).await;
    assert_eq!(second.status, StatusCode::OK, "{older}: {}", second.text());
    assert_eq!(rows(&second), rows(&all)[2..4], "page 2 of the same range");

    api.get("/admin/operations?from=yesterday", &viewer).await.expect_error(StatusCode::BAD_REQUEST, "invalid_query");
}

#[tokio::test]
async fn the_range_links_and_auto_refresh_keep_the_filter() {
    let api = Api::seeded().await;
    world(&api).await;
    let viewer = api.actor("viewer");
    let plain = api.get("/admin/operations?outcome=blocked&limit=2", &viewer).await;
    assert!(plain.headers.get("refresh").is_none(), "no refresh unless asked");
    let text = plain.text().replace("&amp;", "&");
    assert!(text.contains("/admin/operations?outcome=blocked&limit=2&refresh=30\">Refresh every 30 s"), "{text}");
    assert!(text.contains("/admin/operations?outcome=blocked&from="), "the range links keep the filter: {text}");

    let refreshing = api.get("/admin/operations?outcome=blocked&limit=2&refresh=30", &viewer).await;
    assert_eq!(refreshing.status, StatusCode::OK);
    assert_eq!(refreshing.headers.get("refresh").unwrap(), "30");
    assert!(refreshing.text().contains(r#"name="refresh" type="checkbox" value="30" checked"#));
    let older = link(&refreshing, "next").expect("an Older operations link");
    assert!(older.contains("outcome=blocked") && older.contains("refresh=30"), "paging keeps refreshing: {older}");
    assert!(refreshing.text().contains("Stop refreshing"));

    let fast = api.get("/admin/operations?refresh=1", &viewer).await;
    assert_eq!(fast.headers.get("refresh").unwrap(), "5", "never faster than REFRESH_SECONDS_MIN");
    let slow = api.get("/admin/operations?refresh=999999", &viewer).await;
    assert_eq!(slow.headers.get("refresh").unwrap(), "3600");
}

#[tokio::test]
async fn a_search_goes_to_a_run_the_viewer_may_see_and_hides_the_rest() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    let viewer = api.actor("viewer");
    let found = api.get(&format!("/admin/search?run=+{}+", w.failed), &viewer).await;
    assert_eq!(found.status, StatusCode::SEE_OTHER, "{}", found.text());
    assert_eq!(found.headers.get(header::LOCATION).unwrap(), &format!("/admin/operations/{}", w.failed));
    let empty = api.get("/admin/search?run=", &viewer).await;
    assert_eq!(empty.headers.get(header::LOCATION).unwrap(), "/admin/operations");

    // Unknown, malformed, and hidden by the access rule (403 or 404 on the
    // run's page): one answer, so a search tells nothing more.
    let unknown = uuid::Uuid::now_v7().to_string();
    let member = api.actor("member");
    let stranger = api.actor("stranger");
    assert_eq!(api.get(&format!("/admin/operations/{}", w.failed), &member).await.status, StatusCode::FORBIDDEN);
    for (token, id) in
        [(&viewer, unknown.as_str()), (&viewer, "not-a-run"), (&member, &w.failed), (&stranger, &w.failed)]
    {
        let page = api.get(&format!("/admin/search?run={id}"), token).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{id}: {}", page.text());
        assert_eq!(code(&page), "not_found");
        assert!(page.text().contains(&format!("no such run: {id}")), "{}", page.text());
    }
}

#[tokio::test]
async fn a_run_page_shows_every_decision_the_lease_and_links_checks_to_the_audit() {
    let api = Api::seeded().await;
    let run =
        api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await["id"].as_str().unwrap().to_owned();
    api.begin(&run).await.expect(StatusCode::OK);
    let retry = json!({"outcome": "failed", "retryable": true, "failure": {"code": "timeout", "message": "try again"}});
    api.complete(&run, &retry).await.expect(StatusCode::OK);
    api.begin(&run).await.expect(StatusCode::OK);

    let page = api.get(&format!("/admin/operations/{run}"), &api.service).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let text = page.text();
    for section in [
        r#"data-gate="start" data-attempt="0" data-outcome="allowed""#,
        r#"data-gate="begin" data-attempt="1" data-outcome="allowed""#,
        r#"data-gate="begin" data-attempt="2" data-outcome="allowed""#,
    ] {
        assert!(text.contains(section), "{section}: {text}");
    }
    assert_eq!(text.matches(r#"<table class="checks">"#).count(), 3, "the checks of every decision");
    assert!(text.contains(r#"data-lease="live""#) && text.contains("Lease of attempt 2"), "{text}");
    assert!(text.contains(r#"class="expires""#) && text.contains(r#"class="renewed""#));

    // Each check's position links to the audit trail as of it, where the
    // entry of that authority event is first and marked.
    let position: u64 = text
        .split(r#"<a class="position" href="/admin/audit?as_of="#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a position linked to the audit trail")
        .parse()
        .unwrap();
    let audit = api.get(&format!("/admin/audit?as_of={position}"), &api.service).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.text());
    let marked = format!(r#"<tr class="as-of" data-position="{position}""#);
    assert!(audit.text().contains(&marked), "{marked}: {}", audit.text());
    let entry = api.get(&format!("/v1/audit?as_of={position}&limit=1"), &api.service).await.expect(StatusCode::OK);
    assert_eq!(entry["entries"][0]["position"], position, "{entry}");
    assert!(audit.text().contains(entry["entries"][0]["action"].as_str().unwrap()));

    // An actor may not read the audit trail: it sees the positions unlinked.
    let viewer = api.get(&format!("/admin/operations/{run}"), &api.actor("viewer")).await;
    assert_eq!(viewer.status, StatusCode::OK);
    assert!(!viewer.text().contains("/admin/audit") && viewer.text().contains(r#"<span class="position">"#));
}

#[tokio::test]
async fn the_inbox_lists_the_viewers_notifications_newest_first_unread_marked() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    api.post(&format!("/v1/notifications/{}/read?actor_id=u1", w.failed), &api.service, &json!({}))
        .await
        .expect(StatusCode::OK);
    let u1 = api.actor("u1");
    let inbox = api.get("/admin/inbox", &u1).await;
    assert_eq!(inbox.status, StatusCode::OK, "{}", inbox.text());
    assert_eq!(rows_of_inbox(&inbox), [(w.succeeded.clone(), false), (w.failed.clone(), true)], "newest first");
    assert!(inbox.text().contains(r#"<tr class="unread""#) && inbox.text().contains(r#"data-unread="1""#));
    let unread = api.get("/admin/inbox?unread=true", &u1).await;
    assert_eq!(rows_of_inbox(&unread), [(w.succeeded.clone(), false)]);

    // An actor reads its own inbox only, as on the JSON route.
    let other = api.get("/admin/inbox?actor_id=u3", &u1).await;
    assert_eq!((other.status, code(&other)), (StatusCode::FORBIDDEN, "forbidden".to_owned()));
    assert_eq!(api.get("/admin/inbox?actor_id=u1", &u1).await.status, StatusCode::OK);
    // A service names the actor; without one it is asked for one.
    let ask = api.get("/admin/inbox", &api.service).await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(ask.text().contains(r#"name="actor_id""#) && rows_of_inbox(&ask).is_empty());
    assert_eq!(rows_of_inbox(&api.get("/admin/inbox?actor_id=u1", &api.service).await).len(), 2);
    assert!(rows_of_inbox(&api.get("/admin/inbox", &api.actor("viewer")).await).is_empty());
}

#[tokio::test]
async fn an_inbox_is_paged_older_and_older_on_the_api_and_the_page() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    let u1 = api.actor("u1");

    // The JSON route: one a page, the cursor of each page to the next.
    let newest = api.get("/v1/notifications?limit=1", &u1).await.expect(StatusCode::OK);
    assert_eq!(newest["notifications"][0]["run_id"], w.succeeded.as_str(), "{newest}");
    assert_eq!(newest["unread"], 2, "the unread count is the inbox's, not the page's");
    let cursor = newest["next_cursor"].as_str().expect("an older page follows").to_owned();
    let older = api.get(&format!("/v1/notifications?limit=1&cursor={cursor}"), &u1).await.expect(StatusCode::OK);
    assert_eq!(older["notifications"][0]["run_id"], w.failed.as_str(), "{older}");
    assert_eq!(older["next_cursor"], Value::Null, "the last page");
    let whole = api.get("/v1/notifications", &u1).await.expect(StatusCode::OK);
    assert_eq!((whole["notifications"].as_array().unwrap().len(), &whole["next_cursor"]), (2, &Value::Null));
    for bad in ["abc", "0", "-3", "%2B3"] {
        let refused = api.get(&format!("/v1/notifications?cursor={bad}"), &u1).await.expect(StatusCode::BAD_REQUEST);
        assert_eq!(refused["error"]["code"], "invalid_cursor", "{bad}: {refused}");
    }

    // The page: its "Older notifications" link keeps the actor and the page size.
    let first = api.get("/admin/inbox?actor_id=u1&limit=1", &api.service).await;
    assert_eq!(rows_of_inbox(&first), [(w.succeeded.clone(), false)]);
    let link =
        first.text().split(r#"<a rel="next" href=""#).nth(1).unwrap().split('"').next().unwrap().replace("&amp;", "&");
    assert_eq!(link, format!("/admin/inbox?actor_id=u1&limit=1&cursor={cursor}"));
    let second = api.get(&link, &api.service).await;
    assert_eq!(rows_of_inbox(&second), [(w.failed.clone(), false)]);
    assert!(!second.text().contains(r#"rel="next""#) && second.text().contains("Newest notifications"));
    // The form's empty page size is no page size.
    assert_eq!(rows_of_inbox(&api.get("/admin/inbox?limit=", &u1).await).len(), 2);
    let refused = api.get("/admin/inbox?actor_id=u1&cursor=abc", &api.service).await;
    assert_eq!((refused.status, code(&refused)), (StatusCode::BAD_REQUEST, "invalid_cursor".to_owned()));
}

/// An inbox page's rows: run id and whether it is read.
fn rows_of_inbox(page: &Reply) -> Vec<(String, bool)> {
    let text = page.text();
    text.split(" data-run=\"")
        .skip(1)
        .map(|rest| {
            let run = rest.split('"').next().unwrap().to_owned();
            let read = rest.split("data-read=\"").nth(1).unwrap().starts_with("true");
            (run, read)
        })
        .collect()
}

#[tokio::test]
async fn the_audit_and_authority_pages_are_for_service_sessions() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    let viewer = api.actor("viewer");
    let refusal = api.get("/v1/audit", &viewer).await.expect_error(StatusCode::FORBIDDEN, "forbidden");
    for page in ["/admin/audit", "/admin/authority?as_of=3"] {
        let answer = api.get(page, &viewer).await;
        assert_eq!((answer.status, code(&answer)), (StatusCode::FORBIDDEN, "forbidden".to_owned()), "{page}");
        assert!(answer.text().contains(refusal["error"]["message"].as_str().unwrap()), "the JSON route's refusal");
    }
    let operations = api.get("/admin/operations", &viewer).await.text();
    assert!(operations.contains(r#"href="/admin/inbox""#) && !operations.contains(r#"href="/admin/audit""#));
    let service = api.get("/admin/operations", &api.service).await.text();
    for page in ["/admin/operations", "/admin/inbox", "/admin/audit", "/admin/authority"] {
        assert!(service.contains(&format!(r#"href="{page}""#)), "{page} in the navigation");
    }

    // The audit trail of one run, a page of one entry at a time.
    let first = api.get(&format!("/admin/audit?run_id={}&limit=1&from=2000-01-01T00:00", w.failed), &api.service).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let positions = |page: &Reply| -> Vec<String> {
        let text = page.text();
        text.split(" data-position=\"").skip(1).map(|rest| rest.split('"').next().unwrap().to_owned()).collect()
    };
    assert_eq!(positions(&first).len(), 1);
    let older = link(&first, "next").expect("an Older entries link");
    assert!(older.contains(&format!("run_id={}", w.failed)) && older.contains("limit=1"), "{older}");
    let second = api.get(&older, &api.service).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(positions(&second).len(), 1);
    assert_ne!(positions(&second), positions(&first));
    assert!(second.text().contains("Newest entries"));
    let json = api.get(&format!("/v1/audit?run_id={}&limit=2", w.failed), &api.service).await.expect(StatusCode::OK);
    let expected: Vec<String> = json["entries"].as_array().unwrap().iter().map(|e| e["position"].to_string()).collect();
    assert_eq!([positions(&first), positions(&second)].concat(), expected, "the JSON route's entries");
    let bad = api.get("/admin/audit?run_id=nope", &api.service).await;
    assert_eq!((bad.status, code(&bad)), (StatusCode::BAD_REQUEST, "invalid_run_id".to_owned()));

    // The authority state before and after a revocation.
    let granted = api.get("/v1/authority?tenant_id=t1&actor_id=u1", &api.service).await.expect(StatusCode::OK);
    let revoked_at = api
        .authority(
            json!([{"type": "capability_revoked", "tenant_id": "t1", "actor_id": "u1", "capability": "tenant.sync"}]),
        )
        .await["last_position"]
        .as_u64()
        .unwrap();
    let before =
        api.get(&format!("/admin/authority?tenant_id=t1&actor_id=u1&as_of={}", revoked_at - 1), &api.service).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text());
    assert!(before.text().contains("u1: tenant.sync"), "{}", before.text());
    let grant = granted["tenants"][0]["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["capability"] == "tenant.sync")
        .unwrap()["position"]
        .clone();
    assert!(before.text().contains(&format!(r#"href="/admin/audit?as_of={grant}""#)), "the grant's position, linked");
    let now = api.get("/admin/authority?tenant_id=t1&actor_id=u1", &api.service).await;
    assert!(!now.text().contains("u1: tenant.sync") && now.text().contains("u1: operations.view"), "{}", now.text());
    let past = api.get("/admin/authority?as_of=999999", &api.service).await;
    assert_eq!((past.status, code(&past)), (StatusCode::BAD_REQUEST, "invalid_as_of".to_owned()));
}

/// Every `(series, count)` segment of the chart over time, bucket by bucket.
fn segments(page: &Reply) -> Vec<Vec<(String, u64)>> {
    let text = page.text();
    let figure = text.split("<figure class=\"over-time\"").nth(1).unwrap_or_default().split("</figure>").next();
    let attribute = |rest: &str, name: &str| {
        rest.split(&format!("{name}=\"")).nth(1).and_then(|v| v.split('"').next()).unwrap_or_default().to_owned()
    };
    figure
        .unwrap_or_default()
        .split("<g data-bucket=\"")
        .skip(1)
        .map(|bucket| {
            let bucket = bucket.split("</g>").next().unwrap_or_default();
            let series = bucket.split("<rect ").skip(1);
            series
                .map(|rect| (attribute(rect, "data-series"), attribute(rect, "data-count").parse().unwrap()))
                .collect()
        })
        .collect()
}

/// The sum over every bucket of one series.
fn series_total(segments: &[Vec<(String, u64)>], series: &str) -> u64 {
    segments.iter().flatten().filter(|(name, _)| name == series).map(|(_, count)| count).sum()
}

#[tokio::test]
async fn the_chart_over_time_stacks_outcomes_per_bucket_blocked_apart_from_failed() {
    let api = Api::seeded().await;
    world(&api).await;
    let viewer = api.actor("viewer");
    let summary = api.get("/v1/runs/summary?tenant_id=t1", &viewer).await.expect(StatusCode::OK);
    let page = api.get("/admin/operations?tenant_id=t1&limit=1", &viewer).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let text = page.text();
    assert!(
        text.contains(r#"<figure class="over-time" data-width="hour">"#),
        "a range of minutes is by the hour: {text}"
    );
    let buckets = segments(&page);
    assert!(!buckets.is_empty() && buckets.len() <= 2, "the runs of the last minutes: {buckets:?}");
    for (outcome, count) in [("blocked", 3), ("failed", 1), ("succeeded", 1), ("pending", 1)] {
        assert_eq!(series_total(&buckets, outcome), count, "{outcome}: {buckets:?}");
        assert_eq!(summary["by_outcome"][outcome], count, "the chart counts what the summary counts");
    }
    let blocked_and_failed = buckets.iter().flatten().filter(|(name, _)| name == "blocked" || name == "failed");
    assert_eq!(blocked_and_failed.count(), 2, "a segment each, never one for both: {buckets:?}");
    assert!(text.contains(r#"<rect data-series="blocked" data-count="3""#), "{text}");
    assert!(text.contains(" UTC: 3 blocked</title>"), "each segment has its hover text: {text}");
    for (outcome, word) in
        [("succeeded", "succeeded"), ("failed", "failed"), ("blocked", "blocked"), ("pending", "pending")]
    {
        let legend = text.split(&format!(r#"<g data-legend="{outcome}">"#)).nth(1).unwrap_or_default();
        let legend = legend.split("</g>").next().unwrap_or_default();
        assert!(legend.contains(&format!(">{word}</text>")) && legend.contains("fill=\"#"), "{outcome}: {legend}");
    }
    let fill = |outcome: &str| {
        let legend = text.split(&format!(r#"<g data-legend="{outcome}">"#)).nth(1).unwrap_or_default();
        legend.split("fill=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default().to_owned()
    };
    assert_ne!(fill("blocked"), fill("failed"), "blocked and failed are told apart by colour");
    assert!(text.contains(r#"aria-label="Operations by outcome per hour"#), "a text alternative: {text}");
    assert!(text.contains("<summary>The chart's numbers</summary>"), "and the numbers as a table");
    assert!(text.contains(r#"<g data-outcome="blocked" data-count="3">"#), "the totals by outcome stay");

    // Since 2000: by the day, the newest 60 days, a dozen labels at most.
    let long = api.get("/admin/operations?tenant_id=t1&from=2000-01-01T00:00", &viewer).await;
    assert_eq!(long.status, StatusCode::OK, "{}", long.text());
    let text = long.text();
    assert!(text.contains(r#"data-width="day""#) && text.contains("the newest 60 are shown"), "{text}");
    let buckets = segments(&long);
    assert_eq!(buckets.len(), 60);
    assert_eq!(series_total(&buckets, "blocked"), 3);
    let labels =
        text.split(r#"<g class="x-axis">"#).nth(1).unwrap_or_default().split("</g>").next().unwrap_or_default();
    let days = labels.matches("<text").count() - labels.matches(">20").count();
    assert!((1..=12).contains(&days), "{days} day labels: {labels}");

    // A viewer of another workspace's tenant counts none of t1's runs.
    let u3 = api.actor("u3");
    let other = api.get("/admin/operations", &u3).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text());
    let theirs = api.get("/v1/runs/summary", &u3).await.expect(StatusCode::OK);
    let buckets = segments(&other);
    let charted: u64 = buckets.iter().flatten().map(|(_, count)| count).sum();
    assert_eq!(charted, theirs["total"].as_u64().unwrap(), "{buckets:?}");
    assert_eq!((series_total(&buckets, "blocked"), series_total(&buckets, "failed")), (0, 0), "{buckets:?}");
    let none = api.get("/admin/operations?outcome=blocked", &u3).await;
    assert!(segments(&none).is_empty(), "{}", none.text());
    assert!(none.text().contains("No operations to chart in this time range."), "{}", none.text());
}
