//! Issue 9 over HTTP: secrets that used to reach the immutable log, and ids
//! that looked like another id or carried a credential. What is checked is
//! the log itself, read back through `GET /v1/events` as raw bytes.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{actor, start_body, system, Api};

const BAD: StatusCode = StatusCode::BAD_REQUEST;

/// Every secret below contains it; none may be found in the log.
const CANARY: &str = "CANARY";

fn bytes(value: &Value) -> Option<Vec<u8>> {
    Some(value.to_string().into_bytes())
}

/// A context carrying a secret under every spelling the issue lists, and in
/// free text, next to metadata that must be kept.
fn leaky_context() -> Value {
    json!({
        "tokens": ["CANARY-01", "CANARY-02"],
        "api_keys": {"primary": "CANARY-03"},
        "token_list": "CANARY-04",
        "tokenList": ["CANARY-05"],
        "auth_token_list": ["CANARY-06"],
        "pass": "CANARY-07",
        "key": "CANARY-08",
        "note": "login with password%3DCANARY-09 failed",
        "command": "connect --user admin pass=CANARY-10",
        "aws": "uploaded with AKIACANARY0000000011 to eu-west-1",
        "nested": {"Tokens": "CANARY-12", "apiKeys": ["CANARY-13"], "db": {"pass": 14}},
        "dedupe_key": "nightly",
        "idempotency_key": "k-1",
        "max_tokens": 4096,
    })
}

/// The whole log as it is served, byte for byte.
async fn raw_log(api: &Api) -> String {
    let reply = api.get("/v1/events?from=1&limit=1000", &api.service).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.text()
}

#[tokio::test]
async fn secrets_in_a_start_context_and_a_failure_never_reach_the_log() {
    let api = Api::seeded().await;
    let mut body = start_body("report", "t1", actor("u1"));
    body["context"] = leaky_context();
    let run = api.start_accepted(&body).await;
    let run_id = run["id"].as_str().unwrap();

    let batch = json!({"operation_types": ["report"], "tenant_id": "t2", "initiator": system(),
                       "context": leaky_context()});
    let reply = api.post("/v1/runs/batch", &api.service, &batch).await;
    assert!(reply.status.is_success(), "batch start: {} {}", reply.status, reply.text());

    api.begin(run_id).await.expect(StatusCode::OK);
    let failure = json!({"outcome": "failed", "failure": {
        "code": "E_LOGIN",
        "message": "retry with pass=CANARY-15, password%3DCANARY-16 and key AKIACANARY0000000017",
    }});
    api.complete(run_id, &failure).await.expect(StatusCode::OK);

    let log = raw_log(&api).await;
    assert!(log.contains("[redacted]"), "the secrets were redacted, not dropped: {log}");
    assert!(!log.contains(CANARY), "a secret reached the log: {log}");

    // Metadata that only looks like a key is kept as sent.
    let stored = api.get(&format!("/v1/runs/{run_id}"), &api.service).await.expect(StatusCode::OK);
    let context = &stored["run"]["context"];
    assert_eq!(context["dedupe_key"], "nightly", "{stored}");
    assert_eq!(context["idempotency_key"], "k-1", "{stored}");
    assert_eq!(context["max_tokens"], 4096, "{stored}");
    assert_eq!(context["tokens"], "[redacted]", "{stored}");
    assert_eq!(context["key"], "[redacted]", "{stored}");
}

#[tokio::test]
async fn credential_looking_ids_are_refused_and_append_nothing() {
    let api = Api::seeded().await;
    let service = Some(api.service.as_str());
    let mut dedupe = start_body("report", "t1", actor("u1"));
    dedupe["dedupe_key"] = json!("password=hunter2");
    let mut connection = start_body("inventory_sync", "t1", actor("u1"));
    connection["provider_connection_id"] = json!("conn-token=abc");
    let mut encoded = start_body("report", "t1", actor("u1"));
    encoded["dedupe_key"] = json!("pass%3Dhunter2");
    for body in [dedupe, connection, encoded] {
        let refusal = api.refused(Method::POST, "/v1/runs", service, bytes(&body), BAD, "invalid_request").await;
        let message = refusal["error"]["message"].as_str().unwrap();
        assert!(message.contains("looks like a credential"), "{message}");
        assert!(!message.contains("hunter2") && !message.contains("abc"), "the refusal repeats the secret: {message}");
    }
    let register = json!({"changed_by": system(), "changes": [
        {"type": "provider_connection_registered", "connection_id": "conn-token=abc", "tenant_id": "t1",
         "status": "ready"}]});
    api.refused(Method::POST, "/v1/authority", service, bytes(&register), BAD, "invalid_authority_change").await;
    assert!(!raw_log(&api).await.contains("hunter2"));
}

