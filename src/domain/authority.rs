//! Authority: the changes the host application records, and the state
//! folded from them that both gates decide on.
//!
//! The state remembers, for every fact, the log position of the authority
//! event that made it true (or false): decisions record it, so an auditor
//! can see which grant, revocation or lifecycle change a decision rested on.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::domain::model::{check_actor_id, check_id, ConnectionStatus, Lifecycle, OperationTypeSpec, Principal};

/// One authority change, as the host application sends it (API.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthorityChange {
    WorkspaceRegistered { workspace_id: String },
    TenantRegistered { tenant_id: String, workspace_id: String, lifecycle: Lifecycle },
    TenantLifecycleChanged { tenant_id: String, lifecycle: Lifecycle },
    WorkspaceMemberAdded { workspace_id: String, actor_id: String },
    WorkspaceMemberRemoved { workspace_id: String, actor_id: String },
    TenantMemberAdded { tenant_id: String, actor_id: String },
    TenantMemberRemoved { tenant_id: String, actor_id: String },
    CapabilityGranted { tenant_id: String, actor_id: String, capability: String },
    CapabilityRevoked { tenant_id: String, actor_id: String, capability: String },
    ProviderConnectionRegistered { connection_id: String, tenant_id: String, status: ConnectionStatus },
    ProviderConnectionStatusChanged { connection_id: String, status: ConnectionStatus },
    DefaultProviderConnectionSet { tenant_id: String, connection_id: String },
    WriteGateChanged { tenant_id: String, open: bool },
    OperationTypeRegistered(OperationTypeSpec),
    OperationTypeUpdated(OperationTypeSpec),
}

impl AuthorityChange {
    /// The pinned event type of this change (its serialized `type`).
    pub fn event_type(&self) -> &'static str {
        match self {
            AuthorityChange::WorkspaceRegistered { .. } => "workspace_registered",
            AuthorityChange::TenantRegistered { .. } => "tenant_registered",
            AuthorityChange::TenantLifecycleChanged { .. } => "tenant_lifecycle_changed",
            AuthorityChange::WorkspaceMemberAdded { .. } => "workspace_member_added",
            AuthorityChange::WorkspaceMemberRemoved { .. } => "workspace_member_removed",
            AuthorityChange::TenantMemberAdded { .. } => "tenant_member_added",
            AuthorityChange::TenantMemberRemoved { .. } => "tenant_member_removed",
            AuthorityChange::CapabilityGranted { .. } => "capability_granted",
            AuthorityChange::CapabilityRevoked { .. } => "capability_revoked",
            AuthorityChange::ProviderConnectionRegistered { .. } => "provider_connection_registered",
            AuthorityChange::ProviderConnectionStatusChanged { .. } => "provider_connection_status_changed",
            AuthorityChange::DefaultProviderConnectionSet { .. } => "default_provider_connection_set",
            AuthorityChange::WriteGateChanged { .. } => "write_gate_changed",
            AuthorityChange::OperationTypeRegistered(_) => "operation_type_registered",
            AuthorityChange::OperationTypeUpdated(_) => "operation_type_updated",
        }
    }

    /// The tenant this change is about, if any (for the audit trail).
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            AuthorityChange::TenantRegistered { tenant_id, .. }
            | AuthorityChange::TenantLifecycleChanged { tenant_id, .. }
            | AuthorityChange::TenantMemberAdded { tenant_id, .. }
            | AuthorityChange::TenantMemberRemoved { tenant_id, .. }
            | AuthorityChange::CapabilityGranted { tenant_id, .. }
            | AuthorityChange::CapabilityRevoked { tenant_id, .. }
            | AuthorityChange::ProviderConnectionRegistered { tenant_id, .. }
            | AuthorityChange::DefaultProviderConnectionSet { tenant_id, .. }
            | AuthorityChange::WriteGateChanged { tenant_id, .. } => Some(tenant_id),
            _ => None,
        }
    }
}

/// The payload of every authority event: the change and who made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityChanged {
    pub changed_by: Principal,
    pub change: AuthorityChange,
}

