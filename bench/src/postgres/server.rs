//! The PostgreSQL server the bench measures: a throwaway cluster of its own
//! (the tests' helper: fsync on, synchronous_commit on, shared_buffers
//! 64MB, max_connections 200) or an existing server named by `--url`; and
//! the fresh database every run gets there, on a server brought to the
//! same state first ([`Settle`]).

#[path = "../../../tests/support/postgres_cluster.rs"]
mod postgres_cluster;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use postgres_cluster::Cluster;

/// The database the admin connection of an own cluster uses.
const ADMIN_DATABASE: &str = "postgres";

/// How the server is brought to the same state before every run, so that
/// no run pays for dirty buffers and WAL it did not make: the copy of the
/// template `CREATE DATABASE` leaves dirty, and, on a server whose `DROP
/// DATABASE` does not checkpoint (PostgreSQL 15's does), the runs before
/// it, whose checkpoint would spread its writes over the runs that follow.
/// BENCHMARKS.md has what each measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Settle {
    /// `CHECKPOINT` once the run's database is created, before the run:
    /// every dirty buffer is written and synced, and the server's own
    /// checkpoint clock starts again (the command returns when the
    /// checkpoint is done). On a `--url` server whose user may not
    /// (superuser or `pg_checkpoint`), a warning, then runs as `none`.
    Checkpoint,
    /// A new cluster of the bench's own for every run (not with `--url`).
    Cluster,
    /// Nothing: each run finds the server as the runs before left it (the
    /// method before `checkpoint`, kept to measure the difference).
    None,
}

pub struct Server {
    /// Where CREATE and DROP DATABASE run.
    admin_url: String,
    /// Kept until the bench ends (or the next run, with [`Settle::Cluster`]):
    /// dropping it stops and removes the cluster.
    cluster: Option<Cluster>,
    /// The synchronous standby of `cluster`, with `--standby`.
    _standby: Option<Cluster>,
    settle: Settle,
    created: AtomicUsize,
    /// The server refused `CHECKPOINT` once: it is not asked again, so the
    /// warning comes once.
    checkpoint_refused: AtomicBool,
}

impl Server {
    /// A cluster of the bench's own, started now (with a synchronous
    /// standby when `standby`).
    pub fn start(settle: Settle, standby: bool) -> Server {
        let cluster = Cluster::start(&[]);
        let standby = standby.then(|| synchronous_standby_of(&cluster));
        Server {
            admin_url: cluster.url(ADMIN_DATABASE),
            cluster: Some(cluster),
            _standby: standby,
            settle,
            created: AtomicUsize::new(0),
            checkpoint_refused: AtomicBool::new(false),
        }
    }

    /// The server `url` names; its database is only used to create others.
    pub fn existing(url: &str, settle: Settle) -> anyhow::Result<Server> {
        if settle == Settle::Cluster {
            bail!("--settle cluster starts clusters of the bench's own: not with --url");
        }
        Ok(Server {
            admin_url: url.to_owned(),
            cluster: None,
            _standby: None,
            settle,
            created: AtomicUsize::new(0),
            checkpoint_refused: AtomicBool::new(false),
        })
    }

