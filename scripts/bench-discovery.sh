#!/usr/bin/env bash
# Compare host discovery of `taskdist discover` (defaults, no tuning flags) with tuned
# `fping -a -g -i 0 -r 1 -B1 -t 100` and the fastest `nmap -sn -n -T5 --min-rate 100000`,
# side by side, runs alternating between the tools, median of --runs runs (default 5).
#
# Scenes (traffic goes only to 127.0.0.0/8 and to a network namespace this script creates; the
# namespace, veth pair and routes are removed on exit, routes first):
#   loopback   127.0.0.0/16; also `taskdist discover --rate 0 --timeout-ms 10` (recall check).
#              nmap sends no probes to 127/8 (it reports every address up), so it is left out.
#   answering  198.18.0.0/16 in the namespace (`ip route add local 198.18.0.0/16 dev lo`).
#   silent     198.18.0.0/16 with only 198.18.0.0/20 answering (4,094 hosts counted the
#              fping way); the other addresses are dropped silently in the namespace.
#   dead       198.19.0.0/22 routed into the namespace, where nothing answers (all dropped).
#   ipv6       fd00:7d::/120 in the namespace (`ip -6 route add local fd00:7d::/120 dev lo`).
# Printed: median time, recall against the expected set, and each tool's time divided by
# taskdist's (> 1: taskdist is faster). Needs root (namespaces, raw ICMP sockets).
#
# Usage: scripts/bench-discovery.sh [--no-install] [--runs N] [--taskdist PATH]
# Kernel sysctls are printed and left unchanged.
set -euo pipefail
export LC_ALL=C

RUNS=5
INSTALL=1
TASKDIST=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) INSTALL=0 ;;
        --runs) RUNS="$2"; shift ;;
        --taskdist) TASKDIST="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$(id -u)" != 0 ]; then
    echo "bench-discovery: needs root (network namespaces, raw ICMP sockets)" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

if [ "$INSTALL" = 1 ] && { ! command -v fping >/dev/null || ! command -v nmap >/dev/null; }; then
    echo "installing fping and nmap from Debian ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q fping nmap >/dev/null
fi
command -v fping >/dev/null || { echo "fping missing" >&2; exit 2; }
command -v nmap >/dev/null || { echo "nmap missing" >&2; exit 2; }

if [ -z "$TASKDIST" ]; then
    echo "building taskdist (release) ..." >&2
    cargo build --release --quiet --bin taskdist
    TASKDIST="${CARGO_TARGET_DIR:-$ROOT/target}/release/taskdist"
fi

WORK="$(mktemp -d)"
NS="tdbench$$"
VA="tdba$$"
VB="tdbb$$"
NS_CREATED=0
cleanup() {
    if [ "$NS_CREATED" = 1 ]; then
        ip route del 198.18.0.0/16 via 198.19.254.2 dev "$VA" 2>/dev/null || true
        ip route del 198.19.0.0/22 via 198.19.254.2 dev "$VA" 2>/dev/null || true
        ip -6 route del fd00:7d::/120 via fd00:7e::2 dev "$VA" 2>/dev/null || true
        ip -n "$NS" route del local 198.18.0.0/16 dev lo 2>/dev/null || true
        ip -n "$NS" route del local 198.18.0.0/20 dev lo 2>/dev/null || true
        ip -n "$NS" -6 route del local fd00:7d::/120 dev lo 2>/dev/null || true
        ip link del "$VA" 2>/dev/null || true
        ip netns del "$NS" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "kernel: $(uname -r); cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for k in net.ipv4.icmp_ratelimit net.ipv4.icmp_msgs_per_sec net.ipv4.icmp_ratemask \
         net.core.rmem_default net.core.rmem_max; do
    printf '  %s = %s\n' "$k" "$(sysctl -n "$k" | tr '\t' ' ')"
done
echo "  fping $(fping -v 2>&1 | head -1 | awk '{print $NF}'), $(nmap --version | head -1)"
echo "  taskdist: $TASKDIST"

median() { sort -n | awk '{a[NR] = $1} END { print a[int((NR + 1) / 2)] }'; }
plain() { cat; }
nmap_up() { awk '/Status: Up/ { print $2 }'; }

# Expected sets: the hosts of an IPv4 CIDR without network and broadcast address.
expected() { # CIDR FILE
    awk -v cidr="$1" 'BEGIN {
        split(cidr, a, "/"); split(a[1], o, ".")
        n = 2 ^ (32 - a[2]); base = ((o[1] * 256 + o[2]) * 256 + o[3]) * 256 + o[4]
        base -= base % n
        for (i = 1; i < n - 1; i++) { x = base + i
            printf "%d.%d.%d.%d\n", int(x / 16777216) % 256, int(x / 65536) % 256,
                   int(x / 256) % 256, x % 256 } }' | sort -u > "$2"
}

