//! Applying events to the audit trail: each meaningful event becomes one
//! row of `audit_entries`, written as it is applied (entries never change).
//! The run records a page reads or writes stay in memory for the page, so a
//! run's events within one page read its record from the file at most once.

use std::collections::HashMap;

use opledger::domain::authority::{AuthorityChange, AuthorityChanged, AuthorityState};
use opledger::domain::events::{DomainEvent, NotificationRead};
use opledger::domain::model::Principal;
use opledger::domain::run::RunEvent;
use opledger::Envelope;
use rusqlite::{CachedStatement, Connection};
use uuid::Uuid;

use super::principal_text;
use super::runs::{self, RunRecord};
use super::summary::{authority_summary, lowercase_first, run_summary};
use crate::projector::ProjectionBatch;
use crate::sql_time;

/// The audit's writes for one page of events.
pub(crate) struct AuditBatch<'c> {
    db: &'c Connection,
    runs: HashMap<Uuid, RunRecord>,
    /// The two inserts of every entry, prepared once per batch rather than
    /// looked up in the statement cache once per event.
    inserts: Option<(CachedStatement<'c>, CachedStatement<'c>)>,
}

const INSERT_ENTRY: &str = "INSERT INTO audit_entries (position, event_id, recorded_at, action, caused_by, tenant_id, \
     workspace_id, run_id, summary) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const INSERT_DETAILS: &str = "INSERT INTO audit_details (position, details) VALUES (?1, ?2)";

/// The entry fields an event determines beyond the envelope's.
struct Subject {
    caused_by: Principal,
    tenant_id: Option<String>,
    workspace_id: Option<String>,
    run_id: Option<Uuid>,
    summary: String,
}

impl<'c> AuditBatch<'c> {
    pub(crate) fn new(db: &'c Connection) -> AuditBatch<'c> {
        AuditBatch { db, runs: HashMap::new(), inserts: None }
    }

    /// The subject of a run event; `None` for events the audit leaves out.
    fn run_subject(&mut self, run_id: Uuid, event: &RunEvent) -> Result<Option<Subject>, String> {
        let record = match event {
            // Signs of life, not decisions: the audit keeps what they led to.
            RunEvent::RunProgressed { .. } | RunEvent::LeaseRenewed { .. } => return Ok(None),
            RunEvent::RunQueued { spec, .. } | RunEvent::RunStartBlocked { spec, .. } => {
                let record = RunRecord::of(spec);
                runs::insert(self.db, run_id, &record)?;
                self.runs.insert(run_id, record);
                self.record(run_id)?
            }
            _ => self.record(run_id)?,
        };
        Ok(Some(Subject {
            caused_by: run_caused_by(record, event),
            tenant_id: Some(record.tenant_id.clone()),
            workspace_id: Some(record.workspace_id.clone()),
            run_id: Some(run_id),
            summary: run_summary(record, event),
        }))
    }

    fn read_subject(&mut self, read: &NotificationRead) -> Result<Subject, String> {
        let record = self.record(read.run_id)?;
        Ok(Subject {
            caused_by: Principal::actor(read.actor_id.clone()),
            tenant_id: Some(record.tenant_id.clone()),
            workspace_id: Some(record.workspace_id.clone()),
            run_id: Some(read.run_id),
            summary: format!(
                "Actor {} read the notification of the {}",
                read.actor_id,
                lowercase_first(&record.subject())
            ),
        })
    }

    /// The run's record: from this page's, or from the file.
    fn record(&mut self, run_id: Uuid) -> Result<&RunRecord, String> {
        if !self.runs.contains_key(&run_id) {
            let record = runs::load(self.db, run_id)?
                .ok_or_else(|| format!("run {run_id} has no run_queued or run_start_blocked before this event"))?;
            self.runs.insert(run_id, record);
        }
        self.runs.get(&run_id).ok_or_else(|| format!("run {run_id}: its record vanished from the page"))
    }

    fn insert_entry(&mut self, envelope: &Envelope, event: &DomainEvent, subject: &Subject) -> Result<(), String> {
        let (entries, details) = match &mut self.inserts {
            Some(inserts) => inserts,
            None => {
                let prepare = |sql| self.db.prepare_cached(sql).map_err(|e| e.to_string());
                self.inserts.insert((prepare(INSERT_ENTRY)?, prepare(INSERT_DETAILS)?))
            }
        };
        let position = i64::try_from(envelope.position).map_err(|_| "the position exceeds SQLite's integers")?;
        entries
            .execute(rusqlite::params![
                position,
                envelope.id.to_string(),
                sql_time::to_text(envelope.recorded_at),
                event.event_type(),
                principal_text(&subject.caused_by),
                subject.tenant_id,
                subject.workspace_id,
                subject.run_id.map(|id| id.to_string()),
                subject.summary,
            ])
            .map_err(|e| format!("writing the audit entry: {e}"))?;
        details
            .execute(rusqlite::params![position, envelope.payload.get()])
            .map_err(|e| format!("writing the audit entry's details: {e}"))?;
        Ok(())
    }
}

impl ProjectionBatch for AuditBatch<'_> {
    fn apply(&mut self, envelope: &Envelope, event: &DomainEvent, authority: &AuthorityState) -> Result<(), String> {
        let subject = match event {
            DomainEvent::Authority(changed) => authority_subject(changed, authority),
            DomainEvent::Run { run_id, event } => match self.run_subject(*run_id, event)? {
                Some(subject) => subject,
                None => return Ok(()),
            },
            DomainEvent::NotificationRead(read) => self.read_subject(read)?,
        };
        self.insert_entry(envelope, event, &subject)
    }

