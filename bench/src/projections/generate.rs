//! The bench log: the authority world, then run cycles decided by the real
//! [`Sequencer`] (so every event is one the ledger would have appended) and
//! handed to the log in appends of up to [`APPEND_EVENTS_MAX`] events.
//!
//! Going through the `Ledger` would append one command at a time and take
//! minutes per million events on this machine; the sequencer decides the same
//! commands on the same state, so the events (and therefore the projections'
//! work) are the same, only packed into fewer, larger commits.
//!
//! 64 runs are in flight at any time and the next command goes to a random
//! one of them, so run streams interleave in the log as they do with
//! concurrent workers. The mix: starts by members (85%), the system (10%)
//! and actors of another tenant (5%, blocked at the start gate); 30% of
//! running attempts report progress once; completions succeed (75%), partly
//! succeed (12%) or fail (13%, of which 40% ask for a retry). Every 2,000
//! commands one tenant's connection goes unreachable, and comes back 2,000
//! commands later, so begins on it are denied and requeued or blocked.
//!
//! The ledger stores a restart snapshot whenever a command crosses a
//! multiple of `SNAPSHOT_EVERY_EVENTS`; the generator stores the last one
//! the ledger would have stored, so a restart on this log folds what a
//! restart on a served log folds.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use opledger::domain::authority::AuthorityChange;
use opledger::domain::lifecycle::{Completion, FailureReport};
use opledger::domain::model::{ConnectionStatus, Principal, RunStatus, WorkerOutcome};
use opledger::domain::sequencer::{Produced, Sequencer, StartAnswer, AUTHORITY_BATCH_CHANGES_MAX};
use opledger::domain::snapshot::{self, Snapshot};
use opledger::domain::start_gate::StartRequest;
use opledger::limits::APPEND_EVENTS_MAX;
use opledger::{Durability, Expectations, Log, LogOptions, NewEvent, PendingAppend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::world;

/// Bumped whenever the mix changes, so a cached log of another mix is regenerated.
const GENERATOR_VERSION: u32 = 2;
const MARKER_FILE: &str = "bench-projections.json";
const IN_FLIGHT_RUNS: usize = 64;
/// Appends handed to the writer and not yet acknowledged: enough to keep
/// its group commits full, few enough to bound memory.
const APPENDS_IN_FLIGHT_MAX: usize = 32;
const CHURN_EVERY_COMMANDS: u64 = 2_000;
/// The most events one run command produces in this mix (begin: two).
const RUN_COMMAND_EVENTS_MAX: usize = 4;

/// What the bench log holds, and whether this run made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogInfo {
    generator: u32,
    pub events_requested: u64,
    pub events: u64,
    /// Runs created (accepted or blocked at the start gate).
    pub runs: u64,
    /// Seconds the generation took, when it was made.
    pub generated_seconds: f64,
    #[serde(skip)]
    pub reused: bool,
}

/// The data directory's log (the layout `opledger serve --data` uses).
pub fn log_dir(data: &Path) -> PathBuf {
    data.join("log")
}

/// Reuses the log cached in `data` when it was made for `events`, else
/// generates it there. Refuses a directory whose log this bench did not make.
pub fn prepare(data: &Path, events: u64, regenerate: bool) -> anyhow::Result<LogInfo> {
    let marker = data.join(MARKER_FILE);
    let log = log_dir(data);
    let cached: Option<LogInfo> = match std::fs::read(&marker) {
        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
        Err(_) => None,
    };
    match cached {
        Some(info) if !regenerate && info.generator == GENERATOR_VERSION && info.events_requested == events => {
            return Ok(LogInfo { reused: true, ..info });
        }
        Some(_) => std::fs::remove_dir_all(&log).or_else(ignore_missing).context("removing the stale bench log")?,
        None if log.exists() => bail!("{} exists and was not made by this bench: pass an empty --dir", log.display()),
        None => {}
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let info = generate(&log, events)?;
    std::fs::write(&marker, serde_json::to_vec_pretty(&info)?).context("writing the bench log's marker")?;
    Ok(info)
}

fn ignore_missing(error: std::io::Error) -> std::io::Result<()> {
    match error.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(error),
    }
}

