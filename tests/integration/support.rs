//! Helpers shared by the integration tests.

use std::path::Path;

use opledger::limits::READ_PAGE_EVENTS_MAX;
use opledger::verify::{verify, VerifyReport};
use opledger::{Durability, Envelope, Error, Expectations, Head, Log, LogOptions, NewEvent, StreamId};

/// Options with the given durability and a small page cache.
pub fn options(durability: Durability) -> LogOptions {
    LogOptions { durability, cache_capacity_bytes: 8 * 1024 * 1024, ..Default::default() }
}

pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

pub fn event(stream_name: &str, payload: &serde_json::Value) -> NewEvent {
    NewEvent::new(stream(stream_name), "test_event", 1, payload).unwrap()
}

/// The observer that accepts every event.
pub fn accept_all(_: &Envelope) -> Result<(), String> {
    Ok(())
}

/// Walks the whole log, optionally against an exported head.
pub fn verify_log(log: &Log, expected: Option<Head>) -> Result<VerifyReport, Error> {
    verify(log, expected, &mut accept_all, &mut |_| {})
}

/// Every event of the log from `from` to its head, page by page.
pub fn read_from(log: &Log, from: u64) -> Result<Vec<Envelope>, Error> {
    let head = log.head().position;
    let mut out = Vec::new();
    let mut next = from.max(1);
    while next <= head {
        let page = log.read(next, READ_PAGE_EVENTS_MAX)?;
        let Some(last) = page.last() else { break };
        next = last.position + 1;
        out.extend(page);
    }
    Ok(out)
}

/// Writes `count` events (appends of 1 to 4 events over three streams,
/// submitted ahead so the writer group-commits them), closes the log and
/// returns every event and the head.
pub fn write_sample_log(dir: &Path, count: u64) -> (Vec<Envelope>, Head) {
    append_sample(dir, count)
}

/// Opens the log in `dir` (new or not), appends `count` more events as
/// [`write_sample_log`] does, closes it and returns every event and the head.
pub fn append_sample(dir: &Path, count: u64) -> (Vec<Envelope>, Head) {
    let log = Log::open(dir, options(Durability::Flush)).unwrap();
    let before = log.head().position;
    let mut pending = Vec::new();
    let mut written = 0u64;
    let mut append = before;
    while written < count {
        let size = (append % 4 + 1).min(count - written);
        let events = (0..size)
            .map(|index| {
                let name = format!("sample-{}", (append + index) % 3);
                let text = "x".repeat((append % 50) as usize);
                event(&name, &serde_json::json!({ "append": append, "index": index, "text": text }))
            })
            .collect();
        pending.push(log.submit_blocking(events, Expectations::none()).unwrap());
        written += size;
        append += 1;
    }
    for append in pending {
        append.wait_blocking().unwrap().unwrap();
    }
    let head = log.head();
    assert_eq!(head.position, before + count);
    let events = read_from(&log, 1).unwrap();
    assert_eq!(events.len() as u64, head.position);
    assert!(verify_log(&log, None).unwrap().is_ok());
    log.close();
    drop(log);
    (events, head)
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}
