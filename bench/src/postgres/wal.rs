//! The cluster's WAL written while a run is measured: its insert position
//! (`pg_current_wal_lsn()`) read on a connection of its own at the start
//! of the measured part and again at its end. The position is the whole
//! cluster's, so the bytes are every writer's; during a run that is the
//! run itself (and whatever the server does beside it, autovacuum or a
//! checkpoint's record).

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

/// The insert position as a byte offset from the start of the WAL.
const POSITION: &str = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint";

pub struct WalMeter {
    client: Client,
    /// The position [`WalMeter::start`] read.
    from: u64,
}

impl WalMeter {
    /// A connection to `url`'s server, opened before the run so that the
    /// measured part does not pay for it.
    pub async fn connect(url: &str) -> anyhow::Result<WalMeter> {
        let (client, connection) =
            tokio_postgres::connect(url, NoTls).await.context("connecting to read the WAL position")?;
        tokio::spawn(connection);
        Ok(WalMeter { client, from: 0 })
    }

    /// Marks the start of the measured part.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.from = self.position().await?;
        Ok(())
    }

    /// WAL bytes the cluster wrote since [`WalMeter::start`].
    pub async fn written(&self) -> anyhow::Result<u64> {
        Ok(self.position().await?.saturating_sub(self.from))
    }

    async fn position(&self) -> anyhow::Result<u64> {
        let row = self.client.query_one(POSITION, &[]).await.context("reading the WAL position")?;
        Ok(u64::try_from(row.get::<_, i64>(0))?)
    }
}
