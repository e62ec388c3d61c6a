//! `/metrics` as a Prometheus operator reads it (issue 13, section 2):
//! `promtool check metrics` accepts the exposition without a lint problem,
//! and each family agrees with what the server did and with Monitoring.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::http::{header, Method, StatusCode};
use serde_json::json;

use crate::support::{actor, request, start_body, Api};

/// Samples by series (`name{labels}` as printed), each family's lines as one.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|line| !line.is_empty() && !line.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("name value: {line}"));
        let value = if value == "+Inf" { f64::INFINITY } else { value.parse().unwrap() };
        samples.insert(series.to_owned(), value);
    }
    samples
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

/// Runs `promtool check metrics` on `text` and answers what it printed.
/// Without promtool the test fails: a skipped check would read as a pass.
fn promtool_check(text: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|error| {
        panic!("promtool is not installed ({error}): `bash scripts/test` installs it (Debian's prometheus package)")
    });
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

/// A log clock the test moves on, so that a lease lapses without waiting.
fn moving_clock() -> (opledger::log::Clock, Arc<AtomicI64>) {
    let offset = Arc::new(AtomicI64::new(0));
    let read = Arc::clone(&offset);
    let clock = Arc::new(move || chrono::Utc::now() + chrono::Duration::seconds(read.load(Ordering::SeqCst)));
    (clock, offset)
}

/// Starts, a begin and a complete, a blocked start, a cancel and a reaped
/// lease: one run of each outcome; then one run left queued, one running.
async fn busy_server() -> Api {
    let (clock, offset) = moving_clock();
    let api = Api::seeded_with_clock(clock).await;
    let done = api.start_accepted(&start_body("report", "t1", actor("u1"))).await;
    let done = done["id"].as_str().unwrap();
    api.begin(done).await.expect(StatusCode::OK);
    api.complete(done, &json!({"outcome": "succeeded"})).await.expect(StatusCode::OK);
    api.start(&start_body("inventory_sync", "t1", actor("member"))).await.expect(StatusCode::OK);
    let cancelled = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let uri = format!("/v1/runs/{}/cancel", cancelled["id"].as_str().unwrap());
    api.post(&uri, &api.service, &json!({"cancelled_by": actor("ops")})).await.expect(StatusCode::OK);
    api.authority(json!([{"type": "operation_type_registered", "operation_type": "leased_sync",
        "required_capability": "tenant.sync", "provider_backed": true, "writes": false,
        "system_authority_allowed": true, "max_attempts": 1, "lease_seconds": 30}]))
        .await;
    let lost = api.start_accepted(&start_body("leased_sync", "t1", actor("u1"))).await;
    api.begin(lost["id"].as_str().unwrap()).await.expect(StatusCode::OK);
    offset.fetch_add(31, Ordering::SeqCst);
    assert_eq!(opledger_tools::server::leases::reap_once(&api.state).await.unwrap(), 1);
    // Still live at the scrape: one queued, one running.
    api.start_accepted(&start_body("report", "t1", actor("u1"))).await;
    let running = api.start_accepted(&start_body("leased_sync", "t1", actor("u1"))).await;
    api.begin(running["id"].as_str().unwrap()).await.expect(StatusCode::OK);
    api
}

