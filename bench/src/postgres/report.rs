//! Medians over the repeats, the two markdown tables, the target checks
//! and the JSON dump.

use std::io::Write;

use serde::Serialize;

use super::appends::AppendSample;
use super::cycles::CycleSample;
use super::plain::PlainSample;
use super::raw::RawSample;
use crate::stats::{median, ratio, verdict};

/// The clients at which the targets are stated.
pub const TARGET_CLIENTS: usize = 64;
/// Ledger appends ÷ raw inserts at [`TARGET_CLIENTS`], at least.
pub const TARGET_APPEND_RATIO: f64 = 0.5;
/// Ledger cycles ÷ plain SQL cycles at [`TARGET_CLIENTS`], more than.
pub const TARGET_CYCLE_RATIO: f64 = 1.0;

/// One repeat of one cell: each of its five runs on a database of its own,
/// each baseline next to the ledger run it is paired with (before it or
/// after it: `mod.rs`).
#[derive(Debug, Clone, Serialize)]
pub struct CellSample {
    pub clients: usize,
    pub nodes: usize,
    pub repeat: usize,
    pub appends: AppendSample,
    pub raw: RawSample,
    /// The same clients' rows, one row per transaction: what each client
    /// appends, committed the plain way.
    pub raw_per_append: RawSample,
    pub cycles: CycleSample,
    pub plain: PlainSample,
}

impl CellSample {
    fn append_ratio(&self) -> f64 {
        ratio(self.appends.appends_per_second, self.raw.events_per_second)
    }

    fn per_append_ratio(&self) -> f64 {
        ratio(self.appends.appends_per_second, self.raw_per_append.events_per_second)
    }

    /// The cluster's WAL per ledger append while measured (one event each).
    pub fn append_wal_per_event(&self) -> f64 {
        ratio(self.appends.wal_bytes as f64, self.appends.appends as f64)
    }

    /// The cluster's WAL per row of the same-groups raw inserts.
    pub fn raw_wal_per_event(&self) -> f64 {
        ratio(self.raw.wal_bytes as f64, self.raw.events as f64)
    }

    fn cycle_ratio(&self) -> f64 {
        ratio(self.cycles.cycles_per_second, self.plain.cycles_per_second)
    }
}

/// Medians of one cell. The ratios are medians of the per-repeat ratios
/// (each ledger run paired with the baseline run next to it), so they can
/// differ a little from the ratio of the medians shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub clients: usize,
    pub nodes: usize,
    pub appends_per_second: f64,
    pub append_p50_us: f64,
    pub append_p99_us: f64,
    pub mean_group: f64,
    pub append_wal_bytes_per_event: f64,
    pub raw_group: f64,
    pub raw_events_per_second: f64,
    pub raw_p50_us: f64,
    pub raw_wal_bytes_per_event: f64,
    pub append_ratio: f64,
    pub raw_per_append_events_per_second: f64,
    pub per_append_ratio: f64,
    pub cycles_per_second: f64,
    pub cycle_p50_us: f64,
    pub cycle_p99_us: f64,
    pub cycle_events_per_commit: f64,
    pub contended: f64,
    pub plain_cycles_per_second: f64,
    pub plain_p50_us: f64,
    pub cycle_ratio: f64,
}

pub fn medians(clients: &[usize], nodes: &[usize], samples: &[CellSample]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &count in clients {
        for &node_count in nodes {
            let of: Vec<&CellSample> = samples.iter().filter(|s| s.clients == count && s.nodes == node_count).collect();
            if !of.is_empty() {
                cells.push(cell(count, node_count, &of));
            }
        }
    }
    cells
}

fn cell(clients: usize, nodes: usize, of: &[&CellSample]) -> Cell {
    let m = |field: fn(&CellSample) -> f64| median(of.iter().map(|s| field(s)));
    Cell {
        clients,
        nodes,
        appends_per_second: m(|s| s.appends.appends_per_second),
        append_p50_us: m(|s| s.appends.p50_us),
        append_p99_us: m(|s| s.appends.p99_us),
        mean_group: m(|s| s.appends.mean_group),
        append_wal_bytes_per_event: m(CellSample::append_wal_per_event),
        raw_group: m(|s| s.raw.group as f64),
        raw_events_per_second: m(|s| s.raw.events_per_second),
        raw_p50_us: m(|s| s.raw.p50_us),
        raw_wal_bytes_per_event: m(CellSample::raw_wal_per_event),
        append_ratio: m(CellSample::append_ratio),
        raw_per_append_events_per_second: m(|s| s.raw_per_append.events_per_second),
        per_append_ratio: m(CellSample::per_append_ratio),
        cycles_per_second: m(|s| s.cycles.cycles_per_second),
        cycle_p50_us: m(|s| s.cycles.p50_us),
        cycle_p99_us: m(|s| s.cycles.p99_us),
        cycle_events_per_commit: m(|s| s.cycles.events_per_commit),
        contended: m(|s| s.cycles.contended as f64),
        plain_cycles_per_second: m(|s| s.plain.cycles_per_second),
        plain_p50_us: m(|s| s.plain.p50_us),
        cycle_ratio: m(CellSample::cycle_ratio),
    }
}

