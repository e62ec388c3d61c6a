//! Client certificates (`sslcert`, `sslkey`, their environment variables
//! and libpq's default files, an encrypted key and its `sslpassword`) against a cluster whose `pg_hba.conf` asks
//! the user `postgres` for one (`cert`), and the settings refused before
//! any connection.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;

use crate::log::conformance::{event, options};
use crate::log::postgres::connect::{self, Heard, Target};
use crate::log::{Expectations, Log};
use crate::postgres_cluster::{ClientCertificates, Cluster, ServerTls};
use crate::tls_certificates::{Authority, ClientCertificate};

struct Setup {
    cluster: Cluster,
    dir: tempfile::TempDir,
    /// The CA of the server's certificate and of the accepted clients'.
    root: PathBuf,
    /// A certificate for `postgres` the CA issued, and its key.
    certificate: (PathBuf, PathBuf),
    /// A certificate for `postgres` another CA issued, and its key.
    stranger: (PathBuf, PathBuf),
    /// A certificate for `postgres` the CA issued in X.509 version 1.
    version_1: (PathBuf, PathBuf),
}

impl Setup {
    /// A URL of a database (not `postgres`: there the user needs no
    /// certificate) with `parameters`.
    fn url(&self, parameters: &str) -> String {
        format!("postgres://postgres@localhost:{}/tls_clients?{parameters}", self.cluster.port)
    }

    fn files(&self, (certificate, key): &(PathBuf, PathBuf)) -> String {
        format!("sslcert={}&sslkey={}", certificate.display(), key.display())
    }
}

/// Connects once as a log's connections do, in `environment` (not this
/// process'), and answers whether the server sees TLS and the subject of
/// the client certificate it verified (empty without one).
pub(super) fn connect_in(url: &str, environment: &[(&str, &str)]) -> Result<(bool, String), String> {
    let answer =
        query_in(url, environment, "SELECT ssl, coalesce(client_dn, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .map(|row| (row.get(0), row.get(1)));
    eprintln!("{url} in {environment:?}: {answer:?}");
    answer
}

/// Connects once as a log's connections do, in `environment`, and runs
/// `sql`, which answers one row; the refusal to connect, said.
pub(super) fn query_in(url: &str, environment: &[(&str, &str)], sql: &str) -> Result<tokio_postgres::Row, String> {
    let variables: HashMap<String, String> =
        environment.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
    let target = Target::parse_in(url, &|name| variables.get(name).cloned()).map_err(|error| error.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client =
            connect::connect(&target, Arc::new(Heard::default()), None).await.map_err(|error| error.to_string())?;
        Ok(client.query_one(sql, &[]).await.unwrap())
    })
}

#[test]
fn client_certificates_are_presented_and_checked_as_libpq_would() {
    let authority = Authority::new("opledger test CA");
    let server = authority.issue(&["localhost"]);
    let tls = ServerTls { certificate_pem: &server.certificate_pem, key_pem: &server.key_pem };
    let ca_pem = authority.certificate_pem();
    let clients = ClientCertificates { ca_pem: &ca_pem, user: "postgres" };
    let cluster = Cluster::start_with_client_certificates(&[], &tls, &clients);
    cluster.psql("CREATE DATABASE tls_clients");
    let dir = tempfile::tempdir().unwrap();
    let root = authority.write_root(dir.path(), "root.crt");
    let certificate = authority.issue_client("postgres").write(dir.path(), "postgres");
    let stranger = Authority::new("another CA").issue_client("postgres").write(dir.path(), "stranger");
    let version_1 = client_version_1(&authority, "postgres").write(dir.path(), "version-1");
    let setup = Setup { cluster, dir, root, certificate, stranger, version_1 };

    a_certificate_of_the_ca_connects_and_appends(&setup);
    without_a_certificate_the_server_refuses(&setup);
    a_certificate_of_another_ca_is_refused(&setup);
    the_environment_names_what_the_string_does_not(&setup);
    libpqs_default_files_are_used_when_present(&setup);
    allow_presents_the_certificate_on_its_tls_attempt(&setup);
    an_encrypted_key_is_used_with_its_password(&setup);
    a_key_in_openssl_s_older_encrypted_form_is_used_with_its_password(&setup);
    a_version_1_certificate_is_presented_as_libpq_presents_it(&setup);
}