    /// A new empty database for the next run, dropped when the returned
    /// guard is, on a server brought to the state every run starts from
    /// ([`Settle`]).
    pub fn fresh(&mut self, runtime: &Runtime) -> anyhow::Result<Database<'_>> {
        // The first run has the cluster `start` just made.
        if self.settle == Settle::Cluster && self.created.load(Ordering::Relaxed) > 0 {
            self.renew_cluster();
        }
        let name = format!("opledger_bench_{}_{}", std::process::id(), self.created.fetch_add(1, Ordering::Relaxed));
        let url = with_database(&self.admin_url, &name)?;
        runtime.block_on(self.admin(&format!("CREATE DATABASE {name}")))?;
        let database = Database { server: self, runtime: runtime.handle().clone(), name, url };
        // After the CREATE, so that its copy of the template is written out
        // too; the guard drops the database if this fails.
        if self.settle == Settle::Checkpoint {
            runtime.block_on(self.checkpoint())?;
        }
        Ok(database)
    }

    /// Replaces the bench's own cluster with a new one (the old one is
    /// stopped and removed first, so two never share the disk).
    fn renew_cluster(&mut self) {
        self.cluster = None;
        let cluster = Cluster::start(&[]);
        self.admin_url = cluster.url(ADMIN_DATABASE);
        self.cluster = Some(cluster);
    }

    /// `CHECKPOINT`, which returns once the checkpoint is done; a refusal
    /// for want of privilege is warned about once and not asked again.
    async fn checkpoint(&self) -> anyhow::Result<()> {
        if self.checkpoint_refused.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (client, driver) = self.connect_admin().await?;
        let answer = client.batch_execute("CHECKPOINT").await;
        drop(client);
        let _ = driver.await;
        match answer {
            Ok(()) => Ok(()),
            Err(error) if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                self.checkpoint_refused.store(true, Ordering::Relaxed);
                let reason = error.as_db_error().map_or_else(|| error.to_string(), |db| db.message().to_owned());
                tracing::warn!(
                    %reason,
                    "CHECKPOINT refused (it needs superuser or pg_checkpoint): every run starts from the state the \
                     runs before left, as with --settle none"
                );
                Ok(())
            }
            Err(error) => Err(error).context("running CHECKPOINT"),
        }
    }

    async fn admin(&self, sql: &str) -> anyhow::Result<()> {
        let (client, driver) = self.connect_admin().await?;
        client.batch_execute(sql).await.with_context(|| format!("running {sql}"))?;
        drop(client);
        let _ = driver.await;
        Ok(())
    }

    /// A connection to the admin database and the task driving it (which
    /// ends once the client is dropped).
    async fn connect_admin(
        &self,
    ) -> anyhow::Result<(Client, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>)> {
        let (client, connection) =
            tokio_postgres::connect(&self.admin_url, NoTls).await.context("connecting to the PostgreSQL server")?;
        Ok((client, tokio::spawn(connection)))
    }
}

/// One run's database; dropped (with any connection left to it) on drop,
/// so a long bench does not fill the disk.
pub struct Database<'a> {
    server: &'a Server,
    runtime: tokio::runtime::Handle,
    name: String,
    pub url: String,
}

impl Drop for Database<'_> {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(error) = self.runtime.block_on(self.server.admin(&sql)) {
            tracing::warn!(%error, database = %self.name, "bench database not dropped");
        }
    }
}

/// Longest wait for a new standby to stream as the synchronous one.
const STANDBY_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts a standby of `primary` and makes it the synchronous one: every
/// synchronous commit on the primary then waits for its flush.
fn synchronous_standby_of(primary: &Cluster) -> Cluster {
    let standby = Cluster::standby_of(primary, &[]);
    primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'");
    primary.psql("SELECT pg_reload_conf()");
    let deadline = std::time::Instant::now() + STANDBY_WAIT_MAX;
    while primary.psql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") != "1" {
        assert!(std::time::Instant::now() < deadline, "the standby never became synchronous: {}", standby.server_log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    standby
}

/// `url` naming database `name` instead of its own: a `postgres://` URL
/// gets its path replaced, a `key=value` string a `dbname` appended (the
/// last one given wins).
pub fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(format!("{url} dbname={name}"));
    };
    if scheme != "postgres" && scheme != "postgresql" {
        bail!("--url: not a postgres:// URL or key=value connection string: {scheme}://…");
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = before_query.split_once('/').map_or(before_query, |(authority, _)| authority);
    Ok(match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gets_its_database_replaced_and_its_parameters_kept() {
        let url = |u: &str| with_database(u, "b1").unwrap();
        assert_eq!(url("postgres://u@127.0.0.1:5433/postgres"), "postgres://u@127.0.0.1:5433/b1");
        assert_eq!(url("postgresql://u:p@h/db?sslmode=disable"), "postgresql://u:p@h/b1?sslmode=disable");
        assert_eq!(url("postgres://h:1"), "postgres://h:1/b1");
        assert_eq!(url("postgres://h?application_name=x"), "postgres://h/b1?application_name=x");
        assert_eq!(url("host=h user=u dbname=postgres"), "host=h user=u dbname=postgres dbname=b1");
        assert!(with_database("mysql://h/db", "b1").is_err());
    }
}
