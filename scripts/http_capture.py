#!/usr/bin/env python3
"""Captures real HTTP/1.1 exchanges with the examples, as raw TCP streams, for outside checkers.

Usage (from the crate root, after `cargo build --release --examples`):

    python3 scripts/http_capture.py --out DIR [--backends dev,pool]

For each backend it starts the `echo`, `streaming`, `files` and `statuses` examples
(`--server BACKEND --bind 127.0.0.1:0`), acts as the client over raw sockets, and writes
one pair of files per TCP connection: `DIR/BACKEND-NN-NAME.inbound` (every byte sent, in
order) and `DIR/BACKEND-NN-NAME.outbound` (every byte read back). That is HTTPolice's
`streams` input: `httpolice -i streams IN1 OUT1 IN2 OUT2 ...`, inbound first in each pair.
`DIR/manifest.json` lists the connections: backend, example, scenario, the two paths, the
method of each request sent (response framing depends on it), the statuses received,
whether the connection carries a request that is malformed on purpose (`malformed`), and
the status the server must refuse a request with (`expected_status`; the capture checks
it).

The client reads until every expected response is complete (framing from the status, the
request method, `Content-Length`, chunked coding, or the server closing), then a short
grace read so that stray bytes (a body after a 204, say) land in the capture too. Where the
server must close (HTTP/1.0 without keep-alive, `Connection: close`, a rejected request),
it reads to EOF and fails if the connection stays open. Standard library only; every wait
is bounded, and the servers are stopped (SIGTERM, then SIGKILL) whatever happens.
"""

import argparse
import gzip
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN_DIR = os.path.join(ROOT, "target", "release", "examples")
EXAMPLES = ("echo", "streaming", "files", "statuses")

READ_DEADLINE = 10.0  # per connection, for all its responses
GRACE = 0.25  # extra read after the last expected response
CONTINUE_WAIT = 5.0  # how long to wait for `100 Continue` before sending the body anyway

UA = "User-Agent: sgi-http-capture/1\r\n"


# ----------------------------------------------------------------------------------------
# Response framing (client side)


class Incomplete(Exception):
    """The buffer does not hold a whole response yet."""


