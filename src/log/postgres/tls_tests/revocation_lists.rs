//! Certificate revocation lists (`sslcrl`, `PGSSLCRL`, libpq's
//! `~/.postgresql/root.crl`, and `sslcrldir`'s hashed directory) against a cluster whose certificate the test
//! CA issued: a list of that CA revoking it refuses the server wherever a
//! chain is checked; a list revoking another of its certificates does
//! not. Then the settings refused before any connection.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::client_certificates::connect_in;
use crate::log::conformance::{event, options};
use crate::log::postgres::connect::Target;
use crate::log::{Expectations, Log};
use crate::postgres_cluster::{Cluster, ServerTls};
use crate::tls_certificates::Authority;

static DATABASES: AtomicU64 = AtomicU64::new(0);

/// A next update years ahead: the list is current.
const CURRENT: (i32, u8, u8) = (2100, 1, 1);
/// A next update past: the list has expired.
const PAST: (i32, u8, u8) = (2024, 6, 1);

struct Setup {
    cluster: Cluster,
    dir: tempfile::TempDir,
    /// The CA that issued the server's certificate.
    root: PathBuf,
    /// A list of that CA revoking the server's certificate.
    revoking: PathBuf,
    /// A list of that CA revoking another certificate of it.
    revoking_another: PathBuf,
    /// A list of that CA revoking nothing, past its next update.
    expired: PathBuf,
    /// A list of another CA only: none from the server's.
    foreign: PathBuf,
}

impl Setup {
    /// A URL of a fresh database reached as `host` with `parameters`.
    fn url(&self, host: &str, parameters: &str) -> String {
        let name = format!("tls_revocation_{}", DATABASES.fetch_add(1, Ordering::SeqCst));
        self.cluster.psql(&format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@{host}:{}/{name}?{parameters}", self.cluster.port)
    }

    /// `sslrootcert` naming the server's CA, and `sslcrl` naming `list`.
    fn checked_against(&self, mode: &str, list: &Path) -> String {
        format!("sslmode={mode}&sslrootcert={}&sslcrl={}", self.root.display(), list.display())
    }

    fn refused(&self, host: &str, parameters: &str) -> String {
        let refused = Log::open_postgres(&self.url(host, parameters), options()).unwrap_err().to_string();
        eprintln!("{host} {parameters}: {refused}");
        refused
    }

    fn appends(&self, host: &str, parameters: &str) {
        let log = Log::open_postgres(&self.url(host, parameters), options()).unwrap();
        log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();
        assert_eq!(log.read(1, 10).unwrap().len(), 1, "{parameters}");
    }
}

fn write(dir: &Path, file: &str, pem: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, pem).unwrap();
    path
}

#[test]
fn a_revoked_server_certificate_is_refused_as_libpq_refuses_it() {
    let authority = Authority::new("opledger test CA");
    let server = authority.issue(&["localhost"]);
    let another = authority.issue(&["localhost"]);
    let tls = ServerTls { certificate_pem: &server.certificate_pem, key_pem: &server.key_pem };
    let cluster = Cluster::start_with_tls(&[], &tls);
    let dir = tempfile::tempdir().unwrap();
    let root = authority.write_root(dir.path(), "root.crt");
    let revoking = write(dir.path(), "revoking.crl", &authority.revocation_list(&[&server.serial], CURRENT));
    let revoking_another =
        write(dir.path(), "revoking-another.crl", &authority.revocation_list(&[&another.serial], CURRENT));
    let expired = write(dir.path(), "expired.crl", &authority.revocation_list(&[], PAST));
    let foreign_list = Authority::new("another CA").revocation_list(&[], CURRENT);
    let foreign = write(dir.path(), "foreign.crl", &foreign_list);
    let setup = Setup { cluster, dir, root, revoking, revoking_another, expired, foreign };

    a_list_revoking_the_servers_certificate_refuses_it_wherever_a_chain_is_checked(&setup);
    a_list_revoking_another_certificate_connects(&setup);
    without_a_list_from_the_servers_ca_its_status_is_unknown_and_refused(&setup);
    an_expired_list_is_refused(&setup);
    the_environment_and_libpqs_default_list_are_used(&setup);
    a_directory_of_hashed_lists_is_read_as_libpq_reads_it(&setup);
}

