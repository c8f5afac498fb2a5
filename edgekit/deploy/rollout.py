"""Deploy's rollout once the plan is made (edgekit.deploy.flow.deploy), one step per method:

1. `prepare`: on every planned node (and the head node), the runtime (provision) and the
   bundle (push, switched atomically at the end);
2. `selftest`: the model once on each prepared node before it gets traffic;
3. `place_head`: the head's ports, and the Ray head where it runs on its own (edgekit.deploy.
   heads); a head that moved elsewhere is retired;
4. `start`: every node's services (the head node first: the others join its Ray head);
5. `serve` + `verify`: the API on the head (started or restarted when its own settings
   changed; a new model version alone is rolled into the running API, node by node, by its
   repository load: edgekit.deploy.apiload, edgekit.serve.rolling), then every serving
   node's worker answers, at the version just pushed;
6. `record`: the deployment's new state (versions kept for rollback).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from edgekit import inventory, names
from edgekit.deploy import (
    apiload,
    heads,
    nodeops,
    provision,
    push,
    selftest,
    services,
    state,
    stragglers,
    survey,
    verify,
    wheels,
)
from edgekit.deploy import bundle as bundle_mod
from edgekit.deploy.headnode import ApiSettings, ApiSpec
from edgekit.deploy.headnode import Head as Placement
from edgekit.deploy.layout import NodeLayout, wheelhouse_dir
from edgekit.deploy.options import DeployOptions
from edgekit.deploy.plan import MB, Plan
from edgekit.deploy.report import Reporter, RunResult
from edgekit.fleet import FleetResult
from edgekit.model.bundle import Bundle
from edgekit.remote.probe import NodeReport
from edgekit.remote.ssh import Connection, Outcome, Pool, run_each

T = TypeVar("T")


def object_store_bytes(total_ram: int) -> int:
    """10 % of the board's RAM, within Ray's minimum (75 MiB) and 512 MiB."""
    return int(min(max(total_ram // 10, 80 * MB), 512 * MB))


@dataclass
class Deployment:
    """One deployment: its inventory, its host folder (state, secrets, bundles), its state."""

    inv: inventory.Inventory
    dep: Path
    st: state.DeployState


@dataclass
class Checked:
    """What the check and plan steps found: the plan, the fit nodes' probes and surveys."""

    plan: Plan
    fit: dict[str, NodeReport]
    seen: dict[str, survey.Survey]


