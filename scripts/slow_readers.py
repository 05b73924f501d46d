#!/usr/bin/env python3
"""Slow readers of streamed bodies against a pool: do they leave its workers free?

Usage (from the crate root, after `cargo build --release --examples`):

    python3 scripts/slow_readers.py [--bin target/release/examples/big_stream]
                                    [--workers 4] [--slow 4 8]

For each count N in --slow, starts the `big_stream` example (`--server pool`, every answer
a 1 GiB iterator body, sent chunked) on CPU 1, opens N connections that each read the
head and a first piece of their answer and then read nothing, waits a second, and times
20 fresh requests, one after another, to their status line (5 s timeout each). A pool
whose streams park while their clients fall behind answers every fresh request at once
while N is at most the number of workers (that many streams park); past that, the streams
that cannot park hold their workers, and with every worker held fresh requests time out.

Claims (PASS/FAIL, exit status 1 if one fails): for each N up to the number of workers,
all 20 fresh requests answered, each within 1 s. Counts past it are reported only.
Talks to 127.0.0.1 only; every wait is bounded; the server is killed at the end.
"""

import argparse
import os
import socket
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 18460
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def status_line(port, timeout):
    """Seconds to a fresh request's status line, or None if it did not come in time."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(REQUEST)
            got = b""
            while b"\r\n" not in got:
                more = s.recv(100)
                if not more:
                    return None
                got += more
            return time.monotonic() - t0
    except OSError:
        return None


def run(binary, workers, n):
    cmd = ["taskset", "-c", "1", binary, "--server", "pool", "--workers", str(workers),
           "--port", str(PORT)]
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    slow = []
    try:
        deadline = time.monotonic() + 10
        while status_line(PORT, 1.0) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        started = 0
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(REQUEST)
            slow.append(s)
            try:
                if s.recv(65536).startswith(b"HTTP/1.1 200"):
                    started += 1  # the head and a first piece; nothing more is read
            except OSError:
                pass  # no worker took it within 5 s
        time.sleep(1.0)  # the server fills their sockets, and parks (or holds a worker)
        took = [status_line(PORT, 5.0) for _ in range(20)]
        heads = [t for t in took if t is not None]
        line = f"workers={workers} slow readers={n} (answered {started}): fresh requests " \
               f"{len(heads)}/20 answered"
        if heads:
            line += f", p50 {statistics.median(heads) * 1000:.2f} ms, max {max(heads) * 1000:.2f} ms"
        print(line + f", {20 - len(heads)} timed out", flush=True)
        return len(heads) == 20 and max(heads) < 1.0
    finally:
        for s in slow:
            s.close()
        srv.kill()
        srv.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "examples",
                                                 "big_stream"))
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--slow", type=int, nargs="+", default=[4, 8])
    args = p.parse_args()
    failed = 0
    for n in args.slow:
        ok = run(args.bin, args.workers, n)
        if n <= args.workers:
            print(f"  {'PASS' if ok else 'FAIL'}  {n} slow readers of streams leave the "
                  f"{args.workers} workers free for fresh requests", flush=True)
            failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
