#!/usr/bin/env bash
# Compare host discovery of `taskdist discover` with `fping -a -g` and `nmap -sn -n`.
#
# Two scenes, each a /16 where every address answers ICMP echo:
#   loopback   127.0.0.0/16 (every 127/8 address answers on Linux; nmap sends no probes to
#              127/8 and reports every address up without asking, so it is left out here)
#   namespace  198.18.0.0/16 inside a network namespace this script creates: inside it
#              `ip route add local 198.18.0.0/16 dev lo` makes the whole /16 answer; the root
#              namespace routes 198.18.0.0/16 to it over a veth pair (198.19.254.0/30).
#              The namespace, link and routes are removed on exit (routes first).
# Traffic goes only to 127.0.0.0/8 and to the namespace. Needs root (namespaces, raw sockets).
#
#   mostly-silent  the same namespace, but only 198.18.0.0/20 answers (4,095 hosts counted the
#              fping way); the other 61,439 addresses of the /16 stay silent, as in a lab /16
#              with a few targets. One run per tool (silent addresses cost timeouts).
#
# Usage: scripts/bench-discovery.sh [--no-install] [--runs N] [--skip-namespace]
#                                   [--skip-silent] [--fping-default-range CIDR]
#   --runs N                 runs per tool and scene; the table shows the median (default 3)
#   --fping-default-range    range for fping with its default 10 ms interval, which needs
#                            ~11 minutes for a /16 (default 127.0.0.0/20; its /16 time is
#                            extrapolated and marked so)
# Kernel sysctls are printed and left unchanged; the ICMP rate-limit counters
# (OutRateLimitGlobal/OutRateLimitHost in /proc/net/snmp) are printed before and after.
set -euo pipefail
export LC_ALL=C

RUNS=3
INSTALL=1
NAMESPACE=1
SILENT=1
FPING_DEFAULT_RANGE=127.0.0.0/20
while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) INSTALL=0 ;;
        --runs) RUNS="$2"; shift ;;
        --skip-namespace) NAMESPACE=0 ;;
        --skip-silent) SILENT=0 ;;
        --fping-default-range) FPING_DEFAULT_RANGE="$2"; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
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

echo "building taskdist (release) ..." >&2
cargo build --release --quiet --bin taskdist
TASKDIST="$ROOT/target/release/taskdist"

WORK="$(mktemp -d)"
NS="tdbench$$"
VA="tdba$$"
VB="tdbb$$"
NS_CREATED=0
cleanup() {
    if [ "$NS_CREATED" = 1 ]; then
        ip route del 198.18.0.0/16 via 198.19.254.2 dev "$VA" 2>/dev/null || true
        ip -n "$NS" route del local 198.18.0.0/16 dev lo 2>/dev/null || true
        ip -n "$NS" route del local 198.18.0.0/20 dev lo 2>/dev/null || true
        ip link del "$VA" 2>/dev/null || true
        ip netns del "$NS" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

snmp_ratelimit() {
    awk '/^Icmp:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else
         printf "OutRateLimitGlobal=%s OutRateLimitHost=%s OutEchoReps=%s",
                $n["OutRateLimitGlobal"], $n["OutRateLimitHost"], $n["OutEchoReps"] }' /proc/net/snmp
}

echo "kernel: $(uname -r); cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for k in net.ipv4.icmp_ratelimit net.ipv4.icmp_msgs_per_sec net.ipv4.icmp_msgs_burst \
         net.ipv4.icmp_ratemask net.ipv4.ping_group_range net.core.rmem_default net.core.rmem_max; do
    printf '  %s = %s\n' "$k" "$(sysctl -n "$k" | tr '\t' ' ')"
done
echo "  before: $(snmp_ratelimit)"
echo "  fping $(fping -v 2>&1 | head -1 | awk '{print $NF}'), $(nmap --version | head -1)"

# measure NAME EXPECTED_FILE PARSER CMD...  -> appends "name time_s found expected" per run
# PARSER turns the tool's stdout into one address per line.
median() { sort -n | awk '{a[NR] = $1} END { print a[int((NR + 1) / 2)] }'; }

ROWS="$WORK/rows"
: > "$ROWS"
measure() {
    local scene="$1" name="$2" expected="$3" parser="$4"
    shift 4
    local times="$WORK/times" founds="$WORK/founds" failed=""
    : > "$times"; : > "$founds"
    for _ in $(seq "$RUNS"); do
        local t0 t1
        t0=$(date +%s.%N)
        local rc=0
        "$@" > "$WORK/out" 2> "$WORK/err" || rc=$?
        # fping exits 1 when some host is unreachable; other non-zero codes are failures.
        if [ "$rc" -gt 1 ]; then
            failed="exit $rc: $(head -1 "$WORK/err" | cut -c1-80 | tr '|' '/')"
            echo "    $1 $failed" >&2
        fi
        t1=$(date +%s.%N)
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' >> "$times"
        $parser < "$WORK/out" | sort -u | comm -12 - "$expected" | wc -l >> "$founds"
    done
    local t f n
    t=$(median < "$times")
    f=$(median < "$founds")
    n=$(wc -l < "$expected")
    printf '%s|%s|%.3f|%s|%s|%s\n' "$scene" "$name" "$t" "$f" "$n" "$failed" >> "$ROWS"
    printf '  %-9s %-32s %8.3f s  %6s/%s\n' "$scene" "$name" "$t" "$f" "$n" >&2
}

plain() { cat; }
nmap_up() { awk '/Status: Up/ { print $2 }'; }

