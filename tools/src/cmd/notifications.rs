//! `opledger notifications --actor ACTOR [--unread]`: an initiator's inbox,
//! newest first, with the unread count.

use std::process::ExitCode;

use anyhow::bail;
use opledger_projections::notifications;
use serde_json::{json, Value};

use super::source::{field, print_json, print_text, Source, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: Source,
    /// Whose inbox. Required on a data directory and with a service token;
    /// an actor token reads its own inbox.
    #[arg(long)]
    actor: Option<String>,
    /// Only the unread notifications.
    #[arg(long)]
    unread: bool,
    /// Most notifications shown (at most 200).
    #[arg(long)]
    limit: Option<usize>,
    /// Print the API's JSON (`{"notifications": [...], "unread": N}`).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inbox: Value = match args.source.target()? {
        Target::Remote(remote) => {
            let mut params: Vec<(&str, String)> = Vec::new();
            params.extend(args.actor.clone().map(|actor| ("actor_id", actor)));
            if args.unread {
                params.push(("unread", "true".to_owned()));
            }
            params.extend(args.limit.map(|limit| ("limit", limit.to_string())));
            remote.get("/v1/notifications", &params)?
        }
        Target::Local(data) => {
            let Some(actor) = &args.actor else { bail!("--actor is required on a data directory") };
            let limit = args.limit.unwrap_or(notifications::INBOX_PAGE_MAX);
            data.read_models()?.read(|db| {
                let list = notifications::inbox(db, actor, args.unread, limit)?;
                Ok(json!({"notifications": list, "unread": notifications::unread_count(db, actor)?}))
            })?
        }
    };
    match args.json {
        true => print_json(&inbox)?,
        false => print_text(&inbox_text(&inbox, args.actor.as_deref()))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The inbox as text: one block per notification, unread ones marked.
pub fn inbox_text(inbox: &Value, actor: Option<&str>) -> String {
    let list = inbox.get("notifications").and_then(Value::as_array).cloned().unwrap_or_default();
    let whose = actor.map(|actor| format!(" for {actor}")).unwrap_or_default();
    let unread = inbox.get("unread").and_then(Value::as_u64);
    let mut out = match (list.len(), unread) {
        (1, Some(unread)) => format!("1 notification{whose}, {unread} unread in all\n"),
        (n, Some(unread)) => format!("{n} notifications{whose}, {unread} unread in all\n"),
        (1, None) => format!("1 notification{whose}\n"),
        (n, None) => format!("{n} notifications{whose}\n"),
    };
    for notification in &list {
        let mark = match notification.get("read").and_then(Value::as_bool) {
            Some(true) => " ",
            _ => "*",
        };
        out.push_str(&format!(
            "\n{mark} {}  {}\n  {}\n  run {}\n",
            field(notification, "created_at"),
            field(notification, "title"),
            field(notification, "body"),
            field(notification, "run_id")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn unread_notifications_are_marked() {
        let inbox = json!({"notifications": [
            {"created_at": "T2", "title": "sync failed", "body": "It broke.", "run_id": "r2", "read": false},
            {"created_at": "T1", "title": "sync succeeded", "body": "Fine.", "run_id": "r1", "read": true}],
            "unread": 1});
        let text = inbox_text(&inbox, Some("u1"));
        assert!(text.starts_with("2 notifications for u1, 1 unread in all\n"), "{text}");
        assert!(text.contains("\n* T2  sync failed\n  It broke.\n  run r2\n"), "{text}");
        assert!(text.contains("\n  T1  sync succeeded\n"), "{text}");
        assert_eq!(inbox_text(&json!({"notifications": []}), None), "0 notifications\n");
    }
}
