//! A log database that is up but refuses writes, for real (found from
//! outside first: every write failed while `/readyz` said ready).
//!
//! Read-only (`default_transaction_read_only`, as a standby refuses
//! writes): an append is refused with [`Error::WritesRefused`] naming
//! 25006, nothing of it is stored, and the log says it refuses writes;
//! once the database takes writes again the next append commits.
//!
//! A full disk: the log's database in a
//! tablespace on a small tmpfs (mounting needs root; elsewhere the test
//! says why it is skipped and returns), while the cluster's WAL stays on
//! the ordinary disk, so PostgreSQL keeps running and refuses each insert
//! that needs a new page (`could not extend file`, SQLSTATE 53100).
//! Appends until one is refused, then: the refusal is
//! [`Error::WritesRefused`] naming the database's words, nothing of it
//! is stored, the log says it refuses writes ([`Log::writes_refused`]);
//! once space is freed the next append commits, the log no longer says
//! so, and the chain verifies with every acknowledged event in it.

use std::process::Command;

use crate::envelope::NewEvent;
use crate::error::Error;
use crate::log::conformance::{assert_verifies, event, options, stream};
use crate::log::{Expectations, Log};
use crate::postgres_cluster::Cluster;
use crate::tmpfs::Tmpfs;

/// The tmpfs the tablespace is on: a few hundred of the appends below.
const TMPFS_SIZE: &str = "12m";
/// Written into the tmpfs before the database is made, removed to free
/// space: "the cause is gone".
const FILLER_BYTES: usize = 4 << 20;
/// Random payload bytes per event (as hex, so PostgreSQL cannot compress
/// them away): well under the log's 64 KiB event bound.
const PAYLOAD_RANDOM_BYTES: usize = 12 * 1024;
/// More appends than the tmpfs can hold: the database must refuse before.
const APPENDS_MAX: usize = 2_000;

/// SplitMix64: bytes no compressor shrinks, without a random number crate.
fn random_hex(seed: u64, bytes: usize) -> String {
    let mut state = seed;
    (0..bytes / 8)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            format!("{:016x}", z ^ (z >> 31))
        })
        .collect()
}

fn big_event(n: usize) -> NewEvent {
    let random = random_hex(n as u64, PAYLOAD_RANDOM_BYTES);
    NewEvent::new(stream(&format!("filler-{n}")), "thing_happened", 1, &serde_json::json!({ "n": n, "blob": random }))
        .unwrap()
}

#[test]
fn a_database_out_of_space_refuses_appends_storing_nothing_and_takes_them_again_once_space_is_freed() {
    // Declared first: dropped last, after the cluster that uses it stopped.
    let Some(tmpfs) = Tmpfs::with_filler(TMPFS_SIZE, FILLER_BYTES) else { return };
    let tablespace = tmpfs.mount.join("tablespace");
    std::fs::create_dir(&tablespace).unwrap();
    let chowned = Command::new("chown").arg("postgres").arg(&tablespace).status().unwrap();
    assert!(chowned.success(), "chown postgres {}", tablespace.display());
    let cluster = Cluster::start(&[]);
    cluster.psql(&format!("CREATE TABLESPACE small LOCATION '{}'", tablespace.display()));
    cluster.psql("CREATE DATABASE full_disk TABLESPACE small");
    let log = Log::open_postgres(&cluster.url("full_disk"), options()).unwrap();

    let mut acknowledged = 0_u64;
    let refusal = loop {
        assert!(
            (acknowledged as usize) < APPENDS_MAX,
            "the database took {APPENDS_MAX} appends on a {TMPFS_SIZE} disk"
        );
        let attempt = big_event(acknowledged as usize);
        match log.append_blocking(vec![attempt.clone()], Expectations::none()) {
            Ok(Ok(_)) => acknowledged += 1,
            Ok(Err(conflict)) => panic!("no expectation was given, yet: {conflict:?}"),
            Err(error) => break (error, attempt),
        }
    };
    let (error, refused) = refusal;
    eprintln!("disk full: {acknowledged} appends acknowledged, then: {error}");
    let Error::WritesRefused(why) = &error else { panic!("a full disk is not a storage failure: {error:?}") };
    assert!(why.contains("53100") && why.contains("No space left on device"), "{why}");
    assert_eq!(log.writes_refused().as_deref(), Some(why.as_str()), "the log says it refuses writes, and why");
    assert_eq!(log.head().position, acknowledged, "nothing of the refused append is in the log");
    assert!(log.read(acknowledged + 1, 1).unwrap().is_empty(), "nothing past the head");
    assert!(log.read_stream(&refused.stream, 1, 1).unwrap().is_empty(), "the refused event is not stored");

    std::fs::remove_file(tmpfs.filler()).unwrap();
    let appended = log.append_blocking(vec![event("after", 1)], Expectations::none()).unwrap().unwrap();
    assert_eq!(appended.first_position, acknowledged + 1, "gapless after the refusal");
    assert_eq!(log.writes_refused(), None, "a commit ends the refusal");
    assert_eq!(log.read(1, APPENDS_MAX + 1).unwrap().len() as u64, acknowledged + 1, "every acknowledged event");
    assert_verifies(&log);
    drop(log);
    drop(cluster);
    drop(tmpfs);
}

