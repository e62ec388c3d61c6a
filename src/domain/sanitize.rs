//! Sanitization at the append boundary (SPEC 7).
//!
//! The log is immutable and hash-chained: whatever enters it stays. So every
//! caller-supplied text (failure messages, context, details) passes through
//! here before it becomes part of an event:
//!
//! - [`sanitize_text`] redacts credentials in free text and bounds its length;
//! - [`sanitize_json`] redacts the values of secret-looking keys, runs every
//!   string through [`sanitize_text`] and bounds depth, width and key length;
//! - [`SummaryCounts::normalize`] keeps only the known summary counters.
//!
//! Sanitization is deterministic and idempotent: the same input always gives
//! the same output, and sanitizing an already sanitized value changes nothing
//! (so re-deriving or re-appending stored details is stable).
//!
//! It errs on the side of redacting: a false positive hides a harmless value
//! from an audit entry, a false negative leaks a credential forever.

use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What replaces a redacted value.
pub const REDACTED: &str = "[redacted]";

/// Longest sanitized text, in bytes (marker included). Longer texts are cut on
/// a character boundary and end with [`TRUNCATED_MARKER`].
pub const TEXT_BYTES_MAX: usize = 2048;

/// Appended to a text that was cut to [`TEXT_BYTES_MAX`].
pub const TRUNCATED_MARKER: &str = "…[truncated]";

/// Deepest nesting of arrays and objects kept by [`sanitize_json`]; the root
/// container is at depth 1. A container nested deeper becomes [`TOO_DEEP`].
pub const JSON_DEPTH_MAX: usize = 8;

/// What replaces a container nested deeper than [`JSON_DEPTH_MAX`].
pub const TOO_DEEP: &str = "[too deep]";

/// Most keys kept in one object (the [`DROPPED_KEYS_MARKER`] key included).
pub const OBJECT_KEYS_MAX: usize = 64;

/// Key added to an object that had more than [`OBJECT_KEYS_MAX`] keys; its
/// value is the number of keys dropped. The first keys (in the object's order)
/// are the ones kept.
pub const DROPPED_KEYS_MARKER: &str = "[dropped keys]";

/// Most items kept in one array (the trailing "[N items dropped]" marker item included).
pub const ARRAY_ITEMS_MAX: usize = 64;

/// Longest object key, in bytes (marker included). Longer keys are cut and end with [`KEY_TRUNCATED_MARKER`].
pub const KEY_BYTES_MAX: usize = 128;

/// Appended to a key that was cut to [`KEY_BYTES_MAX`].
pub const KEY_TRUNCATED_MARKER: &str = "…";

/// How many extra passes [`sanitize_text`] may take to reach a fixed point
/// (truncation can cut a text right after a secret-looking key, which the next
/// pass redacts). Two always suffice in practice; the bound keeps it finite.
const SETTLE_PASSES_MAX: usize = 4;

// ---------------------------------------------------------------------------
// Secret-looking keys
// ---------------------------------------------------------------------------

/// Words that make a key secret wherever they appear in it (`db_password`,
/// `password_hint`, `aws_secret_access_key`, `set_cookie`), unless the key
/// ends with a word of [`METADATA_SUFFIXES`] (`password_policy`, `secret_name`).
const CREDENTIAL_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "passcode",
    "secret",
    "secrets",
    "credential",
    "credentials",
    "cookie",
    "cookies",
    "apikey",
    "privatekey",
    "connectionstring",
    "jwt",
];

/// Words that make a key secret when they are its subject: its last word, or
/// the word before a [`VALUE_SUFFIXES`] word (`access_token`, `token_value`,
/// `basic_auth`, `webhook_signature`), but not `token_type`, `auth_mode`.
const HOLDER_WORDS: &[&str] = &[
    "token",
    "auth",
    "authorization",
    "signature",
    "sig",
    "sas",
    "bearer",
    "assertion",
    "session",
    "otp",
    "totp",
    // Compact spellings of common secret keys (no separator, no camelCase).
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "authtoken",
    "clientsecret",
    "xapikey",
    "secretkey",
    "accesskey",
    "accountkey",
    "sharedkey",
    "masterkey",
    "sessionid",
    "sessionkey",
    "setcookie",
    "clientassertion",
    "proxyauthorization",
];

