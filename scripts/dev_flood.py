#!/usr/bin/env python3
"""Load probe: thousands of simultaneous connections against the echo example.

  scripts/dev_flood.py [-n 3000] [--sleep-ms 200] [--deadline 60] [--after 20]
                       [--server-args "--workers 8"] [--addr 127.0.0.1:PORT [--pid PID]]

The issue's acceptance check for the dev server: "3,000 simultaneous connections to the
dev server (each a request with sleep_ms=200): every connection gets a 200 or a 503, the
process survives, and it serves normally after".

Starts `target/release/examples/echo --server dev --bind 127.0.0.1:0 [SERVER_ARGS]` itself
(build it first: `cargo build --release --example echo`), or probes a running server given
by --addr (127.0.0.1 only). Raises RLIMIT_NOFILE as far as allowed (the started server
inherits it), opens every connection at once from one thread (non-blocking sockets and a
selector), sends `GET /?sleep_ms=MS` with `Connection: close` on each and reads until the
server closes. Then it tallies the statuses and errors, checks the server process is alive,
and sends AFTER fresh requests one by one, which must all be 200.

Exits 0 when every connection got a 200 or a 503, the server survived and all fresh
requests got 200; 1 otherwise; 2 on a setup problem. Standard library only.
"""
import argparse
import collections
import errno
import os
import resource
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BINARY = os.path.join(ROOT, "target", "release", "examples", "echo")
MAX_CONNECTIONS = 20000
MAX_DEADLINE = 600.0
START_DEADLINE = 60.0


def fail_setup(message):
    print(f"dev_flood: {message}", file=sys.stderr)
    sys.exit(2)


def raise_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def errname(code):
    return errno.errorcode.get(code, f"errno {code}")


def start_server(binary, extra, stderr_file):
    if not os.access(binary, os.X_OK):
        fail_setup(f"{binary} not found; run `cargo build --release --example echo` first")
    cmd = [binary, "--server", "dev", "--bind", "127.0.0.1:0", *extra]
    print("starting:", " ".join(shlex.quote(c) for c in cmd))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_file)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_DEADLINE
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            break
        if sel.select(min(left, 0.5)):
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    sel.close()
    text = line.decode(errors="replace").strip()
    if not text.startswith("listening on http://"):
        stop_server(proc)
        fail_setup(f"server did not announce its address (got {text!r})")
    host, port = text[len("listening on http://"):].rsplit(":", 1)
    return proc, (host, int(port))


def stop_server(proc):
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def threads_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Conn:
    __slots__ = ("sock", "out", "head", "status", "error", "reset_after_status", "started", "ended")

    def __init__(self, request):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.out = request
        self.head = b""
        self.status = None
        self.error = None
        self.reset_after_status = False
        self.started = time.monotonic()
        self.ended = None

    def take(self, data):
        if self.status is None and len(self.head) < 256:
            self.head += data
            if b"\r\n" in self.head:
                line = self.head.split(b"\r\n", 1)[0].split()
                if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
                    self.status = int(line[1])
                else:
                    self.error = "malformed status line"

    def finish(self, error=None):
        if error is not None:
            if self.status is not None:
                self.reset_after_status = True
            elif self.error is None:
                self.error = error
        if self.status is None and self.error is None:
            self.error = "closed without a response" if not self.head else "truncated status line"
        self.ended = time.monotonic()
        self.sock.close()


