//! The tables: medians over the repeats, the ratio to the in-process
//! baseline, the target, and CPU per cycle by thread.

use std::collections::BTreeSet;
use std::io::Write;

use super::{Sample, Variant};
use crate::stats::{median, percentile, ratio, verdict};

const KINDS: [&str; 3] = ["start", "begin", "complete"];
const TARGET_CYCLES_PER_SECOND: f64 = 5_000.0;

impl Sample {
    pub fn cycles_per_second(&self) -> f64 {
        ratio(self.latencies.cycles as f64, self.seconds)
    }

    fn kind_percentile(&self, kind: usize, q: f64) -> f64 {
        let mut latencies = self.latencies.by_kind.get(kind).cloned().unwrap_or_default();
        percentile(&mut latencies, q)
    }

    fn all_percentile(&self, q: f64) -> f64 {
        let mut latencies: Vec<f64> = self.latencies.by_kind.iter().flatten().copied().collect();
        percentile(&mut latencies, q)
    }

    fn cpu_us_per_cycle(&self, group: &str) -> f64 {
        let seconds = self.cpu.get(group).copied().unwrap_or(0.0);
        ratio(seconds * 1e6, self.latencies.cycles as f64)
    }
}

/// One line per window on stderr, so a long run shows it is alive.
pub fn progress(repeat: usize, repeats: usize, s: &Sample) {
    eprintln!(
        "[{repeat}/{repeats}] {}: {:.0} cycles/s, p50 {:.0} µs, p99 {:.0} µs, {:.1} events/commit{}",
        s.variant.label(),
        s.cycles_per_second(),
        s.all_percentile(0.5),
        s.all_percentile(0.99),
        s.events_per_commit,
        s.projector_lag.map(|lag| format!(", projector {lag} events behind")).unwrap_or_default()
    );
}

fn of(samples: &[Sample], variant: Variant) -> Vec<&Sample> {
    samples.iter().filter(|s| s.variant == variant).collect()
}

fn med(samples: &[&Sample], field: impl Fn(&Sample) -> f64) -> f64 {
    median(samples.iter().map(|s| field(s)))
}

pub fn print(config: &str, samples: &[Sample]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "Full cycles (start → begin → complete), flush mode, {config}.\n")?;
    main_table(&mut out, samples)?;
    writeln!(out)?;
    cpu_table(&mut out, samples)?;
    writeln!(out)?;
    response_sizes(&mut out, samples)?;
    let http = med(&of(samples, Variant::Http), Sample::cycles_per_second);
    let verdict = verdict(http >= TARGET_CYCLES_PER_SECOND);
    writeln!(out, "target http >= {TARGET_CYCLES_PER_SECOND:.0} full cycles/s: {verdict} ({http:.0})")?;
    Ok(())
}

fn main_table(out: &mut impl Write, samples: &[Sample]) -> anyhow::Result<()> {
    writeln!(
        out,
        "| variant | cycles/s | start p50/p99 µs | begin p50/p99 µs | complete p50/p99 µs | all p50 µs | all p99 µs \
         | events/commit | projector lag (events) | ratio to ledger + projector |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let baseline = of(samples, Variant::LedgerProjector);
    for variant in Variant::ALL {
        let these = of(samples, variant);
        if these.is_empty() {
            continue;
        }
        let kinds: Vec<String> = (0..KINDS.len())
            .map(|k| {
                format!(
                    "{:.0} / {:.0}",
                    med(&these, |s| s.kind_percentile(k, 0.5)),
                    med(&these, |s| s.kind_percentile(k, 0.99))
                )
            })
            .collect();
        // Paired per repeat: each variant's window against the baseline's of the same repeat.
        let ratios = these.iter().zip(&baseline).map(|(s, b)| ratio(s.cycles_per_second(), b.cycles_per_second()));
        let lag = match these.iter().all(|s| s.projector_lag.is_some()) {
            true => format!("{:.0}", med(&these, |s| s.projector_lag.unwrap_or(0) as f64)),
            false => "–".to_owned(),
        };
        writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {:.0} | {:.0} | {:.1} | {lag} | {:.2} |",
            variant.label(),
            med(&these, Sample::cycles_per_second),
            kinds.first().map_or("", String::as_str),
            kinds.get(1).map_or("", String::as_str),
            kinds.get(2).map_or("", String::as_str),
            med(&these, |s| s.all_percentile(0.5)),
            med(&these, |s| s.all_percentile(0.99)),
            med(&these, |s| s.events_per_commit),
            median(ratios)
        )?;
    }
    Ok(())
}

/// Mean response body per request kind, from the http windows.
fn response_sizes(out: &mut impl Write, samples: &[Sample]) -> anyhow::Result<()> {
    let http = of(samples, Variant::Http);
    let Some(first) = http.first() else { return Ok(()) };
    let sizes: Vec<String> = KINDS
        .iter()
        .enumerate()
        .map(|(k, kind)| {
            let bytes = first.latencies.response_bytes.get(k).copied().unwrap_or(0);
            format!("{kind} {:.0} B", ratio(bytes as f64, first.latencies.cycles as f64))
        })
        .collect();
    writeln!(out, "Mean response body: {}.\n", sizes.join(", "))?;
    Ok(())
}

/// CPU µs per cycle by thread name: where the two cores went.
fn cpu_table(out: &mut impl Write, samples: &[Sample]) -> anyhow::Result<()> {
    let groups: BTreeSet<&String> = samples.iter().flat_map(|s| s.cpu.keys()).collect();
    if groups.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = groups.iter().map(|g| g.as_str()).collect();
    writeln!(out, "| CPU µs per cycle, by thread | {} | total |", names.join(" | "))?;
    writeln!(out, "|---|{}---:|", "---:|".repeat(names.len()))?;
    for variant in Variant::ALL {
        let these = of(samples, variant);
        if these.is_empty() {
            continue;
        }
        let cells: Vec<String> =
            names.iter().map(|g| format!("{:.0}", med(&these, |s| s.cpu_us_per_cycle(g)))).collect();
        let total = med(&these, |s| s.cpu.keys().map(|g| s.cpu_us_per_cycle(g)).sum());
        writeln!(out, "| {} | {} | {total:.0} |", variant.label(), cells.join(" | "))?;
    }
    Ok(())
}
