"""The nodes that do not serve at the end of a deploy: why, and whether they join later.

A shelf is never all up (issue #16). Deploy succeeds once `--min-nodes` nodes serve; each
node of the API's still without a live worker is looked at over SSH (one command): its Ray
service (user unit or edgekit's supervisor) and its restarts, whether a raylet runs, the tail
of its ray-worker.log. That tells a Ray that cannot start (its service exits again and again)
from one that is only slow, and gives the report its reason.

Such a node keeps trying on its own: its unit restarts without a start limit, the supervisor
restarts forever, and raynode backs off between quick exits (edgekit/node/raynode.py); once
the fault is gone its Ray joins the head and the API, which has it among its nodes, places
its worker (edgekit/serve/placement.py). A node that failed before its services were started
(unreachable over SSH, unfit, runtime, push, self-test) is not among the API's nodes: nothing
can bring it in but the next deploy, and its hint says so.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass

from edgekit.deploy.layout import UNIT_DIR, NodeLayout, unit_name
from edgekit.deploy.report import RunResult
from edgekit.deploy.verify import Health
from edgekit.remote.ssh import Connection, Pool, run_each

SEP = "@@edgekit-ray@@"
LOG_LINES = 30
#: a missing node whose Ray failed to start this many more times while verify watched it is
#: not waited for: it is not slow, it is failing (the report names it; it keeps retrying)
FAILED_STARTS = 2
#: how often verify looks at the missing nodes once enough of the others serve
LOOK_EVERY_S = 10.0
#: a supervisor whose status file is older than this is not running (it writes it twice a second)
SUPERVISOR_STALE_S = 30.0
#: words in a log line that say what went wrong (the line shown in the report)
ERROR_WORDS = ("error", "failed", "timed out", "timeout", "refused", "cannot", "unable",
               "exception", "denied", "not found")


@dataclass
class RayState:
    """A node's Ray service as its manager sees it."""

    manager: str  # "systemd" or "supervisor"
    up: bool  # the service's process runs now (not between two restarts)
    restarts: int  # automatic restarts so far
    last_exit: int | None  # status of the last run that ended
    gave_up: bool  # nothing restarts it any more (a failed unit, no supervisor)
    raylet: bool  # a raylet of this user runs on the node
    log: str  # tail of ray-worker.log


@dataclass
class Verdict:
    kind: str
    detail: str
    hint: str
    retrying: bool  # it keeps trying on its own and joins without a redeploy


def command(lay: NodeLayout) -> str:
    """One shell command printing the service state, whether a raylet runs, the log tail."""
    q, unit = shlex.quote, unit_name("ray-worker")
    log = q(lay.log("ray-worker"))
    return (f"date +%s; if [ -f $HOME/{UNIT_DIR}/{unit} ]; then echo systemd; "
            f"systemctl --user show {unit} -p ActiveState -p SubState -p NRestarts "
            f"-p ExecMainStatus; else echo supervisor; cat {q(lay.run)}/supervisor.json "
            f"2>/dev/null; fi; echo {SEP}; ps -u \"$(id -u)\" -o comm= | grep -qx raylet "
            f"&& echo raylet; echo {SEP}; cat {log}.1 {log} 2>/dev/null | tail -n {LOG_LINES}")


def parse(out: str) -> RayState:
    svc, _, rest = out.partition(SEP)
    raylet, _, log = rest.partition(SEP)
    lines = svc.strip().splitlines()
    now = float(lines[0]) if lines and lines[0].strip().isdigit() else time.time()
    manager = lines[1].strip() if len(lines) > 1 else ""
    body = lines[2:]
    if manager == "systemd":
        kv = dict(line.split("=", 1) for line in body if "=" in line)
        up = kv.get("ActiveState") == "active" and kv.get("SubState") == "running"
        # systemd resets ExecMainStatus to 0 when it starts the main process again: while it
        # runs (raynode waiting out its backoff) it is not the last run's status
        status = "" if up else kv.get("ExecMainStatus", "")
        return RayState(manager, up, int(kv.get("NRestarts") or 0),
                        int(status) if status.isdigit() else None,
                        kv.get("ActiveState") in ("failed", "inactive"), "raylet" in raylet,
                        log.strip("\n"))
    try:
        sup = json.loads("\n".join(body) or "{}")
    except ValueError:
        sup = {}
    s = (sup.get("services") or {}).get("ray-worker") or {}
    stale = now - float(sup.get("time") or 0) > SUPERVISOR_STALE_S
    return RayState("supervisor", bool(s.get("running")), int(s.get("restarts") or 0),
                    s.get("last_exit"), stale or not s, "raylet" in raylet, log.strip("\n"))


def look(conn: Connection, lay: NodeLayout) -> RayState:
    return parse(conn.run(command(lay), timeout_s=30).stdout)


def look_all(pool: Pool, layouts: dict[str, NodeLayout],
             names: list[str]) -> dict[str, RayState | str]:
    """Every named node's RayState, or why it could not be looked at."""
    outs = run_each([pool[n].node for n in names],
                    lambda node: look(pool[node.name], layouts[node.name]))
    return {n: out.value if out.ok and out.value is not None else (out.error or "?")
            for n, out in outs.items()}


