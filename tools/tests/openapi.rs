//! The OpenAPI document (`GET /openapi.json`, `docs/openapi.json`): the
//! committed file is what the code generates, every route of the router is
//! in it, and every error code of docs/api.md is.
//!
//! After a change to the API's types or handlers, regenerate the file with
//!
//! ```sh
//! OPLEDGER_WRITE_OPENAPI=1 cargo test -p opledger-tools --test openapi
//! ```
//!
//! and commit it with the change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::Value;

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

fn generated() -> String {
    opledger_tools::server::openapi::document_text().unwrap()
}

fn document() -> Value {
    serde_json::from_str(&generated()).unwrap()
}

#[test]
fn the_committed_document_is_what_the_code_generates() {
    let path = repo_file("docs/openapi.json");
    let text = generated();
    if std::env::var_os("OPLEDGER_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != text {
        let line = committed
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| committed.lines().count().min(text.lines().count()) + 1, |index| index + 1);
        panic!(
            "docs/openapi.json differs from the document the code generates (first at line {line}). \
             Regenerate it with `OPLEDGER_WRITE_OPENAPI=1 cargo test -p opledger-tools --test openapi` \
             and commit it."
        );
    }
}

#[test]
fn it_is_openapi_3_1_with_both_auth_schemes() {
    let document = document();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "{}", document["openapi"]);
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session"]["type"], "apiKey");
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["session"]["name"], "opledger_session");
    // The cookie never authorizes the JSON API.
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let text = operation["security"].to_string();
            if text.contains("session") {
                assert!(path.starts_with("/admin/"), "{method} {path}: {text}");
            }
            if path.starts_with("/v1/") || path == "/metrics" {
                assert!(text.contains("bearer"), "{method} {path}: {text}");
            }
        }
    }
}

/// `(method, path)` of every `.route(…)` in the router's source.
fn router_routes() -> Vec<(String, String)> {
    let source = std::fs::read_to_string(repo_file("tools/src/server/mod.rs")).unwrap();
    let mut routes = Vec::new();
    for line in source.lines().map(str::trim).filter(|line| line.starts_with(".route(\"")) {
        let path = line.trim_start_matches(".route(\"").split('"').next().unwrap().to_owned();
        for method in ["get", "post"] {
            if line.contains(&format!("{method}(")) || line.contains(&format!(".{method}(")) {
                routes.push((method.to_owned(), path.clone()));
            }
        }
    }
    assert!(routes.len() > 25, "the router's routes were not found: {routes:?}");
    routes
}

#[test]
fn every_route_of_the_router_is_documented_and_nothing_else() {
    let document = document();
    let routes = router_routes();
    for (method, path) in &routes {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not in the document");
        assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
    }
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(routes.contains(&(method.clone(), path.clone())), "{method} {path} is documented but not routed");
        }
    }
}

/// The codes of the error table of docs/api.md.
fn api_md_error_codes() -> Vec<String> {
    let text = std::fs::read_to_string(repo_file("docs/api.md")).unwrap();
    let table = text.split("## Errors").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut codes = Vec::new();
    for line in table.lines().filter(|line| line.starts_with("| 4") || line.starts_with("| 5")) {
        let cell = line.split('|').nth(2).unwrap();
        codes.extend(cell.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    assert!(codes.len() > 20, "{codes:?}");
    codes
}

#[test]
fn every_error_code_of_the_api_reference_is_in_the_document_with_its_status() {
    let document = document();
    let mut documented = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let description = response["description"].as_str().unwrap_or("");
                for code in description.split('`').skip(1).step_by(2) {
                    documented.entry(code.to_owned()).or_default().insert(status.clone());
                }
            }
        }
    }
    let status_line = |code: &str| {
        let text = std::fs::read_to_string(repo_file("docs/api.md")).unwrap();
        let table = text.split("## Errors").nth(1).unwrap().split("\n## ").next().unwrap().to_owned();
        table
            .lines()
            .find(|line| line.contains(&format!("`{code}`")))
            .unwrap()
            .split('|')
            .nth(1)
            .unwrap()
            .trim()
            .to_owned()
    };
    for code in api_md_error_codes() {
        // 405 answers a listed path asked with an unlisted method: said once, in the description.
        if code == "method_not_allowed" {
            assert!(document["info"]["description"].as_str().unwrap().contains(&format!("`{code}`")), "{code}");
            continue;
        }
        let statuses = documented.get(&code).unwrap_or_else(|| panic!("`{code}` of docs/api.md is in no response"));
        assert!(
            statuses.contains(&status_line(&code)),
            "`{code}`: {statuses:?}, docs/api.md says {}",
            status_line(&code)
        );
    }
}

#[test]
fn every_operation_has_an_operation_id_of_its_own() {
    let document = document();
    let mut seen = std::collections::BTreeMap::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(id) = operation.get("operationId").and_then(Value::as_str) else { continue };
            if let Some(other) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("operationId `{id}` of {method} {path} is also {other}'s: tools keep only one of them");
            }
        }
    }
    assert!(seen.len() > 30, "{seen:?}");
}
