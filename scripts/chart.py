#!/usr/bin/env python3
"""Line charts (SVG) of requests/s against concurrency from compare.sh results.tsv files.

    scripts/chart.py bench/results/hello.tsv --out bench/chart.svg \
        --pipelined bench/results/pipelined.tsv --pipelined-out bench/chart-pipelined.svg

One line per server, x on a log scale at the measured concurrencies, y linear from 0
(`--log-y` for a log scale). Points whose `bg_cpu_pct` (other load on the server's core)
is above `--noisy` (default 10) are drawn hollow. Rows without a number (start-failed,
wrk-failed) are skipped. Several TSVs may be given; a later file's (server, conc) row
replaces an earlier one. Standard library only.
"""

import argparse
import csv
import math
import sys
from html import escape

# Fixed colours, so a server keeps its colour from chart to chart; ours are drawn thicker.
COLOURS = {
    "sgi-pool": "#d62728",
    "sgi-dev": "#ff7f0e",
    "hyper": "#1f77b4",
    "limit": "#7f7f7f",
    "tiny_http": "#2ca02c",
    "gunicorn-gthread": "#9467bd",
    "gunicorn-sync": "#8c564b",
    "werkzeug": "#e377c2",
    "werkzeug-flask": "#bcbd22",
}
SPARE = ["#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]
OURS = ("sgi",)
DASHED = {"limit"}  # a ceiling, not a server


def read_rows(paths):
    """{server: {conc: row}} from compare.sh results.tsv files."""
    data = {}
    order = []
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                try:
                    conc = int(row["conc"])
                    rps = float(row["rps"])
                except (KeyError, ValueError):
                    continue
                if rps <= 0:
                    continue
                name = row["server"]
                if name not in data:
                    data[name] = {}
                    order.append(name)
                data[name][conc] = row
    return data, order


def nice_step(span, ticks=6):
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt_rps(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def chart(data, order, title, subtitle, log_y=False, noisy=10.0):
    width, height = 960, 540
    left, right, top, bottom = 80, 230, 70, 70
    pw, ph = width - left - right, height - top - bottom

    concs = sorted({c for rows in data.values() for c in rows})
    values = [float(r["rps"]) for rows in data.values() for r in rows.values()]
    if not concs or not values:
        raise SystemExit("chart.py: no rows with a req/s value")

    # x: log scale over the measured concurrencies, a little margin at both ends.
    lo, hi = math.log10(concs[0]), math.log10(concs[-1])
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.04

    def x(c):
        return left + (math.log10(c) - lo + pad) / (hi - lo + 2 * pad) * pw

    if log_y:
        ylo = 10 ** math.floor(math.log10(min(values)))
        yhi = 10 ** math.ceil(math.log10(max(values)))
        yticks = []
        t = ylo
        while t <= yhi * 1.0001:
            yticks.append(t)
            t *= 10

        def y(v):
            return top + ph - (math.log10(v) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)) * ph
    else:
        step = nice_step(max(values) * 1.05)
        yhi = step * math.ceil(max(values) * 1.05 / step)
        yticks = [i * step for i in range(int(round(yhi / step)) + 1)]

        def y(v):
            return top + ph - v / yhi * ph

    out = []
    add = out.append
    add(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="13">')
    add(f'<rect width="{width}" height="{height}" fill="white"/>')
    add(f'<text x="{left + pw / 2}" y="28" text-anchor="middle" font-size="18" font-weight="bold">{escape(title)}</text>')
    if subtitle:
        add(f'<text x="{left + pw / 2}" y="48" text-anchor="middle" font-size="12" fill="#555">{escape(subtitle)}</text>')

    # Grid and axes.
    for t in yticks:
        yy = y(t)
        add(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#e5e5e5"/>')
        add(f'<text x="{left - 8}" y="{yy + 4:.1f}" text-anchor="end" fill="#333">{fmt_rps(t)}</text>')
    for c in concs:
        xx = x(c)
        add(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + ph}" stroke="#f0f0f0"/>')
        add(f'<text x="{xx:.1f}" y="{top + ph + 20}" text-anchor="middle" fill="#333">{c}</text>')
    add(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>')
    add(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>')
    add(f'<text x="{left + pw / 2}" y="{height - 22}" text-anchor="middle">'
        'concurrent connections (wrk -c, log scale)</text>')
    add(f'<text transform="translate(22 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
        f'requests/s{" (log scale)" if log_y else ""}</text>')

    # Lines, then the legend ordered by each server's value at its highest concurrency
    # (top to bottom, roughly the order the lines end in).
    spare = iter(SPARE)
    colour = {n: COLOURS.get(n) or next(spare, "#000000") for n in order}
    any_noisy = False
    for name in order:
        rows = data[name]
        pts = sorted(rows)
        ours = name.startswith(OURS)
        sw = 3.2 if ours else 1.8
        dash = ' stroke-dasharray="6 4"' if name in DASHED else ""
        path = " ".join(f"{'M' if i == 0 else 'L'}{x(c):.1f},{y(float(rows[c]['rps'])):.1f}" for i, c in enumerate(pts))
        add(f'<path d="{path}" fill="none" stroke="{colour[name]}" stroke-width="{sw}"{dash} stroke-linejoin="round"/>')
        for c in pts:
            r = rows[c]
            v = float(r["rps"])
            try:
                bg = float(r.get("bg_cpu_pct") or 0)
            except ValueError:
                bg = 0.0
            hollow = bg > noisy
            any_noisy |= hollow
            fill = "white" if hollow else colour[name]
            tip = f"{name} c={c}: {v:,.0f} req/s, p50 {r.get('p50_ms', '-')} ms, p99 {r.get('p99_ms', '-')} ms, errors {r.get('errors', '-')}, bg {r.get('bg_cpu_pct', '-')}%"
            add(f'<circle cx="{x(c):.1f}" cy="{y(v):.1f}" r="{4.5 if ours else 3.5}" fill="{fill}" '
                f'stroke="{colour[name]}" stroke-width="1.8"><title>{escape(tip)}</title></circle>')

    def last_value(n):
        rows = data[n]
        return float(rows[max(rows)]["rps"])

    lx, ly = left + pw + 24, top + 8
    add(f'<text x="{lx}" y="{ly}" font-weight="bold">server</text>')
    for i, name in enumerate(sorted(order, key=last_value, reverse=True)):
        yy = ly + 22 * (i + 1)
        ours = name.startswith(OURS)
        dash = ' stroke-dasharray="6 4"' if name in DASHED else ""
        add(f'<line x1="{lx}" y1="{yy - 4}" x2="{lx + 26}" y2="{yy - 4}" stroke="{colour[name]}" '
            f'stroke-width="{3.2 if ours else 1.8}"{dash}/>')
        add(f'<circle cx="{lx + 13}" cy="{yy - 4}" r="3.5" fill="{colour[name]}"/>')
        weight = ' font-weight="bold"' if ours else ""
        add(f'<text x="{lx + 34}" y="{yy}"{weight}>{escape(name)}</text>')
    if any_noisy:
        yy = ly + 22 * (len(order) + 1) + 8
        add(f'<circle cx="{lx + 13}" cy="{yy - 4}" r="3.5" fill="white" stroke="#333" stroke-width="1.8"/>')
        add(f'<text x="{lx + 34}" y="{yy}" font-size="11" fill="#333">bg% &gt; {noisy:g}: noisy</text>')
    add("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tsv", nargs="+", help="compare.sh results.tsv file(s), non-pipelined")
    ap.add_argument("--out", default="chart.svg", help="SVG to write (default chart.svg)")
    ap.add_argument("--title", default="Hello world: requests/s by concurrency")
    ap.add_argument("--subtitle", default="wrk -t1, server pinned to CPU 1, wrk to CPU 0 (compare.sh)")
    ap.add_argument("--pipelined", nargs="+", metavar="TSV", help="results.tsv of a pipelined run: a second chart")
    ap.add_argument("--pipelined-out", help="SVG for the pipelined chart (default: OUT with -pipelined)")
    ap.add_argument("--pipelined-title", default="Hello world, 16 requests pipelined per round trip: requests/s")
    ap.add_argument("--log-y", action="store_true", help="log-scale y axis")
    ap.add_argument("--noisy", type=float, default=10.0, help="bg%% above which a point is drawn hollow (default 10)")
    args = ap.parse_args()

    data, order = read_rows(args.tsv)
    with open(args.out, "w") as f:
        f.write(chart(data, order, args.title, args.subtitle, args.log_y, args.noisy))
    print(f"wrote {args.out}", file=sys.stderr)
    if args.pipelined:
        out = args.pipelined_out
        if not out:
            out = args.out[:-4] + "-pipelined.svg" if args.out.endswith(".svg") else args.out + "-pipelined.svg"
        data, order = read_rows(args.pipelined)
        sub = "wrk -t1 -s pipeline.lua (DEPTH=16), server pinned to CPU 1, wrk to CPU 0 (compare.sh)"
        with open(out, "w") as f:
            f.write(chart(data, order, args.pipelined_title, sub, args.log_y, args.noisy))
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
