//! Crash recovery, in the style of sled's own crash tests: a child process
//! (this test binary, running only `crash::crash_child`) appends from many
//! tasks and reports every acknowledged append on stdout; the parent kills
//! it with SIGKILL at a random moment, reopens the log in the same directory
//! and checks that nothing acknowledged was lost, that no multi-event append
//! is partly visible and that the whole log verifies. Every cycle continues
//! on the same directory, so recovery is exercised over and over.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opledger::{Durability, Expectations, Head, Log, NewEvent};
use rand::Rng;
use uuid::Uuid;

use crate::support::{event, options, read_from, verify_log};

const DIR_ENV: &str = "OPLEDGER_CRASH_DIR";
const DURABILITY_ENV: &str = "OPLEDGER_CRASH_DURABILITY";
const CYCLES_ENV: &str = "OPLEDGER_CRASH_CYCLES";
const DEFAULT_FLUSH_CYCLES: usize = 50;
const CHILD_TASKS: u64 = 8;
/// Each child task pauses this long between appends; the writer still always has work.
const APPEND_PAUSE: Duration = Duration::from_millis(2);
/// A child left behind by a failed parent stops on its own after this long.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(120);

/// One acknowledged append, as the child reported it.
struct Ack {
    first: u64,
    last: u64,
    ids: Vec<Uuid>,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut words = line.strip_prefix("ack ")?.split(' ');
    let first = words.next()?.parse().ok()?;
    let last = words.next()?.parse().ok()?;
    let ids = words.next()?.split(',').map(Uuid::parse_str).collect::<Result<Vec<_>, _>>().ok()?;
    if words.next().is_some() || ids.is_empty() || last - first + 1 != ids.len() as u64 {
        return None;
    }
    Some(Ack { first, last, ids })
}

