"""`edgekit report`: temperature, clock, throughput and power over time per node, as one
self-contained HTML page with inline SVG (or a bare SVG), from a run's telemetry.csv.

Why not matplotlib: it would add a large dependency for four line charts; an SVG opens in any
browser, needs nothing installed on the head, and stays readable as text.
"""

from __future__ import annotations

import html
import itertools
from pathlib import Path
from typing import Any

from edgekit import settings
from edgekit.errors import InputError
from edgekit.thermal.recorder import read_telemetry

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]
_PANELS = [
    ("temp_c", "temperature (°C)"),
    ("freq_mhz", "ARM clock (MHz)"),
    ("requests_per_s", "throughput (req/s)"),
    ("power_w", "power (W)"),
]
_W, _H, _PAD_L, _PAD_B, _PAD_T = 760, 200, 60, 30, 24


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per node: max °C, seconds throttled, mean W, energy J, requests completed."""
    out: dict[str, dict[str, Any]] = {}
    by_node: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_node.setdefault(r["node"], []).append(r)
    for node, rs in sorted(by_node.items()):
        temps = [r["temp_c"] for r in rs if r["temp_c"] is not None]
        watts = [r["power_w"] for r in rs if r["power_w"] is not None]
        throttled_s = 0.0
        for a, b in itertools.pairwise(rs):
            if a.get("throttled_now"):
                throttled_s += b["t_head_s"] - a["t_head_s"]
        done = [r["completed_total"] for r in rs if r.get("completed_total") is not None]
        out[node] = {
            "max_temp_c": max(temps) if temps else None,
            "throttled_s": round(throttled_s, 1),
            "mean_power_w": round(sum(watts) / len(watts), 2) if watts else None,
            "energy_j": rs[-1].get("energy_j"),
            "completed": int(done[-1] - done[0]) if len(done) > 1 else None,
            "duration_s": round(rs[-1]["t_head_s"] - rs[0]["t_head_s"], 1),
        }
    return out


def _panel(rows: list[dict[str, Any]], key: str, title: str, t0: float, t1: float) -> str:
    nodes = sorted({r["node"] for r in rows})
    vals = [r[key] for r in rows if r.get(key) is not None]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if key == "temp_c":
        hi = max(hi, settings.throttle_temp_c + 2)
    if hi - lo < 1e-9:
        hi = lo + 1.0
    lo -= 0.05 * (hi - lo)
    span_t = max(t1 - t0, 1e-9)

    def x(t: float) -> float:
        return _PAD_L + (t - t0) / span_t * (_W - _PAD_L - 10)

    def y(v: float) -> float:
        return _PAD_T + (1 - (v - lo) / (hi - lo)) * (_H - _PAD_T - _PAD_B)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{_PAD_L}" y="15" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{_PAD_L}" y="{_PAD_T}" width="{_W - _PAD_L - 10}" '
        f'height="{_H - _PAD_T - _PAD_B}" fill="none" stroke="#999"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        v = lo + frac * (hi - lo)
        parts.append(f'<text x="{_PAD_L - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.4g}</text>')
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        t = t0 + frac * span_t
        parts.append(
            f'<text x="{x(t):.1f}" y="{_H - 10}" text-anchor="middle">{t - t0:.0f} s</text>'
        )
    if key == "temp_c":
        yt = y(settings.throttle_temp_c)
        parts.append(
            f'<line x1="{_PAD_L}" x2="{_W - 10}" y1="{yt:.1f}" y2="{yt:.1f}" '
            'stroke="red" stroke-dasharray="4 3"/>'
        )
        parts.append(
            f'<text x="{_W - 12}" y="{yt - 3:.1f}" text-anchor="end" fill="red">'
            f"throttle {settings.throttle_temp_c:g} °C</text>"
        )
    for i, node in enumerate(nodes):
        pts = [
            (r["t_head_s"], r[key]) for r in rows if r["node"] == node and r.get(key) is not None
        ]
        if not pts:
            continue
        color = _COLORS[i % len(_COLORS)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        parts.append(
            f'<text x="{_PAD_L + 8 + 70 * i}" y="{_PAD_T + 14}" fill="{color}">'
            f"{html.escape(node)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(run_dir: Path, title: str | None = None) -> str:
    rows = _load(run_dir)
    t0, t1 = rows[0]["t_head_s"], rows[-1]["t_head_s"]
    panels = "\n".join(_panel(rows, k, t, t0, t1) for k, t in _PANELS)
    summ = summarize(rows)
    head = ["node", "max °C", "s throttled", "mean W", "energy J", "requests", "duration s"]
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v if v is not None else '-'))}</td>" for v in (n, *s.values())
        )
        + "</tr>"
        for n, s in summ.items()
    )
    name = html.escape(title or str(run_dir))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{name}</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style>"
        f"</head><body><h2>{name}</h2><table><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + f"</tr>{body}</table>\n{panels}\n"
        "</body></html>\n"
    )


def render_svg(run_dir: Path) -> str:
    """All four panels stacked in one SVG document."""
    rows = _load(run_dir)
    t0, t1 = rows[0]["t_head_s"], rows[-1]["t_head_s"]
    inner = [
        _panel(rows, k, t, t0, t1).replace("<svg ", f'<svg y="{i * _H}" ', 1)
        for i, (k, t) in enumerate(_PANELS)
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H * len(_PANELS)}">'
        + "\n".join(inner)
        + "</svg>\n"
    )


def write_report(run_dir: Path, out: Path, title: str | None = None) -> dict[str, Any]:
    """Write `out` (.html or .svg); returns the per-node summary."""
    suffix = out.suffix.lower()
    if suffix not in (".html", ".htm", ".svg"):
        raise InputError(
            f"cannot write {suffix or 'that'}: use a .html or .svg file",
            where=str(out),
            hint="open the .html in a browser; it embeds SVG charts",
        )
    text = render_svg(run_dir) if suffix == ".svg" else render_html(run_dir, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return summarize(_load(run_dir))


def _load(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "telemetry.csv"
    if not path.is_file():
        raise InputError(
            "no telemetry.csv in this folder",
            where=str(run_dir),
            hint="runs are recorded under $EDGEKIT_HOME/telemetry/<run>/",
        )
    try:
        rows = read_telemetry(Path(run_dir))
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"unreadable telemetry: {exc}", where=str(path)) from exc
    rows = [r for r in rows if r.get("t_head_s") is not None and r.get("node")]
    if not rows:
        raise InputError("telemetry.csv has no rows", where=str(path))
    return sorted(rows, key=lambda r: r["t_head_s"])
