//! A server certificate in X.509 version 1, verified where a chain is
//! verified, as libpq (OpenSSL) verifies it. PostgreSQL's guide to making
//! certificates issues one (`openssl x509 -req` of OpenSSL 3.0, given no
//! extension), and rustls' webpki reads version 3 only.
//!
//! Taken when a root of the trust store issued it (the guide's first
//! recipe):
//!
//! - the root has the certificate's issuer as its subject, and may sign
//!   certificates (version 1, or a CA by its basic constraints, and
//!   `keyCertSign` when it names its key usage);
//! - the certificate's signature verifies with the root's key, by one of
//!   the algorithms rustls verifies with;
//! - now is within the certificate's validity;
//! - with revocation lists (`sslcrl`, `sslcrldir`), one from that root
//!   (its signature verified, not past its next update) must be there and
//!   not list the certificate's serial number (OpenSSL's
//!   `X509_V_FLAG_CRL_CHECK_ALL`, as libpq sets it);
//! - under `verify-full`, its common name names the host connected to
//!   (`common_name.rs`): a version 1 certificate has no subjectAltName.
//!
//! A version 1 certificate an intermediate CA issued is refused, saying
//! so: its chain would need checks of the intermediates' constraints that
//! webpki keeps to itself.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerified;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::CertificateError;
use x509_cert::crl::CertificateList;
use x509_cert::der::asn1::{AnyRef, BitString};
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;

use super::common_name::{common_name, names_host};
use super::revocation_lists::RevocationLists;
use super::settings_error;
use crate::error::Error;

/// Why a version 1 certificate is refused where webpki has no word for it.
#[derive(Debug, thiserror::Error)]
pub(super) enum Version1Refusal {
    #[error("it is an X.509 version 1 certificate issued by an intermediate CA ({issuer})")]
    IssuedByIntermediate { issuer: String },
    #[error("its signature does not verify with the key of the root that its issuer ({issuer}) names")]
    BadSignature { issuer: String },
    #[error(
        "it is an X.509 version 1 certificate (no subjectAltName), and its common name {common_name:?} does not \
         name the host {host:?} connected to"
    )]
    NotForHost { common_name: String, host: String },
}

impl Version1Refusal {
    fn refusal(self) -> CertificateError {
        CertificateError::Other(rustls::OtherError(Arc::new(self)))
    }
}

/// What verifies a version 1 server certificate: the roots and the
/// revocation lists of the log, as `x509-cert` reads them.
pub(super) struct Version1Check {
    roots: Vec<Certificate>,
    /// `None`: no revocation lists were given, nothing is checked.
    lists: Option<Vec<CertificateList>>,
    algorithms: WebPkiSupportedAlgorithms,
    /// `verify-full`: the host name is checked too.
    names_checked: bool,
}

impl std::fmt::Debug for Version1Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version1Check")
            .field("roots", &self.roots.len())
            .field("lists", &self.lists.as_ref().map(Vec::len))
            .field("names_checked", &self.names_checked)
            .finish()
    }
}