fn generate(log_dir: &Path, events: u64) -> anyhow::Result<LogInfo> {
    let started = Instant::now();
    let options = LogOptions { durability: Durability::Flush, ..LogOptions::default() };
    let log = Log::open(log_dir, options).context("opening the bench log")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut generator = Generator::new();
    runtime.block_on(generator.run(&log, events))?;
    let head = log.head().position;
    log.close();
    let generated_seconds = started.elapsed().as_secs_f64();
    let runs = generator.runs;
    Ok(LogInfo {
        generator: GENERATOR_VERSION,
        events_requested: events,
        events: head,
        runs,
        generated_seconds,
        reused: false,
    })
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Idle,
    Queued(Uuid),
    Running { run_id: Uuid, progressed: bool },
}

struct Generator {
    sequencer: Sequencer,
    rng: StdRng,
    slots: Vec<Slot>,
    /// Events decided and not yet handed to the log, and the position of the first.
    buffer: Vec<NewEvent>,
    buffer_first: u64,
    appends: VecDeque<PendingAppend>,
    /// The clock of the buffer: every command in one append shares it, so the
    /// log records the time the sequencer applied.
    now: DateTime<Utc>,
    commands: u64,
    runs: u64,
    down: Option<usize>,
    /// The latest snapshot the ledger would have stored.
    snapshot: Option<Snapshot>,
}

impl Generator {
    fn new() -> Generator {
        Generator {
            sequencer: Sequencer::default(),
            rng: StdRng::seed_from_u64(0x0b1e_d6e4),
            slots: vec![Slot::Idle; IN_FLIGHT_RUNS],
            buffer: Vec::new(),
            buffer_first: 0,
            appends: VecDeque::new(),
            now: Utc::now(),
            commands: 0,
            runs: 0,
            down: None,
            snapshot: None,
        }
    }

    async fn run(&mut self, log: &Log, events: u64) -> anyhow::Result<()> {
        for chunk in world::changes().chunks(AUTHORITY_BATCH_CHANGES_MAX) {
            self.make_room(log, chunk.len()).await?;
            let produced = self.sequencer.record_authority(&Principal::System, chunk, self.now)?;
            self.stage(produced)?;
        }
        while self.sequencer.state().position < events {
            self.make_room(log, RUN_COMMAND_EVENTS_MAX).await?;
            let produced = self.step()?;
            self.stage(produced)?;
        }
        self.flush(log).await?;
        while let Some(append) = self.appends.pop_front() {
            acknowledged(append).await?;
        }
        // Acknowledged now, as the ledger requires before storing it.
        if let Some(snapshot) = &self.snapshot {
            snapshot::store(log, snapshot).context("storing the ledger snapshot")?;
        }
        Ok(())
    }

