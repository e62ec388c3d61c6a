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

mod keys;

pub use keys::is_secret_key;
#[cfg(test)]
use keys::key_words;

// ---------------------------------------------------------------------------
// Free text
// ---------------------------------------------------------------------------

/// The compiled patterns of [`sanitize_text`].
struct Patterns {
    /// `scheme://user:password@` — the password part.
    url_password: Regex,
    /// `scheme://TOKEN@` — a token used as the user name (as in git remotes).
    url_user_token: Regex,
    /// `key=value`, `key: value`, `"key": "value"`, `key=\"value\"`, and the
    /// URL-encoded `key%3Dvalue` (`%3D` is `=`, `%3A` is `:`, `%253D` twice
    /// encoded); the key is checked with [`is_secret_key`].
    key_value: Regex,
    /// `Bearer <token>`, `Basic <b64>` outside a key-value pair.
    auth_scheme: Regex,
    /// Three or more base64url segments separated by dots, the first starting with `eyJ` (`{"`).
    jwt: Regex,
    /// An AWS access key id: `AKIA` (long-term) or `ASIA` (temporary) and 16 upper-case letters or digits.
    aws_access_key_id: Regex,
}

fn build_patterns() -> Option<Patterns> {
    Some(Patterns {
        url_password: Regex::new(r"(?i)\b(?P<prefix>[a-z][a-z0-9+.\-]*://[^\s/?#@:\[\]]*:)(?P<password>[^\s/?#]*)@")
            .ok()?,
        url_user_token: Regex::new(r"(?i)\b(?P<prefix>[a-z][a-z0-9+.\-]*://)(?P<user>[A-Za-z0-9_\-.~%+]{16,})@")
            .ok()?,
        key_value: Regex::new(concat!(
            r#"(?P<key>[A-Za-z0-9_][A-Za-z0-9_.\-]*)(?:\\*["'])?[ \t]*(?P<sep>[:=]|%(?:25)?3[AaDd])[ \t]*"#,
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
        aws_access_key_id: Regex::new(r"(?:AKIA|ASIA)[A-Z0-9]{16}").ok()?,
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
        let (Some(key), Some(separator), Some(whole)) = (caps.name("key"), caps.name("sep"), caps.get(0)) else {
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
                position = separator.end().max(position + 1);
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
    let text = patterns.jwt.replace_all(&text, REDACTED);
    patterns.aws_access_key_id.replace_all(&text, REDACTED).into_owned()
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
/// - URL-encoded pairs (`password%3D<secret>`), the same way;
/// - JWT-shaped strings (base64url segments joined by dots, the first starting with `eyJ`);
/// - AWS access key ids (`AKIA` or `ASIA` and 16 upper-case letters or digits);
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[path = "sanitize_tests.rs"]
mod tests;