/// A value and the log position of the event that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since<T> {
    pub value: T,
    pub position: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Workspace {
    /// Position of the `workspace_registered` event.
    pub registered_position: u64,
    /// Actor id → position of the add (present) or removal (absent, kept
    /// so a denial can point at the removal).
    pub members: BTreeMap<String, Since<bool>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub workspace_id: String,
    /// Position of the `tenant_registered` event.
    pub registered_position: u64,
    pub lifecycle: Since<Lifecycle>,
    pub members: BTreeMap<String, Since<bool>>,
    /// (actor, capability) → held?
    pub capabilities: BTreeMap<(String, String), Since<bool>>,
    pub default_connection: Option<Since<String>>,
    /// Closed until opened: a writing operation fails closed.
    pub write_gate: Since<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub tenant_id: String,
    pub status: Since<ConnectionStatus>,
}

/// Everything the gates need, folded from authority events only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthorityState {
    /// Position of the last authority event applied (0: none).
    pub position: u64,
    pub workspaces: HashMap<String, Workspace>,
    pub tenants: HashMap<String, Tenant>,
    pub connections: HashMap<String, Connection>,
    pub catalog: HashMap<String, Since<OperationTypeSpec>>,
}

impl AuthorityState {
    pub fn workspace_member(&self, workspace_id: &str, actor_id: &str) -> Option<Since<bool>> {
        self.workspaces.get(workspace_id)?.members.get(actor_id).copied()
    }

    pub fn tenant_member(&self, tenant_id: &str, actor_id: &str) -> Option<Since<bool>> {
        self.tenants.get(tenant_id)?.members.get(actor_id).copied()
    }

    pub fn capability(&self, tenant_id: &str, actor_id: &str, capability: &str) -> Option<Since<bool>> {
        let key = (actor_id.to_owned(), capability.to_owned());
        self.tenants.get(tenant_id)?.capabilities.get(&key).copied()
    }

    /// Capabilities an actor holds on a tenant.
    pub fn capabilities_of(&self, tenant_id: &str, actor_id: &str) -> BTreeSet<String> {
        let Some(tenant) = self.tenants.get(tenant_id) else { return BTreeSet::new() };
        tenant
            .capabilities
            .iter()
            .filter(|((actor, _), held)| actor == actor_id && held.value)
            .map(|((_, capability), _)| capability.clone())
            .collect()
    }

    pub fn operation_type(&self, operation_type: &str) -> Option<&OperationTypeSpec> {
        self.catalog.get(operation_type).map(|entry| &entry.value)
    }

    /// Whether `change` may be applied now; a clear reason if not. Applying
    /// a batch validates each change against the state the earlier changes
    /// of the batch produced.
    pub fn validate(&self, change: &AuthorityChange) -> Result<(), String> {
        check_ids(change)?;
        self.check_references(change)
    }

    /// Whether what `change` refers to exists (or, for a registration, does
    /// not yet): the part of [`AuthorityState::validate`] that folding the
    /// log re-checks.
    fn check_references(&self, change: &AuthorityChange) -> Result<(), String> {
        match change {
            AuthorityChange::WorkspaceRegistered { workspace_id } => {
                absent(self.workspaces.contains_key(workspace_id), "workspace", workspace_id)
            }
            AuthorityChange::TenantRegistered { tenant_id, workspace_id, .. } => {
                absent(self.tenants.contains_key(tenant_id), "tenant", tenant_id)?;
                self.known_workspace(workspace_id)
            }
            AuthorityChange::WorkspaceMemberAdded { workspace_id, .. }
            | AuthorityChange::WorkspaceMemberRemoved { workspace_id, .. } => self.known_workspace(workspace_id),
            AuthorityChange::TenantLifecycleChanged { tenant_id, .. }
            | AuthorityChange::TenantMemberAdded { tenant_id, .. }
            | AuthorityChange::TenantMemberRemoved { tenant_id, .. }
            | AuthorityChange::CapabilityGranted { tenant_id, .. }
            | AuthorityChange::CapabilityRevoked { tenant_id, .. }
            | AuthorityChange::WriteGateChanged { tenant_id, .. } => self.known_tenant(tenant_id),
            AuthorityChange::ProviderConnectionRegistered { connection_id, tenant_id, .. } => {
                absent(self.connections.contains_key(connection_id), "provider connection", connection_id)?;
                self.known_tenant(tenant_id)
            }
            AuthorityChange::ProviderConnectionStatusChanged { connection_id, .. } => {
                self.known_connection(connection_id).map(|_| ())
            }
            AuthorityChange::DefaultProviderConnectionSet { tenant_id, connection_id } => {
                self.known_tenant(tenant_id)?;
                let connection = self.known_connection(connection_id)?;
                if &connection.tenant_id != tenant_id {
                    return Err(format!(
                        "provider connection {connection_id} belongs to tenant {}",
                        connection.tenant_id
                    ));
                }
                Ok(())
            }
            AuthorityChange::OperationTypeRegistered(spec) => {
                absent(self.catalog.contains_key(&spec.operation_type), "operation type", &spec.operation_type)
            }
            AuthorityChange::OperationTypeUpdated(spec) => match self.catalog.contains_key(&spec.operation_type) {
                true => Ok(()),
                false => Err(format!("unknown operation type {}", spec.operation_type)),
            },
        }
    }

