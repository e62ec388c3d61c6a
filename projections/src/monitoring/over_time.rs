//! Outcomes over time (issue 13): the runs of a filtered list counted by
//! outcome per hour or per day of their creation time, for the console's
//! chart.
//!
//! The same candidates as the list, with the same test of a match
//! (`scan::MATCHES`, visible tenants included), grouped in SQL by a prefix
//! of `created_at`: times are fixed-width UTC text, so its first 13
//! characters name the hour and its first 10 the day. The range is the
//! filter's (its end no later than now), at most [`OUTCOME_BUCKETS_MAX`]
//! buckets (the newest ones), and at most [`OVER_TIME_RUNS_EXAMINED_MAX`]
//! candidates are examined, newest first: past that the answer says from
//! when it counted instead of reading on.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, DurationRound, Utc};
use opledger::domain::model::RunOutcome;
use rusqlite::types::Value;
use rusqlite::Connection;

use super::columns::parse_time;
use super::query::{counter_value, RunFilter};
use super::scan::{self, candidates_sql, scan_target, Parameters, MATCHES};
use super::totals::any_candidate;
use crate::error::ProjectionError;
use crate::store::sqlite;

/// Most buckets one answer holds; a longer range keeps its newest ones.
pub const OUTCOME_BUCKETS_MAX: usize = 60;
/// Longest range counted by the hour; a longer one is counted by the day.
pub const HOURLY_RANGE_HOURS_MAX: i64 = 48;
/// Most candidate rows one answer examines (matching or not).
pub const OVER_TIME_RUNS_EXAMINED_MAX: usize = 20_000;

/// How long one bucket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketWidth {
    Hour,
    Day,
}

impl BucketWidth {
    /// The width as a duration.
    pub fn duration(self) -> Duration {
        match self {
            BucketWidth::Hour => Duration::hours(1),
            BucketWidth::Day => Duration::days(1),
        }
    }

    /// The word for one bucket (`hour`, `day`).
    pub fn word(self) -> &'static str {
        match self {
            BucketWidth::Hour => "hour",
            BucketWidth::Day => "day",
        }
    }

    /// How many leading characters of a stored time name its bucket.
    fn key_chars(self) -> usize {
        match self {
            BucketWidth::Hour => "YYYY-MM-DDTHH".len(),
            BucketWidth::Day => "YYYY-MM-DD".len(),
        }
    }

    /// The start of the bucket holding `at`. Hours and days are whole
    /// numbers of seconds from the epoch in UTC; only a time at the edge of
    /// what chrono holds fails to round, and is its own start.
    pub fn start_of(self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.duration_trunc(self.duration()).unwrap_or(at)
    }

    /// The bucket's key: the prefix of the stored times within it.
    fn key(self, start: DateTime<Utc>) -> String {
        match self {
            BucketWidth::Hour => start.format("%Y-%m-%dT%H").to_string(),
            BucketWidth::Day => start.format("%Y-%m-%d").to_string(),
        }
    }
}

/// The runs created within one bucket, by outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeBucket {
    /// The bucket's first instant (UTC).
    pub start: DateTime<Utc>,
    /// Every outcome, zeros included.
    pub by_outcome: BTreeMap<String, u64>,
}

impl OutcomeBucket {
    fn empty(start: DateTime<Utc>) -> OutcomeBucket {
        OutcomeBucket { start, by_outcome: RunOutcome::ALL.iter().map(|o| (o.as_str().to_owned(), 0)).collect() }
    }

    /// The bucket's count of `outcome`.
    pub fn count(&self, outcome: RunOutcome) -> u64 {
        self.by_outcome.get(outcome.as_str()).copied().unwrap_or(0)
    }

    /// Every run of the bucket.
    pub fn total(&self) -> u64 {
        self.by_outcome.values().sum()
    }
}

/// The runs of a filter by outcome per bucket of their creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomesOverTime {
    pub width: BucketWidth,
    /// Contiguous buckets, oldest first, empty ones included; none when no
    /// run falls within the filter's time range.
    pub buckets: Vec<OutcomeBucket>,
    /// The range held more than [`OUTCOME_BUCKETS_MAX`] buckets: these are
    /// its newest.
    pub clamped: bool,
    /// Set when the count stopped at [`OVER_TIME_RUNS_EXAMINED_MAX`]
    /// candidates: runs created before this time are not counted (the
    /// first bucket holds it, so it may be short).
    pub counted_from: Option<DateTime<Utc>>,
}

