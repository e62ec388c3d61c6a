//! Write routes (service tokens): authority changes, starts, begin,
//! progress, heartbeat, complete, cancel. Each answers once its append is
//! durable.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use opledger::domain::authority::AuthorityChange;
use opledger::domain::cancel::CancelRequest;
use opledger::domain::lifecycle::{Completion, FailureReport};
use opledger::domain::model::Principal;
use opledger::domain::model::WorkerOutcome;
use opledger::domain::sequencer::StartAnswer;
use opledger::domain::start_gate::StartRequest;
use serde::Deserialize;
use serde_json::json;

use crate::server::auth::Service;
use crate::server::body::{run_id, JsonBody, PathParam};
use crate::server::error::ApiError;
use crate::server::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityBatch {
    changed_by: Principal,
    changes: Vec<AuthorityChange>,
}

pub async fn authority(
    State(state): State<AppState>,
    _service: Service,
    JsonBody(batch): JsonBody<AuthorityBatch>,
) -> Result<Response, ApiError> {
    let (first, last) = state.ledger()?.record_authority(batch.changed_by, batch.changes).await?;
    Ok(Json(json!({"first_position": first, "last_position": last})).into_response())
}

/// The start answer of API.md with its status code.
fn start_response(answer: &StartAnswer, follow_ups: Option<&[String]>) -> Response {
    let run = serde_json::to_value(answer.run()).unwrap_or_default();
    let mut body = json!({"result": answer.result()});
    let status = match answer {
        StartAnswer::Accepted(_) => StatusCode::CREATED,
        StartAnswer::Deduped(_) | StartAnswer::Blocked(_) => StatusCode::OK,
        StartAnswer::ScopeBusy(_) => StatusCode::CONFLICT,
    };
    match answer {
        StartAnswer::ScopeBusy(_) => {
            body["blocking_run"] = run;
            body["error"] =
                json!({"code": "scope_busy", "message": "another operation holds this provider connection"});
        }
        _ => body["run"] = run,
    }
    let (reason, step) = match answer {
        StartAnswer::Blocked(run) => (run.reason_code.map(|r| r.as_str()), run.next_step.clone()),
        StartAnswer::Deduped(_) => (None, Some(opledger::domain::reason::StartNotice::Deduped.next_step().to_owned())),
        StartAnswer::ScopeBusy(_) => {
            (None, Some(opledger::domain::reason::StartNotice::ScopeBusy.next_step().to_owned()))
        }
        StartAnswer::Accepted(_) => (None, None),
    };
    body["reason_code"] = json!(reason);
    body["next_step"] = json!(step);
    if let Some(follow_ups) = follow_ups {
        body["follow_ups"] = json!(follow_ups);
    }
    (status, Json(body)).into_response()
}

pub async fn start(
    State(state): State<AppState>,
    _service: Service,
    JsonBody(request): JsonBody<StartRequest>,
) -> Result<Response, ApiError> {
    let answer = state.ledger()?.start(request).await?;
    state.metrics.count_start(answer.result());
    Ok(start_response(&answer, None))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchStart {
    operation_types: Vec<String>,
    tenant_id: String,
    initiator: Principal,
    #[serde(default)]
    provider_connection_id: Option<String>,
    #[serde(default)]
    context: Option<serde_json::Value>,
}

pub async fn start_batch(
    State(state): State<AppState>,
    _service: Service,
    JsonBody(batch): JsonBody<BatchStart>,
) -> Result<Response, ApiError> {
    let Some(first) = batch.operation_types.first().cloned() else {
        return Err(ApiError::bad_request("operation_types must name at least one operation type"));
    };
    let request = StartRequest {
        operation_type: first,
        tenant_id: batch.tenant_id,
        initiator: batch.initiator,
        provider_connection_id: batch.provider_connection_id,
        context: batch.context.unwrap_or_else(|| json!({})),
        dedupe_key: None,
    };
    let answer = state.ledger()?.start_batch(batch.operation_types, request).await?;
    state.metrics.count_start(answer.first.result());
    Ok(start_response(&answer.first, Some(&answer.follow_ups)))
}

/// The body of a write that takes none: `{}` (or no body at all).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

pub async fn begin(
    State(state): State<AppState>,
    _service: Service,
    PathParam(id): PathParam,
    JsonBody(_): JsonBody<Empty>,
) -> Result<Response, ApiError> {
    let (decision, run) = state.ledger()?.begin(run_id(&id)?).await?;
    state.metrics.count_decision(decision.reason_code.map_or("allowed", |r| r.as_str()));
    Ok(Json(json!({"decision": decision, "run": run})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    summary_counts: serde_json::Value,
    /// The attempt the worker works on (what `begin` answered): a late
    /// call of an abandoned attempt is fenced with `lease_expired`.
    #[serde(default)]
    attempt: Option<u32>,
}

pub async fn progress(
    State(state): State<AppState>,
    _service: Service,
    PathParam(id): PathParam,
    JsonBody(progress): JsonBody<Progress>,
) -> Result<Response, ApiError> {
    let run = state.ledger()?.progress_attempt(run_id(&id)?, progress.attempt, progress.summary_counts).await?;
    Ok(Json(json!({"run": run})).into_response())
}

/// The completion of API.md plus the optional `attempt` it is fenced on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    outcome: WorkerOutcome,
    #[serde(default)]
    summary_counts: Option<serde_json::Value>,
    #[serde(default)]
    failure: Option<FailureReport>,
    #[serde(default)]
    retryable: Option<bool>,
    #[serde(default)]
    attempt: Option<u32>,
}

pub async fn complete(
    State(state): State<AppState>,
    _service: Service,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<CompleteBody>,
) -> Result<Response, ApiError> {
    let completion = Completion {
        outcome: body.outcome,
        summary_counts: body.summary_counts,
        failure: body.failure,
        retryable: body.retryable,
    };
    let run = state.ledger()?.complete_attempt(run_id(&id)?, body.attempt, completion).await?;
    Ok(Json(json!({"run": run})).into_response())
}

/// A heartbeat: `{}` or `{"attempt": N}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    #[serde(default)]
    attempt: Option<u32>,
}

pub async fn heartbeat(
    State(state): State<AppState>,
    _service: Service,
    PathParam(id): PathParam,
    JsonBody(heartbeat): JsonBody<Heartbeat>,
) -> Result<Response, ApiError> {
    let run = state.ledger()?.heartbeat(run_id(&id)?, heartbeat.attempt).await?;
    Ok(Json(json!({"run": run})).into_response())
}

pub async fn cancel(
    State(state): State<AppState>,
    _service: Service,
    PathParam(id): PathParam,
    JsonBody(request): JsonBody<CancelRequest>,
) -> Result<Response, ApiError> {
    let run = state.ledger()?.cancel(run_id(&id)?, request).await?;
    state.metrics.count_cancellation();
    Ok(Json(json!({"run": run})).into_response())
}
