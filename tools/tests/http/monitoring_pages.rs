//! The HTML Monitoring pages as a browser uses them: the filter form's
//! empty fields, "Older" and "Newer" links that keep the filter, the chart
//! of the whole filter, and what a run page shows.

use axum::http::StatusCode;

use crate::summary::{world, FAILURE_CODE, FAILURE_MESSAGE};
use crate::support::{Api, Reply};

/// The run ids of a list page, in page order.
fn rows(page: &Reply) -> Vec<String> {
    let text = page.text();
    text.split("data-run=\"").skip(1).filter_map(|rest| rest.split('"').next().map(str::to_owned)).collect()
}

/// The target of the link with `rel`, unescaped.
fn link(page: &Reply, rel: &str) -> Option<String> {
    let text = page.text();
    let marker = format!("rel=\"{rel}\" href=\"");
    let rest = text.split(&marker).nth(1)?;
    Some(rest.split('"').next()?.replace("&amp;", "&"))
}

#[tokio::test]
async fn the_filter_form_with_empty_fields_lists_the_filtered_runs() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    let viewer = api.actor("viewer");
    let form = "/admin/operations?workspace_id=&tenant_id=&operation_type=&initiator=&outcome=blocked&status=&limit=";
    let page = api.get(form, &viewer).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let newest: Vec<String> = w.blocked.iter().rev().cloned().collect();
    assert_eq!(rows(&page), newest);
    assert!(page.text().contains(r#"<option value="blocked" selected>"#), "the form keeps the choice");
}

#[tokio::test]
async fn older_and_newer_links_keep_the_filter() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    let viewer = api.actor("viewer");
    let newest: Vec<String> = w.blocked.iter().rev().cloned().collect();
    let first = api.get("/admin/operations?tenant_id=t1&outcome=blocked&status=&limit=2", &viewer).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(rows(&first), newest[..2]);
    assert_eq!(link(&first, "prev"), None, "the first page has nothing newer");
    let older = link(&first, "next").expect("an Older operations link");
    assert!(
        older.contains("tenant_id=t1") && older.contains("outcome=blocked") && older.contains("limit=2"),
        "{older}"
    );
    assert!(!older.contains("status="), "empty fields are not carried: {older}");

    let second = api.get(&older, &viewer).await;
    assert_eq!(second.status, StatusCode::OK, "{older}: {}", second.text());
    assert_eq!(rows(&second), newest[2..], "page 2 of the same filter");
    assert!(second.text().contains("Newer operations"));
    let newer = link(&second, "prev").expect("page 2 has a way back");
    assert!(
        newer.contains("tenant_id=t1") && newer.contains("outcome=blocked") && newer.contains("limit=2"),
        "{newer}"
    );
    let back = api.get(&newer, &viewer).await;
    assert_eq!(back.status, StatusCode::OK, "{newer}: {}", back.text());
    assert_eq!(rows(&back), newest[..2], "back on page 1");
    assert_eq!(link(&back, "prev"), None);
}

#[tokio::test]
async fn the_chart_counts_the_whole_filter_by_outcome_with_labels_and_totals() {
    let api = Api::seeded().await;
    world(&api).await;
    let viewer = api.actor("viewer");
    let summary = api.get("/v1/runs/summary?tenant_id=t1", &viewer).await.expect(StatusCode::OK);
    let page = api.get("/admin/operations?tenant_id=t1&limit=1", &viewer).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(rows(&page).len(), 1, "one run on the page");
    let text = page.text();
    for (outcome, word) in [
        ("succeeded", "succeeded"),
        ("partially_succeeded", "partially succeeded"),
        ("failed", "failed"),
        ("blocked", "blocked"),
        ("pending", "pending"),
    ] {
        let count = &summary["by_outcome"][outcome];
        let bar = format!(r#"<g data-outcome="{outcome}" data-count="{count}">"#);
        assert!(text.contains(&bar), "{bar} in {text}");
        let labels = text.split(&bar).nth(1).unwrap().split("</g>").next().unwrap();
        assert!(labels.contains(&format!(">{word}</text>")), "labelled {word}: {labels}");
        assert!(labels.contains(&format!(">{count}</text>")), "numbered {count}: {labels}");
    }
    assert_eq!(summary["total"], 6);
    assert!(text.contains(r#"data-total="6""#) && text.contains("6 operations"), "the total: {text}");
    assert!(text.contains("1 queued, 0 running, 5 completed"), "totals by status: {text}");
}

#[tokio::test]
async fn a_run_page_shows_the_failure_checks_in_words_and_summary_counts_as_a_table() {
    let api = Api::seeded().await;
    let w = world(&api).await;
    let viewer = api.actor("viewer");
    let failed = api.get(&format!("/admin/operations/{}", w.failed), &viewer).await;
    assert_eq!(failed.status, StatusCode::OK);
    let text = failed.text();
    assert!(text.contains(&format!(r#"data-failure-code="{FAILURE_CODE}""#)), "the failure code: {text}");
    assert!(text.contains(FAILURE_MESSAGE), "the failure message: {text}");
    for word in ["authority mode", "workspace membership", "capability", "write gate"] {
        assert!(text.contains(&format!("<td>{word}</td>")), "the check {word:?} in words: {text}");
    }
    for debug_name in ["AuthorityMode", "WriteGate", "TenantMembership"] {
        assert!(!text.contains(debug_name), "no Rust names: {debug_name}");
    }
    assert!(text.contains("none reported"), "no summary counts were reported");

    let succeeded = api.get(&format!("/admin/operations/{}", w.succeeded), &viewer).await.text();
    assert!(!succeeded.contains("data-failure-code"), "no failure on a succeeded run");
    let table = succeeded.split(r#"<table class="summary-counts">"#).nth(1).expect("a summary counts table");
    let table = table.split("</table>").next().unwrap();
    for (key, count) in [("total", 10), ("processed", 10), ("succeeded", 9), ("failed", 1)] {
        assert!(table.contains(&format!("<tr><th>{key}</th><td>{count}</td></tr>")), "{key}: {table}");
    }
    assert!(!table.contains("skipped") && !succeeded.contains("{\""), "only reported keys, no JSON: {table}");
}
