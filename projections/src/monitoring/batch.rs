//! Applying one page of events to Monitoring's tables.
//!
//! A page touches far fewer runs than it has events (a run has a handful
//! of events, mostly close together), so the batch keeps every run it
//! touched decoded in memory and writes its row once, in `finish`: a run's
//! JSON is decoded at most once per page and encoded once. Counters move by
//! the difference between what each run counted towards when the page
//! began and what it counts towards at its end. Timeline rows are written
//! as the events come.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use opledger::domain::authority::AuthorityState;
use opledger::domain::events::DomainEvent;
use opledger::domain::model::RunOutcome;
use opledger::domain::run::{Run, RunEvent};
use opledger::Envelope;
use rusqlite::{params, CachedStatement, Connection, OptionalExtension, Statement};
use uuid::Uuid;

use super::columns::{
    initiator_value, position_value, time_text, BY_OUTCOME, BY_REASON, BY_STATUS, SCOPE_ALL, SCOPE_TENANT, TOTAL,
};
use super::summary::summary;
use crate::projector::ProjectionBatch;

const LOAD_RUN: &str = "SELECT runs.first_position, created_at, run FROM runs \
    JOIN run_documents ON run_documents.first_position = runs.first_position WHERE run_id = ?1";
const INSERT_EVENT: &str = "INSERT INTO run_events \
    (position, event_id, run_id, stream_version, event_type, recorded_at, attempt, summary) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
/// The columns a run's events can change are updated; the others are the
/// run's first event's for good.
const WRITE_RUN: &str = "INSERT INTO runs \
    (first_position, run_id, workspace_id, tenant_id, operation_type, initiator, status, outcome, reason_code, \
     created_at, updated_at, last_position) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
    ON CONFLICT (first_position) DO UPDATE SET status = excluded.status, outcome = excluded.outcome, \
    reason_code = excluded.reason_code, updated_at = excluded.updated_at, last_position = excluded.last_position";
const WRITE_DOCUMENT: &str = "INSERT INTO run_documents (first_position, run) VALUES (?1, ?2) \
    ON CONFLICT (first_position) DO UPDATE SET run = excluded.run";
/// Raises a counter, creating it at need.
const RAISE_COUNTER: &str = "INSERT INTO run_counts (scope, tenant_id, dimension, name, count) \
    VALUES (?1, ?2, ?3, ?4, ?5) \
    ON CONFLICT (scope, tenant_id, dimension, name) DO UPDATE SET count = count + excluded.count";
/// Lowers a counter (a separate statement: SQLite checks the row an upsert
/// would insert, whose negative count the table refuses, before it finds
/// the conflict).
const LOWER_COUNTER: &str = "UPDATE run_counts SET count = count + ?5 \
    WHERE scope = ?1 AND tenant_id = ?2 AND dimension = ?3 AND name = ?4 RETURNING count";
const DELETE_COUNTER: &str =
    "DELETE FROM run_counts WHERE scope = ?1 AND tenant_id = ?2 AND dimension = ?3 AND name = ?4 AND count = 0";

/// Monitoring's writes for one page of events.
pub(crate) struct MonitoringBatch<'c> {
    db: &'c Connection,
    touched: HashMap<Uuid, Touched>,
    /// The timeline insert, prepared once per batch rather than looked up
    /// in the statement cache once per event.
    insert_event: Option<CachedStatement<'c>>,
}

/// A run the page touched, as it stands after the page's events so far.
struct Touched {
    first_position: u64,
    created_at: String,
    last_position: u64,
    updated_at: DateTime<Utc>,
    run: Run,
    /// The counters the run counted towards when the page began (none for
    /// a run the page created).
    counted_before: Vec<Counter>,
}

/// One row of `run_counts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Counter {
    scope: &'static str,
    tenant_id: String,
    dimension: &'static str,
    name: &'static str,
}

