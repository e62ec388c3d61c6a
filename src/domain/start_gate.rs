//! The start gate (SPEC 3): a pure function of the domain state and a start
//! request. Accepted, deduped, scope busy or blocked; or a clear error for
//! a request that cannot be a start at all.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::legitimacy::{evaluate, Decision};
use crate::domain::model::{check_id, AuthorityMode, OperationTypeSpec, Principal};
use crate::domain::reason::{ReasonCode, StartNotice};
use crate::domain::run::{RunEvent, RunSpec};
use crate::domain::sanitize::sanitize_json;
use crate::domain::state::{DomainState, IdentityKey};

/// A start, as a worker or the host application asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub operation_type: String,
    pub tenant_id: String,
    pub initiator: Principal,
    #[serde(default)]
    pub provider_connection_id: Option<String>,
    #[serde(default = "empty_context")]
    pub context: serde_json::Value,
    #[serde(default)]
    pub dedupe_key: Option<String>,
}

/// Largest context kept on a run, in bytes of JSON after sanitization. It
/// keeps every run event well under the log's event size limit.
pub const CONTEXT_BYTES_MAX: usize = 16 * 1024;

fn empty_context() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// Why a request is not a start at all. Nothing is appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartRejected {
    #[error("unknown operation type {0}")]
    UnknownOperationType(String),
    #[error("unknown tenant {0}")]
    UnknownTenant(String),
    #[error("invalid start request: {0}")]
    Invalid(String),
}

/// What the start gate decided, with the events that record it (in the
/// stream of the run they name).
#[derive(Debug, Clone, PartialEq)]
pub enum StartDecision {
    Accepted { run_id: Uuid, event: RunEvent },
    Blocked { run_id: Uuid, reason_code: ReasonCode, event: RunEvent },
    Deduped { existing_run_id: Uuid, event: RunEvent },
    ScopeBusy { blocking_run_id: Uuid, event: RunEvent },
}

/// Decides a start. `run_id` is the id the run gets if one is recorded;
/// `admitted_from` names the run whose completion admits this start.
pub fn decide_start(
    state: &DomainState,
    request: &StartRequest,
    run_id: Uuid,
    admitted_from: Option<Uuid>,
) -> Result<StartDecision, StartRejected> {
    let spec = resolve(state, request, run_id, admitted_from)?;
    let decision = evaluate(&spec.facts(), 0, &state.authority);
    if let Some(reason_code) = decision.reason_code {
        let next_step = reason_code.next_step().to_owned();
        let event = RunEvent::RunStartBlocked { attempt: 0, spec, start_decision: decision, next_step };
        return Ok(StartDecision::Blocked { run_id, reason_code, event });
    }
    let key = IdentityKey {
        operation_type: spec.operation_type.clone(),
        tenant_id: spec.tenant_id.clone(),
        provider_connection_id: spec.provider_connection_id.clone(),
    };
    if let Some(existing) = state.duplicate_of(&key, spec.dedupe_key.as_deref()) {
        let event = RunEvent::RunStartDeduped {
            attempt: existing.attempt,
            requested_by: request.initiator.clone(),
            dedupe_key: spec.dedupe_key.clone(),
        };
        return Ok(StartDecision::Deduped { existing_run_id: existing.id, event });
    }
    if let Some(holder) = spec.provider_connection_id.as_deref().and_then(|c| state.scope_holder(c)) {
        let event = RunEvent::RunStartRejectedScopeBusy {
            attempt: holder.attempt,
            requested_by: request.initiator.clone(),
            operation_type: spec.operation_type.clone(),
        };
        return Ok(StartDecision::ScopeBusy { blocking_run_id: holder.id, event });
    }
    Ok(StartDecision::Accepted { run_id, event: RunEvent::RunQueued { attempt: 0, spec, start_decision: decision } })
}

/// The start gate's recorded decision of a start event, for replay.
pub fn start_decision_of(event: &RunEvent) -> Option<(&RunSpec, &Decision)> {
    match event {
        RunEvent::RunQueued { spec, start_decision, .. } | RunEvent::RunStartBlocked { spec, start_decision, .. } => {
            Some((spec, start_decision))
        }
        _ => None,
    }
}

/// Re-evaluates a recorded start decision against `state`.
pub fn replay_start(spec: &RunSpec, state: &DomainState) -> Decision {
    evaluate(&spec.facts(), 0, &state.authority)
}

/// Checks the request and builds the run it would be, with its connection
/// resolved and pinned.
fn resolve(
    state: &DomainState,
    request: &StartRequest,
    run_id: Uuid,
    admitted_from: Option<Uuid>,
) -> Result<RunSpec, StartRejected> {
    let invalid = StartRejected::Invalid;
    check_id("operation_type", &request.operation_type).map_err(invalid)?;
    check_id("tenant_id", &request.tenant_id).map_err(invalid)?;
    request.initiator.check("initiator").map_err(invalid)?;
    if let Some(key) = &request.dedupe_key {
        check_id("dedupe_key", key).map_err(invalid)?;
    }
    if let Some(id) = &request.provider_connection_id {
        check_id("provider_connection_id", id).map_err(invalid)?;
    }
    if !request.context.is_object() {
        return Err(invalid("context must be a JSON object".into()));
    }
    let authority = &state.authority;
    let spec: &OperationTypeSpec = authority
        .operation_type(&request.operation_type)
        .ok_or_else(|| StartRejected::UnknownOperationType(request.operation_type.clone()))?;
    let tenant = authority
        .tenants
        .get(&request.tenant_id)
        .ok_or_else(|| StartRejected::UnknownTenant(request.tenant_id.clone()))?;
    let connection = match (&request.provider_connection_id, spec.provider_backed) {
        (Some(id), true) => Some(id.clone()),
        (None, true) => tenant.default_connection.as_ref().map(|since| since.value.clone()),
        (Some(_), false) => {
            let why = format!("{} is not provider-backed and takes no provider connection", spec.operation_type);
            return Err(invalid(why));
        }
        (None, false) => None,
    };
    let context = sanitize_json(&request.context);
    let context_bytes = serde_json::to_string(&context).map_or(usize::MAX, |text| text.len());
    if context_bytes > CONTEXT_BYTES_MAX {
        let why = format!("context is {context_bytes} bytes after sanitization, the limit is {CONTEXT_BYTES_MAX}");
        return Err(invalid(why));
    }
    Ok(RunSpec {
        run_id,
        operation_type: request.operation_type.clone(),
        tenant_id: request.tenant_id.clone(),
        workspace_id: tenant.workspace_id.clone(),
        initiator: request.initiator.clone(),
        authority_mode: AuthorityMode::of(&request.initiator),
        required_capability: spec.required_capability.clone(),
        provider_backed: spec.provider_backed,
        writes: spec.writes,
        provider_connection_id: connection,
        max_attempts: spec.max_attempts,
        dedupe_key: request.dedupe_key.clone(),
        context,
        admitted_from,
        lease_seconds: spec.lease_seconds,
    })
}

/// The operator words of a start answer that is not a denial.
pub fn notice_of(decision: &StartDecision) -> Option<StartNotice> {
    match decision {
        StartDecision::Deduped { .. } => Some(StartNotice::Deduped),
        StartDecision::ScopeBusy { .. } => Some(StartNotice::ScopeBusy),
        StartDecision::Accepted { .. } | StartDecision::Blocked { .. } => None,
    }
}
