//! Takes libpq's TLS parameters (`sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`, `sslpassword`, `sslcrl`, `sslcrldir`) out of a connection string and leaves
//! the rest for tokio-postgres, whose parser knows only
//! `sslmode=disable|prefer|require` and none of the files. Both forms libpq
//! accepts are read: the URL
//! (`postgres://host/db?sslmode=verify-full&sslrootcert=ca.crt`) and the
//! `key=value` string (`host=db sslmode=verify-full sslrootcert='ca.crt'`).
//! `tcp_user_timeout` is taken out too: libpq reads it in milliseconds,
//! tokio-postgres in seconds. Everything else (several hosts,
//! `target_session_attrs`, the password) is passed through as written.

/// libpq's TLS parameters as one connection string names them: the last
/// of each given, decoded (`sslmode` as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsParameters {
    pub(crate) sslmode: Option<String>,
    pub(crate) sslrootcert: Option<String>,
    pub(crate) sslcert: Option<String>,
    pub(crate) sslkey: Option<String>,
    pub(crate) sslcrl: Option<String>,
    pub(crate) sslcrldir: Option<String>,
    pub(crate) sslpassword: Option<SslPassword>,
}

/// The password of an encrypted client key: never shown (its `Debug` says
/// only that one was given), never in a message.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SslPassword(pub(crate) String);

impl std::fmt::Debug for SslPassword {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SslPassword(..)")
    }
}

/// A connection string with its TLS parameters taken out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Split {
    /// The string without the TLS parameters, for tokio-postgres.
    pub(crate) rest: String,
    pub(crate) tls: TlsParameters,
    /// libpq's `tcp_user_timeout`, in milliseconds, as written.
    pub(crate) tcp_user_timeout: Option<String>,
}

const SSLMODE: &str = "sslmode";
const SSLROOTCERT: &str = "sslrootcert";
const SSLCERT: &str = "sslcert";
const SSLKEY: &str = "sslkey";
const SSLCRL: &str = "sslcrl";
const SSLCRLDIR: &str = "sslcrldir";
const SSLPASSWORD: &str = "sslpassword";
const TCP_USER_TIMEOUT: &str = "tcp_user_timeout";

/// Splits `url`. A string this reader cannot tokenize is passed through
/// whole, so tokio-postgres reports what is wrong with it.
pub(crate) fn split(url: &str) -> Split {
    let split = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)
    } else {
        split_key_values(url)
    };
    split.unwrap_or_else(|| Split { rest: url.to_owned(), ..Split::default() })
}

/// Keeps the parameters taken out, the last of each winning (as libpq).
fn take(key: &str, value: String, split: &mut Split) -> bool {
    let found = &mut split.tls;
    match key {
        TCP_USER_TIMEOUT => split.tcp_user_timeout = Some(value),
        SSLMODE => found.sslmode = Some(value),
        SSLROOTCERT => found.sslrootcert = Some(value),
        SSLCERT => found.sslcert = Some(value),
        SSLKEY => found.sslkey = Some(value),
        SSLCRL => found.sslcrl = Some(value),
        SSLCRLDIR => found.sslcrldir = Some(value),
        SSLPASSWORD => found.sslpassword = Some(SslPassword(value)),
        _ => return false,
    }
    true
}

/// The query begins at the first `?` after the credentials: tokio-postgres
/// reads the user info up to the first `@`, so a `?` in a password is not
/// a query.
fn split_url(url: &str) -> Option<Split> {
    let after_credentials = url.find('@').map_or(0, |at| at + 1);
    let Some(question) = url[after_credentials..].find('?').map(|at| at + after_credentials) else {
        return Some(Split { rest: url.to_owned(), ..Split::default() });
    };
    let mut found = Split::default();
    let mut kept = Vec::new();
    for pair in url[question + 1..].split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !take(&percent_decode(key)?, percent_decode(value)?, &mut found) {
            kept.push(pair);
        }
    }
    found.rest = url[..question].to_owned();
    if !kept.is_empty() {
        found.rest.push('?');
        found.rest.push_str(&kept.join("&"));
    }
    Some(found)
}

/// `%XX` escapes decoded; `None` when the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes.get(index + 1..index + 3).filter(|_| bytes[index] == b'%');
        match escaped.and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()) {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// `key = value` pairs separated by white space; a value is quoted with
/// `'` or bare, and `\` escapes the next character in either (libpq's and
/// tokio-postgres' rules). The kept pairs are copied as written.
fn split_key_values(text: &str) -> Option<Split> {
    let mut found = Split::default();
    let mut kept: Vec<&str> = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        chars.next_if(|(_, c)| *c == '=')?;
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let value = key_value(&mut chars)?;
        let end = chars.peek().map_or(text.len(), |(at, _)| *at);
        if !take(&key, value, &mut found) {
            kept.push(&text[start..end]);
        }
    }
    found.rest = kept.join(" ");
    Some(found)
}