ROWS="$WORK/rows"
: > "$ROWS"
# scene SCENE EXPECTED_FILE -- then tools as "NAME|PARSER|COMMAND" lines on stdin; runs
# alternate between the tools (run 1 of every tool, then run 2, ...).
scene() {
    local scene="$1" expected="$2" i=0
    local -a names parsers cmds
    while IFS='|' read -r name parser cmd; do
        names[i]="$name"; parsers[i]="$parser"; cmds[i]="$cmd"; i=$((i + 1))
        : > "$WORK/t$i"; : > "$WORK/f$i"
    done
    echo "$scene ($RUNS alternating runs, median):" >&2
    for _ in $(seq "$RUNS"); do
        for j in $(seq 0 $((i - 1))); do
            local t0 t1 rc=0
            t0=$(date +%s.%N)
            eval "${cmds[j]}" > "$WORK/out" 2> "$WORK/err" || rc=$?
            t1=$(date +%s.%N)
            if [ "$rc" -gt 1 ]; then
                echo "    ${names[j]}: exit $rc: $(head -1 "$WORK/err")" >&2
            fi
            awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' >> "$WORK/t$((j + 1))"
            ${parsers[j]} < "$WORK/out" | sort -u | comm -12 - "$expected" | wc -l \
                >> "$WORK/f$((j + 1))"
        done
    done
    local n base=""
    n=$(wc -l < "$expected")
    for j in $(seq 0 $((i - 1))); do
        local t f
        t=$(median < "$WORK/t$((j + 1))")
        f=$(median < "$WORK/f$((j + 1))")
        [ -z "$base" ] && base="$t"
        printf '%s|%s|%s|%s|%s|%s\n' "$scene" "${names[j]}" "$t" "$f" "$n" "$base" >> "$ROWS"
        printf '  %-60s %8.3f s  %6s/%s\n' "${names[j]}" "$t" "$f" "$n" >&2
    done
}

T="$TASKDIST"
EXP_LO="$WORK/exp_lo"; expected 127.0.0.0/16 "$EXP_LO"
scene loopback "$EXP_LO" <<EOF2
taskdist discover|plain|$T discover -q 127.0.0.0/16
taskdist discover --rate 0 --timeout-ms 10|plain|$T discover -q --rate 0 --timeout-ms 10 127.0.0.0/16
fping -i 0 -r 1 -B1 -t 100|plain|fping -a -q -i 0 -r 1 -B1 -t 100 -g 127.0.0.0/16
EOF2

ip netns add "$NS"
NS_CREATED=1
ip link add "$VA" type veth peer name "$VB" netns "$NS"
ip addr add 198.19.254.1/30 dev "$VA"
ip addr add fd00:7e::1/64 dev "$VA" nodad
ip link set "$VA" up
ip -n "$NS" link set lo up
ip -n "$NS" link set "$VB" up
ip -n "$NS" addr add 198.19.254.2/30 dev "$VB"
ip -n "$NS" addr add fd00:7e::2/64 dev "$VB" nodad
ip route add 198.18.0.0/16 via 198.19.254.2 dev "$VA"
ip route add 198.19.0.0/22 via 198.19.254.2 dev "$VA"
ip -6 route add fd00:7d::/120 via fd00:7e::2 dev "$VA"
ip -n "$NS" -6 route add local fd00:7d::/120 dev lo
ip -n "$NS" route add local 198.18.0.0/16 dev lo

FP="fping -a -q -i 0 -r 1 -B1 -t 100"
NM="nmap -sn -n -T5 --min-rate 100000 -oG -"
EXP_NS="$WORK/exp_ns"; expected 198.18.0.0/16 "$EXP_NS"
scene answering "$EXP_NS" <<EOF2
taskdist discover|plain|$T discover -q 198.18.0.0/16
$FP|plain|$FP -g 198.18.0.0/16
${NM% -oG -}|nmap_up|$NM 198.18.0.0/16
EOF2

ip -n "$NS" route del local 198.18.0.0/16 dev lo
ip -n "$NS" route add local 198.18.0.0/20 dev lo
EXP_SI="$WORK/exp_si"
awk -F. '$3 < 16' "$EXP_NS" | sort -u > "$EXP_SI"
scene silent "$EXP_SI" <<EOF2
taskdist discover|plain|$T discover -q 198.18.0.0/16
$FP|plain|$FP -g 198.18.0.0/16
${NM% -oG -}|nmap_up|$NM 198.18.0.0/16
EOF2
ip -n "$NS" route del local 198.18.0.0/20 dev lo

: > "$WORK/exp_dead"
scene dead "$WORK/exp_dead" <<EOF2
taskdist discover|plain|$T discover -q 198.19.0.0/22
$FP|plain|$FP -g 198.19.0.0/22
${NM% -oG -}|nmap_up|$NM 198.19.0.0/22
EOF2

EXP_V6="$WORK/exp_v6"
for i in $(seq 1 255); do printf 'fd00:7d::%x\n' "$i"; done | sort -u > "$EXP_V6"
scene ipv6 "$EXP_V6" <<EOF2
taskdist discover|plain|$T discover -q fd00:7d::/120
$FP -f LIST (fping -g is IPv4 only)|plain|fping -6 -a -q -i 0 -r 1 -B1 -t 100 -f $EXP_V6
${NM% -oG -}|nmap_up|$NM -6 fd00:7d::/120
EOF2

echo
echo "| scene | tool | median time (s) | recall | time / taskdist's |"
echo "|---|---|---:|---:|---:|"
while IFS='|' read -r scene name t f n base; do
    recall=$(awk -v f="$f" -v n="$n" 'BEGIN { if (n == 0) print "-"; else printf "%.1f %%", 100 * f / n }')
    ratio=$(awk -v t="$t" -v b="$base" 'BEGIN { printf "%.2f", t / b }')
    printf '| %s | %s | %.3f | %s/%s (%s) | %s |\n' "$scene" "$name" "$t" "$f" "$n" "$recall" "$ratio"
done < "$ROWS"
