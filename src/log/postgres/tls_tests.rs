//! TLS to PostgreSQL: a cluster that accepts TCP only over TLS
//! (`Cluster::start_with_tls`), its certificate issued for `localhost` only
//! by a CA made in the test, and each `sslmode` against it as libpq would
//! fare; then the settings refused before any connection.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::log::conformance::{event, options};
use crate::log::postgres::describe_url;
use crate::log::{Expectations, Log};
use crate::postgres_cluster::{Cluster, ServerTls};
use crate::tls_certificates::Authority;

mod client_certificates;
mod revocation_lists;
mod version_1;

static DATABASES: AtomicU64 = AtomicU64::new(0);

struct Setup {
    cluster: Cluster,
    _dir: tempfile::TempDir,
    /// The CA that issued the server's certificate.
    right: PathBuf,
    /// A CA that did not.
    wrong: PathBuf,
}

impl Setup {
    /// A fresh database, and its URL reached as `host` with `parameters`.
    fn database(&self, host: &str, parameters: &str) -> (String, String) {
        let name = format!("tls_{}", DATABASES.fetch_add(1, Ordering::SeqCst));
        self.cluster.psql(&format!("CREATE DATABASE {name}"));
        (format!("postgres://postgres@{host}:{}/{name}?{parameters}", self.cluster.port), name)
    }

    fn refused(&self, host: &str, parameters: &str) -> String {
        let refused = Log::open_postgres(&self.database(host, parameters).0, options()).unwrap_err().to_string();
        eprintln!("{host} {parameters}: {refused}");
        refused
    }

    /// How many of the server's connections to `database` are encrypted,
    /// and how many there are.
    fn encrypted_connections(&self, database: &str) -> (u64, u64) {
        let counted = self.cluster.psql(&format!(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{database}'"
        ));
        let (encrypted, all) = counted.split_once('|').unwrap();
        (encrypted.parse().unwrap(), all.parse().unwrap())
    }
}

/// `certificate_pem` (issued by `authority`) re-encoded as X.509 version
/// 1, without extensions, and signed again by `authority`: what `openssl
/// x509 -req` of OpenSSL 3.0 issues when given no extension (rcgen writes
/// version 3 only).
pub(super) fn as_version_1(authority: &Authority, certificate_pem: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use x509_cert::der::asn1::BitString;
    use x509_cert::der::{Decode, Encode, EncodePem};
    let der = rustls::pki_types::CertificateDer::from_pem_slice(certificate_pem.as_bytes()).unwrap();
    let mut certificate = x509_cert::Certificate::from_der(der.as_ref()).unwrap();
    certificate.tbs_certificate.version = x509_cert::Version::V1;
    certificate.tbs_certificate.extensions = None;
    let signature = authority.sign(&certificate.tbs_certificate.to_der().unwrap());
    certificate.signature = BitString::from_bytes(&signature).unwrap();
    certificate.to_pem(x509_cert::der::pem::LineEnding::LF).unwrap()
}

fn root(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn connections_over_tls_are_checked_as_libpq_checks_them() {
    let authority = Authority::new("opledger test CA");
    let server = authority.issue(&["localhost"]);
    let tls = ServerTls { certificate_pem: &server.certificate_pem, key_pem: &server.key_pem };
    let cluster = Cluster::start_with_tls(&[], &tls);
    let dir = tempfile::tempdir().unwrap();
    let right = authority.write_root(dir.path(), "right.crt");
    let wrong = Authority::new("another CA").write_root(dir.path(), "wrong.crt");
    let setup = Setup { cluster, _dir: dir, right, wrong };

    verify_full_with_the_right_ca_appends_and_reads(&setup);
    require_and_the_default_encrypt_without_a_root(&setup);
    verify_ca_checks_the_chain_but_not_the_name(&setup);
    plain_is_refused_by_the_server(&setup);
    a_wrong_ca_is_refused_naming_verification(&setup);
    a_host_name_the_certificate_does_not_name_is_refused_by_verify_full(&setup);
    prefer_tries_plain_again_when_the_handshake_fails(&setup);
    allow_tries_tls_after_the_server_refuses_plain(&setup);
}

fn verify_full_with_the_right_ca_appends_and_reads(setup: &Setup) {
    let (url, database) =
        setup.database("localhost", &format!("sslmode=verify-full&sslrootcert={}", root(&setup.right)));
    let log = Log::open_postgres(&url, options()).unwrap();
    let appended = log.append_blocking(vec![event("a", 1), event("b", 1)], Expectations::none()).unwrap().unwrap();
    assert_eq!((appended.first_position, appended.last_position), (1, 2));
    let read = log.read(1, 10).unwrap();
    assert_eq!(read.iter().map(|envelope| envelope.position).collect::<Vec<_>>(), vec![1, 2]);
    let (encrypted, all) = setup.encrypted_connections(&database);
    assert!(all > 0 && encrypted == all, "{encrypted} of {all} connections encrypted");
}

fn require_and_the_default_encrypt_without_a_root(setup: &Setup) {
    for parameters in ["sslmode=require", "sslmode=prefer", "application_name=default_mode"] {
        let (url, database) = setup.database("127.0.0.1", parameters);
        let log = Log::open_postgres(&url, options()).unwrap();
        log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
        assert_eq!(log.read(1, 10).unwrap().len(), 1, "{parameters}");
        let (encrypted, all) = setup.encrypted_connections(&database);
        assert!(all > 0 && encrypted == all, "{parameters}: {encrypted} of {all} connections encrypted");
    }
}

fn verify_ca_checks_the_chain_but_not_the_name(setup: &Setup) {
    let (url, _) = setup.database("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={}", root(&setup.right)));
    let log = Log::open_postgres(&url, options()).unwrap();
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    let refused = setup.refused("localhost", &format!("sslmode=verify-ca&sslrootcert={}", root(&setup.wrong)));
    assert!(refused.contains("failed verification"), "{refused}");
}

