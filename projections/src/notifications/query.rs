//! Reading the notifications: an actor's inbox, their unread count, a
//! run's notification. Each read is one statement on one index.

use opledger::domain::model::RunOutcome;
use opledger::domain::reason::ReasonCode;
use rusqlite::{Connection, OptionalExtension, Row};
use uuid::Uuid;

use super::{InboxPage, Notification, INBOX_PAGE_MAX};
use crate::error::ProjectionError;
use crate::sql_time;
use crate::store::sqlite;

/// A statement selecting whole rows, in [`decode`]'s column order.
macro_rules! select_notifications {
    ($rest:literal) => {
        concat!(
            "SELECT position, id, run_id, actor_id, operation_type, tenant_id, outcome, reason_code, title, body, \
             link_text, link, created_at, read_at FROM notifications ",
            $rest
        )
    };
}

/// An actor's notifications, newest first: `?1` the actor, `?2` the limit,
/// `?3` the position they are older than (a keyset page).
pub(super) const INBOX: &str =
    select_notifications!("WHERE actor_id = ?1 AND position < ?3 ORDER BY position DESC LIMIT ?2");
/// The same, the unread ones only.
pub(super) const INBOX_UNREAD: &str = select_notifications!(
    "WHERE actor_id = ?1 AND read_position IS NULL AND position < ?3 ORDER BY position DESC LIMIT ?2"
);
/// A run's notification.
pub(super) const OF_RUN: &str = select_notifications!("WHERE run_id = ?1");
/// An actor's unread count.
pub(super) const UNREAD_COUNT: &str = "SELECT unread FROM notification_unread_counts WHERE actor_id = ?1";

/// A page of `actor_id`'s notifications, newest first: at most `limit`
/// (held to 1..=[`INBOX_PAGE_MAX`]) older than position `before` (the newest
/// without it), only the unread ones when `unread_only`.
pub fn inbox(
    db: &Connection,
    actor_id: &str,
    unread_only: bool,
    before: Option<u64>,
    limit: usize,
) -> Result<InboxPage, ProjectionError> {
    let limit = limit.clamp(1, INBOX_PAGE_MAX);
    // One row more than the page: whether an older page follows.
    let asked = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let before = before.map_or(i64::MAX, |position| i64::try_from(position).unwrap_or(i64::MAX));
    let mut statement = db.prepare_cached(if unread_only { INBOX_UNREAD } else { INBOX }).map_err(sqlite)?;
    let mut rows = statement.query((actor_id, asked, before)).map_err(sqlite)?;
    let mut notifications = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite)? {
        notifications.push(decode(row)?);
    }
    let more = notifications.len() > limit;
    notifications.truncate(limit);
    let next_before = match more {
        true => notifications.last().map(|oldest| oldest.position),
        false => None,
    };
    Ok(InboxPage { notifications, next_before })
}

/// The position an inbox cursor (a page's `next_before`, as text) names;
/// `None` for text that is not one: a positive integer in plain digits.
pub fn cursor_position(cursor: &str) -> Option<u64> {
    let digits = !cursor.is_empty() && cursor.bytes().all(|byte| byte.is_ascii_digit());
    cursor.parse::<u64>().ok().filter(|position| digits && *position > 0)
}

/// How many notifications of `actor_id` are unread.
pub fn unread_count(db: &Connection, actor_id: &str) -> Result<u64, ProjectionError> {
    let mut statement = db.prepare_cached(UNREAD_COUNT).map_err(sqlite)?;
    let unread = statement.query_row([actor_id], |row| row.get::<_, i64>(0)).optional().map_err(sqlite)?;
    let corrupt = || ProjectionError::Corrupt {
        key: format!("notification_unread_counts:{actor_id}"),
        detail: "a negative unread count".into(),
    };
    unread.map_or(Ok(0), |unread| u64::try_from(unread).map_err(|_| corrupt()))
}

/// The notification of `run_id`, if the run ended with one.
pub fn of_run(db: &Connection, run_id: Uuid) -> Result<Option<Notification>, ProjectionError> {
    let mut statement = db.prepare_cached(OF_RUN).map_err(sqlite)?;
    let found = statement.query_row([run_id.to_string()], |row| Ok(decode(row))).optional().map_err(sqlite)?;
    found.transpose()
}

/// A row of `notifications` as the notification it stores.
fn decode(row: &Row<'_>) -> Result<Notification, ProjectionError> {
    let position: i64 = row.get(0).map_err(sqlite)?;
    let bad = |detail: String| ProjectionError::Corrupt { key: format!("notifications:{position}"), detail };
    let text = |column: usize| row.get::<_, String>(column).map_err(|e| bad(e.to_string()));
    let optional = |column: usize| row.get::<_, Option<String>>(column).map_err(|e| bad(e.to_string()));
    let uuid = |text: String| Uuid::parse_str(&text).map_err(|e| bad(format!("{text:?} is not a UUID: {e}")));
    let time = |text: String| sql_time::from_text(&text).map_err(bad);
    let outcome = text(6)?;
    let outcome = RunOutcome::ALL
        .into_iter()
        .find(|known| known.as_str() == outcome)
        .ok_or_else(|| bad(format!("{outcome:?} is not an outcome")))?;
    let reason_code = optional(7)?
        .map(|code| ReasonCode::parse(&code).ok_or_else(|| bad(format!("{code:?} is not a reason code"))))
        .transpose()?;
    let read_at = optional(13)?.map(time).transpose()?;
    Ok(Notification {
        id: uuid(text(1)?)?,
        run_id: uuid(text(2)?)?,
        actor_id: text(3)?,
        operation_type: text(4)?,
        tenant_id: text(5)?,
        outcome,
        reason_code,
        title: text(8)?,
        body: text(9)?,
        link_text: text(10)?,
        link: text(11)?,
        read: read_at.is_some(),
        read_at,
        created_at: time(text(12)?)?,
        position: u64::try_from(position).map_err(|_| bad("a negative position".into()))?,
    })
}
