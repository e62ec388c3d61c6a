//! Tests of the id check: visible characters only, NFC, no credentials.
use super::*;

#[test]
fn ordinary_ids_are_accepted() {
    let ids = [
        "t-1.a/b",
        "u1",
        "tenant.sync",
        "inventory_sync",
        "nightly-2024-01-01T00:00:00Z",
        "run:42",
        "café",
        "漢字",
        "user@example.com",
        "https://example.com/tenants/1",
        "token_count",
        "key",
        "dedupe_key",
    ];
    for id in ids {
        assert_eq!(check_id("tenant_id", id), Ok(()), "{id:?}");
    }
    assert_eq!(check_id("tenant_id", &"x".repeat(ID_BYTES_MAX)), Ok(()));
}

#[test]
fn empty_and_long_ids_are_refused() {
    assert_eq!(check_id("tenant_id", ""), Err("tenant_id must be 1 to 128 bytes, got 0".to_owned()));
    let long = "x".repeat(ID_BYTES_MAX + 1);
    assert_eq!(
        check_id("tenant_id", &long),
        Err(format!("tenant_id must be 1 to 128 bytes, got {}", ID_BYTES_MAX + 1))
    );
}

#[test]
fn invisible_characters_are_refused_and_named() {
    let cases = [
        ("u1\u{200B}", "U+200B, a format character (Cf)"),
        ("u1\u{202E}", "U+202E, a format character (Cf)"),
        ("\u{FEFF}u1", "U+FEFF, a format character (Cf)"),
        ("u\t1", "U+0009, a control character (Cc)"),
        ("u1\n", "U+000A, a control character (Cc)"),
        ("u1\u{7F}", "U+007F, a control character (Cc)"),
        ("u1\u{85}", "U+0085, a control character (Cc)"),
        ("u 1", "U+0020, a space separator (Zs)"),
        ("u\u{A0}1", "U+00A0, a space separator (Zs)"),
        ("u\u{3000}1", "U+3000, a space separator (Zs)"),
        ("u\u{2028}1", "U+2028, a line separator (Zl)"),
        ("u\u{2029}1", "U+2029, a paragraph separator (Zp)"),
    ];
    for (id, named) in cases {
        let refusal = check_id("tenant_id", id).expect_err(id);
        assert!(refusal.starts_with("tenant_id contains "), "{refusal}");
        assert!(refusal.contains(named), "{id:?}: {refusal}");
    }
}

#[test]
fn ids_not_in_nfc_are_refused() {
    let decomposed = "caf\u{65}\u{301}";
    let refusal = check_id("actor_id", decomposed).expect_err("NFD");
    assert!(refusal.starts_with("actor_id ") && refusal.contains("not in Unicode NFC"), "{refusal}");
    assert_eq!(check_id("actor_id", "caf\u{E9}"), Ok(()), "the composed form is the one accepted");
    assert!(check_id("actor_id", "\u{212B}").is_err(), "the Angstrom sign normalizes to Å");
}

#[test]
fn credential_looking_ids_are_refused_without_repeating_them() {
    let ids = [
        "password=hunter2",
        "conn-token=abc",
        "pass=hunter2",
        "api_key:xyz",
        "password%3Dhunter2",
        "AKIAIOSFODNN7EXAMPLE",
        "https://admin:hunter2@db",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    ];
    for id in ids {
        let refusal = check_id("dedupe_key", id).expect_err(id);
        assert!(refusal.starts_with("dedupe_key looks like a credential"), "{refusal}");
        assert!(!refusal.contains("hunter2") && !refusal.contains(id), "the refusal repeats the secret: {refusal}");
    }
}

#[test]
fn the_system_word_is_no_actor_id() {
    assert!(check_actor_id("actor_id", SYSTEM_PRINCIPAL_WORD).unwrap_err().contains("reserved"));
    assert_eq!(check_actor_id("actor_id", "systems"), Ok(()));
    assert!(check_actor_id("actor_id", "u1\u{200B}").is_err());
}
