//! The legitimacy gate (SPEC 4): a pure function of a run's facts and the
//! authority state. No I/O, no clock: what it reads is what it is given.
//!
//! Every check is evaluated and recorded with the fact it used and the log
//! position of the authority event behind that fact; the first failing
//! check, in the table's order, decides.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::authority::{AuthorityState, Since};
use crate::domain::model::{AuthorityMode, ConnectionStatus, Lifecycle, Principal};
use crate::domain::reason::{DenialClass, ReasonCode};

/// The checks, in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    AuthorityMode,
    WorkspaceMembership,
    TenantMembership,
    Capability,
    TenantOperability,
    ProviderConnection,
    WriteGate,
}

impl Check {
    /// Every check, in evaluation order.
    pub const ALL: [Check; 7] = [
        Check::AuthorityMode,
        Check::WorkspaceMembership,
        Check::TenantMembership,
        Check::Capability,
        Check::TenantOperability,
        Check::ProviderConnection,
        Check::WriteGate,
    ];

    /// The snake_case name, the same string serde writes. The words shown
    /// to people are in the registry: [`Check::operator_word`] (`reason.rs`).
    pub fn as_str(self) -> &'static str {
        match self {
            Check::AuthorityMode => "authority_mode",
            Check::WorkspaceMembership => "workspace_membership",
            Check::TenantMembership => "tenant_membership",
            Check::Capability => "capability",
            Check::TenantOperability => "tenant_operability",
            Check::ProviderConnection => "provider_connection",
            Check::WriteGate => "write_gate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    pub check: Check,
    pub passed: bool,
    /// What the check found, in words.
    pub fact: String,
    /// Log position of the authority event that made the fact true, when
    /// one did (a grant, a revocation, a lifecycle change …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_position: Option<u64>,
    /// The reason code when the check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<ReasonCode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionOutcome {
    Allowed,
    Denied,
}

/// One recorded decision of the legitimacy gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub run_id: Uuid,
    /// The attempt this decision is for; 0 for the start gate's decision.
    pub attempt: u32,
    pub outcome: DecisionOutcome,
    pub authority_mode: AuthorityMode,
    #[schema(required = true)]
    pub denial_class: Option<DenialClass>,
    #[schema(required = true)]
    pub reason_code: Option<ReasonCode>,
    pub retryable: bool,
    pub checks: Vec<CheckResult>,
    /// Position of the last authority event folded into the state read.
    pub authority_position: u64,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.outcome == DecisionOutcome::Allowed
    }
}

/// What the gate needs to know about a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFacts<'a> {
    pub run_id: Uuid,
    pub operation_type: &'a str,
    pub tenant_id: &'a str,
    pub workspace_id: &'a str,
    pub initiator: &'a Principal,
    /// The pinned connection (provider-backed types only).
    pub provider_connection_id: Option<&'a str>,
}

/// Evaluates every check against `state` and decides.
pub fn evaluate(run: &RunFacts<'_>, attempt: u32, state: &AuthorityState) -> Decision {
    let checks = vec![
        authority_mode(run, state),
        workspace_membership(run, state),
        tenant_membership(run, state),
        capability(run, state),
        tenant_operability(run, state),
        provider_connection(run, state),
        write_gate(run, state),
    ];
    let reason_code = checks.iter().find(|c| !c.passed).and_then(|c| c.reason_code);
    Decision {
        run_id: run.run_id,
        attempt,
        outcome: if reason_code.is_some() { DecisionOutcome::Denied } else { DecisionOutcome::Allowed },
        authority_mode: AuthorityMode::of(run.initiator),
        denial_class: reason_code.map(ReasonCode::denial_class),
        reason_code,
        retryable: reason_code.is_some_and(ReasonCode::retryable),
        checks,
        authority_position: state.position,
    }
}

fn pass(check: Check, fact: String, source: Option<u64>) -> CheckResult {
    CheckResult { check, passed: true, fact, source_position: source, reason_code: None }
}

fn fail(check: Check, reason: ReasonCode, fact: String, source: Option<u64>) -> CheckResult {
    CheckResult { check, passed: false, fact, source_position: source, reason_code: Some(reason) }
}

