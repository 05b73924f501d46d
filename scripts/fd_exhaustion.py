#!/usr/bin/env python3
"""File-descriptor exhaustion probe: the server keeps serving and recovers.

Starts `target/release/examples/echo --server BACKEND` with `ulimit -n LIMIT` (default 64),
so that a few dozen connections use up its descriptors. Then, per backend:
  1. opens one keep-alive connection and checks it is answered;
  2. opens N (default 300) more connections at once and sends a request on each, far more
     than the server has descriptors for: the dev server hits EMFILE on accept (it must log,
     back off and go on; connections it cannot take wait in the backlog or are answered
     503), the pool stops accepting at its max_connections (sized from the same limit);
  3. meanwhile the first connection must still be served (a request on it gets 200), or,
     on the pool, have been closed cleanly while idle to admit a newcomer at the cap;
  4. closes them all, and checks that 20 fresh requests get 200 within a deadline;
  5. checks the server never died;
  6. on a fresh server, makes M (default 150) connections one after another that each get
     an answer the server closes with a lingering close (a 400: no Host) and then stay
     open: the lingering sockets hold descriptors, which must never run the server out of
     them (no EMFILE logged; every one answered).
Standard library only; 127.0.0.1 only; every wait bounded. Exit 1 if a claim fails.

  scripts/fd_exhaustion.py [--backends "dev pool"] [--limit 64] [-n 300]
"""
import argparse
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ECHO = os.path.join(ROOT, "target", "release", "examples", "echo")


def start(backend, limit):
    cmd = f"ulimit -n {limit} && exec '{ECHO}' --server {backend} --workers 4 --bind 127.0.0.1:0"
    proc = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "RUST_LOG": "warn"})
    deadline = time.time() + 30
    line = b""
    while time.time() < deadline and not line.endswith(b"\n"):
        line += proc.stdout.read(1)
    m = re.match(rb"listening on http://([\d.]+):(\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"{backend}: no listening line, got {line!r}")
    return proc, (m.group(1).decode(), int(m.group(2)))


def request(sock, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def read_status(sock, timeout=10.0):
    """Reads one response; returns its status, "closed" if the server had closed the
    connection before any of it (an idle keep-alive close), or None on a close mid-answer,
    a reset or a timeout."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return "closed" if not data else None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            rest += chunk
        return status
    except (OSError, ValueError, AttributeError):
        return None


def fresh(addr, path, timeout=10.0):
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            request(s, path)
            return read_status(s, timeout)
    except OSError:
        return None


def stop_and_count_emfile(proc):
    """Stops the server (SIGTERM, then SIGKILL after 40 s) and counts the EMFILE warnings
    in its log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, stderr_log = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr_log = proc.communicate()
    return len(re.findall(rb"(?i)too many open files|os error 24", stderr_log))


def probe(backend, limit, n):
    failures = []
    proc, addr = start(backend, limit)
    try:
        keeper = socket.create_connection(addr, timeout=10)
        request(keeper, "/first")
        if read_status(keeper) != 200:
            failures.append("the first keep-alive request was not answered 200")

        # The flood: connect all (the kernel backlog takes what the server does not accept).
        flood, refused = [], 0
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect_ex(addr)
                flood.append(s)
            except OSError:
                refused += 1
        sel = selectors.DefaultSelector()
        for s in flood:
            sel.register(s, selectors.EVENT_WRITE)
        sent = 0
        deadline = time.time() + 10
        while sel.get_map() and time.time() < deadline:
            for key, _ in sel.select(timeout=0.5):
                try:
                    key.fileobj.send(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
                    sent += 1
                except OSError:
                    pass
                sel.unregister(key.fileobj)
        time.sleep(1.0)  # let the server run into its limit (what follows polls, not this)

        # Under pressure, the connection it already has is still served. The pool, at its
        # cap with newcomers waiting, may instead have closed it while it was idle, to let
        # one in (as nginx reuses keep-alive connections; HTTP lets a server close an idle
        # connection at any time): a clean close before any answer, never a cut answer.
        request(keeper, "/under-pressure")
        kept = read_status(keeper, timeout=10)
        if kept != 200 and not (backend == "pool" and kept == "closed"):
            failures.append(f"the open keep-alive connection got {kept} under pressure")

        # Collect what the flood got, briefly and without blocking on each.
        statuses = {}
        for s in flood:
            s.setblocking(True)
            st = read_status(s, timeout=0.2)
            statuses[st] = statuses.get(st, 0) + 1
            s.close()
        keeper.close()
        alive_during = proc.poll() is None
        if not alive_during:
            failures.append("the server died under fd pressure")

        # Recovery: fresh requests all answered.
        deadline = time.time() + 20
        ok = 0
        while time.time() < deadline and ok < 20:
            if fresh(addr, f"/after/{ok}", timeout=5) == 200:
                ok += 1
            else:
                time.sleep(0.1)
        if ok < 20:
            failures.append(f"only {ok}/20 fresh requests answered after the pressure ended")
        emfile = stop_and_count_emfile(proc)
        shed = statuses.get(503, 0)
        print(f"{backend}: ulimit -n {limit}, {n} connections ({sent} sent a request, {refused} refused at connect)")
        print(f"  flood answers in a 0.2 s look: " + ", ".join(
            f"{'none yet/closed' if k is None else k} x {v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))))
        print(f"  keep-alive connection under pressure: {kept}; EMFILE warnings logged: {emfile}; 503s: {shed}")
        print(f"  after: {ok}/20 fresh requests 200; server survived: {alive_during}")
    finally:
        if proc.poll() is None:
            proc.kill()
    return failures


def probe_lingering(backend, limit, m):
    failures = []
    proc, addr = start(backend, limit)
    held, answered, slowest = [], 0, 0.0
    try:
        for i in range(m):
            began = time.time()
            try:
                s = socket.create_connection(addr, timeout=10)
                s.sendall(b"GET /no-host HTTP/1.1\r\n\r\n")
                if read_status(s, timeout=10) == 400:
                    answered += 1
            except OSError:
                s = None
            slowest = max(slowest, time.time() - began)
            if s is not None:
                held.append(s)  # the client keeps its end open: the server's socket lingers
        alive = proc.poll() is None
        if not alive:
            failures.append("the server died with sockets lingering")
    finally:
        for s in held:
            s.close()
        emfile = stop_and_count_emfile(proc)
    print(f"{backend}: ulimit -n {limit}, {m} lingering closes one after another: {answered} answered 400, "
          f"slowest {slowest:.2f} s, EMFILE warnings logged: {emfile}")
    if answered < m:
        failures.append(f"only {answered}/{m} lingering-close requests answered 400")
    if emfile:
        failures.append(f"lingering sockets ran the server out of descriptors ({emfile} EMFILE warnings)")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="dev pool")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("-m", type=int, default=150, help="lingering closes in step 6")
    args = ap.parse_args()
    if not os.path.exists(ECHO):
        raise SystemExit(f"{ECHO} missing: cargo build --release --examples")
    failures = []
    for backend in args.backends.split():
        failures += [f"{backend}: {f}" for f in probe(backend, args.limit, min(args.n, 2000))]
        failures += [f"{backend}: {f}" for f in probe_lingering(backend, args.limit, min(args.m, 2000))]
    for f in failures:
        print("FAIL", f)
    print("fd exhaustion:", "FAILED" if failures else "passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
