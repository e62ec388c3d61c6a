//! Applying events to the notifications: a terminal event of an actor-bound
//! run inserts its notification, a read marks it read. The run records and
//! unread counts a page touches stay in memory and are written once, in
//! `finish`: a run queued and ended within one page never writes its
//! record twice, and a page's notifications move each count once.

use std::collections::HashMap;

use opledger::domain::authority::AuthorityState;
use opledger::domain::events::{DomainEvent, NotificationRead};
use opledger::domain::model::{Principal, RunOutcome};
use opledger::domain::reason::ReasonCode;
use opledger::domain::run::{Failure, RunEvent, RunSpec};
use opledger::Envelope;
use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use super::LINK_TEXT;
use crate::projector::ProjectionBatch;
use crate::sql_time;

/// What the terminal event of a run (and a read of its notification)
/// needs from the run's first event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunRecord {
    /// `None` for a system-authority run: it gets no notification.
    actor_id: Option<String>,
    operation_type: String,
    tenant_id: String,
    /// Position of the run's notification, once there is one.
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

/// A run record as this page leaves it.
struct Touched {
    /// `None` once the record is to go.
    record: Option<RunRecord>,
    /// Whether the page changed it (and `finish` must write it).
    changed: bool,
}

/// How a run ended, as the notification tells it.
enum Ending<'a> {
    Blocked { reason: Option<ReasonCode>, recorded_next_step: &'a str },
    Completed { outcome: RunOutcome, failure: Option<&'a Failure> },
    Cancelled { by: &'a Principal, reason: Option<&'a str> },
}

/// The notifications' writes for one page of events.
pub(crate) struct NotificationsBatch<'c> {
    db: &'c Connection,
    runs: HashMap<Uuid, Touched>,
    /// Change of each actor's unread count over the page.
    unread: HashMap<String, i64>,
}

