//! `opledger verify`: walks the whole log; exit 0 only if everything holds.
//! On a data directory no server holds, or over `--url` on the live log
//! of a running server (`GET /v1/verify`), without stopping its writes.

use std::io::Write;
use std::process::ExitCode;

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressStyle};
use opledger::domain::replay::DecisionReplay;
use opledger::verify::{verify, VerifyReport};
use opledger::Head;
use serde_json::Value;

use super::source::{Hint, Source, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: Source,
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
    let report = match args.source.target()? {
        Target::Local(data) => {
            let log = match data.open_existing_log(Hint::Query) {
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
            report_json(&report, &replay)
        }
        Target::Remote(remote) => {
            let query: Vec<(&str, String)> = expected.iter().map(|head| ("expect_head", head.digest())).collect();
            remote.get::<Value>("/v1/verify", &query)?
        }
    };
    let mut out = std::io::stdout().lock();
    match args.json {
        true => writeln!(out, "{report}")?,
        false => writeln!(out, "{}", summary_line(&report))?,
    }
    match report.get("first_failure").filter(|failure| !failure.is_null()) {
        None => Ok(ExitCode::SUCCESS),
        Some(failure) => {
            eprintln!("verify failed: first bad position {}: {}", failure["position"], text(&failure["detail"]));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The report as `--json` prints it and `GET /v1/verify` answers it.
pub fn report_json(report: &VerifyReport, replay: &DecisionReplay) -> Value {
    let failure =
        report.first_failure.as_ref().map(|f| serde_json::json!({"position": f.position, "detail": f.detail}));
    serde_json::json!({"ok": report.is_ok(), "events_checked": report.events_checked,
        "streams": report.streams, "decisions_checked": replay.decisions_checked,
        "start_decisions_checked": replay.start_decisions_checked,
        "abandonments_checked": replay.abandonments_checked,
        "cancellations_checked": replay.cancellations_checked,
        "head": report.head.digest(), "first_failure": failure})
}

fn text(value: &Value) -> String {
    super::source::text(value)
}

/// What a person reads: events, streams, both kinds of re-evaluated
/// decisions, the head.
fn summary_line(report: &Value) -> String {
    format!(
        "checked {} events in {} streams; re-evaluated {} legitimacy decisions and {} start decisions; head {}",
        report["events_checked"],
        report["streams"],
        report["decisions_checked"],
        report["start_decisions_checked"],
        text(&report["head"])
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
