//! `opledger rebuild --data DIR`: recomputes every projection from the log
//! into a fresh read-model file and renames it over `projections.db`,
//! then says what it did.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use opledger_projections::{ProjectionError, Projector};

use super::source::{in_use_message, print_json, print_text, Hint};
use super::verify::progress_bar;
use super::DataDir;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let log = args.data.open_existing_log(Hint::StopServer)?;
    // No catch-up first: the rebuild replaces the file anyway.
    let projector = Projector::open_without_catch_up_in(
        &args.data.read_models_dir(),
        Arc::clone(&log),
        opledger_projections::all(),
    )
    .map_err(|error| match matches!(error, ProjectionError::Log(opledger::Error::Locked { .. })) {
        true => anyhow::anyhow!(in_use_message(&args.data.path, Hint::StopServer)),
        false => anyhow::anyhow!(error),
    })?;
    let names: Vec<&'static str> = opledger_projections::all().iter().map(|p| p.name()).collect();
    let started = Instant::now();
    let bar = progress_bar(log.head().position);
    let applied = projector.rebuild(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let head = log.head().digest();
    match args.json {
        true => print_json(&serde_json::json!({
            "projections": names, "events_applied": applied, "head": head, "seconds": seconds
        }))?,
        false => print_text(&format!(
            "rebuilt {} projections ({}) from {applied} events in {seconds:.2} s; head {head}\n",
            names.len(),
            names.join(", ")
        ))?,
    }
    Ok(ExitCode::SUCCESS)
}
