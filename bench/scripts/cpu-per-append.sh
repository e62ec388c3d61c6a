#!/usr/bin/env bash
# CPU per append on the PostgreSQL backend, by process: runs
# `opledger-bench postgres --clients 64 --nodes 1 --repeat 1 --seconds 5`,
# samples the whole machine with `perf record -a` for 3 s inside the
# measured appends run (its database is found by name), and prints the
# appends/s and, per process kind, the CPU time per append in µs (busy
# CPU of every core ÷ appends in the same second; `swapper` is idle time).
# Less noisy than appends/s on a machine that drifts: the CPU an append
# costs does not move with the machine's speed as much as its rate.
#
# usage: bench/scripts/cpu-per-append.sh [path/to/opledger-bench]
# (default: target/release/opledger-bench; build it with
# `cargo build --release -p opledger-bench`). Needs perf (Debian's
# linux-perf) and the PostgreSQL server binaries the bench uses.
set -euo pipefail
BIN=${1:-target/release/opledger-bench}
OUT=$(mktemp -d)
source "$(dirname "$0")/record-during.sh"
"$BIN" postgres --clients 64 --nodes 1 --repeat 1 --seconds 5 > "$OUT/run.txt" 2>&1 &
PID=$!
record_during "$PID" 0 "$OUT/perf.data"
wait $PID
set -- $(grep -E '^\[1/1\]' "$OUT/run.txt" | sed -E 's/.*appends ([0-9]+)\/s.*raw ([0-9]+)\/s.*/\1 \2/')
perf report -i "$OUT/perf.data" --no-children --sort comm -q -g none 2>/dev/null | awk -v a="$1" -v r="$2" -v cores="$(nproc)" '
  { p = $1; sub("%", "", p); c = $2
    if (c ~ /^opledger/) c = "log"; if (c ~ /^tokio/) c = "clients"; if (c ~ /^kworker/) c = "kworker"
    v[c] += p }
  END { printf "appends %d/s, raw same groups %d/s (%.2f) | busy µs per append", a, r, a / r
        busy = 0; for (k in v) if (k != "swapper") busy += v[k]
        printf " %.1f:", busy / 100 * cores * 1e6 / a
        for (k in v) if (v[k] > 1) printf " %s %.1f", k, v[k] / 100 * cores * 1e6 / a
        printf "\n" }'
rm -rf "$OUT"
