"""The head of a deployment: on the host (default) or on the inventory's `role=head` node.

On a head node the Ray head is that node's one Ray process: its `ray-worker` service runs
edgekit.node.raynode with `head: true` (GCS + raylet, listening on the node's IP; it keeps the
node's CPUs and its `edgekit-node-<name>` resource, so the head serves models too). The API
server is one more service on it, `api` (`python -m edgekit.deploy.head api run/api.json`),
run the same way as the node's others: a systemd user unit (`edgekit-api.service`) where the
probe saw systemd, else a spec for edgekit's supervisor. It binds 127.0.0.1 on the node unless
`--api-host` says otherwise; the host reaches it through an SSH tunnel (`reach`). Both tokens
reach the node only over SFTP, 0600 in the 0700 secrets folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgekit import inventory
from edgekit.deploy import assets, ports, services, state
from edgekit.deploy.head import model_changed, restart_part
from edgekit.deploy.layout import UNIT_DIR, NodeLayout, unit_name
from edgekit.errors import NodeError
from edgekit.remote.ssh import Connection
from edgekit.remote.tunnel import Tunnel

MB = 1024 * 1024
#: a head node also runs Ray's GCS and the API process (numpy + ray + aiohttp): kept off models
HEAD_RESERVE_BYTES = 400 * MB
API = "api"
API_UNIT = unit_name(API)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ANY = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Head:
    """Where this deploy puts the Ray head and the API, and on which ports."""

    where: str  # "host" or the head node's name
    ip: str  # the head's address as the nodes reach it
    ray_port: int
    api_port: int
    api_host: str = "127.0.0.1"  # what the API binds (on the host or the head node)
    generation: str = ""  # digest of a head node's Ray config (set once it is started)

    @property
    def ray_address(self) -> str:
        return f"{self.ip}:{self.ray_port}"

    @property
    def api_url(self) -> str:
        """The API's URL: on the head's loopback, its LAN address, or the address given."""
        host = self.ip if self.api_host in ANY else self.api_host
        host = "127.0.0.1" if host in LOOPBACK else host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.api_port}"


def choose(prev: state.HeadState, where: str, ip: str, api_host: str, api_port: int | None,
           free: Callable[[int], list[int]]) -> Head:
    """Ports: the last deploy's when the head stays where it was (nothing restarts), else
    `free(n)` new ones (the old head may still hold its ports while it is being moved)."""
    same = prev.where == where and prev.ray_address and prev.api_port
    if same:
        ray_port, old_api = int(prev.ray_address.rsplit(":", 1)[1]), prev.api_port
    else:
        ray_port, old_api = free(2)
    return Head(where, ip, ray_port, api_port or old_api, api_host)


def head_capacity(usable: int, node: inventory.Node) -> int:
    """RAM left for models on `node` after the head's own processes (if it is the head)."""
    return usable - HEAD_RESERVE_BYTES if node.role == "head" and not node.ram_bytes else usable


def ray_config(node_cfg: dict, port: int) -> dict:
    """A node's raynode config turned into the head's: same CPUs, object store and custom
    resource (the head serves too), plus the GCS port; joins nothing."""
    cfg = {k: v for k, v in node_cfg.items() if k != "address"}
    return {**cfg, "head": True, "port": int(port)}


