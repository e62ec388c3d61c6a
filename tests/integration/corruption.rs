//! Damaged and tampered stores: the log must fail closed. It may refuse to
//! open, or open and have `verify` report the damage, but it must never serve
//! an event that differs from the one written while claiming all is well,
//! and never silently end before an acknowledged head.

use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use opledger::envelope::canonical_json;
use opledger::{Envelope, Error, Expectations, Hash, Head, Log, NewEvent, StreamId};

use crate::support::{append_sample, copy_dir, event, options, panic_message, read_from, verify_log, write_sample_log};

/// Events past this many before the head are not re-checked on open
/// (`OPEN_TAIL_CHECK_EVENTS` is 1024): tampering before it is left to `verify`.
const LONG_LOG_EVENTS: u64 = 1300;
const TAMPERED_POSITION: u64 = 100;
/// The damaged log: long enough for sled to use several segments and for
/// the open's tail check not to reach its start; the last events are written
/// after a reopen, so they lie past sled's snapshot.
const FLIP_LOG_EVENTS: u64 = 2400;
const FLIP_LOG_TAIL_EVENTS: u64 = 200;

// ---------------------------------------------------------------------------
// Flipped bytes in sled's files.

enum Outcome {
    OpenError(String),
    OpenPanic(String),
    VerifyFailure(String),
    VerifyError(String),
    VerifyPanic(String),
    /// `verify` passed but reading the events back failed: still fail-closed.
    ReadError(String),
    /// Everything read back is byte-identical and the head is unchanged.
    Harmless,
    /// Success claimed with different events or an earlier head.
    Violation(String),
}

impl Outcome {
    fn describe(&self) -> String {
        match self {
            Outcome::OpenError(text) => format!("open error: {text}"),
            Outcome::OpenPanic(text) => format!("open panicked (sled): {text}"),
            Outcome::VerifyFailure(text) => format!("verify failure: {text}"),
            Outcome::VerifyError(text) => format!("verify error: {text}"),
            Outcome::VerifyPanic(text) => format!("verify panicked (sled): {text}"),
            Outcome::ReadError(text) => format!("verified, read error: {text}"),
            Outcome::Harmless => "harmless: every event and the head read back unchanged".to_owned(),
            Outcome::Violation(text) => format!("VIOLATION: {text}"),
        }
    }
}

/// Opens a damaged copy and classifies what the log made of it.
fn classify(dir: &Path, original: &[Envelope], head: Head) -> Outcome {
    let log = match catch_unwind(AssertUnwindSafe(|| Log::open(dir, options(opledger::Durability::Flush)))) {
        Err(payload) => return Outcome::OpenPanic(panic_message(payload.as_ref())),
        Ok(Err(error)) => return Outcome::OpenError(error.to_string()),
        Ok(Ok(log)) => log,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let found = log.head();
        if found != head {
            return Outcome::Violation(format!("opened with head {} instead of {}", found.digest(), head.digest()));
        }
        match verify_log(&log, None) {
            Err(error) => return Outcome::VerifyError(error.to_string()),
            Ok(report) => {
                if let Some(failure) = report.first_failure {
                    return Outcome::VerifyFailure(format!("position {}: {}", failure.position, failure.detail));
                }
            }
        }
        let events = match read_from(&log, 1) {
            Ok(events) => events,
            Err(error) => return Outcome::ReadError(error.to_string()),
        };
        if events.len() != original.len() {
            return Outcome::Violation(format!("verified, then read {} of {} events", events.len(), original.len()));
        }
        for (read, written) in events.iter().zip(original) {
            if read.encode() != written.encode() {
                return Outcome::Violation(format!("verified, then served a different event at {}", read.position));
            }
        }
        Outcome::Harmless
    }));
    let outcome = outcome.unwrap_or_else(|payload| Outcome::VerifyPanic(panic_message(payload.as_ref())));
    drop(catch_unwind(AssertUnwindSafe(move || drop(log))));
    outcome
}

/// `count` offsets spread over `0..len`, each nudged off the even grid.
fn spread(len: u64, count: u64) -> Vec<u64> {
    if len == 0 {
        return Vec::new();
    }
    let step = (len / count).max(1);
    let mut offsets: Vec<u64> = (0..count).map(|i| (i * step + (i * 7919) % step).min(len - 1)).collect();
    offsets.dedup();
    offsets
}

