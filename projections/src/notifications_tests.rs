//! Tests of the initiator notifications over a real ledger. The world and
//! the random histories come from the audit tests.

use std::collections::{BTreeMap, HashMap};

use opledger::domain::authority::AuthorityChange as C;
use opledger::domain::events::{DomainEvent, NotificationRead};
use opledger::domain::model::{ConnectionStatus, Principal, WorkerOutcome};
use opledger::domain::run::RunEvent;
use opledger::{Envelope, Expectations, NewEvent};

use super::*;
use crate::error::ProjectionError;
use crate::store;
use crate::test_world::{s, World};

/// What the log says the notifications must be: one per actor-bound run
/// that ended, keyed by run, with whether a read event followed.
fn expected_from_log(events: &[Envelope]) -> BTreeMap<Uuid, (Uuid, String, RunOutcome, bool)> {
    let mut initiators: HashMap<Uuid, Option<String>> = HashMap::new();
    let mut expected = BTreeMap::new();
    for envelope in events {
        match DomainEvent::from_envelope(envelope).unwrap() {
            DomainEvent::Run { run_id, event } => {
                if let RunEvent::RunQueued { spec, .. } | RunEvent::RunStartBlocked { spec, .. } = &event {
                    initiators.insert(run_id, spec.initiator.actor_id().map(str::to_owned));
                }
                let outcome = match &event {
                    RunEvent::RunStartBlocked { .. } | RunEvent::RunBlocked { .. } => RunOutcome::Blocked,
                    RunEvent::RunCompleted { outcome, .. } => outcome.outcome(),
                    RunEvent::RunCancelled { .. } => RunOutcome::Cancelled,
                    _ => continue,
                };
                if let Some(Some(actor)) = initiators.get(&run_id) {
                    let previous = expected.insert(run_id, (envelope.id, actor.clone(), outcome, false));
                    assert!(previous.is_none(), "run {run_id} ended twice in the log");
                }
            }
            DomainEvent::NotificationRead(read) => {
                let notification = expected.get_mut(&read.run_id).expect("a read follows its notification");
                notification.3 = true;
            }
            DomainEvent::Authority(_) => {}
        }
    }
    expected
}

/// Asserts that the tables hold exactly the notifications the log implies.
pub(crate) fn check_against_log(db: &Connection, events: &[Envelope]) {
    let expected = expected_from_log(events);
    let mut served = BTreeMap::new();
    for actor in ["u1", "u2", "admin"] {
        let all = inbox(db, actor, false, None, INBOX_PAGE_MAX).unwrap().notifications;
        assert!(all.len() < INBOX_PAGE_MAX, "the test histories fit one inbox page");
        assert!(all.windows(2).all(|w| w[0].position > w[1].position), "newest first");
        let unread = inbox(db, actor, true, None, INBOX_PAGE_MAX).unwrap().notifications;
        assert_eq!(unread, all.iter().filter(|n| !n.read).cloned().collect::<Vec<_>>());
        assert_eq!(unread_count(db, actor).unwrap(), unread.len() as u64);
        for notification in all {
            assert_eq!(notification.actor_id, actor);
            assert_eq!(of_run(db, notification.run_id).unwrap().as_ref(), Some(&notification));
            let fields = (notification.id, notification.actor_id, notification.outcome, notification.read);
            assert!(served.insert(notification.run_id, fields).is_none(), "one notification per run");
        }
    }
    assert_eq!(served, expected);
}

fn only(db: &Connection, actor: &str) -> Vec<Notification> {
    inbox(db, actor, false, None, INBOX_PAGE_MAX).unwrap().notifications
}

