//! TLS to the database, with libpq's meanings of `sslmode`, `sslrootcert`,
//! `sslcert`, `sslkey`, `sslpassword`, `sslcrl` and `sslcrldir` (the connection string's parameters,
//! taken out by `conninfo.rs`, else their environment variables or
//! libpq's default files: `tls/sources.rs`): one rustls connector per log
//! that every connection of the backend uses (writer, readers, the
//! follower's `LISTEN`).
//!
//! - `disable`: plain TCP.
//! - `allow`: plain first; TLS when the server refuses the plain
//!   connection (`connect.rs`).
//! - `prefer` (the default, as libpq's): TLS if the server offers it, plain
//!   otherwise, and plain again when the TLS handshake fails.
//! - `require`: TLS or nothing.
//! - `verify-ca`: TLS, the chain verified, the host name not.
//! - `verify-full`: TLS, the chain and the host name verified.
//!
//! The roots are, first found: the `sslrootcert` named (the string, else
//! `PGSSLROOTCERT`; `system` names the operating system's trust store, as
//! PostgreSQL 16's libpq), libpq's `~/.postgresql/root.crt` when present,
//! and for `verify-*` only the operating system's trust store (where
//! libpq would refuse). Under `allow`, `prefer` and `require` a chain is
//! verified when a root file was found (libpq does so), and not otherwise.
//!
//! Wherever a chain is verified, the certificate revocation lists of
//! `sslcrl` (else `PGSSLCRL`, else libpq's `~/.postgresql/root.crl` when
//! present and no directory is named) and of `sslcrldir` (else
//! `PGSSLCRLDIR`) are checked too (`tls/revocation_lists.rs`).
//!
//! A client certificate (`tls/client_identity.rs`) is presented in every
//! mode but `disable` when `sslcert` and `sslkey` name one, or when
//! neither is named and libpq's `~/.postgresql/postgresql.crt` exists.

mod client_identity;
mod common_name;
mod handshake_signatures;
mod revocation_lists;
pub(crate) mod sources;
mod traditional_key;
mod verifiers;
mod version_1;

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::Error;
use sources::{TlsFile, TlsSources};
use version_1::Version1Refusal;

/// The mode when the connection string names none: libpq's, so a string
/// that works with psql works here, and a server with `ssl = on` is
/// reached encrypted. Production strings should say `verify-full`.
pub(crate) const DEFAULT_SSLMODE: SslMode = SslMode::Prefer;

