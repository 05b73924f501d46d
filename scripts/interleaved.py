#!/usr/bin/env python3
"""Interleaved A/B load runs: medians that survive a noisy machine.

On a shared 2-core VM, one 5 s run of a server can differ from the next by 20 % for reasons
that have nothing to do with the server. A comparison of two builds (or of sgi and a peer)
is only sound when their runs alternate, many times, and the medians are compared. This
script does that: for each of ROUNDS rounds it starts every server in turn (pinned to the
server core), loads it with wrk (pinned to the other core) at each concurrency, and stops
it. It reports per server and concurrency the median req/s, the median server CPU time per
request (all threads, from /proc: less CPU for the same work is the real win), its user
part, the median wrk p50, and every round's req/s so the spread is visible.

    scripts/interleaved.py --rounds 8 --duration 2 -c 16,64 \\
        hyper='/tmp/bench-peers-target/release/peer-hyper --port {port}' \\
        pool='target/release/examples/hello --server pool --workers 8 --port {port}'

Each server must answer `GET /` on 127.0.0.1:{port}. Bounded: every wrk run has its
duration and a timeout, and every server is killed (its whole process group) after its
round. Needs wrk and taskset.
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    """(user + system, user) clock ticks of every thread of `pid`."""
    total = user = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        total += int(fields[11]) + int(fields[12])
        user += int(fields[11])
    return total, user


def wait_for_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def wrk(args, conc, duration, port):
    cmd = ["taskset", "-c", args.wrk_cpu, "wrk", "-t1", f"-c{conc}", f"-d{duration}s",
           "--timeout", "2s", "--latency", *args.wrk_args.split(), f"http://127.0.0.1:{port}/"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout


def one_round(args, name, command, results):
    port = args.port
    proc = subprocess.Popen(["taskset", "-c", args.server_cpu, "bash", "-c",
                             "exec " + command.replace("{port}", str(port))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        if not wait_for_port(port, time.monotonic() + 30):
            sys.exit(f"{name}: nothing listens on {port} after 30 s")
        wrk(args, 16, 1, port)  # warm-up
        for conc in args.concurrency:
            before = cpu_ticks(proc.pid)
            out = wrk(args, conc, args.duration, port)
            after = cpu_ticks(proc.pid)
            done = re.search(r"(\d+) requests in", out)
            if not done or int(done.group(1)) == 0:
                print(f"{name} c={conc}: no requests completed", file=sys.stderr)
                continue
            n = int(done.group(1))
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            m = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
            p50 = float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
            us = 1e6 / TICK / n
            results.setdefault((name, conc), []).append(
                (rps, (after[0] - before[0]) * us, (after[1] - before[1]) * us, p50))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("servers", nargs="+", help="NAME=COMMAND ({port} is replaced)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    parser.add_argument("-c", "--concurrency", default="1,16,64,256,1024")
    parser.add_argument("--port", type=int, default=18199)
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--wrk-cpu", default="0")
    parser.add_argument("--wrk-args", default="",
                        help="extra wrk arguments, e.g. '-s ../shared/bench/pipeline.lua'")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    servers = [s.split("=", 1) for s in args.servers]
    results = {}
    for r in range(args.rounds):
        for name, command in servers:
            one_round(args, name, command, results)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    base = servers[0][0]
    print(f"{'server':12} {'conc':>5} {'req/s':>9} {'vs_' + base:>9} {'cpu_us/req':>10} "
          f"{'user_us':>7} {'p50_us':>8}  req/s per round (k)")
    for conc in args.concurrency:
        for name, _ in servers:
            runs = results.get((name, conc))
            if not runs:
                continue
            med = [statistics.median(x[i] for x in runs) for i in range(4)]
            base_runs = results.get((base, conc))
            ratio = med[0] / statistics.median(x[0] for x in base_runs) if base_runs else 0
            spread = " ".join(str(round(x[0] / 1000)) for x in runs)
            print(f"{name:12} {conc:5} {med[0]:9.0f} {ratio:9.2f} {med[1]:10.2f} "
                  f"{med[2]:7.2f} {med[3]:8.1f}  {spread}")


if __name__ == "__main__":
    main()