def digest(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ApiSettings:
    """How the API serves, the same on either head: its Ray, the serving nodes (in the
    plan's order) and how many of them must be in the Ray cluster before it serves (deploy's
    --min-nodes; the others are added as they join), where it listens, the thermal controller
    and its power cap."""

    ray_address: str
    nodes: list[str]
    host: str
    port: int
    thermal: bool = True
    power_cap_w: float | None = None
    min_nodes: int = 1


@dataclass(frozen=True)
class Tokens:
    """Where the API process finds its two 0600 token files (paths, never the secrets)."""

    api: str
    ray: str


@dataclass(frozen=True)
class ApiSpec:
    """What a head's API serves: one model (its version id, the host's bundle folder), with
    these settings; the host's token files; how long its start may take."""

    model: str
    version: str
    bundle: str
    settings: ApiSettings
    api_token: Path
    ray_token: Path
    timeout_s: float


def api_config(model: str, bundle: str, settings: ApiSettings, tokens: Tokens, *,
               version: str | None = None, home: str | None = None) -> dict:
    """What `python -m edgekit.deploy.head api` runs (edgekit.serve.server.ServeConfig)."""
    s = settings
    cfg = {"models": [f"{model}={bundle}"], "ray_address": s.ray_address, "nodes": s.nodes,
           # serve once this many of `nodes` are up; the rest join later (no restart)
           "min_nodes": max(1, min(s.min_nodes, len(s.nodes))),
           "host": s.host, "port": int(s.port), "api_token_path": tokens.api,
           "ray_token_path": tokens.ray,
           "node_bundles": True,  # workers load their node's verified `current` copy
           # the thermal controller starts each node's agent and steers routing
           "controllers": ["thermal"] if s.thermal else [], "power_cap_w": s.power_cap_w}
    if version is not None:  # a new version changes the file: the API restarts and reloads
        cfg["version"] = version
    if home is not None:  # EDGEKIT_HOME of the API process (thermal telemetry goes there)
        cfg["home"] = home
    return cfg


# -- on the head node --------------------------------------------------------------------
def free_ports(conn: Connection, python: str, n: int) -> list[int]:
    """`n` distinct ports free on the node right now (asked of the node, not the host), out
    of the ephemeral range (edgekit.deploy.ports)."""
    out = conn.run(f"{shlex.quote(python)} - {int(n)}", stdin=ports.remote_code(), check=True,
                   timeout_s=60)
    return [int(p) for p in out.stdout.split()]


def write_api_token(conn: Connection, layout: NodeLayout, token: bytes) -> None:
    q = shlex.quote
    conn.run(f"mkdir -p {q(layout.secrets)} && chmod 700 {q(layout.secrets)}", check=True)
    sftp = conn.sftp()
    try:
        services.put_file(sftp, api_token_path(layout), token, 0o600)
    finally:
        sftp.close()


def api_token_path(layout: NodeLayout) -> str:
    return f"{layout.secrets}/api-token"


def api_config_path(layout: NodeLayout) -> str:
    return f"{layout.run}/api.json"


def wait_ray(conn: Connection, layout: NodeLayout, ip: str, port: int,
             timeout_s: float = 120.0) -> None:
    """Until the Ray head's GCS port answers on the node (the other nodes join it next)."""
    code = ("import socket, sys, time\nend = time.monotonic() + float(sys.argv[3])\n"
            "while time.monotonic() < end:\n"
            "    try:\n        socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)"
            ".close()\n        sys.exit(0)\n"
            "    except OSError:\n        time.sleep(0.3)\nsys.exit(1)\n")
    q = shlex.quote
    res = conn.run(f"{q(layout.python)} - {q(ip)} {int(port)} {float(timeout_s)}", stdin=code,
                   timeout_s=timeout_s + 30)
    if not res.ok:
        raise NodeError(f"the Ray head did not open port {port} within {timeout_s:.0f} s",
                        where=f"node {conn.node.name}",
                        hint=services.log_tail(conn, layout, "ray-worker", 15))


def start_api(conn: Connection, layout: NodeLayout, node: str, systemd: bool, cfg: dict,
              timeout_s: float) -> str:
    """Write the API's config and service, (re)start it if the service or anything in the
    config but the model changed (head.restart_part) and wait until the new process serves
    (it writes sha256 of its config to run/api.serving when it listens). Returns what was
    done: "started", "restarted", "reload" (only the model changed: the caller asks the
    running API to load it, deploy/apiload.py) or "running"."""
    data = json.dumps(cfg, indent=1, sort_keys=True).encode()
    digest = hashlib.sha256(data).hexdigest()
    q = shlex.quote
    conn.run(f"mkdir -p {q(layout.run)} {q(layout.logs)} {q(layout.services)}", check=True)
    home = conn.run('printf %s "$HOME"', check=True).stdout if systemd else ""
    sftp = conn.sftp()
    try:
        before = _read_json(sftp, api_config_path(layout))
        wrote = services.put_file(sftp, api_config_path(layout), data)
        changed = wrote and (before is None or restart_part(before) != restart_part(cfg))
        if systemd:
            conn.run(f"mkdir -p {q(f'{home}/{UNIT_DIR}')}", check=True)
            unit = assets.render_unit(API, python=layout.python, root=layout.root, node=node,
                                      token_path=layout.ray_token)
            changed |= services.put_file(sftp, f"{home}/{UNIT_DIR}/{API_UNIT}", unit.encode())
        else:  # the spec changes (and the supervisor restarts the API) with what restarts it
            spec = {"argv": api_argv(layout), "config": digest_of(restart_part(cfg))}
            changed |= services.put_file(sftp, f"{layout.services}/{API}.json",
                                         json.dumps(spec).encode())
    finally:
        sftp.close()
    if systemd:
        verb = "restart" if changed else "start"
        cmd = (f"rm -f {q(layout.services)}/{API}.json; systemctl --user daemon-reload && "
               f"systemctl --user enable {API_UNIT} && systemctl --user {verb} {API_UNIT}")
    else:
        cmd = (f"{_stop_unit_command()}; "
               f"{q(layout.python)} -m edgekit.node.supervisor ensure {q(layout.root)}")
    conn.run(cmd, timeout_s=120, check=True)
    if changed:
        _wait_serving(conn, layout, digest, timeout_s)
        return "restarted"
    return "reload" if model_changed(before, cfg) else "running"


def digest_of(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def _read_json(sftp, path: str) -> dict | None:
    """The node's file as JSON (None: absent or unreadable)."""
    try:
        with sftp.open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def serve(conn: Connection, ns: state.NodeState, spec: ApiSpec, generation: str) -> str:
    """The API on the head node `conn`: its token, its config (the model from the node's own
    apps/<model>/current), its service; see start_api. `generation`: the Ray head's config
    digest; a restarted head restarts the API too (its driver would be left without a GCS)."""
    lay = NodeLayout(ns.root)
    write_api_token(conn, lay, spec.api_token.read_bytes())
    cfg = api_config(spec.model, lay.current(spec.model), spec.settings,
                     Tokens(api_token_path(lay), lay.ray_token), version=spec.version,
                     home=lay.root)
    cfg["ray_generation"] = generation
    return start_api(conn, lay, conn.node.name, ns.systemd, cfg, spec.timeout_s)


def reload(conn: Connection, ns: state.NodeState, model: str, version: str,
           timeout_s: float) -> str:
    """The head node's API config on `version` (rollback: `current` was switched): written
    for a later start; "reload" tells the caller to have the running API load it."""
    lay = NodeLayout(ns.root)
    sftp = conn.sftp()
    try:
        cfg = _read_json(sftp, api_config_path(lay))
    finally:
        sftp.close()
    if cfg is None:
        raise NodeError("the API's config is missing or unreadable",
                        where=f"node {conn.node.name}: {api_config_path(lay)}")
    cfg["models"], cfg["version"] = [f"{model}={lay.current(model)}"], version
    return start_api(conn, lay, conn.node.name, ns.systemd, cfg, timeout_s)


def retire(conn: Connection, ns: state.NodeState) -> None:
    """A former head node this deploy places nothing on: stop its Ray head and API."""
    with contextlib.suppress(Exception):  # best effort: the deploy goes on without it
        lay = NodeLayout(ns.root)
        remove_api(conn, lay)
        services.stop(conn, lay, ns.systemd)


def api_argv(layout: NodeLayout) -> list[str]:
    return [layout.python, "-m", "edgekit.deploy.head", "api", api_config_path(layout)]


def _wait_serving(conn: Connection, layout: NodeLayout, digest: str, timeout_s: float) -> None:
    marker = shlex.quote(f"{layout.run}/api.serving")
    res = conn.run(f'for i in $(seq {max(int(timeout_s), 1)}); do '
                   f'[ "$(cat {marker} 2>/dev/null)" = {digest} ] && exit 0; sleep 1; done; '
                   "exit 1", timeout_s=timeout_s + 30)
    if not res.ok:
        raise NodeError(f"the API did not start serving its new config within {timeout_s:.0f} s",
                        where=f"node {conn.node.name}",
                        hint="its log:\n" + services.log_tail(conn, layout, API, 20))


def _stop_unit_command() -> str:
    unit = f"$HOME/{UNIT_DIR}/{API_UNIT}"
    return (f"if [ -f {unit} ]; then systemctl --user disable --now {API_UNIT} 2>/dev/null; "
            f"rm -f {unit}; systemctl --user daemon-reload; fi; true")


def remove_api(conn: Connection, layout: NodeLayout) -> None:
    """The head moved away from this node: stop its API (unit or supervised), drop its files."""
    q = shlex.quote
    conn.run(f"rm -f {q(layout.services)}/{API}.json {q(api_config_path(layout))} "
             f"{q(layout.run)}/api.serving {q(api_token_path(layout))}; {_stop_unit_command()}",
             timeout_s=120)


def unit_active(conn: Connection) -> bool | None:
    """Is the API's user unit active (None: the node has no such unit)?"""
    res = conn.run(f"[ -f $HOME/{UNIT_DIR}/{API_UNIT} ] && systemctl --user is-active "
                   f"{API_UNIT}", timeout_s=30)
    return None if not res.stdout.strip() else res.stdout.strip() == "active"


# -- reaching the API from the host -------------------------------------------------------
def tunnelled(h: state.HeadState) -> bool:
    """A head node's API bound to its loopback: the host reaches it only through SSH."""
    return h.api_host in LOOPBACK


@contextlib.contextmanager
def reach(st: state.DeployState, conn: Connection | None = None,
          accept_new_host_keys: bool = False) -> Iterator[str]:
    """The head node's API URL as this host can use it while the block runs: its own URL,
    or a local one tunnelled over SSH to the node's loopback (`conn`: reuse that one)."""
    if not tunnelled(st.head):
        yield st.head.api_url
        return
    own = conn is None
    if conn is None:
        node = inventory.parse(st.nodes[st.head.where].line).nodes[0]
        conn = Connection(node, accept_new_host_keys=accept_new_host_keys)
    try:
        with Tunnel(conn, st.head.api_port) as t:
            yield t.url
    finally:
        if own:
            conn.close()
