//! What the appenders append: run-queued events shaped like the domain's,
//! about 300 bytes of canonical JSON each.

use std::hint::black_box;
use std::time::Instant;

use chrono::{DateTime, Utc};
use opledger::{Envelope, Hash, NewEvent, StreamId};
use uuid::Uuid;

use super::StreamLayout;
use crate::stats::micros;

const EVENT_TYPE: &str = "run_queued";

/// Builds one appender's events. Every event gets a fresh run id (and so a
/// fresh event id): a replayed id would be answered as a duplicate and
/// measure the idempotency path instead of an append.
pub struct EventSource {
    appender: usize,
    layout: StreamLayout,
    stream: StreamId,
    /// The event every event copies but for its id and stream
    /// ([`Payloads::Prebuilt`]).
    prebuilt: Option<NewEvent>,
}

/// Where each event's payload comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payloads {
    /// Built as JSON and made canonical for every event, as a caller
    /// building its events would: that CPU is spent on the cores the log
    /// and the database share (the `append` bench, whose report prices it).
    PerEvent,
    /// Built and made canonical once per appender; each event is that
    /// payload with a fresh id. The raw baselines insert a record built
    /// once, so with this the ledger's clients cost the machine no more
    /// per event than the baseline's do.
    Prebuilt,
}

impl EventSource {
    pub fn new(appender: usize, layout: StreamLayout, payloads: Payloads) -> anyhow::Result<EventSource> {
        let stream = StreamId::new(format!("bench-appender-{appender}"))?;
        let prebuilt = match payloads {
            Payloads::PerEvent => None,
            Payloads::Prebuilt => {
                let payload = run_queued(Uuid::now_v7(), appender, Utc::now());
                Some(NewEvent::with_id(Uuid::now_v7(), stream.clone(), EVENT_TYPE, 1, &payload)?)
            }
        };
        Ok(EventSource { appender, layout, stream, prebuilt })
    }

    pub fn next_event(&mut self) -> anyhow::Result<NewEvent> {
        let run_id = Uuid::now_v7();
        let stream = match self.layout {
            StreamLayout::Appender => self.stream.clone(),
            StreamLayout::Run => StreamId::new(format!("run-{run_id}"))?,
        };
        match &self.prebuilt {
            Some(template) => Ok(NewEvent { event_id: run_id, stream, ..template.clone() }),
            None => {
                let payload = run_queued(run_id, self.appender, Utc::now());
                Ok(NewEvent::with_id(run_id, stream, EVENT_TYPE, 1, &payload)?)
            }
        }
    }
}

fn run_queued(run_id: Uuid, appender: usize, queued_at: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({
        "run_id": run_id,
        "operation": "deploy-service",
        "requested_by": format!("operator-{appender}@example.com"),
        "queue": "default",
        "priority": 5,
        "queued_at": queued_at,
        "reason": "scheduled rollout",
        "parameters": {
            "service": "billing-api",
            "environment": "staging",
            "revision": "4f9c2e1a7b3d"
        }
    })
}

/// A stored record of the same size as the ledger's: the raw sled baseline
/// writes these bytes, so both sides move the same payload.
pub fn sample_record() -> anyhow::Result<Vec<u8>> {
    let event = EventSource::new(0, StreamLayout::Appender, Payloads::PerEvent)?.next_event()?;
    Ok(Envelope::seal(&event, 1, 1, Utc::now(), Hash::GENESIS)?.1)
}

/// CPU time per event of the two steps the raw sled baseline skips, measured
/// single-threaded so the report can say where the ledger's time goes.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CpuCosts {
    pub payload_bytes: usize,
    pub record_bytes: usize,
    /// Building the payload and its canonical JSON (`NewEvent::with_id`).
    pub canonical_json_us: f64,
    /// Encoding the envelope and its SHA-256 (`Envelope::seal`).
    pub seal_us: f64,
}

pub fn cpu_costs(iterations: u32) -> anyhow::Result<CpuCosts> {
    let mut source = EventSource::new(0, StreamLayout::Appender, Payloads::PerEvent)?;
    let started = Instant::now();
    for _ in 0..iterations {
        black_box(source.next_event()?);
    }
    let canonical_json_us = micros(started.elapsed()) / f64::from(iterations);
    let event = source.next_event()?;
    let started = Instant::now();
    // From position 2: position 1 must chain to the genesis hash.
    for position in 2..=u64::from(iterations) + 1 {
        black_box(Envelope::seal(&event, position, position, Utc::now(), Hash(black_box([7; 32])))?);
    }
    let seal_us = micros(started.elapsed()) / f64::from(iterations);
    let record_bytes = sample_record()?.len();
    Ok(CpuCosts { payload_bytes: event.payload.get().len(), record_bytes, canonical_json_us, seal_us })
}
