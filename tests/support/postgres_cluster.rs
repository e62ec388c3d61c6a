//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary
//! directory, `postgres` on a free loopback port, stopped and removed when
//! dropped. Debian's server binaries are found with `pg_config --bindir`
//! (`scripts/test` installs the `postgresql` package when it is missing).
//! initdb refuses to run as root, so as root every server command runs as
//! the `postgres` OS user (the package creates it) over a directory it owns.
//!
//! [`Cluster::start_with_tls`] starts one with `ssl = on`, the server
//! certificate given (`tls_certificates.rs` makes one), and a `pg_hba.conf`
//! that accepts TCP connections only over TLS (`hostssl`);
//! [`Cluster::start_with_client_certificates`] besides asks one user for a
//! client certificate (`cert` authentication).
//!
//! Every cluster has a guardian: a small shell process that holds the read
//! end of a pipe only this test process writes to. When the test process
//! ends, however it ends (a panic, an abort, SIGKILL), the pipe closes and
//! the guardian stops the server and removes the directory. That is what
//! cleans up [`Cluster::shared`], the one cluster of a test process kept in
//! a static (Rust never drops statics), and any cluster whose `Drop` never
//! ran.
//!
//! [`test_log_on_postgres`] reads the switch that runs the domain and HTTP
//! suites on PostgreSQL (`OPLEDGER_TEST_LOG=postgres`, `scripts/test`).
//!
//! Shared by the core's log tests and the tools' tests (`#[path]`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest wait for a cluster to start or stop.
const SERVER_WAIT: Duration = Duration::from_secs(60);

/// `pg_hba.conf` of a cluster started with TLS: the Unix socket as
/// initdb's, TCP only encrypted (`hostnossl` rejected by name, so a plain
/// connection is told why).
const TLS_ONLY_HBA: &str = "local all all trust\n\
     local replication all trust\n\
     hostssl all all 127.0.0.1/32 trust\n\
     hostssl all all ::1/128 trust\n\
     hostssl replication postgres 127.0.0.1/32 trust\n\
     hostnossl all all 0.0.0.0/0 reject\n\
     hostnossl all all ::/0 reject\n";

/// `pg_hba.conf` of a cluster started with client certificates: as
/// [`TLS_ONLY_HBA`], but `USER` must present a certificate (`cert`, which
/// verifies it and matches its common name with the user name) on every
/// database but `postgres`, the one this file's helpers (`psql`) use.
const CLIENT_CERTIFICATE_HBA: &str = "local all all trust\n\
     local replication all trust\n\
     hostssl postgres all 127.0.0.1/32 trust\n\
     hostssl replication postgres 127.0.0.1/32 trust\n\
     hostssl all USER 127.0.0.1/32 cert\n\
     hostssl all all 127.0.0.1/32 trust\n\
     hostnossl all all 0.0.0.0/0 reject\n\
     hostnossl all all ::/0 reject\n";

/// The server's certificate and key (PEM) for a cluster started with TLS.
pub struct ServerTls<'a> {
    pub certificate_pem: &'a str,
    pub key_pem: &'a str,
}

/// Client-certificate authentication for a cluster started with TLS.
pub struct ClientCertificates<'a> {
    /// The CA (PEM) whose certificates the server accepts (`ssl_ca_file`).
    pub ca_pem: &'a str,
    /// The user who must present one, its common name.
    pub user: &'a str,
}

/// The environment variable that picks the log of the domain and HTTP
/// suites: unset or `sled` for a directory, `postgres` for a fresh database
/// of [`Cluster::shared`].
pub const TEST_LOG_SWITCH: &str = "OPLEDGER_TEST_LOG";

/// The guardian's script: wait for the end of the pipe (the test process
/// is gone, or the cluster was dropped), then stop the server (the command
/// in the arguments) and remove the directory. Terminal signals are
/// ignored so that a Ctrl-C which ends the tests does not end the guardian
/// before it cleaned up.
const GUARDIAN_SCRIPT: &str =
    r#"trap '' INT HUP TERM QUIT; cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf "$CLUSTER_ROOT""#;

pub struct Cluster {
    root: tempfile::TempDir,
    pub port: u16,
    bindir: PathBuf,
    run_as_postgres: bool,
    stopped: bool,
    /// Cleans up after this process (module comment); `None` only while
    /// the cluster is being built.
    guardian: Option<Child>,
}

