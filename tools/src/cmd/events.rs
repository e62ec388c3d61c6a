//! `opledger events tail [--from N] [--follow]`: the raw log as JSON Lines
//! of envelopes (the serde form of `Envelope`, as `opledger export` writes
//! and `GET /v1/events` serves), from position N on; `--follow` keeps
//! printing new events as they are acknowledged.

use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use opledger::limits::READ_PAGE_EVENTS_MAX;
use opledger::{Envelope, Log};
use serde::Deserialize;

use super::remote::Remote;
use super::source::{quiet_on_closed_pipe, Hint, Source, Target};

/// Events asked of a server per page (its `/v1/events` answers at most this many).
pub const REMOTE_PAGE_EVENTS: usize = 1000;
/// How long `--follow` waits before asking a server again once caught up.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Subcommand)]
pub enum Events {
    /// Print events from a position on as JSON Lines; --follow keeps following.
    Tail(TailArgs),
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    source: Source,
    /// The first position printed (positions start at 1).
    #[arg(long, default_value_t = 1, value_name = "N")]
    from: u64,
    /// Keep following the log: print new events as they are acknowledged, until interrupted.
    #[arg(long)]
    follow: bool,
    /// Accepted for uniformity with the other reads: the output is always JSON Lines.
    #[arg(long)]
    json: bool,
}

/// A page of `GET /v1/events`, typed so that payload bytes pass through untouched.
#[derive(Debug, Deserialize)]
pub struct EventsPage {
    pub events: Vec<Envelope>,
    pub next: u64,
}

pub fn run(events: Events) -> anyhow::Result<ExitCode> {
    let Events::Tail(args) = events;
    quiet_on_closed_pipe(tail(&args))?;
    Ok(ExitCode::SUCCESS)
}

fn tail(args: &TailArgs) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    let from = args.from.max(1);
    match args.source.target()? {
        Target::Local(data) => {
            let log = data.open_existing_log(Hint::Query)?;
            let head = log.head().position;
            write_range(&log, from, head, &mut out, &mut |_| {})?;
            out.flush()?;
            if args.follow {
                follow_local(&log, from.max(head + 1), &mut out)?;
            }
        }
        Target::Remote(remote) => {
            let mut next = from;
            loop {
                let page = remote_page(&remote, next)?;
                let full = page.events.len() >= REMOTE_PAGE_EVENTS;
                next = write_page(&page, next, &mut out)?;
                if full {
                    continue;
                }
                out.flush()?;
                if !args.follow {
                    return Ok(());
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
    Ok(())
}

/// One line: the envelope's JSON.
pub fn write_line(out: &mut impl Write, envelope: &Envelope) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, envelope)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes positions `from..=to` of a local log; `progress` gets the last
/// position written after each page.
pub fn write_range(
    log: &Log,
    from: u64,
    to: u64,
    out: &mut impl Write,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<u64> {
    let mut next = from.max(1);
    let mut written = 0;
    while next <= to {
        let want = usize::try_from(to - next + 1).unwrap_or(usize::MAX).min(READ_PAGE_EVENTS_MAX);
        let page = log.read(next, want)?;
        let Some(last) = page.last().map(|e| e.position) else { break };
        for envelope in &page {
            write_line(out, envelope)?;
        }
        written += page.len() as u64;
        next = last + 1;
        progress(last);
    }
    Ok(written)
}

/// Follows a local log from `from` until the process is interrupted.
fn follow_local(log: &Log, from: u64, out: &mut impl Write) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut subscription = log.subscribe(from);
        while let Some(envelope) = subscription.next().await {
            write_line(out, &envelope?)?;
            out.flush()?;
        }
        Ok(())
    })
}

/// The page of a server's log from `from` on.
pub fn remote_page(remote: &Remote, from: u64) -> anyhow::Result<EventsPage> {
    remote.get("/v1/events", &[("from", from.to_string()), ("limit", REMOTE_PAGE_EVENTS.to_string())])
}

/// Writes a page that must start at `expected`; returns the position after it.
pub fn write_page(page: &EventsPage, expected: u64, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut next = expected;
    for envelope in &page.events {
        if envelope.position != next {
            bail!("the server sent position {} where position {next} was due", envelope.position);
        }
        write_line(out, envelope)?;
        next += 1;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::Utc;
    use opledger::{Hash, NewEvent, StreamId};

    use super::*;

    fn envelope(position: u64) -> Envelope {
        let event = NewEvent::new(StreamId::new("s").unwrap(), "t", 1, &serde_json::json!({"b": 1, "a": [2]})).unwrap();
        let previous = if position == 1 { Hash::GENESIS } else { Hash::of(b"x") };
        Envelope::seal(&event, position, position, Utc::now(), previous).unwrap().0
    }

    #[test]
    fn a_line_is_the_envelope_json_and_parses_back_to_the_same_envelope() {
        let original = envelope(1);
        let mut out = Vec::new();
        write_line(&mut out, &original).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        assert!(text.contains(r#""data":{"a":[2],"b":1}"#), "{text}");
        let back: Envelope = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(back, original, "the same canonical bytes, so the same hash");
    }

    #[test]
    fn a_page_with_a_gap_is_refused() {
        let page = EventsPage { events: vec![envelope(3), envelope(5)], next: 6 };
        let mut out = Vec::new();
        let error = write_page(&page, 3, &mut out).unwrap_err();
        assert!(error.to_string().contains("position 5 where position 4"), "{error}");
        let page = EventsPage { events: vec![envelope(3), envelope(4)], next: 5 };
        assert_eq!(write_page(&page, 3, &mut Vec::new()).unwrap(), 5);
    }
}
