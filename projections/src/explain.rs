//! Explain: why a run was allowed or refused, down to the authority event
//! behind every fact — which grant, which revocation, which lifecycle change.
//!
//! Decisions record, for each check, the log position of the authority
//! event that made its fact true. Explain reads the run's stream and
//! resolves each of those positions in the log.

use chrono::{DateTime, Utc};
use opledger::domain::events::{run_stream, DomainEvent};
use opledger::domain::legitimacy::{CheckResult, Decision};
use opledger::domain::model::Principal;
use opledger::domain::run::RunEvent;
use opledger::limits::READ_PAGE_EVENTS_MAX;
use opledger::{Envelope, Log};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;

/// The authority event behind a fact.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Source {
    pub position: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    pub changed_by: Principal,
    pub change: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ExplainedCheck {
    #[serde(flatten)]
    pub check: CheckResult,
    #[schema(required = true)]
    pub source: Option<Source>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ExplainedDecision {
    /// Log position of the decision itself.
    pub position: u64,
    pub recorded_at: DateTime<Utc>,
    /// `start` for the start gate's decision, `begin` for an attempt's.
    pub gate: &'static str,
    pub attempt: u32,
    pub outcome: opledger::domain::legitimacy::DecisionOutcome,
    #[schema(required = true)]
    pub reason_code: Option<opledger::domain::reason::ReasonCode>,
    #[schema(required = true)]
    pub operator_message: Option<&'static str>,
    #[schema(required = true)]
    pub next_step: Option<&'static str>,
    pub authority_position: u64,
    pub checks: Vec<ExplainedCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    pub run_id: Uuid,
    pub decisions: Vec<ExplainedDecision>,
}

/// Explains every decision of `run_id`; `None` for an unknown run.
pub fn explain(log: &Log, run_id: Uuid) -> Result<Option<Explanation>, ProjectionError> {
    let events = log.read_stream(&run_stream(run_id), 1, READ_PAGE_EVENTS_MAX)?;
    if events.is_empty() {
        return Ok(None);
    }
    let mut decisions = Vec::new();
    for envelope in &events {
        if let Some(recorded) = recorded_decision(envelope)? {
            decisions.push(explain_decision(log, &recorded)?);
        }
    }
    Ok(Some(Explanation { run_id, decisions }))
}

/// A decision as a run's stream recorded it: the start gate's (in
/// `run_queued` or `run_start_blocked`) or an attempt's (`legitimacy_evaluated`).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedDecision {
    /// Log position of the event that records it.
    pub position: u64,
    pub recorded_at: DateTime<Utc>,
    /// `start` or `begin`, as in [`ExplainedDecision::gate`].
    pub gate: &'static str,
    pub decision: Decision,
}

/// The decision `envelope` records, if it is an event of a run's stream
/// that records one; an event that is not a run event is corruption.
pub fn recorded_decision(envelope: &Envelope) -> Result<Option<RecordedDecision>, ProjectionError> {
    let stopped = |detail: String| ProjectionError::Stopped { position: envelope.position, detail };
    let DomainEvent::Run { event, .. } = DomainEvent::from_envelope(envelope).map_err(stopped)? else {
        return Err(stopped("a non-run event in a run stream".into()));
    };
    let (gate, decision) = match event {
        RunEvent::RunQueued { start_decision, .. } | RunEvent::RunStartBlocked { start_decision, .. } => {
            ("start", start_decision)
        }
        RunEvent::LegitimacyEvaluated { decision, .. } => ("begin", decision),
        _ => return Ok(None),
    };
    Ok(Some(RecordedDecision { position: envelope.position, recorded_at: envelope.recorded_at, gate, decision }))
}

/// The decisions recorded at `positions` (as Monitoring's
/// `decision_positions` lists them), in that order; a position that holds
/// no event or no decision is skipped.
pub fn decisions_at(log: &Log, positions: &[u64]) -> Result<Vec<RecordedDecision>, ProjectionError> {
    let mut decisions = Vec::with_capacity(positions.len());
    for &position in positions {
        let Some(envelope) = log.event(position)? else { continue };
        decisions.extend(recorded_decision(&envelope)?);
    }
    Ok(decisions)
}

fn explain_decision(log: &Log, recorded: &RecordedDecision) -> Result<ExplainedDecision, ProjectionError> {
    let RecordedDecision { position, recorded_at, gate, decision } = recorded;
    let mut checks = Vec::with_capacity(decision.checks.len());
    for check in &decision.checks {
        let source = match check.source_position {
            Some(position) => source(log, position)?,
            None => None,
        };
        checks.push(ExplainedCheck { check: check.clone(), source });
    }
    Ok(ExplainedDecision {
        position: *position,
        recorded_at: *recorded_at,
        gate,
        attempt: decision.attempt,
        outcome: decision.outcome,
        reason_code: decision.reason_code,
        operator_message: decision.reason_code.map(|r| r.operator_message()),
        next_step: decision.reason_code.map(|r| r.next_step()),
        authority_position: decision.authority_position,
        checks,
    })
}

