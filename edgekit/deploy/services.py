"""Run services on a node: systemd user units where systemd runs, otherwise edgekit's own
supervisor (edgekit.node.supervisor). Both run the same commands from the node runtime, so the
virtual cluster (no systemd) exercises the same Ray launcher and agent a Pi runs.

Secrets reach a node only over SFTP into files created 0600 in a 0700 folder.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass

from edgekit.deploy import assets
from edgekit.deploy.layout import NodeLayout, unit_name
from edgekit.remote.ssh import Connection

UNIT_DIR = ".config/systemd/user"  # under the node user's home


@dataclass
class ServiceSpec:
    name: str  # "ray-worker", "agent"
    argv: list[str]

    def to_json(self) -> str:
        return json.dumps({"argv": self.argv}, indent=1)


def node_specs(layout: NodeLayout, node: str) -> list[ServiceSpec]:
    py = layout.python
    return [
        ServiceSpec("ray-worker", [py, "-m", "edgekit.node.raynode", f"{layout.run}/ray.json"]),
        ServiceSpec("agent", [py, "-m", "edgekit.node.agent", layout.root, node]),
    ]


def put_file(sftp, path: str, data: bytes, mode: int = 0o644) -> bool:
    """Write a file atomically; returns False (and writes nothing) when it is unchanged."""
    try:
        with sftp.open(path, "rb") as fh:
            if fh.read() == data:
                sftp.chmod(path, mode)
                return False
    except OSError:
        pass
    tmp = f"{path}.tmp"
    with sftp.open(tmp, "wb") as fh:
        fh.chmod(mode)  # before any byte is written
        fh.write(data)
    sftp.posix_rename(tmp, path)
    return True


def write_secret(conn: Connection, layout: NodeLayout, token: bytes) -> None:
    conn.run(f"mkdir -p {shlex.quote(layout.secrets)} && chmod 700 {shlex.quote(layout.secrets)}",
             check=True)
    sftp = conn.sftp()
    try:
        put_file(sftp, layout.ray_token, token, 0o600)
    finally:
        sftp.close()


def supervisor_files(layout: NodeLayout, node: str, ray_config: dict) -> dict[str, bytes]:
    """What the supervisor path writes, by path under the root (ray.json and one spec per
    service; a spec carries the config's generation, so a new runtime or head restarts it)."""
    files = {"run/ray.json": json.dumps(ray_config, indent=1).encode()}
    for spec in node_specs(layout, node):
        text = json.loads(spec.to_json())
        text["config_changed"] = ray_config.get("generation", 0)
        files[f"services/{spec.name}.json"] = json.dumps(text).encode()
    return files


def unchanged(layout: NodeLayout, node: str, ray_config: dict, token: bytes,
              seen_hashes: dict[str, str], supervisor_running: bool) -> bool:
    """True when the node runs its supervisor from exactly these files (nothing to do)."""
    want = {**supervisor_files(layout, node, ray_config), "secrets/ray-token": token}
    return supervisor_running and all(
        seen_hashes.get(path) == hashlib.sha256(data).hexdigest() for path, data in want.items())


def install(conn: Connection, layout: NodeLayout, node: str, ray_config: dict,
            systemd: bool, token: bytes | None = None) -> str:
    """Write the Ray token, ray.json and the service definitions, then (re)start what changed.

    Returns "systemd" or "supervisor" (how the services run)."""
    q = shlex.quote
    if token is not None:
        write_secret(conn, layout, token)
    conn.run(f"mkdir -p {q(layout.run)} {q(layout.logs)} {q(layout.services)}", check=True)
    sftp = conn.sftp()
    try:
        files = supervisor_files(layout, node, ray_config)
        changed = put_file(sftp, f"{layout.run}/ray.json", files.pop("run/ray.json"))
        if systemd:
            return _install_systemd(conn, sftp, layout, node, changed)
        for path, data in files.items():
            put_file(sftp, f"{layout.root}/{path}", data)
    finally:
        sftp.close()
    conn.run(f"{q(layout.python)} -m edgekit.node.supervisor ensure {q(layout.root)}",
             timeout_s=60, check=True)
    return "supervisor"


def _install_systemd(conn: Connection, sftp, layout: NodeLayout, node: str,
                     config_changed: bool) -> str:
    home = conn.run("printf %s \"$HOME\"", check=True).stdout
    unit_dir = f"{home}/{UNIT_DIR}"
    conn.run(f"mkdir -p {shlex.quote(unit_dir)}", check=True)
    changed = config_changed
    for service in ("ray-worker", "agent"):
        text = assets.render_unit(service, python=layout.python, root=layout.root, node=node)
        changed |= put_file(sftp, f"{unit_dir}/{unit_name(service)}", text.encode())
    conn.run(systemd_start_command(changed), timeout_s=120, check=True)
    return "systemd"


def systemd_start_command(restart: bool) -> str:
    """Enable lingering (services outlive the SSH session and start at boot), then start."""
    units = " ".join(unit_name(s) for s in ("ray-worker", "agent"))
    verb = "restart" if restart else "start"
    return ("(loginctl enable-linger \"$(id -un)\" 2>/dev/null || true) && "
            "systemctl --user daemon-reload && "
            f"systemctl --user enable {units} && systemctl --user {verb} {units}")


def systemd_stop_command() -> str:
    units = " ".join(unit_name(s) for s in ("ray-worker", "agent"))
    return (f"systemctl --user disable --now {units} 2>/dev/null; "
            f"rm -f $HOME/{UNIT_DIR}/edgekit-*.service; systemctl --user daemon-reload; true")


def stop(conn: Connection, layout: NodeLayout, systemd: bool) -> None:
    """Stop every edgekit service on the node (and the supervisor itself)."""
    q = shlex.quote
    if systemd:
        conn.run(systemd_stop_command(), timeout_s=120)
    conn.run(f"rm -f {q(layout.services)}/*.json; "
             f"if [ -x {q(layout.python)} ]; then "
             f"{q(layout.python)} -m edgekit.node.supervisor stop {q(layout.root)}; fi",
             timeout_s=120)


def status(conn: Connection, layout: NodeLayout) -> dict:
    q = shlex.quote
    res = conn.run(f"cat {q(layout.run)}/supervisor.json 2>/dev/null; echo; "
                   f"cat {q(layout.run)}/agent.json 2>/dev/null", timeout_s=30)
    parts = res.stdout.split("\n", 1)
    out: dict = {}
    for key, text in zip(("supervisor", "agent"), parts, strict=False):
        try:
            out[key] = json.loads(text) if text.strip() else None
        except ValueError:
            out[key] = None
    return out


def log_tail(conn: Connection, layout: NodeLayout, service: str, lines: int = 30) -> str:
    res = conn.run(f"tail -n {int(lines)} {shlex.quote(layout.log(service))} 2>/dev/null",
                   timeout_s=30)
    return res.stdout


