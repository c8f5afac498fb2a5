"""What a user can ask of `edgekit deploy` (the CLI's options, for flow and the rollout)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.deploy.selftest import DEFAULT_TIMEOUT_S as SELFTEST_TIMEOUT_S


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
    #: deploy succeeds (degraded) once this many nodes serve; the others join when they can
    min_nodes: int = 1
    selftest: bool = True  # run the model once on each node before it gets traffic
    selftest_timeout_s: float = SELFTEST_TIMEOUT_S
    api_port: int | None = None
    api_host: str = "127.0.0.1"  # what the API binds; 0.0.0.0: the LAN (bearer token always on)
    thermal: bool = True  # steer routing by temperature/power (edgekit.thermal controller)
    power_cap_w: float | None = None  # cluster power cap enforced by that controller
