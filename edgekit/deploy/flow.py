"""`edgekit deploy`: check and plan here, then the rollout (edgekit.deploy.rollout: provision,
push, self-test, head, start, serve, verify, record; docs/DEPLOY.md).

Every node gets a result; a failure on one never stops the others (except `--strict`, which
stops before any node is touched). Each node's active model version changes only by the
atomic switch at the end of its push, so an interrupted deploy leaves every node on the
version it had or on the complete new one (never a mix), and a rerun completes it.
"""

from __future__ import annotations

import time

from edgekit import inventory
from edgekit.deploy import bundle as bundle_mod
from edgekit.deploy import (
    headnode,
    heads,
    nodeops,
    state,
    stragglers,
    survey,
)
from edgekit.deploy.layout import NodeLayout, deployment_dir
from edgekit.deploy.options import DeployOptions
from edgekit.deploy.plan import MB, NodeCapacity, plan
from edgekit.deploy.report import Quiet, Reporter, RunResult
from edgekit.deploy.rollout import (
    Checked,
    Deployment,
    Rollout,
    object_store_bytes,
    serving_nodes,
)
from edgekit.errors import InputError
from edgekit.remote.probe import NodeReport
from edgekit.remote.ssh import Connection, Pool

RAY_NODE_RESERVE_BYTES = 700 * MB  # OS + Ray worker (~300 MiB) + idle workers + agent


def capacity(node: inventory.Node, rep: NodeReport) -> NodeCapacity:
    total = (rep.mem_total_mb or 0) * MB
    usable = node.ram_bytes or total - RAY_NODE_RESERVE_BYTES - object_store_bytes(total)
    usable = headnode.head_capacity(usable, node)  # a role=head node also runs GCS + the API
    return NodeCapacity(node.name, max(usable, 0), node.speed, rep.cores or 1)


def deploy(opts: DeployOptions, ui: Reporter | None = None) -> RunResult:
    t0 = time.monotonic()
    inv = inventory.load(opts.inventory)
    if opts.min_nodes > len(inv.nodes):
        raise InputError(f"--min-nodes {opts.min_nodes}, but the inventory has "
                         f"{len(inv.nodes)} node{'s' if len(inv.nodes) != 1 else ''}",
                         where=str(inv.path), hint=f"--min-nodes {len(inv.nodes)} or fewer")
    res = RunResult("deploy", min_nodes=opts.min_nodes)
    _deploy(opts, inv, res, ui or Quiet())
    stragglers.hint_unstarted(res)
    res.seconds = time.monotonic() - t0
    return res


def _deploy(opts: DeployOptions, inv: inventory.Inventory, res: RunResult,
            ui: Reporter) -> None:
    dep = deployment_dir(inv.path)
    with state.locked(dep):
        st = state.load(dep, str(inv.path.resolve()))
        # host-only work first: a model file is bundled (cached by its sha256)
        bundle = bundle_mod.resolve(opts.target, dep / "bundles", opts.name, opts.stages)
        with Pool(list(inv), accept_new_host_keys=opts.accept_new_host_keys) as pool:
            fit, seen = _check(pool, bundle, res, ui)
            if opts.strict and not res.ok:
                bad = ", ".join(n for n, r in res.nodes.items() if not r.ok)
                res.error = f"--strict: {bad} not fit; no node was touched"
                return
            unfit = [n for n in heads.for_inventory(inv, dep).nodes() if n not in fit]
            if unfit:
                res.error = (f"the head node {unfit[0]} (role=head) is not usable: "
                             f"{res.node(unfit[0]).detail}; no node was touched")
                return
            if len(fit) < opts.min_nodes:
                res.error = (f"only {len(fit)} node{'s are' if len(fit) != 1 else ' is'} "
                             f"reachable and fit, at least {opts.min_nodes} wanted "
                             "(--min-nodes); no node was touched")
                return
            caps = [capacity(inv.get(n), rep) for n, rep in fit.items()]
            p = plan([s.mem_bytes for s in bundle.stages], caps, replicas=opts.replicas,
                     model=bundle.name)
            res.plan = p.describe()
            for n, why in p.unused.items():
                res.node(n).step, res.node(n).detail = "plan", f"unused: {why}"
            placed = serving_nodes(p, set(p.nodes))
            if len(placed) < opts.min_nodes:
                res.error = (f"the plan serves on {len(placed)} node"
                             f"{'s' if len(placed) != 1 else ''}, at least {opts.min_nodes} "
                             "wanted (--min-nodes); no node was touched")
                return
            if opts.dry_run:
                return
            _forget_removed(inv, st, res, ui, opts)
            Rollout(opts, Deployment(inv, dep, st), bundle, pool, Checked(p, fit, seen),
                    res, ui).run()
        state.save(dep, st)


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
            r.fail("check", f"unreachable: {out.error}", out.kind or "unreachable")
            ui.step(name, "[red]unreachable")
            continue
        rep, sv = out.value
        if rep.ready:
            fit[name], seen[name] = rep, sv
        else:
            r.fail("check", rep.verdict, "not-fit")
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
                r.fail("removed", f"processes still running: {left}", "left-running")
        except Exception as exc:
            r.detail = f"left the inventory; could not clean it ({exc})"
        del st.nodes[name]
