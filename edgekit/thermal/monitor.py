"""`edgekit monitor`: the server's `/edgekit/status` as a rich dashboard.

`render(status)` is a pure function of the status JSON (one frame; tests render it into a
recording Console); `fetch_status` does the HTTP; the CLI loops with rich.live.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from rich.console import Group
from rich.text import Text

from edgekit.errors import ClusterError
from edgekit.tables import Col, FitTable, short_board
from edgekit.thermal.config import PolicyConfig
from edgekit.thermal.nodeview import NodeRow

_SPARK = "▁▂▃▄▅▆▇█"
_SPARK_LO_C, _SPARK_HI_C = 40.0, 85.0  # fixed scale: the same height means the same °C
_STATE_STYLE = {"serving": "green", "shedding": "yellow", "drained": "bold red"}
#: colours follow the policy's default thresholds: red where it drains, yellow where it sheds
_HOT_C, _WARM_C = PolicyConfig().drain_temp_c, PolicyConfig().shed_start_temp_c


def fetch_status(url: str, token: str | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET <url>/edgekit/status as JSON; an unreachable or failing server is a ClusterError."""
    req = urllib.request.Request(url.rstrip("/") + "/edgekit/status")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise ClusterError(
            f"server answered {exc.code} {exc.reason}",
            where=req.full_url,
            hint="pass --token-file if the API needs a token",
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ClusterError(
            f"cannot read status: {exc}",
            where=req.full_url,
            hint="is `edgekit serve` running there?",
        ) from exc


def node_rows(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-node rows: the thermal controller's view, else the router's bare stats."""
    thermal = (status.get("controllers") or {}).get("thermal") or {}
    if "nodes" in thermal:
        return thermal["nodes"]
    if "nodes" in status and "cluster" in status:  # a bare thermal status document
        return status["nodes"]
    return {n: {"node": n, **s} for n, s in (status.get("nodes") or {}).items()}


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """Cluster totals: req/s, W, J per inference, admission limit, policy on/off."""
    thermal = (status.get("controllers") or {}).get("thermal") or status
    rows = node_rows(status)
    cluster = thermal.get("cluster") or {}
    rps = cluster.get("requests_per_s")
    if rps is None:
        rps = sum(NodeRow.from_dict({**r, "node": n}).requests_per_s or 0.0
                  for n, r in rows.items())
    return {
        "nodes": len(rows),
        "requests_per_s": rps,
        "power_w": cluster.get("power_w"),
        "j_per_inference": cluster.get("j_per_inference"),
        "admission_limit": thermal.get("admission_limit", status.get("admission_limit")),
        "power_cap_w": thermal.get("power_cap_w"),
        "policy": ("on" if thermal.get("enabled") else "off") if "enabled" in thermal else "absent",
    }


def sparkline(temps: list[float], width: int = 20) -> Text:
    text = Text()
    for t in temps[-width:]:
        frac = (t - _SPARK_LO_C) / (_SPARK_HI_C - _SPARK_LO_C)
        ch = _SPARK[max(0, min(len(_SPARK) - 1, int(frac * len(_SPARK))))]
        text.append(ch, style="red" if t >= _HOT_C else "yellow" if t >= _WARM_C else "green")
    return text


def _f(value: Any, fmt: str, dash: str = "-") -> str:
    return dash if value is None else format(value, fmt)


#: the dashboard's columns; rank 0 stays at any width, higher ranks drop first (at 80
#: columns: node, board, temperature, state and reason; edgekit.tables)
COLUMNS = [
    Col("node"), Col("board", wrap=True, min_width=14), Col("temp °C", 1, justify="right"),
    Col("trend", 6), Col("clock MHz", 3, justify="right"), Col("throttle", 2),
    Col("W", 4, justify="right"), Col("util", 4, justify="right"),
    Col("req/s", 2, justify="right"), Col("p95 ms", 4, justify="right"),
    Col("J/inf", 5, justify="right"), Col("weight", 3, justify="right"), Col("state"),
    Col("reason", wrap=True, min_width=24, hide_empty=True),
]


def _throttle(r: NodeRow) -> str:
    if r.throttled is None:
        return "?"
    return "NOW" if r.throttled_now else ("since boot" if r.throttled_raw not in (None, "0x0")
                                          else "no")


def _cells(r: NodeRow) -> list[str | Text]:
    state = r.state or "?"
    if r.stale:
        state += " (stale)"
    throttle = _throttle(r)
    watts = _f(r.power_w, ".1f") + ("~" if r.power_source == "estimated" else "")
    return [
        r.node, short_board(r.board),
        Text(_f(r.temp_c, ".1f"), style="red" if (r.temp_c or 0) >= _HOT_C else ""),
        sparkline(r.temp_history or []),
        f"{_f(r.freq_mhz, '.0f')}/{_f(r.max_freq_mhz, '.0f')}",
        Text(throttle, style="bold red" if throttle == "NOW" else ""),
        watts, _f(r.util, ".0%"), _f(r.requests_per_s, ".1f"),
        _f(r.p95_ms, ".1f"), _f(r.j_per_inference, ".2f"),
        _f(r.weight, ".2f"),
        Text(state, style=_STATE_STYLE.get(r.state or "", "")),
        r.reason or "",
    ]


def _totals(s: dict[str, Any]) -> Text:
    cap = f" cap {s['power_cap_w']:.0f} W" if s["power_cap_w"] else ""
    limit = f" admission {s['admission_limit']}" if s["admission_limit"] else ""
    return Text(
        f"cluster: {_f(s['requests_per_s'], '.1f')} req/s  {_f(s['power_w'], '.1f')} W  "
        f"{_f(s['j_per_inference'], '.2f')} J/inference  policy {s['policy']}{cap}{limit}"
        "   (~ = estimated power)"
    )


def render(status: dict[str, Any]) -> Group:
    """One dashboard frame; its table is laid out for the width it is printed at."""
    table = FitTable(COLUMNS, title="edgekit nodes")
    for name, r in sorted(node_rows(status).items()):
        table.add_row(*_cells(NodeRow.from_dict({**r, "node": name})))
    thermal = (status.get("controllers") or {}).get("thermal") or {}
    recent = thermal.get("decisions") or []
    # wrapped, not cut: the reason is the point of the line
    lines = [Text(f"{d['node']}: {d['state']} w={d['weight']:.2f} - {d['reason']}")
             for d in recent[-4:]]
    return Group(table, _totals(summary(status)), *lines)


def snapshot(status: dict[str, Any]) -> dict[str, Any]:
    """What `edgekit monitor --once --json` prints: totals plus per-node rows (no history)."""
    rows = {
        n: {k: v for k, v in r.items() if k != "temp_history"} for n, r in node_rows(status).items()
    }
    return {"cluster": summary(status), "nodes": rows}
