//! `opledger runs cancel RUN --url … --token …`: cancels a queued or
//! running run through the server (`POST /v1/runs/{id}/cancel`). Only over
//! `--url`: the server owns the log while it runs, and a cancel is a
//! command its sequencer decides like any other.

use std::process::ExitCode;

use anyhow::bail;
use opledger::domain::model::{Principal, SYSTEM_PRINCIPAL_WORD};
use serde_json::{json, Value};
use uuid::Uuid;

use super::source::{field, print_json, print_text, Source, Target};

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    source: Source,
    /// The run id.
    run: Uuid,
    /// Who cancels: an actor id, or `system` (the default).
    #[arg(long, value_name = "ACTOR", default_value = SYSTEM_PRINCIPAL_WORD)]
    by: String,
    /// Why, for people (secrets are redacted before it is recorded).
    #[arg(long)]
    reason: Option<String>,
    /// Print the API's JSON (`{"run": Run}`).
    #[arg(long)]
    json: bool,
}

pub fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let Target::Remote(remote) = args.source.target()? else {
        bail!("runs cancel needs --url and --token: the running server decides the cancel");
    };
    let by = match args.by.as_str() {
        SYSTEM_PRINCIPAL_WORD => Principal::System,
        actor => Principal::actor(actor),
    };
    let body = json!({"cancelled_by": by, "reason": args.reason});
    let answer: Value = remote.post(&format!("/v1/runs/{}/cancel", args.run), &body)?;
    match args.json {
        true => print_json(&answer)?,
        false => print_text(&cancel_text(&answer["run"]))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// One line: the run, its status and outcome in operator words.
pub fn cancel_text(run: &Value) -> String {
    format!("run {} is {}: {}\n", field(run, "id"), field(run, "status"), field(run, "outcome"))
}
