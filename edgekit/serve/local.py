"""`edgekit serve --local`: a one-node Ray of its own on this machine, for trying a model.

The node is started the way a deployed node is (`python -m edgekit.node.raynode`, which execs
`ray start --block` with token auth and every port chosen free), with:
- a fresh random token in a 0600 file inside a 0700 temp folder made for this run, handed to
  Ray by path (never on a command line or in the environment);
- the node address 127.0.0.1 and its own Ray temp dir inside that folder, so it neither joins
  nor becomes another Ray on this machine (`ray.init("auto")` of other programs reads
  /tmp/ray, which this Ray never writes);
- the resource `edgekit-node-local`, so the API server places one worker on it as on a Pi.

`stop()` ends `ray start --block` with SIGTERM (it stops every Ray process it started), then
ends whatever of its process tree is left and removes the folder. If this process dies
without running `stop()` (SIGKILL, OOM), the kernel sends the Ray process SIGTERM
(PR_SET_PDEATHSIG), so no Ray is left behind either way.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from edgekit.errors import ClusterError, InputError

#: the node name workers are placed on (`edgekit status` and `/edgekit/status` show it)
NODE = "local"
START_TIMEOUT_S = 180.0  # a loaded 2-core host took ~15 s; Ray's own GCS wait is 120 s
STOP_TIMEOUT_S = 20.0  # `ray start --block` stops its processes within a few seconds
#: Ray's object store holds the model bytes on their way to the worker and tensors above the
#: inline limit; a fifth of the memory within these bounds leaves the rest to the model
OBJECT_STORE_MIN_BYTES = 256 << 20
OBJECT_STORE_MAX_BYTES = 2 << 30


def _die_with_parent() -> None:
    """preexec_fn of the Ray process: SIGTERM (a clean Ray shutdown) when we die."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: stop() must run
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _tmp_base() -> str:
    """/tmp when usable: Ray's socket paths under its temp dir must stay short."""
    return "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else tempfile.gettempdir()


def check_port_free(host: str, port: int) -> None:
    """Refuse a taken API port before a Ray is started for nothing."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InputError(f"cannot resolve --host {host}: {exc}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}",
                             hint="another server uses it: pick one with --port") from None


@dataclass
class LocalRay:
    """One Ray node (head and worker in one) private to this process."""

    cpus: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    root: Path | None = None  # made by start(): the token, Ray's temp dir, its log
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token_path(self) -> Path:
        assert self.root is not None, "start() first"
        return self.root / "ray-token"

    def driver_env(self) -> dict[str, str]:
        """What a driver (this API server) needs to join: token auth by file, nothing else."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def apply_env(self) -> None:
        """Make this process a client of this Ray only (before ray.init reads the env)."""
        for key in ("RAY_AUTH_TOKEN", "RAY_ADDRESS"):
            os.environ.pop(key, None)
        os.environ.update(self.driver_env())

    def prepare(self) -> LocalRay:
        """The private folder and a fresh token, and this process's env pointing at them:
        before `ray` is imported here (Ray reads RAY_AUTH_MODE into its config then)."""
        from edgekit.node.raynode import free_port

        self.root = Path(tempfile.mkdtemp(prefix="ek-local-", dir=_tmp_base()))  # 0700
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, secrets.token_hex(32).encode())
        os.close(fd)
        self.port = free_port()
        self.apply_env()
        return self

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start the node and wait until it carries `edgekit-node-local`; its address."""
        if self.root is None:
            self.prepare()
        try:
            self._spawn()
            self._wait_ready(timeout_s)
        except BaseException:  # Ctrl-C or a failed start: leave nothing behind
            self.stop()
            raise
        return self.address

    def _spawn(self) -> None:
        assert self.root is not None
        total = psutil.virtual_memory().total
        cfg = {"head": True, "port": self.port, "node_ip": "127.0.0.1",
               "temp_dir": str(self.root / "ray"), "num_cpus": self.cpus,
               "object_store_bytes": int(min(OBJECT_STORE_MAX_BYTES,
                                             max(OBJECT_STORE_MIN_BYTES, total // 5))),
               "resources": {f"edgekit-node-{NODE}": 1}, "token_path": str(self.token_path)}
        (self.root / "node.json").write_text(json.dumps(cfg))
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_AUTH_TOKEN", "RAY_ADDRESS")}
        with open(self.root / "ray.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgekit.node.raynode", str(self.root / "node.json")],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the terminal reaches us, not Ray
                preexec_fn=_die_with_parent)

    def _wait_ready(self, timeout_s: float) -> None:
        from edgekit.serve.preflight import probe_cluster

        end = time.monotonic() + timeout_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ClusterError(f"the local Ray exited with code {self.proc.returncode} "
                                   f"while starting:\n{self.log_tail()}")
            if _listening(self.port):
                found = probe_cluster(self.address, env=self.driver_env())
                if NODE in found.get("edgekit_nodes", []):
                    return
            if time.monotonic() > end:
                raise ClusterError(f"the local Ray did not come up within {timeout_s:.0f} s:"
                                   f"\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.root / "ray.log").read_text(errors="replace")[-chars:]  # type: ignore
        except (OSError, TypeError):
            return "(no log)"

    def stop(self) -> None:
        """Stop every process of this Ray (only ours: our child and its descendants)."""
        if self.proc is not None:
            procs = _tree(self.proc.pid)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # ray start --block stops its processes
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(STOP_TIMEOUT_S)
            _, alive = psutil.wait_procs(procs, timeout=5)
            for p in alive:  # what ignored Ray's shutdown
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(alive, timeout=5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def local_ray(host: str, port: int) -> Iterator[LocalRay]:
    """A prepared (not yet started) LocalRay, stopped on the way out whatever happens.

    SIGTERM while Ray starts or workers are placed raises KeyboardInterrupt, so this block's
    exit stops Ray; while serving, the API server's own handler ends serving cleanly. While
    stopping, SIGINT/SIGTERM are ignored: an impatient second Ctrl-C must not leave half a
    Ray behind (the stop is bounded, ~STOP_TIMEOUT_S at worst)."""
    check_port_free(host, port)
    node = LocalRay().prepare()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield node
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            node.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def how_to_call(url: str, models: list[str], token_file: Path | None) -> list[str]:
    """The commands that talk to what was just started (printed once it serves)."""
    token = f" --token-file {token_file}" if token_file else ""
    lines = []
    for name in models:
        lines.append(f"edgekit infer --url {url} --model {name} --input INPUT{token}"
                     "   (INPUT: .npy, .npz by input name, or an image)")
        lines.append(f"edgekit bench --url {url} --model {name} --duration 10{token}")
    auth = f' -H "Authorization: Bearer $(cat {token_file})"' if token_file else ""
    lines.append(f"curl{auth} {url}/v2/models/{models[0]}   (any KServe v2 / Triton HTTP "
                 "client)")
    return lines


def _tree(pid: int) -> list[psutil.Process]:
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.Error:
        return []


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0
