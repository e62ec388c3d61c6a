//! The ledger over a shared log: two nodes (two ledgers) over one
//! PostgreSQL database, started by the test (`tests/support`).

use std::sync::Arc;

use super::tests::{options, request, runtime, succeeded, world};
use super::*;
use crate::domain::replay::DecisionReplay;
use crate::domain::sequencer::StartAnswer;
use crate::domain::start_gate::StartRejected;
use crate::verify::verify;

use crate::postgres_cluster;

/// A node over the log at `url`: a ledger on a log of its own.
fn node(url: &str) -> Arc<Ledger> {
    node_over(Arc::new(Log::open_postgres(url, options()).unwrap()))
}

fn node_over(log: Arc<Log>) -> Arc<Ledger> {
    Arc::new(Ledger::over(log, Arc::new(Utc::now)).unwrap())
}

/// Rounds of the race on one protected scope.
const SCOPE_RACE_ROUNDS: usize = 50;
/// Racing starts per node in each round.
const STARTS_PER_NODE: usize = 8;

#[test]
fn two_nodes_over_one_database_decide_on_fresh_state() {
    let cluster = postgres_cluster::Cluster::start(&[]);
    let url = cluster.database("ledger");
    let nodes = [node(&url), node(&url)];
    let rt = runtime();
    rt.block_on(async {
        a_tenant_registered_on_one_node_is_known_at_once_on_the_other(&nodes).await;
        at_most_one_accepted_run_per_scope_across_nodes(&nodes).await;
    });
    let log = Log::open_postgres(&url, options()).unwrap();
    let mut replay = DecisionReplay::new();
    let report = verify(&log, None, &mut replay, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_failure);
    let folded = fold_from(&log, DomainState::default()).unwrap();
    for node in &nodes {
        let state = rt.block_on(async {
            // A refused command still takes a round, which folds the log first.
            assert!(matches!(node.begin(uuid::Uuid::nil()).await, Err(LedgerError::UnknownRun(_))));
            node.state().await
        });
        assert_eq!(state, folded, "each node's state is the fold of the shared log");
    }
}

async fn a_tenant_registered_on_one_node_is_known_at_once_on_the_other(nodes: &[Arc<Ledger>; 2]) {
    nodes[0].record_authority(Principal::System, world(&["c1", "c9"])).await.unwrap();
    let answer = nodes[1].start(request("restore.execute", None)).await;
    assert!(
        matches!(answer, Ok(StartAnswer::Accepted(_))),
        "the second node must decide on the authority the first recorded: {answer:?}"
    );
    let run = answer.unwrap().run().id;
    nodes[0].begin(run).await.unwrap();
    nodes[1].complete(run, succeeded()).await.unwrap();
    assert!(matches!(
        nodes[1].start(request("no_such_type", None)).await,
        Err(LedgerError::Refused(CommandRefused::Start(StartRejected::UnknownOperationType(_))))
    ));
}

/// Each round, 2 × 8 starts race on the scope of connection `c1`: exactly
/// one is accepted, the rest are answered with that run; then it ends.
async fn at_most_one_accepted_run_per_scope_across_nodes(nodes: &[Arc<Ledger>; 2]) {
    for round in 0..SCOPE_RACE_ROUNDS {
        let mut tasks = Vec::new();
        for node in nodes {
            for _ in 0..STARTS_PER_NODE {
                let node = Arc::clone(node);
                tasks.push(tokio::spawn(async move { node.start(request("inventory_sync", Some("c1"))).await }));
            }
        }
        let mut accepted = Vec::new();
        let mut named = Vec::new();
        for task in tasks {
            match task.await.unwrap().unwrap() {
                StartAnswer::Accepted(run) => accepted.push(run.id),
                other => named.push(other.run().id),
            }
        }
        assert_eq!(accepted.len(), 1, "round {round}: exactly one accepted run");
        assert!(named.iter().all(|id| *id == accepted[0]), "round {round}: every other start names the accepted run");
        let run = accepted[0];
        nodes[round % 2].begin(run).await.unwrap();
        nodes[(round + 1) % 2].complete(run, succeeded()).await.unwrap();
    }
}

/// Clients per node in the load test, each on a scope of its own.
const LOADED_CLIENTS_PER_NODE: usize = 16;
/// Full cycles each loaded client runs.
const LOADED_CYCLES: usize = 15;

