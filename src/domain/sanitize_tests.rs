//! Tests of the sanitizer: canaries in every shape, bounds, idempotence.
use proptest::prelude::*;
use serde_json::json;

use super::*;

const CANARY: &str = "CANARY";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDQU5BUlkifQ.c2lnbmF0dXJl";

fn assert_no_canary(value: &Value) {
    let stored = serde_json::to_string(value).unwrap();
    assert!(!stored.contains(CANARY), "canary leaked: {stored}");
    assert!(!stored.contains("eyJzdWIiOiJDQU5BUlkifQ"), "JWT payload leaked: {stored}");
    assert!(!stored.contains("c2lnbmF0dXJl"), "JWT signature leaked: {stored}");
}

#[test]
fn patterns_compile() {
    assert!(build_patterns().is_some());
    assert!(PATTERNS.is_some());
}

#[test]
fn secret_keys_are_recognized() {
    let secret = [
        "password",
        "Password",
        "PASSWORD",
        "passwd",
        "pwd",
        "db_pwd",
        "passphrase",
        "secret",
        "client_secret",
        "clientSecret",
        "ClientSecret",
        "clientsecret",
        "token",
        "access_token",
        "accessToken",
        "AccessToken",
        "ACCESS_TOKEN",
        "access-token",
        "access.token",
        "accesstoken",
        "refresh_token",
        "refreshToken",
        "id_token",
        "idToken",
        "github_token",
        "GITHUB_TOKEN",
        "sas_token",
        "token2",
        "token_value",
        "authorization",
        "Authorization",
        "Proxy-Authorization",
        "authorization_header",
        "auth",
        "basic_auth",
        "auth_header",
        "api_key",
        "apiKey",
        "APIKey",
        "apikey",
        "ApiKey",
        "x-api-key",
        "X-API-Key",
        "X-Functions-Key",
        "Ocp-Apim-Subscription-Key",
        "api_key_2",
        "private_key",
        "privateKey",
        "secret_key",
        "AWS_SECRET_ACCESS_KEY",
        "storage_account_key",
        "credential",
        "credentials",
        "aws_credentials",
        "session",
        "session_id",
        "sessionId",
        "sessionid",
        "cookie",
        "Cookie",
        "set-cookie",
        "Set-Cookie",
        "signature",
        "webhook_signature",
        "sig",
        "sas",
        "SAS",
        "connection_string",
        "ConnectionString",
        "connectionString",
        "connectionstring",
        "db_connection_string",
        "PGPASSWORD",
        "user.password",
        "db-password",
        "password_hash",
        "password_hint",
        "new_password",
        "client_assertion",
        "jwt",
        "bearer",
        "next_page_token",
    ];
    for key in secret {
        assert!(is_secret_key(key), "{key} must be secret");
    }
}

/// Issue 9: plural, compound and short spellings, one rule for all of them.
#[test]
fn plural_compound_and_short_secret_keys_are_recognized() {
    let secret = [
        "tokens",
        "Tokens",
        "api_keys",
        "apiKeys",
        "API_KEYS",
        "token_list",
        "tokenList",
        "TokenList",
        "auth_token_list",
        "authTokenList",
        "access_tokens",
        "refresh-tokens",
        "secrets",
        "client_secrets",
        "passwords",
        "db_passwords",
        "credentials",
        "cookies",
        "pass",
        "Pass",
        "db_pass",
        "key",
        "Key",
        "KEY",
        "keys",
        "private_keys",
        "token_array",
        "password_list",
        "min_password",
    ];
    for key in secret {
        assert!(is_secret_key(key), "{key} must be secret");
    }
}

#[test]
fn key_words_are_singular() {
    let cases: [(&str, &[&str]); 10] = [
        ("tokens", &["token"]),
        ("cookies", &["cookie"]),
        ("api_keys", &["api", "key"]),
        ("tokenList", &["token", "list"]),
        ("policies", &["policy"]),
        ("pass", &["pass"]),
        ("access_status", &["access", "status"]),
        ("sas", &["sas"]),
        ("ids", &["ids"]),
        ("analysis", &["analysis"]),
    ];
    for (key, words) in cases {
        assert_eq!(key_words(key), words, "{key}");
    }
}

