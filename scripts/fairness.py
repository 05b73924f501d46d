#!/usr/bin/env python3
"""How evenly a server shares itself among connections under load.

For each server: starts it (pinned to the server core), loads it with wrk (pinned to the
other core), and reads every established connection's `data_segs_in` from `ss -ti` twice,
WINDOW seconds apart, in the middle of the run. With wrk (one request in flight per
connection, each in one segment) the difference is the requests each connection got
served in the window. Prints their spread: min / p10 / p50 / p90 / max, and the share of
all requests that went to the busiest quarter of the connections (0.25 when even).

    scripts/fairness.py -c 1024 \\
        hyper='/tmp/bench-peers-target/release/peer-hyper --port {port}' \\
        pool='target/release/examples/hello --server pool --workers 8 --port {port}'

Bounded: wrk runs for WINDOW + 4 s with a timeout, and each server's process group is
killed after its run. Needs wrk, taskset and ss (iproute2).
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import time


def wait_listening(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def segments_in(port):
    """{peer: data_segs_in} for every established connection to `port`."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, check=True).stdout
    counts, peer = {}, None
    for line in out.splitlines():
        if line and not line[0].isspace():
            peer = line.split()[-1]
            continue
        m = re.search(r"data_segs_in:(\d+)", line)
        if peer and m:
            counts[peer] = int(m.group(1))
    return counts


def measure(cmd, port, conns, window):
    server = subprocess.Popen(["taskset", "-c", "1", "sh", "-c", cmd.format(port=port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        if not wait_listening(port, time.monotonic() + 10):
            raise SystemExit(f"{cmd}: not listening on {port}")
        duration = window + 4
        wrk = subprocess.Popen(
            ["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{duration}", "--timeout", "5",
             f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        before = segments_in(port)
        time.sleep(window)
        after = segments_in(port)
        out, _ = wrk.communicate(timeout=duration + 30)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    served = sorted(after[p] - before.get(p, 0) for p in after)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return served, float(rps.group(1)) if rps else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--connections", type=int, default=1024)
    ap.add_argument("--window", type=int, default=2, help="seconds between the two looks")
    ap.add_argument("--port", type=int, default=18320)
    ap.add_argument("servers", nargs="+", help="name='command with {port}'")
    args = ap.parse_args()
    print("server      conns   req/s  min  p10  p50  p90  max  top-quarter share")
    for spec in args.servers:
        name, cmd = spec.split("=", 1)
        served, rps = measure(cmd, args.port, args.connections, args.window)
        n, total = len(served), sum(served)
        q = lambda p: served[min(n - 1, int(p * n))]
        top = sum(sorted(served, reverse=True)[: n // 4]) / total if total else 0
        print(f"{name:10} {n:6} {rps:7.0f} {served[0]:4} {q(.1):4} {q(.5):4} {q(.9):4} "
              f"{served[-1]:4}  {top:.2f}")


if __name__ == "__main__":
    main()
