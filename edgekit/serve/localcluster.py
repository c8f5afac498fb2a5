"""A Ray cluster of emulated Pi nodes on this machine, for tests and benchmarks.

`ray start --head` (no edgekit resource, so nothing is placed on it) plus one `ray start
--address` per node with `{"edgekit-node-<name>": 1}`, its own temp dir and ports, and token
auth on. The token lives in a 0600 file handed to Ray through RAY_AUTH_TOKEN_PATH, never on a
command line. `kill_node`/`restart_node` stop and bring back one node's processes (found by
its temp dir), which is what a Pi losing power and rebooting looks like to the head.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from edgekit import names
from edgekit.errors import ClusterError
from edgekit.node import raynode
from edgekit.node.raynode import system_config_arg

_HANDED_OUT: set[int] = set()


def _free_port() -> int:
    """A port free now and not handed out before by this process: the kernel may give the
    same ephemeral port to two consecutive binds, and Ray refuses to start a node whose
    object-manager and metrics ports are equal (a random test failure)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class LocalCluster:
    nodes: list[str] = field(default_factory=lambda: ["pi1", "pi2"])
    cpus_per_node: int = 1
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ek-ray-")))
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token_path(self) -> Path:
        return self.root / "ray-token"

    def env(self) -> dict[str, str]:
        """Environment a driver or node needs to join this cluster (token by file)."""
        env = dict(os.environ)
        env.pop("RAY_AUTH_TOKEN", None)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path),
                   **raynode.QUIET_ENV)
        return env

    def apply_env(self) -> None:
        """Make this process a client of the cluster (for ray.init in tests)."""
        os.environ.pop("RAY_AUTH_TOKEN", None)
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))

    def _ray(self, *args: str) -> None:
        ray_bin = str(Path(sys.executable).parent / "ray")
        proc = subprocess.run(
            [ray_bin, *args], env=self.env(), capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            raise ClusterError(f"ray {args[0]} failed: {proc.stderr[-2000:]}")

    def start(self) -> LocalCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, secrets.token_hex(32).encode())
        os.close(fd)
        self.port = self.port or _free_port()
        try:
            self._start_all()
        except BaseException:  # never leave a half-started cluster's daemons behind
            self.stop()
            raise
        return self

    def _start_all(self) -> None:
        self._ray(
            "start",
            "--head",
            f"--port={self.port}",
            "--num-cpus=0",
            f"--temp-dir={self.root / 'head'}",
            "--include-dashboard=false",
            f"--ray-client-server-port={_free_port()}",
            "--disable-usage-stats",
            *raynode.QUIET_ARGS,
            system_config_arg(),
            *self._ports(),
        )
        for name in self.nodes:
            self.start_node(name)

    def _ports(self) -> list[str]:
        return [
            f"--node-manager-port={_free_port()}",
            f"--object-manager-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            "--object-store-memory=200000000",
        ]

    def start_node(self, name: str) -> None:
        self._ray(
            "start",
            f"--address={self.address}",
            f"--num-cpus={self.cpus_per_node}",
            f"--resources={json.dumps({names.node_resource(name): 1})}",
            f"--temp-dir={self.root / name}",
            "--disable-usage-stats",
            *raynode.QUIET_ARGS,
            *self._ports(),
        )

    def _procs(self, marker: str) -> list[psutil.Process]:
        found = []
        me = {os.getpid(), *(a.pid for a in psutil.Process().parents())}
        for p in psutil.process_iter(["cmdline"]):
            if p.pid in me:
                continue
            try:
                text = " ".join(p.info["cmdline"] or [])
            except (psutil.Error, TypeError):
                continue
            if marker in text or (
                self.port
                and "--address=" in text
                and text.split("--address=")[1].split()[0].endswith(f":{self.port}")
                and marker == str(self.root)
            ):
                found.append(p)
                # agents and workers rename themselves (ray::...): take the children
                with contextlib.suppress(psutil.Error):
                    found += p.children(recursive=True)
        return list({p.pid: p for p in found}.values())

    def kill_node(self, name: str) -> None:
        """SIGKILL every process of one node (raylet, its workers), like a power cut."""
        for p in self._procs(str(self.root / name)):
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)

    def kill_workers(self, name: str) -> int:
        """SIGKILL one node's edgekit worker processes only (the node itself stays up)."""
        killed = 0
        for p in self._procs(str(self.root / name)):
            with contextlib.suppress(psutil.Error):
                if "_GroupedWorker" in " ".join(p.cmdline()):
                    p.send_signal(signal.SIGKILL)
                    killed += 1
        return killed

    def stop(self) -> None:
        """Stop every process of this cluster (only ours: matched by our temp dir)."""
        procs = self._procs(str(self.root))
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        time.sleep(0.5)
        shutil.rmtree(self.root, ignore_errors=True)
