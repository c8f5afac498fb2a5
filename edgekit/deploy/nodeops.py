"""What deploy, rollback and undeploy do on ONE node, over its SSH connection."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from edgekit.deploy import services, versions
from edgekit.deploy.layout import NodeLayout
from edgekit.names import shell_path
from edgekit.node.raynode import link_dir, temp_link
from edgekit.remote.ssh import Connection


@dataclass
class NodeFacts:
    root: str
    python: str
    node_ip: str
    host_ip: str


def facts(conn: Connection, root: str, python: str) -> NodeFacts:
    """Expand the deploy root and find python on the node; the IPs of both link ends."""
    script = (f'root={shell_path(root)}; '
              f'printf "%s\\n" "$root"; command -v {shlex.quote(python)} || echo')
    out = conn.run(script, check=True).stdout.splitlines()
    sock = conn.client().get_transport().sock  # type: ignore[union-attr]
    host_ip, node_ip = sock.getsockname()[0], sock.getpeername()[0]
    return NodeFacts(out[0].rstrip("/"), out[1] if len(out) > 1 else "", node_ip, host_ip)


def facts_from(conn: Connection, root: str, python: str) -> NodeFacts:
    """NodeFacts from a survey's root and python (no command): the IPs come from the socket."""
    sock = conn.client().get_transport().sock  # type: ignore[union-attr]
    return NodeFacts(root, python, sock.getpeername()[0], sock.getsockname()[0])


def remove_app(conn: Connection, layout: NodeLayout, model: str) -> None:
    conn.run(f"rm -rf {shlex.quote(layout.app(model))} && "
             f"find {shlex.quote(layout.blobs)} -maxdepth 1 -type f -links 1 -delete 2>/dev/null;"
             " true", timeout_s=120)


def teardown(conn: Connection, layout: NodeLayout, systemd: bool, purge: bool) -> list[str]:
    """Stop services, remove everything under the root but the runtime (all with purge).

    Returns edgekit processes still running afterwards (should be none)."""
    services.stop(conn, layout, systemd)
    q = shlex.quote
    keep = "" if purge else "-not -name 'runtime' -not -name 'runtime-*'"
    link = temp_link(f"{layout.run}/ray", "$(id -u)")  # raynode's short name for run/ray
    # (and the names earlier versions used, straight in /tmp: only ours can be removed)
    digest = link.rsplit("-", 1)[1]
    old = f"/tmp/edgekit-ray-$(id -u)-{digest} /tmp/edgekit-ray-$(id -u)"
    conn.run(f"if [ -d {q(layout.root)} ]; then find {q(layout.root)} -mindepth 1 -maxdepth 1 "
             f"{keep} -exec rm -rf {{}} +; fi; rm -f {link} {old}; "
             f"rmdir {link_dir('$(id -u)')} 2>/dev/null; true", timeout_s=300)
    if purge:
        conn.run(f"rm -rf {q(layout.root)}", timeout_s=300)
    return leftover_processes(conn, layout)


def leftover_processes(conn: Connection, layout: NodeLayout) -> list[str]:
    """This user's processes that belong to edgekit (its runtime, Ray, the supervisor)."""
    res = conn.run("ps -u \"$(id -u)\" -o pid=,args=", timeout_s=30)
    marks = (layout.root, "edgekit.node", "raylet", "gcs_server", "ray::", "/tmp/edgekit-")
    return [line.strip() for line in res.stdout.splitlines()
            if any(m in line for m in marks) and " ps -u " not in line]


def rollback(conn: Connection, layout: NodeLayout, model: str, to: str | None) -> tuple[str, str]:
    """Switch `current` to `to` (default: the version before the active one)."""
    now = versions.active(conn, layout, model)
    listed = versions.listed(conn, layout, model)
    if to is None:
        older = [v for v in listed if v != now]
        if not older:
            raise ValueError(f"no previous version of {model} kept on this node")
        to = older[-1]
    elif to not in listed:
        raise ValueError(f"version {to} of {model} is not on this node (has: {listed})")
    versions.switch(conn, layout, model, to)
    return now or "", to
