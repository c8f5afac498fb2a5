"""Deploy's self-test step: before a node gets traffic, it runs the model once with its own
runtime, outside Ray, and its answer is compared with the host's (docs/DEPLOY.md).

After provision and push, every node the plan places a stage on is sent its case (the stages
it serves, their inputs, the host's outputs, the tolerance: edgekit.deploy.selfcase) on the
stdin of ONE command, which stores it as `<root>/run/selftest-<model>.npz` (left there, so
the test can be rerun by hand) and runs `<root>/runtime/bin/python -m edgekit.node.selftest`
under coreutils' `timeout`. A node whose runtime cannot load or run the model, answers
wrongly, crashes or runs out of time fails at step "selftest" with the reason, and is left
out of the serving set. A pass is remembered in the host's state per (runtime fingerprint,
bundle version, stages, threads): an identical redeploy runs nothing.
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from edgekit.deploy import selfcase
from edgekit.deploy.layout import NodeLayout
from edgekit.deploy.plan import Plan
from edgekit.deploy.report import Reporter, RunResult
from edgekit.deploy.state import DeployState, NodeState
from edgekit.model.bundle import Bundle
from edgekit.node import selftest as node_selftest
from edgekit.node.agreement import Tolerance
from edgekit.node.selftest import StageCase
from edgekit.remote.ssh import CommandResult, Connection, Pool, run_each

#: generous: an emulated aarch64 node (qemu, a fraction of a core) needs 10-30 s to import
#: ONNX Runtime and runs fp32 ~100x slower; a real Pi takes seconds
DEFAULT_TIMEOUT_S = 600.0
KILL_AFTER_S = 10  # `timeout -k`: SIGKILL this long after the SIGTERM of a hung test
HOST_MARGIN_S = 60.0  # the host gives up this long after the node's own timeout


@dataclass
class Verdict:
    ok: bool
    detail: str  # why it failed ("" when it passed)
    report: dict[str, Any] = field(default_factory=dict)  # the node's JSON line
    seconds: float = 0.0  # wall time seen by the host (send + run)

    def summary(self) -> dict[str, Any]:
        """The node's result for deploy's report (--json: nodes[].selftest)."""
        rep = self.report
        outs = [o for st in rep.get("stages", []) for o in st.get("outputs", [])]
        errs = [o["max_abs_error"] for o in outs if o.get("max_abs_error") is not None]
        rels = [o["max_rel_error"] for o in outs if o.get("max_rel_error") is not None]
        coss = [o["cosine"] for o in outs if o.get("cosine") is not None]
        out: dict[str, Any] = {
            "ok": self.ok, "cached": False, "seconds": round(self.seconds, 2),
            "node_seconds": rep.get("seconds"), "import_s": rep.get("import_s"),
            "max_abs_error": max(errs) if errs else None,
            "max_rel_error": max(rels) if rels else None,
            "min_cosine": min(coss) if coss else None,
            "stages": [{k: st.get(k) for k in ("index", "load_s", "run_ms")}
                       for st in rep.get("stages", [])],
            "versions": rep.get("versions", {}), "tolerance": rep.get("tolerance", "")}
        if not self.ok:
            out["error"] = self.detail
        return out


def stages_of(p: Plan, node: str) -> list[int]:
    """The stage indices the plan gives `node` (stage i of a group runs on its i-th node)."""
    return [i for g in p.groups for i, n in enumerate(g) if n == node]


def key(ns: NodeState, version: str, stages: list[int]) -> str:
    """What a passing test is remembered by: the same runtime, bundle, stages and threads."""
    return f"{ns.fingerprint}:{version}:s{','.join(map(str, stages))}:t{ns.cores}"


def parse(res: CommandResult, timeout_s: float, seconds: float) -> Verdict:
    """The node's report line and exit status, as a verdict with a reason in words."""
    report: dict[str, Any] = {}
    for line in reversed(res.stdout.splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get(node_selftest.MARK):
            report = obj
            break
    code = res.exit_code
    if code == 0 and report.get("ok"):
        return Verdict(True, "", report, seconds)
    tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-4:])
    if report.get("error"):
        why = str(report["error"])
    elif code == 124 or (code == 128 + signal.SIGKILL and seconds >= timeout_s):
        why = (f"did not finish within {timeout_s:.0f} s (slow or emulated node? "
               "raise --selftest-timeout)")
    elif code > 128 and code - 128 in signal.valid_signals():
        name = signal.Signals(code - 128).name
        hint = " (an instruction this CPU lacks)" if name == "SIGILL" else ""
        why = f"the self-test process died of {name}{hint}: {tail or 'no output'}"
    elif code < 0:
        why = f"the session ended without an exit status (killed?): {tail or 'no output'}"
    else:
        why = f"exit code {code}: {tail or 'no output'}"
    return Verdict(False, why, report, seconds)


