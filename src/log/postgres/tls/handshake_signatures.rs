//! The server's handshake signature, checked with the public key of its
//! certificate as `x509-cert` reads it: rustls' own checks parse the
//! certificate with webpki, which refuses X.509 version 1, a certificate
//! libpq takes. The same algorithms and the same choice of them as
//! rustls' (`WebPkiSupportedAlgorithms`): TLS 1.3 tries the scheme's
//! first algorithm, TLS 1.2 each of the scheme's in turn.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, SubjectPublicKeyInfoDer};
use rustls::{CertificateError, DigitallySignedStruct, PeerMisbehaved};

/// The certificate's subject public key info (DER), as `x509-cert` reads
/// it: X.509 version 1 too.
pub(super) fn subject_public_key_info(certificate: &CertificateDer<'_>) -> Result<Vec<u8>, x509_cert::der::Error> {
    use x509_cert::der::{Decode, Encode};
    let parsed = x509_cert::Certificate::from_der(certificate.as_ref())?;
    parsed.tbs_certificate.subject_public_key_info.to_der()
}

fn raw_key(certificate: &CertificateDer<'_>) -> Result<SubjectPublicKeyInfoDer<'static>, rustls::Error> {
    subject_public_key_info(certificate)
        .map(SubjectPublicKeyInfoDer::from)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// The algorithms rustls maps `dss`'s scheme to.
fn algorithms_of<'a>(
    dss: &DigitallySignedStruct,
    supported: &'a WebPkiSupportedAlgorithms,
) -> Result<&'a [&'static dyn SignatureVerificationAlgorithm], rustls::Error> {
    supported
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, algorithms)| *algorithms)
        .ok_or_else(|| PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into())
}

fn pki_error(error: webpki::Error) -> rustls::Error {
    use webpki::Error as Pki;
    match error {
        Pki::InvalidSignatureForPublicKey
        | Pki::UnsupportedSignatureAlgorithmContext(_)
        | Pki::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
        }
        other => {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(std::sync::Arc::new(other))))
        }
    }
}

pub(super) fn tls13(
    message: &[u8],
    certificate: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    supported: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature_with_raw_key(message, &raw_key(certificate)?, dss, supported)
}

pub(super) fn tls12(
    message: &[u8],
    certificate: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    supported: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let spki = raw_key(certificate)?;
    let key = webpki::RawPublicKeyEntity::try_from(&spki).map_err(pki_error)?;
    let mut unfit = None;
    for algorithm in algorithms_of(dss, supported)? {
        match key.verify_signature(*algorithm, message, dss.signature()) {
            Ok(()) => return Ok(HandshakeSignatureValid::assertion()),
            // Another algorithm of the scheme may fit the key.
            Err(error @ webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => unfit = Some(error),
            Err(error) => return Err(pki_error(error)),
        }
    }
    Err(unfit.map_or_else(|| PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into(), pki_error))
}
