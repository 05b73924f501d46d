#!/usr/bin/env python3
"""Measures the PoolServer's claims against a real build of the `echo` example.

Usage (from the crate root, after `cargo build --release --examples`):

    python3 scripts/pool_probe.py all            # every probe in turn
    python3 scripts/pool_probe.py idle           # 10k idle keep-alive connections
    python3 scripts/pool_probe.py slowloris      # 1k stalled half-heads vs fresh requests
    python3 scripts/pool_probe.py shutdown       # SIGTERM with requests in flight
    python3 scripts/pool_probe.py abandoned      # clients that give up on an overloaded pool

Options (any command): --bin PATH (default target/release/examples/echo), --workers N (8),
--idle-conns N (10000), --stalled M (1000), --inflight K (200), --fresh-seconds S (5),
--givers-up G (400).

Each probe starts its own server with `--server pool --bind 127.0.0.1:0`, parses the
`listening on http://IP:PORT` line, talks to it over 127.0.0.1 only, and kills it at the
end whatever happens. Standard library only; every loop is bounded in count and time.
Prints figures and PASS/FAIL per claim; the exit status is 1 if any claim fails.

The server is run with the default `Config` (the echo example sets no timeouts), so the
figures below assume its defaults: idle 15 s, head 10 s, shutdown 30 s.
"""

import argparse
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(ROOT, "target", "release", "examples", "echo")

# The server's defaults (src/config.rs); the echo example cannot change them by flags.
IDLE_TIMEOUT = 15.0
HEAD_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 30.0

RESULTS = []  # (probe, claim, ok, detail)


def claim(probe, text, ok, detail=""):
    RESULTS.append((probe, text, ok, detail))
    tag = "PASS" if ok else "FAIL"
    print(f"  [{tag}] {text}" + (f"  ({detail})" if detail else ""), flush=True)
    return ok


def info(text):
    print(f"  {text}", flush=True)


def pct(values, p):
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def ms(seconds):
    return f"{seconds * 1000:.2f} ms"


# ----------------------------------------------------------------------------------------
# The server process


