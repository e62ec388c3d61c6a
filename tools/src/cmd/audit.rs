//! `opledger audit`: the audit trail, a page at a time (newest first), or
//! with `--export jsonl` every matching entry, oldest first, as JSON Lines
//! on stdout. `--as-of N` cuts the trail at log position N.

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use opledger_projections::audit::{self, AuditEntry, AuditFilter};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::remote::Remote;
use super::source::{field, principal_text, print_json, print_text, quiet_on_closed_pipe, table, Source, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: Source,
    /// Only entries on this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only entries caused by this actor id (`system` for the system's).
    #[arg(long)]
    actor: Option<String>,
    /// Only entries of this run.
    #[arg(long)]
    run: Option<Uuid>,
    /// Only entries of this action (the event type, e.g. `run_blocked`, `capability_revoked`).
    #[arg(long)]
    action: Option<String>,
    /// Only entries recorded at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// Only entries recorded before this time (RFC 3339, exclusive).
    #[arg(long)]
    to: Option<DateTime<Utc>>,
    /// The trail as of log position N: only entries at or below it.
    #[arg(long, value_name = "N")]
    as_of: Option<u64>,
    /// Entries per page (default 100, at most 1000).
    #[arg(long, conflicts_with = "export")]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[arg(long, conflicts_with = "export")]
    cursor: Option<String>,
    /// Write every matching entry, oldest first, as JSON Lines to stdout.
    #[arg(long, value_name = "FORMAT", value_parser = ["jsonl"])]
    export: Option<String>,
    /// Print the API's JSON (`{"entries": [...], "next_cursor": ...}`).
    #[arg(long, conflicts_with = "export")]
    json: bool,
}

/// A page of `GET /v1/audit`, typed so that an export from a server is
/// byte for byte the export from a data directory.
#[derive(Debug, Deserialize)]
struct Page {
    entries: Vec<AuditEntry>,
    next_cursor: Option<String>,
}

impl Args {
    fn filter(&self) -> AuditFilter {
        AuditFilter {
            tenant_id: self.tenant.clone(),
            actor_id: self.actor.clone(),
            run_id: self.run,
            action: self.action.clone(),
            from: self.from,
            to: self.to,
            as_of: self.as_of,
        }
    }

