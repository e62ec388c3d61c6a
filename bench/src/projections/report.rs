//! The markdown tables and the targets, from the medians of the repeats.

use std::io::Write;

use super::generate::LogInfo;
use super::list::{Figure, Round, KINDS};
use super::{median_of, Results};
use crate::stats::{ratio, verdict};

type Out<'a> = std::io::StdoutLock<'a>;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

pub fn print(info: &LogInfo, results: &Results) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    log_line(&mut out, info, results)?;
    rebuild_table(&mut out, results)?;
    list_table(&mut out, results)?;
    restart_table(&mut out, results)?;
    rss_table(&mut out, results)?;
    Ok(())
}

fn log_line(out: &mut Out<'_>, info: &LogInfo, results: &Results) -> anyhow::Result<()> {
    let made = match info.reused {
        true => format!("reused (generated earlier in {:.1} s)", info.generated_seconds),
        false => format!(
            "generated in {:.1} s ({:.0} events/s); first Projector::open (from an empty read-model file) {:.1} s",
            info.generated_seconds,
            ratio(info.events as f64, info.generated_seconds),
            results.first_open_seconds
        ),
    };
    let runs = results.list.counts.total;
    writeln!(
        out,
        "Log: {} events, {runs} runs in Monitoring; {made}. The log's sled page cache: {} MiB.",
        info.events, results.cache_mib
    )?;
    let outcomes: Vec<String> = results.list.counts.by_outcome.iter().map(|(k, v)| format!("{k} {v}")).collect();
    writeln!(out, "Runs by outcome: {}.", outcomes.join(", "))?;
    let per_event = |bytes: u64| bytes as f64 / info.events.max(1) as f64 / 1024.0;
    writeln!(out, "| on disk | log (sled) GiB | KiB/event | read models (SQLite) GiB | KiB/event | ratio |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    let moments = ["as found", "once projected", "at the end, after the rebuilds"];
    for (index, moment) in moments.iter().enumerate() {
        let (log, projections) = (results.log_bytes[index], results.projections_bytes[index]);
        writeln!(
            out,
            "| {moment} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            log as f64 / GIB,
            per_event(log),
            projections as f64 / GIB,
            per_event(projections),
            ratio(projections as f64, log as f64)
        )?;
    }
    let (log, projections) = (results.log_bytes[1], results.projections_bytes[1]);
    writeln!(
        out,
        "\ntarget read models on disk <= the log's own size: {} ({:.2}x)\n",
        verdict(projections <= log),
        ratio(projections as f64, log as f64)
    )?;
    Ok(())
}

fn rebuild_table(out: &mut Out<'_>, results: &Results) -> anyhow::Result<()> {
    let samples = &results.rebuild;
    if samples.is_empty() {
        writeln!(out, "full rebuild: not measured (--no-rebuild)\n")?;
        return Ok(());
    }
    let rebuild = median_of(samples, |s| s.rebuild_rate());
    let scan = median_of(samples, |s| s.scan_rate());
    let paired = median_of(samples, |s| s.ratio());
    writeln!(out, "| figure (median of {}) | opledger | baseline | ratio |", results.repeat)?;
    writeln!(out, "|---|---:|---:|---:|")?;
    writeln!(
        out,
        "| full rebuild, all projections, events/s (s) vs raw scan + decode | {rebuild:.0} ({:.1} s) | {scan:.0} ({:.1} s) | {paired:.2} |",
        median_of(samples, |s| s.rebuild_seconds),
        median_of(samples, |s| s.scan_seconds)
    )?;
    let scan_seconds = median_of(samples, |s| s.scan_seconds);
    for alone in &results.breakdown {
        writeln!(
            out,
            "| {} rebuilt alone (once), s; minus the scan; rows | {:.1} | {:.1} | {} |",
            alone.name,
            alone.seconds,
            alone.seconds - scan_seconds,
            alone.rows
        )?;
    }
    writeln!(out, "\ntarget rebuild >= 0.5x raw scan: {} ({paired:.2})\n", verdict(paired >= 0.5))?;
    Ok(())
}

fn list_table(out: &mut Out<'_>, results: &Results) -> anyhow::Result<()> {
    let rounds = &results.list.rounds;
    writeln!(
        out,
        "| run list, 50 per page (median of {} repeats) | pages | p50 µs | p99 µs | runs/page |",
        rounds.len()
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    for (index, kind) in KINDS.iter().enumerate() {
        let of: Vec<&Figure> = rounds.iter().filter_map(|r| r.kinds.get(index)).collect();
        figure_row(out, &format!("filter: {kind}"), &of)?;
    }
    let pick = |field: fn(&Round) -> &Figure| -> Vec<&Figure> { rounds.iter().map(field).collect() };
    figure_row(out, "all filters", &pick(|r| &r.mix))?;
    figure_row(out, "baseline: one raw SQLite get of a run document", &pick(|r| &r.one_get))?;
    figure_row(out, "baseline: 50 raw SQLite gets of run documents", &pick(|r| &r.page_of_gets))?;
    let p99 = median_of(rounds, |r| r.mix.p99_us);
    let worst = rounds.iter().flat_map(|r| r.kinds.iter()).map(|f| f.p99_us).fold(0.0, f64::max);
    writeln!(
        out,
        "\ntarget run-list p99 <= 2 ms: {} ({:.2} ms over all filters; worst filter p99 in any repeat {:.2} ms)\n",
        verdict(p99 <= 2000.0),
        p99 / 1e3,
        worst / 1e3
    )?;
    Ok(())
}

fn figure_row(out: &mut Out<'_>, label: &str, of: &[&Figure]) -> anyhow::Result<()> {
    writeln!(
        out,
        "| {label} | {:.0} | {:.0} | {:.0} | {:.1} |",
        median_of(of, |f| f.samples as f64),
        median_of(of, |f| f.p50_us),
        median_of(of, |f| f.p99_us),
        median_of(of, |f| f.mean_runs)
    )?;
    Ok(())
}

fn restart_table(out: &mut Out<'_>, results: &Results) -> anyhow::Result<()> {
    let first = results.restart.first_sled_open_ms;
    let s = &results.restart.rounds;
    let ready = median_of(s, |r| r.ready_ms());
    let sled = median_of(s, |r| r.sled_open_ms);
    writeln!(out, "| restart step | ms |")?;
    writeln!(out, "|---|---:|")?;
    writeln!(out, "| raw sled open, the first after the writes (once) | {first:.0} |")?;
    writeln!(out, "| baseline: raw sled open after that (median of {}) | {sled:.0} |", s.len())?;
    writeln!(out, "| Log::open | {:.0} |", median_of(s, |r| r.log_open_ms))?;
    writeln!(
        out,
        "| Ledger::over (snapshot: authority + tracked runs, then the tail) | {:.0} |",
        median_of(s, |r| r.over_ms)
    )?;
    writeln!(out, "| Ledger::open (Log::open + Ledger::over) | {:.0} |", median_of(s, |r| r.ledger_open_ms()))?;
    writeln!(out, "| Projector::open (read models caught up) | {:.0} |", median_of(s, |r| r.projector_open_ms))?;
    writeln!(out, "| restart to ready (Ledger::open + Projector::open) | {ready:.0} |")?;
    // The first restart after writes pays sled's recovery on top of what the
    // ledger adds to an open without it.
    let after_writes = first + ready - sled;
    writeln!(
        out,
        "\ntarget restart-to-ready <= 1 s: {} ({:.2} s, {:.1}x the raw sled open; \
         the first restart after the writes: about {:.1} s, {})\n",
        verdict(ready <= 1000.0),
        ready / 1e3,
        ratio(ready, sled),
        after_writes / 1e3,
        verdict(after_writes <= 1000.0)
    )?;
    Ok(())
}

fn rss_table(out: &mut Out<'_>, results: &Results) -> anyhow::Result<()> {
    let Some(rss) = results.rss else {
        writeln!(out, "peak RSS: not measured (--no-rss)")?;
        return Ok(());
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    writeln!(out, "| child process (once) | peak RSS MiB | seconds |")?;
    writeln!(out, "|---|---:|---:|")?;
    writeln!(
        out,
        "| a rebuild (as `opledger rebuild --data DIR`) | {:.0} | {:.1} |",
        mib(rss.rebuild.kib),
        rss.rebuild.seconds
    )?;
    writeln!(
        out,
        "| a server's open on caught-up read models, one page | {:.0} | {:.1} |",
        mib(rss.open.kib),
        rss.open.seconds
    )?;
    writeln!(
        out,
        "| baseline: raw scan + decode of the same log | {:.0} | {:.1} |",
        mib(rss.scan.kib),
        rss.scan.seconds
    )?;
    writeln!(
        out,
        "\ntarget rebuild peak RSS <= 256 MiB: {} ({:.0} MiB)",
        verdict(mib(rss.rebuild.kib) <= 256.0),
        mib(rss.rebuild.kib)
    )?;
    Ok(())
}
