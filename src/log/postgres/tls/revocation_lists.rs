//! The certificate revocation lists a server's certificate is checked
//! against (libpq's `sslcrl` and `sslcrldir`): a PEM file of `X509 CRL`s
//! and a directory of them under OpenSSL's hashed names, read when the log
//! opens and only when a chain is verified (libpq loads them with its
//! roots, and ignores them otherwise).

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;

use super::settings_error;
use super::sources::TlsFile;
use crate::error::Error;

/// Files read from an `sslcrldir`, at most: a directory of more is
/// refused, not read in part.
pub(crate) const REVOCATION_DIRECTORY_FILES_MAX: usize = 1_000;

/// The lists of the `sslcrl` file and the `sslcrldir` directory.
pub(crate) struct RevocationLists {
    pub(crate) lists: Vec<CertificateRevocationListDer<'static>>,
    /// Where they came from, for messages: "sslcrl FILE", "sslcrldir
    /// DIRECTORY", or both.
    pub(crate) source: String,
}

/// The lists `sslcrl` and `sslcrldir` name; `None` when they name none,
/// or when `sslcrl` is libpq's default file and that is absent.
pub(crate) fn load(sslcrl: Option<&TlsFile>, sslcrldir: Option<&str>) -> Result<Option<RevocationLists>, Error> {
    let mut lists = Vec::new();
    let mut sources = Vec::new();
    if let Some(file) = sslcrl {
        let absent_default = match file {
            TlsFile::Default(path) => !super::present(path)?,
            TlsFile::Named(_) => false,
        };
        if !absent_default {
            let path = file.path();
            lists.extend(file_lists(path, "sslcrl")?);
            sources.push(format!("sslcrl {}", path.display()));
        }
    }
    if let Some(directory) = sslcrldir {
        lists.extend(directory_lists(Path::new(directory))?);
        sources.push(format!("sslcrldir {directory}"));
    }
    if sources.is_empty() {
        return Ok(None);
    }
    Ok(Some(RevocationLists { lists, source: sources.join(" and ") }))
}

/// The lists of every file of `directory` named as OpenSSL's hashed
/// lookup finds a list (`HHHHHHHH.rN`: the issuer name's hash, then a
/// count; `openssl rehash` makes these), in name order. libpq hands the
/// directory to that lookup, which reads only such names; any file so
/// named must hold a list.
fn directory_lists(directory: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let shown = directory.display();
    let cannot_read = |error: std::io::Error| settings_error(format!("cannot read sslcrldir {shown}: {error}"));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(directory).map_err(cannot_read)? {
        let name = entry.map_err(cannot_read)?.file_name();
        if let Some(name) = name.to_str().filter(|name| hashed_list_name(name)) {
            names.push(name.to_owned());
            if names.len() > REVOCATION_DIRECTORY_FILES_MAX {
                return Err(settings_error(format!(
                    "sslcrldir {shown} holds more than {REVOCATION_DIRECTORY_FILES_MAX} revocation list files"
                )));
            }
        }
    }
    if names.is_empty() {
        return Err(settings_error(format!(
            "sslcrldir {shown} holds no revocation list under OpenSSL's hashed names (HHHHHHHH.rN, as `openssl \
             rehash` names them)"
        )));
    }
    names.sort();
    let mut lists = Vec::new();
    for name in names {
        lists.extend(file_lists(&directory.join(name), "sslcrldir")?);
    }
    Ok(lists)
}

/// OpenSSL's name for a revocation list in a hashed directory: eight
/// lowercase hex digits, `.r`, a decimal count.
fn hashed_list_name(name: &str) -> bool {
    let Some((hash, count)) = name.split_once(".r") else { return false };
    hash.len() == 8
        && hash.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        && !count.is_empty()
        && count.bytes().all(|byte| byte.is_ascii_digit())
}

/// Every list of the file, in order; a file without one is refused, as a
/// revocation check that checks nothing. `parameter` names the setting
/// the file came from, for messages.
fn file_lists(path: &Path, parameter: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let shown = path.display();
    let pem =
        std::fs::read(path).map_err(|error| settings_error(format!("cannot read {parameter} {shown}: {error}")))?;
    let lists = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| settings_error(format!("{parameter} {shown} is not valid PEM: {error}")))?;
    if lists.is_empty() {
        return Err(settings_error(format!("{parameter} {shown} holds no PEM certificate revocation list (X509 CRL)")));
    }
    Ok(lists)
}

#[cfg(test)]
mod tests {
    use super::hashed_list_name;

    #[test]
    fn only_openssls_hashed_list_names_are_read_from_a_directory() {
        for name in ["0123abcd.r0", "ffffffff.r12"] {
            assert!(hashed_list_name(name), "{name}");
        }
        // Certificates (.N), other cases, lengths and suffixes are not lists.
        for name in ["0123abcd.0", "0123ABCD.r0", "0123abc.r0", "0123abcde.r0", "0123abcd.r", "0123abcd.rx", "list.crl"]
        {
            assert!(!hashed_list_name(name), "{name}");
        }
    }
}
