//! Authority read-back: given a history, when read as of a position (with
//! filters), then exactly the facts true there, each with its position.

use std::sync::Arc;

use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::model::Principal;
use proptest::prelude::*;

use super::*;
use crate::test_world::{perform, s, step, truncated_copy, World};

fn read(log: &Log, as_of: Option<u64>, filter: &AuthorityFilter) -> AuthorityReport {
    let (as_of, state) = state_as_of(log, as_of).unwrap();
    report(as_of, &state, filter)
}

fn filter(workspace: Option<&str>, tenant: Option<&str>, actor: Option<&str>) -> AuthorityFilter {
    AuthorityFilter { workspace_id: workspace.map(s), tenant_id: tenant.map(s), actor_id: actor.map(s) }
}

#[test]
fn every_fact_carries_the_position_that_made_it_true() {
    let world = World::new();
    let all = read(world.ledger.log(), None, &AuthorityFilter::default());
    assert_eq!((all.as_of, all.authority_position), (18, 18));
    assert_eq!(all.workspaces.len(), 1);
    assert_eq!(all.workspaces[0].registered_position, 1);
    let members: Vec<(&str, u64)> = all.workspaces[0].members.iter().map(|m| (&*m.actor_id, m.position)).collect();
    assert_eq!(members, [("u1", 4), ("u2", 5)]);
    let t1 = &all.tenants[0];
    assert_eq!((t1.tenant_id.as_str(), t1.registered_position, t1.lifecycle.position), ("t1", 2, 2));
    assert_eq!((t1.write_gate_open.value, t1.write_gate_open.position), (true, 10));
    assert_eq!(t1.default_connection, Some(Positioned { value: s("c1"), position: 17 }));
    assert_eq!(t1.capabilities, [Capability { actor_id: s("u1"), capability: s("tenant.sync"), position: 8 }]);
    let connections: Vec<(&str, u64)> =
        all.connections.iter().map(|c| (&*c.connection_id, c.status.position)).collect();
    assert_eq!(connections, [("c1", 14), ("c2", 15), ("c3", 16)]);
    let catalog: Vec<(&str, u64)> = all.catalog.iter().map(|e| (&*e.spec.operation_type, e.position)).collect();
    assert_eq!(catalog, [("entra_group_sync", 12), ("inventory_sync", 11), ("restore.execute", 13)]);
}

#[test]
fn a_revoked_capability_is_gone_after_its_revocation_and_there_before() {
    let world = World::new();
    let revoke = C::CapabilityRevoked { tenant_id: s("t1"), actor_id: s("u1"), capability: s("tenant.sync") };
    world.start("inventory_sync", "t1", Principal::actor("u1"), None);
    world.authority("admin", vec![revoke]);
    let head = world.ledger.log().head().position;
    let u1_on_t1 = filter(None, Some("t1"), Some("u1"));
    let before = read(world.ledger.log(), Some(head - 1), &u1_on_t1);
    assert_eq!(before.as_of, head - 1);
    assert_eq!(before.tenants[0].capabilities.len(), 1, "granted at 8, still held before the revocation");
    let after = read(world.ledger.log(), Some(head), &u1_on_t1);
    assert!(after.tenants[0].capabilities.is_empty(), "revoked at {head}");
    assert_eq!(after.authority_position, head);
}

#[test]
fn filters_narrow_to_a_tenant_an_actor_or_a_workspace() {
    let world = World::new();
    let log = world.ledger.log();
    let t2 = read(log, None, &filter(None, Some("t2"), None));
    assert_eq!(t2.tenants.iter().map(|t| &*t.tenant_id).collect::<Vec<_>>(), ["t2"]);
    assert_eq!(t2.workspaces.iter().map(|w| &*w.workspace_id).collect::<Vec<_>>(), ["w1"], "the tenant's workspace");
    assert_eq!(t2.connections.iter().map(|c| &*c.connection_id).collect::<Vec<_>>(), ["c3"]);
    let u2 = read(log, None, &filter(None, None, Some("u2")));
    assert!(u2.tenants.iter().all(|t| t.members.iter().all(|m| m.actor_id == "u2")));
    assert!(u2.tenants.iter().flat_map(|t| &t.capabilities).all(|c| c.actor_id == "u2"));
    assert_eq!(u2.workspaces[0].members.iter().map(|m| &*m.actor_id).collect::<Vec<_>>(), ["u2"]);
    let nowhere = read(log, None, &filter(Some("w9"), None, None));
    assert!(nowhere.workspaces.is_empty() && nowhere.tenants.is_empty() && nowhere.connections.is_empty());
    let mismatch = read(log, None, &filter(Some("w9"), Some("t1"), None));
    assert!(mismatch.tenants.is_empty(), "t1 is not in w9");
}

#[test]
fn a_position_past_the_head_is_refused_and_zero_is_the_empty_state() {
    let world = World::new();
    let log = world.ledger.log();
    let head = log.head().position;
    assert!(matches!(state_as_of(log, Some(head + 1)), Err(AuthorityReadError::PastHead { .. })));
    let empty = read(log, Some(0), &AuthorityFilter::default());
    assert!(empty.workspaces.is_empty() && empty.catalog.is_empty());
    assert_eq!(empty.authority_position, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Authority as of N equals the authority of the log truncated at N.
    #[test]
    fn as_of_n_is_the_authority_of_the_log_cut_at_n(
        steps in prop::collection::vec(step(), 1..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let world = World::new();
        let mut runs = Vec::new();
        for step in &steps {
            world.rt.block_on(perform(&world.ledger, step, &mut runs));
        }
        let log = world.ledger.log();
        let n = cut.index(usize::try_from(log.head().position).unwrap()) as u64 + 1;
        let (_copy_dir, copy) = truncated_copy(&world.rt, log, n);
        for filter in [AuthorityFilter::default(), filter(None, Some("t1"), Some("u1"))] {
            let as_of = read(log, Some(n), &filter);
            let cut = read(&Arc::clone(&copy), None, &filter);
            prop_assert_eq!(as_of, cut);
        }
    }
}
