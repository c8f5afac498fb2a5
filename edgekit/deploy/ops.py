"""status, rollback, undeploy and logs: everything from the inventory and the host state."""

from __future__ import annotations

import time
from pathlib import Path

from edgekit import inventory
from edgekit.deploy import (
    head,
    headnode,
    heads,
    nodeops,
    services,
    state,
    truth,
    verify,
    versions,
)
from edgekit.deploy.layout import NodeLayout, deployment_dir
from edgekit.deploy.report import DeployStatus, NodeStatus, RunResult
from edgekit.errors import ClusterError
from edgekit.remote.ssh import Pool
from edgekit.tokenfile import read_token


def _load(inventory_path: Path) -> tuple[inventory.Inventory, Path, state.DeployState]:
    inv = inventory.load(inventory_path)
    dep = deployment_dir(inv.path)
    if not state.exists(dep):
        raise ClusterError("nothing deployed with this inventory", where=str(inv.path),
                           hint="run `edgekit deploy --nodes ... MODEL` first")
    return inv, dep, state.load(dep, str(inv.path.resolve()))


def _deployed(inv: inventory.Inventory, st: state.DeployState) -> list[inventory.Node]:
    nodes = {n.name: n for n in inv if n.name in st.nodes}
    for name, ns in st.nodes.items():  # nodes since removed from the inventory
        if name not in nodes and ns.line:
            nodes[name] = inventory.parse(ns.line).nodes[0]
    return list(nodes.values())


def status(inventory_path: Path, accept_new_host_keys: bool = False) -> DeployStatus:
    inv, dep, st = _load(inventory_path)
    hd = heads.for_state(st, dep)
    token = read_token(dep / "api-token", "api-token") if (dep / "api-token").exists() else ""
    models = list(st.apps)
    health = _health(hd, st, token, models, accept_new_host_keys) if st.head.api_url else None

    def one(c) -> dict:
        ns = st.nodes[c.node.name]
        lay = NodeLayout(ns.root)
        svc = services.status(c, lay)
        if c.node.name in hd.nodes() and svc.get("units"):  # the head node's API unit
            svc["units"][headnode.API] = "active" if headnode.unit_active(c) else "inactive"
        return {"active": {m: versions.active(c, lay, m) for m in models},
                "kept": {m: versions.listed(c, lay, m) for m in models},
                "services": svc, "boot": versions.boot_report(c, lay)}

    with Pool(_deployed(inv, st), accept_new_host_keys=accept_new_host_keys) as pool:
        outs = pool.each(one)
    res = DeployStatus(
        "status", inventory=str(inv.path), head=vars(st.head),
        apps={m: {"version": a.version, "bundle": a.bundle, "plan": a.plan["nodes"],
                  "served_version": health.versions.get(m, "") if health else ""}
              for m, a in st.apps.items()},
        api_ready=bool(health and health.ready), tunnel=bool(hd.tunnel(st)),
        api_error=health.error if health else "",
        api_reachable=bool(health and health.answered))
    for name, out in outs.items():
        r = res.node(name)
        r.step, r.seconds = "status", out.seconds
        if not out.ok:
            r.fail("status", out.error or "", out.kind or "error")
            continue
        svc = out.value["services"]
        sup = svc.get("supervisor") or {}
        r.services = ({k: v == "active" for k, v in svc["units"].items()} if svc.get("units")
                      else {k: v.get("running") for k, v in sup.get("services", {}).items()})
        r.active, r.kept, r.systemd = out.value["active"], out.value["kept"], bool(
            svc.get("units"))
        r.healthy = bool(health and name in health.alive_nodes)
        for key, value in _worker_stack(health, name).items():
            setattr(r, key, value)
        _truth(r, health, {m: a.version for m, a in st.apps.items()}, out.value["boot"],
               str(inv.path))
    return res


def _truth(r: NodeStatus, health: verify.Health | None, deployed: dict[str, str],
           boot: dict, inventory_path: str) -> None:
    """On disk against served, load error, boot check and thermal state (edgekit.deploy.
    truth): what the node's row says beyond its services."""
    r.served = truth.served_versions(health, r.node, list(r.active))
    r.mismatch, r.fix = truth.mismatch(r.active, r.served, health, deployed, inventory_path)
    r.load_error = health.load_errors.get(r.node, "") if health else ""
    r.boot_problem = truth.boot_problem(boot)
    r.thermal = truth.thermal(health, r.node)


def _worker_stack(health: verify.Health | None, node: str) -> dict:
    """What the node's workers compute with, as the API reports it: kernel variant,
    onnxruntime / ai-edge-litert versions, and the numpy-fallback warning ("" when none;
    all "" for a node without a live worker)."""
    w = (health.workers if health else {}).get(node, {})
    return {key: w.get(key, "") for key in ("kernels", "onnxruntime", "litert", "warning")}


def _health(hd: heads.Head, st: state.DeployState, token: str, models: list[str],
            accept_new_host_keys: bool) -> verify.Health:
    """The API's answer (through an SSH tunnel when it runs on a head node's loopback)."""
    try:
        with hd.reach(st, None, accept_new_host_keys) as url:
            return verify.check(url, token, models)
    except Exception as exc:  # the head node is unreachable: say so, the table still shows
        return verify.Health(False, error=f"cannot reach the API on {st.head.where}: {exc}",
                             answered=False)


