//! The client certificate a log presents (libpq's `sslcert` and `sslkey`):
//! a PEM certificate chain (the client's certificate first) and its PEM
//! private key (PKCS#8, PKCS#1/RSA or SEC1/EC). Both are read when the log
//! opens, so a missing file or a key of another certificate fails the open
//! instead of every connection. As libpq, the key is not read from a file
//! others may read (`key_permissions`).
//!
//! An encrypted key (PKCS#8 `ENCRYPTED PRIVATE KEY`, what `openssl pkcs8
//! -topk8` and `openssl genpkey -aes256` write, or OpenSSL's older form,
//! `Proc-Type: 4,ENCRYPTED`, see [`super::traditional_key`]) is decrypted
//! with `sslpassword`. libpq would ask for the password on a terminal when
//! none is given; a node has none, so it is refused, naming `sslpassword`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, ConfigBuilder};

use super::settings_error;
use super::sources::TlsFile;
use super::traditional_key;
use crate::error::Error;
use crate::log::postgres::conninfo::SslPassword;

/// The PEM label of an encrypted PKCS#8 key.
const ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED PRIVATE KEY";

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
pub(crate) fn load(
    sslcert: Option<&TlsFile>,
    sslkey: Option<&TlsFile>,
    sslpassword: Option<&SslPassword>,
) -> Result<Option<ClientIdentity>, Error> {
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
        key: private_key(key.path(), sslpassword)?,
        certificate: certificate.path().display().to_string(),
        key_file: key.path().display().to_string(),
    }))
}

fn alone(given: &str, missing: &str) -> String {
    format!("{given} is given without {missing}: a client certificate needs both its certificate and its key")
}

/// The client configuration presenting `identity`, or none. The key must
/// be the certificate's: their public keys are compared here, from the
/// certificate as `x509-cert` reads it, because rustls' own check reads
/// it with webpki, which refuses X.509 version 1 certificates. libpq
/// presents those, and `openssl x509 -req` (OpenSSL 3.0, as in
/// PostgreSQL's own guide to making certificates) issues them.
pub(crate) fn apply(
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
    identity: Option<ClientIdentity>,
    provider: &CryptoProvider,
) -> Result<ClientConfig, Error> {
    let Some(identity) = identity else { return Ok(builder.with_no_client_auth()) };
    let ClientIdentity { chain, key, certificate, key_file } = identity;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| settings_error(format!("cannot use sslkey {key_file}: {error}")))?;
    let presented =
        chain.first().ok_or_else(|| settings_error(format!("sslcert {certificate} holds no certificate")))?;
    let certified_public_key = super::handshake_signatures::subject_public_key_info(presented).map_err(|error| {
        settings_error(format!("sslcert {certificate} is not a certificate that can be read: {error}"))
    })?;
    // A key whose public half the provider cannot say is taken as it is,
    // as rustls takes it; the server then refuses a wrong one.
    if let Some(public_key) = signing.public_key() {
        if public_key.as_ref() != certified_public_key.as_slice() {
            return Err(settings_error(format!("sslkey {key_file} is not the private key of sslcert {certificate}")));
        }
    }
    let resolver = SingleCertAndKey::from(CertifiedKey::new(chain, signing));
    Ok(builder.with_client_cert_resolver(Arc::new(resolver)))
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

/// The first private key of the file, whichever of the three encodings,
/// decrypted with `password` when it is encrypted.
fn private_key(path: &Path, password: Option<&SslPassword>) -> Result<PrivateKeyDer<'static>, Error> {
    key_permissions::check(path)?;
    let shown = path.display();
    let pem = read("sslkey", path)?;
    let text = String::from_utf8_lossy(&pem);
    if let Some(encrypted) = pem_block(&text, ENCRYPTED_KEY_LABEL) {
        return decrypted(encrypted, path, password);
    }
    if text.contains(traditional_key::ENCRYPTED_HEADER) {
        let Some(SslPassword(password)) = password else {
            return Err(needs_password(path));
        };
        return traditional_key::decrypt(&text, password).map_err(|traditional_key::Unreadable(why)| {
            settings_error(format!(
                "sslkey {shown} is encrypted in OpenSSL's older form ({}), and {why}",
                traditional_key::ENCRYPTED_HEADER
            ))
        });
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        pem::Error::NoItemsFound => settings_error(format!(
            "sslkey {shown} holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
        )),
        other => settings_error(format!("sslkey {shown} is not valid PEM: {other}")),
    })
}

