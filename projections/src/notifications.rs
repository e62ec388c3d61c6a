//! Initiator notifications (SPEC 5): exactly one per actor-bound run, to
//! its initiator only, when the run reaches its terminal outcome.
//!
//! The three terminal events go through one path: `run_start_blocked` (the
//! start gate refused), `run_blocked` (the legitimacy gate refused for good)
//! and `run_completed`. There is no separate denial notification, nothing on
//! a requeue or a retry, and nothing for system-authority runs: those stay
//! visible in Monitoring only. A run has one terminal event, so retries
//! cannot duplicate a notification.
//!
//! A notification's id is the id of the terminal event that created it, so
//! a rebuild gives the same ids. `notification_read` events mark it read;
//! reading twice changes nothing.
//!
//! Key layout (positions are 8 bytes big-endian):
//! - `n:` actor `0x00` position → the notification (JSON), the inbox in
//!   log order; the position is the terminal event's;
//! - `u:` actor `0x00` position → empty, while unread;
//! - `c:` actor → the unread count (8 bytes big-endian);
//! - `k:` run id (16 bytes) → the run's initiator, type and tenant from its
//!   first event, and later the position of its notification. System runs
//!   lose theirs when they end: nothing refers to it any more.

use std::ops::Bound;

use chrono::{DateTime, Utc};
use opledger::domain::authority::AuthorityState;
use opledger::domain::events::{DomainEvent, NotificationRead};
use opledger::domain::model::{Principal, RunOutcome};
use opledger::domain::reason::ReasonCode;
use opledger::domain::run::{Failure, RunEvent, RunSpec};
use opledger::log::views::{Pending, View};
use opledger::Envelope;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::projector::Projection;

/// The projection's name, and so its view's.
pub const NAME: &str = "notifications";
/// The version of this view's layout (see [`crate::Projection::layout_version`]).
pub const LAYOUT_VERSION: u32 = 1;
/// Most notifications one inbox read returns.
pub const INBOX_PAGE_MAX: usize = 200;
/// The words of the link to the run (SPEC 8).
pub const LINK_TEXT: &str = "View run";

const NOTIFICATION: &[u8] = b"n:";
const UNREAD: &[u8] = b"u:";
const UNREAD_COUNT: &[u8] = b"c:";
const RUN_RECORD: &[u8] = b"k:";

/// The initiator notifications projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifications;

/// One notification. The API's fields (`id`, `run_id`, `outcome`, `title`,
/// `body`, `read`, `created_at`) and a few more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    pub read_at: Option<DateTime<Utc>>,
    /// When the run reached its outcome.
    #[serde(rename = "created_at")]
    pub created_at: DateTime<Utc>,
    /// Log position of the terminal event.
    #[serde(rename = "position")]
    pub position: u64,
}

/// What the terminal event of a run needs from its first event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRecord {
    /// `None` for a system-authority run: it gets no notification.
    #[serde(rename = "actor_id")]
    actor_id: Option<String>,
    #[serde(rename = "operation_type")]
    operation_type: String,
    #[serde(rename = "tenant_id")]
    tenant_id: String,
    /// Position of the run's notification, once there is one.
    #[serde(rename = "notification")]
    notification: Option<u64>,
}

impl RunRecord {
    fn of(spec: &RunSpec) -> RunRecord {
        RunRecord {
            actor_id: spec.initiator.actor_id().map(str::to_owned),
            operation_type: spec.operation_type.clone(),
            tenant_id: spec.tenant_id.clone(),
            notification: None,
        }
    }
}

/// How a run ended, as the notification tells it.
enum Ending<'a> {
    Blocked { reason: Option<ReasonCode>, recorded_next_step: &'a str },
    Completed { outcome: RunOutcome, failure: Option<&'a Failure> },
    Cancelled { by: &'a Principal, reason: Option<&'a str> },
}

impl Projection for Notifications {
    fn name(&self) -> &'static str {
        NAME
    }

    fn layout_version(&self) -> u32 {
        LAYOUT_VERSION
    }

    fn apply(
        &self,
        pending: &mut Pending<'_>,
        envelope: &Envelope,
        event: &DomainEvent,
        _authority: &AuthorityState,
    ) -> Result<(), String> {
        match event {
            DomainEvent::Run { run_id, event } => apply_run(pending, envelope, *run_id, event),
            DomainEvent::NotificationRead(read) => mark_read(pending, envelope, read),
            DomainEvent::Authority(_) => Ok(()),
        }
    }
}

