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
source "$(dirname "$0")/record-during.sh"
"$BIN" postgres --clients 64 --nodes 1 --repeat 1 --seconds 5 > "$OUT/run.txt" 2>&1 &
PID=$!
record_during "$PID" 0 "$OUT/perf0.data"
record_during "$PID" 1 "$OUT/perf1.data"
wait $PID
grep -E '^\[1/1\]' "$OUT/run.txt"
for database in 0 1; do
  if [ "$database" = 0 ]; then echo "== ledger appends"; else echo "== raw inserts, same groups"; fi
  perf report -i "$OUT/perf$database.data" --no-children --sort comm -q -g none 2>/dev/null | head -6
  perf report -i "$OUT/perf$database.data" --no-children --comm postgres --sort dso,sym -q -g none 2>/dev/null | head -25
done