/// `sslrootcert`'s value that names the operating system's trust store.
const SYSTEM_ROOTS: &str = "system";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, Error> {
        match text {
            "disable" => Ok(SslMode::Disable),
            "allow" => Ok(SslMode::Allow),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(settings_error(format!(
                "unknown sslmode {other:?} (disable, allow, prefer, require, verify-ca or verify-full)"
            ))),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether to ask for TLS, and whether a
    /// server that declines it is refused. `allow` asks first for none;
    /// its TLS attempt says `Require` itself (`connect.rs`).
    pub(crate) fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable | SslMode::Allow => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// The TLS settings of one log: its mode and, unless `disable`, the
/// connector every connection uses.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) mode: SslMode,
    pub(crate) connector: Option<MakeRustlsConnect>,
    /// The client certificate's file when one is presented, for messages.
    pub(crate) client_certificate: Option<String>,
    /// Where the revocation lists came from ("sslcrl FILE", "sslcrldir
    /// DIRECTORY" or both) when the server's certificate is checked
    /// against them, for messages.
    pub(crate) revocation_lists: Option<String>,
}

impl Tls {
    /// The settings `sources` ask for; the files are read now, so a bad
    /// one fails the open.
    pub(crate) fn from_sources(sources: &TlsSources) -> Result<Tls, Error> {
        let mode = mode(sources)?;
        if mode == SslMode::Disable {
            return Ok(Tls { mode, connector: None, client_certificate: None, revocation_lists: None });
        }
        let roots = roots(sources, mode)?;
        // libpq loads the lists with its roots: without them no chain is
        // checked, so there is nothing to revoke.
        let revocation = match roots {
            Some(_) => revocation_lists::load(sources.sslcrl.as_ref(), sources.sslcrldir.as_deref())?,
            None => None,
        };
        let revocation_lists = revocation.as_ref().map(|revocation| revocation.source.clone());
        let identity =
            client_identity::load(sources.sslcert.as_ref(), sources.sslkey.as_ref(), sources.sslpassword.as_ref())?;
        let client_certificate = identity.as_ref().map(|identity| identity.certificate.clone());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = verifiers::verifier(mode, roots, revocation, &provider)?;
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| settings_error(format!("no TLS protocol version available: {error}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = client_identity::apply(builder, identity, &provider)?;
        Ok(Tls { mode, connector: Some(MakeRustlsConnect::new(config)), client_certificate, revocation_lists })
    }
}

/// Whether `sslrootcert` names the operating system's trust store.
fn names_system_roots(sources: &TlsSources) -> bool {
    matches!(&sources.sslrootcert, Some(TlsFile::Named(path)) if path.as_os_str() == SYSTEM_ROOTS)
}

/// The mode `sources` ask for, libpq's default when none.
fn mode(sources: &TlsSources) -> Result<SslMode, Error> {
    let system = names_system_roots(sources);
    let mode = match sources.sslmode.as_deref() {
        Some(text) => SslMode::parse(text)?,
        // libpq 16: sslrootcert=system alone means verify-full.
        None if system => SslMode::VerifyFull,
        None => DEFAULT_SSLMODE,
    };
    if system && mode != SslMode::VerifyFull {
        return Err(settings_error(format!(
            "sslrootcert=system needs sslmode=verify-full (not {}), as libpq",
            mode.name()
        )));
    }
    Ok(mode)
}

/// The CA certificates a server's chain is checked against: as webpki's
/// trust anchors, and as read (for a version 1 server certificate,
/// `tls/version_1.rs`).
pub(crate) struct Roots {
    pub(crate) store: RootCertStore,
    pub(crate) certificates: Vec<CertificateDer<'static>>,
}

/// The roots the server's chain is checked against; `None` when it is
/// not checked.
fn roots(sources: &TlsSources, mode: SslMode) -> Result<Option<Roots>, Error> {
    Ok(match &sources.sslrootcert {
        Some(TlsFile::Named(_)) if names_system_roots(sources) => Some(system_roots()?),
        Some(TlsFile::Named(path)) => Some(file_roots(path)?),
        Some(TlsFile::Default(path)) if present(path)? => Some(file_roots(path)?),
        _ if mode.verifies() => Some(system_roots()?),
        _ => None,
    })
}

/// Whether one of libpq's default files is there: absent, it is skipped
/// (as libpq); there but unreadable, it is an error.
fn present(path: &Path) -> Result<bool, Error> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(error) if matches!(error.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(false),
        Err(error) => Err(settings_error(format!("cannot read {}: {error}", path.display()))),
    }
}

fn settings_error(message: String) -> Error {
    Error::Storage(format!("PostgreSQL TLS settings: {message}"))
}

/// The CA certificates of an `sslrootcert` file (PEM, one or more).
fn file_roots(path: &Path) -> Result<Roots, Error> {
    let shown = path.display();
    let pem =
        std::fs::read(path).map_err(|error| settings_error(format!("cannot read sslrootcert {shown}: {error}")))?;
    let mut roots = Roots { store: RootCertStore::empty(), certificates: Vec::new() };
    for (index, certificate) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let certificate =
            certificate.map_err(|error| settings_error(format!("sslrootcert {shown} is not valid PEM: {error}")))?;
        roots.store.add(certificate.clone()).map_err(|error| {
            settings_error(format!("sslrootcert {shown}: certificate {} is not a usable CA: {error}", index + 1))
        })?;
        roots.certificates.push(certificate);
    }
    if roots.store.is_empty() {
        return Err(settings_error(format!("sslrootcert {shown} holds no PEM certificate")));
    }
    Ok(roots)
}

/// The operating system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR`
/// when set, as OpenSSL).
fn system_roots() -> Result<Roots, Error> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(settings_error(format!(
            "no CA certificate in the system's trust store ({}); name one with sslrootcert=FILE",
            if errors.is_empty() { "it is empty".to_owned() } else { errors.join("; ") }
        )));
    }
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(found.certs.iter().cloned());
    Ok(Roots { store, certificates: found.certs })
}

