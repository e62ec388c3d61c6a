//! `opledger authority [--as-of N]`: the authority state as of a position
//! (default the head), each fact with the position of the event that made
//! it true. On a data directory, or over `--url` (`GET /v1/authority`).

use std::process::ExitCode;

use anyhow::anyhow;
use opledger_projections::authority::{report, state_as_of, AuthorityFilter};
use serde_json::Value;

use super::source::{field, print_json, print_text, table, text, Hint, Source, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: Source,
    /// The position to read the authority at (default: the head).
    #[arg(long, value_name = "N")]
    as_of: Option<u64>,
    /// Only this workspace and its tenants.
    #[arg(long)]
    workspace: Option<String>,
    /// Only this tenant (and its workspace).
    #[arg(long)]
    tenant: Option<String>,
    /// Only this actor's memberships and capabilities.
    #[arg(long)]
    actor: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filter = AuthorityFilter {
        workspace_id: args.workspace.clone(),
        tenant_id: args.tenant.clone(),
        actor_id: args.actor.clone(),
    };
    let answer: Value = match args.source.target()? {
        Target::Local(data) => {
            let log = data.open_existing_log(Hint::Query)?;
            let (as_of, state) = state_as_of(&log, args.as_of).map_err(|error| anyhow!("{error}"))?;
            serde_json::to_value(report(as_of, &state, &filter))?
        }
        Target::Remote(remote) => {
            let mut query: Vec<(&str, String)> = Vec::new();
            query.extend(args.as_of.map(|n| ("as_of", n.to_string())));
            query.extend(args.workspace.map(|w| ("workspace_id", w)));
            query.extend(args.tenant.map(|t| ("tenant_id", t)));
            query.extend(args.actor.map(|a| ("actor_id", a)));
            remote.get("/v1/authority", &query)?
        }
    };
    match args.json {
        true => print_json(&answer)?,
        false => print_text(&authority_text(&answer))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn items(value: &Value, name: &str) -> Vec<Value> {
    value.get(name).and_then(Value::as_array).cloned().unwrap_or_default()
}

/// `value (position)`, or `-`.
fn since(value: &Value) -> String {
    match value.get("value") {
        Some(inner) => format!("{} ({})", text(inner), field(value, "position")),
        None => "-".to_owned(),
    }
}

/// The report in words: one table per kind of fact.
pub fn authority_text(report: &Value) -> String {
    let mut out = format!(
        "authority as of position {} (the last authority event at or before it: {})\n",
        field(report, "as_of"),
        field(report, "authority_position")
    );
    let workspaces: Vec<Vec<String>> = items(report, "workspaces")
        .iter()
        .map(|w| vec![field(w, "workspace_id"), field(w, "registered_position")])
        .collect();
    out.push_str("\nworkspaces\n");
    out.push_str(&table(&["WORKSPACE", "REGISTERED AT"], &workspaces));
    let tenants: Vec<Vec<String>> = items(report, "tenants")
        .iter()
        .map(|t| {
            let gate = match t["write_gate_open"]["value"].as_bool() {
                Some(true) => format!("open ({})", t["write_gate_open"]["position"]),
                _ => format!("closed ({})", t["write_gate_open"]["position"]),
            };
            let default = t.get("default_connection").map_or("-".to_owned(), since);
            vec![field(t, "tenant_id"), field(t, "workspace_id"), since(&t["lifecycle"]), gate, default]
        })
        .collect();
    out.push_str("\ntenants\n");
    out.push_str(&table(&["TENANT", "WORKSPACE", "LIFECYCLE", "WRITE GATE", "DEFAULT CONNECTION"], &tenants));
    out.push_str("\nmembers and capabilities\n");
    out.push_str(&table(&["WHERE", "ACTOR", "HOLDS", "SINCE POSITION"], &grants(report)));
    let connections: Vec<Vec<String>> = items(report, "connections")
        .iter()
        .map(|c| vec![field(c, "connection_id"), field(c, "tenant_id"), since(&c["status"])])
        .collect();
    out.push_str("\nconnections\n");
    out.push_str(&table(&["CONNECTION", "TENANT", "STATUS"], &connections));
    let catalog: Vec<Vec<String>> = items(report, "catalog")
        .iter()
        .map(|e| {
            let flags = [("provider_backed", "provider"), ("writes", "writes"), ("system_authority_allowed", "system")]
                .iter()
                .filter(|(key, _)| e[*key].as_bool() == Some(true))
                .map(|(_, word)| *word)
                .collect::<Vec<_>>()
                .join(",");
            vec![
                field(e, "operation_type"),
                field(e, "required_capability"),
                if flags.is_empty() { "-".to_owned() } else { flags },
                field(e, "max_attempts"),
                field(e, "position"),
            ]
        })
        .collect();
    out.push_str("\ncatalog\n");
    out.push_str(&table(&["OPERATION TYPE", "CAPABILITY", "FLAGS", "MAX ATTEMPTS", "SINCE POSITION"], &catalog));
    out
}

/// Memberships of workspaces and tenants, and capabilities, one a row.
fn grants(report: &Value) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for workspace in items(report, "workspaces") {
        let place = format!("workspace {}", field(&workspace, "workspace_id"));
        for member in items(&workspace, "members") {
            rows.push(vec![place.clone(), field(&member, "actor_id"), "member".to_owned(), field(&member, "position")]);
        }
    }
    for tenant in items(report, "tenants") {
        let place = format!("tenant {}", field(&tenant, "tenant_id"));
        for member in items(&tenant, "members") {
            rows.push(vec![place.clone(), field(&member, "actor_id"), "member".to_owned(), field(&member, "position")]);
        }
        for grant in items(&tenant, "capabilities") {
            rows.push(vec![
                place.clone(),
                field(&grant, "actor_id"),
                field(&grant, "capability"),
                field(&grant, "position"),
            ]);
        }
    }
    rows
}
