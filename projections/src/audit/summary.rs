//! The operator-readable summaries of audit entries, in the words of SPEC 8
//! and the reason registry.

use opledger::domain::authority::AuthorityChange;
use opledger::domain::legitimacy::Decision;
use opledger::domain::model::OperationTypeSpec;
use opledger::domain::reason::{ReasonCode, StartNotice};
use opledger::domain::run::{RequeueCause, RunEvent};

use super::runs::RunRecord;

pub(super) fn authority_summary(change: &AuthorityChange) -> String {
    use AuthorityChange as C;
    match change {
        C::WorkspaceRegistered { workspace_id } => format!("Workspace {workspace_id} registered"),
        C::TenantRegistered { tenant_id, workspace_id, lifecycle } => {
            format!("Tenant {tenant_id} registered in workspace {workspace_id}, {}", lifecycle.as_str())
        }
        C::TenantLifecycleChanged { tenant_id, lifecycle } => {
            format!("Tenant {tenant_id} is now {}", lifecycle.as_str())
        }
        C::WorkspaceMemberAdded { workspace_id, actor_id } => {
            format!("Actor {actor_id} added to workspace {workspace_id}")
        }
        C::WorkspaceMemberRemoved { workspace_id, actor_id } => {
            format!("Actor {actor_id} removed from workspace {workspace_id}")
        }
        C::TenantMemberAdded { tenant_id, actor_id } => format!("Actor {actor_id} added to tenant {tenant_id}"),
        C::TenantMemberRemoved { tenant_id, actor_id } => format!("Actor {actor_id} removed from tenant {tenant_id}"),
        C::CapabilityGranted { tenant_id, actor_id, capability } => {
            format!("Capability {capability} granted to actor {actor_id} on tenant {tenant_id}")
        }
        C::CapabilityRevoked { tenant_id, actor_id, capability } => {
            format!("Capability {capability} revoked from actor {actor_id} on tenant {tenant_id}")
        }
        C::ProviderConnectionRegistered { connection_id, tenant_id, status } => {
            format!("Provider connection {connection_id} registered for tenant {tenant_id}, {}", words(status.as_str()))
        }
        C::ProviderConnectionStatusChanged { connection_id, status } => {
            format!("Provider connection {connection_id} is now {}", words(status.as_str()))
        }
        C::DefaultProviderConnectionSet { tenant_id, connection_id } => {
            format!("Provider connection {connection_id} is now the default of tenant {tenant_id}")
        }
        C::WriteGateChanged { tenant_id, open } => {
            format!("Write gate of tenant {tenant_id} {}", if *open { "opened" } else { "closed" })
        }
        C::OperationTypeRegistered(spec) => {
            format!("Operation type {} registered: {}", spec.operation_type, catalog(spec))
        }
        C::OperationTypeUpdated(spec) => format!("Operation type {} updated: {}", spec.operation_type, catalog(spec)),
    }
}

/// `consent_required` → `consent required`: people read words, not codes.
pub(super) fn words(code: &str) -> String {
    code.replace('_', " ")
}

pub(super) fn catalog(spec: &OperationTypeSpec) -> String {
    format!(
        "needs capability {}, {}, {}, {}, up to {} attempts",
        spec.required_capability,
        if spec.provider_backed { "provider-backed" } else { "not provider-backed" },
        if spec.writes { "writes" } else { "read-only" },
        if spec.system_authority_allowed { "scheduled runs allowed" } else { "no scheduled runs" },
        spec.max_attempts
    )
}

pub(super) fn run_summary(record: &RunRecord, event: &RunEvent) -> String {
    let run = record.subject();
    let tenant = &record.tenant_id;
    match event {
        RunEvent::RunQueued { .. } => format!("{run} accepted and queued"),
        RunEvent::RunStartBlocked { start_decision, .. } => {
            format!("{run} blocked at start: {}", refusal(start_decision.reason_code))
        }
        RunEvent::RunStartDeduped { requested_by, .. } => format!(
            "Start of {} on tenant {tenant} by {requested_by} deduped onto this run: {}",
            record.operation_type,
            StartNotice::Deduped.operator_message()
        ),
        RunEvent::RunStartRejectedScopeBusy { requested_by, operation_type, .. } => format!(
            "Start of {operation_type} on tenant {tenant} by {requested_by} refused, scope busy: {}",
            StartNotice::ScopeBusy.operator_message()
        ),
        RunEvent::FollowUpsRetained { operation_types, .. } => {
            format!("{run} will start {} next, one at a time", operation_types.join(", "))
        }
        RunEvent::FollowUpAdmitted { operation_type, result, .. } => {
            format!("Follow-up {operation_type} on tenant {tenant} {}", admission(result))
        }
        RunEvent::LegitimacyEvaluated { decision, .. } => decision_summary(&run, decision),
        RunEvent::RunStarted { attempt } => format!("{run} running, attempt {attempt}"),
        RunEvent::RunRequeued { next_attempt, cause, reason_code, .. } => {
            format!("{run} queued again for attempt {next_attempt}: {}", requeue(*cause, *reason_code))
        }
        RunEvent::RunBlocked { reason_code, .. } => format!("{run} blocked: {}", reason_code.operator_message()),
        RunEvent::RunCompleted { outcome, .. } => format!("{run} completed: {}", outcome.outcome().operator_word()),
        RunEvent::RunProgressed { .. } => format!("{run} reported progress"),
        RunEvent::LeaseRenewed { attempt } => format!("{run}, attempt {attempt}: lease renewed"),
        RunEvent::AttemptAbandoned { attempt, lease_expired_at } => format!(
            "{run}, attempt {attempt} abandoned: the worker stopped reporting and its lease expired at {}",
            lease_expired_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        RunEvent::RunCancelled { cancelled_by, reason, .. } => match reason {
            Some(reason) => format!("{run} cancelled by {cancelled_by}: {reason}"),
            None => format!("{run} cancelled by {cancelled_by}"),
        },
    }
}

pub(super) fn refusal(reason: Option<ReasonCode>) -> &'static str {
    reason.map_or("the start gate refused it.", ReasonCode::operator_message)
}

pub(super) fn admission(result: &str) -> &'static str {
    match result {
        "accepted" => "accepted and queued",
        "blocked" => "blocked at start",
        "deduped" => "deduped onto an identical run",
        "scope_busy" => "refused, scope busy",
        _ => "rejected: not a valid start",
    }
}

pub(super) fn decision_summary(run: &str, decision: &Decision) -> String {
    let attempt = decision.attempt;
    match decision.reason_code {
        None => format!("{run}, attempt {attempt}: allowed to begin"),
        Some(reason) => format!("{run}, attempt {attempt}: denied: {}", reason.operator_message()),
    }
}

pub(super) fn requeue(cause: RequeueCause, reason: Option<ReasonCode>) -> &'static str {
    match (cause, reason) {
        (RequeueCause::RetryableDenial, Some(reason)) => reason.operator_message(),
        (RequeueCause::RetryableDenial, None) => "the attempt was denied for a passing reason.",
        (RequeueCause::RetryableFailure, _) => "the attempt failed and is retried.",
        (RequeueCause::LeaseExpired, _) => "the worker was lost (its lease expired); the next attempt decides afresh.",
    }
}

pub(super) fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
}