#[test]
fn a_read_only_database_refuses_appends_storing_nothing_and_takes_them_once_writable_again() {
    let cluster = Cluster::start(&[]);
    let log = Log::open_postgres(&cluster.database("read_only"), options()).unwrap();
    log.append_blocking(vec![event("before", 1)], Expectations::none()).unwrap().unwrap();
    cluster.reload_setting("default_transaction_read_only", Some("on"));

    let refused = event("refused", 1);
    let error = log.append_blocking(vec![refused.clone()], Expectations::none()).unwrap_err();
    let Error::WritesRefused(why) = &error else { panic!("a read-only database is not a storage failure: {error:?}") };
    assert!(why.contains("read-only transaction") && why.contains("25006"), "{why}");
    assert_eq!(log.writes_refused().as_deref(), Some(why.as_str()), "the log says it refuses writes, and why");
    assert_eq!(log.head().position, 1, "nothing of the refused append is in the log");
    assert!(log.read_stream(&refused.stream, 1, 1).unwrap().is_empty(), "the refused event is not stored");

    cluster.reload_setting("default_transaction_read_only", None);
    let appended = log.append_blocking(vec![refused], Expectations::none()).unwrap().unwrap();
    assert_eq!(appended.first_position, 2, "gapless after the refusal");
    assert_eq!(log.writes_refused(), None, "a commit ends the refusal");
    assert_verifies(&log);
}

/// Events the read below sorts: far more bytes than its `work_mem`.
const SORTED_EVENTS: u64 = 2_000;

/// A read the database lacks a resource for (SQLSTATE class 53, here
/// `temp_file_limit`'s 53400: the database made to sort the log's rows in
/// a temporary file past its bound) is the database unable to serve that
/// read now, `Unavailable` in its words, never a refused write: nothing
/// was written, and the next append commits.
#[test]
fn a_read_the_database_lacks_a_resource_for_is_unavailable_not_a_refused_write() {
    let cluster = crate::postgres_cluster::Cluster::shared();
    let database = cluster.fresh_database();
    let log = Log::open_postgres(&cluster.url(&database), options()).unwrap();
    for first in (1..=SORTED_EVENTS).step_by(100) {
        let group = (first..first + 100).map(|n| event("sorted", n)).collect();
        log.append_blocking(group, Expectations::none()).unwrap().unwrap();
    }
    // For the connections made from now on: the log's read connections
    // are made at their first read.
    for setting in
        ["enable_indexscan = off", "enable_bitmapscan = off", "work_mem = '64kB'", "temp_file_limit = '64kB'"]
    {
        cluster.psql(&format!("ALTER DATABASE {database} SET {setting}"));
    }

    let error = log.read(1, SORTED_EVENTS as usize).unwrap_err();
    let Error::Unavailable(why) = &error else { panic!("a read out of a resource is not {error:?}") };
    assert!(why.contains("temp_file_limit") && why.contains("53400"), "in the database's words: {why}");
    assert!(error.to_string().contains("out of a resource this read needs"), "{error}");
    assert_eq!(log.writes_refused(), None, "a refused read says nothing of writes");
    let appended = log.append_blocking(vec![event("after", 1)], Expectations::none()).unwrap().unwrap();
    assert_eq!(appended.first_position, SORTED_EVENTS + 1, "writes are taken");
    log.close();
    // An open reads the log's tail in one sort too.
    let error = Log::open_postgres(&cluster.url(&database), options()).err().unwrap();
    assert!(matches!(&error, Error::Unavailable(why) if why.contains("53400")), "opening: {error:?}");
    cluster.drop_database(&database);
}
