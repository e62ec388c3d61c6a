//! Authority read-back: the authority state as of any log position, as
//! facts an auditor can read ("who could run restores on t1 at position
//! 4,812?"). Each fact carries the position of the event that made it
//! true, so it can be looked up in the log and the audit trail.
//!
//! Facts that are no longer true at that position (a removed member, a
//! revoked capability) are not listed: the audit trail holds the history.

use opledger::domain::authority::AuthorityState;
use opledger::domain::model::{ConnectionStatus, Lifecycle, OperationTypeSpec};
use opledger::Log;
use serde::Serialize;

use crate::error::ProjectionError;

/// Which facts a read-back keeps. Every filter narrows; none keeps all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorityFilter {
    /// This workspace, its tenants and their connections.
    pub workspace_id: Option<String>,
    /// This tenant (and its workspace), its connections.
    pub tenant_id: Option<String>,
    /// Only this actor's memberships and capabilities.
    pub actor_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WorkspaceFacts {
    pub workspace_id: String,
    pub registered_position: u64,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub actor_id: String,
    pub position: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Capability {
    pub actor_id: String,
    pub capability: String,
    pub position: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Positioned<T> {
    pub value: T,
    pub position: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantFacts {
    pub tenant_id: String,
    pub workspace_id: String,
    pub registered_position: u64,
    pub lifecycle: Positioned<Lifecycle>,
    /// `true`: writing operations may run.
    pub write_gate_open: Positioned<bool>,
    #[schema(required = true)]
    pub default_connection: Option<Positioned<String>>,
    pub members: Vec<Member>,
    pub capabilities: Vec<Capability>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ConnectionFacts {
    pub connection_id: String,
    pub tenant_id: String,
    pub status: Positioned<ConnectionStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CatalogEntry {
    #[serde(flatten)]
    pub spec: OperationTypeSpec,
    pub position: u64,
}

/// The authority state as of `as_of`, as facts, sorted by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuthorityReport {
    pub as_of: u64,
    /// Position of the last authority event at or before `as_of` (0: none).
    pub authority_position: u64,
    pub workspaces: Vec<WorkspaceFacts>,
    pub tenants: Vec<TenantFacts>,
    pub connections: Vec<ConnectionFacts>,
    pub catalog: Vec<CatalogEntry>,
}

/// Why a read-back was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityReadError {
    #[error("as_of {as_of} is past the head of the log ({head})")]
    PastHead { as_of: u64, head: u64 },
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

/// The authority state folded from the log up to `as_of` (the head when
/// `None`). Reads only the authority stream.
pub fn state_as_of(log: &Log, as_of: Option<u64>) -> Result<(u64, AuthorityState), AuthorityReadError> {
    let head = log.head().position;
    let as_of = as_of.unwrap_or(head);
    if as_of > head {
        return Err(AuthorityReadError::PastHead { as_of, head });
    }
    Ok((as_of, crate::projector::authority_as_of(log, as_of)?))
}

fn keeps_actor(filter: &AuthorityFilter, actor_id: &str) -> bool {
    filter.actor_id.as_deref().is_none_or(|wanted| wanted == actor_id)
}

fn keeps_workspace(filter: &AuthorityFilter, state: &AuthorityState, workspace_id: &str) -> bool {
    let tenant_workspace =
        filter.tenant_id.as_deref().map(|tenant| state.tenants.get(tenant).map(|t| t.workspace_id.as_str()));
    filter.workspace_id.as_deref().is_none_or(|wanted| wanted == workspace_id)
        && tenant_workspace.is_none_or(|of_tenant| of_tenant == Some(workspace_id))
}

fn keeps_tenant(filter: &AuthorityFilter, state: &AuthorityState, tenant_id: &str, workspace_id: &str) -> bool {
    filter.tenant_id.as_deref().is_none_or(|wanted| wanted == tenant_id) && keeps_workspace(filter, state, workspace_id)
}

fn members<'a>(
    filter: &AuthorityFilter,
    all: impl Iterator<Item = (&'a String, &'a opledger::domain::authority::Since<bool>)>,
) -> Vec<Member> {
    all.filter(|(actor_id, since)| since.value && keeps_actor(filter, actor_id))
        .map(|(actor_id, since)| Member { actor_id: actor_id.clone(), position: since.position })
        .collect()
}

/// The facts of `state` that `filter` keeps.
pub fn report(as_of: u64, state: &AuthorityState, filter: &AuthorityFilter) -> AuthorityReport {
    let mut workspaces: Vec<WorkspaceFacts> = state
        .workspaces
        .iter()
        .filter(|(id, _)| keeps_workspace(filter, state, id))
        .map(|(id, workspace)| WorkspaceFacts {
            workspace_id: id.clone(),
            registered_position: workspace.registered_position,
            members: members(filter, workspace.members.iter()),
        })
        .collect();
    workspaces.sort_by(|a, b| a.workspace_id.cmp(&b.workspace_id));
    let mut tenants: Vec<TenantFacts> = state
        .tenants
        .iter()
        .filter(|(id, tenant)| keeps_tenant(filter, state, id, &tenant.workspace_id))
        .map(|(id, tenant)| tenant_facts(filter, id, tenant))
        .collect();
    tenants.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    let mut connections: Vec<ConnectionFacts> = state
        .connections
        .iter()
        .filter(|(_, c)| tenants.iter().any(|t| t.tenant_id == c.tenant_id))
        .map(|(id, c)| ConnectionFacts {
            connection_id: id.clone(),
            tenant_id: c.tenant_id.clone(),
            status: Positioned { value: c.status.value, position: c.status.position },
        })
        .collect();
    connections.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
    let mut catalog: Vec<CatalogEntry> = state
        .catalog
        .values()
        .map(|since| CatalogEntry { spec: since.value.clone(), position: since.position })
        .collect();
    catalog.sort_by(|a, b| a.spec.operation_type.cmp(&b.spec.operation_type));
    AuthorityReport { as_of, authority_position: state.position, workspaces, tenants, connections, catalog }
}

fn tenant_facts(filter: &AuthorityFilter, id: &str, tenant: &opledger::domain::authority::Tenant) -> TenantFacts {
    let capabilities = tenant
        .capabilities
        .iter()
        .filter(|((actor_id, _), since)| since.value && keeps_actor(filter, actor_id))
        .map(|((actor_id, capability), since)| Capability {
            actor_id: actor_id.clone(),
            capability: capability.clone(),
            position: since.position,
        })
        .collect();
    TenantFacts {
        tenant_id: id.to_owned(),
        workspace_id: tenant.workspace_id.clone(),
        registered_position: tenant.registered_position,
        lifecycle: Positioned { value: tenant.lifecycle.value, position: tenant.lifecycle.position },
        write_gate_open: Positioned { value: tenant.write_gate.value, position: tenant.write_gate.position },
        default_connection: tenant
            .default_connection
            .as_ref()
            .map(|since| Positioned { value: since.value.clone(), position: since.position }),
        members: members(filter, tenant.members.iter()),
        capabilities,
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