impl Version1Check {
    /// A root `x509-cert` cannot read is left out (none such issues a
    /// version 1 certificate webpki could not check either).
    pub(super) fn new(
        roots: &[CertificateDer<'static>],
        revocation: Option<&RevocationLists>,
        algorithms: WebPkiSupportedAlgorithms,
        names_checked: bool,
    ) -> Result<Version1Check, Error> {
        let roots = roots.iter().filter_map(|root| Certificate::from_der(root.as_ref()).ok()).collect();
        let lists = match revocation {
            None => None,
            Some(revocation) => Some(
                revocation
                    .lists
                    .iter()
                    .map(|list| CertificateList::from_der(list.as_ref()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| {
                        settings_error(format!(
                            "{} holds a revocation list that cannot be read: {error}",
                            revocation.source
                        ))
                    })?,
            ),
        };
        Ok(Version1Check { roots, lists, algorithms, names_checked })
    }

    /// The verdict on `end_entity` when it is a version 1 certificate;
    /// `None` otherwise (webpki's verdict stands).
    pub(super) fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Option<Result<ServerCertVerified, rustls::Error>> {
        let certificate = Certificate::from_der(end_entity.as_ref()).ok()?;
        if certificate.tbs_certificate.version != x509_cert::Version::V1 {
            return None;
        }
        Some(
            self.verify_version_1(&certificate, intermediates, server_name, now)
                .map_err(rustls::Error::InvalidCertificate),
        )
    }

    fn verify_version_1(
        &self,
        certificate: &Certificate,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, CertificateError> {
        let tbs = &certificate.tbs_certificate;
        // The algorithm inside the signed part must be the one outside
        // (RFC 5280, 4.1.1.2; OpenSSL refuses a mismatch too).
        if tbs.signature != certificate.signature_algorithm {
            return Err(CertificateError::BadEncoding);
        }
        let signed = tbs.to_der().map_err(|_| CertificateError::BadEncoding)?;
        let issuers: Vec<&Certificate> = self
            .roots
            .iter()
            .filter(|root| root.tbs_certificate.subject == tbs.issuer && signs_certificates(root))
            .collect();
        if issuers.is_empty() {
            return Err(unknown_issuer(certificate, intermediates));
        }
        let issuer = issuers
            .into_iter()
            .find(|root| {
                self.signed_by(
                    &signed,
                    &certificate.signature_algorithm,
                    &certificate.signature,
                    &root.tbs_certificate.subject_public_key_info,
                )
            })
            .ok_or_else(|| Version1Refusal::BadSignature { issuer: tbs.issuer.to_string() }.refusal())?;
        within_validity(certificate, now)?;
        if let Some(lists) = &self.lists {
            self.not_revoked(certificate, issuer, lists, now)?;
        }
        if self.names_checked {
            names_server(certificate, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    /// Whether `signature` over `signed` verifies with `key`, by an
    /// algorithm of rustls' whose identifiers are the signature's and the
    /// key's.
    fn signed_by(
        &self,
        signed: &[u8],
        algorithm: &AlgorithmIdentifierOwned,
        signature: &BitString,
        key: &SubjectPublicKeyInfoOwned,
    ) -> bool {
        let (Some(signature_id), Some(key_id), Some(signature), Some(key_bytes)) =
            (contents(algorithm), contents(&key.algorithm), signature.as_bytes(), key.subject_public_key.as_bytes())
        else {
            return false;
        };
        self.algorithms.all.iter().any(|candidate| {
            candidate.signature_alg_id().as_ref() == signature_id.as_slice()
                && candidate.public_key_alg_id().as_ref() == key_id.as_slice()
                && candidate.verify_signature(key_bytes, signed, signature).is_ok()
        })
    }

    /// With revocation lists, one from `issuer` must vouch for the
    /// certificate: signed by it, current, and not listing its serial.
    fn not_revoked(
        &self,
        certificate: &Certificate,
        issuer: &Certificate,
        lists: &[CertificateList],
        now: UnixTime,
    ) -> Result<(), CertificateError> {
        let issuer_tbs = &issuer.tbs_certificate;
        let from_issuer: Vec<&CertificateList> = lists
            .iter()
            .filter(|list| list.tbs_cert_list.issuer == issuer_tbs.subject && signs_lists(issuer))
            .filter(|list| {
                list.tbs_cert_list.to_der().is_ok_and(|signed| {
                    self.signed_by(
                        &signed,
                        &list.signature_algorithm,
                        &list.signature,
                        &issuer_tbs.subject_public_key_info,
                    )
                })
            })
            .collect();
        if from_issuer.is_empty() {
            return Err(CertificateError::UnknownRevocationStatus);
        }
        let serial = certificate.tbs_certificate.serial_number.as_bytes();
        for list in from_issuer {
            let tbs = &list.tbs_cert_list;
            if tbs.next_update.is_some_and(|next| next.to_unix_duration().as_secs() < now.as_secs()) {
                return Err(CertificateError::ExpiredRevocationList);
            }
            let revoked = tbs.revoked_certificates.as_deref().unwrap_or(&[]);
            if revoked.iter().any(|entry| entry.serial_number.as_bytes() == serial) {
                return Err(CertificateError::Revoked);
            }
        }
        Ok(())
    }
}

/// Not issued by a root: said plainly when an intermediate the server
/// sent names the issuer, webpki's `UnknownIssuer` otherwise.
fn unknown_issuer(certificate: &Certificate, intermediates: &[CertificateDer<'_>]) -> CertificateError {
    let issuer = &certificate.tbs_certificate.issuer;
    let from_intermediate = intermediates
        .iter()
        .filter_map(|intermediate| Certificate::from_der(intermediate.as_ref()).ok())
        .any(|intermediate| intermediate.tbs_certificate.subject == *issuer);
    if !from_intermediate {
        return CertificateError::UnknownIssuer;
    }
    Version1Refusal::IssuedByIntermediate { issuer: issuer.to_string() }.refusal()
}

/// Whether `root` may sign certificates: version 1 (no extensions, as
/// OpenSSL takes a self-signed version 1 root), or a CA by its basic
/// constraints with `keyCertSign` when it names its key usage.
fn signs_certificates(root: &Certificate) -> bool {
    let tbs = &root.tbs_certificate;
    if tbs.version == x509_cert::Version::V1 {
        return true;
    }
    let is_ca = matches!(tbs.get::<BasicConstraints>(), Ok(Some((_, constraints))) if constraints.ca);
    is_ca && key_usage_allows(root, KeyUsage::key_cert_sign)
}

/// Whether `issuer` may sign revocation lists: `cRLSign` when it names its
/// key usage.
fn signs_lists(issuer: &Certificate) -> bool {
    key_usage_allows(issuer, KeyUsage::crl_sign)
}

fn key_usage_allows(certificate: &Certificate, allows: fn(&KeyUsage) -> bool) -> bool {
    match certificate.tbs_certificate.get::<KeyUsage>() {
        Ok(None) => true,
        Ok(Some((_, usage))) => allows(&usage),
        Err(_) => false,
    }
}

fn within_validity(certificate: &Certificate, now: UnixTime) -> Result<(), CertificateError> {
    let validity = &certificate.tbs_certificate.validity;
    let not_before = UnixTime::since_unix_epoch(validity.not_before.to_unix_duration());
    let not_after = UnixTime::since_unix_epoch(validity.not_after.to_unix_duration());
    if now.as_secs() < not_before.as_secs() {
        return Err(CertificateError::NotValidYetContext { time: now, not_before });
    }
    if now.as_secs() > not_after.as_secs() {
        return Err(CertificateError::ExpiredContext { time: now, not_after });
    }
    Ok(())
}

/// `verify-full`: the certificate's common name names the host.
fn names_server(certificate: &Certificate, server_name: &ServerName<'_>) -> Result<(), CertificateError> {
    let host = match server_name {
        ServerName::DnsName(name) => name.as_ref().to_owned(),
        ServerName::IpAddress(address) => std::net::IpAddr::from(*address).to_string(),
        _ => return Err(CertificateError::NotValidForName),
    };
    match common_name(&certificate.tbs_certificate.subject) {
        Some(name) if names_host(&name, &host) => Ok(()),
        name => Err(Version1Refusal::NotForHost { common_name: name.unwrap_or_default(), host }.refusal()),
    }
}

/// The DER contents of an algorithm identifier (without its SEQUENCE
/// header), the form rustls' algorithms name theirs in.
fn contents(algorithm: &AlgorithmIdentifierOwned) -> Option<Vec<u8>> {
    let der = algorithm.to_der().ok()?;
    let any = AnyRef::from_der(&der).ok()?;
    Some(any.value().to_vec())
}
