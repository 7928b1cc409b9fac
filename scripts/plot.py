#!/usr/bin/env python3
"""Plots recorded load results as SVG, with no plotting library (none is installed here).

  scripts/plot.py --dist dist.csv --results results.txt --out-dir docs/img

--dist: CSV rows `label,clients,kind,percentile,ms` as `zring-load --dist` (and
  scripts/fanout.sh --dist) append them; kind is `fanout` or `floor`.
  -> fanout-latency.svg: p50 / p99 / p100 delivery latency against client count, one
     colour per server, the floor from the same runs in grey.
--results: key=value lines as scripts/c1m.sh --results appends them (test=c1m server=...
  held=... server_rss_per_conn_b=... slab_per_conn_b=...; mode=http lines are drawn apart
  as "<server> http").
  -> memory.svg: server user memory and kernel slab (MiB) against connections held.
  If the file also has scripts/compare.sh --results lines (test=compare workload=...
  server=... value=...): -> compare.svg, every workload's figures relative to zring's
  (zring = 1), one bar per server; a crashed or failed cell is drawn as a label.
  `scripts/compare.sh --results r.txt --dist d.csv` then `scripts/plot.py --results r.txt
  --dist d.csv` draws all three from one comparison run.
Where a run was repeated, the last line for a (server, clients) pair wins.
"""
import argparse
import csv
import math
import os
import sys
from xml.sax.saxutils import escape

W, H = 760, 460
ML, MR, MT, MB = 80, 190, 50, 60
COLORS = {"zring": "#1f77b4", "condure": "#ff7f0e", "mongrel2": "#2ca02c", "floor": "#7f7f7f"}
EXTRA = ["#d62728", "#9467bd", "#8c564b", "#e377c2"]
DASH = {"p50": "", "p99": "6,4", "p100": "2,3"}


def color(label):
    if label not in COLORS:
        COLORS[label] = EXTRA[len(COLORS) % len(EXTRA)]
    return COLORS[label]


def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    t = math.floor(lo / step) * step
    out = []
    while True:
        out.append(t)
        if t >= hi - step * 1e-9:
            return out
        t += step