fn source(log: &Log, position: u64) -> Result<Option<Source>, ProjectionError> {
    let Some(envelope) = log.event(position)? else { return Ok(None) };
    let stopped = |detail: String| ProjectionError::Stopped { position, detail };
    let DomainEvent::Authority(changed) = DomainEvent::from_envelope(&envelope).map_err(stopped)? else {
        return Err(stopped("a decision names a source position that is not an authority event".into()));
    };
    let change = serde_json::to_value(&changed.change).map_err(|e| stopped(e.to_string()))?;
    Ok(Some(Source {
        position,
        event_type: envelope.event_type,
        recorded_at: envelope.recorded_at,
        changed_by: changed.changed_by,
        change,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opledger::domain::authority::AuthorityChange as C;
    use opledger::domain::ledger::Ledger;
    use opledger::domain::model::{ConnectionStatus, Lifecycle, OperationTypeSpec};
    use opledger::domain::reason::ReasonCode;
    use opledger::domain::start_gate::StartRequest;
    use opledger::{Durability, LogOptions};

    use super::*;

    fn s(v: &str) -> String {
        v.to_owned()
    }

    #[test]
    fn a_blocked_begin_points_at_the_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions { durability: Durability::Flush, ..LogOptions::default() };
        let ledger = Arc::new(Ledger::open(dir.path(), options).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (run_id, revoked_at) = runtime.block_on(async {
            let world = vec![
                C::WorkspaceRegistered { workspace_id: s("w1") },
                C::TenantRegistered { tenant_id: s("t1"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
                C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("u1") },
                C::TenantMemberAdded { tenant_id: s("t1"), actor_id: s("u1") },
                C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") },
                C::ProviderConnectionRegistered {
                    connection_id: s("c1"),
                    tenant_id: s("t1"),
                    status: ConnectionStatus::Ready,
                },
                C::DefaultProviderConnectionSet { tenant_id: s("t1"), connection_id: s("c1") },
                C::OperationTypeRegistered(OperationTypeSpec {
                    operation_type: s("inventory_sync"),
                    required_capability: s("tenant.sync"),
                    provider_backed: true,
                    writes: false,
                    system_authority_allowed: true,
                    max_attempts: 3,
                    lease_seconds: opledger::domain::model::LEASE_SECONDS_DEFAULT,
                }),
            ];
            ledger.record_authority(Principal::System, world).await.unwrap();
            let request = StartRequest {
                operation_type: s("inventory_sync"),
                tenant_id: s("t1"),
                initiator: Principal::actor("u1"),
                provider_connection_id: None,
                context: serde_json::json!({}),
                dedupe_key: None,
            };
            let run = ledger.start(request).await.unwrap().run().id;
            let revoke = C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") };
            let (revoked_at, _) = ledger.record_authority(Principal::actor("admin"), vec![revoke]).await.unwrap();
            ledger.begin(run).await.unwrap();
            (run, revoked_at)
        });
        let explanation = explain(ledger.log(), run_id).unwrap().unwrap();
        assert_eq!(explanation.decisions.len(), 2);
        let start = &explanation.decisions[0];
        assert_eq!(start.gate, "start");
        assert_eq!(start.checks[3].source.as_ref().map(|s| s.position), Some(5), "the grant");
        let begin = &explanation.decisions[1];
        assert_eq!(begin.reason_code, Some(ReasonCode::CapabilityMissing));
        assert_eq!(begin.next_step, Some(ReasonCode::CapabilityMissing.next_step()));
        let source = begin.checks[3].source.as_ref().unwrap();
        assert_eq!(source.position, revoked_at);
        assert_eq!(source.event_type, "capability_revoked");
        assert_eq!(source.changed_by, Principal::actor("admin"));
        assert!(explain(ledger.log(), Uuid::now_v7()).unwrap().is_none());
    }

    #[test]
    fn monitoring_finds_every_decision_of_a_retried_run_in_the_log() {
        use opledger::domain::model::WorkerOutcome;
        let world = crate::test_world::World::new();
        let run = world.start("inventory_sync", "t1", Principal::actor("u1"), None);
        world.begin(run);
        world.complete(run, WorkerOutcome::Failed, true);
        world.begin(run);
        let projector = world.projector();
        projector.catch_up().unwrap();
        let positions = crate::monitoring::decision_positions(&projector.reader().unwrap(), run).unwrap();
        let decisions = decisions_at(world.ledger.log(), &positions).unwrap();
        let gates: Vec<(&str, u32)> = decisions.iter().map(|d| (d.gate, d.decision.attempt)).collect();
        assert_eq!(gates, [("start", 0), ("begin", 1), ("begin", 2)]);
        let explained = explain(world.ledger.log(), run).unwrap().unwrap();
        let explained: Vec<u64> = explained.decisions.iter().map(|d| d.position).collect();
        assert_eq!(positions, explained, "the decisions explain finds, walking the stream");
        assert!(crate::monitoring::decision_positions(&projector.reader().unwrap(), Uuid::now_v7())
            .unwrap()
            .is_empty());
    }
}
