//! The OpenAPI document against real answers. Every answer of this suite
//! is already checked against it (`support::check_contract`); these tests
//! pin what a client relies on most, and that the check can fail.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::openapi_check::validate;
use crate::support::{actor, start_body, Api};

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

#[tokio::test]
async fn the_server_serves_its_document_without_a_token() {
    let api = Api::empty().await;
    let reply = api.request(Method::GET, "/openapi.json", None, None).await;
    let served = reply.expect(StatusCode::OK);
    assert!(reply.content_type.starts_with("application/json"), "{}", reply.content_type);
    let generated: Value = serde_json::from_str(&opledger_tools::server::openapi::document_text().unwrap()).unwrap();
    assert_eq!(served, generated);
}

#[tokio::test]
async fn a_start_answer_has_the_documented_required_fields_and_a_broken_one_is_caught() {
    let api = Api::seeded().await;
    let accepted = api.start(&start_body("report", "t1", actor("u1"))).await.expect(StatusCode::CREATED);
    let deduped = {
        let mut body = start_body("report", "t1", actor("u1"));
        body["dedupe_key"] = json!("d1");
        api.start(&body).await.expect(StatusCode::CREATED);
        api.start(&body).await.expect(StatusCode::OK)
    };
    let document: Value = serde_json::from_str(&opledger_tools::server::openapi::document_text().unwrap()).unwrap();
    let answer = &document["components"]["schemas"]["StartAnswerBody"];
    let required: Vec<&str> = answer["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(required, ["result", "reason_code", "next_step"]);
    let run_required = document["components"]["schemas"]["Run"]["required"].as_array().unwrap().len();
    assert!(run_required >= 30, "every Run field is always present: {run_required}");
    for body in [&accepted, &deduped] {
        validate(&schema("StartAnswerBody"), body, "$").unwrap();
        validate(&schema("Run"), &body["run"], "$.run").unwrap();
    }
    assert_eq!(deduped["result"], "deduped");

    // The check is not vacuous: a missing field, a wrong word, a wrong type.
    let mut missing = accepted.clone();
    missing["run"].as_object_mut().unwrap().remove("tenant_id");
    assert!(validate(&schema("StartAnswerBody"), &missing, "$").unwrap_err().contains("tenant_id"));
    let mut word = accepted.clone();
    word["result"] = json!("maybe");
    assert!(validate(&schema("StartAnswerBody"), &word, "$").is_err());
    let mut typed = accepted.clone();
    typed["run"]["attempts"] = json!("1");
    assert!(validate(&schema("StartAnswerBody"), &typed, "$").is_err());
}

#[tokio::test]
async fn an_undocumented_status_is_caught() {
    let check = |status| crate::openapi_check::check("GET", "/v1/head", status, "application/json", b"{}");
    assert!(check(418).unwrap_err().contains("418 is not documented"));
    let error = br#"{"error": {"code": "not_a_code", "message": "x"}}"#;
    let code = crate::openapi_check::check("GET", "/v1/head", 401, "application/json", error);
    assert!(code.unwrap_err().contains("not_a_code"));
}

/// The fields of SSE events as a parser reads them (`id`, `event`, `data`),
/// from the stream's frames until `count` events arrived.
async fn stream_events(body: &mut axum::body::Body, count: usize) -> Vec<Value> {
    use http_body_util::BodyExt;
    let mut buffer = String::new();
    let mut events = Vec::new();
    let mut fields = serde_json::Map::new();
    while events.len() < count {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(20), body.frame())
            .await
            .expect("an SSE frame within the timeout")
            .expect("the stream goes on")
            .unwrap();
        let Ok(data) = frame.into_data() else { continue };
        buffer.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() && !fields.is_empty() {
                events.push(Value::Object(std::mem::take(&mut fields)));
            } else if let Some((name, value)) = line.split_once(':').filter(|_| !line.starts_with(':')) {
                fields.insert(name.to_owned(), json!(value.strip_prefix(' ').unwrap_or(value)));
            }
        }
    }
    events
}

/// Regression (schemathesis, ST108): the document described the event
/// stream as one string; each event is an object of SSE fields, and the
/// document now says so, as tools read a stream's schema.
#[tokio::test]
async fn each_streamed_event_matches_the_documented_event_schema() {
    let api = Api::seeded().await;
    let document: Value = serde_json::from_str(&opledger_tools::server::openapi::document_text().unwrap()).unwrap();
    let event_schema =
        &document["paths"]["/v1/events/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"];
    let request = crate::support::request(Method::GET, "/v1/events/stream?from=1", Some(&api.service), None);
    let response =
        tower::ServiceExt::oneshot(opledger_tools::server::router(api.state.clone()), request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let events = stream_events(&mut body, 3).await;
    for event in &events {
        validate(event_schema, event, "$").unwrap_or_else(|why| panic!("{why}: {event}"));
        let envelope: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
        assert_eq!(event["id"], envelope["position"].to_string(), "{event}");
        validate(&schema("Envelope"), &envelope, "$.data").unwrap();
    }
    // The check is not vacuous: a bare string is not an event.
    assert!(validate(event_schema, &json!("id: 1"), "$").is_err());
}
