"""`edgekit deploy`: check, plan, provision, push, start, verify (docs/DEPLOY.md).

Every node gets a result; a failure on one never stops the others (except `--strict`, which
stops before any node is touched). Each node's active model version changes only by the
atomic switch at the end of its push, so an interrupted deploy leaves every node on the
version it had, and a rerun completes it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from edgekit import inventory
from edgekit.deploy import bundle as bundle_mod
from edgekit.deploy import (
    head,
    headnode,
    nodeops,
    provision,
    push,
    selftest,
    services,
    state,
    survey,
    verify,
    wheels,
)
from edgekit.deploy.layout import NodeLayout, deployment_dir, wheelhouse_dir
from edgekit.deploy.plan import MB, NodeCapacity, Plan, plan
from edgekit.deploy.report import Quiet, Reporter, RunResult
from edgekit.remote.probe import NodeReport
from edgekit.remote.ssh import Connection, Outcome, Pool, run_each

T = TypeVar("T")

RAY_NODE_RESERVE_BYTES = 700 * MB  # OS + Ray worker (~300 MiB) + idle workers + agent
SELFTEST_TIMEOUT_S = selftest.DEFAULT_TIMEOUT_S  # (a DeployOptions field shadows the module)


@dataclass
class DeployOptions:
    inventory: Path
    target: Path
    name: str | None = None
    replicas: int | None = None
    stages: int | None = None
    offline: bool = False
    strict: bool = False
    dry_run: bool = False
    accept_new_host_keys: bool = False
    keep_versions: int = 3
    verify_timeout_s: float = 240.0
    selftest: bool = True  # run the model once on each node before it gets traffic
    selftest_timeout_s: float = SELFTEST_TIMEOUT_S
    api_port: int | None = None
    api_host: str = "127.0.0.1"  # what the API binds; 0.0.0.0: the LAN (bearer token always on)
    thermal: bool = True  # steer routing by temperature/power (edgekit.thermal controller)
    power_cap_w: float | None = None  # cluster power cap enforced by that controller
    extra: dict = field(default_factory=dict)


def object_store_bytes(total_ram: int) -> int:
    """10 % of the board's RAM, within Ray's minimum (75 MiB) and 512 MiB."""
    return int(min(max(total_ram // 10, 80 * MB), 512 * MB))


def capacity(node: inventory.Node, rep: NodeReport) -> NodeCapacity:
    total = (rep.mem_total_mb or 0) * MB
    usable = node.ram_bytes or total - RAY_NODE_RESERVE_BYTES - object_store_bytes(total)
    usable = headnode.head_capacity(usable, node)  # a role=head node also runs GCS + the API
    return NodeCapacity(node.name, max(usable, 0), node.speed, rep.cores or 1)


def deploy(opts: DeployOptions, ui: Reporter | None = None) -> RunResult:
    ui = ui or Quiet()
    t0 = time.monotonic()
    inv = inventory.load(opts.inventory)
    dep = deployment_dir(inv.path)
    res = RunResult("deploy")
    with state.locked(dep):
        st = state.load(dep, str(inv.path.resolve()))
        # host-only work first: a model file is bundled (cached by its sha256)
        bundle = bundle_mod.resolve(opts.target, dep / "bundles", opts.name, opts.stages)
        with Pool(list(inv), accept_new_host_keys=opts.accept_new_host_keys) as pool:
            fit, seen = _check(pool, bundle, res, ui)
            if opts.strict and not res.ok:
                bad = ", ".join(n for n, r in res.nodes.items() if not r.ok)
                res.error = f"--strict: {bad} not fit; no node was touched"
                return res
            if inv.head is not None and inv.head.name not in fit:
                res.error = (f"the head node {inv.head.name} (role=head) is not usable: "
                             f"{res.node(inv.head.name).detail}; no node was touched")
                return res
            caps = [capacity(inv.get(n), rep) for n, rep in fit.items()]
            p = plan([s.mem_bytes for s in bundle.stages], caps, replicas=opts.replicas,
                     model=bundle.name)
            res.plan = p.describe()
            for n, why in p.unused.items():
                res.node(n).step, res.node(n).detail = "plan", f"unused: {why}"
            if opts.dry_run:
                res.seconds = time.monotonic() - t0
                return res
            _forget_removed(inv, st, res, ui, opts)
            _rollout(inv, st, dep, bundle, p, fit, seen, opts, res, ui, pool)
        state.save(dep, st)
    res.seconds = time.monotonic() - t0
    return res


def _check(pool: Pool, bundle: bundle_mod.Bundle, res: RunResult,
           ui: Reporter) -> tuple[dict[str, NodeReport], dict[str, survey.Survey]]:
    """Probe + survey every node in one round trip each (see survey.py)."""
    blobs = [e.sha256 for e in (*bundle.files, bundle_mod.manifest_entry(bundle))]
    for name in pool.connections:
        ui.step(name, "check")
    outs = pool.each(lambda c: survey.check_and_survey(c, bundle.name, bundle.version, blobs))
    fit, seen = {}, {}
    for name, out in outs.items():
        r = res.node(name)
        r.step = "check"
        if not out.ok or out.value is None:
            r.fail("check", f"unreachable: {out.error}")
            ui.step(name, "[red]unreachable")
            continue
        rep, sv = out.value
        if rep.ready:
            fit[name], seen[name] = rep, sv
        else:
            r.fail("check", rep.verdict)
            ui.step(name, "[red]not fit")
    return fit, seen


def _forget_removed(inv: inventory.Inventory, st: state.DeployState, res: RunResult,
                    ui: Reporter, opts: DeployOptions) -> None:
    """Nodes deployed last time but gone from the inventory: stop and clean them."""
    names = {n.name for n in inv}
    for name in [n for n in st.nodes if n not in names]:
        ns = st.nodes[name]
        r = res.node(name)
        r.step = "removed"
        ui.step(name, "removing (no longer in the inventory)")
        try:
            node = inventory.parse(ns.line).nodes[0]
            with Connection(node, accept_new_host_keys=opts.accept_new_host_keys) as c:
                left = nodeops.teardown(c, NodeLayout(ns.root), ns.systemd, purge=False)
            r.detail = "left the inventory: services stopped, files removed"
            if left:
                r.fail("removed", f"processes still running: {left}")
        except Exception as exc:
            r.detail = f"left the inventory; could not clean it ({exc})"
        del st.nodes[name]


def _rollout(inv: inventory.Inventory, st: state.DeployState, dep: Path,
             bundle: bundle_mod.Bundle, p: Plan, fit: dict[str, NodeReport],
             seen: dict[str, survey.Survey], opts: DeployOptions, res: RunResult,
             ui: Reporter, pool: Pool) -> None:
    cache = wheelhouse_dir()
    head_name = inv.head.name if inv.head is not None else None
    reqs = wheels.pins(bundle_mod.node_packages(bundle))
    ray_token = state.secret(dep, "ray-token").read_bytes()
    api_token = state.secret(dep, "api-token")
    app = st.apps.get(bundle.name)
    history = list(app.history) if app else []
    facts: dict[str, nodeops.NodeFacts] = {}
    fresh: set[str] = set()  # nodes whose runtime was (re)installed by this deploy

    def prepare(c: Connection) -> str:
        name, rep, sv = c.node.name, fit[c.node.name], seen[c.node.name]
        r = res.node(name)
        t_node = time.monotonic()
        r.step = "provision"
        ui.step(name, "provision")
        f = nodeops.facts_from(c, sv.root, sv.python)
        facts[name] = f
        lay = NodeLayout(f.root)
        whl = wheels.node_wheel(cache, rep.arch)  # carries the kernels built for this arch
        fp = wheels.fingerprint(reqs, wheels.file_digest(whl), rep.python, rep.arch,
                                opts.offline)
        if sv.fingerprint == fp:
            r.runtime = "up to date"
        else:
            house = [whl]
            if opts.offline:
                house += sorted(wheels.wheelhouse(cache, reqs, rep.arch, rep.python)
                                .glob("*.whl"))
            provision.provision(c, lay, fingerprint=fp, python=f.python or c.node.python,
                                requirements=reqs, wheels=house, offline=opts.offline,
                                current=sv.fingerprint)
            r.runtime = "provisioned"
            fresh.add(name)
        r.step = "push"
        ui.step(name, "push")
        total = bundle.total_bytes
        sent = [0]

        def progress(n: int) -> None:
            sent[0] += n
            ui.bytes(name, sent[0], total)

        pu = push.push_node(c, lay, bundle, history=history, keep_versions=opts.keep_versions,
                            progress=progress, seen=sv)
        r.version, r.sent_bytes = pu.version, pu.sent_bytes
        r.seconds = time.monotonic() - t_node
        passed = st.nodes[name].selftest if name in st.nodes and name not in fresh else ""
        st.nodes[name] = state.NodeState(
            root=f.root, systemd=rep.systemd, fingerprint=fp, arch=rep.arch,
            cores=rep.cores or 1, ram_bytes=(rep.mem_total_mb or 0) * MB, address=f.node_ip,
            line=inventory.render([c.node]).strip(), selftest=passed)
        return pu.version

    # the head node gets the bundle even where the plan puts no replica: the API reads it
    prepared = p.nodes + [n for n in [head_name] if n and n not in p.nodes]
    for name, out in _each(pool, prepared, prepare).items():
        if not out.ok:
            res.node(name).fail(res.node(name).step or "provision", out.error or "")
            ui.step(name, f"[red]{res.node(name).step} failed")
    ready = [n for n in prepared if res.node(n).ok]
    if not ready or (head_name and head_name not in ready):
        res.error = (f"the head node {head_name} could not be prepared"
                     if ready else "no node could be prepared")
        return
    if opts.selftest:  # before any traffic: a node that answers wrongly gets none
        selftest.gate(selftest.SelfTest(bundle, opts.selftest_timeout_s), pool, st,
                      {n: selftest.stages_of(p, n) for n in ready if n in p.nodes}, res, ui)
    host_ip = facts[ready[0]].host_ip
    old_where = st.head.where
    if head_name is None:
        hd = headnode.choose(st.head, "host", host_ip, opts.api_host, opts.api_port,
                             lambda n: [head.free_port() for _ in range(n)])
        head.start_ray(dep / "head", host_ip, hd.ray_port, state.secret(dep, "ray-token"))
    else:
        head.stop(dep / "head")  # a host-side head from a deploy without role=head
        hf = facts[head_name]
        hd = headnode.choose(st.head, head_name, hf.node_ip, opts.api_host, opts.api_port,
                             lambda n: headnode.free_ports(pool[head_name], hf.python, n))
    addr = hd.ray_address
    st.head.where, st.head.ray_address = hd.where, addr
    res.head = {"where": hd.where, "ray_address": addr}

    head_gen: list[str] = []

    def start(c: Connection) -> str:
        name = c.node.name
        f = facts[name]
        if res.node(name).ok:  # a head node refused by its self-test still runs the head
            res.node(name).step = "start"
        ui.step(name, "start")
        ns, lay = st.nodes[name], NodeLayout(f.root)
        cfg = {"address": addr, "node_ip": f.node_ip, "num_cpus": ns.cores,
               "object_store_bytes": object_store_bytes(ns.ram_bytes),
               "resources": {names.node_resource(name): 1},
               "temp_dir": f"{f.root}/run/ray", "token_path": lay.ray_token, "root": f.root,
               # a new runtime or head restarts the node's services (the file changes)
               "generation": f"{ns.fingerprint}:{addr}"}
        if name == head_name:  # its one Ray process is the head (and still serves models)
            cfg = headnode.ray_config(cfg, hd.ray_port)
            head_gen.append(headnode.digest(cfg))
        elif head_name:  # a restarted head node is a new Ray cluster: rejoin it at once
            cfg["generation"] += ":" + "".join(head_gen)
        if name == old_where and name != head_name:  # the head moved away: its API goes
            headnode.remove_api(c, lay)
        if name not in fresh and services.unchanged(lay, name, cfg, ray_token, seen[name],
                                                    ns.systemd):
            return ("systemd" if ns.systemd else "supervisor") + " (running)"
        return services.install(c, lay, name, cfg, ns.systemd, ray_token)

    def start_head(c: Connection) -> str:
        how = start(c)
        headnode.wait_ray(c, NodeLayout(facts[c.node.name].root), hd.ip, hd.ray_port)
        return how

    # the head node first: the others join its Ray head
    for group, fn in (([head_name] if head_name else [], start_head),
                      ([n for n in ready if n != head_name and res.node(n).ok], start)):
        for name, out in _each(pool, group, fn).items():
            if out.ok and out.value:
                res.node(name).services = str(out.value)
            elif not out.ok:
                res.node(name).fail("start", out.error or "")
    if head_name and res.node(head_name).step == "start" and not res.node(head_name).ok:
        res.error = f"the Ray head on {head_name} did not start"
        return
    if old_where not in ("host", head_name, *ready) and old_where in pool.connections:
        headnode.retire(pool[old_where], st.nodes[old_where])  # was the head, now unplaced
    hd = dataclasses.replace(hd, generation="".join(head_gen))
    _serve_and_verify(st, dep, bundle, p, hd, opts, res, ui, pool, api_token,
                      state.secret(dep, "ray-token"))
    if app is None or app.version != bundle.version:
        history = [v for v in history if v != bundle.version] + [bundle.version]
    st.apps = {bundle.name: state.AppState(
        bundle=str(bundle.path), version=bundle.version, plan=p.to_dict(),
        history=history[-opts.keep_versions:],
        active={n: res.node(n).version for n in p.nodes if res.node(n).version},
        bundles={v: b for v, b in {**(app.bundles if app else {}),
                                    bundle.version: str(bundle.path)}.items()
                 if v in history[-opts.keep_versions:]})}


def _each(pool: Pool, names: list[str], fn: Callable[[Connection], T]) -> dict[str, Outcome[T]]:
    """fn on the pool's connections to `names` only (in parallel, one outcome each)."""
    return run_each([pool[n].node for n in names], lambda node: fn(pool[node.name]))


