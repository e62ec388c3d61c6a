//! Write routes (service tokens): authority changes, starts, begin,
//! progress, heartbeat, complete, cancel. Each answers once its append is
//! durable.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use opledger::domain::authority::AuthorityChange;
use opledger::domain::cancel::CancelRequest;
use opledger::domain::legitimacy::Decision;
use opledger::domain::lifecycle::{Completion, FailureReport};
use opledger::domain::model::Principal;
use opledger::domain::model::WorkerOutcome;
use opledger::domain::reason::ReasonCode;
use opledger::domain::run::Run;
use opledger::domain::sequencer::StartAnswer;
use opledger::domain::start_gate::StartRequest;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::server::auth::Service;
use crate::server::body::{run_id, JsonBody, PathParam};
use crate::server::error::{ApiError, ErrorDetail};
use crate::server::state::AppState;

/// The body of `POST /v1/authority`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorityBatch {
    changed_by: Principal,
    /// Appended atomically, in this order.
    changes: Vec<AuthorityChange>,
}

/// The positions of the first and last authority event a batch appended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppendedPositions {
    pub first_position: u64,
    pub last_position: u64,
}

/// `POST /v1/authority`: authority changes, appended atomically in one go.
#[utoipa::path(post, path = "/v1/authority", tag = "writes", request_body = AuthorityBatch,
    responses((status = 200, description = "Appended.", body = AppendedPositions)),
    security(("bearer" = [])))]
pub async fn authority(
    State(state): State<AppState>,
    _service: Service,
    JsonBody(batch): JsonBody<AuthorityBatch>,
) -> Result<Json<AppendedPositions>, ApiError> {
    let (first, last) = state.ledger()?.record_authority(batch.changed_by, batch.changes).await?;
    Ok(Json(AppendedPositions { first_position: first, last_position: last }))
}

/// The `result` word of a start answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartResult {
    Accepted,
    Deduped,
    ScopeBusy,
    Blocked,
}

/// The answer of a start or batch start: 201 `accepted`, 200 `deduped`
/// (`run` is the existing run), 200 `blocked` (`run` is the recorded,
/// terminal blocked start), 409 `scope_busy` (`blocking_run`, no new run,
/// and an `error` member).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StartAnswerBody {
    pub result: StartResult,
    /// The run the start made or found; absent on `scope_busy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Run>,
    /// The run holding the provider connection; only on `scope_busy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking_run: Option<Run>,
    /// Why a start was blocked (`null` otherwise).
    #[schema(required = true)]
    pub reason_code: Option<ReasonCode>,
    /// What to do next, for a blocked, deduped or scope_busy start.
    #[schema(required = true)]
    pub next_step: Option<String>,
    /// `{"code": "scope_busy", …}`; only on `scope_busy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// The operation types still to start after the first (batch starts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_ups: Option<Vec<String>>,
}

/// The start answer of API.md with its status code.
fn start_response(answer: &StartAnswer, follow_ups: Option<&[String]>) -> Response {
    let run = Some(answer.run().clone());
    let (status, result) = match answer {
        StartAnswer::Accepted(_) => (StatusCode::CREATED, StartResult::Accepted),
        StartAnswer::Deduped(_) => (StatusCode::OK, StartResult::Deduped),
        StartAnswer::Blocked(_) => (StatusCode::OK, StartResult::Blocked),
        StartAnswer::ScopeBusy(_) => (StatusCode::CONFLICT, StartResult::ScopeBusy),
    };
    let (run, blocking_run, error) = match answer {
        StartAnswer::ScopeBusy(_) => (
            None,
            run,
            Some(ErrorDetail {
                code: "scope_busy".to_owned(),
                message: "another operation holds this provider connection".to_owned(),
            }),
        ),
        _ => (run, None, None),
    };
    let (reason_code, next_step) = match answer {
        StartAnswer::Blocked(run) => (run.reason_code, run.next_step.clone()),
        StartAnswer::Deduped(_) => (None, Some(opledger::domain::reason::StartNotice::Deduped.next_step().to_owned())),
        StartAnswer::ScopeBusy(_) => {
            (None, Some(opledger::domain::reason::StartNotice::ScopeBusy.next_step().to_owned()))
        }
        StartAnswer::Accepted(_) => (None, None),
    };
    let body = StartAnswerBody {
        result,
        run,
        blocking_run,
        reason_code,
        next_step,
        error,
        follow_ups: follow_ups.map(<[String]>::to_vec),
    };
    (status, Json(body)).into_response()
}

