//! The access rule of Monitoring (SPEC 6), one function for every read
//! surface (JSON API, HTML pages, CLI with a viewer).
//!
//! Decided on the authority state, never on the projection: a viewer who is
//! not a member of the run's workspace, or of its tenant, must not learn
//! that the run exists (404); a member without `operations.view` on the
//! tenant is told it is forbidden (403).

use std::collections::BTreeSet;

use opledger::domain::authority::AuthorityState;

/// The capability that lets an actor see a tenant's runs.
pub const VIEW_CAPABILITY: &str = "operations.view";

/// Who is reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// A service token (workers, the host application): sees everything.
    Service,
    Actor(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Visible,
    /// 404: the run's existence is not revealed.
    NotFound,
    /// 403: a member without `operations.view`.
    Forbidden,
}

fn member(authority: &AuthorityState, workspace_id: &str, tenant_id: &str, actor: &str) -> bool {
    let in_workspace = authority.workspace_member(workspace_id, actor).is_some_and(|since| since.value);
    let in_tenant = authority.tenant_member(tenant_id, actor).is_some_and(|since| since.value);
    in_workspace && in_tenant
}

fn may_view(authority: &AuthorityState, tenant_id: &str, actor: &str) -> bool {
    authority.capability(tenant_id, actor, VIEW_CAPABILITY).is_some_and(|since| since.value)
}

/// May `viewer` see a run of `tenant_id` in `workspace_id`?
pub fn run_access(authority: &AuthorityState, viewer: &Viewer, workspace_id: &str, tenant_id: &str) -> Access {
    let Viewer::Actor(actor) = viewer else { return Access::Visible };
    if !member(authority, workspace_id, tenant_id, actor) {
        return Access::NotFound;
    }
    if !may_view(authority, tenant_id, actor) {
        return Access::Forbidden;
    }
    Access::Visible
}

/// What a list request may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListAccess {
    /// Every run matching the filter.
    All,
    /// Only runs of these tenants (an actor without a filter).
    Tenants(BTreeSet<String>),
    NotFound,
    Forbidden,
}

/// The list rule: a tenant or workspace filter the actor is not a member
/// of → 404; a member without `operations.view` there (for a workspace: on
/// none of its tenants) → 403; without a filter, only the tenants the
/// actor may see.
pub fn list_access(
    authority: &AuthorityState,
    viewer: &Viewer,
    workspace_id: Option<&str>,
    tenant_id: Option<&str>,
) -> ListAccess {
    let Viewer::Actor(actor) = viewer else { return ListAccess::All };
    let visible = visible_tenants(authority, actor);
    if let Some(tenant_id) = tenant_id {
        let Some(tenant) = authority.tenants.get(tenant_id) else { return ListAccess::NotFound };
        if workspace_id.is_some_and(|w| w != tenant.workspace_id) {
            return ListAccess::NotFound;
        }
        return match run_access(authority, viewer, &tenant.workspace_id, tenant_id) {
            Access::Visible => ListAccess::Tenants(BTreeSet::from([tenant_id.to_owned()])),
            Access::NotFound => ListAccess::NotFound,
            Access::Forbidden => ListAccess::Forbidden,
        };
    }
    if let Some(workspace_id) = workspace_id {
        if !authority.workspace_member(workspace_id, actor).is_some_and(|since| since.value) {
            return ListAccess::NotFound;
        }
        let in_workspace: BTreeSet<String> = visible
            .into_iter()
            .filter(|t| authority.tenants.get(t).is_some_and(|tenant| tenant.workspace_id == workspace_id))
            .collect();
        return match in_workspace.is_empty() {
            true => ListAccess::Forbidden,
            false => ListAccess::Tenants(in_workspace),
        };
    }
    ListAccess::Tenants(visible)
}