fn not_applicable(check: Check, why: &str) -> CheckResult {
    pass(check, format!("not applicable: {why}"), None)
}

fn authority_mode(run: &RunFacts<'_>, state: &AuthorityState) -> CheckResult {
    let entry = state.catalog.get(run.operation_type);
    let source = entry.map(|e| e.position);
    match run.initiator {
        Principal::Actor { id } => pass(Check::AuthorityMode, format!("actor-bound: initiated by actor {id}"), None),
        Principal::System => match entry {
            Some(e) if e.value.system_authority_allowed => pass(
                Check::AuthorityMode,
                format!("system authority: {} is on the system-authority allowlist", run.operation_type),
                source,
            ),
            _ => fail(
                Check::AuthorityMode,
                ReasonCode::SystemAuthorityNotAllowed,
                format!("system authority: {} is not on the system-authority allowlist", run.operation_type),
                source,
            ),
        },
    }
}

fn membership(check: Check, reason: ReasonCode, actor: &str, scope: &str, fact: Option<Since<bool>>) -> CheckResult {
    match fact {
        Some(since) if since.value => {
            pass(check, format!("actor {actor} is a member of {scope}"), Some(since.position))
        }
        Some(since) => fail(check, reason, format!("actor {actor} was removed from {scope}"), Some(since.position)),
        None => fail(check, reason, format!("actor {actor} is not a member of {scope}"), None),
    }
}

fn workspace_membership(run: &RunFacts<'_>, state: &AuthorityState) -> CheckResult {
    let Some(actor) = run.initiator.actor_id() else {
        return not_applicable(Check::WorkspaceMembership, "system authority");
    };
    let fact = state.workspace_member(run.workspace_id, actor);
    let scope = format!("workspace {}", run.workspace_id);
    membership(Check::WorkspaceMembership, ReasonCode::ActorNotInWorkspace, actor, &scope, fact)
}

fn tenant_membership(run: &RunFacts<'_>, state: &AuthorityState) -> CheckResult {
    let Some(actor) = run.initiator.actor_id() else {
        return not_applicable(Check::TenantMembership, "system authority");
    };
    let fact = state.tenant_member(run.tenant_id, actor);
    let scope = format!("tenant {}", run.tenant_id);
    membership(Check::TenantMembership, ReasonCode::ActorNotInTenant, actor, &scope, fact)
}

fn capability(run: &RunFacts<'_>, state: &AuthorityState) -> CheckResult {
    let Some(actor) = run.initiator.actor_id() else {
        return not_applicable(Check::Capability, "system authority");
    };
    let Some(spec) = state.operation_type(run.operation_type) else {
        let fact = format!("operation type {} is not in the catalog", run.operation_type);
        return fail(Check::Capability, ReasonCode::CapabilityMissing, fact, None);
    };
    let needed = &spec.required_capability;
    match state.capability(run.tenant_id, actor, needed) {
        Some(since) if since.value => pass(
            Check::Capability,
            format!("actor {actor} holds {needed} on tenant {}", run.tenant_id),
            Some(since.position),
        ),
        Some(since) => fail(
            Check::Capability,
            ReasonCode::CapabilityMissing,
            format!("{needed} was revoked from actor {actor} on tenant {}", run.tenant_id),
            Some(since.position),
        ),
        None => fail(
            Check::Capability,
            ReasonCode::CapabilityMissing,
            format!("actor {actor} does not hold {needed} on tenant {}", run.tenant_id),
            None,
        ),
    }
}

fn tenant_operability(run: &RunFacts<'_>, state: &AuthorityState) -> CheckResult {
    let Some(tenant) = state.tenants.get(run.tenant_id) else {
        let fact = format!("tenant {} is not registered", run.tenant_id);
        return fail(Check::TenantOperability, ReasonCode::TenantNotOperable, fact, None);
    };
    let lifecycle = tenant.lifecycle;
    let fact = format!("tenant {} is {}", run.tenant_id, lifecycle.value.as_str());
    let source = Some(lifecycle.position);
    match lifecycle.value {
        Lifecycle::Active => pass(Check::TenantOperability, fact, source),
        Lifecycle::Archived => fail(Check::TenantOperability, ReasonCode::TenantArchived, fact, source),
        Lifecycle::Discarded => fail(Check::TenantOperability, ReasonCode::TenantDiscarded, fact, source),
        Lifecycle::Onboarding => fail(Check::TenantOperability, ReasonCode::TenantNotOperable, fact, source),
    }
}

