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

#[test]
fn given_a_group_in_flight_when_a_read_does_not_see_it_then_the_view_ends_on_it() {
    let read = empty_read();
    let mut chain = Chain::default();
    let first = staged_group(&read, read.head, 3);
    chain.push(&first, Some(7));

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
    let read = empty_read();
    let mut chain = Chain::default();
    let first = staged_group(&read, read.head, 2);
    chain.push(&first, Some(7));
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
    let read = empty_read();
    let mut chain = Chain::default();
    let first = staged_group(&read, read.head, 2);
    let ticket = chain.push(&first, Some(7));
    chain.settle(ticket, true);
    let newer = Prefetched::found(first.head, at(), HashMap::from([(stream("a"), 2)]), HashMap::new());

    let view = chain.view(&newer);

    assert_eq!(view.head, first.head);
    assert!(view.awaits.is_none(), "nothing in flight to wait for");
    assert!(chain.left(first.head), "the head is one this writer's group left");
}

#[test]
fn given_a_group_that_did_not_commit_then_no_view_builds_on_it() {
    let read = empty_read();
    let mut chain = Chain::default();
    let first = staged_group(&read, read.head, 2);
    let ticket = chain.push(&first, Some(7));

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