impl OutcomesOverTime {
    fn empty() -> OutcomesOverTime {
        OutcomesOverTime { width: BucketWidth::Hour, buckets: Vec::new(), clamped: false, counted_from: None }
    }
}

/// The runs matching `filter` (within `tenants`, when given: the tenants
/// an actor may see) by outcome per hour or day, up to `now`.
pub fn outcomes_over_time(
    db: &Connection,
    filter: &RunFilter,
    tenants: Option<&BTreeSet<String>>,
    now: DateTime<Utc>,
) -> Result<OutcomesOverTime, ProjectionError> {
    outcomes_over_time_bounded(db, filter, tenants, now, OVER_TIME_RUNS_EXAMINED_MAX)
}

/// [`outcomes_over_time`] examining at most `examined_max` candidates.
pub(super) fn outcomes_over_time_bounded(
    db: &Connection,
    filter: &RunFilter,
    tenants: Option<&BTreeSet<String>>,
    now: DateTime<Utc>,
    examined_max: usize,
) -> Result<OutcomesOverTime, ProjectionError> {
    let Some(range) = scan::position_range(db, filter)? else { return Ok(OutcomesOverTime::empty()) };
    let end = filter.to.map_or(now, |to| to.min(now));
    let start = match filter.from {
        Some(from) => from,
        None => match range_start(db, filter, tenants, range, end, examined_max)? {
            Some(start) => start,
            None => return Ok(OutcomesOverTime::empty()),
        },
    };
    if start > end {
        return Ok(OutcomesOverTime::empty());
    }
    let width =
        if end - start <= Duration::hours(HOURLY_RANGE_HOURS_MAX) { BucketWidth::Hour } else { BucketWidth::Day };
    let (starts, clamped) = bucket_starts(width, start, end);
    let mut answer = OutcomesOverTime {
        width,
        buckets: starts.into_iter().map(OutcomeBucket::empty).collect(),
        clamped,
        counted_from: None,
    };
    let Some(first) = answer.buckets.first().map(|bucket| bucket.start) else { return Ok(answer) };
    // The chart's own range: the runs of older buckets are not read at all.
    let within = RunFilter { from: Some(start.max(first)), to: Some(end), ..filter.clone() };
    let Some(range) = scan::position_range(db, &within)? else { return Ok(answer) };
    count_into(db, &within, tenants, range, examined_max, &mut answer)?;
    Ok(answer)
}

/// The starts of the buckets from the one holding `start` to the one
/// holding `end`, the newest [`OUTCOME_BUCKETS_MAX`] of them, and whether
/// older ones were left out.
fn bucket_starts(width: BucketWidth, start: DateTime<Utc>, end: DateTime<Utc>) -> (Vec<DateTime<Utc>>, bool) {
    let (first, last) = (width.start_of(start), width.start_of(end));
    let mut starts = Vec::new();
    let mut at = Some(last);
    while let Some(bucket) = at.filter(|bucket| *bucket >= first && starts.len() < OUTCOME_BUCKETS_MAX) {
        starts.push(bucket);
        at = bucket.checked_sub_signed(width.duration());
    }
    let clamped = at.is_some_and(|bucket| bucket >= first);
    starts.reverse();
    (starts, clamped)
}

/// Where the range of a filter without `from` starts: the creation time
/// of its oldest match among its oldest `examined_max` candidates. `None`
/// when it has no match at all; when none is among those candidates, the
/// start is not known and the range is the longest a chart shows.
fn range_start(
    db: &Connection,
    filter: &RunFilter,
    tenants: Option<&BTreeSet<String>>,
    range: (i64, i64),
    end: DateTime<Utc>,
    examined_max: usize,
) -> Result<Option<DateTime<Utc>>, ProjectionError> {
    let column = scan_target(filter).map(|(column, _)| column);
    let what = format!("created_at, ({MATCHES}) AS matched");
    let mut statement = db.prepare_cached(&candidates_sql(column, &what, true)).map_err(sqlite)?;
    Parameters::new(filter, tenants, range, examined_max)?.bind(&mut statement)?;
    let mut rows = statement.raw_query();
    let mut examined = 0usize;
    while let Some(row) = rows.next().map_err(sqlite)? {
        examined += 1;
        if row.get::<_, bool>(1).map_err(sqlite)? {
            let text: String = row.get(0).map_err(sqlite)?;
            return parse_time(&text).map(Some).ok_or_else(|| corrupt_time(&text));
        }
    }
    if examined < examined_max {
        return Ok(None);
    }
    let longest = BucketWidth::Day.duration() * i32::try_from(OUTCOME_BUCKETS_MAX).unwrap_or(i32::MAX);
    Ok(Some(end.checked_sub_signed(longest).unwrap_or(end)))
}

