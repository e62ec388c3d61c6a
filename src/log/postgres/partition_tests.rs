//! A database whose machine goes silent: packets to and from its port
//! dropped (`iptables`), no reset, as when the machine loses power or a
//! firewall forgets the connection. Found from outside first: the node's
//! connections waited on TCP's own bounds, so after a 30 s partition the
//! first write still took 24 s to be answered (the lane's connection
//! waited for TCP's next retransmission). Now a connection whose data
//! stays unacknowledged for `TCP_UNACKNOWLEDGED_WAIT_MAX` is ended: the
//! append is answered within that and the resolve wait, without an
//! acknowledgement, and appends commit again within seconds after the
//! partition, on new connections.
//!
//! Dropping packets needs `iptables` and the right to change the
//! machine's rules (root with `CAP_NET_ADMIN`); elsewhere the test says
//! why it cannot run, and returns. scripts/test installs `iptables`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::log::conformance::{assert_verifies, event, options};
use crate::log::postgres::TCP_UNACKNOWLEDGED_WAIT_MAX;
use crate::log::{Expectations, Log, LogOptions};
use crate::postgres_cluster::Cluster;

/// The resolve wait here: short, the database stays silent through it.
const RESOLVE_WAIT: Duration = Duration::from_secs(2);

/// Slack on top of the bounds, for a loaded machine.
const SLACK: Duration = Duration::from_secs(15);

/// Packets to and from one port dropped while it lives.
struct Partition {
    port: u16,
}

impl Partition {
    /// `None`, with the reason printed, when rules cannot be changed here.
    fn of(port: u16) -> Option<Partition> {
        let partition = Partition { port };
        for rule in partition.rules() {
            match Command::new("iptables").arg("-A").args(&rule).output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => {
                    eprintln!("skipped: iptables refused a rule: {}", String::from_utf8_lossy(&output.stderr));
                    return None;
                }
                Err(error) => {
                    eprintln!("skipped: no iptables here ({error}); scripts/test installs it");
                    return None;
                }
            }
        }
        Some(partition)
    }

    fn rules(&self) -> [Vec<String>; 2] {
        let port = self.port.to_string();
        let rule = |direction: &str| {
            ["INPUT", "-p", "tcp", direction, port.as_str(), "-j", "DROP"].map(str::to_owned).to_vec()
        };
        [rule("--dport"), rule("--sport")]
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for rule in self.rules() {
            let _ = Command::new("iptables").arg("-D").args(&rule).status();
        }
    }
}

#[test]
fn a_silent_database_is_found_within_seconds_and_appends_commit_again_soon_after() {
    let cluster = Cluster::start(&[]);
    let url = cluster.database("silent");
    let log =
        Arc::new(Log::open_postgres(&url, LogOptions { commit_resolve_wait: RESOLVE_WAIT, ..options() }).unwrap());
    log.append_blocking(vec![event("a", 1)], Expectations::none()).unwrap().unwrap();

    let Some(partition) = Partition::of(cluster.port) else { return };
    let started = Instant::now();
    let answer = {
        let log = Arc::clone(&log);
        let (sent, answered) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sent.send(log.append_blocking(vec![event("a", 2)], Expectations::none()));
        });
        answered.recv_timeout(TCP_UNACKNOWLEDGED_WAIT_MAX + RESOLVE_WAIT + SLACK).expect("answered within the bounds")
    };
    let took = started.elapsed();
    assert!(answer.is_err(), "nothing is acknowledged while the database is silent: {answer:?}");
    eprintln!("answered in {took:?}: {answer:?}");
    drop(partition);

    // An append sent on a connection that dies as the partition ends (the
    // keepalive's last probe unanswered) is sent once more on a new
    // connection, or, if that fails too, answered with an error,
    // appending nothing; the next one connects anew.
    let healed = Instant::now();
    let appended = loop {
        match log.append_blocking(vec![event("b", 1)], Expectations::none()) {
            Ok(answer) => break answer.unwrap(),
            Err(error) => {
                assert!(
                    healed.elapsed() < SLACK,
                    "no append committed {:?} after the partition: {error}",
                    healed.elapsed()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    eprintln!("committed {:?} after the partition", healed.elapsed());
    assert!(appended.first_position == 2 || appended.first_position == 3, "{appended:?}");
    assert_verifies(&log);
}