/// `count` offsets of non-zero bytes (where the data is), spread over them.
fn spread_over_data(bytes: &[u8], count: u64) -> Vec<u64> {
    let data: Vec<u64> = (0..bytes.len() as u64).filter(|at| bytes[*at as usize] != 0).collect();
    spread(data.len() as u64, count).into_iter().map(|i| data[i as usize]).collect()
}

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    open_error: usize,
    open_corrupt: usize,
    open_panic: usize,
    verify_failure: usize,
    verify_error: usize,
    verify_panic: usize,
    read_error: usize,
    harmless: usize,
    /// Refused opens after which the store files on disk were no longer the damaged copy.
    refused_open_rewrote_store: usize,
    /// Refused opens after which undoing the flip gives back the whole log.
    repairable_after_refused_open: usize,
    violations: Vec<String>,
}

impl Tally {
    fn add(&mut self, case: &str, outcome: &Outcome) {
        self.cases += 1;
        match outcome {
            Outcome::OpenError(text) => {
                self.open_error += 1;
                self.open_corrupt += usize::from(text.starts_with("log corrupt"));
            }
            Outcome::OpenPanic(_) => self.open_panic += 1,
            Outcome::VerifyFailure(_) => self.verify_failure += 1,
            Outcome::VerifyError(_) => self.verify_error += 1,
            Outcome::VerifyPanic(_) => self.verify_panic += 1,
            Outcome::ReadError(_) => self.read_error += 1,
            Outcome::Harmless => self.harmless += 1,
            Outcome::Violation(text) => self.violations.push(format!("{case}: {text}")),
        }
    }
}

fn store_files(store: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(store)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file() && path.file_name().is_some_and(|name| name != "conf"))
        .collect();
    files.sort();
    files
}

/// Every regular file under `dir` with its bytes, by path relative to `dir`.
fn file_contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn flipped_bytes_in_the_store_are_never_served_as_good() {
    let original_dir = tempfile::tempdir().unwrap();
    // Reopening makes sled write a snapshot of the first part; the rest is only in the log.
    write_sample_log(original_dir.path(), FLIP_LOG_EVENTS - FLIP_LOG_TAIL_EVENTS);
    let (original, head) = append_sample(original_dir.path(), FLIP_LOG_TAIL_EVENTS);
    let store = original_dir.path().join("store");
    let files = store_files(&store);
    assert!(files.iter().any(|path| path.ends_with("db")), "no sled db file in {files:?}");

    let mut tally = Tally::default();
    let mut snapshot_cases = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(file).unwrap();
        let mut offsets = if name == "db" {
            let mut offsets = spread(bytes.len() as u64, 40);
            offsets.extend(spread_over_data(&bytes, 40));
            offsets
        } else {
            spread(bytes.len() as u64, 12)
        };
        offsets.sort_unstable();
        offsets.dedup();
        for offset in offsets {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(original_dir.path(), copy.path());
            let path = copy.path().join("store").join(&name);
            let was = bytes[offset as usize];
            flip(&path, offset, was ^ 0xff);
            let damaged = file_contents(&copy.path().join("store"));
            let case = format!("{name}@{offset} (0x{was:02x}, {} bytes)", bytes.len());
            let outcome = classify(copy.path(), &original, head);
            let mut note = String::new();
            if matches!(outcome, Outcome::OpenError(_) | Outcome::OpenPanic(_)) {
                let rewritten = file_contents(&copy.path().join("store")) != damaged;
                tally.refused_open_rewrote_store += usize::from(rewritten);
                // Undo the flip: is the log whole again, or did the refused open destroy it?
                if path.exists() {
                    flip(&path, offset, was);
                }
                let after_repair = classify(copy.path(), &original, head);
                let repaired = matches!(after_repair, Outcome::Harmless);
                tally.repairable_after_refused_open += usize::from(repaired);
                note = format!(
                    " [store rewritten by the refused open: {rewritten}; flip undone: {}]",
                    after_repair.describe()
                );
            }
            eprintln!("{case}: {}{note}", outcome.describe());
            tally.add(&case, &outcome);
            snapshot_cases += usize::from(name.starts_with("snap."));
        }
    }
    eprintln!(
        "corruption test: files={:?} cases={} snapshot_cases={} detected_by_open={} (errors={} of which corrupt={}, \
         sled panics={}) detected_by_verify={} (failures={} errors={} panics={}) detected_by_read={} harmless={} \
         violations={} refused_open_rewrote_store={} repairable_after_refused_open={}",
        files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect::<Vec<_>>(),
        tally.cases,
        snapshot_cases,
        tally.open_error + tally.open_panic,
        tally.open_error,
        tally.open_corrupt,
        tally.open_panic,
        tally.verify_failure + tally.verify_error + tally.verify_panic,
        tally.verify_failure,
        tally.verify_error,
        tally.verify_panic,
        tally.read_error,
        tally.harmless,
        tally.violations.len(),
        tally.refused_open_rewrote_store,
        tally.repairable_after_refused_open,
    );
    assert!(tally.violations.is_empty(), "damage served as good: {:#?}", tally.violations);
    assert!(tally.cases >= 40);
}

