"""Run services on a node: systemd user units where the probe found a systemd user manager
(Restart=always, enabled for default.target, so they come back after a reboot), otherwise
edgekit's own supervisor (edgekit.node.supervisor). Both run the same commands from the node
runtime; the virtual cluster has nodes of both kinds (docs/VIRTUAL-CLUSTER.md).

Secrets reach a node only over SFTP into files created 0600 in a 0700 folder.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass

from edgekit.deploy import assets
from edgekit.deploy.layout import SERVICES, UNIT_DIR, NodeLayout, unit_name
from edgekit.deploy.survey import PENDING_FILE, Survey
from edgekit.node.raynode import STARTS_FILE
from edgekit.remote.ssh import Connection

UNITS = " ".join(unit_name(s) for s in SERVICES)


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


def unit_files(layout: NodeLayout, node: str, home: str) -> dict[str, bytes]:
    """The rendered user units, by absolute path on the node."""
    return {f"{home}/{UNIT_DIR}/{unit_name(s)}": assets.render_unit(
        s, python=layout.python, root=layout.root, node=node,
        token_path=layout.ray_token).encode() for s in SERVICES}


def unchanged(layout: NodeLayout, node: str, ray_config: dict, token: bytes, seen: Survey,
              systemd: bool) -> bool:
    """True when the node's services run from exactly these files (nothing to do): under
    its supervisor, or as active and enabled user units."""
    if systemd:
        want = {"run/ray.json": supervisor_files(layout, node, ray_config)["run/ray.json"],
                **unit_files(layout, node, seen.home)}
        running = bool(seen.home) and seen.units == ["active"] * 2 + ["enabled"] * 2
    else:
        want = supervisor_files(layout, node, ray_config)
        running = seen.supervisor
    want["secrets/ray-token"] = token
    return running and PENDING_FILE not in seen.hashes and all(
        seen.hashes.get(path) == hashlib.sha256(data).hexdigest() for path, data in want.items())


def install(conn: Connection, layout: NodeLayout, node: str, ray_config: dict,
            systemd: bool, token: bytes | None = None) -> str:
    """Write the Ray token, ray.json and the service definitions, then (re)start what changed.

    Returns "systemd" or "supervisor" (how the services run)."""
    q = shlex.quote
    pending = q(f"{layout.root}/{PENDING_FILE}")
    # a deploy (re)starting Ray is a fresh try: no backoff left from earlier failed starts;
    # the marker stays until the services run from the new files (a deploy killed before
    # that leaves it, and the next one restarts them instead of finding the files in place)
    left = conn.run(f"test -e {pending} && echo left; "
                    f"mkdir -p {q(layout.run)} {q(layout.logs)} {q(layout.services)} && "
                    f"rm -f {q(layout.run)}/{STARTS_FILE} && touch {pending}", check=True)
    if token is not None:
        write_secret(conn, layout, token)
    how = _write_and_start(conn, layout, node, ray_config, systemd, "left" in left.stdout)
    conn.run(f"rm -f {pending}", check=True)
    return how


def _write_and_start(conn: Connection, layout: NodeLayout, node: str, ray_config: dict,
                     systemd: bool, restart: bool) -> str:
    """`restart`: a killed deploy's marker was left, so the files may already be the new
    ones while the services still run from the old: restart whether or not they change."""
    q = shlex.quote
    if restart and not systemd:  # a fresh supervisor starts every service from the files
        conn.run(stop_supervisor_command(layout), timeout_s=120)
    sftp = conn.sftp()
    try:
        files = supervisor_files(layout, node, ray_config)
        changed = put_file(sftp, f"{layout.run}/ray.json", files.pop("run/ray.json"))
        if systemd:
            return _install_systemd(conn, sftp, layout, node, changed or restart)
        for path, data in files.items():
            put_file(sftp, f"{layout.root}/{path}", data)
    finally:
        sftp.close()
    # units left from a deploy when the node had systemd would run Ray a second time
    conn.run(f"{stop_units_command()}; "
             f"{q(layout.python)} -m edgekit.node.supervisor ensure {q(layout.root)}",
             timeout_s=SUPERVISOR_ENSURE_TIMEOUT_S, check=True)
    return "supervisor"


#: `supervisor ensure` may wait for a starting daemon (START_TIMEOUT_S) or for a running one
#: to apply changed services (APPLY_TIMEOUT_S); the SSH command outlives both
SUPERVISOR_ENSURE_TIMEOUT_S = 300.0


def _install_systemd(conn: Connection, sftp, layout: NodeLayout, node: str,
                     config_changed: bool) -> str:
    home = conn.run("printf %s \"$HOME\"", check=True).stdout
    conn.run(f"mkdir -p {shlex.quote(f'{home}/{UNIT_DIR}')}", check=True)
    changed = config_changed
    for path, data in unit_files(layout, node, home).items():
        changed |= put_file(sftp, path, data)
    conn.run(f"{stop_supervisor_command(layout)}; {systemd_start_command(changed)}",
             timeout_s=120, check=True)
    return "systemd"


def systemd_start_command(restart: bool) -> str:
    """Enable lingering (services outlive the SSH session and start at boot), then start."""
    verb = "restart" if restart else "start"
    return ("(loginctl enable-linger \"$(id -un)\" 2>/dev/null || true) && "
            "systemctl --user daemon-reload && "
            f"systemctl --user enable {UNITS} && systemctl --user {verb} {UNITS}")


def stop_units_command() -> str:
    """Stop, disable and remove edgekit's user units if there are any (always succeeds)."""
    api = unit_name("api")  # only on a role=head node (edgekit/deploy/headnode.py)
    return (f"if ls $HOME/{UNIT_DIR}/edgekit-*.service >/dev/null 2>&1; then "
            f"if [ -f $HOME/{UNIT_DIR}/{api} ]; then "
            f"systemctl --user disable --now {api} 2>/dev/null; fi; "
            f"systemctl --user disable --now {UNITS} 2>/dev/null; "
            f"rm -f $HOME/{UNIT_DIR}/edgekit-*.service; systemctl --user daemon-reload; "
            f"systemctl --user reset-failed {UNITS} 2>/dev/null; fi; true")


