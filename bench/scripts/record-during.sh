# Sourced by the profiling scripts: record_during PID DATABASE FILE waits
# until the `opledger-bench` run PID has created its database number
# DATABASE (`opledger_bench_PID_DATABASE`; the runs of a repeat each get
# the next, in order), lets it warm up for 1.5 s, and samples the whole
# machine with `perf record -a` for 3 s into FILE.
record_during() {
  local pid=$1 database=$2 file=$3
  for _ in $(seq 1 1200); do
    if pgrep -f "opledger_bench_${pid}_${database}" >/dev/null; then break; fi
    sleep 0.05
  done
  sleep 1.5
  perf record -a -e cpu-clock -F 2000 -o "$file" -- sleep 3 >/dev/null 2>&1
}
