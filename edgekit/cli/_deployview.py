"""How `deploy`, `rollback`, `undeploy` and `status` look: per-node progress while a deploy
runs, the per-node result after it, and the status table. Pure functions of the results
(edgekit.deploy.report.RunResult, the dict of edgekit.deploy.ops.status), so tests render them
into a Console of a chosen width."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.progress import Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.text import Text

from edgekit.cli.nodes import kernels_text
from edgekit.deploy.report import DEGRADED, OK, NodeResult, RunResult
from edgekit.tables import Col, FitTable

EXIT_NODES_FAILED = 4
#: served, degraded: at least --min-nodes nodes serve the model, others do not (each named,
#: with why): usable, but not what was asked for (docs/DEPLOY.md, "Exit codes")
EXIT_PARTIAL = 8

#: a deploy step (edgekit.deploy.flow / selftest) -> what the node is doing, in words
PHASES = {
    "check": "checking the node",
    "provision": "checking/installing the runtime",
    "push": "sending the model",
    "selftest": "self-test: running the model",
    "start": "starting Ray and services",
    "verify": "waiting for its workers",
}


class _Detail(ProgressColumn):
    """Bytes while the model is sent, else the seconds spent in the current phase."""

    def render(self, task: Task) -> Text:
        f = task.fields
        if f.get("done"):
            return Text("")
        if f.get("to_send"):
            return Text(f"{f['sent'] / 1e6:.1f}/{f['to_send'] / 1e6:.1f} MB")
        return Text(f"{time.monotonic() - f.get('since', time.monotonic()):.0f} s", "dim")


class Bars:
    """edgekit.deploy.report.Reporter drawn as one progress line per node."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def _task(self, node: str) -> TaskID:
        if node not in self.tasks:
            self.tasks[node] = self.progress.add_task(node, total=None, step="", sent=0,
                                                      to_send=0, since=time.monotonic())
        return self.tasks[node]

    def step(self, node: str, text: str) -> None:
        # a final word comes coloured ("[green]serving", "[red]push failed")
        done = text.startswith(("[red]", "[green]"))
        self.progress.update(self._task(node), step=PHASES.get(text, text), to_send=0, sent=0,
                             since=time.monotonic(), done=done)

    def bytes(self, node: str, sent: int, total: int) -> None:
        self.progress.update(self._task(node), sent=sent, to_send=total)


def progress(console: Any, disable: bool) -> Progress:
    return Progress(TextColumn("{task.description:>10}", style="bold"),
                    TextColumn("{task.fields[step]}"), _Detail(), console=console,
                    disable=disable)


def _selftest(t: dict) -> str:
    if not t:
        return ""
    if t.get("cached"):
        return "self-test passed before"
    if not t.get("ok"):
        return "self-test failed"
    cos = t.get("min_cosine")
    return f"self-test ok in {t.get('seconds', 0):.1f} s" + (
        f" (cosine {cos:.5f})" if cos is not None else "")


def _happened(r: NodeResult) -> str:
    parts = [f"runtime {r.runtime}" if r.runtime else "",
             f"sent {r.sent_bytes / 1e6:.1f} MB" if r.sent_bytes else "",
             _selftest(r.selftest), f"services: {r.services}" if r.services else ""]
    return "; ".join(p for p in parts if p)


def _outcome(res: RunResult, r: NodeResult) -> Text:
    if not r.ok and r.joins_later:  # its services keep trying: it serves when it can
        return Text(f"not serving yet ({r.step})", "yellow")
    if not r.ok:
        return Text(f"failed at {r.step or 'start'}", "red")
    if r.healthy:
        return Text("serving", "green")
    if r.step == "plan":
        return Text("not used")
    if res.head.get("where") == r.node:
        return Text("runs the head")
    return Text(r.step or "ok")


def serving(res: RunResult) -> list[str]:
    return res.serving


def exit_code(res: RunResult) -> int:
    """0 (ok), EXIT_PARTIAL (degraded: a deploy at least --min-nodes nodes serve while others
    do not) or EXIT_NODES_FAILED."""
    return {OK: 0, DEGRADED: EXIT_PARTIAL}.get(res.outcome, EXIT_NODES_FAILED)


def _failed(r: NodeResult) -> str:
    return f"{r.node} (at {r.step}" + ("; joins when it comes up)" if r.joins_later else ")")