#[test]
fn ordinary_keys_are_not_secret() {
    let ordinary = [
        "tenant_id",
        "tenantId",
        "workspace_id",
        "provider_connection_id",
        "connection_id",
        "key_count",
        "keyCount",
        "monkey",
        "keyboard",
        "dedupe_key",
        "dedupeKey",
        "idempotency_key",
        "partition_key",
        "sort_key",
        "public_key",
        "cache_key",
        "key_id",
        "keyId",
        "key_ids",
        "dedupe_keys",
        "idempotencyKey",
        "tokens_used",
        "max_tokens",
        "total_tokens",
        "num_keys",
        "token_counts",
        "token_count",
        "token_type",
        "token_expires_in",
        "token_endpoint",
        "tokenization",
        "passage",
        "passed",
        "bypass",
        "compass",
        "author",
        "authored_by",
        "authority_mode",
        "auth_mode",
        "auth_type",
        "oauth",
        "secretary",
        "secret_name",
        "secretName",
        "client_secret_expires_at",
        "password_policy",
        "password_policies",
        "password_length",
        "password_expires",
        "credential_type",
        "session_count",
        "cookie_count",
        "signature_algorithm",
        "message",
        "reason_code",
        "required_capability",
        "operation_type",
        "status",
        "outcome",
        "summary",
        "total",
        "",
        "_",
        "123",
        "--",
    ];
    for key in ordinary {
        assert!(!is_secret_key(key), "{key:?} must not be secret");
    }
}

#[test]
fn key_words_split_camel_case_and_separators() {
    let cases: [(&str, &[&str]); 8] = [
        ("apiKey", &["api", "key"]),
        ("APIKey", &["api", "key"]),
        ("myAPIKey", &["my", "api", "key"]),
        ("x-api-key", &["x", "api", "key"]),
        ("Access.Token2", &["access", "token"]),
        ("tenant_id", &["tenant", "id"]),
        ("__a__b__", &["a", "b"]),
        ("token2Value", &["token", "value"]),
    ];
    for (key, words) in cases {
        assert_eq!(key_words(key), words, "{key}");
    }
}