fn apply_run(pending: &mut Pending<'_>, envelope: &Envelope, run_id: Uuid, event: &RunEvent) -> Result<(), String> {
    match event {
        RunEvent::RunQueued { spec, .. } => put_record(pending, run_id, &RunRecord::of(spec)),
        RunEvent::RunStartBlocked { spec, start_decision, next_step, .. } => {
            let ending = Ending::Blocked { reason: start_decision.reason_code, recorded_next_step: next_step };
            notify(pending, envelope, run_id, RunRecord::of(spec), &ending)
        }
        RunEvent::RunBlocked { reason_code, next_step, .. } => {
            let ending = Ending::Blocked { reason: Some(*reason_code), recorded_next_step: next_step };
            notify(pending, envelope, run_id, load_record(pending, run_id)?, &ending)
        }
        RunEvent::RunCompleted { outcome, failure, .. } => {
            let ending = Ending::Completed { outcome: outcome.outcome(), failure: failure.as_ref() };
            notify(pending, envelope, run_id, load_record(pending, run_id)?, &ending)
        }
        RunEvent::RunCancelled { cancelled_by, reason, .. } => {
            let ending = Ending::Cancelled { by: cancelled_by, reason: reason.as_deref() };
            notify(pending, envelope, run_id, load_record(pending, run_id)?, &ending)
        }
        _ => Ok(()),
    }
}

/// The one path every terminal event takes.
fn notify(
    pending: &mut Pending<'_>,
    envelope: &Envelope,
    run_id: Uuid,
    mut record: RunRecord,
    ending: &Ending<'_>,
) -> Result<(), String> {
    let Some(actor_id) = record.actor_id.clone() else {
        pending.delete(run_record_key(run_id));
        return Ok(());
    };
    if record.notification.is_some() {
        return Err(format!("run {run_id} ended twice: it already has its notification"));
    }
    let notification = compose(envelope, run_id, &record, &actor_id, ending);
    let position = envelope.position;
    pending.put(notification_key(&actor_id, position), encode(&notification)?);
    pending.put(unread_key(&actor_id, position), Vec::new());
    add_unread(pending, &actor_id, 1)?;
    record.notification = Some(position);
    put_record(pending, run_id, &record)
}

fn compose(envelope: &Envelope, run_id: Uuid, record: &RunRecord, actor_id: &str, ending: &Ending<'_>) -> Notification {
    let (outcome, reason_code, title, body) = wording(record, ending);
    Notification {
        id: envelope.id,
        run_id,
        actor_id: actor_id.to_owned(),
        operation_type: record.operation_type.clone(),
        tenant_id: record.tenant_id.clone(),
        outcome,
        reason_code,
        title,
        body,
        link_text: LINK_TEXT.to_owned(),
        link: format!("/admin/operations/{run_id}"),
        read: false,
        read_at: None,
        created_at: envelope.recorded_at,
        position: envelope.position,
    }
}

/// Outcome, reason, title and body. Refusals read as the reason registry
/// words them, so the inbox says what every other surface says.
fn wording(record: &RunRecord, ending: &Ending<'_>) -> (RunOutcome, Option<ReasonCode>, String, String) {
    let operation = &record.operation_type;
    match ending {
        Ending::Blocked { reason: Some(reason), .. } => {
            let body = format!("{} {}.", reason.operator_message(), reason.next_step());
            (RunOutcome::Blocked, Some(*reason), format!("{operation} blocked"), body)
        }
        Ending::Blocked { reason: None, recorded_next_step } => {
            let body = format!("The operation was refused. {recorded_next_step}.");
            (RunOutcome::Blocked, None, format!("{operation} blocked"), body)
        }
        Ending::Completed { outcome, failure } => {
            let word = outcome.operator_word();
            let mut body = format!("Run of {operation} on tenant {} completed: {word}.", record.tenant_id);
            if let (RunOutcome::Failed, Some(failure)) = (outcome, failure) {
                body = format!("{body} {}", failure.message);
            }
            (*outcome, None, format!("{operation} {word}"), body)
        }
        Ending::Cancelled { by, reason } => {
            let mut body = format!("Run of {operation} on tenant {} was cancelled by {by}.", record.tenant_id);
            if let Some(reason) = reason {
                body = format!("{body} Reason: {reason}");
            }
            let word = RunOutcome::Cancelled.operator_word();
            (RunOutcome::Cancelled, None, format!("{operation} {word}"), body)
        }
    }
}

/// Marks a notification read; a second read changes nothing.
fn mark_read(pending: &mut Pending<'_>, envelope: &Envelope, read: &NotificationRead) -> Result<(), String> {
    let missing = || format!("actor {} has no notification for run {}", read.actor_id, read.run_id);
    let record = pending.get(&run_record_key(read.run_id)).map_err(|e| e.to_string())?;
    let record: RunRecord = match record {
        Some(bytes) => decode(&bytes, "run record")?,
        None => return Err(missing()),
    };
    let Some(position) = record.notification.filter(|_| record.actor_id.as_deref() == Some(&read.actor_id)) else {
        return Err(missing());
    };
    let key = notification_key(&read.actor_id, position);
    let bytes = pending.get(&key).map_err(|e| e.to_string())?.ok_or_else(missing)?;
    let mut notification: Notification = decode(&bytes, "notification")?;
    if notification.read {
        return Ok(());
    }
    notification.read = true;
    notification.read_at = Some(envelope.recorded_at);
    pending.put(key, encode(&notification)?);
    pending.delete(unread_key(&read.actor_id, position));
    add_unread(pending, &read.actor_id, -1)
}

