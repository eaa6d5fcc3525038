"""The terminal table and the self-contained ``report.html`` (inline SVG charts, no script, no network)."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any, Final

from .stats import QUANTILES

COLORS: Final = {"short-poll": "#d9822b", "long-poll": "#b54dc4", "sse": "#2b8fd9", "websocket": "#2ba84a"}
_W, _H = 560, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 50, 46


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.1:
            return f"{value:.3f}"
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


_COLUMNS: Final = (
    ("mode", "mode"),
    ("delivered", "delivered"),
    ("lost", "lost"),
    ("dup", "duplicated"),
    ("p50 ms", ("latency_ms", "p50")),
    ("p90 ms", ("latency_ms", "p90")),
    ("p99 ms", ("latency_ms", "p99")),
    ("max ms", ("latency_ms", "max")),
    ("req/msg", "requests_per_message"),
    ("bytes/msg", "bytes_per_message"),
    ("server µs/msg", "server_cpu_us_per_message"),
    ("client µs/msg", "client_cpu_us_per_message"),
)


def _cell(result: dict[str, Any], key: str | tuple[str, str]) -> str:
    if "error" in result:
        return result["error"][:40] if key == "delivered" else ("–" if key != "mode" else result["mode"])
    if key == "delivered":
        return f"{result['delivered']:,}/{result['expected']:,}"
    if isinstance(key, tuple):
        return _fmt(result[key[0]][key[1]])
    return _fmt(result[key], 2 if key == "requests_per_message" else 1)


def rows(modes: dict[str, Any]) -> list[list[str]]:
    return [[_cell(result, key) for _, key in _COLUMNS] for result in modes.values()]


def table(results: dict[str, Any]) -> str:
    """The main run as a fixed-width table, then one line per sweep point."""
    p = results["run"]["params"]
    lines = [
        f"{p['clients']} clients, {p['rate']:g} publications/s for {p['seconds']:g}s, "
        f"{p['payload']} bytes of data, short-poll interval {p['interval']:g}s; setup: {results['setup']['pinned']}",
        "",
    ]
    header = [name for name, _ in _COLUMNS]
    body = rows(results["run"]["modes"])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *body]:
        lines.append(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    for name, points in results.get("sweeps", {}).items():
        lines += ["", f"sweep {name}: p50 ms / bytes per msg / server µs per msg"]
        for point in points:
            cells = []
            for mode, r in point["modes"].items():
                if "error" in r:
                    cells.append(f"{mode} error")
                else:
                    cells.append(
                        f"{mode} {_fmt(r['latency_ms']['p50'])}/{_fmt(r['bytes_per_message'])}"
                        f"/{_fmt(r['server_cpu_us_per_message'])}"
                    )
            lines.append(f"  {name}={point['value']:g}: " + "  ".join(cells))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ SVG


def _scale(lo: float, hi: float, log: bool) -> tuple[float, float, bool]:
    if log:
        lo, hi = max(lo, 1e-3), max(hi, 1e-3)
        lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
        if lo == hi:
            hi = lo * 10
    elif hi <= lo:
        hi = lo + 1
    return lo, hi, log


def _pos(v: float, scale: tuple[float, float, bool], length: float) -> float:
    lo, hi, log = scale
    if log:
        v = max(v, lo)
        return (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * length
    return (v - lo) / (hi - lo) * length


def _ticks(scale: tuple[float, float, bool]) -> list[float]:
    lo, hi, log = scale
    if log:
        return [10.0**e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]
    step = 10 ** math.floor(math.log10((hi - lo) / 4 or 1))
    while (hi - lo) / step > 6:
        step *= 2
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _num(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _frame(
    title: str, xlabel: str, ylabel: str, xs: tuple[float, float, bool], ys: tuple[float, float, bool]
) -> list[str]:
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img">',
        f"<title>{html.escape(title)}</title>",
        f'<text x="{_W / 2}" y="20" text-anchor="middle" class="t">{html.escape(title)}</text>',
        f'<text x="{_LEFT + pw / 2}" y="{_H - 8}" text-anchor="middle" class="l">{html.escape(xlabel)}</text>',
        f'<text x="14" y="{_TOP + ph / 2}" text-anchor="middle" class="l" '
        f'transform="rotate(-90 14 {_TOP + ph / 2})">{html.escape(ylabel)}</text>',
    ]
    for t in _ticks(ys):
        y = _TOP + ph - _pos(t, ys, ph)
        out.append(f'<line x1="{_LEFT}" x2="{_LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="k">{_num(t)}</text>')
    for t in _ticks(xs):
        x = _LEFT + _pos(t, xs, pw)
        out.append(f'<text x="{x:.1f}" y="{_TOP + ph + 16}" text-anchor="middle" class="k">{_num(t)}</text>')
    out.append(f'<rect x="{_LEFT}" y="{_TOP}" width="{pw}" height="{ph}" class="f"/>')
    return out


def _legend(names: Sequence[str]) -> str:
    items = []
    x = _LEFT + 8
    for name in names:
        color = COLORS.get(name, "#555")
        items.append(f'<rect x="{x}" y="{_TOP - 20}" width="10" height="10" fill="{color}"/>')
        items.append(f'<text x="{x + 14}" y="{_TOP - 11}" class="k">{html.escape(name)}</text>')
        x += 18 + 7 * len(name) + 10
    return "".join(items)


def line_chart(
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, list[tuple[float, float]]],
    *,
    logx: bool = False,
    logy: bool = False,
) -> str:
    points = [pt for pts in series.values() for pt in pts if pt[1] is not None]
    if not points:
        return ""
    xs = _scale(min(p[0] for p in points), max(p[0] for p in points), logx)
    ys = _scale(0.0 if not logy else min(p[1] for p in points), max(p[1] for p in points), logy)
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    out = _frame(title, xlabel, ylabel, xs, ys)
    for name, pts in series.items():
        coords = [(_LEFT + _pos(x, xs, pw), _TOP + ph - _pos(y, ys, ph)) for x, y in pts if y is not None]
        if not coords:
            continue
        color = COLORS.get(name, "#555")
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        if len(coords) < 15:
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in coords]
    out.append(_legend(list(series)))
    out.append("</svg>")
    return "".join(out)


def bar_chart(title: str, unit: str, values: dict[str, float | None], *, logy: bool = False) -> str:
    present = {k: v for k, v in values.items() if v is not None}
    if not present:
        return ""
    top = max(present.values())
    ys = _scale(min(present.values()) if logy else 0.0, top * 1.15 if not logy else top, logy)
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    out = _frame(title, "", unit, (0.0, 1.0, False), ys)
    out = [o for o in out if 'text-anchor="middle" class="k"' not in o]  # no x ticks on bars
    slot = pw / max(len(values), 1)
    for i, (name, v) in enumerate(values.items()):
        x = _LEFT + i * slot + slot * 0.2
        out.append(f'<text x="{x + slot * 0.3:.1f}" y="{_TOP + ph + 16}" text-anchor="middle" class="k">{name}</text>')
        if v is None:
            continue
        h = _pos(v, ys, ph)
        color = COLORS.get(name, "#555")
        out.append(
            f'<rect x="{x:.1f}" y="{_TOP + ph - h:.1f}" width="{slot * 0.6:.1f}" height="{h:.1f}" fill="{color}"/>'
        )
        label_y = _TOP + ph - h - 4
        out.append(f'<text x="{x + slot * 0.3:.1f}" y="{label_y:.1f}" text-anchor="middle" class="k">{_fmt(v)}</text>')
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------------------------ page

_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#1d2430;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #e3e6ea;text-align:right}th{background:#f4f6f8}
td:first-child,th:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:14px}.charts svg{background:#fff;border:1px solid #e3e6ea;border-radius:6px}
.t{font-size:14px;font-weight:600;fill:#1d2430}.l{font-size:12px;fill:#4a5462}.k{font-size:11px;fill:#4a5462}
.g{stroke:#eceff2}.f{fill:none;stroke:#c9ced6}.muted{color:#5b6573}.bad{color:#b3261e;font-weight:600}
code{background:#f4f6f8;padding:1px 4px;border-radius:3px}
.cmp td,.cmp th{text-align:left;vertical-align:top}
"""