#[test]
fn every_actor_bound_run_that_ends_notifies_its_initiator_once() {
    let world = World::new();
    let completed = world.start("inventory_sync", "t1", Principal::actor("u1"), Some("c1"));
    world.begin(completed);
    world.complete(completed, WorkerOutcome::PartiallySucceeded, false);

    // Two retryable failures, then success: one notification, at the end.
    let retried = world.start("inventory_sync", "t1", Principal::actor("u1"), Some("c2"));
    for _ in 0..2 {
        world.begin(retried);
        world.complete(retried, WorkerOutcome::Failed, true);
    }
    let projector = world.projector();
    let db = projector.reader().unwrap();
    assert!(of_run(&db, retried).unwrap().is_none(), "no notification on a requeue");
    world.begin(retried);
    world.complete(retried, WorkerOutcome::Succeeded, false);

    // Unreachable then disabled: a retryable denial, then blocked for good.
    let gated = world.start("inventory_sync", "t2", Principal::actor("u2"), None);
    world.authority(
        "admin",
        vec![C::ProviderConnectionStatusChanged { connection_id: s("c3"), status: ConnectionStatus::Unreachable }],
    );
    world.begin(gated);
    projector.catch_up().unwrap();
    assert!(of_run(&db, gated).unwrap().is_none(), "no separate denial notification");
    world.authority(
        "admin",
        vec![C::ProviderConnectionStatusChanged { connection_id: s("c3"), status: ConnectionStatus::Disabled }],
    );
    world.begin(gated);

    let at_start = world.start("inventory_sync", "t2", Principal::actor("u1"), None); // u1 is not on t2
    let system_done = world.start("inventory_sync", "t1", Principal::System, Some("c1"));
    world.begin(system_done);
    world.complete(system_done, WorkerOutcome::Failed, false);
    let system_refused = world.start("entra_group_sync", "t1", Principal::System, Some("c1"));
    projector.catch_up().unwrap();

    let u1 = only(&db, "u1");
    let runs: Vec<Uuid> = u1.iter().map(|n| n.run_id).collect();
    assert_eq!(runs, [at_start, retried, completed], "newest first");
    let u2 = only(&db, "u2");
    assert_eq!(u2.iter().map(|n| n.run_id).collect::<Vec<_>>(), [gated]);
    for system_run in [system_done, system_refused] {
        assert!(of_run(&db, system_run).unwrap().is_none(), "system runs stay in Monitoring only");
    }

    let partial = &u1[2];
    assert_eq!(
        (partial.outcome, partial.title.as_str()),
        (RunOutcome::PartiallySucceeded, "inventory_sync partially succeeded")
    );
    assert_eq!(partial.body, "Run of inventory_sync on tenant t1 completed: partially succeeded.");
    assert_eq!((partial.link_text.as_str(), partial.read), ("View run", false));
    assert_eq!(partial.link, format!("/admin/operations/{completed}"));
    let blocked_start = &u1[0];
    assert_eq!((blocked_start.outcome, blocked_start.title.as_str()), (RunOutcome::Blocked, "inventory_sync blocked"));
    let reason = ReasonCode::ActorNotInTenant;
    assert_eq!(blocked_start.reason_code, Some(reason));
    assert_eq!(blocked_start.body, format!("{} {}.", reason.operator_message(), reason.next_step()));
    let blocked = &u2[0];
    assert_eq!(
        (blocked.outcome, blocked.reason_code),
        (RunOutcome::Blocked, Some(ReasonCode::ProviderConnectionDisabled))
    );
    let terminal = world.ledger.run_events(gated).unwrap().last().unwrap().clone();
    assert_eq!(
        (blocked.id, blocked.created_at, terminal.event_type.as_str()),
        (terminal.id, terminal.recorded_at, "run_blocked")
    );

    assert_eq!(unread_count(&db, "u1").unwrap(), 3);
    check_against_log(&db, &world.ledger.log().read(1, usize::MAX).unwrap());
}

#[test]
fn reading_flips_once_and_survives_a_rebuild() {
    let world = World::new();
    let first = world.start("inventory_sync", "t1", Principal::actor("u1"), Some("c1"));
    world.begin(first);
    world.complete(first, WorkerOutcome::Succeeded, false);
    let second = world.start("inventory_sync", "t1", Principal::actor("u1"), Some("c1"));
    world.begin(second);
    world.complete(second, WorkerOutcome::Failed, false);
    let projector = world.projector();
    let db = projector.reader().unwrap();
    assert_eq!(unread_count(&db, "u1").unwrap(), 2);

    world.rt.block_on(world.ledger.mark_notification_read("u1", first)).unwrap();
    projector.catch_up().unwrap();
    let read = of_run(&db, first).unwrap().unwrap();
    let read_at = read.read_at.expect("marked read");
    assert!(read.read);
    assert_eq!(unread_count(&db, "u1").unwrap(), 1);
    assert_eq!(
        inbox(&db, "u1", true, None, 10).unwrap().notifications.iter().map(|n| n.run_id).collect::<Vec<_>>(),
        [second]
    );

    world.rt.block_on(world.ledger.mark_notification_read("u1", first)).unwrap();
    projector.catch_up().unwrap();
    assert_eq!(of_run(&db, first).unwrap().unwrap().read_at, Some(read_at), "a second read changes nothing");
    assert_eq!(unread_count(&db, "u1").unwrap(), 1);
    let refused = world.rt.block_on(world.ledger.mark_notification_read("u2", first));
    assert!(refused.is_err(), "only the initiator has the notification");

    let before = store::dump(&db).unwrap();
    drop(db); // a rebuild waits for every connection to the old file to close
    projector.rebuild(&mut |_, _| {}).unwrap();
    let rebuilt = projector.reader().unwrap();
    assert_eq!(store::dump(&rebuilt).unwrap(), before);
    assert!(of_run(&rebuilt, first).unwrap().unwrap().read);
    assert_eq!(inbox(&rebuilt, "u1", false, None, 1).unwrap().notifications.len(), 1, "the limit holds");
    assert!(inbox(&rebuilt, "u2", false, None, 10).unwrap().notifications.is_empty());
}