impl<'c> MonitoringBatch<'c> {
    pub(crate) fn new(db: &'c Connection) -> MonitoringBatch<'c> {
        MonitoringBatch { db, touched: HashMap::new(), insert_event: None }
    }

    fn apply_run_event(&mut self, envelope: &Envelope, run_id: Uuid, event: &RunEvent) -> Result<(), String> {
        let touched = match self.touched.entry(run_id) {
            Entry::Occupied(entry) => {
                let touched = entry.into_mut();
                touched.run.apply(event, envelope.recorded_at).map_err(|e| format!("run {run_id}: {e}"))?;
                touched
            }
            Entry::Vacant(entry) => entry.insert(match load(self.db, run_id)? {
                Some(mut touched) => {
                    touched.run.apply(event, envelope.recorded_at).map_err(|e| format!("run {run_id}: {e}"))?;
                    touched
                }
                None => created(envelope, run_id, event)?,
            }),
        };
        // The stream version cross-checks that no event of the stream was missed.
        if touched.run.version != envelope.stream_version {
            let (folded, version) = (touched.run.version, envelope.stream_version);
            return Err(format!(
                "run {run_id} folded {folded} events but this event is version {version} of its stream"
            ));
        }
        touched.last_position = envelope.position;
        touched.updated_at = envelope.recorded_at;
        let statement = match &mut self.insert_event {
            Some(statement) => statement,
            None => self.insert_event.insert(self.db.prepare_cached(INSERT_EVENT).map_err(|e| e.to_string())?),
        };
        insert_event(statement, envelope, run_id, event)
    }

    fn write_counters(&self, deltas: HashMap<Counter, i64>) -> Result<(), String> {
        let statement = |sql| self.db.prepare_cached(sql).map_err(|e| e.to_string());
        let (mut raise, mut lower, mut delete) =
            (statement(RAISE_COUNTER)?, statement(LOWER_COUNTER)?, statement(DELETE_COUNTER)?);
        for (counter, delta) in deltas {
            let Counter { scope, tenant_id, dimension, name } = &counter;
            let moved = |e: rusqlite::Error| format!("counter {counter:?} moved by {delta}: {e}");
            if delta > 0 {
                raise.execute(params![scope, tenant_id, dimension, name, delta]).map_err(moved)?;
                continue;
            }
            if delta == 0 {
                continue;
            }
            let count: Option<i64> = lower
                .query_row(params![scope, tenant_id, dimension, name, delta], |row| row.get(0))
                .optional()
                .map_err(moved)?;
            match count {
                None => return Err(format!("counter {counter:?} moved by {delta} but has no row")),
                Some(0) => {
                    delete.execute(params![scope, tenant_id, dimension, name]).map_err(|e| e.to_string())?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

impl ProjectionBatch for MonitoringBatch<'_> {
    fn apply(&mut self, envelope: &Envelope, event: &DomainEvent, _authority: &AuthorityState) -> Result<(), String> {
        match event {
            DomainEvent::Run { run_id, event } => self.apply_run_event(envelope, *run_id, event),
            // Authority changes and notification reads change no run; the
            // gates' decisions that they lead to are run events.
            DomainEvent::Authority(_) | DomainEvent::NotificationRead(_) => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<(), String> {
        let mut deltas: HashMap<Counter, i64> = HashMap::new();
        for (run_id, touched) in self.touched.drain() {
            for counter in &touched.counted_before {
                *deltas.entry(counter.clone()).or_default() -= 1;
            }
            for counter in counters(&touched.run) {
                *deltas.entry(counter).or_default() += 1;
            }
            write_run(self.db, run_id, &touched)?;
        }
        self.write_counters(deltas)
    }
}

/// The run's row as stored before this page, decoded.
fn load(db: &Connection, run_id: Uuid) -> Result<Option<Touched>, String> {
    let row = db
        .prepare_cached(LOAD_RUN)
        .and_then(|mut statement| {
            statement
                .query_row([run_id.to_string()], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, Vec<u8>>(2)?))
                })
                .optional()
        })
        .map_err(|e| e.to_string())?;
    let Some((first_position, created_at, document)) = row else { return Ok(None) };
    let run = super::document::decode(&document, first_position).map_err(|e| e.to_string())?;
    let first_position =
        u64::try_from(first_position).map_err(|_| format!("run {run_id} has a negative first position"))?;
    let counted_before = counters(&run);
    // The event being applied sets where the run was last changed.
    let (last_position, updated_at) = (0, DateTime::<Utc>::MIN_UTC);
    Ok(Some(Touched { first_position, created_at, last_position, updated_at, run, counted_before }))
}

/// A run's first event: the domain's fold decides, and refuses an event
/// that cannot begin a stream (an event for an unknown run).
fn created(envelope: &Envelope, run_id: Uuid, event: &RunEvent) -> Result<Touched, String> {
    let run = Run::create(event, envelope.recorded_at).map_err(|e| format!("unknown run {run_id}: {e}"))?;
    if run.id != run_id {
        return Err(format!("the first event of stream run-{run_id} is for run {}", run.id));
    }
    Ok(Touched {
        first_position: envelope.position,
        created_at: time_text(envelope.recorded_at),
        last_position: envelope.position,
        updated_at: envelope.recorded_at,
        run,
        counted_before: Vec::new(),
    })
}

fn insert_event(
    statement: &mut Statement<'_>,
    envelope: &Envelope,
    run_id: Uuid,
    event: &RunEvent,
) -> Result<(), String> {
    statement
        .execute(params![
            position_value(envelope.position),
            envelope.id.to_string(),
            run_id.to_string(),
            position_value(envelope.stream_version),
            event.event_type(),
            time_text(envelope.recorded_at),
            event.attempt(),
            summary(event),
        ])
        .map(|_| ())
        .map_err(|e| format!("timeline row of run {run_id}: {e}"))
}

fn write_run(db: &Connection, run_id: Uuid, touched: &Touched) -> Result<(), String> {
    let run = &touched.run;
    let document = super::document::encode(run)?;
    let reason_code = match run.outcome {
        RunOutcome::Blocked => run.reason_code.map(|code| code.as_str()),
        _ => None,
    };
    let mut statement = db.prepare_cached(WRITE_RUN).map_err(|e| e.to_string())?;
    statement
        .execute(params![
            position_value(touched.first_position),
            run_id.to_string(),
            run.workspace_id,
            run.tenant_id,
            run.operation_type,
            initiator_value(&run.initiator),
            run.status.as_str(),
            run.outcome.as_str(),
            reason_code,
            touched.created_at,
            time_text(touched.updated_at),
            position_value(touched.last_position),
        ])
        .map_err(|e| format!("row of run {run_id}: {e}"))?;
    let mut statement = db.prepare_cached(WRITE_DOCUMENT).map_err(|e| e.to_string())?;
    statement
        .execute(params![position_value(touched.first_position), document])
        .map(|_| ())
        .map_err(|e| format!("document of run {run_id}: {e}"))
}

/// The counters a run counts towards: the total, its status, its outcome
/// and, for a blocked run, its reason; every run's and its tenant's.
/// `blocked` is an outcome of its own, so a blocked run never counts as
/// `failed`.
fn counters(run: &Run) -> Vec<Counter> {
    let mut found = Vec::with_capacity(8);
    for (scope, tenant_id) in [(SCOPE_ALL, ""), (SCOPE_TENANT, run.tenant_id.as_str())] {
        let counter = |dimension, name| Counter { scope, tenant_id: tenant_id.to_owned(), dimension, name };
        found.push(counter(TOTAL, ""));
        found.push(counter(BY_STATUS, run.status.as_str()));
        found.push(counter(BY_OUTCOME, run.outcome.as_str()));
        if let (RunOutcome::Blocked, Some(code)) = (run.outcome, run.reason_code) {
            found.push(counter(BY_REASON, code.as_str()));
        }
    }
    found
}