def stop_supervisor_command(layout: NodeLayout) -> str:
    """Stop edgekit's supervisor and its services if it runs (always succeeds)."""
    q = shlex.quote
    return (f"rm -f {q(layout.services)}/*.json; "
            f"if [ -f {q(layout.run)}/supervisor.pid ] && [ -x {q(layout.python)} ]; then "
            f"{q(layout.python)} -m edgekit.node.supervisor stop {q(layout.root)}; fi; true")


def stop(conn: Connection, layout: NodeLayout, systemd: bool = False) -> None:
    """Stop every edgekit service on the node, whichever way it runs (units, supervisor).
    `systemd` (what the last deploy used) is not needed: both are looked for."""
    conn.run(f"{stop_units_command()}; {stop_supervisor_command(layout)}", timeout_s=180)


SEP = "@@edgekit-status@@"


def status(conn: Connection, layout: NodeLayout) -> dict:
    """The supervisor's and the agent's state files, and the user units' states if any:
    {"supervisor": {...} | None, "agent": {...} | None, "units": {"ray-worker": "active"} |
    None}."""
    q = shlex.quote
    res = conn.run(f"cat {q(layout.run)}/supervisor.json 2>/dev/null; echo {SEP}; "
                   f"cat {q(layout.run)}/agent.json 2>/dev/null; echo {SEP}; "
                   f"if [ -f $HOME/{UNIT_DIR}/{unit_name(SERVICES[0])} ]; then "
                   f"systemctl --user is-active {UNITS}; fi", timeout_s=30)
    parts = res.stdout.split(SEP)
    out: dict = {}
    for key, text in zip(("supervisor", "agent"), parts, strict=False):
        try:
            out[key] = json.loads(text) if text.strip() else None
        except ValueError:
            out[key] = None
    states = parts[2].split() if len(parts) > 2 else []
    out["units"] = dict(zip(SERVICES, states, strict=False)) if states else None
    return out


def log_tail(conn: Connection, layout: NodeLayout, service: str, lines: int = 30) -> str:
    """The last lines of a service's log, across its latest rotation (edgekit.node.logpipe)."""
    log = shlex.quote(layout.log(service))
    res = conn.run(f"cat {log}.1 {log} 2>/dev/null | tail -n {int(lines)}", timeout_s=30)
    return res.stdout