/// One value, quoted or bare; `None` when a quote or an escape is not closed.
fn key_value(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> Option<String> {
    let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
    let mut value = String::new();
    loop {
        match chars.peek().map(|(_, c)| *c) {
            None if quoted => return None,
            None => return Some(value),
            Some('\'') if quoted => {
                chars.next();
                return Some(value);
            }
            Some(c) if c.is_whitespace() && !quoted => return Some(value),
            Some('\\') => {
                chars.next();
                value.push(chars.next()?.1);
            }
            Some(c) => {
                chars.next();
                value.push(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_key_password_is_taken_out_and_never_shown() {
        let url = split("postgres://u@h/db?sslkey=/k.key&sslpassword=p%40ss%20word&application_name=x");
        assert_eq!(url.tls.sslpassword, Some(SslPassword("p@ss word".to_owned())));
        assert_eq!(url.rest, "postgres://u@h/db?application_name=x");
        let pairs = split(r"host=h sslpassword='zq\'x' dbname=db");
        assert_eq!(pairs.rest, "host=h dbname=db");
        assert_eq!(pairs.tls.sslpassword, Some(SslPassword("zq'x".to_owned())));
        for shown in [format!("{url:?}"), format!("{pairs:?}")] {
            assert!(!shown.contains("ss word") && !shown.contains("zq"), "{shown}");
        }
    }
    use super::*;

    fn of(rest: &str, sslmode: Option<&str>, sslrootcert: Option<&str>) -> Split {
        let tls = TlsParameters {
            sslmode: sslmode.map(str::to_owned),
            sslrootcert: sslrootcert.map(str::to_owned),
            ..TlsParameters::default()
        };
        Split { rest: rest.to_owned(), tls, tcp_user_timeout: None }
    }

    fn files(cert: &str, key: &str) -> TlsParameters {
        TlsParameters { sslcert: Some(cert.to_owned()), sslkey: Some(key.to_owned()), ..TlsParameters::default() }
    }

    #[test]
    fn a_url_keeps_its_other_parameters_and_hosts() {
        assert_eq!(
            split("postgres://u:p@a:5432,b:5433/db?target_session_attrs=read-write&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt&connect_timeout=5"),
            of("postgres://u:p@a:5432,b:5433/db?target_session_attrs=read-write&connect_timeout=5", Some("verify-full"), Some("/etc/ca.crt"))
        );
        assert_eq!(
            split("postgresql://h/db?sslmode=require&sslmode=verify-ca&sslrootcert=/tmp/ca.pem"),
            of("postgresql://h/db", Some("verify-ca"), Some("/tmp/ca.pem"))
        );
        assert_eq!(split("postgres://h/db"), of("postgres://h/db", None, None));
    }

    #[test]
    fn tcp_user_timeout_is_taken_out_in_either_form() {
        let url = split("postgres://h/db?tcp_user_timeout=1500&connect_timeout=5");
        assert_eq!(
            (url.rest.as_str(), url.tcp_user_timeout.as_deref()),
            ("postgres://h/db?connect_timeout=5", Some("1500"))
        );
        let pairs = split("host=h tcp_user_timeout = 2500 dbname=db");
        assert_eq!((pairs.rest.as_str(), pairs.tcp_user_timeout.as_deref()), ("host=h dbname=db", Some("2500")));
    }

    #[test]
    fn a_question_mark_in_a_url_password_is_not_the_query() {
        assert_eq!(
            split("postgres://u:pa?ss@h/db?sslmode=require"),
            of("postgres://u:pa?ss@h/db", Some("require"), None)
        );
    }

    #[test]
    fn a_key_value_string_keeps_its_other_pairs_as_written() {
        assert_eq!(
            split(
                r"host=a,b port=5432 password='it\'s' sslmode = verify-full sslrootcert='/etc/my ca.crt' target_session_attrs=read-write"
            ),
            of(
                r"host=a,b port=5432 password='it\'s' target_session_attrs=read-write",
                Some("verify-full"),
                Some("/etc/my ca.crt")
            )
        );
        assert_eq!(split(r"user=a\ b sslmode=disable"), of(r"user=a\ b", Some("disable"), None));
    }

    #[test]
    fn a_string_this_reader_cannot_tokenize_is_passed_through() {
        assert_eq!(split("host=a password='open"), of("host=a password='open", None, None));
        assert_eq!(split("host"), of("host", None, None));
    }

    #[test]
    fn client_certificate_files_are_taken_out_of_both_forms() {
        let url =
            split("postgres://u@h/db?sslcert=%2Fetc%2Fclient%20one.crt&application_name=x&sslkey=/etc/client.key");
        assert_eq!(url.rest, "postgres://u@h/db?application_name=x");
        assert_eq!(url.tls, files("/etc/client one.crt", "/etc/client.key"));
        let pairs = split(r"host=h sslcert='/etc/client one.crt' dbname=db sslkey=/etc/client.key");
        assert_eq!(pairs.rest, "host=h dbname=db");
        assert_eq!(pairs.tls, files("/etc/client one.crt", "/etc/client.key"));
    }

    #[test]
    fn revocation_lists_are_taken_out_of_both_forms() {
        let url = split("postgres://u@h/db?sslcrl=%2Fetc%2Frevoked%20all.crl&application_name=x&sslcrldir=/etc/crls");
        assert_eq!(url.rest, "postgres://u@h/db?application_name=x");
        assert_eq!(url.tls.sslcrl.as_deref(), Some("/etc/revoked all.crl"));
        assert_eq!(url.tls.sslcrldir.as_deref(), Some("/etc/crls"));
        let pairs = split(r"host=h sslcrl='/etc/revoked all.crl' dbname=db");
        assert_eq!(pairs.rest, "host=h dbname=db");
        assert_eq!(pairs.tls.sslcrl.as_deref(), Some("/etc/revoked all.crl"));
    }
}