    fn finish(&mut self) -> Result<(), String> {
        // Every write went out as it was applied.
        Ok(())
    }
}

fn authority_subject(changed: &AuthorityChanged, authority: &AuthorityState) -> Subject {
    let change = &changed.change;
    let tenant_id = change.tenant_id().map(str::to_owned).or_else(|| connection_tenant(change, authority));
    let workspace_id = change_workspace(change).or_else(|| {
        let tenant = authority.tenants.get(tenant_id.as_deref()?)?;
        Some(tenant.workspace_id.clone())
    });
    Subject {
        caused_by: changed.changed_by.clone(),
        tenant_id,
        workspace_id,
        run_id: None,
        summary: authority_summary(change),
    }
}

/// A connection status change names no tenant; the connection belongs to one.
fn connection_tenant(change: &AuthorityChange, authority: &AuthorityState) -> Option<String> {
    match change {
        AuthorityChange::ProviderConnectionStatusChanged { connection_id, .. } => {
            authority.connections.get(connection_id).map(|c| c.tenant_id.clone())
        }
        _ => None,
    }
}

fn change_workspace(change: &AuthorityChange) -> Option<String> {
    match change {
        AuthorityChange::WorkspaceRegistered { workspace_id }
        | AuthorityChange::TenantRegistered { workspace_id, .. }
        | AuthorityChange::WorkspaceMemberAdded { workspace_id, .. }
        | AuthorityChange::WorkspaceMemberRemoved { workspace_id, .. } => Some(workspace_id.clone()),
        _ => None,
    }
}

fn run_caused_by(record: &RunRecord, event: &RunEvent) -> Principal {
    match event {
        RunEvent::RunStartDeduped { requested_by, .. } | RunEvent::RunStartRejectedScopeBusy { requested_by, .. } => {
            requested_by.clone()
        }
        RunEvent::LegitimacyEvaluated { .. } | RunEvent::FollowUpAdmitted { .. } => Principal::System,
        RunEvent::AttemptAbandoned { .. } => Principal::System,
        RunEvent::RunCancelled { cancelled_by, .. } => cancelled_by.clone(),
        _ => record.initiator.clone(),
    }
}
