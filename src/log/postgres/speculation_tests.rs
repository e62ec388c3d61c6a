//! The chain a speculative group is staged on, and the switch that says
//! whether to speculate.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{TimeZone, Utc};

use super::*;
use crate::envelope::Hash;
use crate::log::conformance::{event, stream};
use crate::log::internal_request;
use crate::log::{Clock, Expectations, ExpectedVersion, StreamExpectation};

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 5, 0, 0).unwrap()
}

fn clock() -> Clock {
    Arc::new(at)
}

/// A read of an empty log whose stream `a` has no event.
fn empty_read() -> Prefetched {
    let versions = HashMap::from([(stream("a"), 0), (stream("b"), 0)]);
    Prefetched::found(Head { position: 0, hash: Hash::GENESIS }, at(), versions, HashMap::new())
}

/// A group of `events` on stream `a`, staged on `stored` at `head`.
fn staged_group(stored: &dyn Committed, head: Head, events: u64) -> Group {
    let mut group = Group::new(head, at());
    let batch = (0..events).map(|n| event("a", n)).collect();
    let (request, _answer) = internal_request(batch, Expectations::none(), None).unwrap();
    group.stage(stored, &request, &clock()).unwrap().unwrap();
    group
}

/// A chain with a group of `events` on stream `a` staged on the empty read
/// (advisory lock 7): the read, the chain, the group and its ticket.
fn with_a_group(events: u64) -> (Prefetched, Chain, Group, u64) {
    let read = empty_read();
    let mut chain = Chain::default();
    let first = staged_group(&read, read.head, events);
    let ticket = chain.push(&first, Some(7));
    (read, chain, first, ticket)
}

#[test]
fn given_a_group_in_flight_when_a_read_does_not_see_it_then_the_view_ends_on_it() {
    let (read, chain, first, _) = with_a_group(3);

    let view = chain.view(&read);

    assert_eq!(view.head, first.head);
    assert_eq!(view.awaits, Some(7), "a group staged on the view waits for the one in flight");
    assert_eq!(view.stream_version(&stream("a")).unwrap(), 3);
    let (first_event, _) = &first.sealed[0];
    assert_eq!(view.position_of_id(&first_event.id).unwrap(), Some(1));
    assert_eq!(view.recorded_at(1).unwrap(), Some(first_event.recorded_at));
}

#[test]
fn given_two_groups_in_flight_then_the_view_ends_on_the_second_and_waits_for_it() {
    let (read, mut chain, _, _) = with_a_group(2);
    let after_first = chain.view(&read);
    let second = staged_group(&after_first, after_first.head, 4);
    chain.push(&second, Some(8));

    let view = chain.view(&read);
    assert_eq!(view.head, second.head);
    assert_eq!(view.head.position, 6);
    assert_eq!(view.stream_version(&stream("a")).unwrap(), 6);

    assert_eq!(view.awaits, Some(8), "the view waits for the second group, which waits for the first");
}

#[test]
fn given_a_read_that_sees_the_group_committed_then_the_view_is_the_read() {
    let (_, mut chain, first, ticket) = with_a_group(2);
    chain.settle(ticket, true);
    let newer = Prefetched::found(first.head, at(), HashMap::from([(stream("a"), 2)]), HashMap::new());

    let view = chain.view(&newer);

    assert_eq!(view.head, first.head);
    assert!(view.awaits.is_none(), "nothing in flight to wait for");
    assert!(chain.left(first.head), "the head is one this writer's group left");
}

#[test]
fn given_a_group_that_did_not_commit_then_no_view_builds_on_it() {
    let (read, mut chain, first, ticket) = with_a_group(2);

    chain.settle(ticket, false);

    let view = chain.view(&read);
    assert_eq!(view.head, read.head);
    assert!(!chain.left(first.head));
}