#[test]
fn free_text_secrets_are_redacted() {
    let cases = [
        ("password=hunter2-CANARY", "password=[redacted]"),
        ("login failed password=hunter2-CANARY for admin", "login failed password=[redacted] for admin"),
        ("Password: CANARY", "Password: [redacted]"),
        ("password = CANARY", "password = [redacted]"),
        ("Authorization: Bearer CANARYabc.def-123", "Authorization: Bearer [redacted]"),
        ("authorization=basic Q0FOQVJZOnB3", "authorization=basic [redacted]"),
        ("header was Bearer CANARYxyz123", "header was Bearer [redacted]"),
        ("BEARER CANARY", "BEARER [redacted]"),
        ("Basic dXNlcjpDQU5BUlk= rejected", "Basic [redacted] rejected"),
        (JWT, "[redacted]"),
        ("id token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDQU5BUlkifQ.c2lnbmF0dXJl expired", "id token [redacted] expired"),
        ("https://admin:CANARY@db.example.com/x", "https://admin:[redacted]@db.example.com/x"),
        ("postgres://svc:p@ss-CANARY@db:5432/app", "postgres://svc:[redacted]@db:5432/app"),
        ("redis://:CANARY@cache:6379", "redis://:[redacted]@cache:6379"),
        ("https://ghp_CANARY0123456789abcdef@github.com/o/r.git", "https://[redacted]@github.com/o/r.git"),
        ("GET https://api.example.com/v1?api_key=CANARY&x=1", "GET https://api.example.com/v1?api_key=[redacted]&x=1"),
        (
            "https://a.blob.core.windows.net/c?sv=2020&sig=CANARY%3D&se=1",
            "https://a.blob.core.windows.net/c?sv=2020&sig=[redacted]&se=1",
        ),
        (r#"{"client_secret":"CANARY with space","ok":true}"#, r#"{"client_secret":"[redacted]","ok":true}"#),
        (r#"{'token': 'CANARY'}"#, r#"{'token': '[redacted]'}"#),
        (r#"body {\"password\":\"CANARY\"}"#, r#"body {\"password\":\"[redacted]\"}"#),
        (r#"password="CANARY"#, r#"password="[redacted]"#),
        ("note: password=CANARY", "note: password=[redacted]"),
        ("--db-password=CANARY --verbose", "--db-password=[redacted] --verbose"),
        ("AWS_SECRET_ACCESS_KEY=CANARY;region=eu", "AWS_SECRET_ACCESS_KEY=[redacted];region=eu"),
        ("Server=db;User Id=sa;Password=CANARY;", "Server=db;User Id=sa;Password=[redacted];"),
        ("Set-Cookie: session=CANARY; Path=/", "Set-Cookie: [redacted]; Path=/"),
        ("x-api-key: CANARY", "x-api-key: [redacted]"),
        ("apiKey=CANARY,next", "apiKey=[redacted],next"),
        // Issue 9: plural, compound and short keys; URL-encoded pairs; AWS key ids.
        ("tokens=CANARY", "tokens=[redacted]"),
        ("api_keys: CANARY", "api_keys: [redacted]"),
        ("token_list=CANARY,x", "token_list=[redacted],x"),
        ("tokenList=CANARY", "tokenList=[redacted]"),
        ("auth_token_list=CANARY", "auth_token_list=[redacted]"),
        ("pass=CANARY", "pass=[redacted]"),
        ("login with user=admin pass=CANARY", "login with user=admin pass=[redacted]"),
        ("key=CANARY", "key=[redacted]"),
        ("password%3DCANARY", "password%3D[redacted]"),
        ("GET /login?q=1&password%3dCANARY%26x%3D1", "GET /login?q=1&password%3d[redacted]"),
        ("password%253DCANARY", "password%253D[redacted]"),
        ("token%3ACANARY", "token%3A[redacted]"),
        ("note%3Dx%20password%3DCANARY", "note%3Dx%20password%3D[redacted]"),
        ("used AKIACANARY0123456789 for s3", "used [redacted] for s3"),
        ("id=AKIAIOSFODNN7EXAMPLE", "id=[redacted]"),
        ("temporary ASIAIOSFODNN7EXAMPLE", "temporary [redacted]"),
    ];
    for (input, expected) in cases {
        let output = sanitize_text(input);
        assert_eq!(output, expected, "input: {input}");
        assert!(!output.contains(CANARY), "{input} → {output}");
        assert_eq!(sanitize_text(&output), output, "idempotent: {input}");
    }
}

#[test]
fn ordinary_text_is_unchanged() {
    let cases = [
        "sync finished",
        "inventory sync finished: 120 processed, 3 failed",
        "",
        "tenant_id=t-42 status=ready",
        "token_count=5 tokens_used=17 max_tokens=4096",
        "dedupe_key=nightly-2024 idempotency_key=k-1 key_id=7",
        "url%3Dhttps%3A%2F%2Fexample.com",
        "AKIA is a prefix, AKIAshort is not a key id",
        "https://graph.microsoft.com/v1.0/users?$top=10&$skip=20",
        "https://user@example.com/path",
        "ssh://git@github.com/org/repo.git",
        "http://[::1]:8080/health",
        "at 12:30:45 the provider answered 503",
        "basic auth is not configured",
        "Bearer of bad news",
        "hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 matches",
        "blob aGVsbG8gd29ybGQgdGhpcyBpcyBub3QgYSBzZWNyZXQ= attached",
        "line one\nline two\tindented",
        "unicode: é, 漢字, emoji 🎉",
        "secretary called about the password policy",
        "author: Jane",
    ];
    for input in cases {
        assert_eq!(sanitize_text(input), input);
    }
}

#[test]
fn control_characters_are_stripped_except_newline_and_tab() {
    assert_eq!(sanitize_text("a\u{0}b\u{7}c\r\nd\te\u{1b}[31mf\u{7f}"), "abc\nd\te[31mf");
    // Stripping happens before redaction: a control character cannot split a key.
    assert_eq!(sanitize_text("pass\u{1}word=CANARY"), "password=[redacted]");
}

#[test]
fn long_text_is_truncated_on_a_char_boundary() {
    let long = "é".repeat(3000);
    let output = sanitize_text(&long);
    assert!(output.len() <= TEXT_BYTES_MAX, "{}", output.len());
    assert!(output.ends_with(TRUNCATED_MARKER));
    assert!(output.len() > TEXT_BYTES_MAX - TRUNCATED_MARKER.len() - 4);
    assert_eq!(sanitize_text(&output), output);

    let exact = "a".repeat(TEXT_BYTES_MAX);
    assert_eq!(sanitize_text(&exact), exact);
    let over = "a".repeat(TEXT_BYTES_MAX + 1);
    let cut = sanitize_text(&over);
    assert_eq!(cut.len(), TEXT_BYTES_MAX);
    assert_eq!(cut, format!("{}{}", "a".repeat(TEXT_BYTES_MAX - TRUNCATED_MARKER.len()), TRUNCATED_MARKER));
}

#[test]
fn truncation_never_reveals_a_secret_or_splits_a_marker() {
    // Secrets straddling the cut, at every offset around it.
    for shift in 0..40 {
        let filler = "x ".repeat((TEXT_BYTES_MAX - 20 + shift) / 2);
        for secret in ["password=CANARY-CANARY-CANARY", "Bearer CANARYCANARYCANARY", "token: \"CANARY CANARY\""] {
            let input = format!("{filler}{secret} tail");
            let output = sanitize_text(&input);
            assert!(output.len() <= TEXT_BYTES_MAX);
            assert!(!output.contains(CANARY), "shift {shift}: …{}", &output[output.len() - 40..]);
            assert!(!output.contains("[reda…") && !output.contains("[redacted…"), "{}", &output[output.len() - 40..]);
            assert_eq!(sanitize_text(&output), output, "idempotent at shift {shift}");
        }
    }
}

#[test]
fn json_secrets_are_redacted_in_every_shape() {
    let input = json!({
        "password": "hunter2-CANARY",
        "Password": 12345,
        "CLIENT_SECRET": {"value": "CANARY", "nested": ["CANARY"]},
        "apiKey": ["CANARY", "CANARY"],
        "x-api-key": "CANARY",
        "Authorization": "Bearer CANARY",
        "connectionString": "Server=db;Password=CANARY",
        "context": {
            "provider": {"credentials": {"client_id": "app", "client_secret": "CANARY"}},
            "attempts": [
                {"access_token": JWT, "ok": true},
                {"refreshToken": "CANARY", "note": "second"},
                {"headers": {"Cookie": "sid=CANARY", "Accept": "json"}},
            ],
            "message": "retry with password=CANARY failed",
            "url": "https://admin:CANARY@db.example.com/x",
            "request": "GET /v1?api_key=CANARY&x=1",
            "bearer": "Authorization: Bearer CANARY...",
            "jwt_in_text": format!("got {JWT}"),
        }
    });
    let output = sanitize_json(&input);
    assert_no_canary(&output);
    assert_eq!(output["password"], REDACTED);
    assert_eq!(output["Password"], REDACTED);
    assert_eq!(output["CLIENT_SECRET"], REDACTED);
    assert_eq!(output["apiKey"], REDACTED);
    assert_eq!(output["context"]["provider"]["credentials"], REDACTED);
    assert_eq!(output["context"]["attempts"][0]["ok"], true);
    assert_eq!(output["context"]["attempts"][1]["note"], "second");
    assert_eq!(output["context"]["attempts"][2]["headers"]["Accept"], "json");
    assert_eq!(output["context"]["message"], "retry with password=[redacted] failed");
    assert_eq!(output["context"]["url"], "https://admin:[redacted]@db.example.com/x");
    assert_eq!(sanitize_json(&output), output);
}

#[test]
fn ordinary_json_is_unchanged() {
    let input = json!({
        "tenant_id": "t-1",
        "message": "sync finished",
        "url": "https://graph.microsoft.com/v1.0/users?$top=10",
        "counts": {"total": 3, "processed": 3},
        "items": [1, 2.5, -7, true, null, "x"],
        "dedupe_key": "nightly",
        "token_count": 17,
        "nested": {"a": {"b": {"c": []}}},
        "empty": {},
    });
    assert_eq!(sanitize_json(&input), input);
    for scalar in [json!(null), json!(true), json!(0), json!(u64::MAX), json!(-1.5), json!("sync finished")] {
        assert_eq!(sanitize_json(&scalar), scalar);
    }
}

#[test]
fn keys_are_sanitized_and_bounded() {
    let long_key = "k".repeat(500);
    let input = json!({ long_key.clone(): 1, "note Bearer CANARY123": 2 });
    let output = sanitize_json(&input);
    assert_no_canary(&output);
    let map = output.as_object().unwrap();
    assert!(map.keys().all(|key| key.len() <= KEY_BYTES_MAX), "{map:?}");
    let bounded = format!("{}{}", "k".repeat(KEY_BYTES_MAX - KEY_TRUNCATED_MARKER.len()), KEY_TRUNCATED_MARKER);
    assert_eq!(map.get(&bounded), Some(&json!(1)));
    assert_eq!(map.get("note Bearer [redacted]"), Some(&json!(2)));
    assert_eq!(sanitize_json(&output), output);
}

#[test]
fn long_secret_key_is_redacted_even_when_its_stored_form_is_cut() {
    let key = format!("{}_password", "x".repeat(300));
    let output = sanitize_json(&json!({ key: "CANARY" }));
    assert_no_canary(&output);
    assert_eq!(output.as_object().unwrap().values().next(), Some(&json!(REDACTED)));
    assert_eq!(sanitize_json(&output), output);
}

#[test]
fn deep_nesting_is_cut() {
    let mut value = json!({"leaf": "CANARY is not a secret here"});
    for _ in 0..20 {
        value = json!({ "a": value });
    }
    let output = sanitize_json(&value);
    let mut cursor = &output;
    let mut depth = 0;
    while let Some(inner) = cursor.get("a") {
        depth += 1;
        cursor = inner;
    }
    assert_eq!(depth, JSON_DEPTH_MAX);
    assert_eq!(cursor, &json!(TOO_DEEP));
    assert_eq!(sanitize_json(&output), output);

    // Exactly JSON_DEPTH_MAX levels are kept, scalars included.
    let mut kept = json!([1]);
    for _ in 1..JSON_DEPTH_MAX {
        kept = json!([kept]);
    }
    assert_eq!(sanitize_json(&kept), kept);
    let deeper = json!([kept.clone()]);
    let mut expected = json!([TOO_DEEP]);
    for _ in 1..JSON_DEPTH_MAX {
        expected = json!([expected]);
    }
    assert_eq!(sanitize_json(&deeper), expected);
}

#[test]
fn wide_objects_and_arrays_are_bounded() {
    let map: Map<String, Value> = (0..100).map(|i| (format!("k{i:03}"), json!(i))).collect();
    let output = sanitize_json(&Value::Object(map));
    let out = output.as_object().unwrap();
    assert_eq!(out.len(), OBJECT_KEYS_MAX);
    assert_eq!(out.get(DROPPED_KEYS_MARKER), Some(&json!(100 - (OBJECT_KEYS_MAX - 1))));
    assert_eq!(out.get("k000"), Some(&json!(0)));
    assert_eq!(out.get("k062"), Some(&json!(62)));
    assert_eq!(out.get("k063"), None);
    assert_eq!(sanitize_json(&output), output);

    let exact: Map<String, Value> = (0..OBJECT_KEYS_MAX).map(|i| (format!("k{i:03}"), json!(i))).collect();
    assert_eq!(sanitize_json(&Value::Object(exact.clone())), Value::Object(exact));

    let items: Vec<Value> = (0..200).map(|i| json!(i)).collect();
    let output = sanitize_json(&Value::Array(items));
    let out = output.as_array().unwrap();
    assert_eq!(out.len(), ARRAY_ITEMS_MAX);
    assert_eq!(out[0], json!(0));
    assert_eq!(out[ARRAY_ITEMS_MAX - 2], json!(ARRAY_ITEMS_MAX - 2));
    assert_eq!(out[ARRAY_ITEMS_MAX - 1], json!(format!("[{} items dropped]", 200 - (ARRAY_ITEMS_MAX - 1))));
    assert_eq!(sanitize_json(&output), output);

    let exact: Vec<Value> = (0..ARRAY_ITEMS_MAX).map(|i| json!(i)).collect();
    assert_eq!(sanitize_json(&Value::Array(exact.clone())), Value::Array(exact));
}

#[test]
fn long_strings_inside_json_are_bounded() {
    let output = sanitize_json(&json!({"message": "m".repeat(10_000)}));
    let message = output["message"].as_str().unwrap();
    assert_eq!(message.len(), TEXT_BYTES_MAX);
    assert!(message.ends_with(TRUNCATED_MARKER));
}

#[test]
fn summary_counts_are_normalized() {
    let cases = [
        (
            json!({"total": 10, "processed": 4, "succeeded": 3, "failed": 1, "skipped": 0}),
            SummaryCounts {
                total: Some(10),
                processed: Some(4),
                succeeded: Some(3),
                failed: Some(1),
                skipped: Some(0),
            },
        ),
        (json!({"total": 5, "bogus": 1, "Total": 7}), SummaryCounts { total: Some(5), ..SummaryCounts::default() }),
        (json!({"total": 3.0}), SummaryCounts::default()),
        (json!({"total": 3.5}), SummaryCounts::default()),
        (json!({"total": -1}), SummaryCounts::default()),
        (json!({"total": "3"}), SummaryCounts::default()),
        (json!({"total": null, "failed": true, "skipped": [1]}), SummaryCounts::default()),
        (json!({"succeeded": u64::MAX}), SummaryCounts { succeeded: Some(u64::MAX), ..SummaryCounts::default() }),
        (json!({"processed": {"n": 1}}), SummaryCounts::default()),
        (json!([1, 2, 3]), SummaryCounts::default()),
        (json!(7), SummaryCounts::default()),
        (json!(null), SummaryCounts::default()),
        (json!({}), SummaryCounts::default()),
    ];
    for (input, expected) in cases {
        assert_eq!(SummaryCounts::normalize(&input), expected, "{input}");
    }
}

#[test]
fn summary_counts_merge_and_serialize() {
    let earlier = SummaryCounts { total: Some(10), processed: Some(2), ..SummaryCounts::default() };
    let later = SummaryCounts { processed: Some(5), failed: Some(1), ..SummaryCounts::default() };
    let merged = earlier.merge(later);
    assert_eq!(
        merged,
        SummaryCounts { total: Some(10), processed: Some(5), failed: Some(1), ..SummaryCounts::default() }
    );
    assert_eq!(SummaryCounts::default().merge(merged), merged);
    assert_eq!(merged.merge(SummaryCounts::default()), merged);

    assert_eq!(serde_json::to_value(merged).unwrap(), json!({"total": 10, "processed": 5, "failed": 1}));
    assert_eq!(serde_json::to_string(&SummaryCounts::default()).unwrap(), "{}");
    assert!(SummaryCounts::default().is_empty());
    assert!(!merged.is_empty());
    let back: SummaryCounts = serde_json::from_value(json!({"total": 10, "processed": 5, "failed": 1})).unwrap();
    assert_eq!(back, merged);
    assert!(serde_json::from_value::<SummaryCounts>(json!({"total": 1, "bogus": 2})).is_err());
    assert!(serde_json::from_value::<SummaryCounts>(json!({"total": -1})).is_err());

    let values: Vec<Option<u64>> = SummaryCounts::KEYS.iter().map(|key| merged.get(key)).collect();
    assert_eq!(values, [Some(10), Some(5), None, Some(1), None]);
    assert_eq!(merged.get("bogus"), None);
    // KEYS names exactly the serialized fields.
    let full =
        SummaryCounts { total: Some(1), processed: Some(1), succeeded: Some(1), failed: Some(1), skipped: Some(1) };
    let serialized = serde_json::to_value(full).unwrap();
    let mut names: Vec<&str> = serialized.as_object().unwrap().keys().map(String::as_str).collect();
    let mut keys = SummaryCounts::KEYS.to_vec();
    names.sort_unstable();
    keys.sort_unstable();
    assert_eq!(names, keys);
}

#[path = "sanitize_properties.rs"]
mod properties;
