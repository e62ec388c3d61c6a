//! `opledger runs list` and `opledger runs show RUN`: Monitoring's run list
//! and run detail, from a data directory or a running server. Both print
//! the API's JSON with `--json` (the same document either way), text
//! otherwise.

use std::process::ExitCode;

use anyhow::anyhow;
use chrono::{DateTime, SecondsFormat, Utc};
use opledger_projections::monitoring;
use serde_json::{json, Value};
use uuid::Uuid;

use super::read_models::ReadModels;
use super::remote::is_status;
use super::source::{field, principal_text, print_json, print_text, table, text, Source, Target};
use crate::server::reads::{timeline_json, timeline_page, RunQuery, RUN_TIMELINE_PAGE_EVENTS_MAX};

#[derive(Debug, clap::Subcommand)]
pub enum Runs {
    /// A page of runs, newest first, filtered.
    List(ListArgs),
    /// One run and its timeline.
    Show(ShowArgs),
    /// Cancels a queued or running run (over --url).
    Cancel(super::runs_cancel::CancelArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    source: Source,
    /// Only runs of this workspace.
    #[arg(long)]
    workspace: Option<String>,
    /// Only runs of this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only runs in this status: queued, running or completed.
    #[arg(long)]
    status: Option<String>,
    /// Only runs with this outcome: pending, succeeded, partially_succeeded, failed, blocked or cancelled.
    #[arg(long)]
    outcome: Option<String>,
    /// Only runs of this operation type.
    #[arg(long = "type", value_name = "OPERATION_TYPE")]
    operation_type: Option<String>,
    /// Only runs initiated by this actor id, or by `system`.
    #[arg(long)]
    initiator: Option<String>,
    /// Only runs queued (or, for a blocked start, recorded) at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// Only runs queued (or recorded) at or before this time (RFC 3339).
    #[arg(long)]
    to: Option<DateTime<Utc>>,
    /// Runs per page (default 50, at most 200).
    #[arg(long)]
    limit: Option<usize>,
    /// The `next_cursor` (older runs) or `prev_cursor` (newer runs) of a page.
    #[arg(long)]
    cursor: Option<String>,
    /// Instead of a page, the counts of every run of the filters by status
    /// and by outcome (`GET /v1/runs/summary`).
    #[arg(long, conflicts_with_all = ["limit", "cursor"])]
    summary: bool,
    /// Print the API's JSON (`{"runs": [...], "next_cursor": ...}`, or the summary).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    source: Source,
    /// The run id.
    run: Uuid,
    /// The stream version the timeline page starts at (the `timeline_next`
    /// of the previous page); pages hold up to 1,000 events.
    #[arg(long, value_name = "VERSION", default_value_t = 1)]
    timeline_from: u64,
    /// Print the API's JSON (`{"run": Run, "timeline": [Event], "timeline_next": VERSION?}`).
    #[arg(long)]
    json: bool,
}

pub fn run(runs: Runs) -> anyhow::Result<ExitCode> {
    match runs {
        Runs::List(args) => list(args),
        Runs::Show(args) => show(args),
        Runs::Cancel(args) => super::runs_cancel::cancel(args),
    }
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl ListArgs {
    fn query(&self) -> RunQuery {
        RunQuery {
            workspace_id: self.workspace.clone(),
            tenant_id: self.tenant.clone(),
            status: self.status.clone(),
            outcome: self.outcome.clone(),
            operation_type: self.operation_type.clone(),
            initiator: self.initiator.clone(),
            from: self.from,
            to: self.to,
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }

    /// The query parameters of `GET /v1/runs`.
    fn params(&self) -> Vec<(&'static str, String)> {
        let texts = [
            ("workspace_id", self.workspace.clone()),
            ("tenant_id", self.tenant.clone()),
            ("status", self.status.clone()),
            ("outcome", self.outcome.clone()),
            ("operation_type", self.operation_type.clone()),
            ("initiator", self.initiator.clone()),
            ("from", self.from.as_ref().map(time)),
            ("to", self.to.as_ref().map(time)),
            ("limit", self.limit.map(|l| l.to_string())),
            ("cursor", self.cursor.clone()),
        ];
        texts.into_iter().filter_map(|(name, value)| value.map(|v| (name, v))).collect()
    }
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    if args.summary {
        return summary(args);
    }
    let page: Value = match args.source.target()? {
        Target::Remote(remote) => remote.get("/v1/runs", &args.params())?,
        Target::Local(data) => {
            let query = args.query();
            let filter = query.filter().map_err(|error| anyhow!(error.message))?;
            let limit = args.limit.unwrap_or(monitoring::PAGE_SIZE_DEFAULT);
            let page =
                data.read_models()?.read(|db| Ok(monitoring::list(db, &filter, args.cursor.as_deref(), limit)?))?;
            serde_json::to_value(page)?
        }
    };
    match args.json {
        true => print_json(&page)?,
        false => print_text(&list_text(&page))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `runs list --summary`: the counts of the whole filter.
fn summary(args: ListArgs) -> anyhow::Result<ExitCode> {
    let totals: Value = match args.source.target()? {
        Target::Remote(remote) => remote.get("/v1/runs/summary", &args.params())?,
        Target::Local(data) => {
            let filter = args.query().filter().map_err(|error| anyhow!(error.message))?;
            let totals = data.read_models()?.read(|db| Ok(monitoring::totals_in_tenants(db, &filter, None)?))?;
            serde_json::to_value(totals)?
        }
    };
    match args.json {
        true => print_json(&totals)?,
        false => print_text(&summary_text(&totals))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The counts as three lines: the total, by status, by outcome.
pub fn summary_text(totals: &Value) -> String {
    let counts = |key: &str| {
        let counts = totals.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
        counts.iter().map(|(name, n)| format!("{} {}", name.replace('_', " "), text(n))).collect::<Vec<_>>().join(", ")
    };
    let incomplete = match totals.get("complete").and_then(Value::as_bool) {
        Some(false) => format!(" (the newest {} runs only)", monitoring::TOTALS_RUNS_EXAMINED_MAX),
        _ => String::new(),
    };
    format!(
        "{} runs{incomplete}\nby status: {}\nby outcome: {}\n",
        field(totals, "total"),
        counts("by_status"),
        counts("by_outcome")
    )
}

/// The run list as a table, and how to get the next page.
pub fn list_text(page: &Value) -> String {
    let runs = page.get("runs").and_then(Value::as_array).cloned().unwrap_or_default();
    if runs.is_empty() {
        return "no runs\n".to_owned();
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            let created = run.get("queued_at").filter(|v| !v.is_null()).or_else(|| run.get("completed_at"));
            vec![
                field(run, "id"),
                field(run, "operation_type"),
                field(run, "tenant_id"),
                principal_text(run.get("initiator").unwrap_or(&Value::Null)),
                field(run, "status"),
                field(run, "outcome"),
                text(created.unwrap_or(&Value::Null)),
                field(run, "reason_code"),
            ]
        })
        .collect();
    let header = ["RUN", "TYPE", "TENANT", "INITIATOR", "STATUS", "OUTCOME", "CREATED", "REASON"];
    let mut out = table(&header, &rows);
    let count = match runs.len() {
        1 => "1 run".to_owned(),
        n => format!("{n} runs"),
    };
    out.push_str(&count);
    if let Some(cursor) = page.get("prev_cursor").and_then(Value::as_str) {
        out.push_str(&format!("; newer: --cursor {cursor}"));
    }
    if let Some(cursor) = page.get("next_cursor").and_then(Value::as_str) {
        out.push_str(&format!("; next page: --cursor {cursor}"));
    }
    out.push('\n');
    out
}

fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let detail = match args.source.target()? {
        Target::Remote(remote) => {
            let query = [("timeline_from", args.timeline_from.to_string())];
            match remote.get::<Value>(&format!("/v1/runs/{}", args.run), &query) {
                Ok(detail) => detail,
                Err(error) if is_status(&error, 404) => return Ok(not_found(args.run, &remote.url())),
                Err(error) => return Err(error),
            }
        }
        Target::Local(data) => {
            let found = run_detail(&data.read_models()?, args.run, args.timeline_from)?;
            match found {
                Some(detail) => detail,
                None => return Ok(not_found(args.run, &data.path.display().to_string())),
            }
        }
    };
    match args.json {
        true => print_json(&detail)?,
        false => print_text(&show_text(&detail))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The run and a page of its timeline from a data directory: the events
/// as the log serves them (what the server answers) when no server holds
/// the directory, else the read models' timeline rows (position, id,
/// type, time, attempt, summary: the log's payloads stay with its owner).
fn run_detail(models: &ReadModels, run_id: Uuid, from: u64) -> anyhow::Result<Option<Value>> {
    let Some(run) = models.read(|db| Ok(monitoring::get(db, run_id)?))? else { return Ok(None) };
    let (timeline, next) = match models {
        ReadModels::Projected { log, .. } => {
            let (events, next) = timeline_page(log, run_id, from)?;
            (timeline_json(&events).map_err(|error| anyhow!("{}", error.message))?, next)
        }
        ReadModels::Shared { reader, .. } => {
            let from = from.max(1);
            let mut entries = monitoring::timeline(reader, run_id, from, RUN_TIMELINE_PAGE_EVENTS_MAX + 1)?;
            let next = match entries.len() > RUN_TIMELINE_PAGE_EVENTS_MAX {
                true => entries.pop().map(|_| from + RUN_TIMELINE_PAGE_EVENTS_MAX as u64),
                false => None,
            };
            (entries.iter().map(serde_json::to_value).collect::<Result<Vec<_>, _>>()?, next)
        }
    };
    Ok(Some(json!({"run": run, "timeline": timeline, "timeline_next": next})))
}

fn not_found(run: Uuid, place: &str) -> ExitCode {
    eprintln!("no run {run} in {place}");
    ExitCode::from(3)
}

/// The run detail as text; each timeline event's `summary` is Monitoring's
/// one-line summary, which the API and the local read both carry.
pub fn show_text(detail: &Value) -> String {
    let run = detail.get("run").unwrap_or(&Value::Null);
    let mut lines = vec![format!("run {}", field(run, "id"))];
    let mut line = |name: &str, value: String| lines.push(format!("  {name:<11} {value}"));
    line(
        "operation",
        format!(
            "{} on tenant {} (workspace {})",
            field(run, "operation_type"),
            field(run, "tenant_id"),
            field(run, "workspace_id")
        ),
    );
    let initiator = principal_text(run.get("initiator").unwrap_or(&Value::Null));
    line("initiator", format!("{initiator} ({})", field(run, "authority_mode")));
    line("status", format!("{}, outcome {}", field(run, "status"), field(run, "outcome")));
    if has(run, "reason_code") || has(run, "next_step") {
        let class = if has(run, "denial_class") { format!(" ({})", field(run, "denial_class")) } else { String::new() };
        line("reason", format!("{}{class}", field(run, "reason_code")));
        line("next step", field(run, "next_step"));
    }
    line("attempts", field(run, "attempts"));
    line("connection", field(run, "provider_connection_id"));
    for (name, key) in [("queued", "queued_at"), ("started", "started_at"), ("completed", "completed_at")] {
        if has(run, key) {
            line(name, field(run, key));
        }
    }
    if run.get("summary_counts").and_then(Value::as_object).is_some_and(|counts| !counts.is_empty()) {
        line("counts", field(run, "summary_counts"));
    }
    if let Some(failure) = run.get("failure").filter(|f| !f.is_null()) {
        let code = failure.get("code").and_then(Value::as_str).map(|c| format!("{c}: ")).unwrap_or_default();
        line("failure", format!("{code}{}", field(failure, "message")));
    }
    let mut out = lines.join("\n") + "\n\ntimeline\n";
    let events = detail.get("timeline").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|event| {
            vec![field(event, "position"), field(event, "recorded_at"), field(event, "type"), field(event, "summary")]
        })
        .collect();
    out.push_str(&table(&["POSITION", "RECORDED AT", "EVENT", "SUMMARY"], &rows));
    if let Some(next) = detail.get("timeline_next").and_then(Value::as_u64) {
        out.push_str(&format!("more events: --timeline-from {next}\n"));
    }
    out
}

fn has(value: &Value, name: &str) -> bool {
    value.get(name).is_some_and(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        runs: Runs,
    }

    #[test]
    fn flags_become_the_api_query() {
        let cli = Cli::try_parse_from([
            "runs",
            "list",
            "--tenant",
            "t1",
            "--type",
            "inventory_sync",
            "--from",
            "2026-01-02T03:04:05Z",
            "--limit",
            "5",
        ])
        .unwrap();
        let Runs::List(args) = cli.runs else { panic!("not a list") };
        let params = args.params();
        assert_eq!(
            params,
            [
                ("tenant_id", "t1".to_owned()),
                ("operation_type", "inventory_sync".to_owned()),
                ("from", "2026-01-02T03:04:05Z".to_owned()),
                ("limit", "5".to_owned())
            ]
        );
        let filter = args.query().filter().unwrap();
        assert_eq!(
            (filter.tenant_id.as_deref(), filter.operation_type.as_deref()),
            (Some("t1"), Some("inventory_sync"))
        );
    }

    #[test]
    fn an_unknown_status_is_refused_before_anything_opens() {
        let args = ListArgs {
            source: Source {
                data: super::super::DataDir { path: "/nonexistent".into(), log: None },
                url: None,
                token: None,
            },
            workspace: None,
            tenant: None,
            status: Some("sleeping".into()),
            outcome: None,
            operation_type: None,
            initiator: None,
            from: None,
            to: None,
            limit: None,
            cursor: None,
            summary: false,
            json: false,
        };
        assert!(args.query().filter().is_err());
    }

    #[test]
    fn the_list_reads_as_a_table_with_the_next_cursor() {
        let page = json!({"runs": [{"id": "r1", "operation_type": "sync", "tenant_id": "t1",
            "initiator": {"kind": "system"}, "status": "completed", "outcome": "blocked", "queued_at": null,
            "completed_at": "2026-01-01T00:00:00Z", "reason_code": "tenant_archived"}], "next_cursor": "ab"});
        let text = list_text(&page);
        assert!(text.starts_with("RUN"), "{text}");
        assert!(
            text.contains("r1   sync  t1      system     completed  blocked  2026-01-01T00:00:00Z  tenant_archived")
        );
        assert!(text.ends_with("1 run; next page: --cursor ab\n"), "{text}");
        assert_eq!(list_text(&json!({"runs": [], "next_cursor": null})), "no runs\n");
        let mut middle = page.clone();
        middle["prev_cursor"] = json!("newer-cd");
        assert!(list_text(&middle).ends_with("1 run; newer: --cursor newer-cd; next page: --cursor ab\n"));
    }

    #[test]
    fn the_summary_reads_as_the_total_then_the_counts() {
        let totals = json!({"total": 4, "by_status": {"completed": 3, "queued": 1, "running": 0},
            "by_outcome": {"blocked": 2, "failed": 1, "partially_succeeded": 0, "pending": 1, "succeeded": 0},
            "complete": true});
        assert_eq!(
            summary_text(&totals),
            "4 runs\nby status: completed 3, queued 1, running 0\n\
             by outcome: blocked 2, failed 1, partially succeeded 0, pending 1, succeeded 0\n"
        );
        let partial = json!({"total": 10000, "by_status": {}, "by_outcome": {}, "complete": false});
        assert!(summary_text(&partial).starts_with("10000 runs (the newest 10000 runs only)\n"));
        let refused = Cli::try_parse_from(["runs", "list", "--summary", "--limit", "5"]);
        assert!(refused.is_err(), "a summary has no pages");
    }

    #[test]
    fn the_detail_shows_the_run_and_its_timeline() {
        let detail = json!({"run": {"id": "r1", "operation_type": "sync", "tenant_id": "t1", "workspace_id": "w1",
            "initiator": {"kind": "actor", "id": "u1"}, "authority_mode": "actor_bound", "status": "completed",
            "outcome": "failed", "attempts": 1, "provider_connection_id": "c1", "queued_at": "T0",
            "summary_counts": {"total": 3}, "failure": {"code": "boom", "message": "it broke"}},
            "timeline": [{"position": 7, "recorded_at": "T0", "type": "run_queued", "summary": "queued"}]});
        let text = show_text(&detail);
        for expected in [
            "run r1\n",
            "  operation   sync on tenant t1 (workspace w1)\n",
            "  initiator   actor u1 (actor_bound)\n",
            "  status      completed, outcome failed\n",
            "  counts      {\"total\":3}\n",
            "  failure     boom: it broke\n",
            "7         T0           run_queued  queued\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        assert!(!text.contains("reason"), "{text}");
    }
}