fn a_list_revoking_the_servers_certificate_refuses_it_wherever_a_chain_is_checked(setup: &Setup) {
    for (mode, host) in [("verify-full", "localhost"), ("verify-ca", "127.0.0.1"), ("require", "localhost")] {
        let refused = setup.refused(host, &setup.checked_against(mode, &setup.revoking));
        assert!(
            refused.contains(&format!("the server's certificate failed verification (sslmode={mode})"))
                && refused.contains("it is revoked")
                && refused.contains("revoking.crl"),
            "{mode}: {refused}"
        );
    }
    // Without roots no chain is checked, so there is nothing to revoke:
    // libpq reads the list only with its roots.
    setup.appends("localhost", &format!("sslmode=require&sslcrl={}", setup.revoking.display()));
}

fn a_list_revoking_another_certificate_connects(setup: &Setup) {
    setup.appends("localhost", &setup.checked_against("verify-full", &setup.revoking_another));
    setup.appends("127.0.0.1", &setup.checked_against("verify-ca", &setup.revoking_another));
}

/// OpenSSL as libpq sets it checks every certificate of the chain against
/// a list of its issuer, and fails without one; so does rustls.
fn without_a_list_from_the_servers_ca_its_status_is_unknown_and_refused(setup: &Setup) {
    let refused = setup.refused("localhost", &setup.checked_against("verify-full", &setup.foreign));
    assert!(refused.contains("its revocation status is unknown") && refused.contains("foreign.crl"), "{refused}");
    // The same lists with the CA's own among them: it connects.
    let both = setup.dir.path().join("both.crl");
    let lists = [&setup.foreign, &setup.revoking_another].map(|list| std::fs::read_to_string(list).unwrap());
    std::fs::write(&both, lists.concat()).unwrap();
    setup.appends("localhost", &setup.checked_against("verify-full", &both));
}

fn an_expired_list_is_refused(setup: &Setup) {
    let refused = setup.refused("localhost", &setup.checked_against("verify-full", &setup.expired));
    assert!(refused.contains("expired.crl has expired"), "{refused}");
}

/// `PGSSLCRL` names what the string does not; `~/.postgresql/root.crl`
/// is used when neither names one; an empty `sslcrl` means that default.
fn the_environment_and_libpqs_default_list_are_used(setup: &Setup) {
    let home = setup.dir.path().join("home");
    let files = home.join(".postgresql");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::copy(&setup.root, files.join("root.crt")).unwrap();
    let home_text = home.display().to_string();
    let url = format!("postgres://postgres@localhost:{}/postgres?sslmode=verify-full", setup.cluster.port);
    assert_eq!(connect_in(&url, &[("HOME", home_text.as_str())]), Ok((true, String::new())));
    std::fs::copy(&setup.revoking, files.join("root.crl")).unwrap();
    let revoked = connect_in(&url, &[("HOME", home_text.as_str())]).unwrap_err();
    assert!(revoked.contains("it is revoked") && revoked.contains("root.crl"), "{revoked}");
    let another = setup.revoking_another.display().to_string();
    let environment = [("HOME", home_text.as_str()), ("PGSSLCRL", another.as_str())];
    assert_eq!(connect_in(&url, &environment), Ok((true, String::new())));
    let revoked = connect_in(&format!("{url}&sslcrl="), &environment).unwrap_err();
    assert!(revoked.contains("it is revoked") && revoked.contains("root.crl"), "{revoked}");
    let revoked = connect_in(&format!("{url}&sslcrl={}", setup.revoking.display()), &environment).unwrap_err();
    assert!(revoked.contains("it is revoked") && revoked.contains("revoking.crl"), "{revoked}");
}