/// `POST /v1/runs`: a start through the start gate.
#[utoipa::path(post, path = "/v1/runs", tag = "writes", request_body = StartRequest,
    responses(
        (status = 201, description = "`accepted`: the new run.", body = StartAnswerBody),
        (status = 200, description = "`deduped` (the existing run) or `blocked` (the recorded, terminal blocked start).", body = StartAnswerBody),
        (status = 409, description = "`scope_busy`: another run holds the provider connection (`blocking_run`, and `error.code` `scope_busy`); no new run.", body = StartAnswerBody),
    ),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    _service: Service,
    JsonBody(request): JsonBody<StartRequest>,
) -> Result<Response, ApiError> {
    let answer = state.ledger()?.start(request).await?;
    state.metrics.count_start(answer.result());
    Ok(start_response(&answer, None))
}

/// The body of `POST /v1/runs/batch`: sequential admission for one scope.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchStart {
    /// Started in order, each once the one before frees the scope; at least one.
    operation_types: Vec<String>,
    tenant_id: String,
    initiator: Principal,
    #[serde(default)]
    provider_connection_id: Option<String>,
    #[serde(default)]
    context: Option<serde_json::Value>,
}

/// `POST /v1/runs/batch`: the first start's answer plus `follow_ups`.
#[utoipa::path(post, path = "/v1/runs/batch", tag = "writes", request_body = BatchStart,
    responses(
        (status = 201, description = "`accepted`: the first run, with `follow_ups`.", body = StartAnswerBody),
        (status = 200, description = "`deduped` or `blocked`, with `follow_ups`.", body = StartAnswerBody),
        (status = 409, description = "`scope_busy` (with `blocking_run`); no new run.", body = StartAnswerBody),
    ),
    security(("bearer" = [])))]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// The answer of `begin`: the legitimacy gate's decision and the run after it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BeginAnswer {
    pub decision: Decision,
    pub run: Run,
}

/// The answer of `progress`, `heartbeat`, `complete` and `cancel`: the run after it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunAnswer {
    pub run: Run,
}

/// `POST /v1/runs/{id}/begin`: the legitimacy gate decides now.
#[utoipa::path(post, path = "/v1/runs/{id}/begin", tag = "writes",
    params(("id" = String, Path, description = "The run id (a UUID).")),
    request_body(content = Option<Empty>, description = "`{}`, or no body and no `Content-Type` at all."),
    responses((status = 200, description = "Decided: allowed (the run is `running`, with `attempt` and `lease_expires_at`) or denied.", body = BeginAnswer)),
    security(("bearer" = [])))]
pub async fn begin(
    State(state): State<AppState>,
    _service: Service,
    PathParam(id): PathParam,
    JsonBody(_): JsonBody<Empty>,
) -> Result<Json<BeginAnswer>, ApiError> {
    let (decision, run) = state.ledger()?.begin(run_id(&id)?).await?;
    state.metrics.count_decision(decision.reason_code.map_or("allowed", |r| r.as_str()));
    Ok(Json(BeginAnswer { decision, run }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// `{"total", "processed", "succeeded", "failed", "skipped"}`: other
    /// keys and values that are not non-negative integers are dropped.
    #[schema(value_type = Object)]
    summary_counts: serde_json::Value,
    /// The attempt the worker works on (what `begin` answered): a late
    /// call of an abandoned attempt is fenced with `lease_expired`.
    #[serde(default)]
    attempt: Option<u32>,
}

/// `POST /v1/runs/{id}/progress`: renews the lease.
#[utoipa::path(post, path = "/v1/runs/{id}/progress", tag = "writes",
    params(("id" = String, Path, description = "The run id (a UUID).")),
    request_body = Progress,
    responses((status = 200, description = "Recorded.", body = RunAnswer)),
    security(("bearer" = [])))]
