//! The settings a node's sessions start with, whatever the database's
//! defaults (found from outside first: a role whose defaults were meant
//! for an application, `lock_timeout = '10ms'` and `statement_timeout =
//! '20ms'`, failed 42 of 6,400 writes over two nodes with `500
//! storage_failure`, worded only "current transaction is aborted").
//!
//! - Role defaults that would fail appends under ordinary contention
//!   (`lock_timeout`, `statement_timeout`, `serializable` isolation, a
//!   short `idle_in_transaction_session_timeout`) do not apply: two nodes
//!   appending at once all commit, and the chain verifies.
//! - A head held by a session outside the ledger past the node's lock
//!   wait fails the append as [`Error::LockWaitPassed`], the database's
//!   own error (not the "current transaction is aborted" of the
//!   statements behind it), with nothing appended; the next append, once
//!   the head is free, commits at the next position. The connection
//!   string's own `options` set the wait here, as an operator's would.
//! - The same two nodes through PgBouncer in session mode, which refuses a
//!   connection whose startup `options` name settings it does not track:
//!   the settings are `SET` once connected, so the nodes connect, take
//!   them, and append.

use std::sync::Arc;

use super::connect::{self, Heard, Target};
use super::tests::lock_head_for;
use crate::error::Error;
use crate::log::conformance::{assert_verifies, event, options};
use crate::log::{Expectations, Log};
use crate::pgbouncer::Pgbouncer;
use crate::postgres_cluster::Cluster;

/// Role defaults an application's DBA might set: each would fail some
/// appends between two nodes if the node's sessions took it. The
/// `statement_timeout` still applies to a connection's first round trip,
/// the node's `SET`s (1 ms could end that very round trip on a loaded
/// machine, or leave its cancel pending for the next statement).
const APPLICATION_DEFAULTS: &[(&str, &str)] = &[
    ("lock_timeout", "1ms"),
    ("statement_timeout", "50ms"),
    ("default_transaction_isolation", "serializable"),
    ("idle_in_transaction_session_timeout", "1ms"),
];

const WRITERS: usize = 8;
const APPENDS_PER_WRITER: usize = 100;

fn session_setting(url: &str, name: &str) -> String {
    let target = Target::parse(url).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = connect::connect(&target, Arc::new(Heard::default()), None).await.unwrap();
        client.query_one(&format!("SHOW {name}"), &[]).await.unwrap().get(0)
    })
}

/// A cluster whose role `application` has [`APPLICATION_DEFAULTS`] and
/// owns the database `defaults`.
fn cluster_with_application_defaults() -> Cluster {
    let cluster = Cluster::start(&[]);
    cluster.psql("CREATE ROLE application LOGIN");
    for (name, value) in APPLICATION_DEFAULTS {
        cluster.psql(&format!("ALTER ROLE application SET {name} = '{value}'"));
    }
    cluster.psql("CREATE DATABASE defaults OWNER application");
    cluster
}

/// Two nodes over `url`, appending from [`WRITERS`] threads at once: every
/// append commits, and the chain verifies. First, a connection as a node
/// makes it has the node's settings.
fn two_nodes_append_with_their_own_settings(url: &str) {
    assert_eq!(session_setting(url, "lock_timeout"), "30s");
    assert_eq!(session_setting(url, "statement_timeout"), "0");
    assert_eq!(session_setting(url, "transaction_isolation"), "read committed");
    assert_eq!(session_setting(url, "idle_in_transaction_session_timeout"), "1min");
    let nodes =
        [Arc::new(Log::open_postgres(url, options()).unwrap()), Arc::new(Log::open_postgres(url, options()).unwrap())];
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let node = Arc::clone(&nodes[writer % nodes.len()]);
            std::thread::spawn(move || {
                for n in 0..APPENDS_PER_WRITER {
                    let stream = format!("writer-{writer}");
                    node.append_blocking(vec![event(&stream, n as u64)], Expectations::none()).unwrap().unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(nodes[0].latest_head().unwrap().position, (WRITERS * APPENDS_PER_WRITER) as u64);
    assert_verifies(&nodes[0]);
}

#[test]
fn role_defaults_meant_for_applications_do_not_fail_appends_between_nodes() {
    let cluster = cluster_with_application_defaults();
    two_nodes_append_with_their_own_settings(&cluster.url("defaults").replacen("postgres@", "application@", 1));
}

#[test]
fn nodes_behind_pgbouncer_in_session_mode_take_their_settings_and_append() {
    let cluster = cluster_with_application_defaults();
    let pooler = Pgbouncer::start(cluster.port, "defaults");
    two_nodes_append_with_their_own_settings(&pooler.url("application", "defaults"));
}

#[test]
fn a_head_held_past_the_lock_wait_fails_the_append_with_the_databases_own_error() {
    let cluster = Arc::new(Cluster::start(&[]));
    let database = cluster.database("held");
    let url = format!("{database}?options=-c%20lock_timeout%3D300ms");
    assert_eq!(session_setting(&url, "lock_timeout"), "300ms", "the connection string's options come last");
    let log = Log::open_postgres(&url, options()).unwrap();
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();

    let holder = lock_head_for(&cluster, &url, 2.0);
    let waited = log.append_blocking(vec![event("a", 2)], Expectations::none()).unwrap_err();
    assert!(
        matches!(&waited, Error::LockWaitPassed(message) if message.contains("lock timeout (55P03)")
            && message.contains("stayed held by another session")),
        "{waited:?}"
    );
    holder.join().unwrap();

    let appended = log.append_blocking(vec![event("a", 3)], Expectations::none()).unwrap().unwrap();
    assert_eq!(appended.first_position, 2, "the append that waited appended nothing");
    assert_verifies(&log);
}