def rollback(inventory_path: Path, model: str | None, to: str | None,
             accept_new_host_keys: bool = False) -> RunResult:
    inv, dep, st = _load(inventory_path)
    res = RunResult("rollback")
    t0 = time.monotonic()
    with state.locked(dep):
        name = model or next(iter(st.apps), None)
        if name is None or name not in st.apps:
            raise ClusterError(f"no deployed model {name!r}", where=str(inv.path))
        app = st.apps[name]

        def one(c) -> tuple[str, str]:
            return nodeops.rollback(c, NodeLayout(st.nodes[c.node.name].root), name, to)

        # a head node's API reads the model from its own `current`: switched too
        hd = heads.for_state(st, dep)
        with Pool([n for n in _deployed(inv, st)
                   if n.name in app.plan["nodes"] or n.name in hd.nodes()],
                  accept_new_host_keys=accept_new_host_keys) as pool:
            for node, out in pool.each(one).items():
                r = res.node(node)
                r.step = "rollback"
                if out.ok and out.value:
                    r.detail = f"{out.value[0]} -> {out.value[1]}"
                    r.version = out.value[1]
                    if node in app.plan["nodes"]:
                        app.active[node] = out.value[1]
                else:
                    r.fail("rollback", out.error or "", out.kind or "error")
            switched = {r.version for r in res.nodes.values() if r.ok and r.version}
            if len(switched) == 1:
                _reload_api(hd, st, name, switched.pop(), res, pool)
        state.save(dep, st)
    res.seconds = time.monotonic() - t0
    return res


def _reload_api(hd: heads.Head, st: state.DeployState, name: str, version: str,
                res: RunResult, pool: Pool) -> None:
    """Have the API roll its workers to the rolled-back version (no restart)."""
    app = st.apps[name]
    folder = app.bundles.get(version, app.bundle)  # the host's copy (metadata for a host API)
    try:
        loaded = hd.reload(pool, st, name, version, folder)
    except Exception as exc:
        res.error = f"the API on {hd.where} did not load {name} {version}: {exc}"
        return
    failed = loaded.failed if loaded is not None else {}
    for node, why in failed.items():  # the old version still serves there
        res.node(node).fail("reload", why, "load-failed")
    app.version, app.bundle = version, folder
    with hd.reach(st, pool) as url:
        h = verify.wait(url, read_token(hd.dep / "api-token", "api-token"), [name],
                        sorted(set(app.active) - set(failed)), 120.0, {name: version})
    if not h.ready:
        res.error = f"after the rollback the API is not serving {name} {version}: {h.error}"
    res.head["api_url"] = st.head.api_url
    for node in app.active:
        res.node(node).healthy = node in h.alive_nodes


def undeploy(inventory_path: Path, purge: bool = False,
             accept_new_host_keys: bool = False) -> RunResult:
    inv, dep, st = _load(inventory_path)
    res = RunResult("undeploy")
    t0 = time.monotonic()
    with state.locked(dep):

        def one(c) -> list[str]:
            ns = st.nodes[c.node.name]
            return nodeops.teardown(c, NodeLayout(ns.root), ns.systemd, purge)

        # Workers first, then the head node, then the host's head: a Ray worker whose head is
        # already gone hangs in shutdown until its stop timeout (measured 45-60 s per undeploy)
        nodes, hd = _deployed(inv, st), heads.for_state(st, dep)
        waves = [[n for n in nodes if n.name not in hd.nodes()],
                 [n for n in nodes if n.name in hd.nodes()]]
        for wave in (w for w in waves if w):
            with Pool(wave, accept_new_host_keys=accept_new_host_keys) as pool:
                for node, out in pool.each(one).items():
                    r = res.node(node)
                    r.step = "undeploy"
                    if not out.ok:
                        r.fail("undeploy", out.error or "", out.kind or "error")
                    elif out.value:
                        r.fail("undeploy", f"processes still running: {out.value}", "left-running")
                    else:
                        r.detail = "purged" if purge else "stopped, files removed (runtime kept)"
                        del st.nodes[node]
        head.stop(dep / "head")  # the host's head, if there is one
        res.head = {"stopped": True}
        if res.ok:
            st.apps, st.head = {}, state.HeadState()
        state.save(dep, st)
    res.seconds = time.monotonic() - t0
    return res


def logs(inventory_path: Path, node: str, service: str, lines: int,
         accept_new_host_keys: bool = False) -> str:
    inv, dep, st = _load(inventory_path)
    hd = heads.for_state(st, dep)
    if node in ("head", hd.where):
        where, service = hd.log_target(service)
        if where is None:
            return head.tail(dep / "head", service, lines)
        node = where
    if node not in st.nodes:
        raise ClusterError(f"nothing deployed on {node}", where=str(inv.path))
    target = next(n for n in _deployed(inv, st) if n.name == node)
    with Pool([target], accept_new_host_keys=accept_new_host_keys) as pool:
        return services.log_tail(pool[node], NodeLayout(st.nodes[node].root), service, lines)