def headline(res: RunResult) -> Text:
    """One plain sentence: what serves now, and what did not work."""
    failed = [_failed(r) for r in res.nodes.values() if not r.ok]
    up = serving(res)
    if res.command != "deploy":
        if res.ok:
            return Text(f"{res.command}: done on every node", "green")
        return Text(f"{res.command} FAILED on " + (", ".join(failed) or res.error), "red")
    if res.ok and not up:  # a dry run
        return Text("dry run: checked and planned, nothing was changed")
    if res.ok:
        return Text(f"deployed: serving on {', '.join(up)}", "green")
    if res.outcome == DEGRADED:
        return Text(f"PARTIAL deploy (exit {EXIT_PARTIAL}): serving on {', '.join(up)}; "
                    f"failed: {', '.join(failed)}", "yellow")
    if up:  # fewer than --min-nodes serve
        return Text(f"deploy FAILED: serving on {', '.join(up)} only, at least "
                    f"{res.min_nodes} wanted (--min-nodes); failed: {', '.join(failed)}", "red")
    why = f": {res.error}" if res.error else ""
    return Text(f"deploy FAILED: nothing serves{why}" +
                (f"; failed: {', '.join(failed)}" if failed else ""), "red")


RESULT_COLUMNS = [Col("node"), Col("result"), Col("version", 2),
                  Col("what happened", wrap=True, min_width=20, hide_empty=True),
                  Col("detail", wrap=True, min_width=20, hide_empty=True)]


def result_view(res: RunResult) -> RenderableType:
    """The table of a deploy-family command, its log tails, the head and the headline."""
    table = FitTable(RESULT_COLUMNS, title=f"{res.command} in {res.seconds:.1f} s")
    for r in res.nodes.values():
        table.add_row(r.node, _outcome(res, r), r.version[:12], _happened(r), r.detail)
    parts: list[RenderableType] = [table]
    for r in res.nodes.values():
        if r.log_tail:
            parts.append(Text(f"{r.node} log tail:\n{r.log_tail}"))
    for r in res.nodes.values():
        if r.hint and not r.ok:
            parts.append(Text(f"{r.node}: {r.hint}", "yellow"))
    head = {k: v for k, v in res.head.items() if k not in ("api_log", "warning")}
    if head:
        parts.append(Text("head: " + ", ".join(f"{k} {v}" for k, v in head.items())))
    if res.head.get("api_log"):
        parts.append(Text(f"API log tail:\n{res.head['api_log']}"))
    if res.error:
        parts.append(Text(f"error: {res.error}", "red"))
    parts.append(headline(res))
    return Group(*parts)


STATUS_COLUMNS = [Col("node"), Col("board", wrap=True, min_width=14), Col("verdict"),
                  Col("reason", wrap=True, min_width=24, hide_empty=True),
                  Col("on disk", 1), Col("served", 1), Col("services", 2),
                  Col("temp °C", 2, justify="right"), Col("thermal", 2), Col("throttle", 3),
                  Col("kernels", 3), Col("kept", 4)]
#: the thermal policy's drain point: a node at or above it is shown red
_HOT_C = 78.0


def _versions(by_model: dict | None, many: bool = False) -> str:
    """{model: version} or {model: [versions]} as "model 1a2b3c4d5e6f" lines (no dicts)."""
    lines = []
    for model, v in (by_model or {}).items():
        if many:
            lines += [f"{model} {x[:12]}" for x in v] if v else [f"{model} none"]
        else:
            lines.append(f"{model} {v[:12] if v else 'none active'}")
    return "\n".join(lines) or "-"


def _served(n: dict) -> str:
    """The versions the node's live workers run: "?" when the API could not be asked."""
    served = n.get("served") or {}
    return "\n".join(f"{m} {'?' if v is None else v[:12] if v else 'none'}"
                     for m, v in served.items()) or "-"


def _problems(st: dict, n: dict) -> list[str]:
    """What is wrong with a reachable node beyond its services, most important first."""
    out = [f"version mismatch: {n['mismatch']}"] if n.get("mismatch") else []
    if n.get("load_error"):
        out.append(f"worker cannot load the model: {n['load_error']}")
    if n.get("boot_problem"):
        out.append(n["boot_problem"])
    th = n.get("thermal") or {}
    if th.get("drained"):
        out.append(f"drained: {th.get('reason') or 'by the thermal controller'}")
    elif th.get("throttled_now"):
        out.append("throttling now (firmware)")
    return out


