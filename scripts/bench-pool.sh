#!/usr/bin/env bash
# The shared pool's hot paths, all on 127.0.0.0/8:
#
# 1. Scheduler decisions per second with 1,000 targets x 100 experiments (10 priority
#    levels, half the experiments requiring a board label), per strategy: the scheduler alone,
#    one thread, wall time.
# 2. Strategies with one slow target: a 2,000-variant experiment on 7 simulated targets plus one
#    5x slower (simulated time at 200x and 40x real time); wall time of the whole experiment.
# 3. Whole-run rate of `taskdist run` on 64 fast simulated targets: one experiment of N
#    variants, then an experiments file with 10 experiments of N/10 variants each (equal
#    priority); variants/s from wall time, and the ratio (aim: at least 80 %).
#
# Usage: scripts/bench-pool.sh [--variants N] [--skip-build]
# (TASKDIST_BIN=PATH uses that binary for part 3).
set -euo pipefail
export LC_ALL=C

VARIANTS=40000
while [ $# -gt 0 ]; do
    case "$1" in
        --variants) VARIANTS="$2"; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
echo "== 1. scheduler decisions (cargo test --release --lib decisions_per_second)"
cargo test --release --quiet -p taskdist --lib decisions_per_second -- --ignored --nocapture 2>/dev/null \
    | grep '^scheduler'

echo "== 2. strategies with one 5x slower target (cargo test --release --test pool strategies_with_a_slow_target)"
cargo test --release --quiet -p taskdist --test pool strategies_with_a_slow_target -- --ignored --nocapture 2>/dev/null \
    | grep '^strategy'

if [ -n "${TASKDIST_BIN:-}" ]; then
    BIN=$TASKDIST_BIN
else
    cargo build --release --quiet
    BIN=$PWD/target/release/taskdist
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

spec() { # name variants
    cat <<EOF
name = "$1"
description = "bench: two short tasks, $2 period variants"

[[task]]
pkg = "hey"
period_ms = { from = 100, to = $((100 + $2 - 1)) }
numberofjobs = 3
priority = 3

[[task]]
pkg = "hey"
period_ms = 50
offset_ms = 10
numberofjobs = 2
priority = 5
EOF
}

spec one "$VARIANTS" >"$WORK/one.toml"
: >"$WORK/ten.toml"
for i in $(seq 1 10); do
    spec "e$i" $((VARIANTS / 10)) >"$WORK/e$i.toml"
    printf '[[experiment]]\nspec = "e%d.toml"\n\n' "$i" >>"$WORK/ten.toml"
done

# Prints "WALL_S CPU_S" of one run (bash's time: real, and user + sys of the process).
timed() {
    local TIMEFORMAT='%R %U %S'
    { time "$BIN" -q run "$@" --simulate 64 --handler csv >/dev/null 2>"$WORK/err"; } 2>"$WORK/time"
    awk '{ printf "%s %.2f\n", $1, $2 + $3 }' "$WORK/time"
}

echo "== 3. whole run on 64 simulated targets ($VARIANTS variants; taskdist run --simulate 64 --handler csv)"
read -r w1 c1 < <(cd "$WORK" && timed one.toml --out r1)
read -r w10 c10 < <(cd "$WORK" && timed ten.toml --out r10)
awk -v n="$VARIANTS" -v w1="$w1" -v c1="$c1" -v w10="$w10" -v c10="$c10" 'BEGIN {
    printf "one experiment:   %6.2f s wall, %6.2f s CPU, %8.0f variants/s\n", w1, c1, n / w1
    printf "10 experiments:   %6.2f s wall, %6.2f s CPU, %8.0f variants/s\n", w10, c10, n / w10
    printf "10 vs 1:          %6.1f %% of the single-experiment rate\n", 100 * w1 / w10
}'