/// Each bad id the issue names: a zero-width space, a bidi override, a tab,
/// and a decomposed `é`.
const BAD_IDS: [(&str, &str); 4] =
    [("u1\u{200B}", "U+200B"), ("u1\u{202E}", "U+202E"), ("u\t1", "U+0009"), ("e\u{301}", "not in Unicode NFC")];

#[tokio::test]
async fn invisible_and_non_nfc_ids_are_refused_on_starts() {
    let api = Api::seeded().await;
    let service = Some(api.service.as_str());
    for (id, named) in BAD_IDS {
        let mut with_dedupe = start_body("report", "t1", actor("u1"));
        with_dedupe["dedupe_key"] = json!(id);
        let mut with_connection = start_body("inventory_sync", "t1", actor("u1"));
        with_connection["provider_connection_id"] = json!(id);
        let starts = [
            (start_body("report", id, actor("u1")), "tenant_id"),
            (start_body(id, "t1", actor("u1")), "operation_type"),
            (start_body("report", "t1", actor(id)), "initiator.id"),
            (with_dedupe, "dedupe_key"),
            (with_connection, "provider_connection_id"),
        ];
        for (body, field) in starts {
            let refusal = api.refused(Method::POST, "/v1/runs", service, bytes(&body), BAD, "invalid_request").await;
            let message = refusal["error"]["message"].as_str().unwrap();
            assert!(message.contains(field) && message.contains(named), "{id:?} in {field}: {message}");
        }
        let batches = [
            json!({"operation_types": ["report", id], "tenant_id": "t1", "initiator": system()}),
            json!({"operation_types": ["report"], "tenant_id": id, "initiator": system()}),
            json!({"operation_types": ["report"], "tenant_id": "t1", "initiator": actor(id)}),
        ];
        for body in batches {
            api.refused(Method::POST, "/v1/runs/batch", service, bytes(&body), BAD, "invalid_request").await;
        }
    }
}

#[tokio::test]
async fn invisible_and_non_nfc_ids_are_refused_on_authority_changes() {
    let api = Api::seeded().await;
    let service = Some(api.service.as_str());
    for (id, named) in BAD_IDS {
        let changes = [
            json!({"type": "workspace_registered", "workspace_id": id}),
            json!({"type": "tenant_registered", "tenant_id": id, "workspace_id": "w1", "lifecycle": "active"}),
            json!({"type": "workspace_member_added", "workspace_id": "w1", "actor_id": id}),
            json!({"type": "capability_granted", "tenant_id": "t1", "actor_id": "u1", "capability": id}),
            json!({"type": "provider_connection_registered", "connection_id": id, "tenant_id": "t1",
                   "status": "ready"}),
            json!({"type": "operation_type_registered", "operation_type": id, "required_capability": "tenant.sync",
                   "provider_backed": false, "writes": false, "system_authority_allowed": true, "max_attempts": 1}),
        ];
        for change in changes {
            let body = json!({"changed_by": actor("u-admin"), "changes": [change]});
            let refusal = api
                .refused(Method::POST, "/v1/authority", service, bytes(&body), BAD, "invalid_authority_change")
                .await;
            let message = refusal["error"]["message"].as_str().unwrap();
            assert!(message.contains(named), "{id:?}: {message}");
        }
        let body =
            json!({"changed_by": actor(id), "changes": [{"type": "workspace_registered", "workspace_id": "w9"}]});
        let refusal = api.refused(Method::POST, "/v1/authority", service, bytes(&body), BAD, "invalid_request").await;
        let message = refusal["error"]["message"].as_str().unwrap();
        assert!(message.contains("changed_by.id") && message.contains(named), "{id:?}: {message}");
    }
    // A visible id in NFC, non-ASCII included, is an ordinary id.
    api.authority(json!([{"type": "workspace_registered", "workspace_id": "café-漢字"}])).await;
}

#[tokio::test]
async fn a_system_principal_with_an_id_is_refused() {
    let api = Api::seeded().await;
    let service = Some(api.service.as_str());
    let system_with_id = json!({"kind": "system", "id": "u1"});
    let start = start_body("report", "t1", system_with_id.clone());
    let batch = json!({"operation_types": ["report"], "tenant_id": "t1", "initiator": system_with_id.clone()});
    let authority = json!({"changed_by": system_with_id,
                           "changes": [{"type": "workspace_registered", "workspace_id": "w9"}]});
    for (uri, body) in [("/v1/runs", start), ("/v1/runs/batch", batch), ("/v1/authority", authority)] {
        let refusal = api.refused(Method::POST, uri, service, bytes(&body), BAD, "invalid_json").await;
        let message = refusal["error"]["message"].as_str().unwrap();
        assert!(message.contains("the system principal takes no `id`"), "{uri}: {message}");
    }
}
