//! A throwaway PgBouncer in front of a test cluster, as production
//! setups often put one: Debian's `pgbouncer` (scripts/test installs it),
//! run as the `postgres` OS user when the tests run as root (PgBouncer
//! refuses root), listening on a free loopback port, `trust`
//! authentication, session pooling (the mode a node supports: it keeps
//! prepared statements, session advisory locks and `LISTEN` on its
//! connections). It runs under `sh`, reading its stdin:
//! when the test process ends, however it ends, its stdin closes and the
//! shell stops PgBouncer.
//!
//! Shared by the core's log tests (`#[path]`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres_cluster::free_port;

/// Longest wait for PgBouncer to listen.
const START_WAIT: Duration = Duration::from_secs(10);

/// Runs PgBouncer until stdin closes (or a line comes), then stops it.
const RUN_SCRIPT: &str = r#""$@" & pooler=$!; read _; kill "$pooler"; wait "$pooler""#;

pub struct Pgbouncer {
    _dir: tempfile::TempDir,
    pub port: u16,
    runner: Child,
}

impl Pgbouncer {
    /// PgBouncer in session mode in front of the database `database` of
    /// the cluster on `cluster_port`, for the users `postgres` and
    /// `application` (trusted).
    pub fn start(cluster_port: u16, database: &str) -> Pgbouncer {
        let dir = tempfile::Builder::new().prefix("opledger-pgbouncer-").tempdir().unwrap();
        let port = free_port();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n{database} = host=127.0.0.1 port={cluster_port} dbname={database}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\npool_mode = session\nmax_client_conn = 200\n\
                 default_pool_size = 50\nlogfile = {log}\n",
                users = dir.path().join("users.txt").display(),
                log = dir.path().join("pgbouncer.log").display(),
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n\"application\" \"\"\n").unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let owned = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(owned.success(), "chown to postgres failed");
        }
        let mut command = Command::new("sh");
        command.args(["-c", RUN_SCRIPT, "opledger-pgbouncer"]);
        if as_postgres {
            command.args(["runuser", "-u", "postgres", "--"]);
        }
        let runner = command
            .arg(pgbouncer())
            .arg(&ini)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting pgbouncer (sh)");
        let pooler = Pgbouncer { _dir: dir, port, runner };
        pooler.wait_listening();
        pooler
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + START_WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let log = std::fs::read_to_string(self._dir.path().join("pgbouncer.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "pgbouncer never listened on {}:\n{log}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of `database` through this PgBouncer, as `user`.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        if let Some(stdin) = self.runner.stdin.as_mut() {
            let _ = stdin.write_all(b"stop\n");
        }
        let _ = self.runner.wait();
    }
}

/// Debian's binary (`/usr/sbin` is not on every user's `PATH`).
fn pgbouncer() -> &'static Path {
    let installed = Path::new("/usr/sbin/pgbouncer");
    assert!(installed.exists(), "pgbouncer not found: these tests need Debian's pgbouncer; scripts/test installs it");
    installed
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}