/// Words qualifying `key` as a credential: `api_key`, `x-api-key`,
/// `private_key`, `ocp-apim-subscription-key`, `x-functions-key`. A bare `key`
/// and keys such as `dedupe_key`, `public_key`, `partition_key` are not secret.
const KEY_QUALIFIERS: &[&str] = &[
    "api",
    "private",
    "secret",
    "access",
    "signing",
    "encryption",
    "decryption",
    "account",
    "shared",
    "master",
    "client",
    "subscription",
    "storage",
    "sas",
    "auth",
    "app",
    "application",
    "primary",
    "secondary",
    "session",
    "hmac",
    "webhook",
    "function",
    "functions",
    "host",
    "admin",
    "service",
    "license",
    "ssh",
    "gpg",
    "pgp",
    "crypto",
    "cipher",
    "aes",
    "symmetric",
    "root",
];

/// Words after a subject that still name its value (`token_value`, `password_hash`, `auth_header`).
const VALUE_SUFFIXES: &[&str] = &[
    "value",
    "val",
    "text",
    "string",
    "str",
    "data",
    "raw",
    "plain",
    "plaintext",
    "b64",
    "base64",
    "hex",
    "encoded",
    "hash",
    "header",
];

/// Last words that make a key describe a credential rather than hold one
/// (`password_policy`, `secret_name`, `client_secret_expires_at`, `credential_type`, `cookie_count`).
const METADATA_SUFFIXES: &[&str] = &[
    "count",
    "counts",
    "length",
    "len",
    "size",
    "policy",
    "policies",
    "required",
    "enabled",
    "disabled",
    "type",
    "types",
    "kind",
    "id",
    "ids",
    "name",
    "names",
    "expiry",
    "expires",
    "expired",
    "expiration",
    "at",
    "date",
    "time",
    "ttl",
    "age",
    "set",
    "changed",
    "updated",
    "created",
    "rotated",
    "rotation",
    "version",
    "format",
    "url",
    "uri",
    "endpoint",
    "path",
    "file",
    "strength",
    "min",
    "max",
    "rule",
    "rules",
    "status",
    "state",
    "mode",
    "method",
    "algorithm",
    "alg",
    "scheme",
    "provider",
    "source",
    "store",
    "vault",
    "location",
    "ref",
    "reference",
    "field",
];

/// Splits a key into lowercase words: camelCase humps (`apiKey`, `APIKey`),
/// `-`, `.`, `_`, spaces and any other non-alphanumeric character separate
/// words; trailing digits of a word are dropped (`token2` → `token`); empty
/// words are skipped.
fn key_words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    fn flush(word: &mut String, words: &mut Vec<String>) {
        let trimmed = word.trim_end_matches(|c: char| c.is_ascii_digit());
        if !trimmed.is_empty() {
            words.push(trimmed.to_owned());
        }
        word.clear();
    }
    for (index, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            flush(&mut word, &mut words);
            continue;
        }
        if c.is_ascii_uppercase() && index > 0 {
            let prev = chars.get(index - 1).copied().unwrap_or(' ');
            let next_lower = chars.get(index + 1).is_some_and(|n| n.is_ascii_lowercase());
            // A hump: aB, 1B, or the last capital of an acronym before a lowercase (APIKey → API|Key).
            if prev.is_ascii_lowercase() || prev.is_ascii_digit() || (prev.is_ascii_uppercase() && next_lower) {
                flush(&mut word, &mut words);
            }
        }
        word.push(c.to_ascii_lowercase());
    }
    flush(&mut word, &mut words);
    words
}

/// Whether one word, alone, names a credential: a credential or holder word,
/// or a compact spelling ending in `token`, `secret`, `password`, `passwd` or
/// containing `password`/`passphrase` (`accesstoken`, `pgpassword`).
fn word_is_secret(word: &str) -> bool {
    CREDENTIAL_WORDS.contains(&word)
        || HOLDER_WORDS.contains(&word)
        || word.ends_with("token")
        || word.ends_with("secret")
        || word.ends_with("passwd")
        || word.contains("password")
        || word.contains("passphrase")
}