def _node_verdict(st: dict, n: dict) -> tuple[Text, str]:
    if not n["reachable"]:
        return Text("unreachable", "red"), n.get("error") or ""
    down = sorted(k for k, up in (n.get("services") or {}).items() if not up)
    reasons = [f"not running: {', '.join(down)}"] if down else []
    if not any((n.get("active") or {}).values()):
        reasons.append("no model version active")
    reasons += _problems(st, n)
    if n["healthy"]:
        verdict = Text("mismatch", "yellow") if n.get("mismatch") else Text("serving", "green")
        return verdict, "; ".join([*reasons, n.get("warning") or ""]).strip("; ")
    if not st["api_ready"]:
        reasons.append(f"API not ready: {st.get('api_error') or 'no answer'}")
    elif not reasons:
        reasons.append("the API sees no live worker on it")
    return Text("not serving", "red"), "; ".join(reasons)


def _thermal_cells(th: dict) -> tuple[Text, str, Text]:
    """(temperature, throttle, state and weight) of a node's thermal view; dashes without."""
    if not th:
        return Text("-"), "-", Text("-")
    temp = th.get("temp_c")
    cell = Text("-" if temp is None else f"{temp:.1f}",
                "red" if temp is not None and temp >= _HOT_C else "")
    now, before = th.get("throttled_now"), th.get("throttled_since_boot")
    throttle = "?" if now is None else "NOW" if now else "since boot" if before else "no"
    state = ("stale " if th.get("stale") else "") + str(th.get("state") or "?")
    weight = th.get("weight") if th.get("weight") is not None else th.get("routing_weight")
    style = {"drained": "red", "shedding": "yellow"}.get(str(th.get("state")), "")
    return cell, throttle, Text(state + ("" if weight is None else f" {weight:.2f}"), style)


def status_view(st: dict, boards: dict[str, str]) -> RenderableType:
    """`edgekit status`: one row per node, then the deployed models, mismatches and what to
    do about them, and the API."""
    hd = st["head"]
    where = f" on {hd.get('where') or 'host'}"
    via = " (SSH tunnel)" if st.get("tunnel") else ""
    ready = "ready" if st["api_ready"] else "NOT ready"
    table = FitTable(STATUS_COLUMNS, title=f"API {hd.get('api_url')}{where}{via}: {ready}")
    for name, n in st["nodes"].items():
        verdict, reason = _node_verdict(st, n)
        svc = n.get("services") or {}
        up = f"{sum(bool(v) for v in svc.values())}/{len(svc)} up" if svc else "-"
        temp, throttle, thermal = _thermal_cells(n.get("thermal") or {})
        table.add_row(name, boards.get(name) or "?", verdict, reason,
                      _versions(n.get("active")), _served(n), up, temp, thermal, throttle,
                      kernels_text(n.get("kernels", "")), _versions(n.get("kept"), many=True))
    parts: list[RenderableType] = [table]
    if not st.get("api_reachable", True):
        parts.append(Text(f"the API cannot be reached ({st.get('api_error') or 'no answer'}): "
                          "served versions and thermal state unknown; on disk as shown",
                          "red"))
    for model, app in (st.get("apps") or {}).items():
        served = app.get("served_version")
        also = f", the API serves {served[:12]}" if served and served != app["version"] else ""
        parts.append(Text(f"model {model}: version {app['version'][:12]}{also}; planned on "
                          f"{', '.join(app.get('plan') or []) or 'no node'}"))
    parts += _mismatch_lines(st)
    return Group(*parts)


def _mismatch_lines(st: dict) -> list[Text]:
    """One line per node whose disk and workers disagree, then what to do (once per fix)."""
    bad = {name: n for name, n in st["nodes"].items() if n.get("mismatch")}
    if not bad:
        return []
    out = [Text(f"VERSION MISMATCH on {name}: {n['mismatch']}", "yellow")
           for name, n in bad.items()]
    for fix in dict.fromkeys(n.get("fix") or "" for n in bad.values()):
        if fix:
            out.append(Text(f"to fix: {fix}", "yellow"))
    return out


def status_boards(nodes_file: Path) -> dict[str, str]:
    """What each node is, for `status` (which does not probe): the inventory's `board` label
    if given, else the arch, cores and RAM the last deploy recorded."""
    from edgekit import inventory
    from edgekit.deploy import state
    from edgekit.deploy.layout import deployment_dir

    inv = inventory.load(nodes_file)
    st = state.load(deployment_dir(inv.path), str(inv.path.resolve()))
    out = {}
    for node in inv:
        ns = st.nodes.get(node.name)
        recorded = (f"{ns.arch} {ns.cores}-core {ns.ram_bytes / 2**30:.1f}G"
                    if ns and ns.arch else "")
        out[node.name] = node.labels.get("board") or recorded
    return out
