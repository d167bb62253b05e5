#!/usr/bin/env bash
# How fast the continuous monitor (`taskdist discover --watch`, the path `taskdist run`, the
# pool and the service use) notices that a watched host went down and that it came back.
#
# A network namespace joined by a veth pair holds one host (198.18.77.2 by default); the script
# removes its address (the host falls silent) and adds it again, --cycles times, and prints the
# time from each change to the monitor's "down"/"up" line. Runs the monitor once with its
# default (adaptive) re-check timeouts and once with `--timeout-ms 1000` (the fixed 1 s the
# re-checks used before). Traffic goes only to the namespace's /29; the namespace, veth pair and
# routes are removed on exit (routes first). Needs root.
#
# Usage: scripts/bench-recheck.sh [--cycles N] [--taskdist PATH] [--net 77]
set -euo pipefail
export LC_ALL=C

CYCLES=5
TASKDIST=""
NET=77
while [ $# -gt 0 ]; do
    case "$1" in
        --cycles) CYCLES="$2"; shift ;;
        --taskdist) TASKDIST="$2"; shift ;;
        --net) NET="$2"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$(id -u)" != 0 ]; then
    echo "bench-recheck: needs root (network namespaces, raw ICMP sockets)" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "$TASKDIST" ]; then
    TASKDIST="${CARGO_TARGET_DIR:-$ROOT/target}/debug/taskdist"
fi
[ -x "$TASKDIST" ] || { echo "no taskdist binary at $TASKDIST (cargo build --bin taskdist)" >&2; exit 2; }

PREFIX="198.18.$NET"
if [ -n "$(ip -4 route show root "$PREFIX.0/24")$(ip -4 addr show to "$PREFIX.0/24")" ]; then
    echo "$PREFIX.0/24 is in use here; pick another --net" >&2
    exit 2
fi
NS="tdrc$$"
VA="tdra$$"
VB="tdrb$$"
HOST="$PREFIX.2"
MON_PID=""
cleanup() {
    [ -n "$MON_PID" ] && kill "$MON_PID" 2>/dev/null || true
    ip route flush root "$PREFIX.0/24" dev "$VA" 2>/dev/null || true
    ip addr flush dev "$VA" 2>/dev/null || true
    ip link del "$VA" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
ip netns add "$NS"
ip link add "$VA" type veth peer name "$VB" netns "$NS"
ip addr add "$PREFIX.1/24" dev "$VA"
ip link set "$VA" up
ip -n "$NS" link set lo up
ip -n "$NS" link set "$VB" up
ip -n "$NS" addr add "$HOST/24" dev "$VB"

now() { date +%s.%N; }
# Reads monitor lines until "$1 $HOST"; prints the seconds since $2.
wait_for() {
    local want="$1 $HOST" t0="$2" line
    while read -r -t 120 line <&"${MON[0]}"; do
        if [ "$line" = "$want" ]; then
            echo "$(now) $t0" | awk '{printf "%.3f", $1 - $2}'
            return 0
        fi
    done
    echo "no '$want' line within 120 s" >&2
    return 1
}

run() {
    local label="$1"; shift
    coproc MON { exec "$TASKDIST" -q discover --watch --watch-secs 600 --recheck-secs 1 "$@" "$PREFIX.0/29"; }
    MON_PID=$MON_PID
    wait_for up "$(now)" >/dev/null
    local downs="" ups=""
    for _ in $(seq "$CYCLES"); do
        sleep 1.3
        local t0; t0=$(now)
        ip -n "$NS" addr del "$HOST/24" dev "$VB"
        downs="$downs $(wait_for down "$t0")"
        sleep 0.5
        t0=$(now)
        ip -n "$NS" addr add "$HOST/24" dev "$VB"
        ups="$ups $(wait_for up "$t0")"
    done
    kill "$MON_PID" 2>/dev/null || true
    wait "$MON_PID" 2>/dev/null || true
    MON_PID=""
    med() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    printf '%-34s down noticed after (s):%s  median %s\n' "$label" "$downs" "$(echo "$downs" | med)"
    printf '%-34s up noticed after (s):  %s  median %s\n' "" "$ups" "$(echo "$ups" | med)"
}

echo "kernel: $(uname -r); cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg); $CYCLES cycles"
run "adaptive re-check timeouts" "$@"
run "--timeout-ms 1000 (fixed, as before)" --timeout-ms 1000