#[test]
fn an_inbox_is_read_page_by_page_older_and_older_to_its_end() {
    // Given five runs of u1 that ended (the second and fourth read) and one of u2
    let world = World::new();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let run = world.start("inventory_sync", "t1", Principal::actor("u1"), Some("c1"));
        world.begin(run);
        world.complete(run, WorkerOutcome::Succeeded, false);
        runs.push(run);
    }
    let other = world.start("inventory_sync", "t2", Principal::actor("u2"), Some("c3"));
    world.begin(other);
    world.complete(other, WorkerOutcome::Failed, false);
    for read in [runs[1], runs[3]] {
        world.rt.block_on(world.ledger.mark_notification_read("u1", read)).unwrap();
    }
    let projector = world.projector();
    let db = projector.reader().unwrap();
    let pages = |unread_only: bool| {
        let (mut pages, mut before) = (Vec::new(), None);
        loop {
            let page = inbox(&db, "u1", unread_only, before, 2).unwrap();
            pages.push(page.notifications.iter().map(|n| n.run_id).collect::<Vec<_>>());
            match page.next_before {
                Some(next) => before = Some(next),
                None => return pages,
            }
        }
    };

    // When u1's inbox is read two at a time, following each page's cursor
    // Then every notification comes once, newest first, and the last page says it is the last
    let newest_first: Vec<Uuid> = runs.iter().rev().copied().collect();
    assert_eq!(pages(false), [&newest_first[0..2], &newest_first[2..4], &newest_first[4..5]]);
    assert_eq!(pages(true), [vec![runs[4], runs[2]], vec![runs[0]]], "the unread ones, paged alike");
    let exact = inbox(&db, "u1", false, None, 5).unwrap();
    assert_eq!((exact.notifications.len(), exact.next_before), (5, None), "a page that ends the inbox has no cursor");
    let past_the_end = inbox(&db, "u1", false, Some(exact.notifications[4].position), 5).unwrap();
    assert!(past_the_end.notifications.is_empty());
}

#[test]
fn a_read_for_a_notification_that_does_not_exist_stops_the_projection() {
    let world = World::new();
    let live = world.start("inventory_sync", "t1", Principal::actor("u1"), Some("c1"));
    let projector = world.projector();
    // The ledger refuses this read; written straight to the log, it is an
    // event the projection cannot apply.
    let read = DomainEvent::NotificationRead(NotificationRead { actor_id: s("u1"), run_id: live });
    let event: NewEvent = read.to_new_event(Uuid::now_v7()).unwrap();
    let log = world.ledger.log();
    world.rt.block_on(log.append(vec![event], Expectations::none())).unwrap().unwrap();
    let position = log.head().position;
    let stopped = projector.catch_up().unwrap_err();
    match stopped {
        ProjectionError::Stopped { position: at, detail } => {
            assert_eq!(at, position);
            assert!(detail.contains("has no notification"), "{detail}");
        }
        other => panic!("expected the projector to stop, got {other:?}"),
    }
}

#[test]
fn every_read_is_one_search_of_an_index() {
    let world = World::new();
    let projector = world.projector();
    let db = projector.reader().unwrap();
    let cases = [
        (query::INBOX, "USING INDEX notifications_inbox (actor_id=? AND position<?)"),
        (query::INBOX_UNREAD, "USING INDEX notifications_unread (actor_id=? AND position<?)"),
        (query::OF_RUN, "USING INDEX notifications_by_run (run_id=?)"),
        (query::UNREAD_COUNT, "USING PRIMARY KEY (actor_id=?)"),
    ];
    for (sql, expected) in cases {
        let plan = crate::audit::tests::plan(&db, sql);
        assert!(plan.contains(expected), "{sql}: {plan}");
        assert!(!plan.contains("SCAN") && !plan.contains("TEMP B-TREE"), "{sql}: {plan}");
    }
}

#[test]
fn a_stored_notification_that_does_not_decode_is_reported_as_corrupt() {
    let world = World::new();
    let run = world.start("inventory_sync", "t1", Principal::actor("u1"), Some("c1"));
    world.begin(run);
    world.complete(run, WorkerOutcome::Succeeded, false);
    let projector = world.projector();
    drop(projector);
    let path = store::path_in(world.read_models());
    for corruption in [
        "UPDATE notifications SET outcome = 'exploded'",
        "UPDATE notifications SET reason_code = 'no_such_reason'",
        "UPDATE notifications SET created_at = 'yesterday'",
        "UPDATE notifications SET id = 'not a uuid'",
    ] {
        let db = Connection::open(&path).unwrap();
        let tx = db.unchecked_transaction().unwrap();
        tx.execute(corruption, []).unwrap();
        let read = of_run(&tx, run);
        assert!(matches!(read, Err(ProjectionError::Corrupt { .. })), "{corruption}: {read:?}");
        let read = inbox(&tx, "u1", false, None, 10);
        assert!(matches!(read, Err(ProjectionError::Corrupt { .. })), "{corruption}: {read:?}");
        drop(tx); // rolled back
    }
}