pub fn print(config: &impl Serialize, cells: &[Cell], samples: &[CellSample], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let dump =
            serde_json::json!({ "config": config, "cells": cells, "samples": samples, "targets": targets(cells) });
        writeln!(out, "{}", serde_json::to_string_pretty(&dump)?)?;
        return Ok(());
    }
    write_tables(&mut out, cells)?;
    writeln!(out)?;
    for line in targets(cells) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn write_tables(out: &mut impl Write, cells: &[Cell]) -> anyhow::Result<()> {
    write_appends(out, cells)?;
    writeln!(out)?;
    write_cycles(out, cells)
}

/// The appends table: the ledger's, then the same-groups and the one per
/// transaction raw inserts.
fn write_appends(out: &mut impl Write, cells: &[Cell]) -> anyhow::Result<()> {
    write_header(
        out,
        &[
            "clients",
            "nodes",
            "ledger appends/s",
            "p50 µs",
            "p99 µs",
            "mean group",
            "WAL bytes per event",
            "raw inserts events/s (same groups)",
            "raw p50 µs per group",
            "raw WAL bytes per event",
            "ratio",
            "raw inserts events/s (one per transaction)",
            "ratio",
        ],
    )?;
    for c in cells {
        writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |",
            c.clients,
            c.nodes,
            c.appends_per_second,
            c.append_p50_us,
            c.append_p99_us,
            c.mean_group,
            c.append_wal_bytes_per_event,
            c.raw_events_per_second,
            c.raw_p50_us,
            c.raw_wal_bytes_per_event,
            c.append_ratio,
            c.raw_per_append_events_per_second,
            c.per_append_ratio
        )?;
    }
    Ok(())
}

/// The cycles table: the ledger's beside the plain SQL cycle.
fn write_cycles(out: &mut impl Write, cells: &[Cell]) -> anyhow::Result<()> {
    write_header(
        out,
        &[
            "clients",
            "nodes",
            "ledger cycles/s",
            "cycle p50 µs",
            "cycle p99 µs",
            "events per commit",
            "contended",
            "plain SQL cycles/s",
            "plain p50 µs",
            "ratio",
        ],
    )?;
    for c in cells {
        writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} |",
            c.clients,
            c.nodes,
            c.cycles_per_second,
            c.cycle_p50_us,
            c.cycle_p99_us,
            c.cycle_events_per_commit,
            c.contended,
            c.plain_cycles_per_second,
            c.plain_p50_us,
            c.cycle_ratio
        )?;
    }
    Ok(())
}

/// A markdown table's header row and its separator, every column right
/// aligned (they are all numbers).
fn write_header(out: &mut impl Write, columns: &[&str]) -> anyhow::Result<()> {
    writeln!(out, "| {} |", columns.join(" | "))?;
    writeln!(out, "|{}", "---:|".repeat(columns.len()))?;
    Ok(())
}

