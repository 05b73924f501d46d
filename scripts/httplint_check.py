#!/usr/bin/env python3
"""Lints every captured response with httplint, the checker behind REDbot.

Usage (from the crate root, after `cargo build --release --examples` and
`python3 -m pip install redbot`, which brings `httplint`):

    python3 scripts/httplint_check.py [--out DIR | --from DIR] [--backends dev,pool]

It captures the exchanges with `http_capture.py` (into `--out DIR`, or a temporary
directory), or reads a capture made before (`--from DIR`, e.g. the one
`httpolice_check.py --out DIR` made). Each response, interim ones included, goes through
`httplint.HttpResponseLinter` as REDbot feeds it: status line, header fields, the content
with the transfer coding undone, trailers. The linter is told what it cannot see on its
own: the request it answers (parsed from the inbound stream: method, target, fields) and
whether that request was a `HEAD`. A `BAD` note on any response, or bytes on a response
stream that are not a response to a request sent, fails the check; `WARN` and `INFO` notes
are listed. The one exception: the notes httplint adds for a 414 or 505 whatever the
exchange (see STATUS_NOTES), on the answer to a request made to draw that status. The requests themselves are not linted (several are malformed on purpose).
Exit status: 0 pass, 1 a check failed, 2 httplint is not installed.
"""

import argparse
import collections
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_capture  # noqa: E402

# Notes httplint's StatusChecker adds for a status whatever the exchange, at level BAD
# because, to REDbot's user, the request failed. They describe the status, not a fault in
# the response, so they are accepted on the answer to a request made to draw that status
# (a scenario's `expected_status`, which the capture checks), and nowhere else.
STATUS_NOTES = {
    "STATUS_URI_TOO_LONG": 414,
    "STATUS_VERSION_NOT_SUPPORTED": 505,
}


def parse_requests(data):
    """The request heads on an inbound stream: (method, target, version, fields) each.

    Bodies are skipped by their framing; parsing stops at the first thing it cannot frame
    (a malformed request is the last one the server reads anyway)."""
    requests, pos = [], 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        lines = data[pos:end].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            break
        fields = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields.append((name, value.strip(b" \t")))
        requests.append((parts[0], parts[1], parts[2].split(b"/", 1)[-1], fields))
        pos = end + 4
        names = {n.lower(): v for n, v in fields}
        te = names.get(b"transfer-encoding", b"").lower()
        if te:
            if not te.rstrip().endswith(b"chunked"):
                break
            try:
                _, _, pos = http_capture.read_chunked(data, pos, eof=True)
            except (http_capture.Incomplete, ValueError):
                break
        elif b"content-length" in names:
            try:
                pos += int(names[b"content-length"])
            except ValueError:
                break
    return requests


def request_linter(httplint, request):
    method, target, version, fields = request
    linter = httplint.HttpRequestLinter()
    linter.process_request_topline(method, target, version)
    linter.process_headers(fields)
    linter.finish_content(True)
    return linter


def lint_response(httplint, response, request, method, when):
    linter = httplint.HttpResponseLinter(start_time=when)
    linter.is_head_response = method == "HEAD"
    if request is not None:
        linter.request = request_linter(httplint, request)
        target = request[1].decode("latin-1")
        if target.startswith("/"):
            linter.base_uri = "http://127.0.0.1" + target
    version = response["version"].split("/", 1)[1].encode()
    linter.process_response_topline(version, str(response["status"]).encode(),
                                    response["reason"].encode("latin-1"))
    linter.process_headers([(n.encode("latin-1"), v.encode("latin-1"))
                            for n, v in response["headers"]])
    linter.feed_content(response["body"])
    linter.transfer_length = len(response["raw"])
    linter.finish_content(True, [(n.encode("latin-1"), v.encode("latin-1"))
                                 for n, v in response["trailers"]])
    notes = []
    for note in linter.notes:
        notes.append((note.level.name, type(note).__name__, note.summary))
        for sub in note.subnotes:
            notes.append((sub.level.name, type(sub).__name__, "  " + sub.summary))
    return notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--out", help="capture into DIR (kept)")
    src.add_argument("--from", dest="from_dir", help="check a capture made before in DIR")
    ap.add_argument("--backends", type=http_capture.backends_arg, default=["dev", "pool"])
    ap.add_argument("--bin-dir", default=http_capture.BIN_DIR)
    ap.add_argument("-v", "--verbose", action="store_true", help="list every note, GOOD too")
    args = ap.parse_args()
    http_capture.stop_on_sigterm()

    try:
        import httplint
    except ImportError:
        print("httplint is not installed: python3 -m pip install redbot", file=sys.stderr)
        sys.exit(2)
    print(f"httplint {httplint.__version__}")

    failures = []
    tmp = None
    if args.from_dir:
        manifest = http_capture.load_manifest(args.from_dir)
    else:
        out = args.out or (tmp := tempfile.mkdtemp(prefix="sgi-capture-"))
        print(f"capturing into {out}")
        manifest = http_capture.capture(out, args.backends, args.bin_dir)
    try:
        tally = collections.Counter()
        where = collections.defaultdict(list)
        n_responses = 0
        for r in manifest:
            conn = f"{r['backend']}/{r['scenario']}"
            for p in r["problems"]:
                failures.append(f"{conn}: capture: {p}")
            with open(r["inbound"], "rb") as f:
                requests = parse_requests(f.read())
            with open(r["outbound"], "rb") as f:
                outbound = f.read()
            # When the exchange happened, for the `Date` check (the file may be a copy).
            when = r.get("captured_at") or os.path.getmtime(r["outbound"])
            groups, leftover = http_capture.split_responses(outbound, r["methods"])
            if leftover.strip():
                failures.append(f"{conn}: {len(leftover)} bytes on the response stream that are "
                                f"not a response to a request sent: {leftover[:80]!r}")
            for i, group in enumerate(groups):
                method = r["methods"][i]
                request = requests[i] if i < len(requests) else None
                target = request[1].decode("latin-1")[:50] if request else "?"
                for response in group:
                    n_responses += 1
                    label = f"{conn} {method} {target} -> {response['status']}"
                    for level, name, summary in lint_response(httplint, response, request,
                                                              method, when):
                        if level == "GOOD" and not args.verbose:
                            continue
                        if (level == "BAD" and STATUS_NOTES.get(name) == response["status"]
                                and r.get("expected_status") == response["status"]):
                            level = "BAD, accepted: describes the status drawn on purpose"
                        elif level == "BAD":
                            failures.append(f"{label}: BAD: {summary.strip()} ({name})")
                        tally[(level, summary.strip())] += 1
                        where[(level, summary.strip())].append(label)

        print(f"\nhttplint notes over {n_responses} responses on {len(manifest)} connections "
              "(both backends; GOOD notes hidden unless -v):")
        order = {"BAD": 0, "WARN": 2, "INFO": 3, "GOOD": 4}
        for key in sorted(tally, key=lambda k: (order.get(k[0], 1), k[1])):
            level, summary = key
            print(f"  [{level}] x{tally[key]} {summary}")
            http_capture.print_examples(where[key], 4)
        if not tally:
            print("  none")
        http_capture.verdict(failures, "PASS: no BAD httplint note on any response")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
