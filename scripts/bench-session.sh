#!/usr/bin/env bash
# Per-task-set overhead of `taskdist run` against external simulated targets (`taskdist sim`
# in a separate process, reached over loopback like real targets over the network).
#
# Scene 1, the protocol floor: one real-time v3 target (CLEAR blocks 1 s, jobs run in real
# time) and a 2-task `hey` set with one job each (period 100 ms). Its floor is one CLEAR plus
# the set's own run time: 1000 ms + 100 ms + the 1 ms job. Prints the measured wall time per
# task-set and its ratio to that floor.
#
# Scene 2, throughput on v2: four fast v2 targets (no CLEAR block, virtual time) and the
# catalog's `huge` spec (3 tasks). Prints task-sets/s (wall clock of the whole run, from metrics.json).
#
# Every address is on 127.0.0.0/8. Usage: scripts/bench-session.sh [--sets N] [--v2-sets N]
# (TASKDIST_BIN=PATH skips the release build and uses that binary).
set -euo pipefail
export LC_ALL=C

SETS=10
V2_SETS=4000
while [ $# -gt 0 ]; do
    case "$1" in
        --sets) SETS="$2"; shift ;;
        --v2-sets) V2_SETS="$2"; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
# TASKDIST_BIN=path uses an existing binary instead of building one.
if [ -n "${TASKDIST_BIN:-}" ]; then
    BIN=$TASKDIST_BIN
else
    cargo build --release --quiet
    BIN=target/release/taskdist
fi
WORK=$(mktemp -d)
SIM_PID=
cleanup() {
    if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Start `taskdist sim` with the given flags; sets SIM_PID and PORT.
start_sim() {
    "$BIN" -q sim --port 0 "$@" >"$WORK/sim.out" 2>"$WORK/sim.err" &
    SIM_PID=$!
    for _ in $(seq 1 100); do
        if [ -s "$WORK/sim.out" ]; then break; fi
        sleep 0.1
    done
    PORT=$(head -n1 "$WORK/sim.out" | sed 's/.*://; s/ .*//')
    [ -n "$PORT" ] || { echo "taskdist sim did not start" >&2; cat "$WORK/sim.err" >&2; exit 1; }
}

stop_sim() {
    kill "$SIM_PID" 2>/dev/null || true
    wait "$SIM_PID" 2>/dev/null || true
    SIM_PID=
}

metric() { # metric FILE KEY: a top-level number of metrics.json
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

cat >"$WORK/floor.toml" <<'EOF'
name = "floor"
description = "two hey tasks, one job each, period 100 ms (100 priority variants)"
seed = 1

[[task]]
pkg = "hey"
period_ms = 100
numberofjobs = 1
priority = { from = 1, to = 100 }

[[task]]
pkg = "hey"
period_ms = 100
numberofjobs = 1
priority = 2
EOF

echo "== scene 1: one real-time v3 target, $SETS task-sets of 2 hey tasks x 1 job (period 100 ms)"
start_sim -n 1 --speed realtime --dialect v3
start=$(date +%s.%N)
"$BIN" -q run "$WORK/floor.toml" "127.0.0.2:$PORT" --probe tcp --limit "$SETS" \
    --handler csv --out "$WORK/floor"
end=$(date +%s.%N)
stop_sim
python3 - "$start" "$end" "$SETS" "$WORK/floor/metrics.json" <<'EOF'
import json, sys
start, end, sets = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
m = json.load(open(sys.argv[4]))
t = m["targets"][0]
per_set = t["busy_s"] / t["completed"]
floor = 1.000 + 0.100 + 0.001
print(f"wall time of the whole command: {end - start:.2f} s for {sets} task-sets")
print(f"per task-set (target busy time / completed): {per_set * 1000:.0f} ms")
print(f"floor (one CLEAR 1000 ms + run 101 ms): {floor * 1000:.0f} ms; ratio {per_set / floor:.3f}")
EOF

echo "== scene 2: four fast v2 targets, $V2_SETS task-sets of the catalog spec huge"
start_sim -n 4 --dialect v2
"$BIN" -q run huge 127.0.0.2:"$PORT" 127.0.0.3:"$PORT" 127.0.0.4:"$PORT" 127.0.0.5:"$PORT" \
    --dialect v2 --probe tcp --limit "$V2_SETS" --handler csv --out "$WORK/v2"
stop_sim
rate=$(metric "$WORK/v2/metrics.json" rate_per_s)
printf 'v2: %.0f task-sets/s (wall clock, outcomes / elapsed of the run)\n' "$rate"
