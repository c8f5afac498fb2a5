"""Ray on a virtual cluster without a deploy: a head on the host, one Ray node per virtual node.

Each node's Ray processes are moved into that node's cgroup(s) once the node has joined, so
its raylet and every worker it forks run under the node's CPU quota and heat the node in
the supervisor's model; it gets the node's `EDGEKIT_SYSROOT` and `vcgencmd` on PATH, so the
thermal agent actor placed there reads that node. Token auth is on (token in a 0600 file).
The host's Python runs them (the node users cannot read it), which is what saves the
runtime install that `edgekit deploy` does.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from edgekit.errors import ClusterError
from edgekit.names import node_resource
from edgekit.node import raynode
from edgekit.virtual.cluster import VirtualCluster


@dataclass
class RayOnNodes:
    vc: VirtualCluster
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ekrn-")))
    port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token_path(self) -> Path:
        return self.root / "ray-token"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
        # STOP_ENV as edgekit.node.raynode sets it: else each node's Ray answers SIGTERM by
        # draining for 30 s (measured: 35 s of this fixture's teardown)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path),
                   **raynode.PYTHON_MATCH_ENV, **raynode.STOP_ENV, **raynode.QUIET_ENV,
                   **(extra or {}))
        return env

    def _spawn(self, cfg: dict, env: dict[str, str]) -> None:
        log = (self.root / f"{cfg.get('name', 'head')}.log").open("w")
        self.procs.append(subprocess.Popen(raynode.command(cfg), env=env,
                                           stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def start(self) -> RayOnNodes:
        """Head, then one node per virtual node; whatever started is stopped if a step fails."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RayOnNodes:
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        self.port = raynode.free_port()
        base = {"node_ip": "127.0.0.1", "object_store_bytes": 80 * 2**20}
        # a 0.4-core node on a busy host misses heartbeats for seconds: do not declare it dead
        # after Ray's default 5 missed checks (a 30-load spike killed a node that way)
        self._spawn({**base, "head": True, "port": self.port, "num_cpus": 0,
                     "temp_dir": str(self.root / "head")},
                    self.env({"RAY_health_check_failure_threshold": "60"}))
        self._wait_port()
        for rec in self.vc.nodes:
            sysroot = self.vc.sysroot(rec.name)
            node_env = self.env({"EDGEKIT_SYSROOT": str(sysroot),
                                 "PATH": f"{sysroot}/usr/bin:{os.environ.get('PATH', '')}"})
            cfg = {**base, "name": rec.name, "address": self.address, "num_cpus": 1,
                   "resources": {node_resource(rec.name): 1},
                   "temp_dir": str(self.root / rec.name)}
            self._spawn(cfg, node_env)
        self._wait_nodes([node_resource(r.name) for r in self.vc.nodes])
        # Ray's start-up (raylet waiting for its agents) times out under a 0.4-core quota on a
        # busy host: join first, then move each node's whole process tree into its group;
        # workers the raylet forks later are born there
        for rec, proc in zip(self.vc.nodes, self.procs[1:], strict=True):
            files = self.vc.group(rec.name).procs_files()
            for _ in range(2):  # a second pass catches children forked during the first
                tree = psutil.Process(proc.pid)
                for p in [tree, *tree.children(recursive=True)]:
                    for f in files:
                        with contextlib.suppress(OSError):  # exited meanwhile
                            f.write_text(str(p.pid))
        return self

    def _wait_nodes(self, resources: list[str]) -> None:
        """Until `ray status` lists every node's resource (start-up, bounded at 3 min)."""
        ray_bin = str(Path(sys.executable).parent / "ray")
        out = ""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            res = subprocess.run([ray_bin, "status", f"--address={self.address}"],
                                 env=self.env(), capture_output=True, text=True, timeout=60)
            out = res.stdout + res.stderr
            if all(r in out for r in resources):
                return
            time.sleep(1.0)
        raise ClusterError(f"Ray nodes did not join: {out[-500:]}", where=str(self.root))

    def _wait_port(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.3)
        raise ClusterError("Ray head did not open its port", where=str(self.root / "head.log"))

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
