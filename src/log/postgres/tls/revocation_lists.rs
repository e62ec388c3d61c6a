//! The certificate revocation lists a server's certificate is checked
//! against (libpq's `sslcrl`): a PEM file of `X509 CRL`s, read when the
//! log opens and only when a chain is verified (libpq loads them with its
//! roots, and ignores them otherwise). A directory of them (`sslcrldir`)
//! is not read: it is refused, rather than revocation left unchecked.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;

use super::settings_error;
use super::sources::TlsFile;
use crate::error::Error;

/// The lists of one `sslcrl` file.
pub(crate) struct RevocationLists {
    pub(crate) lists: Vec<CertificateRevocationListDer<'static>>,
    /// The file, for messages.
    pub(crate) file: String,
}

/// The lists `sslcrl` names; `None` when it names none, or when it is
/// libpq's default file and that is absent.
pub(crate) fn load(sslcrl: Option<&TlsFile>) -> Result<Option<RevocationLists>, Error> {
    let Some(file) = sslcrl else { return Ok(None) };
    if let TlsFile::Default(path) = file {
        if !super::present(path)? {
            return Ok(None);
        }
    }
    let path = file.path();
    Ok(Some(RevocationLists { lists: lists(path)?, file: path.display().to_string() }))
}

/// libpq reads a directory of hashed lists (OpenSSL's lookup); rustls is
/// given lists, not directories, so one is refused, naming the way out.
pub(crate) fn refuse_directory(sslcrldir: Option<&str>) -> Result<(), Error> {
    match sslcrldir {
        None => Ok(()),
        Some(directory) => Err(settings_error(format!(
            "sslcrldir {directory} (or PGSSLCRLDIR) is not supported: put its revocation lists in one PEM file and \
             name it with sslcrl (or PGSSLCRL)"
        ))),
    }
}

/// Every list of the file, in order; a file without one is refused, as a
/// revocation check that checks nothing.
fn lists(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|error| settings_error(format!("cannot read sslcrl {shown}: {error}")))?;
    let lists = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| settings_error(format!("sslcrl {shown} is not valid PEM: {error}")))?;
    if lists.is_empty() {
        return Err(settings_error(format!("sslcrl {shown} holds no PEM certificate revocation list (X509 CRL)")));
    }
    Ok(lists)
}
