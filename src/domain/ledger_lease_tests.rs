//! Leases over a real log: a log written before leases existed (catalog
//! entries and run specs without `lease_seconds`, `run_started` without a
//! lease) still opens, hash-verifies and replays, and its runs get the
//! default lease; a reopen keeps a heartbeating worker's lease.

use super::*;
use crate::domain::sequencer::Sequencer;
use crate::envelope::NewEvent;
use crate::log::Expectations;

/// Removes every `lease_seconds` member, as a payload written before leases.
fn without_leases(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("lease_seconds");
            map.values_mut().for_each(without_leases);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_leases),
        _ => {}
    }
}

fn old_event(event: &DomainEvent) -> NewEvent {
    let new = event.to_new_event(Uuid::now_v7()).unwrap();
    let mut payload: serde_json::Value = serde_json::from_str(new.payload.get()).unwrap();
    without_leases(&mut payload);
    NewEvent::with_id(new.event_id, new.stream, &new.event_type, new.schema_version, &payload).unwrap()
}

#[test]
fn a_log_from_before_leases_opens_verifies_and_its_runs_get_the_default_lease() {
    let place = TestLog::fresh();
    let rt = runtime();
    let log = Arc::new(place.open(options()));
    let mut sequencer = Sequencer::default();
    let authority = sequencer.record_authority(&Principal::System, &world(&["c1"]), Utc::now()).unwrap();
    let (answer, start) = sequencer.start(&request("inventory_sync", None), &mut Uuid::now_v7, Utc::now()).unwrap();
    let events: Vec<NewEvent> = authority.events.iter().chain(&start.events).map(old_event).collect();
    assert!(events.iter().all(|e| !e.payload.get().contains("lease_seconds")), "written as before leases");
    rt.block_on(async { log.submit_at(events, Expectations::none(), None).await.unwrap().wait().await.unwrap() })
        .unwrap();

    let ledger = Ledger::over(Arc::clone(&log), Arc::new(Utc::now)).unwrap();
    let run_id = answer.run().id;
    let (_, run) = rt.block_on(ledger.begin(run_id)).unwrap();
    let lease = run.lease_expires_at.unwrap() - run.started_at.unwrap();
    assert_eq!(lease, chrono::Duration::seconds(i64::from(crate::domain::model::LEASE_SECONDS_DEFAULT)));
    let replayed = replay(&log);
    assert_eq!(replayed.start_decisions_checked, 1, "the old start replays identically");
}

#[test]
fn a_reopen_keeps_the_lease_a_heartbeat_made_durable() {
    let place = TestLog::fresh();
    let rt = runtime();
    let offset = Arc::new(AtomicU64::new(0));
    let clock_offset = Arc::clone(&offset);
    let clock: crate::log::Clock =
        Arc::new(move || Utc::now() + chrono::Duration::seconds(clock_offset.load(Ordering::SeqCst) as i64));
    let with_clock = || LogOptions { clock: Arc::clone(&clock), ..options() };
    let run_id = {
        let ledger = ledger_at(&place, with_clock());
        rt.block_on(async {
            ledger.record_authority(Principal::System, world(&["c1"])).await.unwrap();
            let id = ledger.start(request("inventory_sync", None)).await.unwrap().run().id;
            ledger.begin(id).await.unwrap();
            offset.store(200, Ordering::SeqCst);
            let renewed = ledger.heartbeat(id, Some(1)).await.unwrap();
            assert!(renewed.lease_expires_at.unwrap() > renewed.started_at.unwrap() + chrono::Duration::seconds(400));
            ledger.log().close();
            id
        })
    };
    offset.store(400, Ordering::SeqCst);
    let ledger = ledger_at(&place, with_clock());
    let reaped = rt.block_on(ledger.reap_lapsed_leases()).unwrap();
    assert!(reaped.is_empty(), "the renewal is in the log: the lease holds after the reopen");
    assert_eq!(rt.block_on(ledger.run_status(run_id)), Some(RunStatus::Running));
    offset.store(501, Ordering::SeqCst);
    assert_eq!(rt.block_on(ledger.reap_lapsed_leases()).unwrap().len(), 1);
}