/// The TLS failure behind a connection error, said plainly; `None` when
/// the error is not one. rustls' error travels inside an `io::Error`,
/// whose `source` skips it, so each `io::Error` is opened.
pub(crate) fn handshake_failure(error: &tokio_postgres::Error, tls: &Tls) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        let inner = error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        let found = error.downcast_ref::<rustls::Error>().or_else(|| inner.and_then(|e| e.downcast_ref()));
        if let Some(found) = found {
            return Some(explain(found, tls));
        }
        current = error.source();
    }
    None
}

fn explain(error: &rustls::Error, tls: &Tls) -> String {
    let mode = tls.mode.name();
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "TLS: the server's certificate failed verification (sslmode={mode}): it is not signed by a CA of \
             sslrootcert (or of the system's trust store without one)"
        ),
        rustls::Error::InvalidCertificate(cause) if version_1_unverified(cause) => format!(
            "TLS: the server's certificate failed verification (sslmode={mode}): {cause_words}; this client \
             verifies an X.509 version 1 certificate only when a root of sslrootcert issued it, though libpq \
             verifies this chain too: reissue it as version 3, with a subjectAltName naming the host (`-extfile` \
             with `subjectAltName=DNS:HOST`), or have the root issue it",
            cause_words = version_1_words(cause)
        ),
        rustls::Error::InvalidCertificate(cause) => {
            let why = revocation(cause, tls).unwrap_or_else(|| words(cause));
            format!("TLS: the server's certificate failed verification (sslmode={mode}): {why}")
        }
        rustls::Error::AlertReceived(alert) if refuses_client_certificate(*alert) => {
            client_certificate_refused(*alert, tls)
        }
        other => format!("TLS handshake failed (sslmode={mode}): {other}"),
    }
}

/// Whether the certificate was refused for X.509 version 1 where this
/// client does not verify it: issued by an intermediate
/// (`version_1.rs`), or a version 1 CA within the chain (webpki reads
/// version 3 only).
fn version_1_unverified(cause: &CertificateError) -> bool {
    let CertificateError::Other(other) = cause else { return false };
    matches!(other.0.downcast_ref::<Version1Refusal>(), Some(Version1Refusal::IssuedByIntermediate { .. }))
        || matches!(other.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::UnsupportedCertVersion))
}

fn version_1_words(cause: &CertificateError) -> String {
    match cause {
        CertificateError::Other(other) if other.0.is::<Version1Refusal>() => words(cause),
        _ => "a certificate of its chain is an X.509 version 1 CA certificate".to_owned(),
    }
}

/// `cause` in words: a version 1 refusal's own (rustls shows an `Other`
/// error's debug form).
fn words(cause: &CertificateError) -> String {
    match cause {
        CertificateError::Other(other) if other.0.is::<Version1Refusal>() => other.0.to_string(),
        _ => cause.to_string(),
    }
}

/// A revocation check's failure said with where the lists came from;
/// `None` when `cause` is not one.
fn revocation(cause: &CertificateError, tls: &Tls) -> Option<String> {
    let source = tls.revocation_lists.as_deref().unwrap_or("(no revocation list)");
    match cause {
        CertificateError::Revoked => Some(format!("it is revoked: a certificate revocation list of {source} lists it")),
        CertificateError::UnknownRevocationStatus => Some(format!(
            "its revocation status is unknown: {source} holds no revocation list from the CA that issued it \
             (with revocation lists, every CA of the chain but the root needs one, as libpq)"
        )),
        CertificateError::ExpiredRevocationList | CertificateError::ExpiredRevocationListContext { .. } => {
            Some(format!("a certificate revocation list of {source} has expired (its next update is past): {cause}"))
        }
        _ => None,
    }
}

/// The alerts a server sends when it does not accept the client's
/// certificate (or wanted one).
fn refuses_client_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRequired
    )
}

fn client_certificate_refused(alert: AlertDescription, tls: &Tls) -> String {
    let mode = tls.mode.name();
    let Some(certificate) = &tls.client_certificate else {
        return format!(
            "TLS: the server wants a client certificate and none was presented (sslmode={mode}, alert {alert:?}): \
             name one with sslcert and sslkey"
        );
    };
    let why = if alert == AlertDescription::UnknownCA {
        ": it is not signed by a CA the server trusts (its ssl_ca_file)".to_owned()
    } else {
        String::new()
    };
    format!(
        "TLS: the server refused the client certificate sslcert {certificate} (sslmode={mode}, alert {alert:?}){why}"
    )
}