def parse_response(buf, method, eof):
    """Parses one response (interim or final) at the front of `buf`.

    Returns `(response, used)`; `response` is a dict with `status`, `reason`, `version`,
    `headers` (list of (name, value) str pairs, as sent), `body` (bytes, transfer coding
    removed), `trailers`, `framing` and `raw` (the bytes on the wire). Raises `Incomplete`
    if more bytes are needed, `ValueError` if the bytes cannot be a response.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if eof and buf:
            raise ValueError(f"connection closed inside a response head: {buf[:200]!r}")
        raise Incomplete
    head = buf[:end].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        headers.append((name, value.strip(" \t")))
    pos = end + 4
    fields = {}
    for name, value in headers:
        fields.setdefault(name.lower(), []).append(value)
    body, trailers = b"", []
    if status < 200 or status in (204, 304) or method == "HEAD":
        framing = "none"
    elif "transfer-encoding" in fields:
        codings = [c.strip().lower() for v in fields["transfer-encoding"] for c in v.split(",")]
        if codings[-1:] != ["chunked"]:
            raise ValueError(f"transfer-encoding {codings} does not end in chunked")
        framing = "chunked"
        body, trailers, pos = read_chunked(buf, pos, eof)
    elif "content-length" in fields:
        values = {v.strip() for v in fields["content-length"]}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise ValueError(f"bad content-length {fields['content-length']}")
        n = int(values.pop())
        framing = f"length {n}"
        if len(buf) - pos < n:
            if eof:
                raise ValueError(f"connection closed {n - (len(buf) - pos)} bytes short of the body")
            raise Incomplete
        body, pos = buf[pos:pos + n], pos + n
    else:
        framing = "close-delimited"
        if not eof:
            raise Incomplete
        body, pos = buf[pos:], len(buf)
    response = {
        "status": status,
        "reason": parts[2] if len(parts) > 2 else "",
        "version": parts[0],
        "headers": headers,
        "body": body,
        "trailers": trailers,
        "framing": framing,
        "raw": buf[:pos],
    }
    return response, pos


def read_chunked(buf, pos, eof):
    body = bytearray()
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            if eof:
                raise ValueError("connection closed inside a chunk size line")
            raise Incomplete
        size_text = buf[pos:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError(f"bad chunk size {buf[pos:line_end]!r}") from None
        pos = line_end + 2
        if size == 0:
            break
        if len(buf) < pos + size + 2:
            if eof:
                raise ValueError("connection closed inside a chunk")
            raise Incomplete
        body += buf[pos:pos + size]
        if buf[pos + size:pos + size + 2] != b"\r\n":
            raise ValueError("chunk data not followed by CRLF")
        pos += size + 2
    trailers = []
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            if eof:
                raise ValueError("connection closed inside the trailer section")
            raise Incomplete
        line = buf[pos:line_end].decode("latin-1")
        pos = line_end + 2
        if not line:
            return bytes(body), trailers, pos
        name, _, value = line.partition(":")
        trailers.append((name, value.strip(" \t")))


def print_examples(labels, limit):
    """Prints the first `limit` of `labels`, indented, and how many more there are."""
    for label in labels[:limit]:
        print(f"      {label}")
    if len(labels) > limit:
        print(f"      ... and {len(labels) - limit} more")


def verdict(failures, passed):
    """Prints the failures and exits 1, or prints the `passed` line."""
    if failures:
        print("\nFAIL:")
        for failure in failures:
            print(f"  {failure}")
        sys.exit(1)
    print(passed)


def split_responses(data, methods):
    """Splits a whole outbound stream into responses, one list (interim + final) per request.

    Returns `(per_request, leftover)`: `leftover` is the bytes that did not parse or were
    not expected (a response to no request, a stray body).
    """
    per_request, pos = [], 0
    for method in methods:
        group = []
        while True:
            try:
                response, used = parse_response(data[pos:], method, eof=True)
            except (Incomplete, ValueError):
                return per_request + ([group] if group else []), data[pos:]
            group.append(response)
            pos += used
            if response["status"] >= 200 or response["status"] == 101:
                break
        per_request.append(group)
    return per_request, data[pos:]


# ----------------------------------------------------------------------------------------
# One connection as a client


class Connection:
    """A client connection that records both directions."""

    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inbound = bytearray()
        self.outbound = bytearray()
        self.pos = 0  # parsed up to here in `outbound`
        self.eof = False
        self.methods = []
        self.responses = []  # one list (interim + final) per request
        self.problems = []

    def send(self, data, methods=()):
        self.inbound += data
        self.methods += list(methods)
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Reads once, waiting until `deadline`; returns False on timeout."""
        left = deadline - time.monotonic()
        if left <= 0 or self.eof:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            self.problems.append("connection reset by the server")
            self.eof = True
            return True
        if not chunk:
            self.eof = True
        self.outbound += chunk
        return True

    def read_response(self, method, interim_only=False, wait=READ_DEADLINE):
        """Reads the next response to a `method` request: the final one, or (with
        `interim_only`) the first interim one. Returns the response, or None on timeout."""
        deadline = time.monotonic() + wait
        while True:
            try:
                response, used = parse_response(bytes(self.outbound[self.pos:]), method, self.eof)
            except Incomplete:
                if self.eof:
                    return None
                if not self._fill(deadline):
                    return None
                continue
            except ValueError as e:
                self.problems.append(f"unparseable response: {e}")
                return None
            self.pos += used
            if not self.responses or self._group_done(self.responses[-1]):
                self.responses.append([])
            self.responses[-1].append(response)
            if interim_only and response["status"] < 200:
                return response
            if response["status"] >= 200 or response["status"] == 101:
                return response

    @staticmethod
    def _group_done(group):
        return bool(group) and (group[-1]["status"] >= 200 or group[-1]["status"] == 101)

    def expect(self, n=None):
        """Reads final responses for the requests sent and not yet answered."""
        answered = sum(1 for g in self.responses if self._group_done(g))
        for method in self.methods[answered:][:n]:
            if self.read_response(method) is None:
                self.problems.append(f"no complete response to request {answered + 1} ({method})")
                return False
            answered += 1
        return True

    def expect_close(self, wait=READ_DEADLINE):
        """Reads to EOF; the server must close."""
        deadline = time.monotonic() + wait
        while not self.eof:
            if not self._fill(deadline):
                self.problems.append(f"server did not close the connection within {wait:.0f} s")
                return False
        return True

    def finish(self):
        """A short grace read for stray bytes, then close."""
        deadline = time.monotonic() + GRACE
        while not self.eof and self._fill(deadline):
            pass
        if len(self.outbound) > self.pos:
            extra = bytes(self.outbound[self.pos:])
            if not self.eof or extra.strip():
                self.problems.append(f"{len(extra)} unexpected bytes after the last response: "
                                     f"{extra[:80]!r}")
        self.sock.close()