/// `sslcrldir` (or `PGSSLCRLDIR`): the lists of the files under OpenSSL's
/// hashed names, with `sslcrl`'s if both are named; other files ignored.
fn a_directory_of_hashed_lists_is_read_as_libpq_reads_it(setup: &Setup) {
    let directory = |name: &str, lists: &[&Path]| {
        let directory = setup.dir.path().join(name);
        std::fs::create_dir_all(&directory).unwrap();
        for (count, list) in lists.iter().enumerate() {
            std::fs::copy(list, directory.join(format!("0a1b2c3d.r{count}"))).unwrap();
        }
        // Not a hashed name: never read (it would be refused if it were).
        std::fs::write(directory.join("README"), "not a list").unwrap();
        directory
    };
    let root = setup.root.display();
    let revoking = directory("revoking-directory", &[&setup.revoking]);
    let refused =
        setup.refused("localhost", &format!("sslmode=verify-full&sslrootcert={root}&sslcrldir={}", revoking.display()));
    assert!(
        refused.contains("it is revoked") && refused.contains(&format!("sslcrldir {}", revoking.display())),
        "{refused}"
    );
    let another = directory("another-directory", &[&setup.foreign, &setup.revoking_another]);
    setup.appends("localhost", &format!("sslmode=verify-full&sslrootcert={root}&sslcrldir={}", another.display()));
    // Both named: the lists of both. The file has no list of the server's
    // CA; the directory does.
    let foreign_only = directory("foreign-directory", &[&setup.foreign]);
    let both = |file: &Path, directory: &Path| {
        format!("sslmode=verify-full&sslrootcert={root}&sslcrl={}&sslcrldir={}", file.display(), directory.display())
    };
    setup.appends("localhost", &both(&setup.foreign, &another));
    let refused = setup.refused("localhost", &both(&setup.revoking, &foreign_only));
    assert!(refused.contains("it is revoked") && refused.contains("revoking.crl and sslcrldir"), "{refused}");
    // From the environment.
    let home = setup.dir.path().join("home-without-files");
    std::fs::create_dir_all(&home).unwrap();
    let home_text = home.display().to_string();
    let revoking_text = revoking.display().to_string();
    let url =
        format!("postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={root}", setup.cluster.port);
    let environment = [("HOME", home_text.as_str()), ("PGSSLCRLDIR", revoking_text.as_str())];
    let revoked = connect_in(&url, &environment).unwrap_err();
    assert!(revoked.contains("it is revoked") && revoked.contains("revoking-directory"), "{revoked}");
}

