//! `opledger import --data NEWDIR --input FILE`: restores an export of
//! `opledger export` into a new (or empty) data directory, or with
//! `--log postgres://…` into an empty log in a PostgreSQL database.
//!
//! Every event is appended in order with its own id, stream, type, schema
//! version, causation and correlation ids, payload bytes and recording
//! time; consecutive events recorded at the same time share an append (up
//! to the log's [`APPEND_EVENTS_MAX`]), and appends are pipelined so the
//! writer packs them into large group commits. Each append must follow the
//! head its first event's position names, so nothing can land anywhere
//! else. Then every imported event's hash is compared with the exported
//! hash (the canonical encoding makes equal hashes mean an identical log),
//! and the restored log is verified like `opledger verify` does.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use opledger::domain::replay::DecisionReplay;
use opledger::limits::{APPEND_EVENTS_MAX, READ_PAGE_EVENTS_MAX};
use opledger::verify::verify;
use opledger::{Envelope, Expectations, Hash, Head, Log, LogOptions, NewEvent, PendingAppend};

use super::source::{print_json, print_text};
use super::verify::progress_bar;

/// Longest input line accepted: an event is at most 64 KiB encoded, and its
/// JSON line adds only the envelope's fields around the payload.
pub const LINE_BYTES_MAX: usize = 1024 * 1024;
/// Appends handed to the writer and not yet acknowledged.
const IN_FLIGHT_APPENDS_MAX: usize = 64;
/// Inputs smaller than this import without a progress bar.
const BAR_BYTES_MIN: u64 = 64 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The data directory to restore into: new, or empty.
    #[arg(long = "data", value_name = "NEWDIR", required_unless_present = "log")]
    data: Option<PathBuf>,
    /// Restore into the log in this PostgreSQL database instead (its log must be empty).
    #[arg(long = "log", env = "OPLEDGER_LOG", value_name = "URL", hide_env_values = true, conflicts_with = "data")]
    log: Option<String>,
    /// The export to restore (JSON Lines of envelopes); `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Print the closing summary as JSON.
    #[arg(long)]
    json: bool,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Imported {
    events: u64,
    head: Head,
    streams: u64,
    decisions_checked: u64,
    start_decisions_checked: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(data) = &args.data {
        check_empty(data)?;
    }
    let (input, size): (Box<dyn BufRead>, Option<u64>) = match args.input.as_os_str() == "-" {
        true => (Box::new(BufReader::new(std::io::stdin())), None),
        false => {
            let file = File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
            let size = file.metadata().ok().map(|m| m.len());
            (Box::new(BufReader::with_capacity(1024 * 1024, file)), size)
        }
    };
    let (log, place) = open_target(&args)?;
    if log.head().position != 0 {
        bail!("{place} already holds a log; import restores into an empty one only");
    }
    let imported = import(&log, input, size).with_context(|| match &args.log {
        Some(_) => format!("the import into {place} failed; drop its opledger_* tables before trying again"),
        None => format!("the import into {place} failed; delete that directory before trying again"),
    })?;
    log.close();
    let head = imported.head.digest();
    match args.json {
        true => print_json(&serde_json::json!({
            "events": imported.events, "head": head, "streams": imported.streams,
            "hashes_match": true, "verified": true,
            "decisions_checked": imported.decisions_checked,
            "start_decisions_checked": imported.start_decisions_checked,
        }))?,
        false => print_text(&format!(
            "imported {} events into {}; head {head}\nevery imported hash equals the exported one; verify: {} events \
             in {} streams, {} legitimacy and {} start decisions replayed\n",
            imported.events,
            place,
            imported.events,
            imported.streams,
            imported.decisions_checked,
            imported.start_decisions_checked
        ))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The log to import into, and its name for messages.
fn open_target(args: &Args) -> anyhow::Result<(Log, String)> {
    match (&args.log, &args.data) {
        (Some(url), _) => {
            let place = opledger::log::postgres::describe_url(url);
            let log = Log::open_postgres(url, LogOptions::default()).with_context(|| format!("opening {place}"))?;
            Ok((log, place))
        }
        (None, Some(data)) => {
            std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
            let log = Log::open(data.join("log"), LogOptions::default())
                .with_context(|| format!("opening a new log in {}", data.display()))?;
            Ok((log, data.display().to_string()))
        }
        (None, None) => bail!("name --data NEWDIR or --log URL"),
    }
}

/// A data directory to import into must not exist or be empty.
pub fn check_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("reading {}", dir.display())),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => bail!(
                "the data directory {} is not empty; import restores into a new or empty directory only",
                dir.display()
            ),
        },
    }
}