# ----------------------------------------------------------------------------------------
# Scenarios: (example, name, malformed, function(conn))


def req(method, target, version="HTTP/1.1", headers="", body=b"", host=True):
    head = f"{method} {target} {version}\r\n"
    if host:
        head += "Host: 127.0.0.1\r\n"
    head += UA + headers + "\r\n"
    return head.encode("latin-1") + body


def chunked(*pieces):
    out = b""
    for p in pieces:
        out += f"{len(p):x}\r\n".encode() + p + b"\r\n"
    return out + b"0\r\n\r\n"


def keepalive_pairs(c):
    for target in ("/first", "/second?n=2", "/third"):
        c.send(req("GET", target, headers="Accept: application/json\r\n"), ["GET"])
        c.expect()


def pipelined(c):
    body = b"a=1&b=2"
    c.send(
        req("GET", "/p1")
        + req("HEAD", "/p2")
        + req("POST", "/p3", headers="Content-Type: application/x-www-form-urlencoded\r\n"
              f"Content-Length: {len(body)}\r\n", body=body)
        + req("GET", "/p4"),
        ["GET", "HEAD", "POST", "GET"],
    )
    c.expect()


def head_then_get(c):
    c.send(req("HEAD", "/resource?x=1"), ["HEAD"])
    c.expect()
    c.send(req("GET", "/resource?x=1"), ["GET"])
    c.expect()


def post_length(c):
    body = b'{"hello": "world"}'
    c.send(req("POST", "/items", headers="Content-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n", body=body), ["POST"])
    c.expect()


def post_chunked(c):
    c.send(req("POST", "/upload", headers="Content-Type: text/plain\r\n"
               "Transfer-Encoding: chunked\r\n",
               body=chunked(b"hello ", b"chunked ", b"world\n")), ["POST"])
    c.expect()
    # A second request on the same connection: the chunked body ended where it should.
    c.send(req("GET", "/after-chunked"), ["GET"])
    c.expect()


