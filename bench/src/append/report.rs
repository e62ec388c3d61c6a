//! Medians over the repeats, the markdown tables, the target checks and the
//! JSON dump.

use std::io::Write;

use serde::Serialize;

use super::ledger::LedgerSample;
use super::raw_sled::RawSample;
use super::workload::CpuCosts;
use super::{AppendArgs, Mode};
use crate::stats::{median, ratio, verdict};

/// One repeat of one cell: the ledger run and the two raw sled runs right after it.
#[derive(Debug, Clone, Serialize)]
pub struct CellSample {
    pub mode: Mode,
    pub appenders: usize,
    pub repeat: usize,
    pub ledger: LedgerSample,
    pub raw: RawSample,
    pub indexed: RawSample,
}

impl CellSample {
    fn ratio(&self) -> f64 {
        ratio(self.ledger.appends_per_second, self.raw.events_per_second)
    }

    fn p50_ratio(&self) -> f64 {
        ratio(self.ledger.p50_us, self.raw.p50_us)
    }

    fn indexed_ratio(&self) -> f64 {
        ratio(self.ledger.appends_per_second, self.indexed.events_per_second)
    }
}

/// The medians of one cell over its repeats. The ratios are medians of the
/// per-repeat ratios: each ledger run is paired with the baseline run that
/// followed it, so slow drift of a noisy machine cancels within a pair.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub mode: Mode,
    pub appenders: usize,
    pub ledger_appends_per_second: f64,
    pub ledger_p50_us: f64,
    pub ledger_p99_us: f64,
    pub mean_group: f64,
    pub raw_batch: f64,
    pub raw_events_per_second: f64,
    pub raw_p50_us: f64,
    pub raw_p99_us: f64,
    pub raw_apply_us: f64,
    pub raw_flush_us: f64,
    pub raw_fdatasync_us: f64,
    pub ratio: f64,
    pub p50_ratio: f64,
    pub indexed_events_per_second: f64,
    pub indexed_p50_us: f64,
    pub indexed_apply_us: f64,
    pub indexed_flush_us: f64,
    pub indexed_ratio: f64,
}

pub fn medians(modes: &[Mode], appenders: &[usize], samples: &[CellSample]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &mode in modes {
        for &count in appenders {
            let of: Vec<&CellSample> = samples.iter().filter(|s| s.mode == mode && s.appenders == count).collect();
            cells.push(cell(mode, count, &of));
        }
    }
    cells
}

fn cell(mode: Mode, appenders: usize, of: &[&CellSample]) -> Cell {
    let m = |field: fn(&CellSample) -> f64| median(of.iter().map(|s| field(s)));
    Cell {
        mode,
        appenders,
        ledger_appends_per_second: m(|s| s.ledger.appends_per_second),
        ledger_p50_us: m(|s| s.ledger.p50_us),
        ledger_p99_us: m(|s| s.ledger.p99_us),
        mean_group: m(|s| s.ledger.mean_group),
        raw_batch: m(|s| s.raw.batch as f64),
        raw_events_per_second: m(|s| s.raw.events_per_second),
        raw_p50_us: m(|s| s.raw.p50_us),
        raw_p99_us: m(|s| s.raw.p99_us),
        raw_apply_us: m(|s| s.raw.apply_us),
        raw_flush_us: m(|s| s.raw.flush_us),
        raw_fdatasync_us: m(|s| s.raw.fdatasync_us),
        ratio: m(CellSample::ratio),
        p50_ratio: m(CellSample::p50_ratio),
        indexed_events_per_second: m(|s| s.indexed.events_per_second),
        indexed_p50_us: m(|s| s.indexed.p50_us),
        indexed_apply_us: m(|s| s.indexed.apply_us),
        indexed_flush_us: m(|s| s.indexed.flush_us),
        indexed_ratio: m(CellSample::indexed_ratio),
    }
}

pub fn print(args: &AppendArgs, cpu: &CpuCosts, cells: &[Cell], samples: &[CellSample]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.json {
        let dump = serde_json::json!({ "config": args, "cpu": cpu, "cells": cells, "samples": samples });
        writeln!(out, "{}", serde_json::to_string_pretty(&dump)?)?;
        return Ok(());
    }
    print_main_table(&mut out, cells)?;
    writeln!(out)?;
    print_breakdown(&mut out, cpu, cells)?;
    writeln!(out)?;
    print_targets(&mut out, cells)
}

fn print_main_table(out: &mut impl Write, cells: &[Cell]) -> anyhow::Result<()> {
    writeln!(
        out,
        "| mode | appenders | ledger appends/s | ledger p50 µs | ledger p99 µs | mean group | \
         raw sled events/s | raw sled p50 µs | raw sled p99 µs | ratio | p50 ratio |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for c in cells {
        writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            c.mode,
            c.appenders,
            c.ledger_appends_per_second,
            c.ledger_p50_us,
            c.ledger_p99_us,
            c.mean_group,
            c.raw_events_per_second,
            c.raw_p50_us,
            c.raw_p99_us,
            c.ratio,
            c.p50_ratio
        )?;
    }
    Ok(())
}

/// Where the time goes: the ledger's CPU steps per event, the baseline's
/// storage steps per batch, and the baseline again with the ledger's keys.
fn print_breakdown(out: &mut impl Write, cpu: &CpuCosts, cells: &[Cell]) -> anyhow::Result<()> {
    writeln!(
        out,
        "CPU per event (one thread): canonical JSON {:.1} µs, seal (encode + SHA-256) {:.1} µs; \
         payload {} B, record {} B",
        cpu.canonical_json_us, cpu.seal_us, cpu.payload_bytes, cpu.record_bytes
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| mode | appenders | batch | raw apply µs | raw flush µs | raw fdatasync µs | \
         indexed events/s | indexed p50 µs | indexed apply µs | indexed flush µs | ledger / indexed |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for c in cells {
        writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            c.mode,
            c.appenders,
            c.raw_batch,
            c.raw_apply_us,
            c.raw_flush_us,
            c.raw_fdatasync_us,
            c.indexed_events_per_second,
            c.indexed_p50_us,
            c.indexed_apply_us,
            c.indexed_flush_us,
            c.indexed_ratio
        )?;
    }
    Ok(())
}

/// The two targets, stated as met or not from the medians; a target whose
/// cell was not measured says so.
fn print_targets(out: &mut impl Write, cells: &[Cell]) -> anyhow::Result<()> {
    let find = |mode: Mode, appenders: usize| cells.iter().find(|c| c.mode == mode && c.appenders == appenders);
    match find(Mode::Flush, 64) {
        Some(c) => writeln!(out, "target flush x64 ratio >= 0.60: {} ({:.2})", verdict(c.ratio >= 0.6), c.ratio)?,
        None => writeln!(out, "target flush x64 ratio >= 0.60: not measured")?,
    }
    for mode in [Mode::Flush, Mode::Fsync] {
        if let Some(c) = find(mode, 1) {
            writeln!(
                out,
                "target {mode} x1 ledger p50 <= 2x raw insert+flush p50: {} ({:.2}x)",
                verdict(c.p50_ratio <= 2.0),
                c.p50_ratio
            )?;
        }
    }
    Ok(())
}