fn import(log: &Log, input: Box<dyn BufRead>, size: Option<u64>) -> anyhow::Result<Imported> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let hashes = runtime.block_on(append_all(log, input, size))?;
    check_hashes(log, &hashes)?;
    let head = log.head();
    let expected = hashes.last().map(|hash| Head { position: hashes.len() as u64, hash: *hash });
    let bar = progress_bar(head.position);
    let mut replay = DecisionReplay::new();
    let report = verify(log, expected, &mut replay, &mut |done| bar.set_position(done))?;
    bar.finish_and_clear();
    if let Some(failure) = report.first_failure {
        bail!("the imported log does not verify: first bad position {}: {}", failure.position, failure.detail);
    }
    Ok(Imported {
        events: report.events_checked,
        head,
        streams: report.streams,
        decisions_checked: replay.decisions_checked,
        start_decisions_checked: replay.start_decisions_checked,
    })
}

/// The events of one append: consecutive, recorded at the same time.
#[derive(Debug, Default)]
struct Batch {
    first: u64,
    recorded_at: Option<DateTime<Utc>>,
    events: Vec<NewEvent>,
}

impl Batch {
    /// Whether an event recorded at `at` may join this append.
    fn takes(&self, at: DateTime<Utc>) -> bool {
        self.events.len() < APPEND_EVENTS_MAX && self.recorded_at.is_none_or(|batch_at| batch_at == at)
    }
}

/// An append handed to the writer: positions `first..=last`.
struct InFlight {
    first: u64,
    last: u64,
    pending: PendingAppend,
}

/// Appends every event of the input; returns the exported hashes by position.
async fn append_all(log: &Log, mut input: Box<dyn BufRead>, size: Option<u64>) -> anyhow::Result<Vec<Hash>> {
    let bar = bytes_bar(size);
    let (mut hashes, mut previous) = (Vec::<Hash>::new(), Hash::GENESIS);
    let mut batch = Batch { first: 1, ..Batch::default() };
    let mut in_flight = VecDeque::new();
    let (mut line, mut line_number, mut consumed) = (String::new(), 0u64, 0u64);
    while let Some(read) = read_line(&mut input, &mut line)? {
        line_number += 1;
        consumed += read as u64;
        if line.trim().is_empty() {
            continue;
        }
        let envelope: Envelope = serde_json::from_str(line.trim_end())
            .with_context(|| format!("line {line_number} of the input is not an exported envelope"))?;
        let position = hashes.len() as u64 + 1;
        check_chain(&envelope, position, previous)
            .with_context(|| format!("line {line_number} of the input (position {position})"))?;
        previous = envelope.hash;
        hashes.push(envelope.hash);
        if !batch.takes(envelope.recorded_at) {
            let full = std::mem::replace(&mut batch, Batch { first: position, ..Batch::default() });
            in_flight.push_back(submit(log, full).await?);
            if in_flight.len() > IN_FLIGHT_APPENDS_MAX {
                if let Some(oldest) = in_flight.pop_front() {
                    acknowledged(oldest).await?;
                }
                bar.set_position(consumed);
            }
        }
        batch.recorded_at = Some(envelope.recorded_at);
        batch.events.push(new_event(envelope).with_context(|| format!("position {position}"))?);
    }
    if !batch.events.is_empty() {
        in_flight.push_back(submit(log, batch).await?);
    }
    while let Some(oldest) = in_flight.pop_front() {
        acknowledged(oldest).await?;
    }
    bar.finish_and_clear();
    Ok(hashes)
}

/// An input line must hold the next position and chain to the line before.
fn check_chain(envelope: &Envelope, position: u64, previous: Hash) -> anyhow::Result<()> {
    if envelope.position != position {
        bail!("position {} where position {position} was due: an export starts at 1 and has no gap", envelope.position);
    }
    if envelope.previous_hash != previous {
        bail!("its previous_hash does not chain to the hash of the event before it in the input");
    }
    Ok(())
}

/// The event to append for an exported envelope: the same id, stream, type,
/// schema version, causation, correlation and payload bytes.
fn new_event(envelope: Envelope) -> anyhow::Result<NewEvent> {
    let mut event =
        NewEvent::with_id(envelope.id, envelope.stream, &envelope.event_type, envelope.schema_version, &())?;
    event.payload = envelope.payload;
    event.causation_id = envelope.causation_id;
    event.correlation_id = envelope.correlation_id;
    Ok(event)
}

async fn submit(log: &Log, batch: Batch) -> anyhow::Result<InFlight> {
    let (first, count) = (batch.first, batch.events.len() as u64);
    let last = first + count - 1;
    let expectations = Expectations { streams: Vec::new(), head: Some(first - 1) };
    let pending = log
        .submit_at(batch.events, expectations, batch.recorded_at)
        .await
        .with_context(|| format!("appending positions {first} to {last}"))?;
    Ok(InFlight { first, last, pending })
}

/// Waits for an append and checks that it landed where it must.
async fn acknowledged(append: InFlight) -> anyhow::Result<()> {
    let InFlight { first, last, pending } = append;
    let answer = pending.wait().await.with_context(|| format!("appending positions {first} to {last}"))?;
    match answer {
        Ok(appended) if appended.duplicate => {
            bail!("positions {first} to {last}: their event ids are in the log already (the input repeats event ids)")
        }
        Ok(appended) if (appended.first_position, appended.last_position) == (first, last) => Ok(()),
        Ok(appended) => {
            bail!("positions {first} to {last} landed at {} to {}", appended.first_position, appended.last_position)
        }
        Err(conflict) => bail!("positions {first} to {last}: the log refused the append: {conflict:?}"),
    }
}