/// Under sustained load from both nodes, rounds keep losing the race for
/// the head to the other node; a round that lost decides again holding the
/// head, so no command is ever answered `Contended`.
#[test]
fn two_loaded_nodes_take_turns_and_never_answer_contended() {
    let cluster = postgres_cluster::Cluster::start(&[]);
    let url = cluster.database("loaded");
    let logs = [0, 1].map(|_| Arc::new(Log::open_postgres(&url, options()).unwrap()));
    let nodes = logs.clone().map(node_over);
    let scopes: Vec<String> = (0..2 * LOADED_CLIENTS_PER_NODE).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let rt = runtime();
    let completed = rt.block_on(async {
        nodes[0].record_authority(Principal::System, world(&names)).await.unwrap();
        let mut tasks = Vec::new();
        for (index, scope) in scopes.iter().enumerate() {
            let node = Arc::clone(&nodes[index % 2]);
            let scope = scope.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..LOADED_CYCLES {
                    let run = match node.start(request("inventory_sync", Some(&scope))).await {
                        Ok(StartAnswer::Accepted(run)) => run.id,
                        other => panic!("a start on a scope of its own: {other:?}"),
                    };
                    node.begin(run).await.unwrap();
                    node.complete(run, succeeded()).await.unwrap();
                }
                LOADED_CYCLES
            }));
        }
        let mut completed = 0;
        for task in tasks {
            completed += task.await.unwrap();
        }
        completed
    });
    assert_eq!(completed, 2 * LOADED_CLIENTS_PER_NODE * LOADED_CYCLES);
    // A round that lost the race retries holding the head, and while the
    // nodes keep colliding the next rounds hold from their first attempt:
    // more holds than lost races.
    let lost: u64 = logs.iter().map(|log| log.stats().appends_conflicted).sum();
    let held: u64 = logs.iter().map(|log| log.stats().heads_held).sum();
    assert!(lost > 0, "two loaded nodes collided at least once");
    assert!(held > lost, "colliding nodes hold from the first attempt: {held} holds for {lost} lost races");
    let log = Log::open_postgres(&url, options()).unwrap();
    let mut replay = DecisionReplay::new();
    let report = verify(&log, None, &mut replay, &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_failure);
}

/// The text of the log's read of events (`log/postgres/reads.rs`).
const EVENTS_READ: &str = "WHERE position >= $1 AND position < $2";

/// A node whose reads of the log fail while it folds another node's
/// events (the database restarting or failing over) answers the command
/// with the error and keeps taking commands: it does not stop, which
/// would close its store for a reopen.
#[test]
fn a_fold_that_cannot_read_the_log_fails_the_command_without_stopping_the_ledger() {
    let cluster = postgres_cluster::Cluster::start(&[]);
    let url = cluster.database("ledger");
    let proxy = crate::tcp_proxy::Proxy::start(cluster.port);
    let (cut_off, other) = (node(&proxy.url("ledger")), node(&url));
    let rt = runtime();
    rt.block_on(async {
        other.record_authority(Principal::System, world(&["c1"])).await.unwrap();
        proxy.cut_queries(Some(EVENTS_READ));
        let failed = cut_off.start(request("restore.execute", None)).await;
        assert!(matches!(failed, Err(LedgerError::Log(Error::Unavailable(_)))), "{failed:?}");
        assert!(proxy.cuts() >= 1, "the fold's read was cut");
        assert_eq!(cut_off.stopped(), None, "a failed read does not stop the ledger");
        proxy.cut_queries(None);
        let answer = cut_off.start(request("restore.execute", None)).await;
        assert!(matches!(answer, Ok(StartAnswer::Accepted(_))), "the next round folds and decides: {answer:?}");
    });
}