pub async fn progress(
    State(state): State<AppState>,
    _service: Service,
    PathParam(id): PathParam,
    JsonBody(progress): JsonBody<Progress>,
) -> Result<Json<RunAnswer>, ApiError> {
    let run = state.ledger()?.progress_attempt(run_id(&id)?, progress.attempt, progress.summary_counts).await?;
    Ok(Json(RunAnswer { run }))
}

/// The completion of API.md plus the optional `attempt` it is fenced on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    outcome: WorkerOutcome,
    /// As for `progress`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    summary_counts: Option<serde_json::Value>,
    #[serde(default)]
    failure: Option<FailureReport>,
    #[serde(default)]
    retryable: Option<bool>,
    #[serde(default)]
    attempt: Option<u32>,
}

/// `POST /v1/runs/{id}/complete`: a retryable failure with attempts left
/// puts the run back to `queued`.
#[utoipa::path(post, path = "/v1/runs/{id}/complete", tag = "writes",
    params(("id" = String, Path, description = "The run id (a UUID).")),
    request_body = CompleteBody,
    responses((status = 200, description = "Recorded.", body = RunAnswer)),
    security(("bearer" = [])))]
pub async fn complete(
    State(state): State<AppState>,
    _service: Service,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<CompleteBody>,
) -> Result<Json<RunAnswer>, ApiError> {
    let completion = Completion {
        outcome: body.outcome,
        summary_counts: body.summary_counts,
        failure: body.failure,
        retryable: body.retryable,
    };
    let run = state.ledger()?.complete_attempt(run_id(&id)?, body.attempt, completion).await?;
    Ok(Json(RunAnswer { run }))
}

/// A heartbeat: `{}` or `{"attempt": N}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    #[serde(default)]
    attempt: Option<u32>,
}

/// `POST /v1/runs/{id}/heartbeat`: renews the running attempt's lease.
#[utoipa::path(post, path = "/v1/runs/{id}/heartbeat", tag = "writes",
    params(("id" = String, Path, description = "The run id (a UUID).")),
    request_body(content = Option<Heartbeat>, description = "`{}` or `{\"attempt\": N}`; no body at all reads as `{}`."),
    responses((status = 200, description = "Renewed, or the lease was less than half used (nothing appended).", body = RunAnswer)),
    security(("bearer" = [])))]
pub async fn heartbeat(
    State(state): State<AppState>,
    _service: Service,
    PathParam(id): PathParam,
    JsonBody(heartbeat): JsonBody<Heartbeat>,
) -> Result<Json<RunAnswer>, ApiError> {
    let run = state.ledger()?.heartbeat(run_id(&id)?, heartbeat.attempt).await?;
    Ok(Json(RunAnswer { run }))
}

/// `POST /v1/runs/{id}/cancel`: a queued or running run is completed with
/// outcome `cancelled`.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "writes",
    params(("id" = String, Path, description = "The run id (a UUID).")),
    request_body = CancelRequest,
    responses((status = 200, description = "Cancelled.", body = RunAnswer)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    _service: Service,
    PathParam(id): PathParam,
    JsonBody(request): JsonBody<CancelRequest>,
) -> Result<Json<RunAnswer>, ApiError> {
    let run = state.ledger()?.cancel(run_id(&id)?, request).await?;
    state.metrics.count_cancellation();
    Ok(Json(RunAnswer { run }))
}