def expect_continue(c):
    body = b"the body, sent after 100 Continue\n"
    c.send(req("POST", "/expect", headers="Content-Type: text/plain\r\n"
               f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n"))
    interim = c.read_response("POST", interim_only=True, wait=CONTINUE_WAIT)
    if interim is None or interim["status"] != 100:
        got = "nothing" if interim is None else f"a {interim['status']}"
        c.problems.append(f"expected 100 Continue within {CONTINUE_WAIT:.0f} s, got {got}")
        if interim is not None:
            c.methods.append("POST")
            return
    c.send(body, ["POST"])
    c.expect()


def http10_close(c):
    c.send(req("GET", "/ten", version="HTTP/1.0", host=False), ["GET"])
    c.expect()
    c.expect_close()


def http10_keepalive(c):
    for target in ("/ten-a", "/ten-b"):
        c.send(req("GET", target, version="HTTP/1.0",
                   headers="Connection: keep-alive\r\n"), ["GET"])
        c.expect()


def connection_close(c):
    c.send(req("GET", "/bye", headers="Connection: close\r\n"), ["GET"])
    c.expect()
    c.expect_close()


def options_star(c):
    c.send(req("OPTIONS", "*"), ["OPTIONS"])
    c.expect()


def absolute_form(c):
    c.send(req("GET", "http://127.0.0.1/absolute?q=1"), ["GET"])
    c.expect()


def gateway_panic(c):
    # The server's own 500 (with Connection: close) for a gateway that panics.
    c.send(req("GET", "/panic"), ["GET"])
    c.expect()
    c.expect_close()


def rejected(status, target="/", version="HTTP/1.1", headers="", body=b"", method="GET",
             host=True):
    """A request the server must refuse with `status` (its own answer), then close."""
    def run(c):
        c.send(req(method, target, version=version, headers=headers, body=body, host=host),
               [method])
        if c.expect() and c.responses[-1][-1]["status"] != status:
            c.problems.append(f"expected {status}, got {c.responses[-1][-1]['status']}")
        c.expect_close()
    run.expected_status = status
    return run


def streamed(c):
    c.send(req("GET", "/"), ["GET"])
    c.expect()


def streamed_http10(c):
    c.send(req("GET", "/", version="HTTP/1.0", host=False), ["GET"])
    c.expect()  # close-delimited: complete only at EOF


def file_get_head_404(c):
    for method, target in (("GET", "/Cargo.toml"), ("HEAD", "/Cargo.toml"),
                           ("GET", "/Cargo.lock"), ("GET", "/no/such/file.txt"),
                           ("GET", "/examples/")):
        c.send(req(method, target), [method])
        c.expect()


def file_method_not_allowed(c):
    c.send(req("DELETE", "/Cargo.toml"), ["DELETE"])
    c.expect()


def statuses_sequential(c):
    for method, target, headers in (
        ("GET", "/resource", ""),
        ("GET", "/resource", 'If-None-Match: "v1"\r\n'),
        ("HEAD", "/resource", 'If-None-Match: "v1"\r\n'),
        ("GET", "/no-content", ""),
        ("GET", "/no-content-with-body", ""),
        ("POST", "/reset-content", "Content-Length: 0\r\n"),
        ("GET", "/missing", ""),
    ):
        c.send(req(method, target, headers=headers), [method])
        c.expect()


def statuses_pipelined(c):
    # Bodiless responses back to back: a stray body would break the framing of the next one.
    c.send(
        req("GET", "/no-content-with-body")
        + req("GET", "/resource", headers='If-None-Match: "v1"\r\n')
        + req("GET", "/no-content")
        + req("POST", "/reset-content", headers="Content-Length: 0\r\n")
        + req("GET", "/missing")
        + req("GET", "/resource"),
        ["GET", "GET", "GET", "POST", "GET", "GET"],
    )
    c.expect()


SCENARIOS = [
    ("echo", "keepalive-pairs", False, keepalive_pairs),
    ("echo", "pipelined", False, pipelined),
    ("echo", "head-then-get", False, head_then_get),
    ("echo", "post-length", False, post_length),
    ("echo", "post-chunked", False, post_chunked),
    ("echo", "expect-100-continue", False, expect_continue),
    ("echo", "http10-close", False, http10_close),
    ("echo", "http10-keepalive", False, http10_keepalive),
    ("echo", "connection-close", False, connection_close),
    ("echo", "options-star", False, options_star),
    ("echo", "absolute-form", False, absolute_form),
    ("echo", "gateway-panic-500", False, gateway_panic),
    # Valid requests the server refuses by its limits or its version: its own answers.
    ("echo", "uri-too-long-414", False, rejected(414, target="/" + "a" * 5000)),
    ("echo", "field-too-large-431", False,
     rejected(431, headers="Big-Field: " + "b" * 9000 + "\r\n")),
    ("echo", "http2-505", False, rejected(505, version="HTTP/2.0")),
    ("echo", "te-gzip-chunked-501", False, rejected(
        501, method="POST", headers="Content-Type: text/plain\r\n"
        "Transfer-Encoding: gzip, chunked\r\n", body=chunked(gzip.compress(b"hello\n")))),
    # Malformed on purpose: HTTPolice will (rightly) flag these requests.
    ("echo", "malformed-cl-te-400", True, rejected(
        400, method="POST", headers="Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        body=b"0\r\n\r\n")),
    ("echo", "malformed-no-host-400", True, rejected(400, target="/no-host", host=False)),
    ("echo", "malformed-expect-417", True, rejected(417, headers="Expect: something-else\r\n")),
    ("echo", "malformed-te-gzip-400", True, rejected(
        400, method="POST", headers="Transfer-Encoding: gzip\r\n", body=b"xyz")),
    ("echo", "malformed-body-too-large-413", True, rejected(
        413, method="POST", headers="Content-Length: 100000000\r\n")),
    ("streaming", "streamed-chunked", False, streamed),
    ("streaming", "streamed-http10", False, streamed_http10),
    ("files", "file-get-head-404", False, file_get_head_404),
    ("files", "file-405", False, file_method_not_allowed),
    ("statuses", "statuses-sequential", False, statuses_sequential),
    ("statuses", "statuses-pipelined", False, statuses_pipelined),
]


# ----------------------------------------------------------------------------------------
# Servers


def _die_with_parent():
    """In the server's process: be sent SIGTERM if this script dies, even by SIGKILL."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_on_sigterm():
    """Turns SIGTERM into SystemExit, so the `finally` blocks stop the servers."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


class Server:
    def __init__(self, example, backend, bin_dir):
        self.example, self.backend = example, backend
        self.binary = os.path.join(bin_dir, example)
        self.proc = None
        self.port = None
        self.stderr = tempfile.TemporaryFile()

    def start(self, timeout=30.0):
        if not os.access(self.binary, os.X_OK):
            raise SystemExit(f"no binary at {self.binary}: run `cargo build --release --examples`")
        self.proc = subprocess.Popen(
            [self.binary, "--server", self.backend, "--bind", f"{HOST}:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr,
            env=dict(os.environ, RUST_LOG="warn"), cwd=ROOT, bufsize=0,
            preexec_fn=_die_with_parent,
        )
        buf = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{self} did not announce itself: {buf!r}\n{self.log()}")
                if sel.select(0.2):
                    buf += os.read(self.proc.stdout.fileno(), 4096)
        line = buf.split(b"\n", 1)[0].decode().strip()
        prefix = f"listening on http://{HOST}:"
        if not line.startswith(prefix):
            self.stop()
            raise RuntimeError(f"{self}: unexpected first line {line!r}")
        self.port = int(line[len(prefix):])
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-4000:]

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()

    def __str__(self):
        return f"{self.example} --server {self.backend}"


def capture(out_dir, backends, bin_dir=BIN_DIR, log=print):
    """Runs every scenario on every backend; writes the streams and the manifest.

    Returns the manifest (a list of connection records); records with `problems` failed
    on the client side (no response, no close, unparseable bytes)."""
    os.makedirs(out_dir, exist_ok=True)
    manifest = []
    n = 0
    for backend in backends:
        for example in EXAMPLES:
            scenarios = [s for s in SCENARIOS if s[0] == example]
            if not scenarios:
                continue
            server = Server(example, backend, bin_dir)
            server.start()
            try:
                for _, name, malformed, run in scenarios:
                    n += 1
                    stem = os.path.join(out_dir, f"{backend}-{n:02d}-{name}")
                    captured_at = time.time()
                    conn = Connection(server.port)
                    try:
                        run(conn)
                    except OSError as e:
                        conn.problems.append(f"socket error: {e}")
                    finally:
                        conn.finish()
                    with open(stem + ".inbound", "wb") as f:
                        f.write(conn.inbound)
                    with open(stem + ".outbound", "wb") as f:
                        f.write(conn.outbound)
                    statuses = " ".join(
                        "+".join(str(r["status"]) for r in group) for group in conn.responses)
                    record = {
                        "backend": backend,
                        "example": example,
                        "scenario": name,
                        "malformed": malformed,
                        "expected_status": getattr(run, "expected_status", None),
                        "inbound": stem + ".inbound",
                        "outbound": stem + ".outbound",
                        "methods": conn.methods,
                        "statuses": [[r["status"] for r in g] for g in conn.responses],
                        "closed_by_server": conn.eof,
                        "captured_at": captured_at,
                        "problems": conn.problems,
                    }
                    manifest.append(record)
                    flag = "  PROBLEM: " + "; ".join(conn.problems) if conn.problems else ""
                    log(f"  {backend:4} {example:9} {name:22} {len(conn.inbound):5} B out, "
                        f"{len(conn.outbound):5} B in, statuses {statuses or '-'}{flag}")
                if not server.alive():
                    raise RuntimeError(f"{server} died during the capture:\n{server.log()}")
            finally:
                server.stop()
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def load_manifest(out_dir):
    with open(os.path.join(out_dir, "manifest.json")) as f:
        return json.load(f)


def backends_arg(text):
    backends = [b for b in text.split(",") if b]
    for b in backends:
        if b not in ("dev", "pool"):
            raise argparse.ArgumentTypeError(f"unknown backend {b!r} (dev, pool)")
    return backends


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory for the streams and manifest.json")
    ap.add_argument("--backends", type=backends_arg, default=["dev", "pool"])
    ap.add_argument("--bin-dir", default=BIN_DIR)
    args = ap.parse_args()
    stop_on_sigterm()
    manifest = capture(args.out, args.backends, args.bin_dir)
    bad = [m for m in manifest if m["problems"]]
    print(f"{len(manifest)} connections captured in {args.out}, {len(bad)} with client-side problems")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
