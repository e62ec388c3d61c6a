//! `verify-full` for a certificate without extensions (X.509 version 1):
//! with no subjectAltName, libpq matches the host name connected to
//! against the subject's common name (`fe-secure-common.c`,
//! `pq_verify_peer_name_matches_certificate_name`), and so does this.
//!
//! - Letters compare without regard to case.
//! - A name that begins with `*.` matches any host that ends with the
//!   rest, where the part before it holds no dot (one label, not empty).
//! - A name with a NUL byte in it matches nothing (an attack on C
//!   strings, which libpq refuses too).
//! - An IP address connected to is written as text and compared as a
//!   name, as libpq compares it with a common name.

use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::der::{Tag, Tagged};

/// The commonName attribute (2.5.4.3).
const COMMON_NAME: x509_cert::der::oid::ObjectIdentifier = x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.4.3");

/// The first common name of `subject`, when it is a string type a host
/// name can be written in (UTF8String, PrintableString, IA5String).
pub(super) fn common_name(subject: &x509_cert::name::Name) -> Option<String> {
    let value = subject.0.iter().flat_map(|rdn| rdn.0.iter()).find(|attribute| attribute.oid == COMMON_NAME)?;
    let value = &value.value;
    let text = match value.tag() {
        Tag::Utf8String => value.decode_as::<Utf8StringRef<'_>>().ok()?.as_str().to_owned(),
        Tag::PrintableString => value.decode_as::<PrintableStringRef<'_>>().ok()?.as_str().to_owned(),
        Tag::Ia5String => value.decode_as::<Ia5StringRef<'_>>().ok()?.as_str().to_owned(),
        _ => return None,
    };
    Some(text)
}

/// Whether the certificate name `name` names `host`, by libpq's rules.
pub(super) fn names_host(name: &str, host: &str) -> bool {
    if name.contains('\0') {
        return false;
    }
    name.eq_ignore_ascii_case(host) || wildcard_matches(name, host)
}

/// libpq's `wildcard_certificate_match`: `*.rest` matches `label.rest`.
fn wildcard_matches(pattern: &str, host: &str) -> bool {
    let Some(rest) = pattern.strip_prefix('*') else { return false };
    if !rest.starts_with('.') || rest.len() < 2 || host.len() <= rest.len() {
        return false;
    }
    let (label, ending) = host.split_at(host.len() - rest.len());
    ending.eq_ignore_ascii_case(rest) && !label.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_matches_its_host_whatever_the_case() {
        assert!(names_host("db.example.com", "db.example.com"));
        assert!(names_host("DB.Example.com", "db.example.COM"));
        assert!(!names_host("db.example.com", "db2.example.com"));
        assert!(!names_host("db.example.com", "example.com"));
        assert!(names_host("127.0.0.1", "127.0.0.1"));
        assert!(!names_host("127.0.0.1", "127.0.0.2"));
    }

    #[test]
    fn a_wildcard_matches_one_label_not_more_and_not_none() {
        assert!(names_host("*.example.com", "db.example.com"));
        assert!(names_host("*.Example.com", "DB.example.com"));
        assert!(!names_host("*.example.com", "a.db.example.com"), "two labels");
        assert!(!names_host("*.example.com", "example.com"), "no label");
        assert!(!names_host("*.example.com", ".example.com"), "an empty label");
        assert!(!names_host("*example.com", "dbexample.com"), "no dot after the star");
        assert!(!names_host("db.*.com", "db.example.com"), "a star inside");
        assert!(!names_host("*.", "db."), "nothing after the dot");
    }

    #[test]
    fn a_name_with_a_nul_byte_matches_nothing() {
        assert!(!names_host("db.example.com\0.evil.com", "db.example.com"));
        assert!(!names_host("db.example.com\0", "db.example.com\0"));
    }

    #[test]
    fn the_common_name_is_read_from_the_subject_in_each_string_type() {
        use std::str::FromStr;
        for subject in ["CN=db.example.com,O=Example", "O=Example,CN=db.example.com"] {
            let name = x509_cert::name::Name::from_str(subject).unwrap();
            assert_eq!(common_name(&name).as_deref(), Some("db.example.com"), "{subject}");
        }
        let without = x509_cert::name::Name::from_str("O=Example").unwrap();
        assert_eq!(common_name(&without), None);
    }
}
