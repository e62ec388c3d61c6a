//! Peak RSS of a rebuild, read from the kernel while the child runs.
//!
//! The rebuild runs in a child process (`opledger-bench projections
//! --rebuild-only`: what `opledger rebuild --data DIR` runs), so its peak
//! is its own and not this bench's (which holds a page cache and every
//! sample). So does a server's start on caught-up read models
//! (`--open-only`: the ledger, the projector, one run-list page). The peak is `VmHWM` of `/proc/PID/status`, polled until
//! the child exits: the high-water mark only grows, so the last reading
//! before exit is the peak up to the last few milliseconds. The baseline is
//! the same binary scanning and decoding the log, nothing else.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const POLL: Duration = Duration::from_millis(5);

/// Peak RSS (KiB) and wall seconds of one child.
#[derive(Debug, Clone, Copy)]
pub struct Peak {
    pub kib: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct RssResults {
    pub rebuild: Peak,
    pub open: Peak,
    pub scan: Peak,
}

pub fn measure(data: &Path, events: u64, cache_mib: u64) -> anyhow::Result<RssResults> {
    let child = |mode: &str| -> anyhow::Result<Peak> {
        let exe = std::env::current_exe().context("finding this binary")?;
        let mut command = Command::new(exe);
        command.args(["projections", mode, "--events"]).arg(events.to_string()).arg("--dir").arg(data);
        command.arg("--cache-mib").arg(cache_mib.to_string());
        peak_of(command)
    };
    eprintln!("peak RSS: a rebuild in a child");
    let rebuild = child("--rebuild-only")?;
    eprintln!("peak RSS: rebuild {} MiB; a server's open in a child", rebuild.kib / 1024);
    let open = child("--open-only")?;
    eprintln!("peak RSS: open {} MiB; the raw scan in a child", open.kib / 1024);
    let scan = child("--scan-only")?;
    Ok(RssResults { rebuild, open, scan })
}

/// A child that met the store still locked by this process's last handle
/// (sled lets go a moment after the drop) failed before doing any work; it
/// is run again.
fn peak_of(mut command: Command) -> anyhow::Result<Peak> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match run_child(&mut command)? {
            Ok(peak) => return Ok(peak),
            Err(stderr) if stderr.contains("in use") && Instant::now() < deadline => std::thread::sleep(POLL * 10),
            Err(stderr) => bail!("{command:?} failed: {}", stderr.trim()),
        }
    }
}

/// The child's peak, or its stderr when it failed.
fn run_child(command: &mut Command) -> anyhow::Result<Result<Peak, String>> {
    let started = Instant::now();
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut kib = 0;
    let status = loop {
        if let Some(peak) = std::fs::read_to_string(&status_path).ok().as_deref().and_then(vm_hwm_kib) {
            kib = kib.max(peak);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(POLL);
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let mut stderr = format!("({status}) ");
        if let Some(mut pipe) = child.stderr.take() {
            pipe.read_to_string(&mut stderr)?;
        }
        return Ok(Err(stderr));
    }
    if kib == 0 {
        bail!("no VmHWM in {status_path}: is /proc mounted?");
    }
    Ok(Ok(Peak { kib, seconds }))
}

/// `VmHWM:   123456 kB` → 123456.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