def flood(addr, n, sleep_ms, deadline_s, pid):
    request = (f"GET /?sleep_ms={sleep_ms} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode()
    sel = selectors.DefaultSelector()
    conns = []
    open_count = 0
    peak_threads = 0
    t0 = time.monotonic()
    for _ in range(n):
        c = Conn(request)
        conns.append(c)
        code = c.sock.connect_ex(addr)
        if code not in (0, errno.EINPROGRESS):
            c.finish(errname(code))
            continue
        sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        open_count += 1
    end = t0 + deadline_s
    next_sample = 0.0
    while open_count:
        now = time.monotonic()
        if now >= end:
            break
        if pid and now >= next_sample:
            peak_threads = max(peak_threads, threads_of(pid))
            next_sample = now + 0.05
        for key, mask in sel.select(min(end - now, 0.05)):
            c = key.data
            done, error = False, None
            if c.out and mask & selectors.EVENT_WRITE:
                code = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    done, error = True, errname(code)
                else:
                    try:
                        c.out = c.out[c.sock.send(c.out):]
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        # The server may have answered (503) and closed first: read what came.
                        c.out = b""
                        c.error = errname(e.errno) if e.errno else type(e).__name__
                    if not c.out:
                        sel.modify(c.sock, selectors.EVENT_READ, c)
            if not done and mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(65536)
                    if data:
                        c.take(data)
                    else:
                        done = True
                except BlockingIOError:
                    pass
                except OSError as e:
                    done, error = True, errname(e.errno) if e.errno else type(e).__name__
            if done:
                sel.unregister(c.sock)
                c.finish(error)
                open_count -= 1
    for c in conns:
        if c.ended is None:
            sel.unregister(c.sock)
            c.finish("deadline: no response" if c.status is None else None)
    sel.close()
    return conns, time.monotonic() - t0, peak_threads


def fetch(addr, timeout=10.0):
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(b"GET /?after=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        line = data.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) >= 2 and line[1].isdigit() else f"bad response {data[:40]!r}"
    except OSError as e:
        return errname(e.errno) if e.errno else type(e).__name__


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--connections", type=int, default=3000)
    ap.add_argument("--sleep-ms", type=int, default=200)
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds for the whole flood")
    ap.add_argument("--after", type=int, default=20, help="fresh requests after the flood")
    ap.add_argument("--addr", help="probe a running server at 127.0.0.1:PORT instead of starting one")
    ap.add_argument("--pid", type=int, help="with --addr: the server's pid, to check it survives")
    ap.add_argument("--binary", default=DEFAULT_BINARY)
    ap.add_argument("--server-args", default="", help='appended to the server command, e.g. "--workers 8" '
                    'or "--server pool" (a later flag wins)')
    args = ap.parse_args()
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        fail_setup(f"--connections must be 1..{MAX_CONNECTIONS}")
    if not 0 < args.deadline <= MAX_DEADLINE:
        fail_setup(f"--deadline must be in (0, {MAX_DEADLINE:.0f}] seconds")
    if not 0 <= args.sleep_ms <= 60000 or not 0 <= args.after <= 1000:
        fail_setup("--sleep-ms must be 0..60000 and --after 0..1000")

    limit = raise_nofile(args.connections + 256)
    if limit < args.connections + 64:
        fail_setup(f"RLIMIT_NOFILE is {limit}; {args.connections} connections need about "
                   f"{args.connections + 64} (raise the hard limit)")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    proc = None
    stderr_file = tempfile.TemporaryFile()
    try:
        if args.addr:
            host, port = args.addr.rsplit(":", 1)
            if host != "127.0.0.1":
                fail_setup("--addr must be 127.0.0.1:PORT")
            addr, pid = (host, int(port)), args.pid
        else:
            proc, addr = start_server(args.binary, shlex.split(args.server_args), stderr_file)
            pid = proc.pid
        print(f"flooding {addr[0]}:{addr[1]} with {args.connections} connections "
              f"(sleep_ms={args.sleep_ms}, deadline {args.deadline:.0f}s, RLIMIT_NOFILE {limit})")

        conns, elapsed, peak_threads = flood(addr, args.connections, args.sleep_ms, args.deadline, pid)
        statuses = collections.Counter(c.status for c in conns if c.status is not None)
        errors = collections.Counter(c.error for c in conns if c.status is None)
        resets = sum(c.reset_after_status for c in conns)
        other = {s: k for s, k in statuses.items() if s not in (200, 503)}
        survived = (proc.poll() is None) if proc else (alive(pid) if pid else None)
        after = [fetch(addr) for _ in range(args.after)] if survived is not False else []
        after_ok = sum(1 for s in after if s == 200)

        print(f"\nconnections: {len(conns)} in {elapsed:.2f}s")
        for status in sorted(statuses):
            times = [c.ended - c.started for c in conns if c.status == status]
            print(f"  {status}: {statuses[status]:6d}   (to close: p50 {percentile(times, 50):.3f}s, "
                  f"p99 {percentile(times, 99):.3f}s, max {max(times):.3f}s)")
        print(f"  other statuses: {sum(other.values())}" + (f" {dict(other)}" if other else ""))
        print(f"  connection errors: {sum(errors.values())}" + (f" {dict(errors)}" if errors else ""))
        if resets:
            print(f"  (reset after a status line was read: {resets}; counted by status)")
        if peak_threads:
            print(f"server threads, peak: {peak_threads}")
        print("server alive:", {True: "yes", False: "NO", None: "unknown (no --pid)"}[survived])
        if args.after:
            print(f"fresh requests after: {after_ok}/{args.after} got 200"
                  + ("" if after_ok == args.after else f"; got {collections.Counter(after)}"))

        ok = not other and not errors and survived is not False and after_ok == args.after
        print("RESULT:", "PASS" if ok else "FAIL")
        if not ok and proc is not None:
            stderr_file.seek(0)
            tail = stderr_file.read().decode(errors="replace").splitlines()[-20:]
            if tail:
                print("server stderr (tail):", *tail, sep="\n  ")
        return 0 if ok else 1
    finally:
        if proc is not None:
            stop_server(proc)
        stderr_file.close()


if __name__ == "__main__":
    sys.exit(main())