    /// The filter's query parameters of `GET /v1/audit`.
    fn params(&self) -> Vec<(&'static str, String)> {
        let time = |at: &DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let texts = [
            ("tenant_id", self.tenant.clone()),
            ("actor_id", self.actor.clone()),
            ("run_id", self.run.map(|r| r.to_string())),
            ("action", self.action.clone()),
            ("from", self.from.as_ref().map(time)),
            ("to", self.to.as_ref().map(time)),
            ("as_of", self.as_of.map(|n| n.to_string())),
        ];
        texts.into_iter().filter_map(|(name, value)| value.map(|v| (name, v))).collect()
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = args.source.target()?;
    if args.export.is_some() {
        quiet_on_closed_pipe(export(&args, target))?;
        return Ok(ExitCode::SUCCESS);
    }
    let page: Value = match target {
        Target::Remote(remote) => {
            let mut params = args.params();
            params.extend(args.limit.map(|l| ("limit", l.to_string())));
            params.extend(args.cursor.clone().map(|c| ("cursor", c)));
            remote.get("/v1/audit", &params)?
        }
        Target::Local(data) => {
            let page = data
                .read_models()?
                .read(|db| Ok(audit::list(db, &args.filter(), args.cursor.as_deref(), args.limit)?))?;
            serde_json::to_value(page)?
        }
    };
    match args.json {
        true => print_json(&page)?,
        false => print_text(&page_text(&page))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn export(args: &Args, target: Target) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    match target {
        Target::Local(data) => {
            data.read_models()?.read(|db| Ok(audit::export_jsonl(db, &args.filter(), &mut out)?))?;
        }
        Target::Remote(remote) => export_remote(&remote, args.params(), &mut out)?,
    }
    out.flush()?;
    Ok(())
}

/// Every matching entry from the server, oldest first, in the memory of one
/// page: the server pages newest first (from the moment of the first
/// request), so the pages are spooled and written out in reverse.
fn export_remote(remote: &Remote, params: Vec<(&'static str, String)>, out: &mut impl Write) -> anyhow::Result<()> {
    let mut spool = Spool::new()?;
    let mut cursor: Option<String> = None;
    loop {
        let mut query = params.clone();
        query.push(("limit", audit::PAGE_SIZE_MAX.to_string()));
        query.extend(cursor.take().map(|c| ("cursor", c)));
        let page: Page = remote.get("/v1/audit", &query)?;
        spool.push(&page.entries)?;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    spool.write_reversed::<AuditEntry>(out)
}

/// Pages of items kept in an unnamed temporary file (gone with the
/// process), to be written back last page first, each page last item first,
/// as JSON Lines.
struct Spool {
    file: std::fs::File,
    /// (offset, length) of each page's JSON array.
    pages: Vec<(u64, usize)>,
    end: u64,
}

impl Spool {
    fn new() -> anyhow::Result<Spool> {
        Ok(Spool { file: tempfile::tempfile()?, pages: Vec::new(), end: 0 })
    }

    fn push<T: serde::Serialize>(&mut self, page: &[T]) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(page)?;
        self.file.write_all(&bytes)?;
        self.pages.push((self.end, bytes.len()));
        self.end += bytes.len() as u64;
        Ok(())
    }

    fn write_reversed<T: serde::Serialize + serde::de::DeserializeOwned>(
        mut self,
        out: &mut impl Write,
    ) -> anyhow::Result<()> {
        for (offset, length) in std::mem::take(&mut self.pages).into_iter().rev() {
            self.file.seek(SeekFrom::Start(offset))?;
            let mut bytes = vec![0; length];
            self.file.read_exact(&mut bytes)?;
            let items: Vec<T> = serde_json::from_slice(&bytes)?;
            for item in items.iter().rev() {
                serde_json::to_writer(&mut *out, item)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }
}

/// A page of the trail as a table.
pub fn page_text(page: &Value) -> String {
    let entries = page.get("entries").and_then(Value::as_array).cloned().unwrap_or_default();
    if entries.is_empty() {
        return "no audit entries\n".to_owned();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            vec![
                field(entry, "position"),
                field(entry, "recorded_at"),
                field(entry, "action"),
                principal_text(entry.get("caused_by").unwrap_or(&Value::Null)),
                field(entry, "tenant_id"),
                field(entry, "summary"),
            ]
        })
        .collect();
    let mut out = table(&["POSITION", "RECORDED AT", "ACTION", "CAUSED BY", "TENANT", "SUMMARY"], &rows);
    let count = match entries.len() {
        1 => "1 entry".to_owned(),
        n => format!("{n} entries"),
    };
    match page.get("next_cursor").and_then(Value::as_str) {
        Some(cursor) => out.push_str(&format!("{count}; next page: --cursor {cursor}\n")),
        None => out.push_str(&format!("{count}\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_become_the_filter_and_the_query() {
        let run = Uuid::nil();
        let cli = Cli::try_parse_from([
            "audit",
            "--actor",
            "system",
            "--run",
            &run.to_string(),
            "--as-of",
            "42",
            "--to",
            "2026-01-01T00:00:00.5Z",
        ])
        .unwrap();
        let filter = cli.args.filter();
        assert_eq!((filter.actor_id.as_deref(), filter.run_id, filter.as_of), (Some("system"), Some(run), Some(42)));
        assert_eq!(
            cli.args.params(),
            [
                ("actor_id", "system".to_owned()),
                ("run_id", run.to_string()),
                ("to", "2026-01-01T00:00:00.500Z".to_owned()),
                ("as_of", "42".to_owned())
            ]
        );
    }

    #[test]
    fn export_takes_jsonl_only_and_no_paging() {
        assert!(Cli::try_parse_from(["audit", "--export", "jsonl"]).is_ok());
        assert!(Cli::try_parse_from(["audit", "--export", "csv"]).is_err());
        assert!(Cli::try_parse_from(["audit", "--export", "jsonl", "--cursor", "x"]).is_err());
        assert!(Cli::try_parse_from(["audit", "--export", "jsonl", "--json"]).is_err());
    }

    #[test]
    fn spooled_pages_come_back_oldest_first() {
        let mut spool = Spool::new().unwrap();
        spool.push(&[json!({"position": 9}), json!({"position": 8})]).unwrap();
        spool.push::<Value>(&[]).unwrap();
        spool.push(&[json!({"position": 5}), json!({"position": 3}), json!({"position": 1})]).unwrap();
        let mut out = Vec::new();
        spool.write_reversed::<Value>(&mut out).unwrap();
        let positions: Vec<u64> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap()["position"].as_u64().unwrap())
            .collect();
        assert_eq!(positions, [1, 3, 5, 8, 9]);
    }

    #[test]
    fn a_page_reads_as_a_table() {
        let page = json!({"entries": [{"position": 3, "recorded_at": "T", "action": "capability_granted",
            "caused_by": {"kind": "actor", "id": "admin"}, "tenant_id": "t1", "summary": "Capability granted"}],
            "next_cursor": null});
        let text = page_text(&page);
        assert!(text.contains("3         T            capability_granted  actor admin  t1      Capability granted\n"));
        assert!(text.ends_with("1 entry\n"), "{text}");
        assert_eq!(page_text(&json!({"entries": []})), "no audit entries\n");
    }
}