/// Settings refused when the log opens, before any connection.
#[test]
fn bad_revocation_list_settings_are_refused_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("opledger test CA");
    let root = authority.write_root(dir.path(), "root.crt");
    let missing = dir.path().join("missing.crl");
    let garbage = write(dir.path(), "garbage.crl", "not PEM at all");
    // A certificate where a list should be: PEM, but no list inside.
    let mislabelled = authority.certificate_pem().replace("CERTIFICATE", "X509 CRL");
    let mislabelled = write(dir.path(), "mislabelled.crl", &mislabelled);
    let parse = |parameters: String, environment: &[(&str, &str)]| {
        let url = format!("postgres://u:secret@127.0.0.1:1/db?{parameters}");
        Target::parse_in(&url, &|name| {
            environment.iter().find(|(variable, _)| *variable == name).map(|(_, value)| (*value).to_owned())
        })
        .map(|_| ())
        .map_err(|error| error.to_string())
    };
    let verified =
        |list: &Path| format!("sslmode=verify-full&sslrootcert={}&sslcrl={}", root.display(), list.display());

    let absent = parse(verified(&missing), &[]).unwrap_err();
    assert!(absent.contains("cannot read sslcrl") && absent.contains("missing.crl"), "{absent}");
    let missing_text = missing.display().to_string();
    let root_text = root.display().to_string();
    let environment = [("PGSSLCRL", missing_text.as_str()), ("PGSSLROOTCERT", root_text.as_str())];
    let absent = parse("sslmode=verify-full".to_owned(), &environment).unwrap_err();
    assert!(absent.contains("cannot read sslcrl") && absent.contains("missing.crl"), "{absent}");
    let empty = parse(verified(&garbage), &[]).unwrap_err();
    assert!(empty.contains("holds no PEM certificate revocation list (X509 CRL)"), "{empty}");
    let unusable = parse(verified(&mislabelled), &[]).unwrap_err();
    assert!(unusable.contains("mislabelled.crl holds a revocation list that cannot be used"), "{unusable}");
    let with_directory = |directory: &Path| {
        format!("sslmode=verify-full&sslrootcert={}&sslcrldir={}", root.display(), directory.display())
    };
    let no_directory = parse(with_directory(&dir.path().join("no-such-directory")), &[]).unwrap_err();
    assert!(
        no_directory.contains("cannot read sslcrldir") && no_directory.contains("no-such-directory"),
        "{no_directory}"
    );
    let unhashed = dir.path().join("unhashed");
    std::fs::create_dir_all(&unhashed).unwrap();
    std::fs::copy(&garbage, unhashed.join("list.crl")).unwrap();
    let nothing = parse(with_directory(&unhashed), &[]).unwrap_err();
    assert!(nothing.contains("holds no revocation list under OpenSSL's hashed names"), "{nothing}");
    let root_text = root.display().to_string();
    let unhashed_text = unhashed.display().to_string();
    let environment = [("PGSSLROOTCERT", root_text.as_str()), ("PGSSLCRLDIR", unhashed_text.as_str())];
    let nothing = parse("sslmode=verify-full".to_owned(), &environment).unwrap_err();
    assert!(nothing.contains("holds no revocation list under OpenSSL's hashed names"), "{nothing}");
    let hashed_garbage = dir.path().join("hashed-garbage");
    std::fs::create_dir_all(&hashed_garbage).unwrap();
    std::fs::copy(&garbage, hashed_garbage.join("0a1b2c3d.r0")).unwrap();
    let directory = parse(with_directory(&hashed_garbage), &[]).unwrap_err();
    assert!(
        directory.contains("sslcrldir") && directory.contains("0a1b2c3d.r0 holds no PEM certificate revocation list"),
        "{directory}"
    );
    for message in [absent, empty, unusable, no_directory, nothing, directory] {
        assert!(!message.contains("secret"), "{message}");
    }

    // Without roots the list is not read (libpq loads it with them), and
    // sslmode=disable reads nothing.
    assert_eq!(parse(format!("sslmode=require&sslcrl={}", missing.display()), &[]), Ok(()));
    assert_eq!(parse(format!("sslmode=disable&sslcrl={}&sslcrldir=/etc/crls", missing.display()), &[]), Ok(()));
    assert_eq!(parse("sslmode=require&sslcrldir=/no/such/directory".to_owned(), &[]), Ok(()));
    // libpq's default list is skipped when absent, read when present.
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".postgresql")).unwrap();
    std::fs::copy(&root, home.join(".postgresql/root.crt")).unwrap();
    let home_text = home.display().to_string();
    assert_eq!(parse("sslmode=verify-full".to_owned(), &[("HOME", home_text.as_str())]), Ok(()));
    std::fs::copy(&garbage, home.join(".postgresql/root.crl")).unwrap();
    let default = parse("sslmode=verify-full".to_owned(), &[("HOME", home_text.as_str())]).unwrap_err();
    assert!(default.contains("sslcrl") && default.contains(".postgresql/root.crl"), "{default}");
}