fn provider_connection(run: &RunFacts<'_>, state: &AuthorityState) -> CheckResult {
    let provider_backed = state.operation_type(run.operation_type).is_some_and(|spec| spec.provider_backed);
    if !provider_backed {
        return not_applicable(Check::ProviderConnection, "the operation type is not provider-backed");
    }
    let missing = |fact: String| fail(Check::ProviderConnection, ReasonCode::ProviderConnectionMissing, fact, None);
    let Some(id) = run.provider_connection_id else {
        return missing(format!("no provider connection is pinned and tenant {} has no default", run.tenant_id));
    };
    let Some(connection) = state.connections.get(id) else {
        return missing(format!("provider connection {id} does not exist"));
    };
    if connection.tenant_id != run.tenant_id {
        return missing(format!("provider connection {id} belongs to tenant {}", connection.tenant_id));
    }
    let status = connection.status;
    let fact = format!("provider connection {id} is {}", status.value.as_str());
    let reason = match status.value {
        ConnectionStatus::Ready => return pass(Check::ProviderConnection, fact, Some(status.position)),
        ConnectionStatus::ConsentRequired => ReasonCode::ProviderConsentRequired,
        ConnectionStatus::CredentialsInvalid => ReasonCode::ProviderCredentialsInvalid,
        ConnectionStatus::Disabled => ReasonCode::ProviderConnectionDisabled,
        ConnectionStatus::Unreachable => ReasonCode::ProviderConnectionUnreachable,
    };
    fail(Check::ProviderConnection, reason, fact, Some(status.position))
}

