//! The PostgreSQL server the bench measures: a throwaway cluster of its own
//! (the tests' helper: fsync on, synchronous_commit on, shared_buffers
//! 64MB, max_connections 200) or an existing server named by `--url`; and
//! the fresh database every run gets there.

#[path = "../../../tests/support/postgres_cluster.rs"]
mod postgres_cluster;

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context};
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

use postgres_cluster::Cluster;

/// The database the admin connection of an own cluster uses.
const ADMIN_DATABASE: &str = "postgres";

pub struct Server {
    /// Where CREATE and DROP DATABASE run.
    admin_url: String,
    /// Kept until the bench ends: dropping it stops and removes the cluster.
    _cluster: Option<Cluster>,
    created: AtomicUsize,
}

impl Server {
    /// A cluster of the bench's own, started now.
    pub fn start() -> Server {
        let cluster = Cluster::start(&[]);
        Server { admin_url: cluster.url(ADMIN_DATABASE), _cluster: Some(cluster), created: AtomicUsize::new(0) }
    }

    /// The server `url` names; its database is only used to create others.
    pub fn existing(url: &str) -> Server {
        Server { admin_url: url.to_owned(), _cluster: None, created: AtomicUsize::new(0) }
    }

    /// A new empty database, dropped when the returned guard is.
    pub fn fresh(&self, runtime: &Runtime) -> anyhow::Result<Database<'_>> {
        let name = format!("opledger_bench_{}_{}", std::process::id(), self.created.fetch_add(1, Ordering::Relaxed));
        runtime.block_on(self.admin(&format!("CREATE DATABASE {name}")))?;
        let url = with_database(&self.admin_url, &name)?;
        Ok(Database { server: self, runtime: runtime.handle().clone(), name, url })
    }

    async fn admin(&self, sql: &str) -> anyhow::Result<()> {
        let (client, connection) =
            tokio_postgres::connect(&self.admin_url, NoTls).await.context("connecting to the PostgreSQL server")?;
        let driver = tokio::spawn(connection);
        client.batch_execute(sql).await.with_context(|| format!("running {sql}"))?;
        drop(client);
        let _ = driver.await;
        Ok(())
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
