#!/usr/bin/env bash
# Benchmark of `taskdist report`: a simulated run of N variants of the `huge` spec (3 tasks x 2
# jobs: 15 events per variant, so 15 N events) on 16 built-in simulated targets (loopback
# only), then the report over it, timed with /usr/bin/time -v (wall, CPU, peak RSS).
#
#   scripts/bench-report.sh [N] [DIR]      default N = 1000000, DIR = /tmp/taskdist-bench-report
#
# The run is reused when DIR/run already holds N variants.
set -euo pipefail
N=${1:-1000000}
DIR=${2:-/tmp/taskdist-bench-report}
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --bin taskdist >&2
BIN=$TARGET/release/taskdist
mkdir -p "$DIR"
have=0
if [ -f "$DIR/run/variants.csv" ]; then
    have=$(($(wc -l <"$DIR/run/variants.csv") - 1))
fi
if [ "$have" != "$N" ]; then
    rm -rf "$DIR/run"
    echo "generating $N variants in $DIR/run ..." >&2
    /usr/bin/time -f "run: %e s wall, %M KB max RSS" \
        "$BIN" -q run huge --simulate 16 --limit "$N" --handler csv --out "$DIR/run"
fi
events=$(($(wc -l <"$DIR/run/events.csv") - 1))
size=$(du -sh "$DIR/run" | cut -f1)
echo "input: $N variants, $events events, $size on disk"
/usr/bin/time -v "$BIN" -q report "$DIR/run" --out "$DIR/report.html" 2>"$DIR/time.txt" >/dev/null
wall=$(grep 'Elapsed (wall clock)' "$DIR/time.txt" | awk '{print $NF}')
user=$(grep 'User time' "$DIR/time.txt" | awk '{print $NF}')
sys=$(grep 'System time' "$DIR/time.txt" | awk '{print $NF}')
rss=$(grep 'Maximum resident' "$DIR/time.txt" | awk '{print $NF}')
cpu=$(echo "$user + $sys" | bc)
echo "report: wall $wall, CPU $cpu s (user $user, sys $sys), max RSS $rss KB"
echo "report: $(du -h "$DIR/report.html" | cut -f1) of HTML in $DIR/report.html"
