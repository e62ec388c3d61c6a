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
    /// Most notifications shown (1 to 200, default 200).
    #[arg(long)]
    limit: Option<usize>,
    /// Show the notifications older than a page's: its `next_cursor`.
    #[arg(long)]
    cursor: Option<String>,
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
            params.extend(args.cursor.clone().map(|cursor| ("cursor", cursor)));
            remote.get("/v1/notifications", &params)?
        }
        Target::Local(data) => {
            let Some(actor) = &args.actor else { bail!("--actor is required on a data directory") };
            let limit = args.limit.unwrap_or(notifications::INBOX_PAGE_MAX);
            let before = local_cursor(args.cursor.as_deref())?;
            data.read_models()?.read(|db| {
                let page = notifications::inbox(db, actor, args.unread, before, limit)?;
                let next_cursor = page.next_before.map(|position| position.to_string());
                let unread = notifications::unread_count(db, actor)?;
                Ok(json!({"notifications": page.notifications, "unread": unread, "next_cursor": next_cursor}))
            })?
        }
    };
    match args.json {
        true => print_json(&inbox)?,
        false => print_text(&inbox_text(&inbox, args.actor.as_deref()))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The position a cursor names, as the API reads it.
fn local_cursor(cursor: Option<&str>) -> anyhow::Result<Option<u64>> {
    let Some(cursor) = cursor else { return Ok(None) };
    match notifications::cursor_position(cursor) {
        Some(position) => Ok(Some(position)),
        None => bail!("{cursor:?} is not an inbox cursor (a page's next_cursor)"),
    }
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
    if let Some(cursor) = inbox.get("next_cursor").and_then(Value::as_str) {
        out.push_str(&format!("\nOlder notifications: --cursor {cursor}\n"));
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

    #[test]
    fn a_page_with_older_notifications_says_how_to_read_them() {
        let inbox = json!({"notifications": [
            {"created_at": "T2", "title": "sync failed", "body": "It broke.", "run_id": "r2", "read": false}],
            "unread": 1, "next_cursor": "17"});
        assert!(inbox_text(&inbox, None).ends_with("\nOlder notifications: --cursor 17\n"));
        assert_eq!(local_cursor(Some("17")).unwrap(), Some(17));
        for refused in ["0", "-1", "+5", "abc", ""] {
            assert!(local_cursor(Some(refused)).is_err(), "{refused:?}");
        }
    }
}
