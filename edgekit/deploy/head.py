"""The head on the host: Ray's head node and the serving API, both run by edgekit's
supervisor under <deployment dir>/head (same code path the nodes use without systemd).
A `role=head` node runs the same API entry point as one of its services (deploy/headnode.py).

    python -m edgekit.deploy.head api CONFIG.json   # what the supervisor / the unit runs

The API server is edgekit.serve.server.run; Ray token and HTTP bearer token are read from
0600 files whose paths are in the environment/config, never from arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from edgekit.errors import ClusterError, InputError
from edgekit.node import supervisor
from edgekit.node.raynode import PYTHON_MATCH_ENV, temp_link

RAY_HEAD_OBJECT_STORE_BYTES = 100 * 1024 * 1024  # the head runs no models
#: the part of the API's config a rolling update changes (deploy/apiload.py asks the running
#: API to load it): written to the file for a later start, but no reason to restart
MODEL_KEYS = ("models", "version")
#: read only when the API starts (how many nodes it waits for before serving): a deploy with
#: another --min-nodes must not restart a serving API for it; a later start reads the file
START_KEYS = ("min_nodes",)


def restart_part(config: dict) -> dict:
    """What restarts the API when it changes: its config without the model (MODEL_KEYS)
    and what only its start reads (START_KEYS)."""
    return {k: v for k, v in config.items() if k not in MODEL_KEYS + START_KEYS}


def model_changed(before: dict | None, config: dict) -> bool:
    return before is not None and any(before.get(k) != config.get(k) for k in MODEL_KEYS)


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _service(root: Path, name: str, argv: list[str], generation: str,
             env: dict[str, str] | None = None) -> bool:
    """Write the service's spec if it differs (the supervisor then restarts it)."""
    spec = {"argv": argv, "generation": generation, "env": env or {}}
    path = root / "services" / f"{name}.json"
    if not path.exists() or json.loads(path.read_text()) != spec:
        _write(path, spec)
        return True
    return False


def _wait_restarted(root: Path, name: str, after: float, timeout_s: float = 60.0) -> None:
    """Until the supervisor reports `name` started after `after` (time.time()): the process
    answering from then on runs the new spec, not the one it replaces."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        svc = supervisor.status(root).get("services", {}).get(name) or {}
        if svc.get("running") and (svc.get("since") or 0) >= after:
            return
        time.sleep(0.2)
    raise ClusterError(f"the head's {name} service was not restarted with its new config",
                       where=str(root / "logs" / f"{name}.log"), hint=tail(root, name))


def start_ray(root: Path, ip: str, port: int, token_path: Path) -> str:
    """Start (or keep) the Ray head; returns its address once its port answers."""
    cfg = {"head": True, "port": port, "node_ip": ip, "num_cpus": 0,
           "object_store_bytes": RAY_HEAD_OBJECT_STORE_BYTES,
           "temp_dir": str(root / "run" / "ray"), "token_path": str(token_path)}
    _write(root / "run" / "ray.json", cfg)
    _service(root, "ray-head", [sys.executable, "-m", "edgekit.node.raynode",
                                str(root / "run" / "ray.json")], json.dumps(cfg))
    supervisor.ensure(root)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((ip, port)) == 0:
                return f"{ip}:{port}"
        time.sleep(0.3)
    raise ClusterError(f"Ray head did not open port {port}", where=str(root / "logs"),
                       hint=tail(root, "ray-head"))


def start_api(root: Path, config: dict) -> str:
    """Write the API's config; (re)start it when anything but the model changed (the
    supervisor restarts it when its spec changes). Returns "started"/"restarted" (a new
    process serves `config`), "reload" (only the model changed: the caller asks the running
    API to load it, deploy/apiload.py) or "running" (nothing changed)."""
    t0 = time.time()
    path = root / "run" / "api.json"
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        before = None
    _write(path, config)
    changed = _service(root, "api", [sys.executable, "-m", "edgekit.deploy.head", "api",
                                     str(path)], json.dumps(restart_part(config), sort_keys=True),
                       # Ray reads these when it is imported: set before the process starts
                       {"RAY_AUTH_MODE": "token",
                        "RAY_AUTH_TOKEN_PATH": config["ray_token_path"], **PYTHON_MATCH_ENV})
    supervisor.ensure(root)
    if changed:  # else verify could be answered by the API still serving the old config
        _wait_restarted(root, "api", t0)
        return "restarted" if before is not None else "started"
    return "reload" if model_changed(before, config) else "running"


def stop(root: Path) -> None:
    if supervisor.running_pid(root):
        for p in (root / "services").glob("*.json"):
            p.unlink()
        supervisor.stop(root)
    Path(temp_link(str(root / "run" / "ray"), os.getuid())).unlink(missing_ok=True)


def tail(root: Path, service: str, lines: int = 20) -> str:
    """The last lines of a head service's log, across its latest rotation (logpipe)."""
    path = root / "logs" / f"{service}.log"
    text = "".join(p.read_text(errors="replace")
                   for p in (path.with_name(path.name + ".1"), path) if p.exists())
    return "\n".join(text.splitlines()[-lines:])


def _run_api(config_path: Path) -> None:
    data = config_path.read_bytes()
    cfg = json.loads(data)
    from edgekit.tokenfile import check_private

    # both tokens are refused if other users can read them (on a head node or the host)
    check_private(cfg["api_token_path"], "API token file")
    check_private(cfg["ray_token_path"], "Ray token file")
    # Ray reads these when it is imported (below): on a head node no unit or spec sets them
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN_PATH", cfg["ray_token_path"])
    for key, value in PYTHON_MATCH_ENV.items():
        os.environ.setdefault(key, value)
    if cfg.get("power_cap_w"):  # read by edgekit.thermal.controller when it is built
        os.environ["EDGEKIT_POWER_CAP_W"] = str(cfg["power_cap_w"])
    if cfg.get("home"):  # on a head node: telemetry stays under the deploy root
        from edgekit import settings

        os.environ["EDGEKIT_HOME"] = cfg["home"]
        settings.EDGEKIT_HOME = Path(cfg["home"])
    from edgekit.serve.server import ServeConfig, run

    def serving(_state: object) -> None:
        """Tell deploy which config the listening process runs (sha256 of the file)."""
        mark = config_path.with_suffix(".serving")
        tmp = mark.with_suffix(".serving.tmp")
        tmp.write_text(hashlib.sha256(data).hexdigest())
        tmp.replace(mark)

    run(ServeConfig(models=cfg["models"], ray_address=cfg["ray_address"], nodes=cfg["nodes"],
                    min_nodes=int(cfg.get("min_nodes", 1)),  # a config from before: 1
                    host=cfg.get("host", "127.0.0.1"), port=int(cfg["port"]),
                    token_file=Path(cfg["api_token_path"]),
                    node_bundles=bool(cfg.get("node_bundles", False)),
                    controllers=list(cfg.get("controllers", []))), on_ready=serving)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "api":
        print("usage: python -m edgekit.deploy.head api CONFIG.json", file=sys.stderr)
        return 2
    try:
        _run_api(Path(argv[1]))
    except InputError as exc:  # e.g. a token file others can read: one line in the log
        print(f"edgekit api: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