# Expected sets: the hosts of an IPv4 CIDR without network and broadcast address (the
# convention of `fping -g` and taskdist; nmap also probes those two, they are not counted).
expected() { # CIDR FILE
    awk -v cidr="$1" 'BEGIN {
        split(cidr, a, "/"); split(a[1], o, ".")
        n = 2 ^ (32 - a[2]); base = ((o[1] * 256 + o[2]) * 256 + o[3]) * 256 + o[4]
        base -= base % n
        for (i = 1; i < n - 1; i++) { x = base + i
            printf "%d.%d.%d.%d\n", int(x / 16777216) % 256, int(x / 65536) % 256,
                   int(x / 256) % 256, x % 256 } }' | sort -u > "$2"
}
EXP_LO="$WORK/exp_lo"; expected 127.0.0.0/16 "$EXP_LO"

echo "loopback 127.0.0.0/16 ($RUNS runs each, median):" >&2
measure loopback "taskdist discover" "$EXP_LO" plain "$TASKDIST" discover -q 127.0.0.0/16
measure loopback "taskdist discover --rate 0" "$EXP_LO" plain "$TASKDIST" discover -q --rate 0 127.0.0.0/16
measure loopback "fping -a -g -i 0 (tuned)" "$EXP_LO" plain fping -a -q -i 0 -g 127.0.0.0/16
# fping with its default interval (10 ms) on a smaller range, extrapolated to the /16.
EXP_FD="$WORK/exp_fd"; expected "$FPING_DEFAULT_RANGE" "$EXP_FD"
SAVED_RUNS=$RUNS; RUNS=1
measure loopback "fping -a -g (default) $FPING_DEFAULT_RANGE" "$EXP_FD" plain fping -a -q -g "$FPING_DEFAULT_RANGE"
RUNS=$SAVED_RUNS

if [ "$NAMESPACE" = 1 ]; then
    if ip netns add "$NS" 2>/dev/null; then
        NS_CREATED=1
        ip link add "$VA" type veth peer name "$VB" netns "$NS"
        ip addr add 198.19.254.1/30 dev "$VA"
        ip link set "$VA" up
        ip -n "$NS" link set lo up
        ip -n "$NS" link set "$VB" up
        ip -n "$NS" addr add 198.19.254.2/30 dev "$VB"
        ip -n "$NS" route add local 198.18.0.0/16 dev lo
        ip route add 198.18.0.0/16 via 198.19.254.2 dev "$VA"
        EXP_NS="$WORK/exp_ns"; expected 198.18.0.0/16 "$EXP_NS"
        echo "namespace 198.18.0.0/16 over veth ($RUNS runs each, median):" >&2
        measure namespace "taskdist discover" "$EXP_NS" plain "$TASKDIST" discover -q 198.18.0.0/16
        measure namespace "taskdist discover --rate 0" "$EXP_NS" plain "$TASKDIST" discover -q --rate 0 198.18.0.0/16
        measure namespace "fping -a -g -i 0 (tuned)" "$EXP_NS" plain fping -a -q -i 0 -g 198.18.0.0/16
        measure namespace "nmap -sn -n (default)" "$EXP_NS" nmap_up nmap -sn -n -oG - 198.18.0.0/16
        measure namespace "nmap -sn -n -T5 --min-rate 100000" "$EXP_NS" nmap_up \
            nmap -sn -n -T5 --min-rate 100000 -oG - 198.18.0.0/16
        if [ "$SILENT" = 1 ]; then
            # Only 198.18.0.0/20 answers now; the rest of the /16 is silent.
            ip -n "$NS" route del local 198.18.0.0/16 dev lo
            ip -n "$NS" route add local 198.18.0.0/20 dev lo
            EXP_SI="$WORK/exp_si"
            expected 198.18.0.0/16 "$WORK/exp_all"
            awk -F. '$3 < 16' "$WORK/exp_all" | sort -u > "$EXP_SI"
            SAVED_RUNS=$RUNS; RUNS=1
            echo "mostly-silent 198.18.0.0/16, 4095 answering (1 run each):" >&2
            measure silent "taskdist discover" "$EXP_SI" plain "$TASKDIST" discover -q 198.18.0.0/16
            measure silent "taskdist discover --timeout-ms 200" "$EXP_SI" plain \
                "$TASKDIST" discover -q --timeout-ms 200 198.18.0.0/16
            measure silent "fping -a -g -i 0 (tuned)" "$EXP_SI" plain fping -a -q -i 0 -g 198.18.0.0/16
            measure silent "nmap -sn -n -T5 --min-rate 100000" "$EXP_SI" nmap_up \
                nmap -sn -n -T5 --min-rate 100000 -oG - 198.18.0.0/16
            RUNS=$SAVED_RUNS
            ip -n "$NS" route del local 198.18.0.0/20 dev lo
        fi
    else
        echo "SKIP namespace scene: cannot create a network namespace" >&2
    fi
fi

echo "  after:  $(snmp_ratelimit)"
echo
echo "| scene | tool | time (s) | recall | note |"
echo "|---|---|---:|---:|---|"
while IFS='|' read -r scene name t f n failed; do
    note="$failed"
    case "$name" in
        *"(default) "*)
            hosts=$n
            note=$(awk -v t="$t" -v h="$hosts" \
                'BEGIN { printf "extrapolated to a /16: %.0f s", t * 65534 / h }') ;;
    esac
    printf '| %s | %s | %.3f | %s/%s (%s %%) | %s |\n' "$scene" "$name" "$t" "$f" "$n" \
        "$(awk -v f="$f" -v n="$n" 'BEGIN { printf "%.1f", 100 * f / n }')" "$note"
done < "$ROWS"