/// Every imported event must have the hash it had in the exported log.
fn check_hashes(log: &Log, exported: &[Hash]) -> anyhow::Result<()> {
    let head = log.head().position;
    if head != exported.len() as u64 {
        bail!("the restored log ends at position {head}, the export at {}", exported.len());
    }
    let mut next = 1;
    while next <= head {
        let page = log.read(next, READ_PAGE_EVENTS_MAX)?;
        for envelope in &page {
            let index = usize::try_from(envelope.position - 1)?;
            let expected = exported.get(index).ok_or_else(|| anyhow!("position {} is past the export", next))?;
            if envelope.hash != *expected {
                bail!(
                    "position {}: the imported event's hash {} differs from the exported hash {}; the restored log \
                     is not identical",
                    envelope.position,
                    envelope.hash,
                    expected
                );
            }
        }
        next += page.len().max(1) as u64;
    }
    Ok(())
}

/// Reads one line of at most [`LINE_BYTES_MAX`] bytes; `None` at the end.
fn read_line(input: &mut dyn BufRead, line: &mut String) -> anyhow::Result<Option<usize>> {
    line.clear();
    let read = input.take(LINE_BYTES_MAX as u64 + 1).read_line(line).context("reading the input")?;
    match read {
        0 => Ok(None),
        read if read > LINE_BYTES_MAX => bail!("an input line is longer than {LINE_BYTES_MAX} bytes"),
        read => Ok(Some(read)),
    }
}

fn bytes_bar(size: Option<u64>) -> ProgressBar {
    let Some(size) = size.filter(|size| *size >= BAR_BYTES_MIN) else { return ProgressBar::hidden() };
    let bar = ProgressBar::new(size);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}") {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use opledger::StreamId;

    use super::*;

    fn sealed(position: u64, previous: Hash) -> Envelope {
        let mut event =
            NewEvent::new(StreamId::new("s").unwrap(), "t", 2, &serde_json::json!({"k": position})).unwrap();
        event.causation_id = Some(uuid::Uuid::nil());
        Envelope::seal(&event, position, position, Utc::now(), previous).unwrap().0
    }

    #[test]
    fn a_batch_holds_one_recording_time_and_at_most_an_append() {
        let at = Utc::now();
        let mut batch = Batch::default();
        assert!(batch.takes(at));
        batch.recorded_at = Some(at);
        assert!(batch.takes(at));
        assert!(!batch.takes(at + chrono::Duration::microseconds(1)));
        let event = new_event(sealed(1, Hash::GENESIS)).unwrap();
        batch.events = vec![event; APPEND_EVENTS_MAX];
        assert!(!batch.takes(at));
    }

    #[test]
    fn the_input_must_run_from_1_and_chain() {
        let first = sealed(1, Hash::GENESIS);
        let second = sealed(2, first.hash);
        assert!(check_chain(&first, 1, Hash::GENESIS).is_ok());
        assert!(check_chain(&second, 2, first.hash).is_ok());
        assert!(check_chain(&second, 3, first.hash).unwrap_err().to_string().contains("position 2 where position 3"));
        assert!(check_chain(&second, 2, Hash::GENESIS).unwrap_err().to_string().contains("does not chain"));
    }

    #[test]
    fn the_event_to_append_keeps_everything_the_hash_covers() {
        let envelope = sealed(1, Hash::GENESIS);
        let event = new_event(envelope.clone()).unwrap();
        let (resealed, _) = Envelope::seal(&event, 1, 1, envelope.recorded_at, Hash::GENESIS).unwrap();
        assert_eq!(resealed.hash, envelope.hash);
        assert_eq!(event.payload.get(), envelope.payload.get());
    }

    #[test]
    fn only_a_missing_or_empty_directory_takes_an_import() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_empty(&dir.path().join("new")).is_ok());
        assert!(check_empty(dir.path()).is_ok());
        std::fs::write(dir.path().join("x"), b"").unwrap();
        let error = check_empty(dir.path()).unwrap_err().to_string();
        assert!(error.contains("is not empty"), "{error}");
    }

    #[test]
    fn lines_are_bounded() {
        let mut input: Box<dyn BufRead> = Box::new(std::io::Cursor::new(b"a\nbc".to_vec()));
        let mut line = String::new();
        assert_eq!(read_line(&mut input, &mut line).unwrap(), Some(2));
        assert_eq!(line, "a\n");
        assert_eq!(read_line(&mut input, &mut line).unwrap(), Some(2));
        assert_eq!(read_line(&mut input, &mut line).unwrap(), None);
        let long = vec![b'x'; LINE_BYTES_MAX + 10];
        let mut input: Box<dyn BufRead> = Box::new(std::io::Cursor::new(long));
        assert!(read_line(&mut input, &mut line).is_err());
    }
}
