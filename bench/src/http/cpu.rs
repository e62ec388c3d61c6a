//! CPU time of this process's threads, grouped by thread name, from
//! `/proc/self/task/*/stat`: where the cores went during a measured window
//! (server workers, client, the log's writer, sled's threads).

use std::collections::{BTreeMap, HashMap};

/// USER_HZ: the unit of `utime` and `stime`. 100 on every Linux this runs
/// on (reading it needs `sysconf`, i.e. libc and `unsafe`, which this
/// crate forbids).
const TICKS_PER_SECOND: f64 = 100.0;

/// Thread id → (name, CPU ticks so far).
pub type Snapshot = HashMap<u64, (String, u64)>;

/// Every thread's CPU ticks now. Empty where `/proc` is missing: the
/// breakdown is then simply not shown.
pub fn snapshot() -> Snapshot {
    let mut threads = Snapshot::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return threads };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|name| name.parse().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        if let Some(parsed) = parse_stat(&stat) {
            threads.insert(tid, parsed);
        }
    }
    threads
}

/// `pid (name) state ppid ... utime stime ...`: the name may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU seconds per thread name between two snapshots (threads that ended
/// in between are missing; threads born in between count from zero).
pub fn seconds_by_name(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    for (tid, (name, ticks)) in after {
        let earlier = before.get(tid).map_or(0, |(_, ticks)| *ticks);
        *by_name.entry(group(name)).or_insert(0.0) += ticks.saturating_sub(earlier) as f64 / TICKS_PER_SECOND;
    }
    by_name.retain(|_, seconds| *seconds > 0.0);
    by_name
}

/// sled names its IO threads `sled-io-N`; one group for them all.
fn group(name: &str) -> String {
    match name.strip_prefix("sled-io") {
        Some(_) => "sled-io".to_owned(),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_stat;

    #[test]
    fn names_with_spaces_and_parentheses_parse() {
        let stat = "42 (a (b) c) S 1 1 1 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(stat), Some(("a (b) c".to_owned(), 281)));
    }
}