/// Whether the values of this key must never be stored.
///
/// The rule, on the key split into lowercase words (camelCase, `-`, `.` and
/// `_` all separate words; trailing digits dropped):
///
/// 1. A key of one word is secret if that word names a credential on its own:
///    `password`, `passwd`, `pwd`, `passphrase`, `secret`, `credential(s)`,
///    `cookie`, `token`, `auth`, `authorization`, `signature`, `sig`, `sas`,
///    `session`, `bearer`, `jwt`, compact spellings such as `apikey`,
///    `accesstoken`, `clientsecret`, `sessionid`, `setcookie`,
///    `connectionstring`, or any word ending in `token`/`secret`/`passwd` or
///    containing `password`/`passphrase`. (`tokens`, `monkey`, `pass`,
///    `author`, `secretary` are not.)
/// 2. A credential word (`password`, `secret`, `credential`, `cookie`, …)
///    anywhere makes the key secret (`db_password`, `secret_key`,
///    `set-cookie`, `password_hint`), unless the key's last word says it
///    describes the credential instead of holding it (`password_policy`,
///    `secret_name`, `client_secret_expires_at`, `cookie_count`).
/// 3. Otherwise the key's subject decides: its last word, or the word before
///    a value word (`value`, `hash`, `header`, …). The subject is secret if it
///    names a credential on its own (rule 1: `access_token`, `basic_auth`,
///    `token_value`, `webhook_signature`), or is `key` after a credential
///    qualifier (`api_key`, `x-api-key`, `private_key`, `subscription_key`;
///    not `key`, `dedupe_key`, `public_key`, `key_count`), or is
///    `connection_string` or `session_id`.
///
/// So `tenant_id`, `token_count`, `tokens_used`, `max_tokens`, `token_type`,
/// `auth_mode`, `authority_mode`, `signature_algorithm` are not secret, and a
/// pagination `next_page_token` is (redacting too much is the safe side).
pub fn is_secret_key(key: &str) -> bool {
    let words = key_words(key);
    let Some(last) = words.last() else {
        return false;
    };
    if words.len() == 1 {
        return word_is_secret(last);
    }
    let described = METADATA_SUFFIXES.contains(&last.as_str());
    if !described && words.iter().any(|word| CREDENTIAL_WORDS.contains(&word.as_str())) {
        return true;
    }
    // The subject is the last word, or the word before a value word.
    match words.as_slice() {
        [.., before, last] if phrase_is_secret(before, last) => true,
        [.., qualifier, subject, last] if VALUE_SUFFIXES.contains(&last.as_str()) => {
            word_is_secret(subject) || phrase_is_secret(qualifier, subject)
        }
        [subject, last] if VALUE_SUFFIXES.contains(&last.as_str()) => word_is_secret(subject),
        [.., subject] => word_is_secret(subject),
        [] => false,
    }
}

