//! Initiator notifications (SPEC 5): exactly one per actor-bound run, to
//! its initiator only, when the run reaches its terminal outcome.
//!
//! The terminal events go through one path: `run_start_blocked` (the start
//! gate refused), `run_blocked` (the legitimacy gate refused for good),
//! `run_completed` and `run_cancelled`. There is no separate denial
//! notification, nothing on a requeue or a retry, and nothing for
//! system-authority runs: those stay visible in Monitoring only. A run has
//! one terminal event, so retries cannot duplicate a notification.
//!
//! A notification's id is the id of the terminal event that created it, so
//! a rebuild gives the same ids. `notification_read` events mark it read;
//! reading twice changes nothing.
//!
//! # Tables
//!
//! `notifications`, one row per notification:
//!
//! | column           | holds                                                                | tools  |
//! |------------------|----------------------------------------------------------------------|--------|
//! | `position`       | log position of the terminal event (INTEGER PRIMARY KEY)             | stable |
//! | `id`             | the terminal event's id (TEXT, hyphenated UUID)                      | stable |
//! | `run_id`         | the run (TEXT, hyphenated UUID), one notification per run           | stable |
//! | `actor_id`       | the initiator, the only recipient                                    | stable |
//! | `operation_type` | the run's operation type                                             | stable |
//! | `tenant_id`      | the run's tenant                                                     | stable |
//! | `outcome`        | `succeeded`, `partially_succeeded`, `failed`, `blocked`, `cancelled` | stable |
//! | `reason_code`    | why a blocked run was refused (reason registry); NULL otherwise      | stable |
//! | `title`, `body`  | the words shown to the initiator                                     | stable |
//! | `link_text`      | the words of the link to the run ([`LINK_TEXT`])                     | stable |
//! | `link`           | the run's Monitoring page                                            | stable |
//! | `created_at`     | when the run reached its outcome (TEXT, `2024-01-01T00:00:00.000000Z`) | stable |
//! | `read_at`        | when it was first marked read; NULL while unread                     | stable |
//! | `read_position`  | log position of that first `notification_read`; NULL while unread    | stable |
//!
//! Indexes: `(actor_id, position)` (the inbox), `(actor_id, position)` over
//! the unread rows only (the unread inbox), `run_id` (unique).
//!
//! `notification_unread_counts`: `actor_id` → `unread` (> 0; actors with
//! none have no row). Stable.
//!
//! `notification_runs`, internal: what a run's terminal event and the reads
//! of its notification need, from the run's first event: `run_id`,
//! `actor_id` (NULL for a system-authority run), `operation_type`,
//! `tenant_id`, and `notification` (the notification's position, once
//! there is one). A system run's row goes when it ends: nothing refers to
//! it any more.

use chrono::{DateTime, Utc};
use opledger::domain::model::RunOutcome;
use opledger::domain::reason::ReasonCode;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::projector::{Projection, ProjectionBatch};

mod batch;
mod query;

pub use query::{cursor_position, inbox, of_run, unread_count};

/// The projection's name.
pub const NAME: &str = "notifications";
/// Most notifications one inbox read returns.
pub const INBOX_PAGE_MAX: usize = 200;

/// One page of an actor's inbox, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxPage {
    pub notifications: Vec<Notification>,
    /// The `before` of the next (older) page; `None` on the last page.
    pub next_before: Option<u64>,
}
/// The words of the link to the run (SPEC 8).
pub const LINK_TEXT: &str = "View run";

const TABLES: &str = "
CREATE TABLE notifications (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    operation_type TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason_code TEXT,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    link_text TEXT NOT NULL,
    link TEXT NOT NULL,
    created_at TEXT NOT NULL,
    read_at TEXT,
    read_position INTEGER
) STRICT;
CREATE TABLE notification_unread_counts (
    actor_id TEXT PRIMARY KEY,
    unread INTEGER NOT NULL CHECK (unread >= 0)
) STRICT, WITHOUT ROWID;
CREATE TABLE notification_runs (
    run_id TEXT PRIMARY KEY,
    actor_id TEXT,
    operation_type TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    notification INTEGER
) STRICT, WITHOUT ROWID;
";

const INDEXES: &str = "
CREATE INDEX notifications_inbox ON notifications (actor_id, position);
CREATE INDEX notifications_unread ON notifications (actor_id, position) WHERE read_position IS NULL;
CREATE UNIQUE INDEX notifications_by_run ON notifications (run_id);
";

/// The initiator notifications projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifications;

impl Projection for Notifications {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static str {
        TABLES
    }

    fn indexes(&self) -> &'static str {
        INDEXES
    }

    fn batch<'c>(&self, db: &'c Connection) -> Box<dyn ProjectionBatch + 'c> {
        Box::new(batch::NotificationsBatch::new(db))
    }
}

/// One notification. The API's fields (`id`, `run_id`, `outcome`, `title`,
/// `body`, `read`, `created_at`) and a few more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// The id of the terminal event.
    #[serde(rename = "id")]
    pub id: Uuid,
    #[serde(rename = "run_id")]
    pub run_id: Uuid,
    /// The initiator, the only recipient.
    #[serde(rename = "actor_id")]
    pub actor_id: String,
    #[serde(rename = "operation_type")]
    pub operation_type: String,
    #[serde(rename = "tenant_id")]
    pub tenant_id: String,
    #[serde(rename = "outcome")]
    pub outcome: RunOutcome,
    #[serde(rename = "reason_code")]
    #[schema(required = true)]
    pub reason_code: Option<ReasonCode>,
    #[serde(rename = "title")]
    pub title: String,
    #[serde(rename = "body")]
    pub body: String,
    #[serde(rename = "link_text")]
    pub link_text: String,
    /// The run's Monitoring page.
    #[serde(rename = "link")]
    pub link: String,
    #[serde(rename = "read")]
    pub read: bool,
    /// When it was first marked read.
    #[serde(rename = "read_at")]
    #[schema(required = true)]
    pub read_at: Option<DateTime<Utc>>,
    /// When the run reached its outcome.
    #[serde(rename = "created_at")]
    pub created_at: DateTime<Utc>,
    /// Log position of the terminal event.
    #[serde(rename = "position")]
    pub position: u64,
}

#[cfg(test)]
#[path = "notifications_tests.rs"]
pub(crate) mod tests;
