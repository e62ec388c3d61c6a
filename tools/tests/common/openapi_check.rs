//! Checks a real answer against the OpenAPI document the server serves:
//! its status must be documented for the route, and a JSON body must match
//! the documented schema. The schema check covers what utoipa generates
//! (`$ref`, `allOf`/`oneOf`/`anyOf`, `type`, `enum`, `required`,
//! `properties`, `additionalProperties`, `items`); formats and bounds are
//! not checked.

use std::sync::OnceLock;

use serde_json::Value;

fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::from_str(&opledger_tools::server::openapi::document_text().unwrap()).unwrap())
}

/// The documented path template `path` falls under, the most specific one
/// (`/v1/runs/summary` before `/v1/runs/{id}`).
fn template(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<(&'static str, usize)> = None;
    for candidate in document()["paths"].as_object()?.keys() {
        let parts: Vec<&str> = candidate.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut holes = 0;
        let fits = parts.iter().zip(&segments).all(|(part, segment)| {
            let hole = part.starts_with('{');
            holes += usize::from(hole);
            hole || part == segment
        });
        if fits && best.is_none_or(|(_, fewest)| holes < fewest) {
            best = Some((candidate.as_str(), holes));
        }
    }
    best.map(|(template, _)| template)
}

/// Checks one answer; `Err` says what does not match. Answers of paths or
/// methods the document does not list (the 404 and 405 fallbacks) pass.
pub fn check(method: &str, uri: &str, status: u16, content_type: &str, body: &[u8]) -> Result<(), String> {
    let path = uri.split('?').next().unwrap_or(uri);
    let Some(template) = template(path) else { return Ok(()) };
    let operation = &document()["paths"][template][method.to_ascii_lowercase()];
    if operation.is_null() {
        return Ok(());
    }
    let response = &operation["responses"][status.to_string()];
    if response.is_null() {
        return Err(format!("{method} {template}: status {status} is not documented"));
    }
    if content_type.split(';').next().map(str::trim) != Some("application/json") {
        return Ok(());
    }
    let Some(schema) = response["content"]["application/json"].get("schema") else {
        return Err(format!("{method} {template} {status}: a JSON body is not documented"));
    };
    let value: Value = serde_json::from_slice(body).map_err(|error| format!("{method} {template}: {error}"))?;
    validate(schema, &value, "$").map_err(|why| format!("{method} {template} {status}: {why}; body {value}"))
}

fn resolve(schema: &Value) -> &Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            resolve(&document()["components"]["schemas"][name])
        }
        None => schema,
    }
}

fn type_fits(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => false,
    }
}

pub fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            validate(part, value, at)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let errors: Vec<String> = options.iter().filter_map(|option| validate(option, value, at).err()).collect();
            if errors.len() == options.len() {
                return Err(format!("{at} fits none of {key}: {}", errors.join(" | ")));
            }
        }
    }
    match schema.get("type") {
        Some(Value::String(name)) if !type_fits(name, value) => return Err(format!("{at} is not {name}: {value}")),
        Some(Value::Array(names)) if !names.iter().any(|n| type_fits(n.as_str().unwrap_or(""), value)) => {
            return Err(format!("{at} is none of {names:?}: {value}"));
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at} = {value} is not one of {allowed:?}"));
        }
    }
    if let Some(fields) = value.as_object() {
        for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let name = required.as_str().unwrap_or("");
            if !fields.contains_key(name) {
                return Err(format!("{at} lacks the required `{name}`"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            match properties.and_then(|properties| properties.get(name)) {
                Some(property) => validate(property, field, &format!("{at}.{name}"))?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => return Err(format!("{at}.{name} is not documented")),
                    Some(extra @ Value::Object(_)) => validate(extra, field, &format!("{at}.{name}"))?,
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(elements)) = (schema.get("items"), value.as_array()) {
        for (index, element) in elements.iter().enumerate() {
            validate(items, element, &format!("{at}[{index}]"))?;
        }
    }
    Ok(())
}