/// A client certificate for `user` in X.509 version 1 (no extensions).
fn client_version_1(authority: &Authority, user: &str) -> ClientCertificate {
    let issued = authority.issue_client(user);
    ClientCertificate {
        certificate_pem: super::as_version_1(authority, &issued.certificate_pem),
        key_pem: issued.key_pem,
    }
}

/// OpenSSL 3.0's `openssl x509 -req` (PostgreSQL's guide to making
/// certificates) issues X.509 version 1; libpq presents such a certificate
/// and the server accepts it. rustls' own check of the key refused it
/// (`UnsupportedCertVersion`) before the key check moved here.
fn a_version_1_certificate_is_presented_as_libpq_presents_it(setup: &Setup) {
    let verified = format!("sslmode=verify-full&sslrootcert={}", setup.root.display());
    let url = setup.url(&format!("{verified}&{}", setup.files(&setup.version_1)));
    assert_eq!(connect_in(&url, &[]), Ok((true, "/CN=postgres".to_owned())));
    // Its key is still checked against it.
    let (certificate, _) = &setup.version_1;
    let (_, other_key) = &setup.certificate;
    let mismatch = format!("{verified}&sslcert={}&sslkey={}", certificate.display(), other_key.display());
    let refused = connect_in(&setup.url(&mismatch), &[]).unwrap_err();
    assert!(refused.contains("is not the private key of sslcert"), "{refused}");
}

/// The password of the encrypted keys of these tests: no message may
/// carry it.
const KEY_PASSWORD: &str = "horse-battery-7Q";

/// `key` (a PKCS#8 PEM file) encrypted with `password` as `openssl pkcs8
/// -topk8 -v2 aes-256-cbc` writes it, into `file` (mode 0600).
fn encrypted_copy(key: &Path, password: &str, file: &Path) {
    let pem_text = std::fs::read(key).unwrap();
    let plain = PrivatePkcs8KeyDer::from_pem_slice(&pem_text).unwrap();
    let info = pkcs8::PrivateKeyInfo::try_from(plain.secret_pkcs8_der()).unwrap();
    let parameters =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2_048, b"opledger-salt", &[7; 16]).unwrap();
    let encrypted = info.encrypt_with_params(parameters, password).unwrap();
    std::fs::write(file, pem("ENCRYPTED PRIVATE KEY", encrypted.as_bytes())).unwrap();
    restrict(file, 0o600);
}

fn an_encrypted_key_is_used_with_its_password(setup: &Setup) {
    let (certificate, key) = &setup.certificate;
    let encrypted = setup.dir.path().join("postgres.encrypted.key");
    encrypted_copy(key, KEY_PASSWORD, &encrypted);
    let files = format!("sslcert={}&sslkey={}", certificate.display(), encrypted.display());
    let verified = format!("sslmode=verify-full&sslrootcert={}&{files}", setup.root.display());
    let url = setup.url(&format!("{verified}&sslpassword={KEY_PASSWORD}"));
    assert_eq!(connect_in(&url, &[]), Ok((true, "/CN=postgres".to_owned())));
    let log = Log::open_postgres(&url, options()).unwrap();
    log.append_blocking(vec![event("encrypted", 1)], Expectations::none()).unwrap().unwrap();
    // The key=value form too, with the password quoted.
    let pairs = format!(
        "host=localhost port={} user=postgres dbname=tls_clients sslmode=verify-full sslrootcert='{}' \
         sslcert='{}' sslkey='{}' sslpassword='{KEY_PASSWORD}'",
        setup.cluster.port,
        setup.root.display(),
        certificate.display(),
        encrypted.display()
    );
    assert_eq!(connect_in(&pairs, &[]), Ok((true, "/CN=postgres".to_owned())));

    let without = connect_in(&setup.url(&verified), &[]).unwrap_err();
    assert!(without.contains("is encrypted: give its password with sslpassword"), "{without}");
    let wrong = connect_in(&setup.url(&format!("{verified}&sslpassword=not-{KEY_PASSWORD}")), &[]).unwrap_err();
    assert!(wrong.contains("could not be decrypted with sslpassword"), "{wrong}");
    for message in [without, wrong] {
        assert!(!message.contains(KEY_PASSWORD), "{message}");
    }
    // A key that is not encrypted ignores the password, as libpq.
    let plain = setup.url(&format!("{}&sslpassword=unused", setup.files(&setup.certificate)));
    assert_eq!(
        connect_in(&format!("{plain}&sslmode=verify-full&sslrootcert={}", setup.root.display()), &[])
            .map(|(tls, _)| tls),
        Ok(true)
    );
}

