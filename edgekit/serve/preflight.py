"""What `edgekit serve` checks before it touches Ray: the model paths, and that the Ray
cluster it is about to join answers, accepts our token and is an edgekit cluster.

Why: with the default `--ray-address auto`, `ray.init` attached to whatever Ray ran last on
the machine (someone else's, with another token) and logged auth errors for 120 s; a wrong
model path was only noticed after that. The cluster is probed in a child process
(`python -m edgekit.serve.preflight ADDRESS`) with short GCS timeouts: Ray reads those
timeouts once per process, and the API server itself must keep Ray's long ones to ride out a
GCS restart. The child answers in ~1 s; an address nothing listens on fails at the TCP
connect instead of after Ray's 40 s of retries.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgekit.errors import ClusterError, InputError, ModelError

RESOURCE_PREFIX = "edgekit-node-"
CONNECT_TIMEOUT_S = 3.0  # TCP connect to the GCS port
PROBE_TIMEOUT_S = 30.0  # the whole child process, Ray's import included (a loaded host)
#: Ray settings for the probe child only (read by Ray when it is imported)
_PROBE_ENV = {"RAY_gcs_rpc_server_connect_timeout_s": "3",
              "RAY_gcs_rpc_server_reconnect_timeout_s": "3",
              "RAY_gcs_server_request_timeout_seconds": "5"}
_MODEL_SUFFIXES = (".onnx", ".tflite")
_HINT = ("to try a model on this machine without a cluster: edgekit serve --local MODEL_FILE; "
         "to serve on an edgekit cluster: --ray-address HOST:PORT with that cluster's token in "
         "RAY_AUTH_TOKEN_PATH (edgekit deploy does both)")


def check_models(models: list[str] | tuple[str, ...]) -> None:
    """Every NAME=PATH names an existing .onnx/.tflite file or bundle folder, names unique."""
    from edgekit.serve.models import parse_model_arg

    if not models:
        raise InputError("no model given", hint="edgekit serve --model NAME=PATH (or PATH)")
    seen: dict[str, str] = {}
    for arg in models:
        name, path = parse_model_arg(arg)
        if name in seen:
            raise InputError(f"model name '{name}' given twice ({seen[name]} and {path})",
                             hint="name them: --model NAME=PATH")
        seen[name] = str(path)
        _check_model_path(path)


def _check_model_path(path: Path) -> None:
    if not path.exists():
        raise ModelError("no such model file or bundle folder", where=str(path))
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise ModelError("folder is not a bundle (no manifest.json)", where=str(path),
                             hint="give a .onnx/.tflite file or an `edgekit bundle` folder")
        return
    if path.suffix.lower() not in _MODEL_SUFFIXES:
        raise ModelError("not a .onnx or .tflite file", where=str(path))
    if not os.access(path, os.R_OK):
        raise ModelError("model file is not readable", where=str(path))


def probe_cluster(address: str | None, env: dict[str, str] | None = None,
                  timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Ask the Ray cluster at `address` ("auto"/None: the one Ray would pick) who it is, from
    a child process. Returns {"address", "ok", "error", "message", "edgekit_nodes", ...}."""
    child_env = {**os.environ, **(env or {}), **_PROBE_ENV}
    cmd = [sys.executable, "-m", "edgekit.serve.preflight", address or "auto"]
    try:
        proc = subprocess.run(cmd, env=child_env, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"address": address, "ok": False, "error": "timeout",
                "message": f"no answer within {timeout_s:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"address": address, "ok": False, "error": "probe",
                "message": f"probe failed (exit {proc.returncode}): {proc.stderr[-500:]}"}


def check_cluster(address: str | None, nodes: list[str] | None = None,
                  min_nodes: int = 1) -> str:
    """The address of the edgekit Ray cluster to join, or a ClusterError saying why not
    (fewer than `min_nodes` of `nodes` live: the others may join while it serves)."""
    asked = address or "auto"
    found = probe_cluster(address)
    # the address as the user gave it (Ray rewrites 127.0.0.1 to this host's IP), or found
    where = (found.get("address") or asked) if asked == "auto" else asked
    via = " (found by --ray-address auto)" if asked == "auto" and found.get("address") else ""
    error = found.get("error")
    if error == "none":
        raise ClusterError("no Ray cluster found on this machine (--ray-address auto)",
                           hint=_HINT)
    if error == "auth":
        raise ClusterError(
            f"the Ray cluster at {where}{via} refused this process's Ray token: it is not the "
            "cluster RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH belong to (or they are unset)",
            hint=_HINT)
    if error:
        raise ClusterError(f"cannot reach Ray at {where}{via}: {found.get('message')}",
                           hint=_HINT)
    live = found.get("edgekit_nodes", [])
    if not live:
        raise ClusterError(
            f"the Ray cluster at {where}{via} is not an edgekit cluster: none of its "
            f"{found.get('nodes', 0)} live nodes carries an '{RESOURCE_PREFIX}<name>' resource",
            hint=_HINT)
    missing = [n for n in nodes or [] if n not in live]
    if nodes and len(nodes) - len(missing) < min(max(1, min_nodes), len(nodes)):
        raise ClusterError(f"nodes not in the Ray cluster at {where}: {', '.join(missing)} "
                           f"(at least {max(1, min_nodes)} of {len(nodes)} wanted)",
                           hint=f"its edgekit nodes: {', '.join(live)}; --min-nodes")
    return where


# --- the probe child ----------------------------------------------------------------------


def _probe(asked: str) -> dict[str, Any]:
    from ray._private.services import canonicalize_bootstrap_address

    out: dict[str, Any] = {"address": None if asked == "auto" else asked, "ok": False}
    try:
        address = canonicalize_bootstrap_address(asked)
    except (ConnectionError, ValueError) as exc:
        return {**out, "error": "none" if asked == "auto" else "address", "message": str(exc)}
    if address is None:
        return {**out, "error": "none", "message": "no Ray cluster found"}
    out["address"] = address
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        return {**out, "error": "unreachable", "message": f"TCP connect: {exc}"}
    return {**out, **_ask_gcs(address)}


def _ask_gcs(address: str) -> dict[str, Any]:
    import ray.exceptions
    from ray._raylet import GcsClient
    from ray.core.generated import gcs_pb2

    try:
        infos = GcsClient(address=address).get_all_node_info(timeout=5)
    except ray.exceptions.AuthenticationError as exc:
        return {"error": "auth", "message": str(exc).split(". ")[0]}
    except Exception as exc:  # RpcError, timeouts: Ray's own words, shortened
        return {"error": "unreachable", "message": f"{type(exc).__name__}: {str(exc)[:300]}"}
    alive = [i for i in infos.values() if i.state == gcs_pb2.GcsNodeInfo.ALIVE]
    names = sorted({r[len(RESOURCE_PREFIX):] for i in alive for r in i.resources_total
                    if r.startswith(RESOURCE_PREFIX)})
    return {"ok": True, "nodes": len(alive), "edgekit_nodes": names}


def main(argv: list[str]) -> int:
    print(json.dumps(_probe(argv[0] if argv else "auto")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
