"""Where a deployment's head runs, chosen once: `HostHead` (the Ray head and the API on this
host, under edgekit's supervisor: deploy/head.py) or `NodeHead` (the inventory's `role=head`
node: its one Ray process is the head, the API one more of its services: deploy/headnode.py).

Deploy's rollout, status, rollback, logs and undeploy ask the `Head` what to do; none of them
branches on where it is. `for_inventory` picks the head a deploy puts in place, `for_state`
the one a deployment has now.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from edgekit import inventory
from edgekit.deploy import apiload, head, headnode, ports, services, state
from edgekit.deploy.headnode import ApiSpec, Tokens
from edgekit.deploy.headnode import Head as Placement
from edgekit.deploy.layout import NodeLayout
from edgekit.deploy.nodeops import NodeFacts
from edgekit.remote.ssh import Connection, Pool

HOST = "host"


class Head(Protocol):
    where: str  # HOST or the head node's name
    node: str | None  # the head node's name; None on the host
    dep: Path  # the deployment's host folder (state, secrets, a host head's files)

    def nodes(self) -> list[str]:
        """The nodes the head itself runs on (none on the host): they get the bundle and
        start first, and the deploy cannot go on without them."""

    def place(self, prev: state.HeadState, pool: Pool, facts: dict[str, NodeFacts],
              api_host: str, api_port: int | None) -> Placement:
        """Ports (kept from `prev` when the head stays), and the Ray head where it runs on
        its own (the host); a head node's Ray starts with its node's services."""

    def node_config(self, name: str, cfg: dict, placement: Placement) -> dict:
        """Node `name`'s raynode config under this head."""

    def started(self, conn: Connection, root: str, placement: Placement) -> None:
        """After the head node's services started: wait until its Ray head answers."""

    def serve(self, pool: Pool, st: state.DeployState, placement: Placement,
              api: ApiSpec) -> str:
        """(Re)start the API where its own settings changed; returns what was done (started,
        restarted, running, or reload: only the model changed, deploy/apiload.py)."""

    def reload(self, pool: Pool, st: state.DeployState, model: str,
               version: str, folder: str) -> apiload.Loaded | None:
        """Roll the running API to `version` of `model` (a rollback switched it; its config
        is rewritten for a later start); None when the API had to be (re)started."""

    def api_bundle(self, st: state.DeployState, model: str, version: str,
                   host_folder: str) -> str:
        """Where the API's machine holds `version` of `model` (what its load reads)."""

    def retire(self, pool: Pool, st: state.DeployState, still_used: bool) -> None:
        """The head moved elsewhere: stop what ran here for it."""

    def reach(self, st: state.DeployState, pool: Pool | None,
              accept_new_host_keys: bool = False) -> contextlib.AbstractContextManager[str]:
        """The API's URL as this host can use it while the block runs."""

    def api_log(self, pool: Pool, st: state.DeployState, lines: int = 20) -> str:
        """The last lines of the API's log."""

    def tunnel(self, st: state.DeployState) -> str:
        """How the host reaches the API when not directly ("": directly, at its URL)."""

    def log_target(self, service: str) -> tuple[str | None, str]:
        """(node, service) holding the log of a head service (node None: on the host)."""


class HostHead:
    """The Ray head and the API on this host, run by edgekit's supervisor (deploy/head.py)
    under <deployment dir>/head."""

    where, node = HOST, None

    def __init__(self, dep: Path):
        self.dep = dep

    def nodes(self) -> list[str]:
        return []

    def place(self, prev: state.HeadState, pool: Pool, facts: dict[str, NodeFacts],
              api_host: str, api_port: int | None) -> Placement:
        host_ip = next(iter(facts.values())).host_ip  # the host as the nodes reach it
        p = headnode.choose(prev, HOST, host_ip, api_host, api_port,
                            ports.pick_free)
        head.start_ray(self.dep / "head", host_ip, p.ray_port,
                       state.secret(self.dep, "ray-token"))
        return p

    def node_config(self, name: str, cfg: dict, placement: Placement) -> dict:
        return cfg

    def started(self, conn: Connection, root: str, placement: Placement) -> None:
        return None

    def serve(self, pool: Pool, st: state.DeployState, placement: Placement,
              api: ApiSpec) -> str:
        return head.start_api(self.dep / "head", headnode.api_config(
            api.model, api.bundle, api.settings, Tokens(str(api.api_token), str(api.ray_token))))

    def reload(self, pool: Pool, st: state.DeployState, model: str,
               version: str, folder: str) -> apiload.Loaded | None:
        config_path = self.dep / "head" / "run" / "api.json"
        if not config_path.exists():
            return None
        cfg = json.loads(config_path.read_text())
        cfg["models"] = [f"{model}={folder}"]
        cfg["version"] = version  # the model part: the running API loads it, no restart
        how = head.start_api(self.dep / "head", cfg)
        return apiload.after_start(how, self, st, pool, apiload.Target(model, folder, version))

    def api_bundle(self, st: state.DeployState, model: str, version: str,
                   host_folder: str) -> str:
        return host_folder

    def retire(self, pool: Pool, st: state.DeployState, still_used: bool) -> None:
        head.stop(self.dep / "head")

    def reach(self, st: state.DeployState, pool: Pool | None,
              accept_new_host_keys: bool = False) -> contextlib.AbstractContextManager[str]:
        return contextlib.nullcontext(st.head.api_url)

    def api_log(self, pool: Pool, st: state.DeployState, lines: int = 20) -> str:
        return head.tail(self.dep / "head", headnode.API, lines)

    def log_target(self, service: str) -> tuple[str | None, str]:
        return None, "ray-head" if service == "ray-worker" else service

    def tunnel(self, st: state.DeployState) -> str:
        return ""