/// Keys in OpenSSL's older encrypted form, made by the `openssl` command
/// as a user makes them (`openssl pkey -traditional -aes256`, what
/// `openssl genrsa -aes256` wrote before OpenSSL 3.0), with each cipher
/// that form uses: decrypted with `sslpassword`, as libpq decrypts them.
fn a_key_in_openssl_s_older_encrypted_form_is_used_with_its_password(setup: &Setup) {
    let (certificate, key) = &setup.certificate;
    for cipher in ["aes256", "aes192", "aes128", "des3"] {
        let traditional = setup.dir.path().join(format!("postgres.traditional-{cipher}.key"));
        let made = std::process::Command::new("openssl")
            .args(["pkey", "-traditional", &format!("-{cipher}"), "-passout", &format!("pass:{KEY_PASSWORD}")])
            .arg("-in")
            .arg(key)
            .arg("-out")
            .arg(&traditional)
            .status()
            .expect("the openssl command (scripts/test installs it)");
        assert!(made.success(), "openssl pkey -traditional -{cipher}");
        let written = std::fs::read_to_string(&traditional).unwrap();
        assert!(written.contains("Proc-Type: 4,ENCRYPTED"), "{written}");
        restrict(&traditional, 0o600);
        let verified = format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            setup.root.display(),
            certificate.display(),
            traditional.display()
        );
        let url = setup.url(&format!("{verified}&sslpassword={KEY_PASSWORD}"));
        assert_eq!(connect_in(&url, &[]), Ok((true, "/CN=postgres".to_owned())), "{cipher}");
        let without = connect_in(&setup.url(&verified), &[]).unwrap_err();
        assert!(without.contains("is encrypted: give its password with sslpassword"), "{without}");
        let wrong = connect_in(&setup.url(&format!("{verified}&sslpassword=not-{KEY_PASSWORD}")), &[]).unwrap_err();
        assert!(wrong.contains("the password is wrong"), "{cipher}: {wrong}");
        assert!(!wrong.contains(KEY_PASSWORD) && !without.contains(KEY_PASSWORD), "{wrong}");
    }
    let log = Log::open_postgres(
        &setup.url(&format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}&sslpassword={KEY_PASSWORD}",
            setup.root.display(),
            certificate.display(),
            setup.dir.path().join("postgres.traditional-aes256.key").display()
        )),
        options(),
    )
    .unwrap();
    log.append_blocking(vec![event("traditional", 1)], Expectations::none()).unwrap().unwrap();
}

fn a_certificate_of_the_ca_connects_and_appends(setup: &Setup) {
    let url = setup.url(&format!(
        "sslmode=verify-full&sslrootcert={}&{}",
        setup.root.display(),
        setup.files(&setup.certificate)
    ));
    let log = Log::open_postgres(&url, options()).unwrap();
    let appended = log.append_blocking(vec![event("a", 1), event("b", 1)], Expectations::none()).unwrap().unwrap();
    assert_eq!((appended.first_position, appended.last_position), (1, 2));
    assert_eq!(log.read(1, 10).unwrap().len(), 2);
    let counted = setup.cluster.psql(
        "SELECT count(*) FILTER (WHERE s.client_dn = '/CN=postgres'), count(*) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'tls_clients'",
    );
    let (presented, all) = counted.split_once('|').unwrap();
    assert!(all != "0" && presented == all, "{presented} of {all} connections presented the certificate");
}

fn without_a_certificate_the_server_refuses(setup: &Setup) {
    let url = setup.url(&format!("sslmode=verify-full&sslrootcert={}", setup.root.display()));
    let refused = connect_in(&url, &[]).unwrap_err();
    assert!(refused.contains("connection requires a valid client certificate"), "{refused}");
}

