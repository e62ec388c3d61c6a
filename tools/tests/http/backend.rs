//! Where each test's log lives, by the switch of the test run
//! (`OPLEDGER_TEST_LOG`, `tests/support/postgres_cluster.rs`): in the data
//! directory (sled, the default), or with `OPLEDGER_TEST_LOG=postgres` in a
//! fresh database of this test process's one PostgreSQL cluster. Tests
//! that open a server state or start the binary go through here, so the
//! suite runs unchanged on both backends. A test's database is dropped
//! with its [`TestLog`], so the cluster stays small.

use std::path::Path;
use std::process::{Command, Stdio};

use opledger::LogOptions;
use opledger_tools::server::{open_state_with_log, AppState};
use opledger_tools::tokens::{Grant, TokenStore};

use crate::postgres_cluster::{test_log_on_postgres, Cluster};

const BINARY: &str = env!("CARGO_BIN_EXE_opledger");

/// One test's log: `None` in the data directory, or a database (its name
/// and URL), dropped with this.
#[derive(Debug)]
pub struct TestLog {
    pub url: Option<String>,
    database: Option<String>,
}

impl TestLog {
    /// A new, empty log on the backend the switch names.
    pub fn fresh() -> TestLog {
        let database = test_log_on_postgres().then(|| Cluster::shared().fresh_database());
        TestLog { url: database.as_deref().map(|name| Cluster::shared().url(name)), database }
    }

    /// The server state on `data` over this log, as `opledger serve` opens it.
    pub fn open_state(&self, data: &Path, options: LogOptions) -> AppState {
        open_state_with_log(data, self.url.as_deref(), options).unwrap()
    }

    /// The arguments that point the binary's commands at this log (none
    /// for a log in the data directory).
    pub fn args(&self) -> Vec<&str> {
        match &self.url {
            Some(url) => vec!["--log", url],
            None => Vec::new(),
        }
    }

    /// A new token where a server over this log reads its tokens: the
    /// data directory's file, or the database (through the binary, as an
    /// operator makes one).
    pub fn token(&self, data: &Path, grant: Grant) -> String {
        let Some(url) = &self.url else {
            return TokenStore::new(data).create(grant).unwrap().0;
        };
        let who = match &grant {
            Grant::Service { name } => ["--service", name.as_str()],
            Grant::Actor { actor_id } => ["--actor", actor_id.as_str()],
        };
        let output = Command::new(BINARY)
            .args(["token", "create", "--log", url])
            .args(who)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "token create --log: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().lines().last().unwrap().trim().to_owned()
    }
}

impl Drop for TestLog {
    fn drop(&mut self) {
        if let Some(name) = &self.database {
            Cluster::shared().drop_database(name);
        }
    }
}