fn plain_is_refused_by_the_server(setup: &Setup) {
    let refused = setup.refused("localhost", "sslmode=disable");
    assert!(refused.contains("pg_hba.conf rejects connection") && refused.contains("no encryption"), "{refused}");
}

fn a_wrong_ca_is_refused_naming_verification(setup: &Setup) {
    for mode in ["verify-full", "require"] {
        let refused = setup.refused("localhost", &format!("sslmode={mode}&sslrootcert={}", root(&setup.wrong)));
        assert!(refused.contains("failed verification") && refused.contains("not signed by a CA"), "{mode}: {refused}");
        assert!(refused.contains(&format!("sslmode={mode}")), "{refused}");
    }
}

fn a_host_name_the_certificate_does_not_name_is_refused_by_verify_full(setup: &Setup) {
    let refused = setup.refused("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", root(&setup.right)));
    assert!(refused.contains("failed verification") && refused.contains("not valid for name"), "{refused}");
}

#[test]
fn bad_tls_settings_are_refused_before_connecting_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let url = |parameters: &str| format!("postgres://u:secret@127.0.0.1:1/db?{parameters}");
    let refused = |parameters: &str| Log::open_postgres(&url(parameters), options()).unwrap_err().to_string();

    let unknown = refused("sslmode=verify-everything");
    assert!(unknown.contains("unknown sslmode \"verify-everything\""), "{unknown}");
    let missing = dir.path().join("missing.crt");
    let absent = refused(&format!("sslmode=verify-full&sslrootcert={}", missing.display()));
    assert!(absent.contains("cannot read sslrootcert") && absent.contains("missing.crt"), "{absent}");
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let empty = refused(&format!("sslmode=require&sslrootcert={}", garbage.display()));
    assert!(empty.contains("holds no PEM certificate"), "{empty}");
    let weak = refused("sslmode=require&sslrootcert=system");
    assert!(weak.contains("sslrootcert=system needs sslmode=verify-full"), "{weak}");
    for message in [unknown, absent, empty, weak] {
        assert!(!message.contains("secret"), "{message}");
    }
}

#[test]
fn a_described_url_names_no_password_whatever_its_tls_parameters() {
    for url in [
        "postgres://u:secret@db.example:6432/ledger?sslmode=verify-full&sslrootcert=/etc/ca.crt",
        "postgres://u:secret@db.example:6432/ledger?sslmode=no-such-mode",
        "host=db.example port=6432 dbname=ledger password=secret sslmode=verify-ca sslrootcert='/etc/ca.crt'",
        "postgres://u@db.example:6432/ledger?sslkey=/etc/c.key&sslpassword=secret",
        "host=db.example port=6432 dbname=ledger sslkey='/etc/c.key' sslpassword='secret'",
    ] {
        let described = describe_url(url);
        assert_eq!(described, "postgres://db.example:6432/ledger", "{url}");
    }
}

/// libpq's `prefer`: a failed handshake is followed by a plain attempt,
/// which this server refuses, so its refusal is the answer.
fn prefer_tries_plain_again_when_the_handshake_fails(setup: &Setup) {
    let refused = setup.refused("localhost", &format!("sslmode=prefer&sslrootcert={}", root(&setup.wrong)));
    assert!(refused.contains("no encryption") && refused.contains("tried without TLS after"), "{refused}");
}

/// libpq's `allow`: the plain attempt is refused by this server
/// (`hostnossl … reject`), so every connection ends up encrypted.
fn allow_tries_tls_after_the_server_refuses_plain(setup: &Setup) {
    let (url, database) = setup.database("localhost", "sslmode=allow");
    let log = Log::open_postgres(&url, options()).unwrap();
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    assert_eq!(log.read(1, 10).unwrap().len(), 1);
    let (encrypted, all) = setup.encrypted_connections(&database);
    assert!(all > 0 && encrypted == all, "{encrypted} of {all} connections encrypted");
    // Its TLS attempt checks as `require` does: a root given is used.
    let refused = setup.refused("localhost", &format!("sslmode=allow&sslrootcert={}", root(&setup.wrong)));
    assert!(
        refused.contains("not signed by a CA") && refused.contains("tried with TLS after the server refused plain"),
        "{refused}"
    );
}

/// Against a server without TLS, `allow` connects plain at once.
#[test]
fn allow_connects_plain_to_a_server_without_tls() {
    let cluster = Cluster::shared();
    let database = cluster.fresh_database();
    let url = format!("{}?sslmode=allow", cluster.url(&database));
    let log = Log::open_postgres(&url, options()).unwrap();
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    assert_eq!(log.read(1, 10).unwrap().len(), 1);
    let counted = cluster.psql(&format!(
        "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{database}'"
    ));
    let (plain, all) = counted.split_once('|').unwrap();
    assert!(all != "0" && plain == all, "{plain} of {all} connections plain");
}