class Chart:
    def __init__(self, title, xlabel, ylabel, xs, ys, xlog=False):
        self.xlog = xlog
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        if xlog:
            lo, hi = math.log10(min(xs)), math.log10(max(xs))
            if hi - lo < 1e-9:
                lo, hi = lo - 0.5, hi + 0.5
            self.xt = [10 ** e for e in range(math.floor(lo), math.ceil(hi) + 1)]
            self.xr = (math.floor(lo), math.ceil(hi))
        else:
            self.xt = nice_ticks(0, max(xs))
            self.xr = (0, self.xt[-1])
        self.yt = nice_ticks(0, max(ys) * 1.05 if ys else 1)
        self.yr = (0, self.yt[-1])
        self.parts = []
        self.legend = []

    def px(self, x):
        v = math.log10(x) if self.xlog else x
        return ML + (v - self.xr[0]) / (self.xr[1] - self.xr[0]) * (W - ML - MR)

    def py(self, y):
        return H - MB - (y - self.yr[0]) / (self.yr[1] - self.yr[0]) * (H - MT - MB)

    def line(self, pts, col, dash="", label=None, marker=True):
        pts = sorted(pts)
        d = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in pts)
        self.parts.append(
            f'<polyline fill="none" stroke="{col}" stroke-width="2" stroke-dasharray="{dash}" points="{d}"/>'
        )
        if marker:
            for x, y in pts:
                self.parts.append(f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="3" fill="{col}"/>')
        if label:
            self.legend.append((label, col, dash))

    def svg(self):
        o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{W / 2 - MR / 2}" y="24" text-anchor="middle" font-size="15">{self.title}</text>']
        for t in self.yt:
            y = self.py(t)
            o.append(f'<line x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            o.append(f'<text x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
        for t in self.xt:
            x = self.px(t)
            o.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MT}" y2="{H - MB}" stroke="#eee"/>')
            lab = f"{t / 1000:g}k" if t >= 1000 else f"{t:g}"
            o.append(f'<text x="{x:.1f}" y="{H - MB + 18}" text-anchor="middle">{lab}</text>')
        o.append(f'<rect x="{ML}" y="{MT}" width="{W - ML - MR}" height="{H - MT - MB}" fill="none" stroke="#333"/>')
        o.append(f'<text x="{(ML + W - MR) / 2}" y="{H - 18}" text-anchor="middle">{self.xlabel}</text>')
        o.append(f'<text transform="translate(18,{(MT + H - MB) / 2}) rotate(-90)" text-anchor="middle">{self.ylabel}</text>')
        o.extend(self.parts)
        for i, (label, col, dash) in enumerate(self.legend):
            y = MT + 10 + i * 20
            x = W - MR + 15
            o.append(f'<line x1="{x}" x2="{x + 28}" y1="{y}" y2="{y}" stroke="{col}" stroke-width="2" stroke-dasharray="{dash}"/>')
            o.append(f'<text x="{x + 34}" y="{y + 4}">{label}</text>')
        o.append("</svg>")
        return "\n".join(o) + "\n"


def fanout_chart(path):
    # (label, clients, kind) -> {percentile: ms}; the last rows for a key win.
    runs = {}
    with open(path) as f:
        for row in csv.reader(f):
            if len(row) != 5 or row[0] == "label":
                continue
            label, clients, kind, p, ms = row
            try:
                key = (label, int(clients), kind)
                runs.setdefault(key, {})[float(p)] = float(ms)
            except ValueError:
                continue
    if not runs:
        sys.exit(f"{path}: no rows")
    series = {}
    for (label, clients, kind), ps in runs.items():
        name = "floor" if kind == "floor" else label
        for p in ("p50", "p99", "p100"):
            v = ps.get(float(p[1:]))
            if v is not None and not math.isnan(v):
                # The floor of several servers' runs at one count: keep the lowest.
                cur = series.setdefault((name, p), {})
                cur[clients] = min(v, cur.get(clients, v))
    xs = [c for s in series.values() for c in s]
    ys = [v for s in series.values() for v in s.values()]
    ch = Chart("Fan-out delivery latency (handler send to client receipt)", "clients", "latency (ms)",
               xs, ys, xlog=len(set(xs)) > 1 and max(xs) / min(xs) >= 10)
    for (name, p), pts in sorted(series.items()):
        ch.line(list(pts.items()), color(name), DASH[p], f"{name} {p}")
    return ch.svg()


def memory_chart(path):
    rows = {}
    with open(path) as f:
        for line in f:
            kv = dict(t.split("=", 1) for t in line.split() if "=" in t)
            if kv.get("test") != "c1m":
                continue
            try:
                held = int(kv["held"])
                user = float(kv["server_rss_per_conn_b"]) * held / 2**20
                slab = float(kv["slab_per_conn_b"]) * held / 2**20
            except (KeyError, ValueError):
                continue
            if held > 0:
                server = kv.get("server", "?")
                if kv.get("mode", "ws") != "ws":
                    server += " " + kv["mode"]
                rows[(server, held)] = (user, slab)
    if not rows:
        sys.exit(f"{path}: no test=c1m lines with figures")
    xs = [h for (_, h) in rows]
    ys = [v for pair in rows.values() for v in pair]
    ch = Chart("Memory held by idle connections (WebSocket unless marked)", "connections held", "MiB",
               xs + [0], ys)
    for server in sorted({s for (s, _) in rows}):
        pts = sorted((h, v) for (s, h), v in rows.items() if s == server)
        ch.line([(0, 0)] + [(h, u) for h, (u, _) in pts], color(server), "", f"{server} user RSS")
        ch.line([(0, 0)] + [(h, k) for h, (_, k) in pts], color(server), "6,4", f"{server} kernel slab*")
    ch.legend.append(("* both ends of each loopback pair", "#fff", ""))
    return ch.svg()


def compare_chart(path):
    """Grouped horizontal bars: each workload's figure per server relative to zring's."""
    cells, order, servers = {}, [], []
    with open(path) as f:
        for line in f:
            kv = dict(t.split("=", 1) for t in line.split() if "=" in t)
            if kv.get("test") != "compare" or "workload" not in kv:
                continue
            w, sv = kv["workload"], kv.get("server", "?")
            if w not in order:
                order.append(w)
            if sv not in servers:
                servers.append(sv)
            cells[(w, sv)] = kv.get("value", "")
    if not cells:
        return None

    def num(v):
        try:
            return float(v)
        except ValueError:
            return None

    rel = {}
    for (w, sv), v in cells.items():
        base = num(cells.get((w, "zring"), ""))
        x = num(v)
        rel[(w, sv)] = x / base if x is not None and base else None
    # Bars past 4x zring's are clipped (their label still gives the ratio).
    top = min(max([r for r in rel.values() if r is not None] + [1.0]), 4.0)
    bh, gap, left, right = 14, 12, 230, 140
    h = MT + len(order) * (len(servers) * bh + gap) + 40
    plot_w = W - left - right
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{h}" fill="#fff"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">zring, Condure, Mongrel2: each figure relative to zring\'s (zring = 1)</text>',
           f'<text x="{W / 2}" y="38" text-anchor="middle" fill="#555">memory and latency: lower is better; req/s and msgs/s: higher is better</text>']
    x1 = left + plot_w / top
    out.append(f'<line x1="{x1:.1f}" y1="{MT - 4}" x2="{x1:.1f}" y2="{h - 30}" stroke="#999" stroke-dasharray="4,3"/>')
    y = MT
    for w in order:
        out.append(f'<text x="{left - 8}" y="{y + len(servers) * bh / 2 + 4:.1f}" text-anchor="end">{w}</text>')
        for sv in servers:
            r, v = rel.get((w, sv)), cells.get((w, sv), "n/a")
            if r is not None:
                bw = max(plot_w * min(r, top) / top, 1)
                out.append(f'<rect x="{left}" y="{y + 1}" width="{bw:.1f}" height="{bh - 2}" fill="{color(sv)}"/>')
                out.append(f'<text x="{left + bw + 4:.1f}" y="{y + bh - 3}" fill="#333">{sv} {r:.2f} ({escape(v)})</text>')
            else:
                out.append(f'<text x="{left + 4}" y="{y + bh - 3}" fill="#c00">{sv}: {escape(v[:60])}</text>')
            y += bh
        y += gap
    out.append("</svg>")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dist")
    ap.add_argument("--results")
    ap.add_argument("--out-dir", default=".")
    a = ap.parse_args()
    if not a.dist and not a.results:
        ap.error("give --dist and/or --results")
    os.makedirs(a.out_dir, exist_ok=True)
    if a.dist:
        out = os.path.join(a.out_dir, "fanout-latency.svg")
        with open(out, "w") as f:
            f.write(fanout_chart(a.dist))
        print(out)
    if a.results:
        out = os.path.join(a.out_dir, "memory.svg")
        with open(out, "w") as f:
            f.write(memory_chart(a.results))
        print(out)
        svg = compare_chart(a.results)
        if svg:
            out = os.path.join(a.out_dir, "compare.svg")
            with open(out, "w") as f:
                f.write(svg)
            print(out)


if __name__ == "__main__":
    main()
