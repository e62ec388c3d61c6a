//! The audit's internal run table: what later events of a run need for
//! their entries, from the run's first event. Written once per run.

use opledger::domain::model::Principal;
use opledger::domain::run::RunSpec;
use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use super::{principal_of, principal_text};

/// What later events of a run need to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RunRecord {
    pub(super) operation_type: String,
    pub(super) tenant_id: String,
    pub(super) workspace_id: String,
    pub(super) initiator: Principal,
}

impl RunRecord {
    pub(super) fn of(spec: &RunSpec) -> RunRecord {
        RunRecord {
            operation_type: spec.operation_type.clone(),
            tenant_id: spec.tenant_id.clone(),
            workspace_id: spec.workspace_id.clone(),
            initiator: spec.initiator.clone(),
        }
    }

    /// "Run of inventory_sync on tenant t1".
    pub(super) fn subject(&self) -> String {
        format!("Run of {} on tenant {}", self.operation_type, self.tenant_id)
    }
}

pub(super) fn insert(db: &Connection, run_id: Uuid, record: &RunRecord) -> Result<(), String> {
    let mut statement = db
        .prepare_cached(
            "INSERT INTO audit_runs (run_id, operation_type, tenant_id, workspace_id, initiator) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(|e| e.to_string())?;
    statement
        .execute((
            run_id.to_string(),
            &record.operation_type,
            &record.tenant_id,
            &record.workspace_id,
            principal_text(&record.initiator),
        ))
        .map_err(|e| format!("the audit record of run {run_id}: {e}"))?;
    Ok(())
}

pub(super) fn load(db: &Connection, run_id: Uuid) -> Result<Option<RunRecord>, String> {
    let mut statement = db
        .prepare_cached("SELECT operation_type, tenant_id, workspace_id, initiator FROM audit_runs WHERE run_id = ?1")
        .map_err(|e| e.to_string())?;
    statement
        .query_row([run_id.to_string()], |row| {
            Ok(RunRecord {
                operation_type: row.get(0)?,
                tenant_id: row.get(1)?,
                workspace_id: row.get(2)?,
                initiator: principal_of(row.get_ref(3)?.as_str()?),
            })
        })
        .optional()
        .map_err(|e| format!("the audit record of run {run_id}: {e}"))
}
