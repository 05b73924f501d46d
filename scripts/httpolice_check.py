#!/usr/bin/env python3
"""Checks real exchanges with both backends against HTTPolice, a conformance linter for HTTP.

Usage (from the crate root, after `cargo build --release --examples` and
`python3 -m pip install httpolice 'bitstring<4'`):

    python3 scripts/httpolice_check.py [--out DIR | --from DIR] [--backends dev,pool]

It captures the exchanges with `http_capture.py` (into `--out DIR`, or a temporary
directory), or reads a capture made before (`--from DIR`), then:

1. runs `httpolice -i streams --fail-on error` over every connection whose requests are
   well formed (one inbound/outbound file pair per connection): it must exit 0;
2. runs it again over the connections that carry a request malformed on purpose
   (`Content-Length` with `Transfer-Encoding`, no `Host`, ...). HTTPolice rightly reports
   errors about those requests, so that run's exit status is not the verdict; instead
3. walks HTTPolice's results for every connection through its Python API, which says whether
   each notice is about a request, a response, or the response stream (unparseable bytes,
   responses without a request). Any error-level notice that is not about a request fails
   the check, and so does a malformed request whose notice or response is missing (HTTPolice
   must have seen the malformation and paired the server's answer with it).

Prints HTTPolice's own reports and a summary of every notice (severity, ID, side, where).
Exit status: 0 pass, 1 a check failed, 2 HTTPolice is not installed.
"""

import argparse
import collections
import io
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_capture  # noqa: E402

# Notices HTTPolice files on a whole stream rather than on one message (framing1.py).
REQUEST_STREAM_NOTICES = {1006, 1007}  # malformed request heading; request stream abandoned

# Notices silenced everywhere (`httpolice -s ID`), each for a reason that holds for any
# exchange with an origin server:
SILENCED = {
    # HTTPolice takes a request in absolute-form as one sent to a proxy (notice 1236), so
    # it wants a `Via` on the answer. An origin server must accept absolute-form too
    # (RFC 9112, 3.2.2) and is no proxy: `Via` is for intermediaries (RFC 9110, 7.6.3).
    1046: "Proxied response needs a Via header: sgi is an origin server, not a proxy",
}


def httpolice_command():
    exe = shutil.which("httpolice")
    if exe:
        return [exe]
    return [sys.executable, "-c",
            "import sys; from httpolice.cli import main; sys.argv[0] = 'httpolice'; main()"]


