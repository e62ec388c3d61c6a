//! One module per subcommand.

pub mod audit;
pub mod authority;
pub mod events;
pub mod explain;
pub mod export;
pub mod head;
pub mod import;
pub mod notifications;
pub mod read_models;
pub mod rebuild;
pub mod remote;
pub mod runs;
pub mod runs_cancel;
pub mod serve;
pub mod source;
pub mod token;
pub mod verify;

use std::path::PathBuf;

/// The data directory every command works on, and where the log is.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDir {
    /// The data directory (`serve` creates it if missing; the other commands need an existing one).
    #[arg(long = "data", env = "OPLEDGER_DATA", default_value = "./opledger-data")]
    pub path: PathBuf,
    /// The log in PostgreSQL, shared by every node (`postgres://user:password@host:port/database`,
    /// several hosts allowed, e.g. with `target_session_attrs=read-write`; TLS with libpq's `sslmode`,
    /// `sslrootcert`, `sslcert`, `sslkey`, `sslpassword`, `sslcrl` and `sslcrldir`, e.g.
    /// `?sslmode=verify-full&sslrootcert=/etc/opledger/db-ca.crt`, else `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`,
    /// `PGSSLKEY`, `PGSSLCRL`, `PGSSLCRLDIR`, else libpq's `~/.postgresql/` files).
    /// Without it the log is in DIR/log; with it DIR holds only this node's read models, and the API tokens are
    /// in the database.
    #[arg(long = "log", env = "OPLEDGER_LOG", value_name = "URL", hide_env_values = true)]
    pub log: Option<String>,
}