@dataclass
class Rollout:
    opts: DeployOptions
    d: Deployment
    bundle: Bundle
    pool: Pool
    checked: Checked
    res: RunResult
    ui: Reporter
    facts: dict[str, nodeops.NodeFacts] = field(default_factory=dict)
    fresh: set[str] = field(default_factory=set)  # nodes whose runtime this deploy installed

    def __post_init__(self) -> None:
        self.head = heads.for_inventory(self.d.inv, self.d.dep)
        self.prev_head = heads.for_state(self.d.st, self.d.dep)
        app = self.d.st.apps.get(self.bundle.name)
        self.app, self.history = app, list(app.history) if app else []
        self.reqs = wheels.pins(bundle_mod.node_packages(self.bundle))
        self.ray_token = state.secret(self.d.dep, "ray-token")
        self.api_token = state.secret(self.d.dep, "api-token")

    def run(self) -> None:
        ready = self.prepare()
        if not ready:
            return
        if self.opts.selftest:  # before any traffic: a node that answers wrongly gets none
            selftest.gate(selftest.SelfTest(self.bundle, self.opts.selftest_timeout_s),
                          self.pool, self.d.st, {n: selftest.stages_of(self.checked.plan, n)
                                                 for n in ready if n in self.checked.plan.nodes},
                          self.res, self.ui)
        if not self.enough("passed their self-test", "no service was started or changed"):
            return
        placement = self.place_head(ready)
        if not self.start(ready, placement):
            return
        if not self.enough("started their services", "the API was not changed"):
            return
        self.serve_and_verify(placement)
        self.record()

    def enough(self, done: str, so: str) -> bool:
        """At least --min-nodes planned nodes (complete replicas) are still fine; else the
        deploy stops here, saying so."""
        p, want = self.checked.plan, self.opts.min_nodes
        ok = serving_nodes(p, {n for n in p.nodes if self.res.node(n).ok})
        if len(ok) >= want:
            return True
        self.res.error = (f"only {len(ok)} node{'s' if len(ok) != 1 else ''} "
                          f"({', '.join(ok) or 'none'}) {done}, at least {want} wanted "
                          f"(--min-nodes); {so}")
        return False

    # --- 1. runtime and bundle on every node ---------------------------------------------
    def prepare(self) -> list[str]:
        """Provision and push in parallel; the nodes that got both (none: the run ends)."""
        p = self.checked.plan
        # the head node gets the bundle even where the plan puts no replica: the API reads it
        prepared = p.nodes + [n for n in self.head.nodes() if n not in p.nodes]
        for name, out in _each(self.pool, prepared, self._prepare_one).items():
            if not out.ok:
                self.res.node(name).fail(self.res.node(name).step or "provision",
                                         out.error or "", out.kind or "error")
                self.ui.step(name, f"[red]{self.res.node(name).step} failed")
        ready = [n for n in prepared if self.res.node(n).ok]
        lost = [n for n in self.head.nodes() if n not in ready]
        if not ready or lost:
            self.res.error = (f"the head node {lost[0]} could not be prepared"
                              if lost else "no node could be prepared")
            return []
        return ready

    def _prepare_one(self, c: Connection) -> str:
        name, sv = c.node.name, self.checked.seen[c.node.name]
        r, t_node = self.res.node(name), time.monotonic()
        r.step = "provision"
        self.ui.step(name, "provision")
        f = self.facts[name] = nodeops.facts_from(c, sv.root, sv.python)
        fp = self._runtime(c, f)
        r.step = "push"
        self.ui.step(name, "push")
        sent = [0]

        def progress(n: int) -> None:
            sent[0] += n
            self.ui.bytes(name, sent[0], self.bundle.total_bytes)

        pu = push.push_node(c, NodeLayout(f.root), self.bundle,
                            push.Retention(self.history, self.opts.keep_versions),
                            progress=progress, seen=sv)
        r.version, r.sent_bytes = pu.version, pu.sent_bytes
        r.seconds = time.monotonic() - t_node
        self._remember(c, f, fp)
        return pu.version

    def _runtime(self, c: Connection, f: nodeops.NodeFacts) -> str:
        """Install the node's runtime unless its fingerprint says it is up to date."""
        name = c.node.name
        rep, sv, r = self.checked.fit[name], self.checked.seen[name], self.res.node(name)
        cache, offline = wheelhouse_dir(), self.opts.offline
        whl = wheels.node_wheel(cache, rep.arch)  # carries the kernels built for this arch
        fp = wheels.fingerprint(self.reqs, wheels.file_digest(whl), rep.python, rep.arch,
                                offline)
        if sv.fingerprint == fp:
            r.runtime = "up to date"
            return fp
        house = [whl]
        if offline:
            house += sorted(wheels.wheelhouse(cache, self.reqs, rep.arch, rep.python)
                            .glob("*.whl"))
        provision.provision(c, NodeLayout(f.root), provision.RuntimeSpec(
            fp, f.python or c.node.python, self.reqs, house, offline), current=sv.fingerprint)
        r.runtime = "provisioned"
        self.fresh.add(name)
        return fp

    def _remember(self, c: Connection, f: nodeops.NodeFacts, fp: str) -> None:
        name, rep, st = c.node.name, self.checked.fit[c.node.name], self.d.st
        passed = st.nodes[name].selftest if name in st.nodes and name not in self.fresh else ""
        st.nodes[name] = state.NodeState(
            root=f.root, systemd=rep.systemd, fingerprint=fp, arch=rep.arch,
            cores=rep.cores or 1, ram_bytes=(rep.mem_total_mb or 0) * MB, address=f.node_ip,
            line=inventory.render([c.node]).strip(), selftest=passed)

    # --- 3. the head ---------------------------------------------------------------------
    def place_head(self, ready: list[str]) -> Placement:
        placement = self.head.place(self.d.st.head, self.pool, self.facts, self.opts.api_host,
                                    self.opts.api_port)
        if self.prev_head.where != self.head.where:  # moved: what ran for it there goes
            self.prev_head.retire(self.pool, self.d.st, self.prev_head.where in ready)
        self.d.st.head.where, self.d.st.head.ray_address = placement.where, \
            placement.ray_address
        self.res.head = {"where": placement.where, "ray_address": placement.ray_address}
        return placement

    # --- 4. every node's services ----------------------------------------------------------
    def start(self, ready: list[str], placement: Placement) -> bool:
        """The head node first (the others join its Ray head), then the rest in parallel;
        False when the head node's Ray did not start (nothing can serve)."""
        first = self.head.nodes()
        rest = [n for n in ready if n not in first and self.res.node(n).ok]
        for group in (first, rest):
            for name, out in _each(self.pool, group, lambda c: self._start_one(
                    c, placement)).items():
                if out.ok and out.value:
                    self.res.node(name).services = str(out.value)
                elif not out.ok:
                    self.res.node(name).fail("start", out.error or "", out.kind or "error")
        for hn in first:
            if self.res.node(hn).step == "start" and not self.res.node(hn).ok:
                self.res.error = f"the Ray head on {hn} did not start"
                return False
        return True

    def _start_one(self, c: Connection, placement: Placement) -> str:
        name, f = c.node.name, self.facts[c.node.name]
        if self.res.node(name).ok:  # a head node refused by its self-test still runs the head
            self.res.node(name).step = "start"
        self.ui.step(name, "start")
        ns, lay = self.d.st.nodes[name], NodeLayout(f.root)
        addr = placement.ray_address
        cfg = self.head.node_config(name, {
            "address": addr, "node_ip": f.node_ip, "num_cpus": ns.cores,
            "object_store_bytes": object_store_bytes(ns.ram_bytes),
            "resources": {names.node_resource(name): 1},
            "temp_dir": f"{f.root}/run/ray", "token_path": lay.ray_token, "root": f.root,
            # a new runtime or head restarts the node's services (the file changes)
            "generation": f"{ns.fingerprint}:{addr}"}, placement)
        token = self.ray_token.read_bytes()
        if name in self.fresh or not services.unchanged(lay, name, cfg, token,
                                                        self.checked.seen[name], ns.systemd):
            how = services.install(c, lay, name, cfg, ns.systemd, token)
        else:
            how = ("systemd" if ns.systemd else "supervisor") + " (running)"
        self.head.started(c, f.root, placement)
        return how

    # --- 5. the API, then every serving node answers ------------------------------------
    def serve_and_verify(self, placement: Placement) -> None:
        p, st, res = self.checked.plan, self.d.st, self.res
        nodes = serving_nodes(p, {n for n in p.nodes if res.node(n).ok})
        if not nodes:
            res.error = "no complete replica could be started"
            return
        api_nodes, only = self._api_nodes(nodes)
        api = ApiSpec(self.bundle.name, self.bundle.version, str(self.bundle.path),
                      ApiSettings(placement.ray_address, api_nodes, placement.api_host,
                                  placement.api_port, self.opts.thermal, self.opts.power_cap_w,
                                  self.opts.min_nodes),
                      self.api_token, self.ray_token, self.opts.verify_timeout_s)
        try:
            how = res.head["api"] = self.head.serve(self.pool, st, placement, api)
            st.head.api_port, st.head.api_host = placement.api_port, placement.api_host
            st.head.api_url = res.head["api_url"] = placement.api_url
            st.head.api_nodes = api_nodes
            # only the model changed: the running API rolls its workers, no restart
            loaded = apiload.after_start(how, self.head, st, self.pool, apiload.Target(
                api.model, self.head.api_bundle(st, api.model, api.version, api.bundle),
                api.version, only))
        except Exception as exc:
            res.error = f"the API on {placement.where} did not start: {exc}"
            for n in nodes:
                res.node(n).fail("verify", "no API", "no-api")
                res.node(n).hint = ("its services run; it serves once the API starts (it "
                                    "keeps trying; see the error above)")
            return
        if self.head.tunnel(st):
            res.head["tunnel"] = self.head.tunnel(st)
        if loaded is not None:
            res.head["load"] = loaded.to_dict()
            if how == "reload" or loaded.rolled:
                res.head["api"] = "reloaded"
            nodes = self._load_failed(nodes, loaded)
        self.verify(nodes, api)

    def _api_nodes(self, nodes: list[str]) -> tuple[list[str], tuple[str, ...]]:
        """The API's node list, and the nodes to roll when not all of them. A board that
        failed a step of this deploy (down, slow, its self-test) must not restart the
        running API, which would refuse every request for seconds: when the plan is the one
        the API already serves and only such boards are missing, the API keeps its list, the
        ready nodes roll to the new version and the others keep the version they have."""
        before, app, p = self.d.st.head.api_nodes, self.app, self.checked.plan
        k = max(1, p.stages)
        served = {tuple(before[i:i + k]) for i in range(0, len(before), k)}
        # the same layout: every group planned now is one the API serves (a board that is
        # off is in no plan: only the reachable ones are planned)
        same = (app is not None and app.plan.get("mode") == p.mode
                and app.plan.get("stages") == p.stages and len(before) % k == 0
                and all(tuple(g) in served for g in p.groups) and set(nodes) <= set(before))
        # a board whose new version failed its self-test must get none of its traffic, even
        # if something else restarts the API (it would load the new version on every node)
        wrong = any(self.res.node(n).step == "selftest" for n in set(before) - set(nodes))
        if not same or wrong:
            return nodes, ()
        return list(before), tuple(nodes) if set(nodes) < set(before) else ()

    def _load_failed(self, nodes: list[str], loaded: apiload.Loaded) -> list[str]:
        """Fail the nodes whose worker of the new version did not load (the API's error,
        the constructor's own); the old version keeps serving there. The others to verify."""
        for n, why in loaded.failed.items():
            if n in nodes:
                r = self.res.node(n)
                r.healthy = False
                r.fail("verify", f"the new version's worker did not load: {why}", "load-failed")
                r.hint = "the previous version still serves there; fix it, then redeploy"
                self.ui.step(n, "[red]load-failed")
        return [n for n in nodes if n not in loaded.failed]

    def verify(self, nodes: list[str], api: ApiSpec) -> None:
        """Until every node serves, or --min-nodes do and the others are failing rather than
        slow, or the timeout; each node left out is named with why (edgekit.deploy.
        stragglers) and joins by itself when it comes up."""
        for n in nodes:
            self.res.node(n).step = "verify"
            self.ui.step(n, "verify")
        lays = {n: NodeLayout(self.d.st.nodes[n].root) for n in nodes}
        watch = stragglers.Watch(self.pool, lays, self.opts.min_nodes)
        t0 = time.monotonic()
        with self.head.reach(self.d.st, self.pool) as url:
            h = verify.wait_served(url, api.api_token.read_text().strip(),
                                   {api.model: api.version}, nodes, api.timeout_s,
                                   watch.settled)
        # not ready: not serving, or workers of another version (the API did not restart?)
        alive = set(nodes) & h.alive_nodes if h.ready else set()
        for n in alive:
            self.res.node(n).healthy, self.res.node(n).step = True, "serving"
            self.ui.step(n, "[green]serving")
        self._explain([n for n in nodes if n not in alive], h, time.monotonic() - t0)
        if len(alive) < self.opts.min_nodes:
            self.res.error = (f"{len(alive)} of {len(nodes)} nodes serve, at least "
                              f"{self.opts.min_nodes} wanted (--min-nodes)"
                              + (f": {h.error}" if h.error and not alive else ""))
        if not alive:
            self.res.head["api_log"] = self.head.api_log(self.pool, self.d.st)

    def _explain(self, missing: list[str], h: verify.Health, waited_s: float) -> None:
        """Why each node in `missing` had no live worker after `waited_s`, and what will
        happen to it."""
        if not missing:
            return
        lays = {n: NodeLayout(self.d.st.nodes[n].root) for n in missing}
        for n, st in stragglers.look_all(self.pool, lays, missing).items():
            v = stragglers.verdict(n, st, h, waited_s, str(self.d.inv.path))
            r = self.res.node(n)
            r.healthy = False
            r.fail("verify", v.detail, v.kind)
            r.hint, r.joins_later = v.hint, v.retrying
            r.log_tail = st.log if isinstance(st, stragglers.RayState) else ""
            self.ui.step(n, f"[red]{v.kind}")

    # --- 6. the new state ----------------------------------------------------------------
    def record(self) -> None:
        b, app, keep = self.bundle, self.app, self.opts.keep_versions
        history = self.history
        if app is None or app.version != b.version:
            history = [v for v in history if v != b.version] + [b.version]
        self.d.st.apps = {b.name: state.AppState(
            bundle=str(b.path), version=b.version, plan=self.checked.plan.to_dict(),
            history=history[-keep:],
            active={n: self.res.node(n).version for n in self.checked.plan.nodes
                    if self.res.node(n).version},
            bundles={v: f for v, f in {**(app.bundles if app else {}), b.version: str(b.path)}
                     .items() if v in history[-keep:]})}


def _each(pool: Pool, group: list[str],
          fn: Callable[[Connection], T]) -> FleetResult[Outcome[T]]:
    """fn on the pool's connections to `group` only (in parallel, one outcome each)."""
    return run_each([pool[n].node for n in group], lambda node: fn(pool[node.name]))


def serving_nodes(p: Plan, ok: set[str]) -> list[str]:
    """The plan's node order without groups that lost a node (a pipeline needs all)."""
    return [n for g in p.groups if set(g) <= ok for n in g]
