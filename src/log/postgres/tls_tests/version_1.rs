//! A server certificate in X.509 version 1 (what PostgreSQL's guide to
//! making certificates issues with OpenSSL 3.0), verified where a chain is
//! verified, as libpq verifies it: issued by a root of `sslrootcert`,
//! within its validity, not revoked by a list of that root, and under
//! `verify-full` naming the host by its common name. Over TLS 1.3 and
//! TLS 1.2. One cluster; each case puts its certificate in place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use x509_cert::der::{Decode, Encode, EncodePem};

use super::client_certificates::query_in;
use crate::log::conformance::{event, options};
use crate::log::{Expectations, Log};
use crate::postgres_cluster::{Cluster, ServerTls};
use crate::tls_certificates::{Authority, ServerCertificate};

static DATABASES: AtomicU64 = AtomicU64::new(0);

/// A next update years ahead: the list is current.
const CURRENT: (i32, u8, u8) = (2100, 1, 1);

struct Setup {
    cluster: Cluster,
    dir: tempfile::TempDir,
    authority: Authority,
    /// The CA certificate of `authority`.
    root: PathBuf,
    /// The certificate of a CA that issued nothing here.
    stranger: PathBuf,
}

impl Setup {
    fn url(&self, host: &str, parameters: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{parameters}", self.cluster.port)
    }

    fn verified(&self, mode: &str, root: &Path) -> String {
        format!("sslmode={mode}&sslrootcert={}", root.display())
    }

    /// Connects; the TLS version of the connection, or the refusal.
    fn connect(&self, host: &str, parameters: &str) -> Result<String, String> {
        let version = "SELECT coalesce(version, 'plain') FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        let answer = query_in(&self.url(host, parameters), &[], version).map(|row| row.get(0));
        eprintln!("{host} {parameters}: {answer:?}");
        answer
    }