    /// Hands the buffer to the log first if `events` more might not fit.
    async fn make_room(&mut self, log: &Log, events: usize) -> anyhow::Result<()> {
        if self.buffer.len() + events > APPEND_EVENTS_MAX {
            self.flush(log).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, log: &Log) -> anyhow::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.buffer);
        let expectations = Expectations { streams: Vec::new(), head: Some(self.buffer_first - 1) };
        let at = self.sequencer.state().last_at;
        self.appends.push_back(log.submit_at(events, expectations, at).await?);
        while self.appends.len() > APPENDS_IN_FLIGHT_MAX {
            if let Some(append) = self.appends.pop_front() {
                acknowledged(append).await?;
            }
        }
        self.now = Utc::now();
        Ok(())
    }

    fn stage(&mut self, produced: Produced) -> anyhow::Result<()> {
        if let Some(due) = snapshot::due(self.sequencer.state(), produced.first_position) {
            self.snapshot = Some(due);
        }
        if self.buffer.is_empty() {
            self.buffer_first = produced.first_position;
        }
        for event in &produced.events {
            self.buffer.push(event.to_new_event(Uuid::now_v7())?);
        }
        Ok(())
    }

    /// The next command: authority churn now and then, else the next step
    /// of a random in-flight run.
    fn step(&mut self) -> anyhow::Result<Produced> {
        self.commands += 1;
        if self.commands.is_multiple_of(CHURN_EVERY_COMMANDS) {
            return self.churn();
        }
        let index = self.rng.gen_range(0..self.slots.len());
        match self.slots[index] {
            Slot::Idle => self.start(index),
            Slot::Queued(run_id) => self.begin(index, run_id),
            Slot::Running { run_id, progressed } => self.finish(index, run_id, progressed),
        }
    }

    fn churn(&mut self) -> anyhow::Result<Produced> {
        let (tenant, status) = match self.down.take() {
            Some(tenant) => (tenant, ConnectionStatus::Ready),
            None => {
                let tenant = self.rng.gen_range(0..world::TENANTS);
                self.down = Some(tenant);
                (tenant, ConnectionStatus::Unreachable)
            }
        };
        let change =
            AuthorityChange::ProviderConnectionStatusChanged { connection_id: world::connection(tenant), status };
        Ok(self.sequencer.record_authority(&Principal::System, &[change], self.now)?)
    }

    fn start(&mut self, index: usize) -> anyhow::Result<Produced> {
        let tenant = self.rng.gen_range(0..world::TENANTS);
        let operation_type = match self.rng.gen_range(0..100) {
            0..60 => world::OPERATION_TYPES[0].0,
            60..85 => world::OPERATION_TYPES[2].0,
            _ => world::OPERATION_TYPES[1].0,
        };
        let initiator = match self.rng.gen_range(0..100) {
            0..85 => world::member(tenant, self.rng.gen_range(0..world::MEMBERS_PER_TENANT)),
            85..95 => Principal::System,
            // A member of the next tenant only: blocked at the start gate.
            _ => world::member((tenant + 1) % world::TENANTS, 0),
        };
        let request = StartRequest {
            operation_type: operation_type.to_owned(),
            tenant_id: world::tenant(tenant),
            initiator,
            provider_connection_id: None,
            context: serde_json::json!({"requested_from": "scheduler", "window": self.commands % 97}),
            dedupe_key: None,
        };
        let (answer, produced) = self.sequencer.start(&request, &mut Uuid::now_v7, self.now)?;
        match answer {
            StartAnswer::Accepted(run) => {
                self.slots[index] = Slot::Queued(run.id);
                self.runs += 1;
            }
            StartAnswer::Blocked(_) => self.runs += 1,
            StartAnswer::Deduped(_) | StartAnswer::ScopeBusy(_) => {}
        }
        Ok(produced)
    }

    fn begin(&mut self, index: usize, run_id: Uuid) -> anyhow::Result<Produced> {
        let (_, run, produced) = self.sequencer.begin(run_id, &mut Uuid::now_v7, self.now)?;
        self.slots[index] = match run.status {
            RunStatus::Running => Slot::Running { run_id, progressed: false },
            RunStatus::Queued => Slot::Queued(run_id),
            RunStatus::Completed => Slot::Idle,
        };
        Ok(produced)
    }

    fn finish(&mut self, index: usize, run_id: Uuid, progressed: bool) -> anyhow::Result<Produced> {
        if !progressed && self.rng.gen_bool(0.3) {
            let counts = serde_json::json!({"total": 200, "processed": 80, "succeeded": 78, "failed": 2});
            let (_, produced) = self.sequencer.progress(run_id, &counts, self.now)?;
            self.slots[index] = Slot::Running { run_id, progressed: true };
            return Ok(produced);
        }
        let completion = self.completion();
        let (run, produced) = self.sequencer.complete(run_id, &completion, &mut Uuid::now_v7, self.now)?;
        self.slots[index] = match run.status {
            RunStatus::Queued => Slot::Queued(run_id),
            _ => Slot::Idle,
        };
        Ok(produced)
    }

    fn completion(&mut self) -> Completion {
        let roll = self.rng.gen_range(0..100);
        let (outcome, processed, failed) = match roll {
            0..75 => (WorkerOutcome::Succeeded, 200, 0),
            75..87 => (WorkerOutcome::PartiallySucceeded, 200, 17),
            _ => (WorkerOutcome::Failed, 35, 35),
        };
        let failure = (outcome == WorkerOutcome::Failed).then(|| FailureReport {
            code: Some("provider_timeout".to_owned()),
            message: "the provider did not answer within 30 s".to_owned(),
        });
        let retryable = (outcome == WorkerOutcome::Failed).then(|| self.rng.gen_bool(0.4));
        let counts = serde_json::json!({"total": 200, "processed": processed, "succeeded": processed - failed, "failed": failed});
        Completion { outcome, summary_counts: Some(counts), failure, retryable }
    }
}

async fn acknowledged(append: PendingAppend) -> anyhow::Result<()> {
    match append.wait().await? {
        Ok(_) => Ok(()),
        Err(conflict) => bail!("the log refused a decided append: {conflict:?}"),
    }
}