fn a_certificate_of_another_ca_is_refused(setup: &Setup) {
    for mode in ["verify-full", "require"] {
        let url =
            setup.url(&format!("sslmode={mode}&sslrootcert={}&{}", setup.root.display(), setup.files(&setup.stranger)));
        let refused = connect_in(&url, &[]).unwrap_err();
        assert!(
            refused.contains("the server refused the client certificate")
                && refused.contains("stranger.crt")
                && refused.contains("not signed by a CA the server trusts"),
            "{mode}: {refused}"
        );
    }
}

fn the_environment_names_what_the_string_does_not(setup: &Setup) {
    let (certificate, key) = (setup.certificate.0.display().to_string(), setup.certificate.1.display().to_string());
    let root = setup.root.display().to_string();
    let environment = [
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", root.as_str()),
        ("PGSSLCERT", certificate.as_str()),
        ("PGSSLKEY", key.as_str()),
    ];
    assert_eq!(connect_in(&setup.url("application_name=env"), &environment), Ok((true, "/CN=postgres".to_owned())));
    // The string wins: its stranger is presented, and refused.
    let refused = connect_in(&setup.url(&setup.files(&setup.stranger)), &environment).unwrap_err();
    assert!(refused.contains("stranger.crt"), "{refused}");
}

fn libpqs_default_files_are_used_when_present(setup: &Setup) {
    let home = setup.dir.path().join("home");
    let files = home.join(".postgresql");
    std::fs::create_dir_all(&files).unwrap();
    let home_text = home.display().to_string();
    let environment = [("HOME", home_text.as_str())];
    // No ~/.postgresql/root.crt: verify-ca falls back to the system's
    // trust store, which does not know the test CA (or is empty).
    let unknown = connect_in(&setup.url("sslmode=verify-ca"), &environment).unwrap_err();
    assert!(
        unknown.contains("failed verification") || unknown.contains("no CA certificate in the system's trust store"),
        "{unknown}"
    );
    std::fs::copy(&setup.root, files.join("root.crt")).unwrap();
    let refused = connect_in(&setup.url("sslmode=verify-full"), &environment).unwrap_err();
    assert!(refused.contains("connection requires a valid client certificate"), "{refused}");
    std::fs::copy(&setup.certificate.0, files.join("postgresql.crt")).unwrap();
    let keyless = connect_in(&setup.url("sslmode=verify-full"), &environment).unwrap_err();
    assert!(keyless.contains("cannot read sslkey") && keyless.contains("postgresql.key"), "{keyless}");
    std::fs::copy(&setup.certificate.1, files.join("postgresql.key")).unwrap();
    assert_eq!(connect_in(&setup.url("sslmode=verify-full"), &environment), Ok((true, "/CN=postgres".to_owned())));
    // A file named wins over the default one.
    let refused = connect_in(&setup.url(&setup.files(&setup.stranger)), &environment).unwrap_err();
    assert!(refused.contains("stranger.crt"), "{refused}");
}

/// `allow` tries plain first; this server refuses it (`hostnossl reject`),
/// so the TLS attempt follows, with the certificate.
fn allow_presents_the_certificate_on_its_tls_attempt(setup: &Setup) {
    let url = setup.url(&format!("sslmode=allow&{}", setup.files(&setup.certificate)));
    assert_eq!(connect_in(&url, &[]), Ok((true, "/CN=postgres".to_owned())));
    let refused = connect_in(&setup.url(&format!("sslmode=allow&{}", setup.files(&setup.stranger))), &[]).unwrap_err();
    assert!(
        refused.contains("refused the client certificate")
            && refused.contains("tried with TLS after the server refused plain")
            && refused.contains("no encryption"),
        "{refused}"
    );
}

