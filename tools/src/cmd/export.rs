//! `opledger export [--output FILE]`: the whole log, position 1 to the head,
//! as JSON Lines of envelopes (`opledger import` restores it). From a data
//! directory, or from a running server up to the head it had when the
//! export began.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use opledger::{Hash, Head};
use serde_json::Value;

use super::events::{remote_page, write_line, write_range};
use super::remote::Remote;
use super::source::{print_text, quiet_on_closed_pipe, Hint, Source, Target};
use super::verify::progress_bar;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: Source,
    /// Write the export to FILE (through FILE.partial, renamed once complete) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print the closing summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = args.source.target()?;
    let (written, head) = match &args.output {
        Some(path) => to_file(path, &target)?,
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            match export(&target, &mut out) {
                Ok(done) => done,
                Err(error) => {
                    quiet_on_closed_pipe(Err(error))?;
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    };
    let place = args.output.as_ref().map_or("stdout".to_owned(), |path| path.display().to_string());
    let summary = match args.json {
        true => serde_json::json!({"events": written, "head": head.digest(), "output": place}).to_string(),
        false => format!("exported {written} events to {place}; head {}", head.digest()),
    };
    // The export itself may be on stdout: the summary goes beside it then.
    match args.output {
        Some(_) => print_text(&format!("{summary}\n"))?,
        None => eprintln!("{summary}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn to_file(path: &Path, target: &Target) -> anyhow::Result<(u64, Head)> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut out = BufWriter::new(file);
    let result = export(target, &mut out).and_then(|done| {
        let file = out.into_inner().map_err(|e| anyhow!(e.into_error()))?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
            .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
        Ok(done)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Writes every event up to the head; returns how many and the head.
fn export(target: &Target, out: &mut impl Write) -> anyhow::Result<(u64, Head)> {
    let (written, head) = match target {
        Target::Local(data) => {
            let log = data.open_existing_log(Hint::Query)?;
            let head = log.head();
            let bar = progress_bar(head.position);
            let written = write_range(&log, 1, head.position, out, &mut |done| bar.set_position(done))?;
            bar.finish_and_clear();
            (written, head)
        }
        Target::Remote(remote) => export_remote(remote, out)?,
    };
    out.flush()?;
    Ok((written, head))
}

/// Pages through `/v1/events` up to the head the server had at the start,
/// and checks that the last event exported is that head.
fn export_remote(remote: &Remote, out: &mut impl Write) -> anyhow::Result<(u64, Head)> {
    let answer: Value = remote.get("/v1/head", &[])?;
    let digest = answer.get("digest").and_then(Value::as_str).unwrap_or_default();
    let head = Head::parse_digest(digest).ok_or_else(|| anyhow!("/v1/head gave no head digest: {answer}"))?;
    let bar = progress_bar(head.position);
    let (mut next, mut last_hash) = (1, Hash::GENESIS);
    while next <= head.position {
        let page = remote_page(remote, next)?;
        if page.events.is_empty() {
            bail!("the server's log ended at position {} before its head {}", next - 1, head.position);
        }
        for envelope in page.events.iter().take_while(|e| e.position <= head.position) {
            if envelope.position != next {
                bail!("the server sent position {} where position {next} was due", envelope.position);
            }
            write_line(out, envelope)?;
            last_hash = envelope.hash;
            next += 1;
        }
        bar.set_position(next - 1);
    }
    bar.finish_and_clear();
    if last_hash != head.hash {
        bail!("the event exported at position {} does not have the hash of the head {}", head.position, head.digest());
    }
    Ok((head.position, head))
}
