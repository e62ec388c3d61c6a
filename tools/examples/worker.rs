//! A queue worker in Rust, over the HTTP API: take queued runs, ask the
//! ledger "may I begin?", do the work only when the decision is allowed,
//! report progress and the outcome.
//!
//! ```sh
//! cargo run -p opledger-tools --example worker -- http://127.0.0.1:7878 "$SERVICE_TOKEN" [--once]
//! ```
//!
//! A denied decision needs no handling: the ledger has already recorded the
//! run as blocked (or put it back to queued when the denial is retryable).
//! A 409 on begin means another worker took the run first.

use std::time::Duration;

use anyhow::{bail, Context};
use opledger_tools::cmd::remote::{is_status, Remote};
use serde_json::{json, Value};

/// Runs taken per poll.
const POLL_PAGE_RUNS: usize = 50;
/// Pause when nothing is queued.
const IDLE_PAUSE: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(token)) = (args.first(), args.get(1)) else {
        bail!("usage: worker URL SERVICE_TOKEN [--once]");
    };
    let once = args.iter().any(|a| a == "--once");
    let ledger = Remote::new(url, token)?;
    loop {
        let worked = poll(&ledger)?;
        if once {
            return Ok(());
        }
        if worked == 0 {
            std::thread::sleep(IDLE_PAUSE);
        }
    }
}

/// One pass over the queued runs, oldest first; returns how many ran.
fn poll(ledger: &Remote) -> anyhow::Result<usize> {
    let page: Value = ledger.get("/v1/runs", &[("status", "queued".into()), ("limit", POLL_PAGE_RUNS.to_string())])?;
    let mut runs: Vec<Value> = page["runs"].as_array().cloned().unwrap_or_default();
    runs.reverse();
    let mut worked = 0;
    for run in runs {
        let id = run["id"].as_str().context("a run has an id")?;
        if attempt(ledger, id, run["operation_type"].as_str().unwrap_or("?"))? {
            worked += 1;
        }
    }
    Ok(worked)
}

/// Begins one run; works and completes it when allowed. `false` when the
/// run was not ours to run.
fn attempt(ledger: &Remote, id: &str, operation_type: &str) -> anyhow::Result<bool> {
    let begun: Value = match ledger.post(&format!("/v1/runs/{id}/begin"), &json!({})) {
        Ok(answer) => answer,
        Err(error) if is_status(&error, 409) => return Ok(false),
        Err(error) => return Err(error),
    };
    let decision = &begun["decision"];
    if decision["outcome"] != "allowed" {
        eprintln!("{operation_type} {id}: not begun ({}), {}", decision["reason_code"], begun["run"]["status"]);
        return Ok(false);
    }
    let total = 10;
    for done in [total / 2, total] {
        // The real work goes here, between the allowed decision and complete.
        let counts = json!({"summary_counts": {"total": total, "processed": done, "succeeded": done}});
        let _: Value = ledger.post(&format!("/v1/runs/{id}/progress"), &counts)?;
    }
    let outcome = json!({"outcome": "succeeded", "summary_counts": {"total": total, "processed": total}});
    let completed: Value = ledger.post(&format!("/v1/runs/{id}/complete"), &outcome)?;
    eprintln!("{operation_type} {id}: {}", completed["run"]["outcome"]);
    Ok(true)
}