/// Settings refused when the log opens, before any connection.
#[test]
fn bad_client_certificate_settings_are_refused_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("opledger test CA");
    let (certificate, key) = authority.issue_client("postgres").write(dir.path(), "client");
    let (_, other_key) = authority.issue_client("postgres").write(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all").unwrap();
    let missing = dir.path().join("missing.pem");
    let refused = |parameters: String| {
        let url = format!("postgres://u:secret@127.0.0.1:1/db?sslmode=require&{parameters}");
        let refused = Target::parse_in(&url, &|_| None).err().map(|error| error.to_string()).unwrap();
        assert!(!refused.contains("secret"), "{refused}");
        refused
    };
    let shown = |path: &Path| path.display().to_string();

    let alone = refused(format!("sslcert={}", shown(&certificate)));
    assert!(alone.contains("sslcert is given without sslkey"), "{alone}");
    let alone = refused(format!("sslkey={}", shown(&key)));
    assert!(alone.contains("sslkey is given without sslcert"), "{alone}");
    let absent = refused(format!("sslcert={}&sslkey={}", shown(&missing), shown(&key)));
    assert!(absent.contains("cannot read sslcert") && absent.contains("missing.pem"), "{absent}");
    let absent = refused(format!("sslcert={}&sslkey={}", shown(&certificate), shown(&missing)));
    assert!(absent.contains("cannot read sslkey") && absent.contains("missing.pem"), "{absent}");
    let no_certificate = refused(format!("sslcert={}&sslkey={}", shown(&garbage), shown(&key)));
    assert!(no_certificate.contains("holds no PEM certificate"), "{no_certificate}");
    // A key file is only read when its owner alone may read it.
    let certificate_as_key = dir.path().join("certificate-as.key");
    std::fs::copy(&certificate, &certificate_as_key).unwrap();
    restrict(&certificate_as_key, 0o600);
    let no_key = refused(format!("sslcert={}&sslkey={}", shown(&certificate), shown(&certificate_as_key)));
    assert!(no_key.contains("holds no PEM private key"), "{no_key}");
    let mismatch = refused(format!("sslcert={}&sslkey={}", shown(&certificate), shown(&other_key)));
    assert!(mismatch.contains("is not the private key of sslcert"), "{mismatch}");

    // A key in OpenSSL's older encrypted form that cannot be read: refused,
    // saying why (here a cipher that form does not use).
    let traditional = dir.path().join("traditional.key");
    std::fs::write(
        &traditional,
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: BF-CBC,0001020304050607\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    restrict(&traditional, 0o600);
    let older = refused(format!("sslcert={}&sslkey={}&sslpassword=secret", shown(&certificate), shown(&traditional)));
    assert!(
        older.contains("encrypted in OpenSSL's older form") && older.contains("BF-CBC, which is not read"),
        "{older}"
    );
    // An encrypted key of another certificate: decrypted, then refused as
    // any other key that is not the certificate's.
    let other_encrypted = dir.path().join("other.encrypted.key");
    encrypted_copy(&other_key, "secret", &other_encrypted);
    let mismatch =
        refused(format!("sslcert={}&sslkey={}&sslpassword=secret", shown(&certificate), shown(&other_encrypted)));
    assert!(mismatch.contains("is not the private key of sslcert"), "{mismatch}");

    // sslmode=disable reads nothing, as libpq.
    let url = format!("postgres://u@127.0.0.1:1/db?sslmode=disable&sslcert={}", shown(&missing));
    assert!(Target::parse_in(&url, &|_| None).is_ok());
}

fn restrict(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// libpq's rule, before the key is read and before any connection: no
/// access for others, none for the group unless root owns the file (then
/// group read). The files are the test's, owned by whoever runs it: root
/// in CI, so 0640 is accepted there and refused for any other user.
#[test]
fn a_key_file_others_may_read_is_refused_as_libpq_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (certificate, key) = Authority::new("opledger test CA").issue_client("postgres").write(dir.path(), "client");
    let url = format!(
        "postgres://u@127.0.0.1:1/db?sslmode=require&sslcert={}&sslkey={}",
        certificate.display(),
        key.display()
    );
    let opened = |mode: u32| {
        restrict(&key, mode);
        Target::parse_in(&url, &|_| None).map(|_| ()).map_err(|error| error.to_string())
    };
    for accepted in [0o600, 0o400] {
        assert_eq!(opened(accepted), Ok(()), "{accepted:o}");
    }
    for group_or_world in [0o644, 0o604, 0o660, 0o620, 0o610, 0o601] {
        let refused = opened(group_or_world).unwrap_err();
        assert!(
            refused.contains(&format!("private key file sslkey {} has group or world access", key.display()))
                && refused.contains(&format!("(mode {group_or_world:04o})"))
                && refused.contains("u=rw (0600) or less if owned by the current user")
                && refused.contains("u=rw,g=r (0640) or less if owned by root"),
            "{group_or_world:o}: {refused}"
        );
    }
    let owned_by_root = std::fs::metadata(&key).unwrap().uid() == 0;
    assert_eq!(opened(0o640).is_ok(), owned_by_root, "0640, owned by root: {owned_by_root}");

    let directory = dir.path().join("a-directory.key");
    std::fs::create_dir(&directory).unwrap();
    let url = format!(
        "postgres://u@127.0.0.1:1/db?sslmode=require&sslcert={}&sslkey={}",
        certificate.display(),
        directory.display()
    );
    let refused = Target::parse_in(&url, &|_| None).err().map(|error| error.to_string()).unwrap();
    assert!(refused.contains("a-directory.key is not a regular file"), "{refused}");
}

/// libpq's default key file is held to the same rule.
#[test]
fn the_default_key_file_others_may_read_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let files = home.path().join(".postgresql");
    std::fs::create_dir_all(&files).unwrap();
    Authority::new("opledger test CA").issue_client("postgres").write(&files, "postgresql");
    let key = files.join("postgresql.key");
    let home_text = home.path().display().to_string();
    let open = || {
        Target::parse_in("postgres://u@127.0.0.1:1/db?sslmode=require", &|name| {
            (name == "HOME").then(|| home_text.clone())
        })
        .map(|_| ())
        .map_err(|error| error.to_string())
    };
    assert_eq!(open(), Ok(()));
    restrict(&key, 0o644);
    let refused = open().unwrap_err();
    assert!(
        refused.contains("postgresql.key has group or world access") && refused.contains("(0600) or less"),
        "{refused}"
    );
}