/// Every connection a node keeps open dies while it is idle (the
/// database restarted or failed over, unnoticed until used; here the proxy
/// cuts each at its next message): the node's next command is answered as
/// if nothing happened, its reads and its append sent again on new
/// connections.
#[test]
fn a_node_whose_connections_died_while_idle_answers_its_next_command() {
    let cluster = postgres_cluster::Cluster::start(&[]);
    cluster.database("ledger");
    let proxy = crate::tcp_proxy::Proxy::start(cluster.port);
    let node = node(&proxy.url("ledger"));
    let rt = runtime();
    rt.block_on(async {
        node.record_authority(Principal::System, world(&["c1"])).await.unwrap();
        for round in 0..3 {
            proxy.break_open_connections();
            let cuts = proxy.cuts();
            let answer = node.start(request("restore.execute", None)).await;
            assert!(answer.is_ok(), "round {round}: {answer:?}");
            assert!(proxy.cuts() > cuts, "round {round}: the node's connections were cut");
        }
        assert_eq!(node.stopped(), None);
    });
    let log = Log::open_postgres(&cluster.url("ledger"), options()).unwrap();
    let report = verify(&log, None, &mut DecisionReplay::new(), &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_failure);
}

/// The database loses commits a node already decided on (what a failover
/// to a standby that never had them does; here the rows are removed and
/// the head row set back): the node's next round finds the head behind its
/// state and stops the ledger instead of deciding on events nobody else
/// can read.
#[test]
fn a_database_head_behind_the_node_stops_its_ledger() {
    let cluster = postgres_cluster::Cluster::start(&[]);
    let url = cluster.database("rewound");
    let node = node(&url);
    let rt = runtime();
    rt.block_on(async {
        node.record_authority(Principal::System, world(&["c1"])).await.unwrap();
    });
    cluster.psql_at(&url, &["CREATE TABLE saved_head AS SELECT * FROM opledger_log_head"]);
    let saved: u64 =
        String::from_utf8(cluster.psql_at(&url, &["SELECT position FROM saved_head"])).unwrap().trim().parse().unwrap();
    rt.block_on(async {
        let started = node.start(request("inventory_sync", Some("c1"))).await;
        assert!(matches!(started, Ok(StartAnswer::Accepted(_))), "{started:?}");
    });
    cluster.psql_at(
        &url,
        &[
            &format!("DELETE FROM opledger_log_events WHERE position > {saved}"),
            "UPDATE opledger_log_head h SET position = s.position, hash = s.hash, \
             recorded_at_micros = s.recorded_at_micros FROM saved_head s",
        ],
    );
    let answer = rt.block_on(node.start(request("restore.execute", None)));
    assert!(matches!(answer, Err(LedgerError::Stopped(_))), "{answer:?}");
    let why = node.stopped().expect("the ledger stopped");
    assert!(why.contains("behind what this node decided on"), "{why}");
}

/// Nodes started while another node runs cycles without pause: each opens
/// (the log's checks, the fold to the head), and its first command folds
/// what the busy node appended meanwhile.
#[test]
fn a_node_starts_while_another_runs_cycles() {
    let cluster = postgres_cluster::Cluster::start(&[]);
    let url = cluster.database("busy_ledger");
    let busy = node(&url);
    let rt = runtime();
    rt.block_on(busy.record_authority(Principal::System, world(&["c1"]))).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cycles = {
        let (busy, stop) = (Arc::clone(&busy), Arc::clone(&stop));
        rt.spawn(async move {
            let mut completed = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let run = busy.start(request("restore.execute", None)).await.unwrap().run().id;
                busy.begin(run).await.unwrap();
                busy.complete(run, succeeded()).await.unwrap();
                completed += 1;
            }
            completed
        })
    };
    for _ in 0..NODE_STARTS_UNDER_LOAD {
        let log = Log::open_postgres(&url, options())
            .unwrap_or_else(|error| panic!("a node's log did not open under load: {error:?}"));
        let started = Ledger::over(Arc::new(log), Arc::new(Utc::now))
            .unwrap_or_else(|error| panic!("a node did not start under load: {error:?}"));
        let answer = rt.block_on(started.begin(uuid::Uuid::nil()));
        assert!(matches!(answer, Err(LedgerError::UnknownRun(_))), "{answer:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let completed = rt.block_on(cycles).unwrap();
    assert!(completed > 0, "the busy node ran cycles meanwhile");
    let log = Log::open_postgres(&url, options()).unwrap();
    let report = verify(&log, None, &mut DecisionReplay::new(), &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_failure);
}

/// Nodes the test above starts while the other runs cycles.
const NODE_STARTS_UNDER_LOAD: usize = 10;