/// Tenants whose runs `actor` may see.
pub fn visible_tenants(authority: &AuthorityState, actor: &str) -> BTreeSet<String> {
    authority
        .tenants
        .iter()
        .filter(|(id, tenant)| member(authority, &tenant.workspace_id, id, actor) && may_view(authority, id, actor))
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opledger::domain::authority::AuthorityChange as C;
    use opledger::domain::model::Lifecycle;

    fn s(v: &str) -> String {
        v.to_owned()
    }

    /// w1 with t1 and t2, w2 with t3. `viewer` is in w1 and t1 with
    /// operations.view; `member` is in w1 and t1 without it; `outsider`
    /// is in w1 only; `stranger` is in nothing.
    fn authority() -> AuthorityState {
        let mut state = AuthorityState::default();
        let changes = vec![
            C::WorkspaceRegistered { workspace_id: s("w1") },
            C::WorkspaceRegistered { workspace_id: s("w2") },
            C::TenantRegistered { tenant_id: s("t1"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
            C::TenantRegistered { tenant_id: s("t2"), workspace_id: s("w1"), lifecycle: Lifecycle::Active },
            C::TenantRegistered { tenant_id: s("t3"), workspace_id: s("w2"), lifecycle: Lifecycle::Active },
            C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("viewer") },
            C::TenantMemberAdded { tenant_id: s("t1"), actor_id: s("viewer") },
            C::CapabilityGranted { tenant_id: s("t1"), actor_id: s("viewer"), capability: s(VIEW_CAPABILITY) },
            C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("member") },
            C::TenantMemberAdded { tenant_id: s("t1"), actor_id: s("member") },
            C::WorkspaceMemberAdded { workspace_id: s("w1"), actor_id: s("outsider") },
        ];
        for change in changes {
            state.apply(state.position + 1, &change).unwrap();
        }
        state
    }

    #[test]
    fn the_run_access_matrix() {
        let authority = authority();
        let actor = |id: &str| Viewer::Actor(s(id));
        let cases = [
            (actor("stranger"), "w1", "t1", Access::NotFound),
            (actor("outsider"), "w1", "t1", Access::NotFound),
            (actor("viewer"), "w2", "t3", Access::NotFound),
            (actor("viewer"), "w1", "t2", Access::NotFound),
            (actor("member"), "w1", "t1", Access::Forbidden),
            (actor("viewer"), "w1", "t1", Access::Visible),
            (Viewer::Service, "w2", "t3", Access::Visible),
        ];
        for (viewer, workspace, tenant, expected) in cases {
            assert_eq!(run_access(&authority, &viewer, workspace, tenant), expected, "{viewer:?} on {tenant}");
        }
    }

    #[test]
    fn a_revoked_view_capability_turns_visible_into_forbidden() {
        let mut authority = authority();
        let revoke = C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("viewer"), capability: s(VIEW_CAPABILITY) };
        authority.apply(authority.position + 1, &revoke).unwrap();
        assert_eq!(run_access(&authority, &Viewer::Actor(s("viewer")), "w1", "t1"), Access::Forbidden);
    }

    #[test]
    fn the_list_rule() {
        let authority = authority();
        let actor = |id: &str| Viewer::Actor(s(id));
        let only = |t: &str| ListAccess::Tenants(BTreeSet::from([s(t)]));
        assert_eq!(list_access(&authority, &actor("viewer"), None, Some("t1")), only("t1"));
        assert_eq!(list_access(&authority, &actor("viewer"), None, Some("t2")), ListAccess::NotFound);
        assert_eq!(list_access(&authority, &actor("viewer"), None, Some("t9")), ListAccess::NotFound);
        assert_eq!(list_access(&authority, &actor("member"), None, Some("t1")), ListAccess::Forbidden);
        assert_eq!(list_access(&authority, &actor("viewer"), Some("w1"), None), only("t1"));
        assert_eq!(list_access(&authority, &actor("member"), Some("w1"), None), ListAccess::Forbidden);
        assert_eq!(list_access(&authority, &actor("viewer"), Some("w2"), None), ListAccess::NotFound);
        assert_eq!(list_access(&authority, &actor("viewer"), Some("w2"), Some("t1")), ListAccess::NotFound);
        assert_eq!(list_access(&authority, &actor("stranger"), None, None), ListAccess::Tenants(BTreeSet::new()));
        assert_eq!(list_access(&authority, &actor("viewer"), None, None), only("t1"));
        assert_eq!(list_access(&authority, &Viewer::Service, None, Some("t9")), ListAccess::All);
    }
}
