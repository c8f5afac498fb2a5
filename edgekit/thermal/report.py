"""`edgekit report`: temperature, clock, throughput and power over time per node, from a run's
telemetry.csv, as one self-contained HTML page (summary table and the charts as inline SVG),
or the charts alone as .svg or .png.

The charts are drawn with matplotlib (its object API and Agg/SVG backends: no display, no
pyplot state): it picks round tick values, lays the axes out so no label is cut, and is a
well-kept library where the hand-drawn SVG it replaced had meaningless axes on empty panels,
unrounded ticks and a clipped last label. It costs the head about 75 MB installed with
fonttools, beside the several hundred Ray takes there (aarch64 wheels exist, so a Pi head
installs it like the x86 host); only this command imports it, and nodes never install it
(their requirements are requirements-node.txt).
A measurement with no value in the run (no power meter, no throughput before a deploy) gets
a panel that says "no data" and why, not an axis scaled to nothing.
"""

from __future__ import annotations

import html
import io
import itertools
from pathlib import Path
from typing import Any

from edgekit import settings
from edgekit.errors import InputError
from edgekit.thermal.recorder import read_telemetry

#: telemetry column, panel title, and what an empty panel means
_PANELS = [
    ("temp_c", "temperature (°C)", "no temperature readings in this run"),
    ("freq_mhz", "ARM clock (MHz)", "no clock readings in this run"),
    ("requests_per_s", "throughput (req/s)", "no request counts in this run (nothing served)"),
    ("power_w", "power (W)", "no power readings in this run (no power meter or PMIC)"),
]
SUFFIXES = (".html", ".htm", ".svg", ".png")
_WIDTH_IN, _PANEL_IN = 9.0, 2.1


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


def _series(rows: list[dict[str, Any]], key: str, t0: float) -> dict[str, list[tuple]]:
    """node -> [(seconds since start, value)] for the rows that have ``key``."""
    out: dict[str, list[tuple]] = {}
    for r in rows:
        if r.get(key) is not None:
            out.setdefault(r["node"], []).append((r["t_head_s"] - t0, r[key]))
    return out


def _draw_panel(ax: Any, rows: list[dict[str, Any]], panel: tuple[str, str, str],
                colors: dict[str, str], t0: float) -> None:
    key, title, empty = panel
    ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
    series = _series(rows, key, t0)
    if not series:
        ax.set_axis_off()  # no ticks, no frame: nothing was measured, so nothing is scaled
        ax.text(0.5, 0.5, f"no data: {empty}", transform=ax.transAxes, ha="center",
                va="center", color="#666")
        return
    for node, pts in series.items():
        ts, vs = zip(*pts, strict=True)
        ax.plot(ts, vs, color=colors[node], linewidth=1.4, label=node,
                marker="o" if len(pts) < 3 else None, markersize=3)
    if key == "temp_c":
        limit = settings.throttle_temp_c
        ax.axhline(limit, color="red", linestyle="--", linewidth=1, label=f"throttle {limit:g} °C")
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom, max(top, limit + 3))  # the throttle line never sits on the frame
    ax.grid(True, color="#ddd", linewidth=0.6)
    # above the plot, right of the title: a legend inside would hide lines
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False,
              ncols=min(6, len(series) + 1), borderaxespad=0.1)
    ax.margins(x=0)


def _figure(rows: list[dict[str, Any]]) -> Any:
    """All panels stacked, sharing one time axis (seconds since the run's first row)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    t0 = rows[0]["t_head_s"]
    nodes = sorted({r["node"] for r in rows})
    palette = [f"C{i}" for i in range(10)]
    colors = {n: palette[i % len(palette)] for i, n in enumerate(nodes)}
    fig = Figure(figsize=(_WIDTH_IN, _PANEL_IN * len(_PANELS)), layout="constrained")
    axes = fig.subplots(len(_PANELS), 1, sharex=True)
    for ax, panel in zip(axes, _PANELS, strict=True):
        _draw_panel(ax, rows, panel, colors, t0)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    shown = [ax for ax in axes if ax.axison]
    if shown:  # the time axis is labelled once, under the lowest panel that has one
        shown[-1].xaxis.set_tick_params(labelbottom=True)
        shown[-1].set_xlabel("seconds since the run started")
        shown[-1].xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
        span = rows[-1]["t_head_s"] - t0
        shown[-1].set_xlim(0, span if span > 0 else 1.0)
    return fig


def _render(rows: list[dict[str, Any]], fmt: str) -> bytes:
    import matplotlib

    fig = _figure(rows)
    buf = io.BytesIO()
    # text stays text in the SVG; fixed ids and no date make the same run give the same file
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "edgekit"}):
        fig.savefig(buf, format=fmt, dpi=110,
                    metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def render_svg(run_dir: Path) -> str:
    """All four panels in one SVG document."""
    return _render(_load(run_dir), "svg").decode()


def render_html(run_dir: Path, title: str | None = None) -> str:
    """The summary table and the charts (inline SVG) as one HTML page."""
    return _html(_load(run_dir), title or str(run_dir))


def _html(rows: list[dict[str, Any]], title: str) -> str:
    svg = _render(rows, "svg").decode()
    svg = svg[svg.index("<svg"):]  # inline: no XML declaration or doctype inside HTML
    head = ["node", "max °C", "s throttled", "mean W", "energy J", "requests", "duration s"]
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v if v is not None else '-'))}</td>" for v in (n, *s.values())
        )
        + "</tr>"
        for n, s in summarize(rows).items()
    )
    name = html.escape(title)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{name}</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}"
        "svg{max-width:100%;height:auto}</style>"
        f"</head><body><h2>{name}</h2><table><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + f"</tr>{body}</table>\n{svg}\n"
        "</body></html>\n"
    )


def write_report(run_dir: Path, out: Path, title: str | None = None) -> dict[str, Any]:
    """Write `out` (.html, .svg or .png); returns the per-node summary."""
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(
            f"cannot write {suffix or 'that'}: use a .html, .svg or .png file",
            where=str(out),
            hint="open the .html in a browser; it has the summary table and the charts",
        )
    rows = _load(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        out.write_bytes(_render(rows, "png"))
    elif suffix == ".svg":
        out.write_text(_render(rows, "svg").decode())
    else:
        out.write_text(_html(rows, title or str(run_dir)))
    return summarize(rows)


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
