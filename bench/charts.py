#!/usr/bin/env python3
"""Draws bench/run's sweeps as SVG line charts (Python standard library only).

    bench/charts.py OUT_DIR [--keys KEYS_TSV] [--streams STREAMS_MD] [--note TEXT]

--keys: the sweep over keys in use that bench/run writes: a tab-separated file whose first
line names the columns (keys_in_use, requests_per_s, p99_ms, rss_mib; others are ignored).
Draws keys-throughput.svg, keys-p99.svg and keys-rss.svg.

--streams: what bench/streams printed (its markdown table and notes). The table is read by
its column names ("streams", "TTFT p99 direct / via", "added TTFT p99", "KiB per open
stream"), so a column it adds or moves does not matter; a table missing, a column missing or
a cell not a number only leaves that chart or point out. Draws streams-ttft.svg and
streams-memory.svg.

--note: a line printed under every chart's title (date, commit, machine).

Each chart is self-contained: its colours follow the reader's light or dark theme through a
`prefers-color-scheme` rule inside the SVG, on a transparent background. Hand-written rather
than drawn with a plotting library: bench/run must run on a fresh machine with nothing but
Python, and five line charts need only a few hundred lines.
"""

import argparse
import csv
import math
import os
import re
import sys
from html import escape

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 78, 44, 58, 52

STYLE = """
  .bg { fill: none; }
  text { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; fill: #24292f; }
  .title { font-size: 15px; font-weight: 600; }
  .note { font-size: 11px; fill: #57606a; }
  .tick { font-size: 11px; fill: #57606a; }
  .axislabel { font-size: 12px; }
  .axis { stroke: #57606a; stroke-width: 1; }
  .grid { stroke: #d0d7de; stroke-width: 1; }
  .s0 { stroke: #0969da; fill: none; stroke-width: 2.2; }
  .p0 { fill: #0969da; }
  .s1 { stroke: #bc4c00; fill: none; stroke-width: 2.2; stroke-dasharray: 6 3; }
  .p1 { fill: #bc4c00; }
  .s2 { stroke: #8250df; fill: none; stroke-width: 2.2; stroke-dasharray: 2 3; }
  .p2 { fill: #8250df; }
  .ref { stroke: #cf222e; stroke-width: 1.2; stroke-dasharray: 4 4; }
  .reftext { font-size: 11px; fill: #cf222e; }
  .value { font-size: 10px; fill: #57606a; }
  @media (prefers-color-scheme: dark) {
    text { fill: #e6edf3; }
    .note, .tick, .value { fill: #9198a1; }
    .axis { stroke: #9198a1; }
    .grid { stroke: #30363d; }
    .s0 { stroke: #4493f8; } .p0 { fill: #4493f8; }
    .s1 { stroke: #f0883e; } .p1 { fill: #f0883e; }
    .s2 { stroke: #ab7df8; } .p2 { fill: #ab7df8; }
    .ref { stroke: #f85149; } .reftext { fill: #f85149; }
  }
"""


def count_label(x):
    """1, 10, 100, 1k, 10k, 100k, 1M."""
    for div, suffix in ((1_000_000, "M"), (1000, "k")):
        if x >= div:
            v = x / div
            return f"{v:g}{suffix}"
    return f"{x:g}"


def value_label(y):
    if y >= 10_000:
        return f"{y / 1000:.0f}k"
    if y >= 100:
        return f"{y:.0f}"
    if y >= 10:
        return f"{y:.1f}"
    return f"{y:.2f}"


def tick_label(t, step):
    if t == 0:
        return "0"
    if t >= 10_000:
        return f"{t / 1000:g}k"
    decimals = max(0, -math.floor(math.log10(step)))
    return f"{t:.{decimals}f}"


