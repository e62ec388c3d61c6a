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
    let chain = match roots {
        None => None,
        Some(roots) => {
            let names_checked = mode == SslMode::VerifyFull;
            let version_1 = Version1Check::new(&roots.certificates, revocation.as_ref(), algorithms, names_checked);
            // webpki's refusal of a list first: its words say why.
            let webpki = webpki(roots.store, revocation, provider)?;
            Some(Chain { webpki, version_1: version_1?, names_checked })
        }
    };
    Ok(Arc::new(ServerCheck { chain, algorithms }))
}

/// The server's certificate checked against roots: by webpki, or by
/// `version_1.rs` when it is X.509 version 1.
#[derive(Debug)]
struct Chain {
    webpki: Arc<WebPkiServerVerifier>,
    version_1: Version1Check,
    /// `verify-full`: the host name too.
    names_checked: bool,
}

impl Chain {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(verdict) = self.version_1.verify(end_entity, intermediates, server_name, now) {
            return verdict;
        }
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // `verify-ca`: the chain must lead to a root, the host name may
            // be any. webpki checks the chain before the name, so a name
            // error means the chain was good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names_checked => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
}

/// What checks the server in one mode: its chain when there are roots;
/// without (`allow`, `prefer` and `require` without a root file, libpq's
/// behaviour) the certificate is taken as presented. Either way the
/// handshake's signatures are checked with the certificate's key as
/// `x509-cert` reads it (`handshake_signatures.rs`), version 1 too.
#[derive(Debug)]
struct ServerCheck {
    chain: Option<Chain>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.chain {
            Some(chain) => chain.verify(end_entity, intermediates, server_name, ocsp_response, now),
            None => Ok(ServerCertVerified::assertion()),
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
