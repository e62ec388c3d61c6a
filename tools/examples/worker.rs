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
//!
//! Every call after begin names the attempt `begin` answered, and the work
//! loop heartbeats: a worker that stops reporting for the operation type's
//! `lease_seconds` loses the attempt (`attempt_abandoned`), and its late
//! calls are refused with 409 `lease_expired`; a run cancelled meanwhile
//! answers 409 `run_cancelled`. Either way the worker stops working on it.

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
    let attempt = begun["run"]["attempt"].as_u64().context("begin answers with the attempt")?;
    let total = 10;
    for done in [total / 2, total] {
        // The real work goes here, between the allowed decision and complete;
        // long work sends a heartbeat well within the lease.
        let beat: Option<Value> =
            still_ours(ledger.post(&format!("/v1/runs/{id}/heartbeat"), &json!({"attempt": attempt})))?;
        let counts =
            json!({"summary_counts": {"total": total, "processed": done, "succeeded": done}, "attempt": attempt});
        let progressed: Option<Value> = still_ours(ledger.post(&format!("/v1/runs/{id}/progress"), &counts))?;
        if beat.is_none() || progressed.is_none() {
            eprintln!("{operation_type} {id}: no longer ours (lease expired or cancelled)");
            return Ok(false);
        }
    }
    let outcome =
        json!({"outcome": "succeeded", "summary_counts": {"total": total, "processed": total}, "attempt": attempt});
    let Some(completed) = still_ours::<Value>(ledger.post(&format!("/v1/runs/{id}/complete"), &outcome))? else {
        eprintln!("{operation_type} {id}: no longer ours (lease expired or cancelled)");
        return Ok(false);
    };
    eprintln!("{operation_type} {id}: {}", completed["run"]["outcome"]);
    Ok(true)
}

/// `None` when the ledger says the attempt is no longer this worker's: a
/// 409 (`lease_expired`, `run_cancelled`) after begin.
fn still_ours<T>(answer: anyhow::Result<T>) -> anyhow::Result<Option<T>> {
    match answer {
        Ok(value) => Ok(Some(value)),
        Err(error) if is_status(&error, 409) => Ok(None),
        Err(error) => Err(error),
    }
}