/// The two targets, per number of nodes measured at
/// [`TARGET_CLIENTS`] clients, stated as met or not from the medians.
pub fn targets(cells: &[Cell]) -> Vec<String> {
    let at_target: Vec<&Cell> = cells.iter().filter(|c| c.clients == TARGET_CLIENTS).collect();
    if at_target.is_empty() {
        return vec![format!("targets: not measured ({TARGET_CLIENTS} clients not among --clients)")];
    }
    let mut lines = Vec::new();
    for c in at_target {
        lines.push(format!(
            "target x{TARGET_CLIENTS} {} node(s): ledger appends >= {TARGET_APPEND_RATIO:.1}x raw inserts: {} ({:.2})",
            c.nodes,
            verdict(c.append_ratio >= TARGET_APPEND_RATIO),
            c.append_ratio
        ));
        lines.push(format!(
            "beside  x{TARGET_CLIENTS} {} node(s): ledger appends / raw inserts one per client transaction: {:.2}",
            c.nodes, c.per_append_ratio
        ));
        lines.push(format!(
            "target x{TARGET_CLIENTS} {} node(s): ledger cycles ahead of the plain SQL cycle: {} ({:.2})",
            c.nodes,
            verdict(c.cycle_ratio > TARGET_CYCLE_RATIO),
            c.cycle_ratio
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(repeat: usize, appends: f64, raw: f64, cycles: f64, plain: f64) -> CellSample {
        CellSample {
            clients: 64,
            nodes: 1,
            repeat,
            appends: AppendSample {
                appends: 1,
                appends_per_second: appends,
                p50_us: 100.0,
                p99_us: 200.0,
                commits: 1,
                mean_group: 20.0,
                wal_bytes: 900,
                speculative_commits: 1,
                speculative_misses: 0,
                speculative_unread: 0,
            },
            raw: RawSample {
                group: 20,
                events: 2,
                events_per_second: raw,
                p50_us: 50.0,
                p99_us: 90.0,
                wal_bytes: 1400,
            },
            raw_per_append: RawSample {
                group: 1,
                events: 1,
                events_per_second: raw / 4.0,
                p50_us: 5.0,
                p99_us: 9.0,
                wal_bytes: 800,
            },
            cycles: CycleSample {
                cycles: 1,
                cycles_per_second: cycles,
                p50_us: 300.0,
                p99_us: 900.0,
                events_per_commit: 12.0,
                contended: 3,
                wal_bytes: 5000,
            },
            plain: PlainSample { cycles: 1, cycles_per_second: plain, p50_us: 400.0, p99_us: 800.0, wal_bytes: 4000 },
        }
    }

    #[test]
    fn ratios_are_medians_of_the_paired_repeats() {
        // Repeat 2 ran slow on both sides: its pair's ratio is still 0.5.
        let samples = [
            sample(1, 500.0, 1000.0, 300.0, 200.0),
            sample(2, 100.0, 200.0, 100.0, 100.0),
            sample(3, 600.0, 1000.0, 400.0, 200.0),
        ];
        let cells = medians(&[1, 64], &[1, 2], &samples);
        assert_eq!(cells.len(), 1, "cells without samples are left out");
        let cell = &cells[0];
        assert_eq!(cell.appends_per_second, 500.0);
        assert_eq!(cell.raw_events_per_second, 1000.0);
        assert_eq!(cell.append_ratio, 0.5);
        assert_eq!(cell.cycle_ratio, 1.5);
        assert_eq!(cell.cycles_per_second, 300.0);
        assert_eq!(cell.append_wal_bytes_per_event, 900.0, "900 bytes over 1 append");
        assert_eq!(cell.raw_wal_bytes_per_event, 700.0, "1,400 bytes over 2 rows");
    }

    #[test]
    fn targets_are_judged_at_64_clients() {
        let met = medians(&[64], &[1], &[sample(1, 600.0, 1000.0, 300.0, 200.0)]);
        assert_eq!(
            targets(&met),
            [
                "target x64 1 node(s): ledger appends >= 0.5x raw inserts: met (0.60)",
                "beside  x64 1 node(s): ledger appends / raw inserts one per client transaction: 2.40",
                "target x64 1 node(s): ledger cycles ahead of the plain SQL cycle: met (1.50)"
            ]
        );
        let missed = medians(&[64], &[1], &[sample(1, 400.0, 1000.0, 200.0, 200.0)]);
        let lines = targets(&missed);
        assert!(lines[0].ends_with("NOT met (0.40)"), "{lines:?}");
        assert!(lines[2].ends_with("NOT met (1.00)"), "{lines:?}");
        assert_eq!(targets(&[]).len(), 1);
    }

    #[test]
    fn tables_show_one_row_per_cell() {
        let cells = medians(&[64], &[1], &[sample(1, 500.0, 1000.0, 300.0, 200.0)]);
        let mut out = Vec::new();
        write_tables(&mut out, &cells).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("| 64 | 1 | 500 | 100 | 200 | 20.0 | 900 | 1000 | 50 | 700 | 0.50 | 250 | 2.00 |"),
            "{text}"
        );
        assert!(text.contains("| 64 | 1 | 300 | 300 | 900 | 12.0 | 3 | 200 | 400 | 1.50 |"), "{text}");
        assert!(text.contains("| mean group | WAL bytes per event | raw inserts events/s (same groups) |"), "{text}");
        assert!(text.contains("\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"), "{text}");
        assert!(text.contains("\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"), "{text}");
    }
}