fn write_gate(run: &RunFacts<'_>, state: &AuthorityState) -> CheckResult {
    let writes = state.operation_type(run.operation_type).is_some_and(|spec| spec.writes);
    if !writes {
        return not_applicable(Check::WriteGate, "the operation type does not write");
    }
    let Some(tenant) = state.tenants.get(run.tenant_id) else {
        let fact = format!("tenant {} is not registered", run.tenant_id);
        return fail(Check::WriteGate, ReasonCode::WriteGateClosed, fact, None);
    };
    let gate = tenant.write_gate;
    if gate.value {
        return pass(
            Check::WriteGate,
            format!("the write gate of tenant {} is open", run.tenant_id),
            Some(gate.position),
        );
    }
    let fact = format!("the write gate of tenant {} is closed", run.tenant_id);
    fail(Check::WriteGate, ReasonCode::WriteGateClosed, fact, Some(gate.position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::authority::AuthorityChange as C;
    use crate::domain::model::OperationTypeSpec;

    fn op(name: &str, capability: &str, provider_backed: bool, writes: bool, system: bool) -> C {
        C::OperationTypeRegistered(OperationTypeSpec {
            operation_type: name.into(),
            required_capability: capability.into(),
            provider_backed,
            writes,
            system_authority_allowed: system,
            max_attempts: 3,
            lease_seconds: crate::domain::model::LEASE_SECONDS_DEFAULT,
        })
    }

    /// w1 / t1 (active, write gate open) / u1 member of both with
    /// tenant.sync and tenant.restore / c1 ready and default / t2 with c2.
    fn world() -> Vec<C> {
        let s = |v: &str| v.to_owned();
        vec![
            C::WorkspaceRegistered { workspace_id: s("w1") },
            C::TenantRegistered { tenant_id: s("t1"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
            C::TenantRegistered { tenant_id: s("t2"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
            C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("u1") },
            C::TenantMemberAdded { tenant_id: s("t1"), actor_id: s("u1") },
            C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") },
            C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.restore") },
            C::ProviderConnectionRegistered {
                connection_id: s("c1"),
                tenant_id: s("t1"),
                status: ConnectionStatus::Ready,
            },
            C::ProviderConnectionRegistered {
                connection_id: s("c2"),
                tenant_id: s("t2"),
                status: ConnectionStatus::Ready,
            },
            C::DefaultProviderConnectionSet { tenant_id: s("t1"), connection_id: s("c1") },
            C::WriteGateChanged { tenant_id: s("t1"), open: true },
            op("inventory_sync", "tenant.sync", true, false, true),
            op("restore.execute", "tenant.restore", false, true, false),
        ]
    }

    fn state_after(extra: &[C]) -> AuthorityState {
        let mut state = AuthorityState::default();
        for change in world().iter().chain(extra) {
            state.apply(state.position + 1, change).unwrap();
        }
        state
    }

    fn lifecycle(value: Lifecycle) -> C {
        C::TenantLifecycleChanged { tenant_id: "t1".into(), lifecycle: value }
    }

    fn connection(status: ConnectionStatus) -> C {
        C::ProviderConnectionStatusChanged { connection_id: "c1".into(), status }
    }

    struct Case {
        name: &'static str,
        given: Vec<C>,
        initiator: Principal,
        operation_type: &'static str,
        connection: Option<&'static str>,
        then: Option<ReasonCode>,
    }

    fn case(name: &'static str, given: Vec<C>, then: Option<ReasonCode>) -> Case {
        Case {
            name,
            given,
            initiator: Principal::actor("u1"),
            operation_type: "inventory_sync",
            connection: Some("c1"),
            then,
        }
    }

    fn cases() -> Vec<Case> {
        use ReasonCode as R;
        let s = |v: &str| v.to_owned();
        let system = |mut c: Case| {
            c.initiator = Principal::System;
            c
        };
        let restore = |mut c: Case| {
            c.operation_type = "restore.execute";
            c.connection = None;
            c
        };
        vec![
            case("actor with everything in place", vec![], None),
            system(case("system on an allowlisted type", vec![], None)),
            restore(case("actor restore with the write gate open", vec![], None)),
            system(restore(case("system on a type off the allowlist", vec![], Some(R::SystemAuthorityNotAllowed)))),
            case(
                "actor removed from the workspace",
                vec![C::WorkspaceMemberRemoved { workspace_id: s("w1"), actor_id: s("u1") }],
                Some(R::ActorNotInWorkspace),
            ),
            Case { initiator: Principal::actor("u2"), ..case("a stranger", vec![], Some(R::ActorNotInWorkspace)) },
            case(
                "actor removed from the tenant",
                vec![C::TenantMemberRemoved { tenant_id: s("t1"), actor_id: s("u1") }],
                Some(R::ActorNotInTenant),
            ),
            case(
                "capability revoked",
                vec![C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") }],
                Some(R::CapabilityMissing),
            ),
            case(
                "catalog now requires another capability",
                vec![C::OperationTypeUpdated(OperationTypeSpec {
                    operation_type: s("inventory_sync"),
                    required_capability: s("tenant.admin"),
                    provider_backed: true,
                    writes: false,
                    system_authority_allowed: true,
                    max_attempts: 3,
                    lease_seconds: crate::domain::model::LEASE_SECONDS_DEFAULT,
                })],
                Some(R::CapabilityMissing),
            ),
            case("tenant archived", vec![lifecycle(Lifecycle::Archived)], Some(R::TenantArchived)),
            case("tenant discarded", vec![lifecycle(Lifecycle::Discarded)], Some(R::TenantDiscarded)),
            case("tenant onboarding", vec![lifecycle(Lifecycle::Onboarding)], Some(R::TenantNotOperable)),
            system(case("system on an archived tenant", vec![lifecycle(Lifecycle::Archived)], Some(R::TenantArchived))),
            Case { connection: None, ..case("no connection pinned", vec![], Some(R::ProviderConnectionMissing)) },
            Case {
                connection: Some("c9"),
                ..case("pinned connection unknown", vec![], Some(R::ProviderConnectionMissing))
            },
            Case {
                connection: Some("c2"),
                ..case("pinned connection of another tenant", vec![], Some(R::ProviderConnectionMissing))
            },
            case(
                "consent required",
                vec![connection(ConnectionStatus::ConsentRequired)],
                Some(R::ProviderConsentRequired),
            ),
            case(
                "credentials invalid",
                vec![connection(ConnectionStatus::CredentialsInvalid)],
                Some(R::ProviderCredentialsInvalid),
            ),
            case(
                "connection disabled",
                vec![connection(ConnectionStatus::Disabled)],
                Some(R::ProviderConnectionDisabled),
            ),
            case(
                "connection unreachable",
                vec![connection(ConnectionStatus::Unreachable)],
                Some(R::ProviderConnectionUnreachable),
            ),
            restore(case(
                "write gate closed",
                vec![C::WriteGateChanged { tenant_id: s("t1"), open: false }],
                Some(R::WriteGateClosed),
            )),
            case(
                "several failures: the first in check order decides",
                vec![
                    connection(ConnectionStatus::Unreachable),
                    lifecycle(Lifecycle::Archived),
                    C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") },
                ],
                Some(R::CapabilityMissing),
            ),
            case(
                "tenant before prerequisites",
                vec![connection(ConnectionStatus::Disabled), lifecycle(Lifecycle::Discarded)],
                Some(R::TenantDiscarded),
            ),
        ]
    }

    #[test]
    fn given_history_when_evaluated_then_decision() {
        let mut covered = std::collections::BTreeSet::new();
        for case in cases() {
            let state = state_after(&case.given);
            let run = RunFacts {
                run_id: Uuid::nil(),
                operation_type: case.operation_type,
                tenant_id: "t1",
                workspace_id: "w1",
                initiator: &case.initiator,
                provider_connection_id: case.connection,
            };
            let decision = evaluate(&run, 2, &state);
            assert_eq!(decision.reason_code, case.then, "{}", case.name);
            assert_eq!(decision.allowed(), case.then.is_none(), "{}", case.name);
            assert_eq!(decision.denial_class, case.then.map(ReasonCode::denial_class), "{}", case.name);
            assert_eq!(
                decision.retryable,
                case.then == Some(ReasonCode::ProviderConnectionUnreachable),
                "{}",
                case.name
            );
            assert_eq!(decision.authority_position, state.position, "{}", case.name);
            assert_eq!(decision.attempt, 2);
            assert_eq!(decision.checks.len(), 7, "{}: every check is recorded", case.name);
            let first_failed = decision.checks.iter().find(|c| !c.passed).and_then(|c| c.reason_code);
            assert_eq!(first_failed, case.then, "{}", case.name);
            covered.extend(case.then);
        }
        let all: std::collections::BTreeSet<_> = ReasonCode::ALL.into_iter().collect();
        assert_eq!(covered, all, "every reason code has a case");
    }

    #[test]
    fn checks_are_recorded_in_table_order_with_their_facts_and_sources() {
        let state = state_after(&[]);
        let initiator = Principal::actor("u1");
        let run = RunFacts {
            run_id: Uuid::nil(),
            operation_type: "inventory_sync",
            tenant_id: "t1",
            workspace_id: "w1",
            initiator: &initiator,
            provider_connection_id: Some("c1"),
        };
        let decision = evaluate(&run, 1, &state);
        let order: Vec<Check> = decision.checks.iter().map(|c| c.check).collect();
        assert_eq!(order, Check::ALL, "every check, in the order `Check::ALL` names");
        let capability = &decision.checks[3];
        assert_eq!(capability.fact, "actor u1 holds tenant.sync on tenant t1");
        assert_eq!(capability.source_position, Some(6), "the grant is the 6th authority event");
        assert!(decision.checks[6].fact.starts_with("not applicable"));
    }

    #[test]
    fn system_runs_skip_the_actor_checks() {
        let state = state_after(&[C::WorkspaceMemberRemoved { workspace_id: "w1".into(), actor_id: "u1".into() }]);
        let run = RunFacts {
            run_id: Uuid::nil(),
            operation_type: "inventory_sync",
            tenant_id: "t1",
            workspace_id: "w1",
            initiator: &Principal::System,
            provider_connection_id: Some("c1"),
        };
        let decision = evaluate(&run, 1, &state);
        assert!(decision.allowed());
        assert_eq!(decision.authority_mode, AuthorityMode::SystemAuthority);
        assert!(decision.checks[1..4].iter().all(|c| c.passed && c.fact.starts_with("not applicable")));
    }
}
