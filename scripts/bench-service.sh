#!/usr/bin/env bash
# Whole-run rate through the lab service against `taskdist run`, on the same number of
# built-in simulated targets, with many clients polling the status endpoint during the
# service's runs; prints the p99 latency of that endpoint. Three service runs: no pollers,
# CLIENTS pollers once a second each (as `taskdist status --watch`), and CLIENTS pollers flat
# out (saturation). Loopback only.
#   scripts/bench-service.sh            # N=100000 variants of `huge`, 64 targets, 100 clients
#   N=20000 TARGETS=16 CLIENTS=10 scripts/bench-service.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
TARGETS=${TARGETS:-64}
CLIENTS=${CLIENTS:-100}
cargo build --release --quiet --bin taskdist --example service_load
bin=target/release/taskdist
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

echo "== taskdist run: $N variants of huge on $TARGETS simulated targets (CSV)"
start=$(date +%s.%N)
/usr/bin/time -f "cpu: %U s user + %S s system, peak RSS %M KB" \
    "$bin" -q run huge --limit "$N" --simulate "$TARGETS" --out "$tmp/run" --handler csv
end=$(date +%s.%N)
run_rate=$(echo "$N / ($end - $start)" | bc -l)
printf "run: %d variants in %.2f s wall = %.0f variants/s\n" "$N" "$(echo "$end - $start" | bc -l)" "$run_rate"

echo "== taskdist serve: the same run submitted over HTTP, $CLIENTS clients polling its status"
"$bin" -q serve --simulate "$TARGETS" --data "$tmp/lab" --listen 127.0.0.1:0 2> "$tmp/serve.log" &
pid=$!
for _ in $(seq 100); do grep -q "^taskdist service on" "$tmp/serve.log" && break; sleep 0.1; done
url=$(sed -n 's/^taskdist service on //p' "$tmp/serve.log")
token=$(cat "$tmp/lab/token")
for load in "0 1000" "$CLIENTS 1000" "$CLIENTS 0"; do
    read -r clients interval <<<"$load"
    out=$(target/release/examples/service_load "$url" "$token" huge "$N" "$clients" "$interval")
    echo "$out"
    svc_rate=$(sed -n 's/.*= \([0-9]*\) variants\/s.*/\1/p' <<<"$out")
    printf "  service / run: %.0f %%\n" "$(echo "100 * $svc_rate / $run_rate" | bc -l)"
done
cpu=$(ps -o times= -p "$pid" | tr -d ' ')
echo "service process CPU time: ${cpu} s (its whole life: start, three runs, the polls)"
