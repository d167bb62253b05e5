#!/usr/bin/env bash
# Scale-out through PostgreSQL: whole-run rate of 1 and 3 distributors (`taskdist run --store`),
# each with 16 simulated targets of its own (`taskdist sim` processes on 127.8X.0.2...), on one
# local PostgreSQL, beside a local-file run (`--out`) of one distributor on 16 targets; and the
# database round trips per variant that the runs report.
#
# Two cases:
#   target  the simulated targets run at --speed SPEED (default 20x real time), so a variant
#           takes tens of milliseconds on its target: the rate is bound by the targets, which
#           is what more distributors (with more targets) should multiply;
#   cpu     the simulated targets run as fast as they can: the rate is bound by the CPU that
#           the distributors, the simulators and the database share on this machine.
# Each configuration runs --runs times, alternating, in a fresh database; medians are printed.
# Wall time: from the start of the first distributor to the end of the last. CPU: user+system
# of the distributors only (the simulators and PostgreSQL come on top).
#
# Usage: scripts/bench-cluster.sh [--variants N] [--cpu-variants N] [--runs R] [--speed X]
#                                 [--skip-build]
# Needs a PostgreSQL server where the role in TASKDIST_BENCH_PG may create databases (default
# postgres://taskdist:taskdist@127.0.0.1:5432/postgres, the role .ci/run creates) and psql.
# TASKDIST_BIN=PATH uses that binary. Only loopback is contacted.
set -euo pipefail
export LC_ALL=C

VARIANTS=6000
CPU_VARIANTS=20000
RUNS=3
SPEED=20
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --variants) VARIANTS="$2"; shift ;;
        --cpu-variants) CPU_VARIANTS="$2"; shift ;;
        --runs) RUNS="$2"; shift ;;
        --speed) SPEED="$2"; shift ;;
        --skip-build) BUILD=0 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
if [ -n "${TASKDIST_BIN:-}" ]; then
    BIN=$TASKDIST_BIN
else
    [ "$BUILD" = 1 ] && cargo build --release --quiet
    BIN=${CARGO_TARGET_DIR:-target}/release/taskdist