/// Two-word subjects that name a credential: `<qualifier>_key`, `connection_string`, `session_id`.
fn phrase_is_secret(qualifier: &str, subject: &str) -> bool {
    match (qualifier, subject) {
        (qualifier, "key") => KEY_QUALIFIERS.contains(&qualifier),
        ("connection", "string") | ("session", "id") => true,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Free text
// ---------------------------------------------------------------------------

/// The compiled patterns of [`sanitize_text`].
struct Patterns {
    /// `scheme://user:password@` — the password part.
    url_password: Regex,
    /// `scheme://TOKEN@` — a token used as the user name (as in git remotes).
    url_user_token: Regex,
    /// `key=value`, `key: value`, `"key": "value"`, `key=\"value\"`; the key is checked with [`is_secret_key`].
    key_value: Regex,
    /// `Bearer <token>`, `Basic <b64>` outside a key-value pair.
    auth_scheme: Regex,
    /// Three or more base64url segments separated by dots, the first starting with `eyJ` (`{"`).
    jwt: Regex,
}

fn build_patterns() -> Option<Patterns> {
    Some(Patterns {
        url_password: Regex::new(r"(?i)\b(?P<prefix>[a-z][a-z0-9+.\-]*://[^\s/?#@:\[\]]*:)(?P<password>[^\s/?#]*)@")
            .ok()?,
        url_user_token: Regex::new(r"(?i)\b(?P<prefix>[a-z][a-z0-9+.\-]*://)(?P<user>[A-Za-z0-9_\-.~%+]{16,})@")
            .ok()?,
        key_value: Regex::new(concat!(
            r#"(?P<key>[A-Za-z0-9_][A-Za-z0-9_.\-]*)(?:\\*["'])?[ \t]*[:=][ \t]*"#,
            r#"(?:"(?P<dq>(?:[^"\\\n]|\\.)*)""#,
            r#"|'(?P<sq>(?:[^'\\\n]|\\.)*)'"#,
            r#"|\\+"(?P<edq>[^"\\\n]+)"#,
            r#"|\\+'(?P<esq>[^'\\\n]+)"#,
            r#"|["'](?P<open>[^\s&;,"']+)"#,
            r#"|(?:(?i:bearer|basic|digest|negotiate|ntlm|token)[ \t]+)?(?P<bare>[^\s&;,"']+))"#,
        ))
        .ok()?,
        auth_scheme: Regex::new(r"(?i)\b(?:bearer|basic)[ \t]+(?P<token>[A-Za-z0-9\-._~+/]+=*)").ok()?,
        jwt: Regex::new(r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+)*").ok()?,
    })
}

static PATTERNS: LazyLock<Option<Patterns>> = LazyLock::new(build_patterns);

/// Removes ASCII control characters except `\n` and `\t`.
fn strip_controls(text: &str) -> String {
    text.chars().filter(|&c| !c.is_ascii_control() || c == '\n' || c == '\t').collect()
}

/// Replaces the text of one capture group of every match, keeping the rest of the match.
fn replace_group(text: &str, regex: &Regex, group: &str, keep: impl Fn(&Captures<'_>) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for caps in regex.captures_iter(text) {
        let Some(target) = caps.name(group) else {
            continue;
        };
        if keep(&caps) {
            continue;
        }
        out.push_str(text.get(last..target.start()).unwrap_or(""));
        out.push_str(REDACTED);
        last = target.end();
    }
    out.push_str(text.get(last..).unwrap_or(""));
    out
}

/// Redacts the values of secret-looking keys in `key=value` / `key: value` pairs.
///
/// Scans candidate pairs left to right; when a key is not secret the scan
/// resumes right after its separator, so a pair hidden in a harmless value
/// (`note: password=x`, `https://h/p?token=x`) is still found.
fn redact_key_values(text: &str, regex: &Regex) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut position = 0;
    while let Some(caps) = regex.captures_at(text, position) {
        let (Some(key), Some(whole)) = (caps.name("key"), caps.get(0)) else {
            break;
        };
        let value = ["dq", "sq", "edq", "esq", "open", "bare"].into_iter().find_map(|name| caps.name(name));
        match value {
            Some(value) if is_secret_key(key.as_str()) => {
                out.push_str(text.get(copied..value.start()).unwrap_or(""));
                out.push_str(REDACTED);
                copied = value.end();
                position = whole.end().max(position + 1);
            }
            _ => {
                // Resume after the separator: the value may itself contain a pair.
                let after_key = key.end();
                let separator_end = text
                    .get(after_key..)
                    .and_then(|rest| rest.find([':', '=']).map(|offset| after_key + offset + 1))
                    .unwrap_or(whole.end());
                position = separator_end.max(position + 1);
            }
        }
        if position >= text.len() {
            break;
        }
    }
    out.push_str(text.get(copied..).unwrap_or(""));
    out
}

/// An ordinary word (`auth`, `Configuration`) rather than a credential after `Basic`/`Bearer`.
fn is_plain_word(token: &str) -> bool {
    let mut chars = token.chars();
    token.len() <= 24 && chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_lowercase())
}

fn redact_text(text: &str, patterns: &Patterns) -> String {
    let text = replace_group(text, &patterns.url_password, "password", |_| false);
    let text = replace_group(&text, &patterns.url_user_token, "user", |caps| {
        !caps.name("user").is_some_and(|user| user.as_str().chars().any(|c| c.is_ascii_digit()))
    });
    let text = redact_key_values(&text, &patterns.key_value);
    let text = replace_group(&text, &patterns.auth_scheme, "token", |caps| {
        caps.name("token").is_some_and(|token| is_plain_word(token.as_str()))
    });
    patterns.jwt.replace_all(&text, REDACTED).into_owned()
}

/// The largest char boundary of `text` at or below `index`.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    (0..=index).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

/// Cuts `text` to at most `max` bytes (marker included), on a char boundary
/// and never inside a [`REDACTED`] marker, so a cut cannot reveal part of a
/// value or leave a half marker behind.
fn bound_bytes(text: String, max: usize, marker: &str) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = floor_char_boundary(&text, max.saturating_sub(marker.len()));
    if let Some((start, _)) =
        text.match_indices(REDACTED).find(|&(start, found)| start < cut && start + found.len() > cut)
    {
        cut = start;
    }
    let mut out = String::with_capacity(cut + marker.len());
    out.push_str(text.get(..cut).unwrap_or(""));
    out.push_str(marker);
    out
}