impl ProjectionBatch for NotificationsBatch<'_> {
    fn apply(&mut self, envelope: &Envelope, event: &DomainEvent, _authority: &AuthorityState) -> Result<(), String> {
        match event {
            DomainEvent::Run { run_id, event } => self.apply_run(envelope, *run_id, event),
            DomainEvent::NotificationRead(read) => self.mark_read(envelope, read),
            DomainEvent::Authority(_) => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<(), String> {
        for (run_id, touched) in self.runs.drain().filter(|(_, touched)| touched.changed) {
            write_record(self.db, run_id, touched.record.as_ref())?;
        }
        for (actor_id, delta) in self.unread.drain().filter(|(_, delta)| *delta != 0) {
            write_unread(self.db, &actor_id, delta)?;
        }
        Ok(())
    }
}

impl<'c> NotificationsBatch<'c> {
    pub(crate) fn new(db: &'c Connection) -> NotificationsBatch<'c> {
        NotificationsBatch { db, runs: HashMap::new(), unread: HashMap::new() }
    }

    fn apply_run(&mut self, envelope: &Envelope, run_id: Uuid, event: &RunEvent) -> Result<(), String> {
        let ending = match event {
            RunEvent::RunQueued { spec, .. } => {
                self.runs.insert(run_id, Touched { record: Some(RunRecord::of(spec)), changed: true });
                return Ok(());
            }
            RunEvent::RunStartBlocked { spec, start_decision, next_step, .. } => {
                let ending = Ending::Blocked { reason: start_decision.reason_code, recorded_next_step: next_step };
                return self.notify(envelope, run_id, RunRecord::of(spec), &ending);
            }
            RunEvent::RunBlocked { reason_code, next_step, .. } => {
                Ending::Blocked { reason: Some(*reason_code), recorded_next_step: next_step }
            }
            RunEvent::RunCompleted { outcome, failure, .. } => {
                Ending::Completed { outcome: outcome.outcome(), failure: failure.as_ref() }
            }
            RunEvent::RunCancelled { cancelled_by, reason, .. } => {
                Ending::Cancelled { by: cancelled_by, reason: reason.as_deref() }
            }
            _ => return Ok(()),
        };
        let record = self.record(run_id)?.ok_or_else(|| format!("run {run_id} ends without a run_queued before it"))?;
        self.notify(envelope, run_id, record, &ending)
    }

    /// The one path every terminal event takes.
    fn notify(
        &mut self,
        envelope: &Envelope,
        run_id: Uuid,
        record: RunRecord,
        ending: &Ending<'_>,
    ) -> Result<(), String> {
        let Some(actor_id) = record.actor_id.clone() else {
            self.runs.insert(run_id, Touched { record: None, changed: true });
            return Ok(());
        };
        if record.notification.is_some() {
            return Err(format!("run {run_id} ended twice: it already has its notification"));
        }
        insert_notification(self.db, envelope, run_id, &record, &actor_id, ending)?;
        *self.unread.entry(actor_id).or_default() += 1;
        let record = RunRecord { notification: Some(envelope.position), ..record };
        self.runs.insert(run_id, Touched { record: Some(record), changed: true });
        Ok(())
    }

    /// Marks a notification read; a second read changes nothing.
    fn mark_read(&mut self, envelope: &Envelope, read: &NotificationRead) -> Result<(), String> {
        let missing = || format!("actor {} has no notification for run {}", read.actor_id, read.run_id);
        let record = self.record(read.run_id)?.ok_or_else(missing)?;
        let Some(position) = record.notification.filter(|_| record.actor_id.as_deref() == Some(&read.actor_id)) else {
            return Err(missing());
        };
        let mut statement = self
            .db
            .prepare_cached(
                "UPDATE notifications SET read_at = ?2, read_position = ?3 \
                 WHERE position = ?1 AND read_position IS NULL",
            )
            .map_err(|e| e.to_string())?;
        let changed = statement
            .execute((
                sql_position(position)?,
                sql_time::to_text(envelope.recorded_at),
                sql_position(envelope.position)?,
            ))
            .map_err(|e| format!("marking the notification of run {} read: {e}", read.run_id))?;
        if changed == 1 {
            *self.unread.entry(read.actor_id.clone()).or_default() -= 1;
        }
        Ok(())
    }

    /// The run's record as the page stands: from this page, or from the file.
    fn record(&mut self, run_id: Uuid) -> Result<Option<RunRecord>, String> {
        if let Some(touched) = self.runs.get(&run_id) {
            return Ok(touched.record.clone());
        }
        let record = load_record(self.db, run_id)?;
        self.runs.insert(run_id, Touched { record: record.clone(), changed: false });
        Ok(record)
    }
}

fn sql_position(position: u64) -> Result<i64, String> {
    i64::try_from(position).map_err(|_| format!("position {position} exceeds SQLite's integers"))
}

fn insert_notification(
    db: &Connection,
    envelope: &Envelope,
    run_id: Uuid,
    record: &RunRecord,
    actor_id: &str,
    ending: &Ending<'_>,
) -> Result<(), String> {
    let (outcome, reason_code, title, body) = wording(record, ending);
    let mut statement = db
        .prepare_cached(
            "INSERT INTO notifications (position, id, run_id, actor_id, operation_type, tenant_id, outcome, \
             reason_code, title, body, link_text, link, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .map_err(|e| e.to_string())?;
    statement
        .execute(rusqlite::params![
            sql_position(envelope.position)?,
            envelope.id.to_string(),
            run_id.to_string(),
            actor_id,
            record.operation_type,
            record.tenant_id,
            outcome.as_str(),
            reason_code.map(ReasonCode::as_str),
            title,
            body,
            LINK_TEXT,
            format!("/admin/operations/{run_id}"),
            sql_time::to_text(envelope.recorded_at),
        ])
        .map_err(|e| format!("writing the notification of run {run_id}: {e}"))?;
    Ok(())
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

fn load_record(db: &Connection, run_id: Uuid) -> Result<Option<RunRecord>, String> {
    let mut statement = db
        .prepare_cached(
            "SELECT actor_id, operation_type, tenant_id, notification FROM notification_runs WHERE run_id = ?1",
        )
        .map_err(|e| e.to_string())?;
    let found = statement
        .query_row([run_id.to_string()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get::<_, Option<i64>>(3)?))
        })
        .optional()
        .map_err(|e| format!("the notification record of run {run_id}: {e}"))?;
    let Some((actor_id, operation_type, tenant_id, notification)) = found else { return Ok(None) };
    let notification = notification
        .map(|position| u64::try_from(position).map_err(|_| format!("run {run_id}: a negative notification position")))
        .transpose()?;
    Ok(Some(RunRecord { actor_id, operation_type, tenant_id, notification }))
}

/// Writes a record as the page leaves it (`None`: deletes it).
fn write_record(db: &Connection, run_id: Uuid, record: Option<&RunRecord>) -> Result<(), String> {
    let written = match record {
        None => db
            .prepare_cached("DELETE FROM notification_runs WHERE run_id = ?1")
            .and_then(|mut statement| statement.execute([run_id.to_string()])),
        Some(record) => {
            let notification = record.notification.map(sql_position).transpose()?;
            db.prepare_cached(
                "INSERT OR REPLACE INTO notification_runs (run_id, actor_id, operation_type, tenant_id, notification) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut statement| {
                statement.execute(rusqlite::params![
                    run_id.to_string(),
                    record.actor_id,
                    record.operation_type,
                    record.tenant_id,
                    notification,
                ])
            })
        }
    };
    written.map(|_| ()).map_err(|e| format!("writing the notification record of run {run_id}: {e}"))
}

/// Moves an actor's unread count by `delta`; a count of zero has no row.
fn write_unread(db: &Connection, actor_id: &str, delta: i64) -> Result<(), String> {
    let moved = db
        .prepare_cached("UPDATE notification_unread_counts SET unread = unread + ?2 WHERE actor_id = ?1")
        .and_then(|mut statement| statement.execute((actor_id, delta)))
        .and_then(|updated| match updated {
            0 => db
                .prepare_cached("INSERT INTO notification_unread_counts (actor_id, unread) VALUES (?1, ?2)")
                .and_then(|mut statement| statement.execute((actor_id, delta))),
            _ => Ok(updated),
        })
        .and_then(|_| db.prepare_cached("DELETE FROM notification_unread_counts WHERE actor_id = ?1 AND unread = 0"))
        .and_then(|mut statement| statement.execute([actor_id]));
    moved.map(|_| ()).map_err(|e| format!("the unread count of {actor_id} would be negative or was refused: {e}"))
}