def run_case(conn: Connection, root: str, payload: bytes, app: str, threads: int,
             timeout_s: float) -> Verdict:
    """Send one case and run it on the node (one command); never raises for a bad answer."""
    lay = NodeLayout(root)
    q = shlex.quote
    path = f"{lay.run}/selftest-{app}.npz"
    # `timeout` re-raises a signal that killed the test on itself, and a session killed by a
    # signal has no exit status: the shell must outlive it (bash execs a last command, hence
    # the `; exit $?`) and turn that into 128 + signal
    cmd = (f"mkdir -p {q(lay.run)} && cat > {q(path)} && timeout -k {KILL_AFTER_S} "
           f"{max(1, math.ceil(timeout_s))} {q(lay.python)} -m edgekit.node.selftest {q(path)} "
           f"--root {q(root)} --node {q(conn.node.name)} --threads {threads}; exit $?")
    t0 = time.monotonic()
    res = conn.run(cmd, stdin=payload, timeout_s=timeout_s + HOST_MARGIN_S)
    return parse(res, timeout_s, time.monotonic() - t0)


class SelfTest:
    """One bundle's self-test: the host reference is computed once, when a node needs it."""

    def __init__(self, bundle: Bundle, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.bundle = bundle
        self.timeout_s = timeout_s
        self.manifest = bundle.manifest
        self._lock = threading.Lock()
        self._refs: list[StageCase] | None = None
        self._failed: Exception | None = None  # the host could not compute the reference
        self._tol: Tolerance | None = None
        self._payloads: dict[tuple[int, ...], bytes] = {}

    @property
    def tolerance(self) -> Tolerance:
        if self._tol is None:
            quantized = any(selfcase.is_quantized(self.bundle.path / s.file, self.bundle.runtime)
                            for s in self.manifest.stages)
            self._tol = selfcase.tolerance(self.manifest, quantized)
        return self._tol

    def payload(self, stages: list[int]) -> bytes:
        """The .npz a node serving `stages` gets (the reference runs on first use)."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._refs is None:
                try:
                    self._refs = selfcase.reference(self.bundle.path, self.manifest,
                                                    self.bundle.version)
                except Exception as exc:  # every node fails with it; compute it once
                    self._failed = exc
                    raise
            k = tuple(stages)
            if k not in self._payloads:
                case = selfcase.case_for(self.bundle.name, self.bundle.version, self.manifest,
                                         self._refs, self.tolerance, stages)
                self._payloads[k] = node_selftest.pack(case)
            return self._payloads[k]

    def run(self, conn: Connection, ns: NodeState, stages: list[int]) -> Verdict:
        return run_case(conn, ns.root, self.payload(stages), self.bundle.name, ns.cores,
                        self.timeout_s)


def gate(test: SelfTest, pool: Pool, st: DeployState, todo: dict[str, list[int]],
         res: RunResult, ui: Reporter) -> None:
    """Self-test the nodes in `todo` (node -> the stages it serves), in parallel; a node that
    fails is marked failed at step "selftest" (so it gets no traffic), a pass is remembered."""
    run: dict[str, list[int]] = {}
    for name, stages in todo.items():
        ns = st.nodes[name]
        if ns.selftest and ns.selftest == key(ns, test.bundle.version, stages):
            res.node(name).selftest = {"ok": True, "cached": True}
        else:
            run[name] = stages
    for name in run:
        res.node(name).step = "selftest"
        ui.step(name, "selftest")
    outs = run_each([pool[n].node for n in run],
                    lambda node: test.run(pool[node.name], st.nodes[node.name], run[node.name]))
    for name, out in outs.items():
        r, ns, v = res.node(name), st.nodes[name], out.value
        if out.ok and v is not None and v.ok:
            r.selftest = v.summary()
            ns.selftest = key(ns, test.bundle.version, run[name])
            continue
        ns.selftest = ""
        r.selftest = v.summary() if v is not None else {"ok": False, "error": out.error}
        r.fail("selftest", f"self-test: {v.detail if v is not None else out.error}",
               "selftest" if v is not None else out.kind or "error")
        ui.step(name, "[red]selftest failed")