fn add_unread(pending: &mut Pending<'_>, actor_id: &str, delta: i64) -> Result<(), String> {
    let key = count_key(actor_id);
    let stored = pending.get(&key).map_err(|e| e.to_string())?;
    let count = stored.map(|bytes| decode_count(&bytes)).transpose()?.unwrap_or(0);
    let count =
        count.checked_add_signed(delta).ok_or_else(|| format!("the unread count of {actor_id} would be negative"))?;
    match count {
        0 => pending.delete(key),
        _ => pending.put(key, count.to_be_bytes().to_vec()),
    }
    Ok(())
}

fn decode_count(bytes: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| "an unread count is not 8 bytes".to_owned())?;
    Ok(u64::from_be_bytes(bytes))
}

fn put_record(pending: &mut Pending<'_>, run_id: Uuid, record: &RunRecord) -> Result<(), String> {
    pending.put(run_record_key(run_id), encode(record)?);
    Ok(())
}

fn load_record(pending: &Pending<'_>, run_id: Uuid) -> Result<RunRecord, String> {
    let bytes = pending.get(&run_record_key(run_id)).map_err(|e| e.to_string())?;
    let bytes = bytes.ok_or_else(|| format!("run {run_id} ends without a run_queued before it"))?;
    decode(&bytes, "run record")
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| e.to_string())
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("a stored {what} does not decode: {e}"))
}

// ---------------------------------------------------------------- keys

fn run_record_key(run_id: Uuid) -> Vec<u8> {
    [RUN_RECORD, run_id.as_bytes().as_slice()].concat()
}

/// `prefix actor 0x00`: an actor id never holds `0x00`.
fn actor_base(prefix: &[u8], actor_id: &str) -> Vec<u8> {
    [prefix, actor_id.as_bytes(), &[0]].concat()
}

fn notification_key(actor_id: &str, position: u64) -> Vec<u8> {
    [actor_base(NOTIFICATION, actor_id).as_slice(), &position.to_be_bytes()].concat()
}

fn unread_key(actor_id: &str, position: u64) -> Vec<u8> {
    [actor_base(UNREAD, actor_id).as_slice(), &position.to_be_bytes()].concat()
}

fn count_key(actor_id: &str) -> Vec<u8> {
    [UNREAD_COUNT, actor_id.as_bytes()].concat()
}

// ---------------------------------------------------------------- queries

/// The newest notifications of `actor_id` (at most `limit`, held to
/// [`INBOX_PAGE_MAX`]), only the unread ones when `unread_only`.
pub fn inbox(
    view: &View,
    actor_id: &str,
    unread_only: bool,
    limit: usize,
) -> Result<Vec<Notification>, ProjectionError> {
    let limit = limit.min(INBOX_PAGE_MAX);
    let prefix = if unread_only { UNREAD } else { NOTIFICATION };
    let base = actor_base(prefix, actor_id);
    let end = [prefix, actor_id.as_bytes(), &[1]].concat();
    let records = view.range(Bound::Included(base.clone()), Bound::Excluded(end), true, limit)?;
    records
        .into_iter()
        .map(|(key, value)| match unread_only {
            false => decode_stored(&key, &value),
            true => load_notification(view, actor_id, &key[base.len()..]),
        })
        .collect()
}

/// How many notifications of `actor_id` are unread.
pub fn unread_count(view: &View, actor_id: &str) -> Result<u64, ProjectionError> {
    let key = count_key(actor_id);
    let stored = view.get(&key)?;
    stored
        .map(|bytes| decode_count(&bytes).map_err(|detail| corrupt(&key, detail)))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// The notification of `run_id`, if the run ended with one.
pub fn of_run(view: &View, run_id: Uuid) -> Result<Option<Notification>, ProjectionError> {
    let key = run_record_key(run_id);
    let Some(bytes) = view.get(&key)? else { return Ok(None) };
    let record: RunRecord = serde_json::from_slice(&bytes).map_err(|e| corrupt(&key, e.to_string()))?;
    match (record.actor_id, record.notification) {
        (Some(actor_id), Some(position)) => load_notification(view, &actor_id, &position.to_be_bytes()).map(Some),
        _ => Ok(None),
    }
}

fn load_notification(view: &View, actor_id: &str, position: &[u8]) -> Result<Notification, ProjectionError> {
    let key = [actor_base(NOTIFICATION, actor_id).as_slice(), position].concat();
    let bytes =
        view.get(&key)?.ok_or_else(|| corrupt(&key, "an index names a notification that is not there".into()))?;
    decode_stored(&key, &bytes)
}

fn decode_stored(key: &[u8], bytes: &[u8]) -> Result<Notification, ProjectionError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, e.to_string()))
}

fn corrupt(key: &[u8], detail: String) -> ProjectionError {
    ProjectionError::Corrupt { key: format!("{NAME}:{}", String::from_utf8_lossy(key)), detail }
}

#[cfg(test)]
#[path = "notifications_tests.rs"]
pub(crate) mod tests;