def serving_nodes(p: Plan, ok: set[str]) -> list[str]:
    """The plan's node order without groups that lost a node (a pipeline needs all)."""
    return [n for g in p.groups if set(g) <= ok for n in g]


def _serve_and_verify(st: state.DeployState, dep: Path, bundle: bundle_mod.Bundle, p: Plan,
                      hd: headnode.Head, opts: DeployOptions, res: RunResult, ui: Reporter,
                      pool: Pool, api_token: Path, ray_token: Path) -> None:
    nodes = serving_nodes(p, {n for n in p.nodes if res.node(n).ok})
    if not nodes:
        res.error = "no complete replica could be started"
        return
    common = {"ray_address": hd.ray_address, "nodes": nodes, "host": hd.api_host,
              "port": hd.api_port, "thermal": opts.thermal, "power_cap_w": opts.power_cap_w}
    if hd.on_node:
        try:
            res.head["api"] = headnode.serve(pool[hd.where], st.nodes[hd.where], bundle.name,
                                             bundle.version, hd.generation,
                                             api_token.read_bytes(), common,
                                             opts.verify_timeout_s)
        except Exception as exc:
            res.error = f"the API on {hd.where} did not start: {exc}"
            for n in nodes:
                res.node(n).fail("verify", "no API")
            return
    else:
        head.start_api(dep / "head", headnode.api_config(
            model=bundle.name, bundle=str(bundle.path), api_token_path=str(api_token),
            ray_token_path=str(ray_token), **common))
    st.head.api_port, st.head.api_host, st.head.api_url = hd.api_port, hd.api_host, hd.api_url
    res.head["api_url"] = st.head.api_url
    if headnode.needs_tunnel(st.head):
        res.head["tunnel"] = f"SSH to {hd.where}, then 127.0.0.1:{hd.api_port} there"
    for n in nodes:
        res.node(n).step = "verify"
        ui.step(n, "verify")
    with headnode.reach(st, pool[hd.where] if hd.on_node else None) as url:
        h = verify.wait(url, api_token.read_text().strip(), [bundle.name], nodes,
                        opts.verify_timeout_s, {bundle.name: bundle.version})
    for n in nodes:
        r = res.node(n)
        r.healthy = n in h.alive_nodes
        if r.healthy:
            r.step = "serving"
            ui.step(n, "[green]serving")
            continue
        r.fail("verify", h.error or "worker not alive")
        try:
            lay = NodeLayout(st.nodes[n].root)
            r.log_tail = services.log_tail(pool[n], lay, "ray-worker")
        except Exception as exc:
            r.log_tail = f"(could not read the log: {exc})"
    if not h.ready:
        res.head["api_log"] = (services.log_tail(pool[hd.where], NodeLayout(
            st.nodes[hd.where].root), "api") if hd.on_node else head.tail(dep / "head", "api"))
