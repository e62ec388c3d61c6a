//! A throwaway certificate authority for the TLS tests: a CA made with
//! rcgen in the test (no system tool), server certificates it issues for
//! chosen host names, and client certificates for a database user (the
//! user name as the common name, as PostgreSQL's `cert` authentication
//! reads it). The CA certificate is written as a PEM file, the
//! `sslrootcert` a client is given (or a server's `ssl_ca_file`); the CA
//! also signs certificate revocation lists (a client's `sslcrl`).
//!
//! Shared by the core's log tests and the tools' tests (`#[path]`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams,
    SerialNumber,
};

/// A server's certificate and its private key, both PEM, and its serial
/// number (what a revocation list names).
pub struct ServerCertificate {
    pub certificate_pem: String,
    pub key_pem: String,
    pub serial: SerialNumber,
}

/// A client's certificate and its private key (PKCS#8), both PEM.
pub struct ClientCertificate {
    pub certificate_pem: String,
    pub key_pem: String,
}

impl ClientCertificate {
    /// Writes the certificate to `dir/NAME.crt` and the key to
    /// `dir/NAME.key` (readable by its owner only, as libpq wants it);
    /// returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let certificate = dir.join(format!("{name}.crt"));
        std::fs::write(&certificate, &self.certificate_pem).unwrap();
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&key, &self.key_pem).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        (certificate, key)
    }
}

pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The serial number of the next certificate issued, so each of this
    /// CA's is known and distinct.
    next_serial: AtomicU64,
}

impl Authority {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Authority { issuer, next_serial: AtomicU64::new(1) }
    }

    fn serial(&self) -> SerialNumber {
        SerialNumber::from_slice(&self.next_serial.fetch_add(1, Ordering::SeqCst).to_be_bytes())
    }

    /// A server certificate valid for `names` only (DNS names, or IP
    /// addresses written as such).
    pub fn issue(&self, names: &[&str]) -> ServerCertificate {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "opledger test server");
        let serial = self.serial();
        params.serial_number = Some(serial.clone());
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        ServerCertificate { certificate_pem: certificate.pem(), key_pem: key.serialize_pem(), serial }
    }

    /// A certificate revocation list of this CA (PEM) revoking the
    /// certificates of `serials`, its next update on `next_update` (year,
    /// month, day: a past one makes an expired list).
    pub fn revocation_list(&self, serials: &[&SerialNumber], next_update: (i32, u8, u8)) -> String {
        let revoked_certs = serials
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: (*serial).clone(),
                revocation_time: date_time_ymd(2024, 1, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(next_update.0, next_update.1, next_update.2),
            crl_number: self.serial(),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }

    /// Writes the CA certificate to `dir/file` and returns its path.
    pub fn write_root(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// A client certificate for the database user `user` (its common
    /// name), for client authentication only.
    pub fn issue_client(&self, user: &str) -> ClientCertificate {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        ClientCertificate { certificate_pem: certificate.pem(), key_pem: key.serialize_pem() }
    }

    /// `message` signed with this CA's key, as it signs what it issues
    /// (for certificates rcgen does not write, made by the tests).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use rcgen::SigningKey;
        self.issuer.key().sign(message).unwrap()
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        self.issuer.pem()
    }
}
