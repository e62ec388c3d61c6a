#!/usr/bin/env bash
# Where PostgreSQL's CPU goes, the ledger's appends against the raw
# same-groups baseline, in one run: runs `opledger-bench postgres
# --clients 64 --nodes 1 --repeat 1 --seconds 5`, samples the whole
# machine with `perf record -a` for 3 s inside the appends run (the run's
# first database) and again inside the raw inserts run (its second), and
# prints, for each, the CPU share by process and PostgreSQL's symbols.
# PostgreSQL's CPU per append (or per raw row) is its share × cores ÷ the
# run's rate.
#
# usage: bench/scripts/postgres-profile.sh [path/to/opledger-bench] [output dir]
# (default: target/release/opledger-bench, a temporary directory). Needs
# perf (Debian's linux-perf) and the PostgreSQL server binaries the bench
# uses.
set -euo pipefail
BIN=${1:-target/release/opledger-bench}
OUT=${2:-$(mktemp -d)}
mkdir -p "$OUT"
"$BIN" postgres --clients 64 --nodes 1 --repeat 1 --seconds 5 > "$OUT/run.txt" 2>&1 &
PID=$!
for database in 0 1; do
  for _ in $(seq 1 1200); do
    if pgrep -f "opledger_bench_${PID}_${database}" >/dev/null; then break; fi
    sleep 0.05
  done
  sleep 1.5
  perf record -a -e cpu-clock -F 2000 -o "$OUT/perf$database.data" -- sleep 3 >/dev/null 2>&1
done
wait $PID
grep -E '^\[1/1\]' "$OUT/run.txt"
for database in 0 1; do
  if [ "$database" = 0 ]; then echo "== ledger appends"; else echo "== raw inserts, same groups"; fi
  perf report -i "$OUT/perf$database.data" --no-children --sort comm -q -g none 2>/dev/null | head -6
  perf report -i "$OUT/perf$database.data" --no-children --comm postgres --sort dso,sym -q -g none 2>/dev/null | head -25
done
