//! The one check every caller-supplied id goes through before a command
//! may append it: workspace, tenant, actor, connection, capability,
//! operation type and dedupe key.
//!
//! Ids are stored verbatim (never normalized, never redacted: an id changed
//! on the way in would name something else), and they are shown on every
//! page. So an id is refused when it could mislead a reader or carry a
//! secret into the immutable log:
//!
//! - empty, or longer than [`ID_BYTES_MAX`] bytes;
//! - holding an invisible or spacing character — Unicode general category
//!   Cc (control), Cf (format: U+200B, the bidi override U+202E), Zs, Zl or
//!   Zp (separators) — which would make `u1\u{200B}` a second actor that
//!   looks exactly like `u1`;
//! - not in Unicode NFC, so `é` has one spelling, not two that look alike;
//! - looking like a credential: anything the free-text sanitizer would
//!   redact (`password=…`, `conn-token=…`, a bearer token, a JWT, an AWS
//!   access key id). Free text is redacted; an id cannot be, so it is refused.
//!
//! The check applies to commands only. Folding the log does not re-check the
//! ids of recorded events: they passed the rules of the version that accepted
//! them, and a stricter rule must not make an existing log unreadable.

use unicode_normalization::is_nfc;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::domain::sanitize::sanitize_text;

/// Longest id (workspace, tenant, actor, connection, capability, operation
/// type, dedupe key), in bytes.
pub const ID_BYTES_MAX: usize = 128;

/// The word that stands for [`Principal::System`](crate::domain::model::Principal::System)
/// wherever a principal is one string (audit "who", actor filters): no actor
/// may have it as id.
pub const SYSTEM_PRINCIPAL_WORD: &str = "system";

/// The name of a general category an id may not contain, or `None` for a
/// visible character.
fn invisible_category(c: char) -> Option<&'static str> {
    match c.general_category() {
        GeneralCategory::Control => Some("a control character (Cc)"),
        GeneralCategory::Format => Some("a format character (Cf)"),
        GeneralCategory::SpaceSeparator => Some("a space separator (Zs)"),
        GeneralCategory::LineSeparator => Some("a line separator (Zl)"),
        GeneralCategory::ParagraphSeparator => Some("a paragraph separator (Zp)"),
        _ => None,
    }
}

/// Checks an opaque id (see the module documentation). `what` names the
/// field in the refusal (`tenant_id`, `initiator.id`). A refusal never
/// repeats a credential-looking id: the message is returned to the caller
/// and may be logged.
pub fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err(format!("{what} must be 1 to {ID_BYTES_MAX} bytes, got {}", id.len()));
    }
    if let Some((c, category)) = id.chars().find_map(|c| invisible_category(c).map(|category| (c, category))) {
        let code = u32::from(c);
        return Err(format!("{what} contains U+{code:04X}, {category}: ids may hold visible characters only"));
    }
    if !is_nfc(id) {
        return Err(format!("{what} {id:?} is not in Unicode NFC: send its composed form"));
    }
    if sanitize_text(id) != id {
        return Err(format!(
            "{what} looks like a credential (a secret-looking key=value pair, token or key): ids are stored \
             verbatim in the immutable log, so one that may hold a secret is refused rather than redacted"
        ));
    }
    Ok(())
}

/// Checks an actor id: an id ([`check_id`]) other than the system's word,
/// so an actor can never be mistaken for the system in audit and filters.
pub fn check_actor_id(what: &str, id: &str) -> Result<(), String> {
    check_id(what, id)?;
    if id == SYSTEM_PRINCIPAL_WORD {
        return Err(format!("{what} {id:?} is reserved for the system principal"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "ids_tests.rs"]
mod tests;
