//! `opledger verify`: walks the whole log; exit 0 only if everything holds.

use std::io::Write;
use std::process::ExitCode;

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressStyle};
use opledger::domain::replay::DecisionReplay;
use opledger::verify::verify;
use opledger::Head;

use super::DataDir;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    /// A head digest exported earlier (`POSITION:HASH`, from `opledger head`):
    /// the log must still hold exactly that event.
    #[arg(long)]
    expect_head: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let expected = match &args.expect_head {
        Some(text) => Some(Head::parse_digest(text).ok_or_else(|| anyhow!("--expect-head takes POSITION:HASH"))?),
        None => None,
    };
    let log = match args.data.open_existing_log(super::source::Hint::StopServer) {
        Ok(log) => log,
        Err(error) => {
            eprintln!("verify failed: {error:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let bar = progress_bar(log.head().position);
    let mut replay = DecisionReplay::new();
    let report = verify(&log, expected, &mut replay, &mut |done| bar.set_position(done))?;
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    if args.json {
        let failure =
            report.first_failure.as_ref().map(|f| serde_json::json!({"position": f.position, "detail": f.detail}));
        writeln!(
            out,
            "{}",
            serde_json::json!({"ok": report.is_ok(), "events_checked": report.events_checked,
                "streams": report.streams, "decisions_checked": replay.decisions_checked,
                "start_decisions_checked": replay.start_decisions_checked,
                "head": report.head.digest(), "first_failure": failure})
        )?;
    } else {
        writeln!(out, "{}", summary_line(&report, &replay))?;
    }
    match &report.first_failure {
        None => Ok(ExitCode::SUCCESS),
        Some(failure) => {
            eprintln!("verify failed: first bad position {}: {}", failure.position, failure.detail);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What a person reads: events, streams, both kinds of re-evaluated
/// decisions, the head.
fn summary_line(report: &opledger::verify::VerifyReport, replay: &DecisionReplay) -> String {
    format!(
        "checked {} events in {} streams; re-evaluated {} legitimacy decisions and {} start decisions; head {}",
        report.events_checked,
        report.streams,
        replay.decisions_checked,
        replay.start_decisions_checked,
        report.head.digest()
    )
}

/// A bar on a terminal for logs long enough to wait for; hidden otherwise.
pub fn progress_bar(total: u64) -> ProgressBar {
    if total < 100_000 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}") {
        bar.set_style(style);
    }
    bar
}