def telling_line(log: str) -> str:
    """The last log line that says what went wrong (else the last one), shortened."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    own = [ln for ln in lines if not ln.startswith("edgekit raynode: Ray exited within")]
    bad = [ln for ln in own if any(w in ln.lower() for w in ERROR_WORDS)]
    line = (bad or own or lines or [""])[-1]
    return line if len(line) <= 300 else line[:297] + "..."


def retry_hint(node: str, inventory: str) -> str:
    return (f"its Ray service keeps retrying (with backoff): once the fault is fixed it joins "
            f"and the API adds it, no redeploy needed; its log: edgekit logs --nodes "
            f"{shlex.quote(inventory)} {node}")


def verdict(node: str, st: RayState | str, api: Health, waited_s: float,
            inventory: str = "INVENTORY") -> Verdict:
    """Why `node` has no live worker (the API's last answer: has it made the node's worker,
    so its Ray joined the head; does it serve at all?) and whether it joins later by itself."""
    if isinstance(st, str):
        return Verdict("unreachable", f"no live worker after {waited_s:.0f} s, and the node "
                       f"could not be looked at over SSH: {st}", "its services were started "
                       "and keep trying: it joins when it can, no redeploy needed", True)
    line = telling_line(st.log)
    runs = f"its Ray service restarted {st.restarts} times" if st.restarts else ""
    if st.gave_up:
        how = ("systemctl --user restart edgekit-ray-worker" if st.manager == "systemd"
               else "run the deploy again (its supervisor is not running)")
        return Verdict("ray-stopped", f"Ray is not running and nothing restarts it "
                       f"({st.manager}); last: {line or 'no log'}", f"on {node}: {how}", False)
    if st.raylet and not api.ready:
        return Verdict("no-api", f"its Ray runs, but the API does not serve: "
                       f"{api.error or 'not ready'}", "it serves once the API does (the API "
                       "keeps trying; see its log above)", True)
    if st.raylet and node in api.placed:
        # the worker's own load error (the API's /edgekit/status) says more than Ray's log
        why = api.load_errors.get(node) or line or "no log"
        return Verdict("worker-not-ready", f"Ray is up but its worker did not load the model "
                       f"within {waited_s:.0f} s: {why}",
                       "the API keeps trying its worker; see the log tail above", True)
    if st.raylet or (st.up and not st.restarts):
        return Verdict("ray-slow", f"Ray is starting but had not joined the head after "
                       f"{waited_s:.0f} s (a slow board?){'; ' + runs if runs else ''}",
                       "it joins when its Ray is up, and the API adds it", True)
    low = line.lower()
    if "timed out" in low or "timeout" in low:
        kind, what = "ray-start-timeout", "Ray start timed out"
    elif "gcs" in low and ("connect" in low or "unavailable" in low):
        kind, what = "ray-head-unreachable", "Ray could not reach the head"
    else:
        kind, what = "ray-start-failed", "Ray did not start"
    code = f", last exit status {st.last_exit}" if st.last_exit is not None else ""
    return Verdict(kind, f"{what} ({runs or 'its service exited'}{code}): {line or 'no log'}",
                   retry_hint(node, inventory), True)


class Watch:
    """Whether verify should stop waiting because more time would not change the outcome:
    every node still missing is failing, not slow (its Ray failed to start FAILED_STARTS
    more times since the first look, or nothing restarts it), or so many are failing that
    fewer than `min_nodes` could ever serve. A slow node is waited for until the timeout."""

    def __init__(self, pool: Pool, layouts: dict[str, NodeLayout], min_nodes: int,
                 every_s: float = LOOK_EVERY_S):
        self.pool, self.layouts, self.min_nodes, self.every_s = pool, layouts, min_nodes, every_s
        self.first: dict[str, int] = {}  # a node's restart count at the first look
        self.failing: set[str] = set()
        self.last_look = -float("inf")

    def settled(self, alive: set[str], missing: set[str]) -> bool:
        now = time.monotonic()
        if not missing or now - self.last_look < self.every_s:
            return False
        self.last_look = now
        for node, st in look_all(self.pool, self.layouts, sorted(missing)).items():
            if isinstance(st, str):
                continue  # cannot tell: not counted as failing
            self.first.setdefault(node, st.restarts)
            if st.gave_up or (not st.raylet and st.restarts - self.first[node] >= FAILED_STARTS):
                self.failing.add(node)
            else:
                self.failing.discard(node)
        return missing <= self.failing or len(self.layouts) - len(self.failing) < self.min_nodes


def hint_unstarted(res: RunResult) -> None:
    """A hint for every failed node without one: it was not started, so it cannot join
    before the next deploy (after its fault is fixed)."""
    for r in res.nodes.values():
        if r.ok or r.hint or r.step == "verify":  # verify's are set by verdict()
            continue
        if r.step == "check" and r.kind != "not-fit":
            r.hint = ("unreachable over SSH at deploy time: nothing was installed or started "
                      "on it, and it cannot join without a redeploy; once it answers, run "
                      "deploy again")
        else:
            r.hint = (f"not started ({r.step} failed): it cannot join without a redeploy; "
                      "fix it, then run deploy again")