#[test]
fn given_a_stream_expectation_then_the_view_checks_it_against_the_group_in_flight() {
    let read = empty_read();
    let mut chain = Chain::default();
    chain.push(&staged_group(&read, read.head, 2), Some(7));
    let view = chain.view(&read);
    let mut group = Group::new(view.head, view.head_recorded_at);
    let stale = Expectations {
        head: None,
        streams: vec![StreamExpectation { stream: stream("a"), expected: ExpectedVersion::Exact(0) }],
    };
    let (request, _answer) = internal_request(vec![event("a", 9)], stale, None).unwrap();

    let outcome = group.stage(&view, &request, &clock()).unwrap();

    assert!(outcome.is_err(), "version 0 expected while the group in flight makes it 2: {outcome:?}");
}

#[test]
fn a_group_that_locked_the_head_first_needs_no_wait() {
    let read = empty_read();
    let mut chain = Chain::default();
    let locked = staged_group(&read, read.head, 1);
    chain.push(&locked, None);

    let view = chain.view(&read);

    assert_eq!(view.head, locked.head);
    assert_eq!(view.awaits, None, "its head lock orders the group staged on it");
}

#[test]
fn the_switch_speculates_until_a_miss_then_after_enough_clean_locked_groups() {
    let mut switch = Switch::default();
    assert!(switch.on());

    switch.missed();
    assert!(!switch.on());
    for _ in 1..CLEAN_GROUPS_MIN {
        switch.locked(true);
    }
    assert!(!switch.on(), "one clean group short");
    switch.locked(true);
    assert!(switch.on());
}

#[test]
fn another_writers_group_starts_the_count_again() {
    let mut switch = Switch::default();
    switch.missed();
    for _ in 1..CLEAN_GROUPS_MIN {
        switch.locked(true);
    }
    switch.locked(false);
    switch.locked(true);
    assert!(!switch.on());
}

#[test]
fn a_miss_with_no_hit_since_the_return_doubles_the_clean_groups_needed() {
    let mut switch = Switch::default();
    switch.missed();
    (0..CLEAN_GROUPS_MIN).for_each(|_| switch.locked(true));
    assert!(switch.on());

    switch.missed();
    (0..CLEAN_GROUPS_MIN).for_each(|_| switch.locked(true));
    assert!(!switch.on(), "twice as many needed");
    (0..CLEAN_GROUPS_MIN).for_each(|_| switch.locked(true));
    assert!(switch.on());

    switch.hit();
    switch.missed();
    (0..CLEAN_GROUPS_MIN).for_each(|_| switch.locked(true));
    assert!(switch.on(), "a hit brings the count back down");
}

#[test]
fn the_clean_groups_needed_are_bounded() {
    let mut switch = Switch::default();
    for _ in 0..32 {
        switch.missed();
        (0..CLEAN_GROUPS_MAX).for_each(|_| switch.locked(true));
        assert!(switch.on());
    }
}

#[test]
fn a_held_head_stops_speculation() {
    let mut switch = Switch::default();
    switch.held();
    assert!(!switch.on());
}

/// A batch of one append of one event on `stream_name`, with `expectations`.
fn batch_on(stream_name: &str, expectations: Expectations) -> Vec<Request> {
    let (request, _answer) = internal_request(vec![event(stream_name, 1)], expectations, None).unwrap();
    vec![request]
}

fn known_version(chain: &Chain, stream_name: &str) -> Option<(Head, u64)> {
    let known = chain.known_for(&batch_on(stream_name, Expectations::none()))?;
    Some((known.head, known.stream_version(&stream(stream_name)).unwrap()))
}

/// A head no group of this writer left.
fn foreign_head() -> Head {
    Head { position: 9, hash: Hash([9; 32]) }
}

/// A chain that learnt the empty read, with a group of `events` on stream
/// `a` staged on it (advisory lock 7): the read, the chain, the group and
/// its ticket.
fn learnt_with_a_group(events: u64) -> (Prefetched, Chain, Group, u64) {
    let (read, mut chain, first, ticket) = with_a_group(events);
    chain.learn(&read);
    (read, chain, first, ticket)
}

#[test]
fn given_no_read_then_a_group_needs_one() {
    let chain = Chain::default();
    assert!(chain.known_for(&batch_on("a", Expectations::none())).is_none());
}