fi
ADMIN=${TASKDIST_BENCH_PG:-postgres://taskdist:taskdist@127.0.0.1:5432/postgres}
BASE=${ADMIN%/*}
command -v psql >/dev/null || { echo "bench-cluster: psql not found" >&2; exit 1; }
psql "$ADMIN" -qtAc 'SELECT 1' >/dev/null || { echo "bench-cluster: no PostgreSQL at $ADMIN" >&2; exit 1; }

WORK=$(mktemp -d)
SIMS=()
DBS=()
cleanup() {
    for p in "${SIMS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for d in "${DBS[@]}"; do psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# start_sims I SPEED: 16 simulated targets on 127.8I.0.2..17; their addresses in $WORK/simI.addrs.
start_sims() {
    local i=$1 speed=$2 f=$WORK/sim$1.out
    "$BIN" sim -q --port 0 --first "127.8$i.0.2" -n 16 --speed "$speed" --duration-s 3600 >"$f" 2>/dev/null &
    SIMS+=($!)
    for _ in $(seq 100); do
        [ "$(grep -c ':' "$f" 2>/dev/null || true)" -ge 16 ] && break
        sleep 0.1
    done
    awk '{print $1}' "$f" | grep ':' | head -16 >"$WORK/sim$i.addrs"
}

stop_sims() {
    for p in "${SIMS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    SIMS=()
}

# One measurement: run_config NAME N DISTRIBUTORS(0 = local file run). Prints
# "wall cpu roundtrips" on stdout; checks the store's count.
run_config() {
    local name=$1 n=$2 k=$3 t0 t1 cpu=0 trips=0 url db i
    if [ "$k" = 0 ]; then
        rm -rf "$WORK/out"
        t0=$(date +%s.%N)
        /usr/bin/time -f '%U %S' -o "$WORK/time0" \
            "$BIN" -q run huge --limit "$n" --probe tcp --out "$WORK/out" $(cat "$WORK/sim1.addrs") >/dev/null 2>"$WORK/err0"
        t1=$(date +%s.%N)
        cpu=$(awk '{print $1 + $2}' "$WORK/time0")
        local rows
        rows=$(($(wc -l <"$WORK/out/variants.csv") - 1))
        [ "$rows" = "$n" ] || { echo "bench-cluster: local run wrote $rows of $n variants" >&2; exit 1; }
        echo "$t0 $t1 $cpu 0" | awk '{printf "%.3f %.3f %d\n", $2 - $1, $3, $4}'
        return
    fi
    db="bench_cluster_$$_${name}_$RANDOM"
    DBS+=("$db")
    psql "$ADMIN" -qc "CREATE DATABASE $db" >/dev/null
    url="$BASE/$db"
    t0=$(date +%s.%N)
    local pids=()
    for i in $(seq "$k"); do
        /usr/bin/time -f '%U %S' -o "$WORK/time$i" \
            "$BIN" run huge --limit "$n" --store "$url" --probe tcp $(cat "$WORK/sim$i.addrs") \
            >"$WORK/out$i" 2>"$WORK/err$i" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do
        wait "$p" || { echo "bench-cluster: a distributor failed:" >&2; tail -n 5 "$WORK"/err* >&2; exit 1; }
    done
    t1=$(date +%s.%N)
    for i in $(seq "$k"); do
        cpu=$(awk -v c="$cpu" '{print c + $1 + $2}' "$WORK/time$i")
        trips=$((trips + $(grep -o '[0-9]* database round trips' "$WORK/err$i" | awk '{print $1}')))
    done
    local id count
    id=$(awk '/^experiment / {print $2}' "$WORK/out1")
    count=$(psql "$url" -qtAc "SELECT count(*) FROM taskdist.variants WHERE experiment = '$id'")
    [ "$count" = "$n" ] || { echo "bench-cluster: $count of $n variants in the store" >&2; exit 1; }
    psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    echo "$t0 $t1 $cpu $trips" | awk '{printf "%.3f %.3f %d\n", $2 - $1, $3, $4}'
}

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

echo "taskdist: $("$BIN" --version)  $(psql "$ADMIN" -qtAc 'SHOW server_version')"
echo "machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

bench_case() {
    local case=$1 n=$2 speed=$3
    echo
    echo "== $case-bound: $n variants of 'huge', simulated targets at speed $speed, $RUNS runs each (medians)"
    start_sims 1 "$speed"; start_sims 2 "$speed"; start_sims 3 "$speed"
    : >"$WORK/results"
    for r in $(seq "$RUNS"); do
        for k in 0 1 3; do
            echo "$k $(run_config "$case$k" "$n" "$k")" >>"$WORK/results"
        done
    done
    stop_sims
    printf '%-28s %9s %10s %9s %12s %13s %9s\n' config variants "wall s" "var/s" "CPU s" "round trips" "trips/var"
    local base=""
    for k in 0 1 3; do
        local wall cpu trips label rate
        wall=$(awk -v k="$k" '$1 == k {print $2}' "$WORK/results" | median)
        cpu=$(awk -v k="$k" '$1 == k {print $3}' "$WORK/results" | median)
        trips=$(awk -v k="$k" '$1 == k {print $4}' "$WORK/results" | median)
        rate=$(awk -v n="$n" -v w="$wall" 'BEGIN {printf "%.0f", n / w}')
        case $k in
            0) label="local files, 1 x 16 targets" ;;
            1) label="store, 1 x 16 targets" ;;
            3) label="store, 3 x 16 targets" ;;
        esac
        printf '%-28s %9d %10.2f %9d %12.2f %13d %9.3f\n' "$label" "$n" "$wall" "$rate" "$cpu" "$trips" \
            "$(awk -v t="$trips" -v n="$n" 'BEGIN {print t / n}')"
        [ "$k" = 1 ] && base=$wall
        if [ "$k" = 3 ]; then
            echo "3 distributors vs 1 (whole-run rate): $(awk -v a="$base" -v b="$wall" 'BEGIN {printf "%.2f", a / b}')x"
        fi
    done
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
}

bench_case target "$VARIANTS" "$SPEED"
bench_case cpu "$CPU_VARIANTS" fast