class NodeHead:
    """The inventory's `role=head` node: its Ray process is the head (it still serves models)
    and the API is one more of its services (deploy/headnode.py)."""

    def __init__(self, name: str, dep: Path):
        self.where = self.node = name
        self.dep = dep

    def nodes(self) -> list[str]:
        return [self.node]
        self.generation = ""  # digest of its Ray head's config, once configured

    def place(self, prev: state.HeadState, pool: Pool, facts: dict[str, NodeFacts],
              api_host: str, api_port: int | None) -> Placement:
        conn, f = pool[self.node], facts[self.node]
        return headnode.choose(prev, self.node, f.node_ip, api_host, api_port,
                               lambda n: headnode.free_ports(conn, f.python, n))

    def node_config(self, name: str, cfg: dict, placement: Placement) -> dict:
        if name == self.node:  # its one Ray process is the head
            cfg = headnode.ray_config(cfg, placement.ray_port)
            self.generation = headnode.digest(cfg)
            return cfg
        # a restarted head node is a new Ray cluster: the others rejoin it at once
        return {**cfg, "generation": f"{cfg['generation']}:{self.generation}"}

    def started(self, conn: Connection, root: str, placement: Placement) -> None:
        if conn.node.name == self.node:
            headnode.wait_ray(conn, NodeLayout(root), placement.ip, placement.ray_port)

    def serve(self, pool: Pool, st: state.DeployState, placement: Placement,
              api: ApiSpec) -> str:
        return headnode.serve(pool[self.node], st.nodes[self.node], api, self.generation)

    def reload(self, pool: Pool, st: state.DeployState, model: str,
               version: str, folder: str) -> apiload.Loaded | None:
        how = headnode.reload(pool[self.node], st.nodes[self.node], model, version, 180.0)
        return apiload.after_start(how, self, st, pool, apiload.Target(
            model, self.api_bundle(st, model, version, folder), version))

    def api_bundle(self, st: state.DeployState, model: str, version: str,
                   host_folder: str) -> str:
        return NodeLayout(st.nodes[self.node].root).version(model, version)

    def retire(self, pool: Pool, st: state.DeployState, still_used: bool) -> None:
        if self.node not in pool.connections or self.node not in st.nodes:
            return
        conn, lay = pool[self.node], NodeLayout(st.nodes[self.node].root)
        with contextlib.suppress(Exception):  # best effort: the deploy goes on without it
            headnode.remove_api(conn, lay)
            if not still_used:  # nothing placed on it any more: its Ray head goes too
                services.stop(conn, lay, st.nodes[self.node].systemd)

    @contextlib.contextmanager
    def reach(self, st: state.DeployState, pool: Pool | None,
              accept_new_host_keys: bool = False) -> Iterator[str]:
        conn = pool.connections.get(self.node) if pool is not None else None
        with headnode.reach(st, conn, accept_new_host_keys) as url:
            yield url

    def api_log(self, pool: Pool, st: state.DeployState, lines: int = 20) -> str:
        return services.log_tail(pool[self.node], NodeLayout(st.nodes[self.node].root),
                                 headnode.API, lines)

    def log_target(self, service: str) -> tuple[str | None, str]:
        return self.node, "ray-worker" if service == "ray-head" else service

    def tunnel(self, st: state.DeployState) -> str:
        return (f"SSH to {self.node}, then 127.0.0.1:{st.head.api_port} there"
                if headnode.tunnelled(st.head) else "")


def for_inventory(inv: inventory.Inventory, dep: Path) -> HostHead | NodeHead:
    """The head a deploy with this inventory puts in place."""
    return NodeHead(inv.head.name, dep) if inv.head is not None else HostHead(dep)


def for_state(st: state.DeployState, dep: Path) -> HostHead | NodeHead:
    """The head a deployment has now (or had, for a deploy that moves it)."""
    return HostHead(dep) if st.head.where == HOST else NodeHead(st.head.where, dep)
