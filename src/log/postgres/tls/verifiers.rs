//! What checks the server's certificate in each `sslmode`: rustls'
//! webpki verifier for `verify-full` (chain, revocation lists when given,
//! and host name), and two of
//! libpq's meanings rustls has no verifier for: `verify-ca` (the chain,
//! not the name) and the weaker modes without roots (no check but the
//! handshake's signatures). Wherever a chain is checked, a version 1
//! certificate is checked by `version_1.rs`, which webpki does not read;
//! the handshake's signatures are checked with the key as `x509-cert`
//! reads it (`handshake_signatures.rs`), for the same reason.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::handshake_signatures;
use super::revocation_lists::RevocationLists;
use super::version_1::Version1Check;
use super::{settings_error, Roots, SslMode};
use crate::error::Error;

/// What checks the server's certificate in `mode`: the full check for
/// `verify-full`, the chain only for `verify-ca` and for the weaker modes
/// given roots, nothing but the handshake's signatures otherwise. The
/// revocation lists apply wherever a chain is checked.
pub(super) fn verifier(
    mode: SslMode,
    roots: Option<Roots>,
    revocation: Option<RevocationLists>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, Error> {
    let algorithms = provider.signature_verification_algorithms;
    let Some(roots) = roots else { return Ok(Arc::new(EncryptOnly(algorithms))) };
    let names_checked = mode == SslMode::VerifyFull;
    let version_1 = Version1Check::new(&roots.certificates, revocation.as_ref(), algorithms, names_checked);
    // webpki's refusal of a list first: its words say why.
    let webpki = webpki(roots.store, revocation, provider)?;
    let version_1 = version_1?;
    let version_3: Arc<dyn ServerCertVerifier> = match names_checked {
        true => webpki,
        false => Arc::new(ChainOnly(webpki)),
    };
    Ok(Arc::new(EitherVersion { version_3, version_1, algorithms }))
}

/// A chain checked by webpki, or by `version_1.rs` when the server's
/// certificate is X.509 version 1.
#[derive(Debug)]
struct EitherVersion {
    version_3: Arc<dyn ServerCertVerifier>,
    version_1: Version1Check,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EitherVersion {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.version_1.verify(end_entity, intermediates, server_name, now) {
            Some(verdict) => verdict,
            None => self.version_3.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        handshake_signatures::tls12(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        handshake_signatures::tls13(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// rustls' verifier of the chain (and of the host name) against `roots`
/// and the revocation lists.
fn webpki(
    roots: RootCertStore,
    revocation: Option<RevocationLists>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, Error> {
    let mut builder = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let lists_source = revocation.as_ref().map(|revocation| revocation.source.clone());
    if let Some(revocation) = revocation {
        // rustls' defaults are OpenSSL's as libpq sets it
        // (`X509_V_FLAG_CRL_CHECK_ALL`): every certificate of the chain
        // but the root needs a list from its issuer. A list past its next
        // update is refused, as OpenSSL refuses it.
        builder = builder.with_crls(revocation.lists).enforce_revocation_expiration();
    }
    builder.build().map_err(|error| match (error, lists_source) {
        (VerifierBuilderError::InvalidCrl(cause), Some(source)) => {
            // rustls' own error says the cause (the list's does not).
            let cause = rustls::Error::InvalidCertRevocationList(cause);
            settings_error(format!("{source} holds a revocation list that cannot be used: {cause}"))
        }
        (other, _) => settings_error(format!("cannot verify with these roots: {other}")),
    })
}

/// `verify-ca`: the chain must lead to a root, the host name may be any.
/// rustls' verifier checks the chain before the name, so a name error
/// means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `allow`, `prefer` and `require` without roots: encrypted, the certificate taken
/// as presented (libpq's behaviour), the handshake's signatures checked.
#[derive(Debug)]
struct EncryptOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    /// With the certificate's public key as `x509-cert` reads it: webpki
    /// refuses an X.509 version 1 certificate, which libpq takes as
    /// presented here.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        handshake_signatures::tls12(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        handshake_signatures::tls13(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