    fn serve(&self, certificate_pem: &str, key_pem: &str) {
        self.cluster.replace_server_certificate(&ServerTls { certificate_pem, key_pem });
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

/// `issued` re-encoded as X.509 version 1 (no extensions, so no
/// subjectAltName) with `common_name` as its subject's common name and,
/// when given, `validity` (two UNIX times) instead of its own; signed
/// again by `authority`.
fn version_1(
    authority: &Authority,
    issued: &ServerCertificate,
    common_name: &str,
    validity: Option<(u64, u64)>,
) -> String {
    version_1_changed(authority, issued, common_name, validity, |_| {})
}

/// [`version_1`], with `change` made to the signed part before signing.
fn version_1_changed(
    authority: &Authority,
    issued: &ServerCertificate,
    common_name: &str,
    validity: Option<(u64, u64)>,
    change: impl FnOnce(&mut x509_cert::TbsCertificate),
) -> String {
    use rustls::pki_types::pem::PemObject;
    use std::str::FromStr;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
    let mut certificate = x509_cert::Certificate::from_der(der.as_ref()).unwrap();
    let tbs = &mut certificate.tbs_certificate;
    tbs.version = x509_cert::Version::V1;
    tbs.extensions = None;
    tbs.subject = x509_cert::name::Name::from_str(&format!("CN={common_name},O=opledger tests")).unwrap();
    if let Some((not_before, not_after)) = validity {
        let time = |seconds| {
            x509_cert::time::Time::try_from(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds)).unwrap()
        };
        tbs.validity = x509_cert::time::Validity { not_before: time(not_before), not_after: time(not_after) };
    }
    change(tbs);
    let signature = authority.sign(&tbs.to_der().unwrap());
    certificate.signature = x509_cert::der::asn1::BitString::from_bytes(&signature).unwrap();
    certificate.to_pem(x509_cert::der::pem::LineEnding::LF).unwrap()
}

#[test]
fn a_version_1_server_certificate_is_verified_as_libpq_verifies_it() {
    let authority = Authority::new("opledger test CA");
    let issued = authority.issue(&["localhost"]);
    let certificate = version_1(&authority, &issued, "localhost", None);
    let cluster = Cluster::start_with_tls(&[], &ServerTls { certificate_pem: &certificate, key_pem: &issued.key_pem });
    let dir = tempfile::tempdir().unwrap();
    let root = authority.write_root(dir.path(), "root.crt");
    let stranger = Authority::new("another CA").write_root(dir.path(), "stranger.crt");
    let setup = Setup { cluster, dir, authority, root, stranger };

    a_root_issued_certificate_is_taken_by_verify_ca_and_by_verify_full_for_its_common_name(&setup);
    its_chain_and_name_are_checked_as_libpq_checks_them(&setup, &issued);
    the_revocation_lists_of_its_root_are_checked(&setup, &issued);
    a_certificate_out_of_its_validity_is_refused(&setup, &issued);
    over_tls_1_2_it_is_verified_too(&setup);
    the_certificates_of_postgresql_s_guide_are_verified_or_refused_saying_why(&setup);
}

fn a_root_issued_certificate_is_taken_by_verify_ca_and_by_verify_full_for_its_common_name(setup: &Setup) {
    assert_eq!(setup.connect("127.0.0.1", &setup.verified("verify-ca", &setup.root)).unwrap(), "TLSv1.3");
    let name = format!("tls_version_1_{}", DATABASES.fetch_add(1, Ordering::SeqCst));
    setup.cluster.psql(&format!("CREATE DATABASE {name}"));
    let url =
        setup.url("localhost", &setup.verified("verify-full", &setup.root)).replace("/postgres?", &format!("/{name}?"));
    let log = Log::open_postgres(&url, options()).unwrap();
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
    assert_eq!(log.read(1, 10).unwrap().len(), 1);
}

fn its_chain_and_name_are_checked_as_libpq_checks_them(setup: &Setup, issued: &ServerCertificate) {
    let refused = setup.connect("127.0.0.1", &setup.verified("verify-full", &setup.root)).unwrap_err();
    assert!(
        refused.contains("failed verification (sslmode=verify-full)")
            && refused.contains("its common name \"localhost\" does not name the host \"127.0.0.1\""),
        "{refused}"
    );
    for mode in ["verify-ca", "verify-full", "require"] {
        let refused = setup.connect("localhost", &setup.verified(mode, &setup.stranger)).unwrap_err();
        assert!(refused.contains("not signed by a CA of sslrootcert"), "{mode}: {refused}");
    }
    // Signed by another key under the right issuer's name.
    let impostor = Authority::new("opledger test CA");
    setup.serve(&version_1(&impostor, issued, "localhost", None), &issued.key_pem);
    let refused = setup.connect("localhost", &setup.verified("verify-full", &setup.root)).unwrap_err();
    assert!(refused.contains("its signature does not verify with the key of the root"), "{refused}");
    // The algorithm named inside the signed part differs from the one
    // outside it (ecdsa-with-SHA384 inside, the CA's SHA-256 outside).
    let mismatched = version_1_changed(&setup.authority, issued, "localhost", None, |tbs| {
        tbs.signature.oid = x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
    });
    setup.serve(&mismatched, &issued.key_pem);
    let refused = setup.connect("localhost", &setup.verified("verify-ca", &setup.root)).unwrap_err();
    assert!(refused.contains("failed verification") && refused.contains("BadEncoding"), "{refused}");
    // A wildcard common name matches one label.
    setup.serve(&version_1(&setup.authority, issued, "*.localhost", None), &issued.key_pem);
    let refused = setup.connect("localhost", &setup.verified("verify-full", &setup.root)).unwrap_err();
    assert!(refused.contains("its common name \"*.localhost\" does not name the host"), "{refused}");
    assert!(setup.connect("localhost", &setup.verified("verify-ca", &setup.root)).is_ok());
    setup.serve(&version_1(&setup.authority, issued, "LocalHost", None), &issued.key_pem);
    assert!(setup.connect("localhost", &setup.verified("verify-full", &setup.root)).is_ok(), "case does not count");
    // Without roots nothing is checked, as before.
    assert!(setup.connect("127.0.0.1", "sslmode=require").is_ok());
}

fn the_revocation_lists_of_its_root_are_checked(setup: &Setup, issued: &ServerCertificate) {
    setup.serve(&version_1(&setup.authority, issued, "localhost", None), &issued.key_pem);
    let other = setup.authority.issue(&["elsewhere"]);
    let lists = [
        ("revoking.crl", setup.authority.revocation_list(&[&issued.serial], CURRENT), Some("it is revoked")),
        ("revoking-another.crl", setup.authority.revocation_list(&[&other.serial], CURRENT), None),
        ("expired.crl", setup.authority.revocation_list(&[], (2024, 6, 1)), Some("has expired")),
        (
            "foreign.crl",
            Authority::new("another CA").revocation_list(&[], CURRENT),
            Some("revocation status is unknown"),
        ),
    ];
    for (file, list, refusal) in lists {
        let path = setup.write(file, &list);
        let parameters = format!("{}&sslcrl={}", setup.verified("verify-full", &setup.root), path.display());
        match (setup.connect("localhost", &parameters), refusal) {
            (Ok(_), None) => {}
            (Err(refused), Some(expected)) => assert!(refused.contains(expected), "{file}: {refused}"),
            (answer, _) => panic!("{file}: {answer:?}"),
        }
    }
}

fn a_certificate_out_of_its_validity_is_refused(setup: &Setup, issued: &ServerCertificate) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    const DAY: u64 = 86_400;
    for (validity, refusal) in [
        ((now - 30 * DAY, now - DAY), "certificate expired"),
        ((now + DAY, now + 30 * DAY), "certificate not valid yet"),
    ] {
        setup.serve(&version_1(&setup.authority, issued, "localhost", Some(validity)), &issued.key_pem);
        let refused = setup.connect("localhost", &setup.verified("verify-ca", &setup.root)).unwrap_err();
        assert!(refused.contains("failed verification") && refused.contains(refusal), "{refusal}: {refused}");
    }
    setup.serve(&version_1(&setup.authority, issued, "localhost", None), &issued.key_pem);
}