class Server:
    def __init__(self, binary, workers):
        self.binary = binary
        self.workers = workers
        self.proc = None
        self.port = None
        self.stderr = tempfile.TemporaryFile()

    def start(self, timeout=10.0):
        if not os.access(self.binary, os.X_OK):
            raise SystemExit(
                f"no server binary at {self.binary}: run `cargo build --release --examples`"
            )
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(
            [self.binary, "--server", "pool", "--bind", f"{HOST}:0",
             "--workers", str(self.workers)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr,
            env=env, bufsize=0,
        )
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    self.kill()
                    raise RuntimeError(f"server did not announce itself: {buf!r}\n{self.log_tail()}")
                if sel.select(min(left, 0.2)):
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        continue
                    buf += chunk
        finally:
            sel.close()
        line = buf.split(b"\n", 1)[0].decode().strip()
        prefix = "listening on http://"
        if not line.startswith(prefix):
            self.kill()
            raise RuntimeError(f"unexpected first line: {line!r}")
        host, port = line[len(prefix):].rsplit(":", 1)
        if host != HOST:
            self.kill()
            raise RuntimeError(f"server bound {host}, not {HOST}")
        self.port = int(port)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def status(self):
        """Threads, VmRSS and VmHWM (KiB) from /proc/PID/status."""
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("Threads", "VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
        return out

    def open_fds(self):
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return -1

    def nofile_limit(self):
        try:
            with open(f"/proc/{self.pid}/limits") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        return line.split()[3]
        except OSError:
            pass
        return "?"

    def log_tail(self, n=15):
        try:
            self.stderr.seek(0)
            lines = self.stderr.read().decode(errors="replace").splitlines()
        except Exception:
            return ""
        return "\n".join("    server: " + l for l in lines[-n:])

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
        self.stderr.close()


# ----------------------------------------------------------------------------------------
# HTTP/1.1 client pieces


def request(path="/", extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: probe\r\n{extra}\r\n".encode()


def parse_response(buf, eof=False):
    """(status, headers, body, used) once `buf` holds a whole response, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        pos, body = start, b""
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(buf[pos:eol].split(b";")[0], 16)
            if size == 0:
                tail = buf.find(b"\r\n\r\n", eol)
                if tail < 0:
                    return None
                return status, headers, body, tail + 4
            if len(buf) < eol + 2 + size + 2:
                return None
            body += buf[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(buf) < start + n:
            return None
        return status, headers, buf[start:start + n], start + n
    if eof:  # close-delimited
        return status, headers, buf[start:], len(buf)
    return None


def fetch(port, path="/", timeout=5.0):
    """One request on a fresh blocking connection: (status, seconds) or raises."""
    t0 = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(request(path))
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            parsed = parse_response(buf + chunk, eof=not chunk)
            buf += chunk
            if parsed:
                return parsed[0], time.perf_counter() - t0
            if not chunk:
                raise ConnectionError(f"closed after {len(buf)} bytes")
        raise TimeoutError("no complete response")


def open_many(port, n, payload, sel, on_sent, on_readable, max_pending, deadline):
    """Opens `n` non-blocking connections (at most `max_pending` connecting or sending at
    once) and writes `payload` on each; calls on_sent(sock, data) once a payload is fully
    written, after which the socket stays registered with `sel` for reading (data has 'i',
    its index). Read events seen meanwhile go to on_readable(key) at once. Returns
    (sent, failed); stops at `deadline`."""
    started = sent = failed = 0
    pending = 0
    while (sent + failed) < n and time.monotonic() < deadline:
        while started < n and pending < max_pending:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((HOST, port))
            if err not in (0, 115):  # EINPROGRESS
                s.close()
                failed += 1
                started += 1
                continue
            sel.register(s, selectors.EVENT_WRITE, {"i": started, "out": payload, "phase": "send"})
            started += 1
            pending += 1
        for key, mask in sel.select(0.05):
            data = key.data
            if data.get("phase") != "send":
                on_readable(key)
                continue
            s = key.fileobj
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                sel.unregister(s)
                s.close()
                failed += 1
                pending -= 1
                continue
            try:
                k = s.send(data["out"])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                sel.unregister(s)
                s.close()
                failed += 1
                pending -= 1
                continue
            data["out"] = data["out"][k:]
            if not data["out"]:
                pending -= 1
                sent += 1
                data["phase"] = "sent"
                sel.modify(s, selectors.EVENT_READ, data)
                on_sent(s, data)
    return sent, failed


# ----------------------------------------------------------------------------------------
# idle: many keep-alive connections cost neither threads nor much memory


def probe_idle(args):
    name = "idle"
    n = args.idle_conns
    print(f"\n== idle: {n} idle keep-alive connections, --workers {args.workers} ==", flush=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        return claim(name, f"file descriptor limit allows {n} connections", False,
                     f"RLIMIT_NOFILE soft={soft} hard={hard}; need {n + 200}")
    with Server(args.bin, args.workers) as srv:
        fetch(srv.port)  # the workers start after the listening line: let them
        base = srv.status()
        info(f"server pid {srv.pid} on port {srv.port}; inherited RLIMIT_NOFILE soft "
             f"{srv.nofile_limit()}; after one request: threads {base['Threads']}, "
             f"RSS {base['VmRSS'] / 1024:.1f} MiB")
        sel = selectors.DefaultSelector()
        conns = {}  # index -> dict
        served = bad_status = early_closed = 0
        t_first_idle = None
        t0 = time.monotonic()
        open_deadline = t0 + args.idle_open_seconds

        def on_sent(s, data):
            data["buf"] = b""
            data["t"] = time.monotonic()
            conns[data["i"]] = data
            data["sock"] = s

        def on_readable(key):
            nonlocal served, bad_status, early_closed, t_first_idle
            data, s = key.data, key.fileobj
            try:
                chunk = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if data["phase"] == "idle":
                # An idle connection should hear nothing: this is the server closing it.
                data["phase"] = "closed"
                early_closed += 1
                sel.unregister(s)
                s.close()
                return
            data["buf"] += chunk
            try:
                parsed = parse_response(data["buf"], eof=not chunk)
            except ValueError:
                parsed = (0, {}, b"", 0)
            if parsed:
                if parsed[0] == 200:
                    served += 1
                else:
                    bad_status += 1
                data["phase"] = "idle"
                data["buf"] = b""
                if t_first_idle is None:
                    t_first_idle = time.monotonic()
            elif not chunk:
                data["phase"] = "closed"
                bad_status += 1
                sel.unregister(s)
                s.close()

        try:
            sent, failed = open_many(srv.port, n, request("/"), sel, on_sent, on_readable,
                                     max_pending=400, deadline=open_deadline)
            # The last responses.
            while served + bad_status < sent and time.monotonic() < open_deadline:
                for key, _ in sel.select(0.05):
                    on_readable(key)
            t_open = time.monotonic() - t0
            info(f"opened {sent} connections ({failed} failed to connect), {served} answered "
                 f"200, {bad_status} not, in {t_open:.2f} s")

            # Measure while every connection is open and idle.
            t_measure = time.monotonic()
            st = srv.status()
            fds = srv.open_fds()
            lat, fresh_bad = [], 0
            for _ in range(20):
                try:
                    code, dt = fetch(srv.port)
                    lat.append(dt)
                    fresh_bad += code != 200
                except OSError as e:
                    fresh_bad += 1
                    info(f"fresh request failed: {e}")
            st2 = srv.status()
            # Anything readable on an idle connection now is the server closing it.
            for key, _ in sel.select(0):
                on_readable(key)
            t_end = time.monotonic()
            idle_now = sum(1 for d in conns.values() if d["phase"] == "idle")
            age = (t_end - t_first_idle) if t_first_idle else float("nan")
            info(f"measured at {t_measure - t0:.2f} s after the first connect; the oldest idle "
                 f"connection was {age:.2f} s idle at the end of the measurement "
                 f"(server idle timeout {IDLE_TIMEOUT:.0f} s)")
            info(f"server: threads {st['Threads']} (then {st2['Threads']}), RSS "
                 f"{st['VmRSS'] / 1024:.1f} MiB (then {st2['VmRSS'] / 1024:.1f} MiB, peak "
                 f"{st2['VmHWM'] / 1024:.1f} MiB), open fds {fds}")
            if lat:
                info(f"20 fresh requests on new connections: p50 {ms(pct(lat, 50))}, "
                     f"max {ms(max(lat))}, {fresh_bad} not 200")
            ok = True
            ok &= claim(name, f"all {n} connections served (200)", served == n,
                        f"{served}/{n} served, {bad_status} other, {failed} connect failures")
            ok &= claim(name, f"all {n} still open and idle after the measurement",
                        idle_now == n and early_closed == 0,
                        f"{idle_now} idle, {early_closed} closed by the server meanwhile, "
                        f"oldest idle {age:.2f} s < {IDLE_TIMEOUT:.0f} s")
            threads = max(st["Threads"], st2["Threads"])
            ok &= claim(name, f"threads <= workers + 4 = {args.workers + 4}",
                        threads <= args.workers + 4, f"{threads} threads")
            rss = max(st["VmRSS"], st2["VmRSS"]) / 1024
            ok &= claim(name, "RSS <= 100 MiB", rss <= 100, f"{rss:.1f} MiB")
            ok &= claim(name, "fresh requests answered in milliseconds (all 200, max < 100 ms)",
                        len(lat) == 20 and fresh_bad == 0 and max(lat) < 0.1,
                        f"p50 {ms(pct(lat, 50))}, max {ms(max(lat)) if lat else 'n/a'}")
            return ok
        finally:
            for d in conns.values():
                s = d.get("sock")
                if s is not None and d["phase"] != "closed":
                    try:
                        sel.unregister(s)
                    except (KeyError, ValueError):
                        pass
                    s.close()
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()


# ----------------------------------------------------------------------------------------
# slowloris: stalled half-heads hold no worker and are closed at the head timeout


def probe_slowloris(args):
    name = "slowloris"
    m = args.stalled
    print(f"\n== slowloris: {m} stalled request heads, --workers {args.workers} ==", flush=True)
    partial = b"GET / HTTP/1.1\r\nHost: x\r\nX-a: "
    with Server(args.bin, args.workers) as srv:
        info(f"server pid {srv.pid} on port {srv.port}")
        sel = selectors.DefaultSelector()
        stalled = {}

        def on_sent(s, data):
            data["t_sent"] = time.monotonic()
            data["buf"] = b""
            data["sock"] = s
            stalled[data["i"]] = data

        def on_readable(key):
            data, s = key.data, key.fileobj
            try:
                chunk = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            data["buf"] += chunk
            if not chunk:
                data["phase"] = "closed"
                data["t_closed"] = time.monotonic()
                sel.unregister(s)
                s.close()

        try:
            t0 = time.monotonic()
            sent, failed = open_many(srv.port, m, partial, sel, on_sent, on_readable,
                                     max_pending=400, deadline=t0 + 10)
            t_last_sent = max((d["t_sent"] for d in stalled.values()), default=t0)
            info(f"{sent} partial heads sent ({failed} connect failures) in "
                 f"{t_last_sent - t0:.2f} s")
            settle = time.monotonic() + 0.2  # let the server accept the last ones
            while time.monotonic() < settle:
                for key, _ in sel.select(0.05):
                    on_readable(key)
            st = srv.status()
            info(f"server: threads {st['Threads']}, RSS {st['VmRSS'] / 1024:.1f} MiB, "
                 f"open fds {srv.open_fds()}")

            # Fresh requests, one after another, while the stalled heads sit there.
            lat, fresh_bad, count = [], 0, 0
            t_fresh_end = time.monotonic() + args.fresh_seconds
            for _ in range(args.fresh_max):
                if time.monotonic() >= t_fresh_end:
                    break
                count += 1
                try:
                    code, dt = fetch(srv.port, timeout=2.0)
                    lat.append(dt)
                    fresh_bad += code != 200
                except OSError as e:
                    fresh_bad += 1
                    if fresh_bad <= 3:
                        info(f"fresh request failed: {e}")
                for key, _ in sel.select(0):
                    on_readable(key)
                time.sleep(args.fresh_gap_ms / 1000)
            early = sum(1 for d in stalled.values() if "t_closed" in d)
            info(f"{count} fresh requests in "
                 f"{args.fresh_seconds:.0f} s ({args.fresh_gap_ms} ms apart): p50 "
                 f"{ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}, max "
                 f"{ms(max(lat)) if lat else 'n/a'}, {fresh_bad} failed or not 200; "
                 f"{early} stalled connections closed so far")

            # Wait for the server to close the stalled connections at the head timeout.
            wait_until = t_last_sent + HEAD_TIMEOUT + args.margin
            info(f"waiting up to {wait_until - time.monotonic():.1f} s for the head timeout "
                 f"({HEAD_TIMEOUT:.0f} s after each partial head, + {args.margin:.0f} s margin)")
            while time.monotonic() < wait_until:
                if all("t_closed" in d for d in stalled.values()):
                    break
                for key, _ in sel.select(0.1):
                    on_readable(key)
            closed = [d for d in stalled.values() if "t_closed" in d]
            after = [d["t_closed"] - d["t_sent"] for d in closed]
            got408 = sum(1 for d in closed if d["buf"].startswith(b"HTTP/1.1 408"))
            other_bytes = sum(1 for d in closed if d["buf"] and not d["buf"].startswith(b"HTTP/1.1 408"))
            too_early = sum(1 for a in after if a < HEAD_TIMEOUT - 0.1)
            if after:
                info(f"closed by the server: {len(closed)}/{sent}, "
                     f"{min(after):.2f} s to {max(after):.2f} s after the partial head "
                     f"(median {pct(after, 50):.2f} s); {got408} got a 408 first, "
                     f"{other_bytes} got something else, {len(closed) - got408 - other_bytes} "
                     f"got nothing")
            else:
                info("closed by the server: none")
            ok = True
            ok &= claim(name, "fresh requests all answered 200 during the attack",
                        fresh_bad == 0 and len(lat) > 0, f"{len(lat)} ok, {fresh_bad} failed")
            ok &= claim(name, "fresh request p99 < 50 ms", bool(lat) and pct(lat, 99) < 0.05,
                        f"p50 {ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}")
            ok &= claim(name, f"all {m} stalled connections closed by the server at the head "
                        f"timeout ({HEAD_TIMEOUT:.0f} s, within +{args.margin:.0f} s)",
                        sent == m and len(closed) == m and too_early == 0,
                        f"{len(closed)}/{m} closed, {too_early} before {HEAD_TIMEOUT:.0f} s")
            info(f"(408 before the close on {got408}/{len(closed)}: the pool writes it once, "
                 f"without blocking, then lingers)")
            return ok
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()


# ----------------------------------------------------------------------------------------
# shutdown: SIGTERM finishes the requests in flight, then the process exits


def probe_shutdown(args):
    name = "shutdown"
    k = args.inflight
    print(f"\n== shutdown: SIGTERM with {k} requests of 500 ms in flight, --workers "
          f"{args.workers} ==", flush=True)
    with Server(args.bin, args.workers) as srv:
        info(f"server pid {srv.pid} on port {srv.port}")
        sel = selectors.DefaultSelector()
        conns = {}

        def on_sent(s, data):
            data["buf"] = b""
            data["sock"] = s
            conns[data["i"]] = data

        results = {}  # index -> (kind, detail, t)

        def on_readable(key):
            data, s = key.data, key.fileobj
            try:
                chunk = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            data["buf"] += chunk
            try:
                parsed = parse_response(data["buf"], eof=not chunk)
            except ValueError as e:
                parsed, chunk = None, b""
                data["buf"] = str(e).encode()
            if parsed:
                status, headers, body, _ = parsed
                kind = "other"
                if status == 200:
                    try:
                        doc = json.loads(body)
                        good = doc.get("query") == f"sleep_ms=500&i={data['i']}"
                        kind = "ok" if good else "wrong body"
                    except ValueError:
                        kind = "bad json"
                results[data["i"]] = (kind, status, headers.get("connection", ""),
                                      time.monotonic())
            elif not chunk:
                results[data["i"]] = ("no response" if not data["buf"] else "truncated",
                                      None, "", time.monotonic())
            if parsed or not chunk:
                sel.unregister(s)
                s.close()

        try:
            t0 = time.monotonic()
            # Each request carries its own index in the query, so each body can be checked
            # against the request it answers.
            sent = failed = 0
            for i in range(k):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex((HOST, srv.port))
                if err not in (0, 115):
                    s.close()
                    failed += 1
                    continue
                data = {"i": i, "out": request(f"/?sleep_ms=500&i={i}"), "phase": "send"}
                sel.register(s, selectors.EVENT_WRITE, data)
            while sent + failed < k and time.monotonic() < t0 + 10:
                for key, mask in sel.select(0.05):
                    data, s = key.data, key.fileobj
                    if data["phase"] != "send":
                        on_readable(key)
                        continue
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        sel.unregister(s)
                        s.close()
                        failed += 1
                        continue
                    try:
                        n = s.send(data["out"])
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        sel.unregister(s)
                        s.close()
                        failed += 1
                        continue
                    data["out"] = data["out"][n:]
                    if not data["out"]:
                        data["phase"] = "sent"
                        sent += 1
                        sel.modify(s, selectors.EVENT_READ, data)
                        on_sent(s, data)
            t_sent = time.monotonic()
            # Give the event loop a moment to read every head it has been sent: a request the
            # server has not read yet is not "in flight" (shutdown closes it, by design).
            deadline = t_sent + args.term_grace
            while time.monotonic() < deadline:
                for key, _ in sel.select(0.05):
                    on_readable(key)
            before = len(results)
            st = srv.status()
            os.kill(srv.pid, signal.SIGTERM)
            t_term = time.monotonic()
            info(f"{sent} requests sent in {t_sent - t0:.2f} s ({failed} connect failures); "
                 f"SIGTERM {t_term - t_sent:.2f} s after the last one, {before} answered before it;"
                 f" server had {st['Threads']} threads")
            expected = -(-k // args.workers) * 0.5
            info(f"with {args.workers} workers the queue needs about {expected:.1f} s to drain "
                 f"(shutdown deadline {SHUTDOWN_TIMEOUT:.0f} s)")
            refused = None
            exit_at = None
            wait_until = t_term + args.exit_wait
            while time.monotonic() < wait_until:
                for key, _ in sel.select(0.1):
                    on_readable(key)
                if refused is None and time.monotonic() - t_term > 1.0:
                    try:
                        with socket.create_connection((HOST, srv.port), timeout=1.0) as s:
                            s.sendall(request("/"))
                            s.settimeout(1.0)
                            refused = "accepted (answered: %r)" % s.recv(12)
                    except OSError as e:
                        refused = f"refused ({e.__class__.__name__})"
                if exit_at is None and srv.proc.poll() is not None:
                    exit_at = time.monotonic()
                if exit_at is not None and len(results) == sent:
                    break
            kinds = {}
            for kind, *_ in results.values():
                kinds[kind] = kinds.get(kind, 0) + 1
            unanswered = sent - len(results)
            after_term = [r[3] - t_term for r in results.values() if r[3] >= t_term]
            closes = sum(1 for r in results.values() if r[2].lower() == "close")
            info(f"responses: {kinds}, {unanswered} still waiting; last response "
                 f"{max(after_term) if after_term else 0:.2f} s after SIGTERM; "
                 f"{closes} said `connection: close`")
            info(f"new connection 1 s after SIGTERM: {refused}")
            if exit_at is not None:
                info(f"server exited {exit_at - t_term:.2f} s after SIGTERM with code "
                     f"{srv.proc.returncode}")
            else:
                info(f"server still running {args.exit_wait:.0f} s after SIGTERM")
                print(srv.log_tail(), flush=True)
            ok = True
            ok &= claim(name, f"every in-flight request ({k}) got a complete 200 JSON response",
                        sent == k and kinds.get("ok", 0) == k,
                        f"{kinds.get('ok', 0)}/{k} complete and matching")
            ok &= claim(name, f"server exited by itself within {args.exit_wait:.0f} s of SIGTERM",
                        exit_at is not None and srv.proc.returncode == 0,
                        "did not exit" if exit_at is None else
                        f"{exit_at - t_term:.2f} s, code {srv.proc.returncode}")
            return ok
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()


def probe_abandoned(args):
    """Overload with clients that give up: G clients each send one request of 50 ms to a pool
    of 2 workers (40 requests a second), and each closes its connection if no answer came
    within 2 s, as a client with a timeout does. A fresh request sent once they have all
    given up must not wait for the pool to serve every abandoned request (8 s of work for
    the 320 or so left): the workers drop a queued request whose client has gone."""
    import threading
    name = "abandoned"
    n, give_up, workers = args.givers_up, 2.0, 2
    print(f"\n== abandoned: {n} clients give up after {give_up:.0f} s on {workers} workers "
          f"with a 50 ms gateway ==", flush=True)
    with Server(args.bin, workers) as srv:
        info(f"server pid {srv.pid} on port {srv.port}")
        answered = []

        def client():
            try:
                with socket.create_connection((HOST, srv.port), timeout=give_up) as s:
                    s.sendall(request("/?sleep_ms=50"))
                    if s.recv(12).startswith(b"HTTP/1.1 200"):
                        answered.append(1)
            except OSError:
                pass  # gave up: the connection is closed unanswered

        threads = [threading.Thread(target=client, daemon=True) for _ in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=give_up + 10)
        t1 = time.monotonic()
        status, took = fetch(srv.port, "/", timeout=30.0)
        info(f"{len(answered)}/{n} answered before their clients gave up (the pool can serve "
             f"about {workers * 20 * give_up:.0f} in {give_up:.0f} s); all done in "
             f"{t1 - t0:.1f} s; a fresh request then took {took:.2f} s ({status})")
        return claim(name, "a fresh request after the burst is answered within 1 s",
                     status == 200 and took < 1.0, f"{took:.2f} s")


# ----------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["idle", "slowloris", "shutdown", "abandoned", "all"])
    p.add_argument("--bin", default=DEFAULT_BIN, help="server binary (the echo example)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--idle-conns", type=int, default=10000)
    p.add_argument("--idle-open-seconds", type=float, default=8.0,
                   help="time allowed to open and serve the idle connections")
    p.add_argument("--stalled", type=int, default=1000)
    p.add_argument("--fresh-seconds", type=float, default=5.0)
    p.add_argument("--fresh-gap-ms", type=float, default=1.0,
                   help="pause between fresh requests (keeps client ports in TIME_WAIT few)")
    p.add_argument("--fresh-max", type=int, default=20000)
    p.add_argument("--margin", type=float, default=5.0,
                   help="seconds past the head timeout to wait for closes")
    p.add_argument("--inflight", type=int, default=200)
    p.add_argument("--givers-up", type=int, default=400)
    p.add_argument("--exit-wait", type=float, default=35.0)
    p.add_argument("--term-grace", type=float, default=0.3,
                   help="seconds between the last request sent and SIGTERM")
    args = p.parse_args()

    # Raise the descriptor limit first: the server started afterwards inherits it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"RLIMIT_NOFILE: soft {soft} -> {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} "
          f"(hard {hard}); servers started by this script inherit it", flush=True)
    print(f"server binary: {args.bin}", flush=True)

    probes = {"idle": probe_idle, "slowloris": probe_slowloris, "shutdown": probe_shutdown,
              "abandoned": probe_abandoned}
    order = list(probes) if args.command == "all" else [args.command]
    for key in order:
        try:
            probes[key](args)
        except (RuntimeError, OSError) as e:
            claim(key, "probe ran to completion", False, f"{e.__class__.__name__}: {e}")

    print("\n== summary ==")
    for probe, text, ok, detail in RESULTS:
        print(f"  {'PASS' if ok else 'FAIL'}  {probe:<9} {text}" + (f"  ({detail})" if detail else ""))
    failed = sum(1 for r in RESULTS if not r[2])
    print(f"\n{len(RESULTS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    # A SIGTERM to the probe unwinds like an exception, so every server is still killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
