//! Where a test's log lives, by the switch of the test run
//! (`OPLEDGER_TEST_LOG`, `tests/support/postgres_cluster.rs`): a temporary
//! directory (sled), or a fresh database of the test process's one shared
//! PostgreSQL cluster. A test that opens, closes and reopens "the same log"
//! holds one of these, so the domain's tests run unchanged on both
//! backends. Dropping it removes the directory or drops the database.

use std::path::PathBuf;

use crate::log::{Log, LogOptions};
use crate::postgres_cluster::{test_log_on_postgres, Cluster};

/// Removed when dropped: the directory, or the database.
pub(crate) enum TestLog {
    Directory(tempfile::TempDir),
    Postgres { name: String, url: String },
}

impl TestLog {
    /// A new, empty place on the backend the switch names.
    pub(crate) fn fresh() -> TestLog {
        match test_log_on_postgres() {
            true => {
                let cluster = Cluster::shared();
                let name = cluster.fresh_database();
                TestLog::Postgres { url: cluster.url(&name), name }
            }
            false => TestLog::Directory(tempfile::tempdir().unwrap()),
        }
    }

    pub(crate) fn open(&self, options: LogOptions) -> Log {
        match self {
            TestLog::Directory(dir) => Log::open(dir.path(), options).unwrap(),
            TestLog::Postgres { url, .. } => Log::open_postgres(url, options).unwrap(),
        }
    }

    /// Every byte the backend stored, by where it is: each file of the
    /// directory, or each table of the database with every row as text
    /// (`bytea` in escape form, so text inside the records stays readable).
    pub(crate) fn stored(&self) -> Vec<(String, Vec<u8>)> {
        match self {
            TestLog::Directory(dir) => files(dir.path().to_path_buf()),
            TestLog::Postgres { url, .. } => {
                let cluster = Cluster::shared();
                let tables = cluster.psql_at(url, &["SELECT tablename FROM pg_tables WHERE schemaname = 'public'"]);
                let tables = String::from_utf8(tables).unwrap();
                let dump = |table: &str| {
                    let select = format!("SELECT t::text FROM {table} t");
                    cluster.psql_at(url, &["SET bytea_output = 'escape'", &select])
                };
                tables.lines().map(|table| (format!("table {table}"), dump(table))).collect()
            }
        }
    }
}

impl Drop for TestLog {
    fn drop(&mut self) {
        if let TestLog::Postgres { name, .. } = self {
            Cluster::shared().drop_database(name);
        }
    }
}

fn files(root: PathBuf) -> Vec<(String, Vec<u8>)> {
    let mut pending = vec![root];
    let mut found = Vec::new();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            continue;
        }
        found.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    found
}