_NOTES: Final = {
    "short-poll": "a GET every interval whether or not anything is new",
    "long-poll": "a GET held open until a publication arrives, then asked again",
    "sse": "one GET; the server streams events over it",
    "websocket": "one upgrade; frames both ways over one connection",
}


def _html_table(modes: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in _COLUMNS)
    body = []
    for result, row in zip(modes.values(), rows(modes), strict=True):
        bad = "error" in result or result.get("lost") or result.get("duplicated")
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in row)
        body.append(f'<tr class="{"bad" if bad else ""}">{cells}</tr>')
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _comparison(modes: dict[str, Any], interval: float) -> str:
    """The usual adjectives' table, with this run's numbers in each cell."""
    ok = {m: r for m, r in modes.items() if "error" not in r}
    if not ok:
        return ""

    def col(fn: Callable[[str, dict[str, Any]], str]) -> str:
        return "".join(f"<td>{fn(m, r)}</td>" for m, r in ok.items())

    head = "".join(f"<th>{html.escape(m)}</th>" for m in ok)
    rows_ = [
        ("Communication", col(lambda m, r: html.escape(_NOTES.get(m, "")))),
        (
            "Efficiency",
            col(
                lambda m, r: (
                    f"{_fmt(r['requests_per_message'], 2)} requests, {_fmt(r['bytes_per_message'])} bytes, "
                    f"{_fmt(r['server_cpu_us_per_message'])} µs server CPU per message"
                )
            ),
        ),
        (
            "Latency",
            col(lambda m, r: f"p50 {_fmt(r['latency_ms']['p50'])} ms, p99 {_fmt(r['latency_ms']['p99'])} ms"),
        ),
        (
            "Delivery",
            col(lambda m, r: f"{r['delivered']:,}/{r['expected']:,}, lost {r['lost']}, duplicated {r['duplicated']}"),
        ),
    ]
    body = "".join(f"<tr><th>{name}</th>{cells}</tr>" for name, cells in rows_)
    return f'<table class="cmp"><tr><th></th>{head}</tr>{body}</table>' + (
        f'<p class="muted">Short-poll interval {interval:g} s: its latency is about half of it, '
        "whatever the server does.</p>"
    )


