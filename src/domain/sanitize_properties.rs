//! Properties of the sanitizer over generated text, keys and JSON: no
//! planted secret survives in any position, and sanitizing is idempotent.

use super::*;

/// Fragments that exercise every rule and their interactions.
const FRAGMENTS: &[&str] = &[
    "password",
    "token",
    "api_key",
    "x-api-key",
    "Authorization",
    "auth",
    "sig",
    "pass",
    "key",
    "tokens",
    "tokenList",
    "%3D",
    "%3a",
    "%253D",
    "AKIA",
    "AKIACANARY0123456789",
    "=",
    ":",
    ": ",
    " = ",
    "\"",
    "'",
    "\\\"",
    "\\",
    "&",
    ";",
    ",",
    "?",
    "/",
    "//",
    "https://",
    "u:p@",
    "@",
    "Bearer ",
    "basic ",
    "eyJ",
    "eyJhbGciOiJIUzI1NiJ9",
    ".",
    "abc",
    "c2lnbmF0dXJl",
    "CANARY",
    "[redacted]",
    "…",
    "[truncated]",
    " ",
    "\n",
    "\t",
    "\r",
    "\u{1}",
    "é",
    "漢",
    "x",
    "1",
    "-",
    "_",
];

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(FRAGMENTS), 0..24).prop_map(|parts| parts.concat()),
        1 => "\\PC{0,40}",
        1 => prop::collection::vec(prop::sample::select(FRAGMENTS), 500..1200).prop_map(|parts| parts.concat()),
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_.-]{0,10}",
        prop::sample::select(
            &[
                "password",
                "Token",
                "apiKey",
                "tenant_id",
                "note",
                "X-API-KEY",
                "key",
                "api_keys",
                "pass",
                "[dropped keys]"
            ][..]
        )
        .prop_map(str::to_owned),
        prop::collection::vec(prop::sample::select(FRAGMENTS), 0..8).prop_map(|parts| parts.concat()),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        arb_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(12, 256, 80, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..80).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..80)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// One step of a path to the planted secret.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn plain_key() -> impl Strategy<Value = String> {
    "[a-z]{1,8}".prop_filter("not secret", |key| !is_secret_key(key))
}

fn arb_path() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(prop_oneof![plain_key().prop_map(Step::Key), (0usize..4).prop_map(Step::Index)], 0..12)
}

const SECRET_KEYS: &[&str] = &[
    "password",
    "PASSWORD",
    "Password",
    "clientSecret",
    "client_secret",
    "CLIENT-SECRET",
    "access_token",
    "accessToken",
    "Authorization",
    "apiKey",
    "x-api-key",
    "X-Api-Key",
    "private_key",
    "credentials",
    "connection.string",
    "Set-Cookie",
    "sas",
    "sessionId",
    "refresh-token",
    "db.password",
    "tokens",
    "api_keys",
    "token_list",
    "tokenList",
    "auth_token_list",
    "pass",
    "key",
];

fn canary_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("CANARY")),
        Just(json!("Bearer CANARY")),
        Just(json!({"inner": "CANARY", "list": ["CANARY"]})),
        Just(json!(["CANARY", {"x": "CANARY"}])),
        Just(json!(JWT)),
    ]
}

/// Builds `{…path…: {secret_key: canary, siblings…}}`, siblings being arbitrary harmless values.
fn plant(path: &[Step], secret_key: &str, canary: Value, siblings: Vec<(String, Value)>) -> Value {
    let mut leaf: Map<String, Value> = siblings.into_iter().collect();
    leaf.insert(secret_key.to_owned(), canary);
    let mut value = Value::Object(leaf);
    for step in path.iter().rev() {
        value = match step {
            Step::Key(key) => json!({ key.clone(): value }),
            Step::Index(index) => {
                let mut items = vec![json!(0); *index];
                items.push(value);
                Value::Array(items)
            }
        };
    }
    value
}

fn harmless_siblings() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec(
        (plain_key(), prop_oneof![any::<i64>().prop_map(Value::from), "[a-z ]{0,12}".prop_map(Value::from)]),
        0..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sanitize_text_is_idempotent_and_bounded(text in arb_text()) {
        let once = sanitize_text(&text);
        prop_assert!(once.len() <= TEXT_BYTES_MAX);
        prop_assert!(!once.chars().any(|c| c.is_ascii_control() && c != '\n' && c != '\t'));
        prop_assert_eq!(sanitize_text(&once), once);
    }

    #[test]
    fn sanitize_json_is_idempotent(value in arb_json()) {
        let once = sanitize_json(&value);
        prop_assert_eq!(sanitize_json(&once), once.clone());
        prop_assert_eq!(sanitize_json(&value), once);
    }

    #[test]
    fn a_planted_secret_never_survives(
        path in arb_path(),
        secret_key in prop::sample::select(SECRET_KEYS),
        canary in canary_value(),
        siblings in harmless_siblings(),
    ) {
        let input = plant(&path, secret_key, canary, siblings);
        let output = sanitize_json(&input);
        let stored = serde_json::to_string(&output).unwrap();
        prop_assert!(!stored.contains(CANARY), "{}", stored);
        prop_assert!(!stored.contains("c2lnbmF0dXJl"), "{}", stored);
        // Not vacuous: within the depth bound the secret key is still there, its value redacted.
        if path.len() < JSON_DEPTH_MAX {
            let mut cursor = &output;
            for step in &path {
                cursor = match step {
                    Step::Key(key) => &cursor[key.as_str()],
                    Step::Index(index) => &cursor[*index],
                };
            }
            prop_assert_eq!(&cursor[secret_key], &json!(REDACTED), "{}", stored);
        }
    }

    #[test]
    fn a_planted_secret_in_free_text_never_survives(
        before in "[a-z ]{0,20}",
        after in "[a-z ]{0,20}",
        shape in prop::sample::select(&[
            "password=hunter2-CANARY",
            "Authorization: Bearer CANARY123",
            "token: \"CANARY\"",
            "https://admin:CANARY@db.example.com/x",
            "/v1?api_key=CANARY&x=1",
            "Bearer CANARYCANARY",
            "pass=CANARY",
            "password%3DCANARY",
            "tokens=CANARY",
            "AKIACANARY0123456789",
        ][..]),
        key in plain_key(),
    ) {
        let text = format!("{before} {shape} {after}");
        let output = sanitize_json(&json!({ key: text }));
        let stored = serde_json::to_string(&output).unwrap();
        prop_assert!(!stored.contains(CANARY), "{}", stored);
    }
}
