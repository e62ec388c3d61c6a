//! The standard `process_*` families (resident memory, CPU seconds, open
//! file descriptors, start time), read from `/proc/self` at scrape time.
//! On other systems the families are absent.

use prometheus_client::registry::Registry;

/// Adds the process collector to `registry` (Linux only).
pub fn register(registry: &mut Registry) {
    #[cfg(target_os = "linux")]
    registry.register_collector(Box::new(linux::ProcessCollector));
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
}

#[cfg(target_os = "linux")]
mod linux {
    use procfs::process::{LimitValue, Process};
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::Unit;

    /// Reads `/proc/self` on every scrape; a file it cannot read leaves
    /// its families out rather than failing the scrape.
    #[derive(Debug)]
    pub struct ProcessCollector;

    fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, value: f64) -> std::fmt::Result {
        let metric = e.encode_descriptor(name, help, unit, MetricType::Gauge)?;
        ConstGauge::new(value).encode(metric)
    }

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let Ok(process) = Process::myself() else { return Ok(()) };
            let e = &mut encoder;
            let bytes = Some(&Unit::Bytes);
            let seconds = Some(&Unit::Seconds);
            if let Ok(stat) = process.stat() {
                let ticks = procfs::ticks_per_second() as f64;
                let cpu = (stat.utime + stat.stime) as f64 / ticks;
                let metric = e.encode_descriptor(
                    "process_cpu",
                    "User and system CPU time spent.",
                    seconds,
                    MetricType::Counter,
                )?;
                ConstCounter::new(cpu).encode(metric)?;
                let resident = stat.rss.saturating_mul(procfs::page_size()) as f64;
                gauge(e, "process_resident_memory", "Resident memory size.", bytes, resident)?;
                gauge(e, "process_virtual_memory", "Virtual memory size.", bytes, stat.vsize as f64)?;
                if let Ok(boot) = procfs::boot_time_secs() {
                    let start = boot as f64 + stat.starttime as f64 / ticks;
                    gauge(e, "process_start_time", "Start time of the process since the Unix epoch.", seconds, start)?;
                }
            }
            if let Ok(open) = process.fd_count() {
                gauge(e, "process_open_fds", "Open file descriptors.", None, open as f64)?;
            }
            if let Ok(limits) = process.limits() {
                if let LimitValue::Value(max) = limits.max_open_files.soft_limit {
                    gauge(e, "process_max_fds", "Most open file descriptors allowed.", None, max as f64)?;
                }
            }
            Ok(())
        }
    }
}
