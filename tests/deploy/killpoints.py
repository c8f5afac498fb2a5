"""Kill a running `edgekit deploy` and check what is left (issue 16): does `edgekit status`
tell the truth (its on-disk and served versions equal what the nodes' `current` symlinks and
the API's own /edgekit/status say, read here directly, and it flags exactly the nodes where
the two differ), does one rerun converge every node, and does any node loop (its Ray service
restarting, or the API recreating its worker again and again)?

Shared by tests/deploy/test_deploy_cluster.py (two fixed points) and
benchmarks/deploy_kill.py (N random points).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import inventory
from edgekit.deploy import ops, stragglers, versions
from edgekit.deploy.layout import NodeLayout, deployment_dir
from edgekit.remote.ssh import Connection


@dataclass
class Reality:
    """Read without edgekit's status code: each node's `current` over SSH, and what the
    API's live workers run per node from its /edgekit/status JSON ("" none live, None: the
    API did not answer)."""

    on_disk: dict[str, str | None]
    served: dict[str, str | None]
    api_version: str = ""
    generations: dict[str, int] = field(default_factory=dict)


def start_deploy(inv: Path, bundle: Path, model: str) -> subprocess.Popen:
    """`edgekit deploy` of `bundle` in its own process (so it can be SIGKILLed)."""
    script = ("from edgekit.deploy.flow import DeployOptions, deploy;"
              f"deploy(DeployOptions({str(inv)!r}, {str(bundle)!r}, name={model!r},"
              " offline=True))")
    return subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def on_disk(inv: Path, nodes: list[str], model: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in nodes:
        with Connection(inventory.load(inv).get(name)) as c:
            root = c.run("echo $HOME/.edgekit", check=True).stdout.strip()
            out[name] = versions.active(c, NodeLayout(root), model)
    return out


def wait_switched(inv: Path, nodes: list[str], model: str, version: str,
                  proc: subprocess.Popen, timeout_s: float = 600) -> bool:
    """Poll until every node's `current` is `version` (True), or the deploy ended first."""
    conns = {n: Connection(inventory.load(inv).get(n)) for n in nodes}
    try:
        roots = {n: c.run("echo $HOME/.edgekit", check=True).stdout.strip()
                 for n, c in conns.items()}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if all(versions.active(c, NodeLayout(roots[n]), model) == version
                   for n, c in conns.items()):
                return True
            time.sleep(0.05)
        return False
    finally:
        for c in conns.values():
            c.close()


def api_status(inv: Path) -> dict[str, Any] | None:
    """The API's /edgekit/status JSON (its URL and token from the host's state), or None."""
    dep = deployment_dir(inv)
    try:
        url = json.loads((dep / "state.json").read_text())["head"]["api_url"]
        token = (dep / "api-token").read_text().strip()
        req = urllib.request.Request(f"{url}/edgekit/status",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError, KeyError):
        return None


def reality(inv: Path, nodes: list[str], model: str) -> Reality:
    doc = api_status(inv)
    disk = on_disk(inv, nodes, model)
    if doc is None:
        return Reality(disk, dict.fromkeys(nodes))
    version = str(((doc.get("models") or {}).get(model) or {}).get("version", ""))
    served: dict[str, str | None] = dict.fromkeys(nodes, "")
    gens: dict[str, int] = {}
    for r in doc.get("replicas", []):
        for n, g in zip(r.get("nodes", []), r.get("generations", []), strict=False):
            gens[n] = max(gens.get(n, -1), int(g))
            if r.get("alive") and r.get("model") == model and n in served:
                served[n] = str(r.get("version") or version)
    return Reality(disk, served, version, gens)


def untruths(st: dict[str, Any], real: Reality, model: str) -> list[str]:
    """Where `edgekit status --json` (`st`) differs from `real`; [] when it tells the truth."""
    out = []
    for n, disk in real.on_disk.items():
        node = st["nodes"].get(n) or {}
        said_disk = (node.get("active") or {}).get(model)
        said_served = (node.get("served") or {}).get(model)
        if said_disk != disk:
            out.append(f"{n}: status says on disk {said_disk}, the node has {disk}")
        if said_served != real.served[n]:
            out.append(f"{n}: status says served {said_served}, the API says {real.served[n]}")
        expected = real.served[n] or real.api_version
        differs = bool(disk and expected and disk != expected)
        if differs != bool(node.get("mismatch")):
            out.append(f"{n}: disk {disk} vs served {expected}, but status "
                       f"{'does not flag it' if differs else 'flags ' + repr(node['mismatch'])}")
    return out


def truthful_status(inv: Path, nodes: list[str], model: str,
                    tries: int = 3) -> tuple[dict[str, Any], Reality, list[str]]:
    """`edgekit status --json` and reality read around it; read again when reality moved
    meanwhile (a worker the API was still recreating), so only a lasting untruth counts."""
    st: dict[str, Any] = {}
    real, bad = reality(inv, nodes, model), ["not read"]
    for _ in range(tries):
        before = reality(inv, nodes, model)
        st = ops.status(inv).to_dict()
        real = reality(inv, nodes, model)
        bad = untruths(st, real, model)
        if not bad or (before.on_disk, before.served) == (real.on_disk, real.served):
            break
    return st, real, bad


def restarts(inv: Path, nodes: list[str]) -> dict[str, int]:
    """How often each node's Ray service has restarted (unit NRestarts or supervisor count)."""
    out = {}
    for name in nodes:
        with Connection(inventory.load(inv).get(name)) as c:
            root = c.run("echo $HOME/.edgekit", check=True).stdout.strip()
            out[name] = stragglers.look(c, NodeLayout(root)).restarts
    return out


def looping(inv: Path, nodes: list[str], model: str, watch_s: float = 10.0) -> list[str]:
    """Nodes whose Ray service restarted, or whose worker the API recreated more than once,
    within `watch_s` (a node that converged does neither)."""
    r0, g0 = restarts(inv, nodes), reality(inv, nodes, model).generations
    time.sleep(watch_s)
    r1, g1 = restarts(inv, nodes), reality(inv, nodes, model).generations
    return sorted({n for n in nodes if r1[n] > r0[n]}
                  | {n for n in nodes if g1.get(n, 0) - g0.get(n, 0) > 1})


def converged(inv: Path, nodes: list[str], model: str, version: str) -> list[str]:
    """What is not at `version` after a rerun: [] when every node has it on disk and serves it."""
    real = reality(inv, nodes, model)
    return [f"{n}: on disk {real.on_disk[n]}, served {real.served[n]}" for n in nodes
            if real.on_disk[n] != version or real.served[n] != version]
