#!/usr/bin/env python3
"""The performance issue's targets, read from one run's tables.

    python3 scripts/bench_summary.py [DIR]     # DIR: bench/results (default) or a --out dir

Reads the `results.tsv` of each step that `scripts/bench_all.sh` copied (hello.tsv,
pipelined.tsv, explode.tsv, stream.tsv; a `--out` directory's STEP/results.tsv too) and
prints a Markdown table: each target, the figures of that run, whether they meet it, and
the highest `bg%` (other load on the server's core) among the cells it uses. Every ratio
is between two servers of the same run. A step that is missing is left out. The 10,000
idle connections target is measured by `scripts/pool_probe.py idle`, not here.
"""

import csv
import sys
from pathlib import Path


def load(root, step):
    for path in (root / f"{step}.tsv", root / step / "results.tsv"):
        if path.exists():
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            return {(r["server"], int(r["conc"])): r for r in rows}
    return None


def num(row, key):
    return float(row[key])


def ratios(table, server, base, concs, key="rps"):
    out = []
    for c in concs:
        a, b = table.get((server, c)), table.get((base, c))
        out.append(num(a, key) / num(b, key) if a and b and num(b, key) else None)
    return out


def bg(table, cells):
    seen = [int(table[cell]["bg_cpu_pct"]) for cell in cells if cell in table]
    return max(seen) if seen else None


def fmt(values, digits=2):
    return " / ".join("-" if v is None else f"{v:.{digits}f}" for v in values)


def met(values, floor):
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    if all(v >= floor for v in known):
        return "yes"
    return "no (%d of %d)" % (sum(v >= floor for v in known), len(known))


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    rows = []

    hello = load(root, "hello")
    if hello:
        concs = [16, 64, 256, 1024]
        pool = ratios(hello, "sgi-pool", "hyper", concs)
        cells = [(s, c) for s in ("sgi-pool", "hyper") for c in [1] + concs]
        srv = [
            f"{hello[('sgi-pool', c)]['srv_cpu_pct']} vs {hello[('hyper', c)]['srv_cpu_pct']}"
            for c in concs
            if ("sgi-pool", c) in hello and ("hyper", c) in hello
        ]
        c1 = ratios(hello, "sgi-pool", "hyper", [1])
        rows.append(
            (
                "pool >= 1.0 x hyper, c = 16 / 64 / 256 / 1024",
                f"{fmt(pool)} (c=1: {fmt(c1)}); srv% pool vs hyper {', '.join(srv)}",
                met(pool, 1.0),
                bg(hello, cells),
            )
        )
        dev = ratios(hello, "sgi-dev", "tiny_http", [16, 64, 256])
        cells = [(s, c) for s in ("sgi-dev", "tiny_http") for c in (16, 64, 256)]
        rows.append(("dev >= 1.0 x tiny_http, c = 16 / 64 / 256", fmt(dev), met(dev, 1.0), bg(hello, cells)))
        p, h = hello.get(("sgi-pool", 1)), hello.get(("hyper", 1))
        if p and h:
            ok = "yes" if num(p, "p50_ms") <= num(h, "p50_ms") else "no"
            rows.append(
                ("c=1 p50 <= hyper's", f"{p['p50_ms']} vs {h['p50_ms']} ms", ok, bg(hello, [("sgi-pool", 1), ("hyper", 1)]))
            )
        p, h = hello.get(("sgi-pool", 1024)), hello.get(("hyper", 1024))
        if p and h:
            ok = "yes" if num(p, "max_rss_mb") <= 2 * num(h, "max_rss_mb") else "no"
            rows.append(
                (
                    "RSS at c=1024 <= 2 x hyper's",
                    f"{p['max_rss_mb']} vs {h['max_rss_mb']} MB",
                    ok,
                    bg(hello, [("sgi-pool", 1024), ("hyper", 1024)]),
                )
            )

    piped = load(root, "pipelined")
    if piped:
        pool = ratios(piped, "sgi-pool", "hyper", [64, 256])
        dev = ratios(piped, "sgi-dev", "hyper", [64, 256])
        rates = " / ".join(f"{num(piped[('hyper', c)], 'rps'):,.0f}" for c in (64, 256) if ("hyper", c) in piped)
        cells = [(s, c) for s in ("sgi-pool", "hyper") for c in (64, 256)]
        rows.append(
            (
                "pipelined pool >= 1.2 x hyper, c = 64 / 256",
                f"{fmt(pool)} (hyper {rates} req/s; dev {fmt(dev)})",
                met(pool, 1.2),
                bg(piped, cells),
            )
        )

    stream = load(root, "stream")
    if stream:
        for body, raw in (("file", "raw-sendfile"), ("iter-length", "raw-write"), ("iter", "raw-write-chunked")):
            pool = ratios(stream, f"sgi-pool-{body}", raw, [1, 4], "mib_s")
            dev = ratios(stream, f"sgi-dev-{body}", raw, [1, 4], "mib_s")
            cells = [(s, c) for s in (f"sgi-pool-{body}", f"sgi-dev-{body}", raw) for c in (1, 4)]
            what = {"file": "file", "iter-length": "iterator, Content-Length", "iter": "iterator, chunked"}[body]
            rows.append(
                (
                    f"1 GiB {what} >= 0.8 x {raw}, c = 1 / 4",
                    f"pool {fmt(pool)}, dev {fmt(dev)}",
                    met(pool + dev, 0.8),
                    bg(stream, cells),
                )
            )

    explode = load(root, "explode")
    if explode:
        for server in ("sgi-pool", "sgi-dev"):
            got = [explode.get((server, c)) for c in (2000, 5000, 10000)]
            if all(got):
                ok = " / ".join(f"{num(r, 'rps') * (1 - num(r, 'non2xx') / max(num(r, 'requests'), 1)):,.0f}" for r in got)
                threads = max(int(r["max_threads"]) for r in got)
                rows.append(
                    (
                        f"explode, {server}: 200s per second at c = 2,000 / 5,000 / 10,000",
                        f"{ok}, at most {threads} threads",
                        "(no target)",
                        bg(explode, [(server, c) for c in (2000, 5000, 10000)]),
                    )
                )

    if not rows:
        sys.exit(f"no results in {root} (hello.tsv, pipelined.tsv, explode.tsv or stream.tsv)")
    print("| target | this run | met? | bg% (max) |")
    print("|---|---|---|---:|")
    for target, figures, verdict, busy in rows:
        print(f"| {target} | {figures} | {verdict} | {'-' if busy is None else busy} |")


if __name__ == "__main__":
    main()