/// Counts the matching candidates of `filter` within `range` into the
/// answer's buckets, and notes where the count stopped past the bound.
fn count_into(
    db: &Connection,
    filter: &RunFilter,
    tenants: Option<&BTreeSet<String>>,
    range: (i64, i64),
    examined_max: usize,
    answer: &mut OutcomesOverTime,
) -> Result<(), ProjectionError> {
    let width = answer.width;
    let index: HashMap<String, usize> =
        answer.buckets.iter().enumerate().map(|(i, bucket)| (width.key(bucket.start), i)).collect();
    let mut parameters = Parameters::new(filter, tenants, range, examined_max)?;
    let mut statement = db.prepare_cached(&grouped_sql(filter, width)).map_err(sqlite)?;
    parameters.bind(&mut statement)?;
    let (mut examined, mut oldest, mut oldest_time) = (0u64, range.1.saturating_add(1), None::<String>);
    let mut rows = statement.raw_query();
    while let Some(row) = rows.next().map_err(sqlite)? {
        let matched: bool = row.get(0).map_err(sqlite)?;
        let (key, outcome): (String, String) = (row.get(1).map_err(sqlite)?, row.get(2).map_err(sqlite)?);
        let count = counter_value(row.get(3).map_err(sqlite)?, "examined", &outcome)?;
        examined += count;
        oldest = oldest.min(row.get(4).map_err(sqlite)?);
        let time: String = row.get(5).map_err(sqlite)?;
        if oldest_time.as_ref().is_none_or(|known| time < *known) {
            oldest_time = Some(time);
        }
        // Every candidate is within the chart's range, so within a bucket.
        if let (true, Some(&i)) = (matched, index.get(&key)) {
            add(&mut answer.buckets[i], &outcome, count)?;
        }
    }
    drop(rows);
    if examined < examined_max as u64 {
        return Ok(());
    }
    parameters.set(":high", Value::Integer(oldest - 1));
    parameters.set(":examined_max", Value::Integer(1));
    if !any_candidate(db, scan_target(filter).map(|(column, _)| column), &parameters)? {
        return Ok(());
    }
    let Some(text) = oldest_time else { return Ok(()) };
    let counted_from = parse_time(&text).ok_or_else(|| corrupt_time(&text))?;
    // Older buckets were not counted at all: they are left out, not shown empty.
    let first = width.start_of(counted_from);
    answer.buckets.retain(|bucket| bucket.start >= first);
    answer.counted_from = Some(counted_from);
    Ok(())
}

fn add(bucket: &mut OutcomeBucket, outcome: &str, count: u64) -> Result<(), ProjectionError> {
    match bucket.by_outcome.get_mut(outcome) {
        Some(counted) => {
            *counted += count;
            Ok(())
        }
        None => Err(ProjectionError::Corrupt {
            key: format!("runs outcome {outcome:?}"),
            detail: "not a known outcome".into(),
        }),
    }
}

fn corrupt_time(text: &str) -> ProjectionError {
    ProjectionError::Corrupt { key: format!("runs created_at {text:?}"), detail: "not a time".into() }
}

/// The statement counting the candidates of `filter` by whether they
/// match, bucket and outcome, with the oldest position and time of each
/// group.
pub(super) fn grouped_sql(filter: &RunFilter, width: BucketWidth) -> String {
    let column = scan_target(filter).map(|(column, _)| column);
    let what = format!("first_position, created_at, outcome, ({MATCHES}) AS matched");
    let candidates = candidates_sql(column, &what, false);
    let chars = width.key_chars();
    format!(
        "SELECT matched, substr(created_at, 1, {chars}) AS bucket, outcome, count(*), min(first_position), \
         min(created_at) FROM ({candidates}) GROUP BY matched, bucket, outcome"
    )
}
