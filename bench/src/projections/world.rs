//! The authority world both benches run in: tenants in workspaces, members
//! with capabilities, a ready default connection per tenant and three
//! operation types (one provider-backed, so runs on it hold a scope). The
//! same shape as `bench cycles`, so figures compare across benches.

use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::model::{ConnectionStatus, Lifecycle, OperationTypeSpec, Principal};

pub const TENANTS: usize = 1_000;
pub const WORKSPACES: usize = 10;
pub const MEMBERS_PER_TENANT: usize = 5;
/// Provider-backed: a run pins the tenant's default connection and holds its scope.
pub const SYNC: &str = "inventory_sync";
pub const OPERATION_TYPES: [(&str, bool); 3] = [(SYNC, true), ("restore.execute", false), ("report.build", false)];

pub fn tenant(index: usize) -> String {
    format!("t{index}")
}

pub fn connection(tenant: usize) -> String {
    format!("c{tenant}")
}

/// Member `member` (0..MEMBERS_PER_TENANT) of `tenant`: holds both capabilities.
pub fn member(tenant: usize, member: usize) -> Principal {
    Principal::actor(format!("u{}", tenant * MEMBERS_PER_TENANT + member))
}

/// Every change of the world, in an order the authority state accepts.
pub fn changes() -> Vec<C> {
    let mut changes: Vec<C> =
        (0..WORKSPACES).map(|workspace| C::WorkspaceRegistered { workspace_id: format!("w{workspace}") }).collect();
    for index in 0..TENANTS {
        changes.extend(tenant_changes(index));
    }
    for (name, provider_backed) in OPERATION_TYPES {
        changes.push(C::OperationTypeRegistered(OperationTypeSpec {
            operation_type: name.to_owned(),
            required_capability: "tenant.sync".to_owned(),
            provider_backed,
            writes: false,
            system_authority_allowed: true,
            max_attempts: 3,
            lease_seconds: opledger::domain::model::LEASE_SECONDS_DEFAULT,
        }));
    }
    changes
}

fn tenant_changes(index: usize) -> Vec<C> {
    let tenant_id = tenant(index);
    let workspace_id = format!("w{}", index % WORKSPACES);
    let mut changes = vec![C::TenantRegistered {
        tenant_id: tenant_id.clone(),
        workspace_id: workspace_id.clone(),
        lifecycle: Lifecycle::Active,
    }];
    for slot in 0..MEMBERS_PER_TENANT {
        let Principal::Actor { id: actor_id } = member(index, slot) else { continue };
        changes.push(C::WorkspaceMemberAdded { workspace_id: workspace_id.clone(), actor_id: actor_id.clone() });
        changes.push(C::TenantMemberAdded { tenant_id: tenant_id.clone(), actor_id: actor_id.clone() });
        for capability in ["tenant.sync", "operations.view"] {
            let capability = capability.to_owned();
            changes.push(C::CapabilityGranted { tenant_id: tenant_id.clone(), actor_id: actor_id.clone(), capability });
        }
    }
    let connection_id = connection(index);
    let status = ConnectionStatus::Ready;
    changes.push(C::ProviderConnectionRegistered {
        connection_id: connection_id.clone(),
        tenant_id: tenant_id.clone(),
        status,
    });
    changes.push(C::DefaultProviderConnectionSet { tenant_id: tenant_id.clone(), connection_id });
    changes.push(C::WriteGateChanged { tenant_id, open: true });
    changes
}