    fn known_workspace(&self, workspace_id: &str) -> Result<(), String> {
        match self.workspaces.contains_key(workspace_id) {
            true => Ok(()),
            false => Err(format!("unknown workspace {workspace_id}")),
        }
    }

    fn known_tenant(&self, tenant_id: &str) -> Result<(), String> {
        match self.tenants.contains_key(tenant_id) {
            true => Ok(()),
            false => Err(format!("unknown tenant {tenant_id}")),
        }
    }

    fn known_connection(&self, connection_id: &str) -> Result<&Connection, String> {
        self.connections.get(connection_id).ok_or_else(|| format!("unknown provider connection {connection_id}"))
    }

    /// Folds one authority event recorded at `position`. Events are applied
    /// only after validation, so a change that refers to something unknown
    /// here means the log holds an event the ledger never accepted. Ids are
    /// not re-checked: they passed the id rules in force when the event was
    /// accepted, and a later, stricter rule must not make a log unreadable.
    pub fn apply(&mut self, position: u64, change: &AuthorityChange) -> Result<(), String> {
        assert!(position > self.position, "authority events are applied in log order");
        self.check_references(change)?;
        self.position = position;
        match change.clone() {
            AuthorityChange::WorkspaceRegistered { workspace_id } => {
                self.workspaces
                    .insert(workspace_id, Workspace { registered_position: position, ..Workspace::default() });
            }
            AuthorityChange::TenantRegistered { tenant_id, workspace_id, lifecycle } => {
                let tenant = Tenant {
                    workspace_id,
                    registered_position: position,
                    lifecycle: since(position, lifecycle),
                    members: BTreeMap::new(),
                    capabilities: BTreeMap::new(),
                    default_connection: None,
                    write_gate: since(position, false),
                };
                self.tenants.insert(tenant_id, tenant);
            }
            AuthorityChange::TenantLifecycleChanged { tenant_id, lifecycle } => {
                self.tenant_mut(&tenant_id)?.lifecycle = since(position, lifecycle);
            }
            AuthorityChange::WorkspaceMemberAdded { workspace_id, actor_id } => {
                self.workspace_mut(&workspace_id)?.members.insert(actor_id, since(position, true));
            }
            AuthorityChange::WorkspaceMemberRemoved { workspace_id, actor_id } => {
                self.workspace_mut(&workspace_id)?.members.insert(actor_id, since(position, false));
            }
            AuthorityChange::TenantMemberAdded { tenant_id, actor_id } => {
                self.tenant_mut(&tenant_id)?.members.insert(actor_id, since(position, true));
            }
            AuthorityChange::TenantMemberRemoved { tenant_id, actor_id } => {
                self.tenant_mut(&tenant_id)?.members.insert(actor_id, since(position, false));
            }
            AuthorityChange::CapabilityGranted { tenant_id, actor_id, capability } => {
                self.tenant_mut(&tenant_id)?.capabilities.insert((actor_id, capability), since(position, true));
            }
            AuthorityChange::CapabilityRevoked { tenant_id, actor_id, capability } => {
                self.tenant_mut(&tenant_id)?.capabilities.insert((actor_id, capability), since(position, false));
            }
            AuthorityChange::ProviderConnectionRegistered { connection_id, tenant_id, status } => {
                self.connections.insert(connection_id, Connection { tenant_id, status: since(position, status) });
            }
            AuthorityChange::ProviderConnectionStatusChanged { connection_id, status } => {
                let connection = self.connections.get_mut(&connection_id).ok_or("unknown connection")?;
                connection.status = since(position, status);
            }
            AuthorityChange::DefaultProviderConnectionSet { tenant_id, connection_id } => {
                self.tenant_mut(&tenant_id)?.default_connection = Some(since(position, connection_id));
            }
            AuthorityChange::WriteGateChanged { tenant_id, open } => {
                self.tenant_mut(&tenant_id)?.write_gate = since(position, open);
            }
            AuthorityChange::OperationTypeRegistered(spec) | AuthorityChange::OperationTypeUpdated(spec) => {
                self.catalog.insert(spec.operation_type.clone(), since(position, spec));
            }
        }
        Ok(())
    }