def _sweep_charts(name: str, points: list[dict[str, Any]]) -> str:
    modes: list[str] = []
    for point in points:
        modes += [m for m in point["modes"] if m not in modes]
    metrics: list[tuple[str, str, Callable[[dict[str, Any]], Any], bool]] = [
        ("p50 latency", "ms", lambda r: r["latency_ms"]["p50"], True),
        ("p99 latency", "ms", lambda r: r["latency_ms"]["p99"], True),
        ("bytes per message", "bytes", lambda r: r["bytes_per_message"], True),
        ("requests per message", "requests", lambda r: r["requests_per_message"], False),
        ("server CPU per message", "µs", lambda r: r["server_cpu_us_per_message"], True),
    ]
    charts = []
    label = "publications per second" if name == "rate" else "clients"
    for title, unit, get, logy in metrics:
        series: dict[str, list[tuple[float, float]]] = {}
        for mode in modes:
            pts = []
            for point in points:
                r = point["modes"].get(mode)
                if r is not None and "error" not in r and get(r) is not None:
                    pts.append((float(point["value"]), max(float(get(r)), 1e-3) if logy else float(get(r))))
            series[mode] = pts
        charts.append(line_chart(f"{title} by {name}", label, unit, series, logx=True, logy=logy))
    return f'<h2>Sweep: {html.escape(name)}</h2><div class="charts">{"".join(charts)}</div>'


def render_html(results: dict[str, Any]) -> str:
    setup, run = results["setup"], results["run"]
    p, modes = run["params"], run["modes"]
    ok = {m: r for m, r in modes.items() if "error" not in r}
    cdf = {
        m: [(max(v, 1e-3), q * 100) for v, q in zip(r["latency_cdf_ms"], QUANTILES, strict=False)]
        for m, r in ok.items()
    }
    charts = [
        line_chart("Delivery latency (CDF)", "ms from publish to receipt (log)", "% of messages", cdf, logx=True),
        bar_chart("Bytes on the wire per message", "bytes", {m: r["bytes_per_message"] for m, r in ok.items()}),
        bar_chart("HTTP requests per message", "requests", {m: r["requests_per_message"] for m, r in ok.items()}),
        bar_chart("Server CPU per message", "µs", {m: r["server_cpu_us_per_message"] for m, r in ok.items()}),
        bar_chart("Client CPU per message", "µs", {m: r["client_cpu_us_per_message"] for m, r in ok.items()}),
        bar_chart("p99 latency", "ms", {m: r["latency_ms"]["p99"] for m, r in ok.items()}),
    ]
    sweeps = "".join(_sweep_charts(name, points) for name, points in results.get("sweeps", {}).items())
    facts = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in setup.items()
        if k != "method"
    )
    errors = "".join(
        f"<li><b>{html.escape(m)}</b>: {html.escape(str(r.get('error') or r.get('client_errors')))}</li>"
        for m, r in modes.items()
        if "error" in r or r.get("client_errors")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Trunkline: HTTP polling, SSE and WebSocket, measured</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head><body>
<h1>HTTP polling, SSE and WebSocket, measured</h1>
<p class="muted">{p["clients"]} clients on one channel, {p["rate"]:g} publications per second for {p["seconds"]:g} s
through the server API, {p["payload"]} bytes of data each; short polls every {p["interval"]:g} s, long polls wait up to
{p["long_poll_wait"]:g} s. Bytes are counted at the clients' TCP transports (HTTP headers and framing included),
requests and bytes during the publishing window, divided by the messages delivered.</p>
{_html_table(modes)}
{f"<ul class='bad'>{errors}</ul>" if errors else ""}
<h2>The usual comparison, with numbers</h2>
{_comparison(modes, p["interval"])}
<h2>Charts</h2><div class="charts">{"".join(charts)}</div>
{sweeps}
<h2>Setup</h2><table>{facts}</table>
<p class="muted">Generated by <code>trunkline compare</code>. Self-contained: no script, no network.</p>
</body></html>
"""
