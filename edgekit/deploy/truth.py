"""What `edgekit status` says about a node beyond its services: the version ON DISK (its
`current` symlink) against the version SERVED there (what the API's live workers on it run),
with a plain sentence when they disagree and what to do; its temperature, throttling,
drain and weight as the API's thermal controller and router see them; its worker's load
error; and what its last service start found on disk (edgekit.node.bootcheck).

Pure functions of what `edgekit.deploy.ops.status` read over SSH and from the API
(`edgekit.deploy.verify.Health`), so tests give them any combination.

Why a mismatch happens at all: deploy switches each node's `current` at the end of its push,
before the self-test and before the API moves to the new version. A deploy killed in
between leaves nodes on disk ahead of what the API serves (seen: pi1/pi2 on v6, pi3 on v5;
all on v7 while the API served v6), which nothing showed. Rerunning the same deploy
converges every node; `rollback --to <served>` goes the other way.
"""

from __future__ import annotations

import shlex
from typing import Any

from edgekit.deploy.verify import Health
from edgekit.serve.control import DRAINED


def served_versions(h: Health | None, node: str, models: list[str]) -> dict[str, str | None]:
    """model -> the version the API's live workers on `node` run; "" when none is live
    there; None when the API could not be asked (unknown, not "nothing")."""
    if h is None or not h.answered:
        return dict.fromkeys(models)
    return {m: h.served.get(node, {}).get(m, "") for m in models}


def _fix(inventory: str, model: str, expected: str) -> str:
    inv = shlex.quote(inventory)
    return (f"run the same `edgekit deploy --nodes {inv} ...` again: it converges every node; "
            f"or go back: edgekit rollback --nodes {inv} --model {model} --to {expected}")


def _one(model: str, on_disk: str | None, served: str | None, api_version: str,
         deployed: str) -> tuple[str, str]:
    """(what disagrees, the version this node should be on) for one model; ("", "") when
    on disk and served agree (or there is nothing to compare)."""
    if not on_disk:
        return "", ""
    if served:
        if served != on_disk:
            return (f"{model}: on disk {on_disk[:12]}, but its workers serve "
                    f"{served[:12]}", served)
        return "", ""
    if served is None:  # the API cannot be asked: the host's record is all there is
        if deployed and deployed != on_disk:
            return (f"{model}: on disk {on_disk[:12]}, but the last finished deploy "
                    f"recorded {deployed[:12]} (the API could not be asked)", deployed)
        return "", ""
    if api_version and api_version != on_disk:  # no live worker here: what it would load
        return (f"{model}: on disk {on_disk[:12]}, but the API serves {api_version[:12]} "
                f"(no live worker here)", api_version)
    return "", ""


def mismatch(on_disk: dict[str, str | None], served: dict[str, str | None],
             h: Health | None, deployed: dict[str, str], inventory: str) -> tuple[str, str]:
    """(what disagrees between disk and the API on this node, what to do): ("", "") when
    nothing does."""
    found, fixes = [], []
    for model, disk in on_disk.items():
        api_version = (h.versions.get(model, "") if h is not None else "")
        what, expected = _one(model, disk, served.get(model), api_version,
                              deployed.get(model, ""))
        if what:
            found.append(what)
            fixes.append(_fix(inventory, model, expected))
    return "; ".join(found), "; ".join(fixes)


def boot_problem(report: dict[str, dict[str, Any]]) -> str:
    """What the node's last service start found wrong with a model's files on disk
    (edgekit.node.bootcheck), "" when every `current` was intact."""
    out = []
    for model, a in report.items():
        if a.get("ok", True):
            continue
        head = (f"{model}: version {str(a.get('version', '?'))[:12]} damaged on disk at the "
                f"last start ({a.get('problem') or 'unknown'})")
        if a.get("fell_back_to"):
            out.append(f"{head}; fell back to {str(a['fell_back_to'])[:12]}")
        else:
            out.append(f"{head}; {a.get('error') or 'no intact version kept'}")
    return "; ".join(out)


def thermal(h: Health | None, node: str) -> dict[str, Any]:
    """Temperature, throttling, drain and weights of `node` as the API sees them ({} when
    the API could not be asked or does not know the node). `weight` is the thermal
    controller's, `routing_weight` and `drained` the router's (what traffic follows)."""
    if h is None or not h.answered:
        return {}
    row, routed = h.thermal.get(node) or {}, h.routing.get(node) or {}
    if not row and not routed:
        return {}
    state = routed.get("state") or row.get("state")
    raw = row.get("throttled_raw")
    return {
        "temp_c": row.get("temp_c"),
        "throttled_now": row.get("throttled_now"),
        "throttled_since_boot": None if raw is None else raw not in ("0x0", "0"),
        "state": state,
        "drained": state == DRAINED,
        "weight": row.get("weight"),
        "routing_weight": routed.get("weight"),
        "stale": bool(row.get("stale")),
        "age_s": row.get("age_s"),
        "reason": row.get("reason") or routed.get("reason") or "",
        "controller": bool(row),
    }