/// Writes one line to stdout and flushes it; exits when nobody listens any more.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// The child: runs only when the parent set [`DIR_ENV`], and then never
/// returns (it is killed, or stops after [`CHILD_LIFETIME_MAX`]).
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else { return };
    let durability = match std::env::var(DURABILITY_ENV).as_deref() {
        Ok("fsync") => Durability::Fsync,
        _ => Durability::Flush,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let log = Arc::new(Log::open(&dir, options(durability)).unwrap());
        emit("ready");
        let started = Instant::now();
        let mut tasks = Vec::new();
        for task in 0..CHILD_TASKS {
            let log = Arc::clone(&log);
            tasks.push(tokio::spawn(async move {
                let mut sequence = 0u64;
                while started.elapsed() < CHILD_LIFETIME_MAX {
                    append_one(&log, task, sequence).await;
                    sequence += 1;
                    // Keeps the log (and the parent's full verify each cycle) small.
                    tokio::time::sleep(APPEND_PAUSE).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// One append of 1, 3 or 5 events; the multi-event ones span two streams.
async fn append_one(log: &Log, task: u64, sequence: u64) {
    let size = [1u64, 3, 1, 5][((task + sequence) % 4) as usize];
    let batch = Uuid::now_v7();
    let events: Vec<NewEvent> = (0..size)
        .map(|index| {
            let stream = format!("crash-{}", (task + index) % 3);
            let pad = "p".repeat(((sequence * 37 + index * 11) % 300) as usize);
            let payload = serde_json::json!({
                "batch": batch, "index": index, "size": size, "task": task, "sequence": sequence, "pad": pad,
            });
            event(&stream, &payload)
        })
        .collect();
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    let appended = log.append(events, Expectations::none()).await.unwrap().unwrap();
    assert!(!appended.duplicate);
    assert_eq!(appended.last_position - appended.first_position + 1, size);
    emit(&format!("ack {} {} {}", appended.first_position, appended.last_position, ids.join(",")));
}

/// What one child run reported.
struct ChildRun {
    acks: Vec<Ack>,
    became_ready: bool,
}

/// Runs one child on `dir`, kills it with SIGKILL and collects its acknowledgements.
fn run_child(dir: &Path, durability: Durability, kill_early: bool) -> ChildRun {
    let mut rng = rand::thread_rng();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash::crash_child", "--nocapture", "--test-threads", "1"])
        .env(DIR_ENV, dir)
        .env(DURABILITY_ENV, if durability == Durability::Fsync { "fsync" } else { "flush" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                // A line cut off by the kill (no newline) was never acknowledged.
                Ok(0) | Err(_) => break,
                Ok(_) if line.last() == Some(&b'\n') => {
                    if lines_tx.send(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut lines = Vec::new();
    let mut became_ready = false;
    if kill_early {
        // Somewhere in process start-up, the runtime or the log's recovery.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..40)));
    } else {
        // Not an assertion: without "ready" in this time the child is killed anyway.
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines_rx.recv_timeout(left) {
                // libtest prints "test crash::crash_child ... " before the test runs.
                Ok(line) => {
                    became_ready |= line.ends_with("ready");
                    lines.push(line);
                    if became_ready {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..=300)));
    }
    // `Child::kill` sends SIGKILL on unix.
    child.kill().unwrap();
    reader.join().unwrap();
    let stderr_text = stderr_reader.join().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the child ended on its own ({status}) instead of being killed; its stderr:\n{stderr_text}"
    );
    lines.extend(lines_rx.try_iter());
    became_ready |= lines.iter().any(|line| line.ends_with("ready"));
    let mut acks = Vec::new();
    for line in &lines {
        if line.starts_with("ack ") {
            acks.push(parse_ack(line).unwrap_or_else(|| panic!("malformed acknowledgement {line:?}")));
        }
    }
    ChildRun { acks, became_ready }
}

/// The running totals over all cycles.
#[derive(Default)]
struct Totals {
    cycles: usize,
    fsync_cycles: usize,
    early_kills: usize,
    acknowledged_appends: usize,
    acknowledged_events: usize,
    multi_event_appends: usize,
    lost: usize,
    partial_batches: usize,
    parent_appends: usize,
}

impl Totals {
    fn summary(&self) -> String {
        format!(
            "crash test: cycles={} acknowledged={} lost={} partial_batches={}",
            self.cycles, self.acknowledged_events, self.lost, self.partial_batches
        )
    }
}

/// Checks the log after a crash, appends a little from the parent and closes
/// it. Returns the head the next cycle must keep.
fn check_after_crash(
    dir: &Path,
    previous: Head,
    run: &ChildRun,
    every_ack: &mut HashMap<Uuid, u64>,
    totals: &mut Totals,
) -> Result<Head, String> {
    // `Store::open` removes an unfinished sled snapshot a kill may leave
    // (sled issue 1527), so every reopen must succeed.
    let log = Log::open(dir, options(Durability::Flush)).map_err(|e| format!("reopen after the kill failed: {e}"))?;
    let head = log.head();
    if head.position < previous.position {
        return Err(format!("the head moved back from {} to {}", previous.position, head.position));
    }
    let mut lost = 0;
    for ack in &run.acks {
        totals.acknowledged_appends += 1;
        totals.acknowledged_events += ack.ids.len();
        if ack.ids.len() > 1 {
            totals.multi_event_appends += 1;
        }
        for (offset, id) in ack.ids.iter().enumerate() {
            let expected = ack.first + offset as u64;
            every_ack.insert(*id, expected);
            let found = log.position_of(id).map_err(|e| format!("position_of({id}) failed: {e}"))?;
            if found != Some(expected) {
                lost += 1;
                eprintln!(
                    "acknowledged event {id} expected at {expected} (append {}..={}), found {found:?}",
                    ack.first, ack.last
                );
            }
        }
    }
    // Every append of this cycle lies after the previous head; each must be whole.
    let events = read_from(&log, previous.position + 1).map_err(|e| format!("read after the kill failed: {e}"))?;
    let partial = partial_batches(&events)?;
    totals.lost += lost;
    totals.partial_batches += partial;
    if lost > 0 || partial > 0 {
        return Err(format!("{lost} acknowledged events lost, {partial} multi-event appends partly visible"));
    }
    let report = verify_log(&log, Some(previous)).map_err(|e| format!("verify failed to run: {e}"))?;
    if let Some(failure) = report.first_failure {
        return Err(format!("verify: position {}: {}", failure.position, failure.detail));
    }
    if report.head != head || report.events_checked != head.position {
        return Err(format!("verify checked {} events, head {}", report.events_checked, head.position));
    }
    // The recovered log takes appends: one single and one two-event append.
    for size in [1u64, 2] {
        let batch = Uuid::now_v7();
        let events: Vec<NewEvent> = (0..size)
            .map(|index| {
                let payload = serde_json::json!({ "batch": batch, "index": index, "size": size, "task": "parent" });
                event(&format!("crash-{index}"), &payload)
            })
            .collect();
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let appended = log
            .append_blocking(events, Expectations::none())
            .map_err(|e| format!("append after recovery failed: {e}"))?
            .map_err(|c| format!("append after recovery conflicted: {c:?}"))?;
        for (offset, id) in ids.iter().enumerate() {
            every_ack.insert(*id, appended.first_position + offset as u64);
        }
        totals.parent_appends += 1;
    }
    let head = log.head();
    log.close();
    drop(log);
    Ok(head)
}

/// How many batches in `events` are not whole: every member present, in
/// order, at consecutive positions. A partly visible batch is reported on
/// stderr; a malformed payload is an error.
fn partial_batches(events: &[opledger::Envelope]) -> Result<usize, String> {
    #[derive(serde::Deserialize)]
    struct Member {
        batch: Uuid,
        index: u64,
        size: u64,
    }
    let mut batches: HashMap<Uuid, Vec<(u64, u64, u64)>> = HashMap::new();
    for event in events {
        let member: Member =
            event.payload_as().map_err(|e| format!("payload at {} is not a batch member: {e}", event.position))?;
        batches.entry(member.batch).or_default().push((member.index, member.size, event.position));
    }
    let mut partial = 0;
    for (batch, members) in &batches {
        let size = members[0].1;
        let first = members[0].2;
        let whole = members.len() as u64 == size
            && members.iter().enumerate().all(|(i, (index, member_size, position))| {
                *index == i as u64 && *member_size == size && *position == first + i as u64
            });
        if !whole {
            partial += 1;
            eprintln!("batch {batch} is not whole: (index, size, position) = {members:?}");
        }
    }
    Ok(partial)
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let flush_cycles =
        std::env::var(CYCLES_ENV).ok().and_then(|text| text.parse().ok()).unwrap_or(DEFAULT_FLUSH_CYCLES).max(1);
    let fsync_cycles = (flush_cycles / 10).max(1);
    let cycles = flush_cycles + fsync_cycles;
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut rng = rand::thread_rng();
    let mut totals = Totals::default();
    let mut every_ack: HashMap<Uuid, u64> = HashMap::new();
    let mut head = Head::EMPTY;
    let mut children_ready = 0;
    for cycle in 0..cycles {
        // Every eleventh cycle runs with fsync; one in eight kills during start-up.
        let durability = if cycle % 11 == 10 { Durability::Fsync } else { Durability::Flush };
        let kill_early = cycle > 0 && rng.gen_range(0..8) == 0;
        let cycle_started = Instant::now();
        let run = run_child(dir.path(), durability, kill_early);
        let child_time = cycle_started.elapsed();
        children_ready += usize::from(run.became_ready);
        match check_after_crash(dir.path(), head, &run, &mut every_ack, &mut totals) {
            Ok(next) => {
                eprintln!(
                    "cycle {cycle}: acks={} head={} child={child_time:?} check={:?}",
                    run.acks.len(),
                    next.position,
                    cycle_started.elapsed() - child_time
                );
                head = next;
            }
            Err(failure) => {
                eprintln!("{}", totals.summary());
                let kept = dir.keep();
                panic!("cycle {cycle} ({durability:?}): {failure}; the log is kept in {}", kept.display());
            }
        }
        totals.cycles += 1;
        totals.fsync_cycles += usize::from(durability == Durability::Fsync);
        totals.early_kills += usize::from(kill_early);
    }

    // A last reopen: every event acknowledged in any cycle is still where it was.
    let log = Log::open(dir.path(), options(Durability::Flush)).unwrap();
    let mut lost_at_end = 0;
    for (id, position) in &every_ack {
        if log.position_of(id).unwrap() != Some(*position) {
            lost_at_end += 1;
        }
    }
    let all = read_from(&log, 1).unwrap();
    let partial_at_end = partial_batches(&all).unwrap();
    let report = verify_log(&log, Some(head)).unwrap();
    assert!(report.is_ok(), "final verify: {:?}", report.first_failure);
    assert_eq!(log.head(), head);
    log.close();

    eprintln!("{}", totals.summary());
    eprintln!(
        "crash test details: fsync_cycles={} early_kills={} children_ready={} acknowledged_appends={} \
         multi_event_appends={} parent_appends={} final_head={} events_in_log={} lost_at_end={} \
         elapsed={:?}",
        totals.fsync_cycles,
        totals.early_kills,
        children_ready,
        totals.acknowledged_appends,
        totals.multi_event_appends,
        totals.parent_appends,
        head.position,
        all.len(),
        lost_at_end,
        started.elapsed()
    );
    assert_eq!(totals.lost, 0, "acknowledged events were lost");
    assert_eq!(totals.partial_batches, 0, "multi-event appends were partly visible");
    assert_eq!(lost_at_end, 0, "acknowledged events were lost by the end");
    assert_eq!(partial_at_end, 0);
    assert!(totals.acknowledged_events > 0, "no child acknowledged anything: the test tested nothing");
    assert!(totals.multi_event_appends > 0);
}
