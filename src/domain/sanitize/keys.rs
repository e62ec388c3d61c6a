//! Secret-looking keys: a key is read as lower-case singular words (split
//! on `_`, `-`, `.` and camelCase) and is secret when one of its words is a
//! credential word, or a qualifier before a holder word, unless it names
//! metadata about a secret (`password_policy`) or counts things (`max_tokens`).

/// Words that make a key secret wherever they appear in it (`db_password`,
/// `password_hint`, `aws_secret_access_key`, `set_cookie`), unless the key
/// ends with a word of [`METADATA_SUFFIXES`] (`password_policy`, `secret_name`).
/// All word lists hold singular words: [`key_words`] singularizes the key.
const CREDENTIAL_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "passcode",
    "secret",
    "credential",
    "cookie",
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
    "pass",
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
/// `private_key`, `ocp-apim-subscription-key`, `x-functions-key`. Keys such
/// as `dedupe_key`, `public_key`, `partition_key` are not secret (a bare
/// `key` is: see [`is_secret_key`]).
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

/// Words after a subject that still name its value or a container of values
/// (`token_value`, `password_hash`, `auth_header`, `token_list`, `tokenList`).
const VALUE_SUFFIXES: &[&str] = &[
    "list",
    "array",
    "arr",
    "map",
    "dict",
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
    "length",
    "len",
    "size",
    "policy",
    "required",
    "enabled",
    "disabled",
    "type",
    "kind",
    "id",
    "ids",
    "name",
    "expiry",
    "expire",
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

/// First words that make a key count things rather than hold one
/// (`max_tokens`, `total_tokens`, `num_keys`); a credential word still wins
/// (`min_password` is secret).
const QUANTITY_PREFIXES: &[&str] = &["max", "min", "num", "number", "total", "remaining"];

/// Shortest word that [`singular`] may shorten: `sas`, `ids`, `aes` stay as they are.
const SINGULAR_WORD_BYTES_MIN: usize = 4;

/// Words of the lists above whose plural ends in `-ies` but whose singular
/// ends in `-ie`, not `-y`.
const IE_SINGULARS: &[&str] = &["cookie", "setcookie"];

/// The singular of one lowercase word, so that one rule covers `token` and
/// `tokens`, `api_key` and `api_keys`: `-ies` → `-y` (`policies`; but
/// `cookies` → `cookie`, see [`IE_SINGULARS`]), and a trailing `s` is
/// dropped unless the word ends in `ss`, `us` or `is` (`pass`, `access`,
/// `status`, `analysis`) or is shorter than [`SINGULAR_WORD_BYTES_MIN`].
fn singular(word: &str) -> String {
    if word.len() < SINGULAR_WORD_BYTES_MIN || !word.ends_with('s') {
        return word.to_owned();
    }
    if let Some(stem) = word.strip_suffix("ies") {
        let ie = format!("{stem}ie");
        return if IE_SINGULARS.contains(&ie.as_str()) { ie } else { format!("{stem}y") };
    }
    if word.ends_with("ss") || word.ends_with("us") || word.ends_with("is") {
        return word.to_owned();
    }
    word.get(..word.len() - 1).unwrap_or(word).to_owned()
}

/// Splits a key into lowercase singular words: camelCase humps (`apiKey`,
/// `APIKey`), `-`, `.`, `_`, spaces and any other non-alphanumeric character
/// separate words; trailing digits of a word are dropped (`token2` →
/// `token`); plurals become singular ([`singular`]: `tokens` → `token`);
/// empty words are skipped.
pub(super) fn key_words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    fn flush(word: &mut String, words: &mut Vec<String>) {
        let trimmed = word.trim_end_matches(|c: char| c.is_ascii_digit());
        if !trimmed.is_empty() {
            words.push(singular(trimmed));
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
/// The rule, on the key normalized to lowercase singular words (camelCase,
/// `-`, `.` and `_` all separate words; trailing digits dropped; a plural
/// `s` dropped, so `tokens`, `api_keys` and `secrets` read as `token`,
/// `api key`, `secret`):
///
/// 1. A key of one word is secret if that word names a credential on its own:
///    `password`, `passwd`, `pwd`, `pass`, `passphrase`, `secret`,
///    `credential`, `cookie`, `token`, `key`, `auth`, `authorization`,
///    `signature`, `sig`, `sas`, `session`, `bearer`, `jwt`, compact
///    spellings such as `apikey`, `accesstoken`, `clientsecret`, `sessionid`,
///    `setcookie`, `connectionstring`, or any word ending in
///    `token`/`secret`/`passwd` or containing `password`/`passphrase`.
///    (`monkey`, `bypass`, `author`, `secretary` are not.)
/// 2. A credential word (`password`, `secret`, `credential`, `cookie`, …)
///    anywhere makes the key secret (`db_password`, `secret_key`,
///    `set-cookie`, `password_hint`), unless the key's last word says it
///    describes the credential instead of holding it (`password_policy`,
///    `secret_name`, `client_secret_expires_at`, `cookie_count`).
/// 3. Otherwise a key that starts with a quantity word (`max`, `min`,
///    `num`, `total`, …) counts things and is not secret (`max_tokens`).
/// 4. Otherwise the key's subject decides: its last word, or the word before
///    a value or container word (`value`, `hash`, `header`, `list`, …). The
///    subject is secret if it names a credential on its own (rule 1 but for
///    `key`: `access_token`, `basic_auth`, `token_value`, `token_list`,
///    `auth_token_list`, `webhook_signature`, `db_pass`), or is `key` after a
///    credential qualifier (`api_key`, `api_keys`, `x-api-key`,
///    `private_key`, `subscription_key`; not `dedupe_key`, `public_key`,
///    `key_count`), or is `connection_string` or `session_id`.
///
/// So `tenant_id`, `token_count`, `tokens_used`, `max_tokens`, `token_type`,
/// `auth_mode`, `authority_mode`, `signature_algorithm`, `dedupe_key`,
/// `idempotency_key` are not secret, and a pagination `next_page_token` is
/// (redacting too much is the safe side).
pub fn is_secret_key(key: &str) -> bool {
    let words = key_words(key);
    let (Some(first), Some(last)) = (words.first(), words.last()) else {
        return false;
    };
    if words.len() == 1 {
        return word_is_secret(last) || last == "key";
    }
    let described = METADATA_SUFFIXES.contains(&last.as_str());
    if !described && words.iter().any(|word| CREDENTIAL_WORDS.contains(&word.as_str())) {
        return true;
    }
    if QUANTITY_PREFIXES.contains(&first.as_str()) {
        return false;
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