/// Whether the domain and HTTP suites run on PostgreSQL in this test
/// process ([`TEST_LOG_SWITCH`]). Any other value than the two known ones
/// fails the test, so a typo never runs the suites on sled unnoticed.
pub fn test_log_on_postgres() -> bool {
    match std::env::var(TEST_LOG_SWITCH) {
        Err(std::env::VarError::NotPresent) => false,
        Ok(value) if value.is_empty() || value == "sled" => false,
        Ok(value) if value == "postgres" => true,
        other => panic!("{TEST_LOG_SWITCH} must be `sled` or `postgres`, not {other:?}"),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn bindir() -> PathBuf {
    let output = Command::new("pg_config").arg("--bindir").output().expect(
        "pg_config not found: these tests need PostgreSQL's server (Debian: postgresql); scripts/test installs it",
    );
    assert!(output.status.success(), "pg_config --bindir failed");
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

impl Cluster {
    /// A new cluster, started. `settings` are extra `postgresql.conf` lines.
    pub fn start(settings: &[&str]) -> Cluster {
        Cluster::start_configured(settings, None)
    }

    /// A new cluster, started with TLS on: `tls` is its certificate, and
    /// TCP connections without TLS are rejected.
    pub fn start_with_tls(settings: &[&str], tls: &ServerTls<'_>) -> Cluster {
        Cluster::start_configured(settings, Some((tls, None)))
    }

    /// A new cluster, started with TLS on as [`Cluster::start_with_tls`],
    /// where `clients.user` must present a certificate `clients.ca_pem`
    /// issued (on every database but `postgres`).
    pub fn start_with_client_certificates(
        settings: &[&str],
        tls: &ServerTls<'_>,
        clients: &ClientCertificates<'_>,
    ) -> Cluster {
        Cluster::start_configured(settings, Some((tls, Some(clients))))
    }

    fn start_configured(settings: &[&str], tls: Option<(&ServerTls<'_>, Option<&ClientCertificates<'_>>)>) -> Cluster {
        let root = tempfile::Builder::new().prefix("opledger-pg-").tempdir().unwrap();
        let run_as_postgres = is_root();
        let mut cluster =
            Cluster { root, port: free_port(), bindir: bindir(), run_as_postgres, stopped: true, guardian: None };
        cluster.own(cluster.root.path());
        cluster.guard();
        let data = cluster.data();
        let init = cluster.server_command(
            "initdb",
            &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
        );
        assert!(init.status.success(), "initdb failed: {}", String::from_utf8_lossy(&init.stderr));
        cluster.configure(settings);
        if let Some((tls, clients)) = tls {
            cluster.configure_tls(tls);
            if let Some(clients) = clients {
                cluster.configure_client_certificates(clients);
            }
        }
        let mut cluster = cluster;
        cluster.start_server();
        cluster
    }

    /// A cluster made from a base backup of `primary` (a standby when
    /// `standby` is set: it streams from the primary).
    pub fn standby_of(primary: &Cluster, settings: &[&str]) -> Cluster {
        let root = tempfile::Builder::new().prefix("opledger-pg-standby-").tempdir().unwrap();
        let run_as_postgres = is_root();
        let mut cluster =
            Cluster { root, port: free_port(), bindir: bindir(), run_as_postgres, stopped: true, guardian: None };
        cluster.own(cluster.root.path());
        cluster.guard();
        let data = cluster.data();
        let port = primary.port.to_string();
        let backup = cluster.server_command(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        assert!(backup.status.success(), "pg_basebackup failed: {}", String::from_utf8_lossy(&backup.stderr));
        cluster.configure(settings);
        let mut cluster = cluster;
        cluster.start_server();
        cluster
    }

    /// The one cluster of this test process, started on first use and
    /// shared by its tests (each in a database of its own:
    /// [`Cluster::fresh_database`]); its guardian removes it when the
    /// process ends. Its WAL is kept small: every new database is written
    /// to it whole (about 8 MB each), and a hundred tests would otherwise
    /// leave a gigabyte of WAL to remove.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| Cluster::start(&["max_wal_size = 64MB", "min_wal_size = 32MB"]))
    }

    /// A new empty database with a name no other call in this process
    /// gave; returns its name ([`Cluster::url`] gives its URL).
    pub fn fresh_database(&self) -> String {
        static DATABASES: AtomicU64 = AtomicU64::new(0);
        let name = format!("test_{}", DATABASES.fetch_add(1, Ordering::SeqCst));
        self.database(&name);
        name
    }

    /// Drops the database `name`, ending the connections still open to it:
    /// a test that is done gives its space back at once. Never panics (it
    /// runs in `Drop`, maybe while a failed test unwinds); a database left
    /// goes with the cluster.
    pub fn drop_database(&self, name: &str) {
        let _ = Command::new(self.bindir.join("psql"))
            .args(["-d", &self.url("postgres"), "-q", "-c", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts the guardian (module comment) for this cluster's directory.
    fn guard(&mut self) {
        let data = self.data();
        let pg_ctl = self.bindir.join("pg_ctl");
        let mut command = Command::new("sh");
        command.args(["-c", GUARDIAN_SCRIPT, "opledger-pg-guardian"]);
        if self.run_as_postgres {
            command.args(["runuser", "-u", "postgres", "--"]);
        }
        command.arg(&pg_ctl).arg("-D").arg(&data).args(["-m", "immediate", "-w", "stop"]);
        let guardian = command
            .env("CLUSTER_ROOT", self.root.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the cluster's guardian (sh)");
        self.guardian = Some(guardian);
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn own(&self, path: &Path) {
        if self.run_as_postgres {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(path).status().unwrap();
            assert!(status.success(), "chown to postgres failed");
        }
    }

    fn configure(&self, settings: &[&str]) {
        let mut conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nmax_connections = 200\n\
             shared_buffers = 64MB\nfsync = on\nsynchronous_commit = on\nwal_level = replica\nmax_wal_senders = 8\n",
            self.port,
            self.root.path().display()
        );
        for setting in settings {
            conf.push_str(setting);
            conf.push('\n');
        }
        let path = self.data().join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&path).unwrap();
        existing.push_str(&conf);
        std::fs::write(&path, existing).unwrap();
        let hba = self.data().join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).unwrap();
        rules.push_str("\nhost replication postgres 127.0.0.1/32 trust\n");
        std::fs::write(&hba, rules).unwrap();
        self.own(self.root.path());
    }

    /// Writes the certificate and key into the data directory (the key
    /// readable by its owner only, as the server demands), turns `ssl` on
    /// and replaces `pg_hba.conf` with [`TLS_ONLY_HBA`].
    fn configure_tls(&self, tls: &ServerTls<'_>) {
        let data = self.data();
        std::fs::write(data.join("server.crt"), tls.certificate_pem).unwrap();
        let key = data.join("server.key");
        std::fs::write(&key, tls.key_pem).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let conf = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf).unwrap();
        existing.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, existing).unwrap();
        std::fs::write(data.join("pg_hba.conf"), TLS_ONLY_HBA).unwrap();
        self.own(self.root.path());
    }

    /// Writes the clients' CA into the data directory, names it the
    /// server's `ssl_ca_file` and replaces `pg_hba.conf` with
    /// [`CLIENT_CERTIFICATE_HBA`].
    fn configure_client_certificates(&self, clients: &ClientCertificates<'_>) {
        let data = self.data();
        std::fs::write(data.join("client_ca.crt"), clients.ca_pem).unwrap();
        let conf = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf).unwrap();
        existing.push_str("\nssl_ca_file = 'client_ca.crt'\n");
        std::fs::write(&conf, existing).unwrap();
        std::fs::write(data.join("pg_hba.conf"), CLIENT_CERTIFICATE_HBA.replace("USER", clients.user)).unwrap();
        self.own(self.root.path());
    }

    fn server_command(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bindir.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command.args(args).current_dir(self.root.path()).output().unwrap()
    }

    fn start_server(&mut self) {
        let data = self.data();
        let log = self.root.path().join("server.log");
        let wait = SERVER_WAIT.as_secs().to_string();
        let started = self.server_command(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", &wait, "start"],
        );
        assert!(
            started.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.stopped = false;
    }

    /// The server's log so far (for failure messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("server.log")).unwrap_or_default()
    }

    /// A connection URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL through psql against the `postgres` database.
    pub fn psql(&self, sql: &str) -> String {
        String::from_utf8_lossy(&self.psql_at(&self.url("postgres"), &[sql])).trim().to_owned()
    }

    /// Runs each statement of `sql` through psql against the database `url`
    /// names (one session); the unaligned output, as bytes.
    pub fn psql_at(&self, url: &str, sql: &[&str]) -> Vec<u8> {
        let output = self.psql_command(url, sql).output().unwrap();
        assert!(output.status.success(), "psql failed on {sql:?}: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }

    /// [`Cluster::psql_at`] for statements that may fail: whether psql
    /// succeeded.
    pub fn psql_result(&self, url: &str, sql: &[&str]) -> bool {
        self.psql_command(url, sql).output().is_ok_and(|output| output.status.success())
    }

    fn psql_command(&self, url: &str, sql: &[&str]) -> Command {
        let mut command = Command::new(self.bindir.join("psql"));
        command.args(["-d", url, "-v", "ON_ERROR_STOP=1", "-q", "-At"]);
        for statement in sql {
            command.args(["-c", statement]);
        }
        command
    }

    /// Sets (or with `None` resets) a reloadable server setting and returns
    /// once every process acts on it. `pg_reload_conf()` only signals the
    /// postmaster; a new session showing the value means the postmaster has
    /// reloaded and signalled its children, and a `CHECKPOINT` then makes
    /// the checkpointer handle that signal (it publishes
    /// `synchronous_standby_names` to the committing backends).
    pub fn reload_setting(&self, name: &str, value: Option<&str>) {
        match value {
            Some(value) => self.psql(&format!("ALTER SYSTEM SET {name} = '{value}'")),
            None => self.psql(&format!("ALTER SYSTEM RESET {name}")),
        };
        self.psql("SELECT pg_reload_conf()");
        let expected = match value {
            Some(value) => value.to_owned(),
            None => self.psql(&format!("SELECT boot_val FROM pg_settings WHERE name = '{name}'")),
        };
        let deadline = Instant::now() + SERVER_WAIT;
        while self.psql(&format!("SELECT current_setting('{name}')")) != expected {
            assert!(Instant::now() < deadline, "{name} never became {expected:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.psql("CHECKPOINT");
    }

    /// Replaces the server's certificate and key (a cluster started with
    /// TLS) and returns once new connections are offered the new ones:
    /// the postmaster loads them again on a reload, in the same step as
    /// the settings a new session then shows.
    pub fn replace_server_certificate(&self, tls: &ServerTls<'_>) {
        static RELOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let data = self.data();
        std::fs::write(data.join("server.crt"), tls.certificate_pem).unwrap();
        std::fs::write(data.join("server.key"), tls.key_pem).unwrap();
        self.own(&data);
        // Shown as set (4096 would show as 4MB).
        let marker = 4097 + RELOADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.reload_setting("work_mem", Some(&format!("{marker}kB")));
    }

    /// A new empty database; returns its URL.
    pub fn database(&self, name: &str) -> String {
        self.psql(&format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// Kills the postmaster with SIGKILL (its children follow when they
    /// notice), as a machine failure would.
    pub fn kill(&mut self) {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        let _ = Command::new("kill").args(["-9", &pid]).status();
        let deadline = Instant::now() + SERVER_WAIT;
        while Command::new("kill").args(["-0", &pid]).status().is_ok_and(|s| s.success()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Orphaned backends keep the port and shared memory until they end.
        let _ = Command::new("pkill").args(["-9", "-f", "--", &format!("-D {}", self.data().display())]).status();
        self.stopped = true;
    }

    /// Freezes every process of the cluster (SIGSTOP): connections stay
    /// open and nothing answers, as a hung server or a network partition
    /// without resets.
    pub fn freeze(&self) {
        self.signal_all("-STOP");
    }

    /// Lets a frozen cluster go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal_all("-CONT");
    }

    fn signal_all(&self, signal: &str) {
        let pattern = format!("-D {}", self.data().display());
        let postmaster = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let postmaster = postmaster.lines().next().unwrap().trim().to_owned();
        // The postmaster by its pid, its children by their parent.
        let _ = Command::new("kill").args([signal, &postmaster]).status();
        let _ = Command::new("pkill").args([signal, "-P", &postmaster]).status();
        let _ = Command::new("pkill").args([signal, "-f", "--", &pattern]).status();
    }

    /// Starts a killed or stopped cluster again, on the same port (after a
    /// kill, PostgreSQL recovers from its WAL first).
    pub fn restart(&mut self) {
        self.start_server();
    }

    /// Promotes a standby to a primary.
    pub fn promote(&self) {
        let data = self.data();
        let promoted = self.server_command("pg_ctl", &["-D", data.to_str().unwrap(), "-w", "promote"]);
        assert!(promoted.status.success(), "promote failed: {}", String::from_utf8_lossy(&promoted.stderr));
    }

    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let data = self.data();
        let _ = self.server_command("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        self.stopped = true;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        // Closing the pipe lets the guardian remove the directory now;
        // waiting for it leaves no process behind.
        if let Some(mut guardian) = self.guardian.take() {
            drop(guardian.stdin.take());
            let _ = guardian.wait();
        }
    }
}