/// Applies `step` until the result no longer changes (at most a few passes),
/// so that sanitizing twice equals sanitizing once.
fn settle(input: &str, step: impl Fn(&str) -> String) -> String {
    let mut current = step(input);
    for _ in 0..SETTLE_PASSES_MAX {
        let next = step(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

fn sanitize_bounded(text: &str, max: usize, marker: &str) -> String {
    let Some(patterns) = PATTERNS.as_ref() else {
        // The patterns are fixed and tested to compile; should they ever not,
        // fail closed: nothing unsanitized is stored.
        return if text.is_empty() { String::new() } else { REDACTED.to_owned() };
    };
    settle(text, |text| bound_bytes(redact_text(&strip_controls(text), patterns), max, marker))
}

/// Sanitizes free text before it is stored.
///
/// Strips ASCII control characters (except `\n` and `\t`), then redacts:
/// - `key=value` and `key: value` pairs whose key is secret-looking ([`is_secret_key`]),
///   quoted or not, JSON-style `"key": "value"` and escaped `\"key\":\"value\"` included;
///   an unquoted value runs up to whitespace, `&`, `;`, `,` or a quote, and an
///   auth scheme before it is kept (`Authorization: Bearer [redacted]`);
/// - `Bearer <token>` and `Basic <b64>` anywhere (case-insensitive), unless what
///   follows is an ordinary word (`basic auth`);
/// - JWT-shaped strings (base64url segments joined by dots, the first starting with `eyJ`);
/// - passwords in URLs (`scheme://user:password@host` → `scheme://user:[redacted]@host`)
///   and long tokens used as the URL user name (`https://ghp_1234…@github.com`);
/// - query parameters with secret-looking names (`?api_key=…&x=1`), as pairs.
///
/// Long hex or base64 blobs are not assumed to be secrets. Finally the text is
/// bounded to [`TEXT_BYTES_MAX`] bytes, ending with [`TRUNCATED_MARKER`] when cut.
pub fn sanitize_text(text: &str) -> String {
    sanitize_bounded(text, TEXT_BYTES_MAX, TRUNCATED_MARKER)
}

/// A key as stored: free-text sanitized and bounded to [`KEY_BYTES_MAX`].
fn sanitize_key(key: &str) -> String {
    sanitize_bounded(key, KEY_BYTES_MAX, KEY_TRUNCATED_MARKER)
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// Sanitizes a JSON value before it is stored.
///
/// Recursively: the value of a secret-looking key ([`is_secret_key`], checked
/// on the key as given and as stored) becomes [`REDACTED`] whatever its type;
/// every string goes through [`sanitize_text`]; keys are sanitized the same way
/// and bounded to [`KEY_BYTES_MAX`]; containers nested deeper than
/// [`JSON_DEPTH_MAX`] become [`TOO_DEEP`]; objects keep at most
/// [`OBJECT_KEYS_MAX`] keys (the last one being [`DROPPED_KEYS_MARKER`] with
/// the number dropped) and arrays at most [`ARRAY_ITEMS_MAX`] items (the last
/// one being `"[N items dropped]"`). Numbers, booleans and null are kept.
///
/// Deterministic and idempotent. Should two keys sanitize to the same key, the
/// later one (in the object's order) wins.
pub fn sanitize_json(value: &Value) -> Value {
    sanitize_value(value, 0)
}

/// `depth` is the nesting of the container holding `value` (0 for the root).
fn sanitize_value(value: &Value, depth: usize) -> Value {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
        Value::String(text) => Value::String(sanitize_text(text)),
        Value::Array(_) | Value::Object(_) if depth >= JSON_DEPTH_MAX => Value::String(TOO_DEEP.to_owned()),
        Value::Array(items) => {
            let keep = if items.len() > ARRAY_ITEMS_MAX { ARRAY_ITEMS_MAX - 1 } else { items.len() };
            let mut out: Vec<Value> = items.iter().take(keep).map(|item| sanitize_value(item, depth + 1)).collect();
            if items.len() > keep {
                out.push(Value::String(format!("[{} items dropped]", items.len() - keep)));
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let keep = if map.len() > OBJECT_KEYS_MAX { OBJECT_KEYS_MAX - 1 } else { map.len() };
            let mut out = Map::new();
            for (key, item) in map.iter().take(keep) {
                let stored_key = sanitize_key(key);
                let sanitized = if is_secret_key(key) || is_secret_key(&stored_key) {
                    Value::String(REDACTED.to_owned())
                } else {
                    sanitize_value(item, depth + 1)
                };
                out.insert(stored_key, sanitized);
            }
            if map.len() > keep {
                out.insert(DROPPED_KEYS_MARKER.to_owned(), Value::from(map.len() - keep));
            }
            Value::Object(out)
        }
    }
}

// ---------------------------------------------------------------------------
// Summary counts
// ---------------------------------------------------------------------------

/// The normalized summary counts of a run (SPEC 5): only the known keys, only
/// non-negative integers. A count that was never reported is `None` and is
/// left out of the JSON form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryCounts {
    /// Items the run intends to handle.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub total: Option<u64>,
    /// Items handled so far, whatever their result.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub processed: Option<u64>,
    /// Items handled successfully.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub succeeded: Option<u64>,
    /// Items that failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failed: Option<u64>,
    /// Items skipped.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub skipped: Option<u64>,
}

impl SummaryCounts {
    /// The known keys, in display order.
    pub const KEYS: [&'static str; 5] = ["total", "processed", "succeeded", "failed", "skipped"];

    /// Keeps from a reported JSON object only the known keys whose values are
    /// non-negative integers (`3`, not `3.0`, `-1` or `"3"`); everything else,
    /// and any value that is not an object, is dropped.
    pub fn normalize(value: &Value) -> SummaryCounts {
        let Value::Object(map) = value else {
            return SummaryCounts::default();
        };
        let count = |key: &str| match map.get(key) {
            Some(Value::Number(number)) => number.as_u64(),
            _ => None,
        };
        SummaryCounts {
            total: count("total"),
            processed: count("processed"),
            succeeded: count("succeeded"),
            failed: count("failed"),
            skipped: count("skipped"),
        }
    }

    /// These counts updated by a later report: a key the later report carries wins.
    pub fn merge(self, later: SummaryCounts) -> SummaryCounts {
        SummaryCounts {
            total: later.total.or(self.total),
            processed: later.processed.or(self.processed),
            succeeded: later.succeeded.or(self.succeeded),
            failed: later.failed.or(self.failed),
            skipped: later.skipped.or(self.skipped),
        }
    }

    /// Whether no count was reported.
    pub fn is_empty(&self) -> bool {
        *self == SummaryCounts::default()
    }

    /// The count for one of [`SummaryCounts::KEYS`]; `None` for an unknown key or an unreported count.
    pub fn get(&self, key: &str) -> Option<u64> {
        match key {
            "total" => self.total,
            "processed" => self.processed,
            "succeeded" => self.succeeded,
            "failed" => self.failed,
            "skipped" => self.skipped,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn ordinary_keys_are_not_secret() {
        let ordinary = [
            "tenant_id",
            "tenantId",
            "workspace_id",
            "provider_connection_id",
            "connection_id",
            "key",
            "keys",
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
            "tokens",
            "tokens_used",
            "max_tokens",
            "token_count",
            "token_type",
            "token_expires_in",
            "token_endpoint",
            "tokenization",
            "pass",
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
            "password_length",
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
            (
                "id token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDQU5BUlkifQ.c2lnbmF0dXJl expired",
                "id token [redacted] expired",
            ),
            ("https://admin:CANARY@db.example.com/x", "https://admin:[redacted]@db.example.com/x"),
            ("postgres://svc:p@ss-CANARY@db:5432/app", "postgres://svc:[redacted]@db:5432/app"),
            ("redis://:CANARY@cache:6379", "redis://:[redacted]@cache:6379"),
            ("https://ghp_CANARY0123456789abcdef@github.com/o/r.git", "https://[redacted]@github.com/o/r.git"),
            (
                "GET https://api.example.com/v1?api_key=CANARY&x=1",
                "GET https://api.example.com/v1?api_key=[redacted]&x=1",
            ),
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
            "dedupe_key=nightly-2024 key=value",
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
                assert!(
                    !output.contains("[reda…") && !output.contains("[redacted…"),
                    "{}",
                    &output[output.len() - 40..]
                );
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

    // ---- properties -------------------------------------------------------

    /// Fragments that exercise every rule and their interactions.
    const FRAGMENTS: &[&str] = &[
        "password",
        "token",
        "api_key",
        "x-api-key",
        "Authorization",
        "auth",
        "sig",
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
                &["password", "Token", "apiKey", "tenant_id", "note", "X-API-KEY", "key", "[dropped keys]"][..]
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
            ][..]),
            key in plain_key(),
        ) {
            let text = format!("{before} {shape} {after}");
            let output = sanitize_json(&json!({ key: text }));
            let stored = serde_json::to_string(&output).unwrap();
            prop_assert!(!stored.contains(CANARY), "{}", stored);
        }
    }
}