fn flip(path: &Path, offset: u64, value: u8) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&[value], offset).unwrap();
}

// ---------------------------------------------------------------------------
// Tampering through sled's own API, which keeps sled's checksums valid.

fn event_key(position: u64) -> Vec<u8> {
    let mut key = vec![b'e'];
    key.extend_from_slice(&position.to_be_bytes());
    key
}

fn stream_key(stream: &StreamId, version: u64) -> Vec<u8> {
    let mut key = vec![b's'];
    key.extend_from_slice(stream.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn id_key(id: &uuid::Uuid) -> Vec<u8> {
    let mut key = vec![b'i'];
    key.extend_from_slice(id.as_bytes());
    key
}

fn head_value(head: Head) -> Vec<u8> {
    let mut value = head.position.to_be_bytes().to_vec();
    value.extend_from_slice(&head.hash.0);
    value
}

/// The store under a closed log, through sled's own API. sled's background
/// threads let go of its file lock a moment after the log closes (the log's
/// own open waits for that too), so a locked store is tried again, boundedly.
fn open_store(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + opledger::limits::STORE_LOCK_RELEASE_WAIT;
    loop {
        match sled::open(dir.join("store")) {
            Ok(db) => return db,
            Err(sled::Error::Io(io))
                if io.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => panic!("opening the store with sled: {error}"),
        }
    }
}

fn stored_event(db: &sled::Db, position: u64) -> Envelope {
    Envelope::decode(position, &db.get(event_key(position)).unwrap().unwrap()).unwrap()
}

/// Seals `event` again at its position, with `payload` (or its own) and chained to `previous`.
fn reseal(event: &Envelope, payload: Option<&serde_json::Value>, previous: Hash) -> (Envelope, Vec<u8>) {
    let new_event = NewEvent {
        event_id: event.id,
        stream: event.stream.clone(),
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        causation_id: event.causation_id,
        correlation_id: event.correlation_id,
        payload: match payload {
            Some(value) => canonical_json(value).unwrap(),
            None => event.payload.clone(),
        },
    };
    Envelope::seal(&new_event, event.position, event.stream_version, event.recorded_at, previous).unwrap()
}

/// Replaces the payload of the event at `position` with a validly sealed
/// record (same position, version and previous hash). Returns the new event.
fn tamper_one(db: &sled::Db, position: u64) -> Envelope {
    let original = stored_event(db, position);
    let (forged, record) = reseal(&original, Some(&serde_json::json!({ "tampered": true })), original.previous_hash);
    assert_ne!(forged.hash, original.hash);
    // On its own the forged record is flawless.
    assert_eq!(Envelope::decode(position, &record).unwrap().encode(), record);
    db.insert(event_key(position), record).unwrap();
    forged
}

fn expect_corrupt_open(dir: &Path) -> (u64, String) {
    match Log::open(dir, options(opledger::Durability::Flush)) {
        Err(Error::Corrupt { position, detail }) => (position, detail),
        Err(other) => panic!("open failed, but not as corrupt: {other}"),
        Ok(log) => panic!("a tampered log opened with head {}", log.head().digest()),
    }
}

#[test]
fn a_forged_record_breaks_the_chain_at_the_next_position() {
    let dir = tempfile::tempdir().unwrap();
    let (original, head) = write_sample_log(dir.path(), LONG_LOG_EVENTS);
    let tail_position = head.position - 10;
    {
        let db = open_store(dir.path());
        tamper_one(&db, TAMPERED_POSITION);
        db.flush().unwrap();
    }

    // Far behind the head, open's tail check does not reach it: verify must.
    let log = Log::open(dir.path(), options(opledger::Durability::Flush)).unwrap();
    assert_eq!(log.head(), head);
    let report = verify_log(&log, None).unwrap();
    let failure = report.first_failure.expect("verify passed a forged record");
    assert_eq!(failure.position, TAMPERED_POSITION + 1, "{}", failure.detail);
    assert_eq!(report.events_checked, TAMPERED_POSITION);
    // Reading across the forged record fails closed too.
    match log.read(TAMPERED_POSITION - 1, 10) {
        Err(Error::Corrupt { position, .. }) => assert_eq!(position, TAMPERED_POSITION + 1),
        other => panic!("read across a forged record: {other:?}"),
    }
    let untouched = log.read(1, usize::try_from(TAMPERED_POSITION).unwrap() - 1).unwrap();
    assert!(untouched.iter().zip(&original).all(|(read, written)| read.encode() == written.encode()));
    log.close();
    drop(log);

    // Near the head, open itself refuses.
    {
        let db = open_store(dir.path());
        let original_record = original[usize::try_from(TAMPERED_POSITION - 1).unwrap()].encode();
        db.insert(event_key(TAMPERED_POSITION), original_record).unwrap();
        tamper_one(&db, tail_position);
        db.flush().unwrap();
    }
    let (position, detail) = expect_corrupt_open(dir.path());
    assert_eq!(position, tail_position + 1, "{detail}");
}

#[test]
fn a_consistently_rewritten_chain_is_caught_by_the_witness_and_the_exported_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (_, head) = write_sample_log(dir.path(), LONG_LOG_EVENTS);
    let exported = Head::parse_digest(&head.digest()).unwrap();
    {
        let db = open_store(dir.path());
        let mut previous = tamper_one(&db, TAMPERED_POSITION).hash;
        for position in TAMPERED_POSITION + 1..=head.position {
            let (resealed, record) = reseal(&stored_event(&db, position), None, previous);
            db.insert(event_key(position), record).unwrap();
            previous = resealed.hash;
        }
        db.insert(b"h", head_value(Head { position: head.position, hash: previous })).unwrap();
        db.flush().unwrap();
    }

    // The chain and the stored head agree, but the witness remembers the real head.
    let (position, detail) = expect_corrupt_open(dir.path());
    assert_eq!(position, head.position, "{detail}");

    // An attacker who also deletes the witness gets the log open and verifying...
    std::fs::remove_file(dir.path().join("head.witness")).unwrap();
    let log = Log::open(dir.path(), options(opledger::Durability::Flush)).unwrap();
    assert_eq!(log.head().position, head.position);
    assert_ne!(log.head().hash, head.hash);
    let report = verify_log(&log, None).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_failure);
    assert_eq!(report.events_checked, head.position);
    let forged = log.event(TAMPERED_POSITION).unwrap().unwrap();
    assert_eq!(forged.payload.get(), r#"{"tampered":true}"#);
    // ...but not past a head digest exported before the tampering.
    let report = verify_log(&log, Some(exported)).unwrap();
    let failure = report.first_failure.expect("verify passed a rewritten log against the exported head");
    assert_eq!(failure.position, exported.position, "{}", failure.detail);
    log.close();
}

#[test]
fn removing_acknowledged_events_fails_the_open() {
    const REMOVED: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let (original, head) = write_sample_log(dir.path(), 300);
    let new_head = head.position - REMOVED;
    {
        let db = open_store(dir.path());
        for position in new_head + 1..=head.position {
            let event = stored_event(&db, position);
            db.remove(event_key(position)).unwrap().unwrap();
            db.remove(stream_key(&event.stream, event.stream_version)).unwrap().unwrap();
            db.remove(id_key(&event.id)).unwrap().unwrap();
        }
        let last = &original[usize::try_from(new_head - 1).unwrap()];
        db.insert(b"h", head_value(Head { position: new_head, hash: last.hash })).unwrap();
        db.flush().unwrap();
    }
    let (position, detail) = expect_corrupt_open(dir.path());
    assert_eq!(position, new_head + 1, "{detail}");

    // Without the witness the shorter log is consistent; the exported digest still catches it.
    std::fs::remove_file(dir.path().join("head.witness")).unwrap();
    let log = Log::open(dir.path(), options(opledger::Durability::Flush)).unwrap();
    assert_eq!(log.head().position, new_head);
    assert!(verify_log(&log, None).unwrap().is_ok());
    let failure = verify_log(&log, Some(head)).unwrap().first_failure.expect("the truncation went unnoticed");
    assert_eq!(failure.position, head.position, "{}", failure.detail);
    log.close();
}

// ---------------------------------------------------------------------------
// Appends refused up front leave the log as it was.

#[test]
fn invalid_appends_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, head) = write_sample_log(dir.path(), 20);
    let log = Log::open(dir.path(), options(opledger::Durability::Flush)).unwrap();
    assert_eq!(log.head(), head);

    let refused = |events: Vec<NewEvent>| {
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
        let result = log.append_blocking(events, Expectations::none());
        assert_eq!(log.head(), head, "a refused append moved the head ({result:?})");
        for id in &ids {
            // An id already in the log before the append is where it was.
            let position = log.position_of(id).unwrap();
            assert!(position.is_none_or(|p| p <= head.position), "{id} at {position:?}");
        }
        result
    };

    assert!(matches!(refused(Vec::new()), Err(Error::InvalidEvent(_))));

    let one = event("invalid-1", &serde_json::json!({ "n": 1 }));
    let mut twin = event("invalid-2", &serde_json::json!({ "n": 2 }));
    twin.event_id = one.event_id;
    assert!(matches!(refused(vec![one, twin]), Err(Error::InvalidEvent(_))));

    let big = serde_json::json!({ "big": "x".repeat(64 * 1024) });
    assert!(matches!(refused(vec![event("invalid-1", &big)]), Err(Error::InvalidEvent(_))));
    // Atomic: a valid event before an oversized one is not appended either.
    let valid = event("invalid-1", &serde_json::json!({ "n": 3 }));
    let valid_id = valid.event_id;
    assert!(matches!(refused(vec![valid, event("invalid-2", &big)]), Err(Error::InvalidEvent(_))));
    assert_eq!(log.position_of(&valid_id).unwrap(), None);

    let too_many: Vec<NewEvent> =
        (0..=opledger::limits::APPEND_EVENTS_MAX).map(|n| event("invalid-1", &serde_json::json!({ "n": n }))).collect();
    assert!(matches!(refused(too_many), Err(Error::InvalidEvent(_))));

    // Reusing an id already in the log, in a different append.
    let existing = log.event(3).unwrap().unwrap();
    let mut reused = event("invalid-1", &serde_json::json!({ "n": 4 }));
    reused.event_id = existing.id;
    let fresh = event("invalid-1", &serde_json::json!({ "n": 5 }));
    let fresh_id = fresh.event_id;
    assert!(matches!(refused(vec![fresh, reused]), Err(Error::EventIdReused { .. })));
    assert_eq!(log.position_of(&fresh_id).unwrap(), None);
    assert_eq!(log.stream_version(&StreamId::new("invalid-1").unwrap()).unwrap(), 0);

    // The writer is still up and the log still verifies.
    let appended = log
        .append_blocking(vec![event("invalid-1", &serde_json::json!({ "n": 6 }))], Expectations::none())
        .unwrap()
        .unwrap();
    assert_eq!(appended.first_position, head.position + 1);
    let report = verify_log(&log, Some(head)).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_failure);
    log.close();
}

/// A kill while sled writes its snapshot leaves `snap.<lsn>.generating`;
/// sled 0.34.7 would take it for the newest snapshot and refuse to open
/// (sled issue 1527). The log removes it and opens.
#[test]
fn an_unfinished_sled_snapshot_left_by_a_kill_does_not_stop_the_log_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let log = opledger::Log::open(dir.path(), opledger::LogOptions::default()).unwrap();
        for n in 0..10u64 {
            let event =
                opledger::NewEvent::new(opledger::StreamId::new("s").unwrap(), "e", 1, &serde_json::json!(n)).unwrap();
            log.append_blocking(vec![event], opledger::Expectations::none()).unwrap().unwrap();
        }
        let head = log.head();
        log.close();
        head
    };
    std::fs::write(dir.path().join("store/snap.FFFFFFFFFFFFFFFF.generating"), b"").unwrap();
    let log = opledger::Log::open(dir.path(), opledger::LogOptions::default()).unwrap();
    assert_eq!(log.head(), head);
    assert!(!dir.path().join("store/snap.FFFFFFFFFFFFFFFF.generating").exists());
}