def run_cli(records, label):
    """Runs the httpolice CLI over the connections' stream pairs; returns its exit status."""
    paths = [p for r in records for p in (r["inbound"], r["outbound"])]
    print(f"\n--- httpolice -i streams --fail-on error -s ... ({label}: {len(records)} connections)")
    silence = [a for nid in SILENCED for a in ("-s", str(nid))]
    proc = subprocess.run(httpolice_command() + ["-i", "streams", "--fail-on", "error"]
                          + silence + paths,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    text = proc.stdout.decode("utf-8", "replace")
    print(text.rstrip() if text.strip() else "(no notices)")
    print(f"--- exit status {proc.returncode}")
    return proc.returncode


def notice_title(complaint):
    """The notice's one-line title, as HTTPolice's text report renders it."""
    try:
        from httpolice.reports import text as text_report
        buf = io.StringIO()
        text_report._write_complaint_line(complaint, buf)  # pylint: disable=protected-access
        return buf.getvalue().strip().split(" ", 2)[2]
    except Exception:  # the renderer is internal; the ID is enough to look a notice up
        return "(see https://httpolice.readthedocs.io notices list)"


def analyse(record):
    """HTTPolice's notices for one connection: (side, severity, id, title, message)."""
    from httpolice import check_exchange
    from httpolice.inputs import formats
    found = []
    paired = []  # (request method, [response statuses]) as HTTPolice parsed them
    for exch in formats["streams"]([record["inbound"], record["outbound"]]):
        exch.silence(list(SILENCED))
        check_exchange(exch)
        what = ""
        if exch.request is not None:
            what = f"{exch.request.method} {exch.request.target[:60]}"
            paired.append((exch.request.method, [int(r.status) for r in exch.responses]))
            for c in exch.request.complaints:
                found.append(("request", c, what))
        for resp in exch.responses:
            for c in resp.complaints:
                found.append(("response", c, f"{what} -> {int(resp.status)}"))
        for c in exch.complaints:
            side = "request" if c.notice.id in REQUEST_STREAM_NOTICES else "response stream"
            found.append((side, c, "(stream)"))
    notices = [(side, c.notice.severity.name, c.notice.id, notice_title(c), what)
               for side, c, what in found]
    return notices, paired


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--out", help="capture into DIR (kept)")
    src.add_argument("--from", dest="from_dir", help="check a capture made before in DIR")
    ap.add_argument("--backends", type=http_capture.backends_arg, default=["dev", "pool"])
    ap.add_argument("--bin-dir", default=http_capture.BIN_DIR)
    args = ap.parse_args()
    http_capture.stop_on_sigterm()

    try:
        import httpolice
    except ImportError:
        print("httpolice is not installed: python3 -m pip install httpolice 'bitstring<4'",
              file=sys.stderr)
        sys.exit(2)
    print(f"HTTPolice {httpolice.__version__}")

    failures = []
    tmp = None
    if args.from_dir:
        manifest = http_capture.load_manifest(args.from_dir)
    else:
        out = args.out or (tmp := tempfile.mkdtemp(prefix="sgi-capture-"))
        print(f"capturing into {out}")
        manifest = http_capture.capture(out, args.backends, args.bin_dir)
    try:
        for r in manifest:
            for p in r["problems"]:
                failures.append(f"{r['backend']} {r['scenario']}: capture: {p}")

        clean = [r for r in manifest if not r["malformed"]]
        malformed = [r for r in manifest if r["malformed"]]
        if run_cli(clean, "well-formed requests") != 0:
            failures.append("httpolice --fail-on error exited non-zero on the well-formed "
                            "connections")
        if malformed:
            status = run_cli(malformed, "malformed on purpose; errors about requests expected")
            print("    (the exit status of this run is expected to be 1; the verdict is below)"
                  if status else "")

        counts = collections.Counter()
        where = collections.defaultdict(list)
        for r in manifest:
            conn = f"{r['backend']}/{r['scenario']}"
            notices, paired = analyse(r)
            request_errors = 0
            for side, severity, nid, title, what in notices:
                counts[(severity, nid, side, title)] += 1
                where[(severity, nid, side, title)].append(f"{conn} {what}")
                if severity == "error" and side == "request":
                    request_errors += 1
                    if not r["malformed"]:
                        failures.append(f"{conn}: error notice {nid} about a request this "
                                        f"script meant to be well formed: {title}")
                elif severity == "error":
                    failures.append(f"{conn}: error notice {nid} on the {side}: {title} ({what})")
            if r["malformed"]:
                if not request_errors:
                    failures.append(f"{conn}: HTTPolice found nothing wrong with the request "
                                    "malformed on purpose")
                if not paired or any(not statuses for _, statuses in paired):
                    failures.append(f"{conn}: the server's answer was not paired with the "
                                    f"malformed request ({paired})")

        print("\nSummary of HTTPolice notices (all connections, both backends):")
        if not counts:
            print("  none")
        order = {"error": 0, "comment": 1, "debug": 2}
        for key in sorted(counts, key=lambda k: (order[k[0]], k[1], k[2])):
            severity, nid, side, title = key
            print(f"  {severity[0].upper()} {nid} x{counts[key]} on the {side}: {title}")
            http_capture.print_examples(where[key], 6)
        for nid, reason in SILENCED.items():
            print(f"  (silenced: {nid}, {reason})")
        n_resp = sum(len(s) for r in manifest for s in r["statuses"])
        print(f"\n{len(manifest)} connections, {n_resp} responses "
              f"({len(malformed)} connections malformed on purpose)")
        http_capture.verdict(failures, "PASS: no error-level HTTPolice notice about any response")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