#[test]
fn given_a_read_then_a_batch_of_its_streams_is_staged_without_one_and_others_need_one() {
    let read = empty_read();
    let mut chain = Chain::default();
    chain.learn(&read);

    assert_eq!(known_version(&chain, "a"), Some((read.head, 0)));
    assert!(known_version(&chain, "z").is_none(), "a stream no read named");
    let expecting_z = Expectations {
        head: None,
        streams: vec![StreamExpectation { stream: stream("z"), expected: ExpectedVersion::Any }],
    };
    assert!(chain.known_for(&batch_on("a", expecting_z)).is_none(), "an expectation's stream must be known too");
}

#[test]
fn given_committed_groups_then_the_known_head_moves_over_them_in_head_order() {
    let (read, mut chain, _, first_ticket) = learnt_with_a_group(2);
    let after_first = chain.view(&read);
    let second = staged_group(&after_first, after_first.head, 4);
    let second_ticket = chain.push(&second, Some(8));

    chain.settle(second_ticket, true);
    assert_eq!(known_version(&chain, "a"), Some((read.head, 0)), "the second group's lane learnt of its commit first");
    chain.settle(first_ticket, true);

    assert_eq!(known_version(&chain, "a"), Some((second.head, 6)));
    assert_eq!(known_version(&chain, "b"), Some((second.head, 0)));
}

#[test]
fn a_group_that_did_not_commit_leaves_the_known_head_where_it_was() {
    let (read, mut chain, _, ticket) = learnt_with_a_group(2);

    chain.settle(ticket, false);

    assert_eq!(known_version(&chain, "a"), Some((read.head, 0)));
}

#[test]
fn given_a_read_at_a_head_another_writer_moved_then_only_that_read_is_known() {
    let mut chain = Chain::default();
    chain.learn(&empty_read());

    let elsewhere = Prefetched::found(foreign_head(), at(), HashMap::from([(stream("c"), 4)]), HashMap::new());
    chain.learn(&elsewhere);

    assert!(known_version(&chain, "a").is_none(), "versions at a head another writer left behind");
    assert_eq!(known_version(&chain, "c"), Some((foreign_head(), 4)));
}

#[test]
fn a_read_at_a_head_this_writers_groups_led_to_moves_the_known_head_there() {
    let (_, mut chain, first, _) = learnt_with_a_group(2);

    // The group committed; its lane has not said so yet.
    let later = Prefetched::found(first.head, at(), HashMap::from([(stream("d"), 0)]), HashMap::new());
    chain.learn(&later);

    assert_eq!(known_version(&chain, "a"), Some((first.head, 2)));
    assert_eq!(known_version(&chain, "d"), Some((first.head, 0)));
}

#[test]
fn an_older_read_adds_its_streams_carried_over_this_writers_groups_since() {
    let read = empty_read();
    let mut chain = Chain::default();
    chain.learn(&Prefetched::found(read.head, at(), HashMap::from([(stream("b"), 0)]), HashMap::new()));
    let first = staged_group(&read, read.head, 2);
    let ticket = chain.push(&first, Some(7));
    chain.settle(ticket, true);

    // Read at the head before the group: stream `a` was at version 0 then.
    chain.learn(&read);

    assert_eq!(known_version(&chain, "a"), Some((first.head, 2)), "version 0 was the version before the group");
    assert_eq!(known_version(&chain, "b"), Some((first.head, 0)));
}

#[test]
fn past_the_bound_the_known_streams_are_forgotten() {
    let read = empty_read();
    let mut chain = Chain::default();
    chain.learn(&read);
    let many: HashMap<StreamId, u64> =
        (0..=KNOWN_STREAMS_MAX).map(|n| (StreamId::new(format!("s-{n}")).unwrap(), 1)).collect();

    chain.learn(&Prefetched::found(read.head, at(), many, HashMap::new()));

    assert!(known_version(&chain, "a").is_none());
    assert!(known_version(&chain, "s-1").is_none());
    chain.learn(&read);
    assert_eq!(known_version(&chain, "a"), Some((read.head, 0)), "learnt again from the next read");
}
