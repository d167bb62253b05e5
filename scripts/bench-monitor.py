#!/usr/bin/env python3
"""Time until a monitor (`taskdist discover --watch`, the path `taskdist run`, the pool and the
service use to find targets) has reported every address of a range up. Loopback only by
default: every address of 127.0.0.0/16 answers ping.

    scripts/bench-monitor.py [TASKDIST] [RANGE] [RUNS]
    scripts/bench-monitor.py target/release/taskdist 127.0.0.0/16 3
"""
import ipaddress
import subprocess
import sys
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/taskdist"
rng = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.0/16"
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
net = ipaddress.ip_network(rng)
if not net.is_loopback:
    sys.exit(f"{rng}: only loopback ranges here (the network rule of the project)")
want = max(net.num_addresses - 2, 1)
for i in range(runs):
    t0 = time.time()
    p = subprocess.Popen(
        [binary, "discover", "--watch", "--watch-secs", "120", rng],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    up = 0
    for line in p.stdout:
        if line.startswith("up "):
            up += 1
            if up == want:
                break
    wall = time.time() - t0
    p.kill()
    p.wait()
    print(f"run {i + 1}: {up} of {want} up after {wall:.2f} s wall")