/// rcgen writes PKCS#8; the same EC key as SEC1 (`EC PRIVATE KEY`, what
/// `openssl ecparam -genkey` writes) is read too.
#[test]
fn an_ec_key_in_sec1_form_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let client = Authority::new("opledger test CA").issue_client("postgres");
    let (certificate, _) = client.write(dir.path(), "client");
    let pkcs8 = PrivatePkcs8KeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap();
    let sec1 = dir.path().join("client.sec1.key");
    std::fs::write(&sec1, pem("EC PRIVATE KEY", &sec1_of_pkcs8(pkcs8.secret_pkcs8_der()))).unwrap();
    restrict(&sec1, 0o600);
    // Read, and found to be the certificate's key (rustls compares them).
    let url = format!(
        "postgres://u@127.0.0.1:1/db?sslmode=require&sslcert={}&sslkey={}",
        certificate.display(),
        sec1.display()
    );
    Target::parse_in(&url, &|_| None).map_err(|error| error.to_string()).unwrap();
}

/// The ECPrivateKey (SEC1) a PKCS#8 `PrivateKeyInfo` wraps: its last
/// element, an OCTET STRING.
fn sec1_of_pkcs8(der: &[u8]) -> Vec<u8> {
    let (tag, info, _) = der_element(der);
    assert_eq!(tag, 0x30);
    let (_, _, rest) = der_element(info); // version
    let (_, _, rest) = der_element(rest); // algorithm
    let (tag, key, _) = der_element(rest);
    assert_eq!(tag, 0x04);
    key.to_vec()
}

/// One DER element: its tag, its contents and what follows it.
fn der_element(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (der[0], der[1]);
    let (length, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let bytes = usize::from(first & 0x7f);
        (der[2..2 + bytes].iter().fold(0, |length, byte| (length << 8) | usize::from(*byte)), 2 + bytes)
    };
    (tag, &der[header..header + length], &der[header + length..])
}

fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::new();
    for chunk in der.chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (at, byte)| bits | u32::from(*byte) << (16 - 8 * at));
        for at in 0..4 {
            let sextet = usize::try_from((bits >> (18 - 6 * at)) & 0x3f).unwrap();
            encoded.push(if at <= chunk.len() { char::from(ALPHABET[sextet]) } else { '=' });
        }
    }
    let lines: Vec<&str> = encoded.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}
