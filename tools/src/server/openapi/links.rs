//! OpenAPI links: which answer's values feed which operation, so a
//! stateful client (schemathesis' stateful phase, in the tests) can follow
//! a run's life with real ids instead of random ones: a start's new run is
//! begun, read, explained and cancelled; a begin's attempt is reported on,
//! heartbeated and completed. Links are hints for tools: the server neither
//! reads nor needs them.

use serde_json::{json, Value};

/// The run of a start's answer: the new one, or the existing one it deduped to.
const STARTED_RUN: &str = "$response.body#/run/id";
/// The run a command was sent to, kept for the next command.
const SAME_RUN: &str = "$request.path.id";
/// The attempt `begin` answered, which fences the worker's calls.
const BEGUN_ATTEMPT: &str = "$response.body#/run/attempt";

/// `(source operation, its status, link name, target operation, id from, fenced on the begun attempt)`.
const LINKS: &[(&str, &str, &str, &str, &str, bool)] = &[
    ("start", "201", "BeginTheRun", "begin", STARTED_RUN, false),
    ("start", "201", "ReadTheRun", "get_run", STARTED_RUN, false),
    ("start", "201", "ExplainTheRun", "explain", STARTED_RUN, false),
    ("start", "201", "CancelTheRun", "cancel", STARTED_RUN, false),
    // A 200 start carries a real run too: the existing one (`deduped`,
    // still queued) or the recorded blocked one.
    ("start", "200", "BeginTheRun", "begin", STARTED_RUN, false),
    ("start", "200", "ReadTheRun", "get_run", STARTED_RUN, false),
    ("begin", "200", "ReportProgress", "progress", SAME_RUN, true),
    ("begin", "200", "Heartbeat", "heartbeat", SAME_RUN, true),
    ("begin", "200", "CompleteTheAttempt", "complete", SAME_RUN, true),
    ("begin", "200", "ReadTheRun", "get_run", SAME_RUN, false),
    ("complete", "200", "ReadTheRun", "get_run", SAME_RUN, false),
    ("complete", "200", "ExplainTheRun", "explain", SAME_RUN, false),
];

/// Adds [`LINKS`] to the success answers of their source operations, in
/// the serialized document: utoipa 5's `Link` serializes its fields in
/// snake case (`operation_id`), which no OpenAPI reader knows.
pub fn add_links(document: &mut Value) {
    for (source, status, name, target, id, fenced) in LINKS {
        let Some(operation) = operation_mut(document, source) else { continue };
        let Some(Value::Object(response)) = operation.pointer_mut(&format!("/responses/{status}")) else { continue };
        let mut link = json!({"operationId": target, "parameters": {"id": id}});
        if *fenced {
            link["requestBody"] = json!({ "attempt": BEGUN_ATTEMPT });
        }
        let links = response.entry("links").or_insert_with(|| json!({}));
        links[*name] = link;
    }
}

fn operation_mut<'a>(document: &'a mut Value, operation_id: &str) -> Option<&'a mut Value> {
    let paths = document.get_mut("paths")?.as_object_mut()?;
    paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .find(|operation| operation.get("operationId").and_then(Value::as_str) == Some(operation_id))
}