fn over_tls_1_2_it_is_verified_too(setup: &Setup) {
    setup.cluster.reload_setting("ssl_max_protocol_version", Some("TLSv1.2"));
    assert_eq!(setup.connect("localhost", &setup.verified("verify-full", &setup.root)).unwrap(), "TLSv1.2");
    assert_eq!(setup.connect("127.0.0.1", "sslmode=require").unwrap(), "TLSv1.2", "unchecked, as before");
    let refused = setup.connect("localhost", &setup.verified("verify-full", &setup.stranger)).unwrap_err();
    assert!(refused.contains("not signed by a CA of sslrootcert"), "{refused}");
    setup.cluster.reload_setting("ssl_max_protocol_version", None);
}

/// Runs `openssl` with `arguments` in `dir`.
fn openssl(dir: &Path, arguments: &str) {
    let made = std::process::Command::new("openssl").current_dir(dir).args(arguments.split(' ')).output().unwrap();
    assert!(made.status.success(), "openssl {arguments}: {}", String::from_utf8_lossy(&made.stderr));
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// The commands of PostgreSQL's guide ("Creating Certificates"), with the
/// `openssl` command as a user runs them (`-text` included, so each
/// certificate file begins with its text form), for `localhost`: a root
/// made a CA by `-extensions v3_ca`, then a server certificate issued by
/// `openssl x509 -req` without extensions (version 1 with OpenSSL 3.0),
/// by the root or by an intermediate the root issued.
fn the_certificates_of_postgresql_s_guide_are_verified_or_refused_saying_why(setup: &Setup) {
    let guide = tempfile::tempdir().unwrap();
    let dir = guide.path();
    let config = "-extfile /etc/ssl/openssl.cnf -extensions v3_ca";
    openssl(dir, "req -new -nodes -text -out root.csr -keyout root.key -subj /CN=root.localhost");
    openssl(dir, &format!("x509 -req -in root.csr -text -days 3650 {config} -signkey root.key -out root.crt"));
    openssl(dir, "req -new -nodes -text -out server.csr -keyout server.key -subj /CN=localhost");
    openssl(
        dir,
        "x509 -req -in server.csr -text -days 365 -CA root.crt -CAkey root.key -CAcreateserial -out server.crt",
    );
    let root = dir.join("root.crt");
    setup.serve(&read(dir, "server.crt"), &read(dir, "server.key"));
    assert_eq!(setup.connect("localhost", &setup.verified("verify-full", &root)).unwrap(), "TLSv1.3");

    // A root in version 1 too: `-signkey` without extensions.
    openssl(dir, "x509 -req -in root.csr -days 3650 -signkey root.key -out root-v1.crt");
    assert_eq!(
        setup.connect("localhost", &setup.verified("verify-full", &dir.join("root-v1.crt"))).unwrap(),
        "TLSv1.3"
    );

    openssl(
        dir,
        "req -new -nodes -text -out intermediate.csr -keyout intermediate.key -subj /CN=intermediate.localhost",
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in intermediate.csr -text -days 1825 {config} -CA root.crt -CAkey root.key -CAcreateserial \
             -out intermediate.crt"
        ),
    );
    openssl(
        dir,
        "x509 -req -in server.csr -text -days 365 -CA intermediate.crt -CAkey intermediate.key -CAcreateserial \
         -out server.crt",
    );
    let chain = format!("{}{}", read(dir, "server.crt"), read(dir, "intermediate.crt"));
    setup.serve(&chain, &read(dir, "server.key"));
    for mode in ["verify-ca", "verify-full"] {
        let refused = setup.connect("localhost", &setup.verified(mode, &root)).unwrap_err();
        assert!(
            refused.contains(
                "it is an X.509 version 1 certificate issued by an intermediate CA (CN=intermediate.localhost)"
            ) && refused.contains("reissue it as version 3"),
            "{mode}: {refused}"
        );
    }
    assert!(setup.connect("localhost", "sslmode=require").is_ok(), "unchecked without roots");
}