#[tokio::test]
async fn promtool_accepts_the_metrics_and_every_family_agrees_with_the_server() {
    let api = busy_server().await;
    // A read waits for the projections to reach the head: Monitoring is current.
    let summary = api.get("/v1/runs/summary", &api.service).await.expect(StatusCode::OK);
    let reply = api.get("/metrics", &api.service).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type.starts_with("text/plain; version=0.0.4"), "{}", reply.content_type);
    let text = reply.text();
    let (passed, printed) = promtool_check(&text);
    assert!(passed && printed.trim().is_empty(), "promtool check metrics:\n{printed}\n{text}");
    let s = samples(&text);

    // The write pipeline's histograms.
    let answered = value(&s, "opledger_log_appends_acknowledged_total")
        + value(&s, "opledger_log_appends_duplicate_total")
        + value(&s, "opledger_log_appends_conflicted_total");
    assert!(answered >= 11.0, "every start, begin, complete, cancel and reap appended: {answered}");
    assert_eq!(value(&s, "opledger_log_append_duration_seconds_count"), answered);
    assert!(value(&s, "opledger_log_append_duration_seconds_sum") > 0.0);
    let commits = value(&s, "opledger_log_commits_total");
    assert_eq!(value(&s, "opledger_log_group_commit_events_count"), commits);
    assert_eq!(value(&s, "opledger_log_group_commit_events_sum"), value(&s, "opledger_log_events_appended_total"));
    let syncs = value(&s, "opledger_log_fsync_duration_seconds_count");
    assert!(syncs >= 1.0 && syncs <= commits, "{syncs} syncs for {commits} commits");
    for histogram in [
        "opledger_log_append_duration_seconds",
        "opledger_log_fsync_duration_seconds",
        "opledger_log_group_commit_events",
        "opledger_http_request_duration_seconds",
    ] {
        let infinite = s
            .iter()
            .filter(|(series, _)| series.starts_with(&format!("{histogram}_bucket")) && series.contains("le=\"+Inf\""));
        let counts = s.iter().filter(|(series, _)| series.starts_with(&format!("{histogram}_count")));
        let infinite: f64 = infinite.map(|(_, v)| v).sum();
        assert_eq!(infinite, counts.map(|(_, v)| v).sum::<f64>(), "{histogram}: +Inf bucket = count");
        assert!(infinite > 0.0, "{histogram} observed something");
    }

    // Runs by outcome and by status: Monitoring's counts, blocked apart from failed.
    for (outcome, count) in summary["by_outcome"].as_object().unwrap() {
        let series = format!("opledger_runs_by_outcome{{outcome=\"{outcome}\"}}");
        assert_eq!(value(&s, &series), count.as_f64().unwrap(), "{series}");
    }
    for (outcome, count) in
        [("succeeded", 1.0), ("blocked", 1.0), ("cancelled", 1.0), ("failed", 1.0), ("pending", 2.0)]
    {
        assert_eq!(value(&s, &format!("opledger_runs_by_outcome{{outcome=\"{outcome}\"}}")), count, "{outcome}");
    }
    for (status, count) in summary["by_status"].as_object().unwrap() {
        let series = format!("opledger_runs_by_status{{status=\"{status}\"}}");
        assert_eq!(value(&s, &series), count.as_f64().unwrap(), "{series}");
    }
    assert_eq!(value(&s, "opledger_runs_by_status{status=\"completed\"}"), 4.0);
    assert_eq!(value(&s, "opledger_runs_by_status{status=\"running\"}"), 1.0);
    assert_eq!(value(&s, "opledger_runs_by_status{status=\"queued\"}"), 1.0);

    // Projection lag, leases, cancels, storage.
    let head = value(&s, "opledger_log_head_position");
    assert_eq!(head, api.head() as f64);
    assert_eq!(value(&s, "opledger_projection_lag_events"), head - value(&s, "opledger_projection_applied_position"));
    assert_eq!(value(&s, "opledger_lease_abandonments_total"), 1.0);
    assert_eq!(value(&s, "opledger_cancellations_total"), 1.0);
    assert_eq!(value(&s, "opledger_storage_errors_total"), 0.0);
    assert_eq!(value(&s, "opledger_store_reopen_attempts_total"), 0.0);
    assert_eq!(value(&s, "opledger_store_reopens_total"), 0.0);

    // The standard process families, read from /proc/self.
    assert!(value(&s, "process_resident_memory_bytes") > 1024.0 * 1024.0);
    assert!(value(&s, "process_virtual_memory_bytes") >= value(&s, "process_resident_memory_bytes"));
    assert!(value(&s, "process_cpu_seconds_total") >= 0.0);
    assert!(value(&s, "process_open_fds") >= 3.0);
    assert!(value(&s, "process_max_fds") >= value(&s, "process_open_fds"));
    let now = chrono::Utc::now().timestamp() as f64;
    let started = value(&s, "process_start_time_seconds");
    assert!(started <= now + 1.0 && started > now - 24.0 * 3600.0, "started {started}, now {now}");
}

#[tokio::test]
async fn a_scraper_that_asks_for_openmetrics_gets_it() {
    let api = busy_server().await;
    let mut asked = request(Method::GET, "/metrics", Some(&api.service), None);
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    asked.headers_mut().insert(header::ACCEPT, accept.parse().unwrap());
    let reply = api.send(asked).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{}", reply.content_type);
    let text = reply.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE opledger_cancellations counter\n"), "{text}");
    assert!(text.contains("# UNIT opledger_log_append_duration_seconds seconds\n"), "{text}");
    assert!(text.contains("opledger_cancellations_total 1\n"), "{text}");
}