/// The first PEM block labelled `label` in `text`, whole (its `BEGIN`
/// and `END` lines included).
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let length = text[start..].find(&end)? + end.len();
    Some(&text[start..start + length])
}

/// An encrypted PKCS#8 key, decrypted with `password` (PBES2: PBKDF2 or
/// scrypt, with AES-CBC, as OpenSSL writes it).
fn decrypted(block: &str, path: &Path, password: Option<&SslPassword>) -> Result<PrivateKeyDer<'static>, Error> {
    let shown = path.display();
    let Some(SslPassword(password)) = password else {
        return Err(needs_password(path));
    };
    let (_, document) = pkcs8::Document::from_pem(block)
        .map_err(|error| settings_error(format!("sslkey {shown} is not valid PEM: {error}")))?;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(document.as_bytes())
        .map_err(|error| settings_error(format!("sslkey {shown} is not an encrypted PKCS#8 key: {error}")))?;
    // The cause is not shown: a wrong password and a damaged file look
    // alike, and neither message may carry the password.
    let key = info.decrypt(password.as_bytes()).map_err(|_| {
        settings_error(format!(
            "sslkey {shown} could not be decrypted with sslpassword: the password is wrong, or the file is \
             damaged or uses a cipher other than PBES2 with AES-CBC"
        ))
    })?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.as_bytes().to_vec())))
}

/// An encrypted key and no `sslpassword`.
fn needs_password(path: &Path) -> Error {
    settings_error(format!(
        "sslkey {} is encrypted: give its password with sslpassword (libpq would ask on a terminal; a node has \
         none)",
        path.display()
    ))
}

/// libpq's rule for a private key file, on Unix: a regular file, no
/// permission for others, and none for its group unless root owns it
/// (then group read, so a key shared through a group can be used). Like
/// libpq, the owner is not compared with the process' user: a process
/// that can read a file with so few permissions is its owner or root.
#[cfg(unix)]
mod key_permissions {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use super::super::settings_error;
    use crate::error::Error;

    /// The permission bits refused on a key file not owned by root: any
    /// of the group's or others' (0600 or less is accepted).
    const REFUSED_BITS: u32 = 0o077;
    /// The bits refused on a key file owned by root: group write and
    /// execute, any of others' (0640 or less is accepted).
    const REFUSED_BITS_OWNED_BY_ROOT: u32 = 0o037;
    const ROOT_USER_ID: u32 = 0;
    /// The permission bits of a mode (without the file type), as shown.
    const PERMISSION_BITS: u32 = 0o7777;

    /// Refuses the key file at `path` before it is read, when others may
    /// read it or it is not a regular file; follows a symbolic link, as
    /// libpq's `stat`.
    pub(super) fn check(path: &Path) -> Result<(), Error> {
        let shown = path.display();
        let metadata =
            std::fs::metadata(path).map_err(|error| settings_error(format!("cannot read sslkey {shown}: {error}")))?;
        if !metadata.is_file() {
            return Err(settings_error(format!("sslkey {shown} is not a regular file")));
        }
        let refused = if metadata.uid() == ROOT_USER_ID { REFUSED_BITS_OWNED_BY_ROOT } else { REFUSED_BITS };
        if metadata.mode() & refused == 0 {
            return Ok(());
        }
        Err(settings_error(format!(
            "private key file sslkey {shown} has group or world access (mode {:04o}); file must have permissions \
             u=rw (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) or less if owned by \
             root, as libpq requires",
            metadata.mode() & PERMISSION_BITS
        )))
    }
}

/// libpq checks no permission where there are no Unix modes.
#[cfg(not(unix))]
mod key_permissions {
    use std::path::Path;

    use crate::error::Error;

    pub(super) fn check(_path: &Path) -> Result<(), Error> {
        Ok(())
    }
}