def nice_ticks(hi):
    """Ticks from 0 to at least hi, 4-6 of them, at 1, 2 or 5 times a power of ten."""
    if hi <= 0:
        hi = 1
    raw = hi / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    top = step * math.ceil(hi / step)
    n = int(round(top / step))
    return [i * step for i in range(n + 1)]


def line_chart(path, title, note, xlabel, ylabel, series, refs=()):
    """series: [(name, [(x, y), ...])], x on a log scale; refs: [(y, label)] dashed lines."""
    series = [(n, sorted(p for p in pts if p[0] > 0 and p[1] is not None)) for n, pts in series]
    series = [(n, pts) for n, pts in series if pts]
    if not series:
        return False
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts] + [y for y, _ in refs]
    lo_e = math.floor(math.log10(min(xs)))
    hi_e = math.ceil(math.log10(max(xs)))
    if hi_e == lo_e:
        hi_e += 1
    yticks = nice_ticks(max(ys) * 1.08)
    ytop = yticks[-1]
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x):
        return LEFT + pw * (math.log10(x) - lo_e) / (hi_e - lo_e)

    def py(y):
        return TOP + ph * (1 - y / ytop)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style>",
        f'<rect class="bg" width="{WIDTH}" height="{HEIGHT}"/>',
        f'<text class="title" x="{LEFT}" y="22">{escape(title)}</text>',
    ]
    if note:
        out.append(f'<text class="note" x="{LEFT}" y="39">{escape(note)}</text>')
    for t in yticks:
        y = py(t)
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{escape(tick_label(t, yticks[1]))}</text>")
    for e in range(lo_e, hi_e + 1):
        x = px(10 ** e)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{TOP + ph + 16}" text-anchor="middle">'
                   f"{count_label(10 ** e)}</text>")
    out.append(f'<line class="axis" x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}"/>')
    out.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}"/>')
    out.append(f'<text class="axislabel" x="{LEFT + pw / 2}" y="{HEIGHT - 10}" '
               f'text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text class="axislabel" transform="translate(16 {TOP + ph / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(ylabel)}</text>')
    for y, label in refs:
        yy = py(y)
        out.append(f'<line class="ref" x1="{LEFT}" y1="{yy:.1f}" x2="{LEFT + pw}" y2="{yy:.1f}"/>')
        out.append(f'<text class="reftext" x="{LEFT + 6}" y="{yy - 5:.1f}">{escape(label)}</text>')
    placed = []  # value labels' boxes, so that two never overlap (a hidden one stays a tooltip)

    def free(x, y):
        return all(abs(x - a) > 30 or abs(y - b) > 11 for a, b in placed)

    for i, (name, pts) in enumerate(series):
        k = i % 3
        d = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(pts))
        out.append(f'<path class="s{k}" d="{d}"><title>{escape(name)}</title></path>')
        for x, y in pts:
            out.append(f'<circle class="p{k}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5">'
                       f"<title>{escape(name)}: {count_label(x)} → {value_label(y)}</title></circle>")
            for dx, dy in ((6, -6), (6, 13), (-34, -6), (-34, 13)):
                if free(px(x) + dx, py(y) + dy):
                    placed.append((px(x) + dx, py(y) + dy))
                    out.append(f'<text class="value" x="{px(x) + dx:.1f}" y="{py(y) + dy:.1f}">'
                               f"{escape(value_label(y))}</text>")
                    break
    if len(series) > 1 or refs:
        # The legend, top right inside the plot.
        lx, ly = LEFT + pw - 200, TOP + 4
        for i, (name, _) in enumerate(series):
            k = i % 3
            y = ly + 14 * i + 8
            out.append(f'<line class="s{k}" x1="{lx}" y1="{y}" x2="{lx + 22}" y2="{y}"/>')
            out.append(f'<text class="tick" x="{lx + 28}" y="{y + 4}">{escape(name)}</text>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    return True


def number(s):
    """The first number in a cell ("1.23 ms", "1000 (10 s)"), or None."""
    m = re.search(r"-?\d+(?:\.\d+)?", s or "")
    return float(m.group()) if m else None


def pair(s):
    """'a / b' → (a, b), either None when not a number."""
    parts = (s or "").split("/")
    if len(parts) != 2:
        return None, None
    return number(parts[0]), number(parts[1])


def read_keys(path):
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            try:
                n = float(r["keys_in_use"])
            except (KeyError, TypeError, ValueError):
                continue

            def get(col):
                try:
                    return float(r.get(col) or "")
                except ValueError:
                    return None

            rows.append((n, get("requests_per_s"), get("p99_ms"), get("rss_mib")))
    return rows


def read_streams(path):
    """The rows of the first markdown table whose first column is "streams …"."""
    header, rows = None, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("|"):
                if header:
                    break
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                if cells and cells[0].lower().startswith("streams"):
                    header = [c.lower() for c in cells]
                continue
            if all(set(c) <= set("-: ") for c in cells):
                continue
            rows.append(dict(zip(header, cells)))
    return rows


def col(row, *names):
    for k, v in row.items():
        if any(k.startswith(n) for n in names):
            return v
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--keys")
    ap.add_argument("--streams")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    written = []

    if a.keys:
        rows = read_keys(a.keys)
        one = next((r for r in rows if r[0] == 1 and r[1]), None)
        refs = [(one[1] * 0.85, "1 key − 15 % (target)")] if one else []
        if line_chart(os.path.join(a.out_dir, "keys-throughput.svg"),
                      "GET /v1/me with an API key: throughput vs keys in use", a.note,
                      "keys in use (log scale)", "requests per second",
                      [("requests/s", [(r[0], r[1]) for r in rows])], refs):
            written.append("keys-throughput.svg")
        if line_chart(os.path.join(a.out_dir, "keys-p99.svg"),
                      "GET /v1/me with an API key: p99 latency vs keys in use", a.note,
                      "keys in use (log scale)", "p99 latency (ms)",
                      [("p99", [(r[0], r[2]) for r in rows])]):
            written.append("keys-p99.svg")
        if line_chart(os.path.join(a.out_dir, "keys-rss.svg"),
                      "Server memory (peak RSS) vs keys in use", a.note,
                      "keys in use (log scale)", "peak RSS (MiB)",
                      [("peak RSS", [(r[0], r[3]) for r in rows])],
                      [(300, "300 MiB (target at 100k in use)")]):
            written.append("keys-rss.svg")

    if a.streams:
        try:
            rows = read_streams(a.streams)
        except OSError as e:
            print(f"charts.py: cannot read {a.streams}: {e}", file=sys.stderr)
            rows = []
        if len(rows) < 2:
            rows = []  # one count is no curve: the charts of an earlier sweep stay
        direct, via, added, kib = [], [], [], []
        for r in rows:
            s = number(r.get("streams (arrivals)") or col(r, "streams"))
            if not s:
                continue
            d, v = pair(col(r, "ttft p99"))
            direct.append((s, d))
            via.append((s, v))
            added.append((s, number(col(r, "added ttft p99"))))
            kib.append((s, number(col(r, "kib per"))))
        if line_chart(os.path.join(a.out_dir, "streams-ttft.svg"),
                      "Streamed chats: time to first token, p99, vs concurrent streams", a.note,
                      "concurrent streams (log scale)", "TTFT p99 (ms)",
                      [("through Gatehouse", via), ("mock directly", direct),
                       ("added by Gatehouse", added)], [(2, "2 ms added (target)")]):
            written.append("streams-ttft.svg")
        if line_chart(os.path.join(a.out_dir, "streams-memory.svg"),
                      "Streamed chats: server memory per open stream", a.note,
                      "concurrent streams (log scale)", "KiB per open stream (RSS delta / streams)",
                      [("KiB per stream", kib)], [(64, "64 KiB (target)")]):
            written.append("streams-memory.svg")

    print(" ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
