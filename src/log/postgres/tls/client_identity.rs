//! The client certificate a log presents (libpq's `sslcert` and `sslkey`):
//! a PEM certificate chain (the client's certificate first) and its PEM
//! private key (PKCS#8, PKCS#1/RSA or SEC1/EC). Both are read when the log
//! opens, so a missing file or a key of another certificate fails the open
//! instead of every connection.

use std::path::Path;

use rustls::client::WantsClientCert;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ConfigBuilder};

use super::settings_error;
use super::sources::TlsFile;
use crate::error::Error;

/// A certificate chain and its key, read from their files.
pub(crate) struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The certificate's file, for messages.
    pub(crate) certificate: String,
    key_file: String,
}

/// The identity `sslcert` and `sslkey` name; `None` when neither does, or
/// when they are libpq's defaults and the certificate file is absent.
/// Unlike libpq, which then goes on without one, a file named and absent
/// is an error, and so is one of the two named without the other.
pub(crate) fn load(sslcert: Option<&TlsFile>, sslkey: Option<&TlsFile>) -> Result<Option<ClientIdentity>, Error> {
    let (certificate, key) = match (sslcert, sslkey) {
        (None, None) => return Ok(None),
        (Some(certificate), Some(key)) => (certificate, key),
        (Some(_), None) => return Err(settings_error(alone("sslcert", "sslkey (or PGSSLKEY)"))),
        (None, Some(_)) => return Err(settings_error(alone("sslkey", "sslcert (or PGSSLCERT)"))),
    };
    if let TlsFile::Default(path) = certificate {
        if !super::present(path)? {
            return Ok(None);
        }
    }
    Ok(Some(ClientIdentity {
        chain: certificates(certificate.path())?,
        key: private_key(key.path())?,
        certificate: certificate.path().display().to_string(),
        key_file: key.path().display().to_string(),
    }))
}

fn alone(given: &str, missing: &str) -> String {
    format!("{given} is given without {missing}: a client certificate needs both its certificate and its key")
}

/// The client configuration presenting `identity`, or none. rustls checks
/// here that the key is the certificate's.
pub(crate) fn apply(
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
    identity: Option<ClientIdentity>,
) -> Result<ClientConfig, Error> {
    let Some(identity) = identity else { return Ok(builder.with_no_client_auth()) };
    let ClientIdentity { chain, key, certificate, key_file } = identity;
    builder.with_client_auth_cert(chain, key).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => {
            settings_error(format!("sslkey {key_file} is not the private key of sslcert {certificate} ({error})"))
        }
        other => settings_error(format!("cannot use sslcert {certificate} with sslkey {key_file}: {other}")),
    })
}

fn read(kind: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|error| settings_error(format!("cannot read {kind} {}: {error}", path.display())))
}

/// Every certificate of the file, in order: the client's, then the
/// intermediates the server may need to reach its CA.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let shown = path.display();
    let chain = CertificateDer::pem_slice_iter(&read("sslcert", path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| settings_error(format!("sslcert {shown} is not valid PEM: {error}")))?;
    if chain.is_empty() {
        return Err(settings_error(format!("sslcert {shown} holds no PEM certificate")));
    }
    Ok(chain)
}

/// The first private key of the file, whichever of the three encodings.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let shown = path.display();
    PrivateKeyDer::from_pem_slice(&read("sslkey", path)?).map_err(|error| match error {
        pem::Error::NoItemsFound => settings_error(format!(
            "sslkey {shown} holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
        )),
        other => settings_error(format!("sslkey {shown} is not valid PEM: {other}")),
    })
}