    fn tenant_mut(&mut self, tenant_id: &str) -> Result<&mut Tenant, String> {
        self.tenants.get_mut(tenant_id).ok_or_else(|| format!("unknown tenant {tenant_id}"))
    }

    fn workspace_mut(&mut self, workspace_id: &str) -> Result<&mut Workspace, String> {
        self.workspaces.get_mut(workspace_id).ok_or_else(|| format!("unknown workspace {workspace_id}"))
    }
}

fn since<T>(position: u64, value: T) -> Since<T> {
    Since { value, position }
}

fn absent(exists: bool, what: &str, id: &str) -> Result<(), String> {
    match exists {
        true => Err(format!("{what} {id} is already registered")),
        false => Ok(()),
    }
}

fn check_ids(change: &AuthorityChange) -> Result<(), String> {
    let value = serde_json::to_value(change).map_err(|e| e.to_string())?;
    if let Some(fields) = value.as_object() {
        for (name, field) in fields {
            match (name.as_str(), field.as_str()) {
                ("actor_id", Some(text)) => check_actor_id(name, text)?,
                (name, Some(text)) if name.ends_with("_id") || name == "capability" => check_id(name, text)?,
                _ => {}
            }
        }
    }
    if let AuthorityChange::OperationTypeRegistered(spec) | AuthorityChange::OperationTypeUpdated(spec) = change {
        spec.check()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(state: &mut AuthorityState, changes: &[AuthorityChange]) {
        for change in changes {
            state.apply(state.position + 1, change).unwrap();
        }
    }

    fn base() -> AuthorityState {
        let mut state = AuthorityState::default();
        register(
            &mut state,
            &[
                AuthorityChange::WorkspaceRegistered { workspace_id: "w1".into() },
                AuthorityChange::TenantRegistered {
                    tenant_id: "t1".into(),
                    workspace_id: "w1".into(),
                    lifecycle: Lifecycle::Active,
                },
                AuthorityChange::ProviderConnectionRegistered {
                    connection_id: "c1".into(),
                    tenant_id: "t1".into(),
                    status: ConnectionStatus::Ready,
                },
            ],
        );
        state
    }

    #[test]
    fn the_api_example_deserializes() {
        let change: AuthorityChange = serde_json::from_value(serde_json::json!({
            "type": "operation_type_registered", "operation_type": "inventory_sync",
            "required_capability": "tenant.sync", "provider_backed": true, "writes": false,
            "system_authority_allowed": true, "max_attempts": 3
        }))
        .unwrap();
        assert_eq!(change.event_type(), "operation_type_registered");
        let bad = serde_json::json!({"type": "workspace_registered", "workspace_id": "w", "extra": 1});
        assert!(serde_json::from_value::<AuthorityChange>(bad).is_err());
    }

    #[test]
    fn every_event_type_is_its_serialized_type() {
        let changes = [
            AuthorityChange::WorkspaceRegistered { workspace_id: "w".into() },
            AuthorityChange::WriteGateChanged { tenant_id: "t".into(), open: true },
            AuthorityChange::ProviderConnectionStatusChanged {
                connection_id: "c".into(),
                status: ConnectionStatus::Disabled,
            },
        ];
        for change in changes {
            assert_eq!(serde_json::to_value(&change).unwrap()["type"], change.event_type());
        }
    }

    #[test]
    fn facts_remember_the_position_that_set_them() {
        let mut state = base();
        register(
            &mut state,
            &[
                AuthorityChange::TenantMemberAdded { tenant_id: "t1".into(), actor_id: "u1".into() },
                AuthorityChange::CapabilityGranted {
                    tenant_id: "t1".into(),
                    actor_id: "u1".into(),
                    capability: "tenant.sync".into(),
                },
                AuthorityChange::CapabilityRevoked {
                    tenant_id: "t1".into(),
                    actor_id: "u1".into(),
                    capability: "tenant.sync".into(),
                },
            ],
        );
        assert_eq!(state.tenant_member("t1", "u1"), Some(Since { value: true, position: 4 }));
        assert_eq!(state.capability("t1", "u1", "tenant.sync"), Some(Since { value: false, position: 6 }));
        assert!(state.capabilities_of("t1", "u1").is_empty());
        assert_eq!(state.position, 6);
    }

    #[test]
    fn changes_about_unknown_things_are_refused() {
        let state = base();
        let cases = [
            AuthorityChange::TenantRegistered {
                tenant_id: "t2".into(),
                workspace_id: "nope".into(),
                lifecycle: Lifecycle::Active,
            },
            AuthorityChange::TenantRegistered {
                tenant_id: "t1".into(),
                workspace_id: "w1".into(),
                lifecycle: Lifecycle::Active,
            },
            AuthorityChange::TenantMemberAdded { tenant_id: "nope".into(), actor_id: "u1".into() },
            AuthorityChange::ProviderConnectionStatusChanged {
                connection_id: "nope".into(),
                status: ConnectionStatus::Ready,
            },
            AuthorityChange::DefaultProviderConnectionSet { tenant_id: "t1".into(), connection_id: "nope".into() },
            AuthorityChange::WorkspaceMemberAdded { workspace_id: "w1".into(), actor_id: "has space".into() },
            AuthorityChange::WorkspaceMemberAdded { workspace_id: "w1".into(), actor_id: "system".into() },
            AuthorityChange::OperationTypeUpdated(OperationTypeSpec {
                operation_type: "nope".into(),
                required_capability: "c".into(),
                provider_backed: false,
                writes: false,
                system_authority_allowed: false,
                max_attempts: 1,
                lease_seconds: crate::domain::model::LEASE_SECONDS_DEFAULT,
            }),
        ];
        for change in cases {
            assert!(state.validate(&change).is_err(), "{change:?} should be refused");
        }
    }

    #[test]
    fn a_default_connection_must_belong_to_the_tenant() {
        let mut state = base();
        register(
            &mut state,
            &[AuthorityChange::TenantRegistered {
                tenant_id: "t2".into(),
                workspace_id: "w1".into(),
                lifecycle: Lifecycle::Active,
            }],
        );
        let change =
            AuthorityChange::DefaultProviderConnectionSet { tenant_id: "t2".into(), connection_id: "c1".into() };
        assert!(state.validate(&change).unwrap_err().contains("belongs to tenant t1"));
    }

    #[test]
    fn folding_does_not_recheck_ids_that_a_command_would_refuse() {
        // An id accepted by an earlier version (before invisible characters
        // were refused) still folds: the log stays readable.
        let mut state = base();
        let change = AuthorityChange::TenantMemberAdded { tenant_id: "t1".into(), actor_id: "u1\u{200B}".into() };
        assert!(state.validate(&change).unwrap_err().contains("U+200B"));
        state.apply(state.position + 1, &change).unwrap();
        assert!(state.tenant_member("t1", "u1\u{200B}").is_some_and(|member| member.value));
        // References are still checked when folding.
        let unknown = AuthorityChange::TenantMemberAdded { tenant_id: "nope".into(), actor_id: "u1".into() };
        assert!(state.apply(state.position + 1, &unknown).is_err());
    }

    #[test]
    fn write_gates_start_closed() {
        assert!(!base().tenants["t1"].write_gate.value);
    }
}
