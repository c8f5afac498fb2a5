"""A small process supervisor for nodes without systemd (and for the head's services).

    python -m edgekit.node.supervisor ensure ROOT   # start the daemon if it is not running
    python -m edgekit.node.supervisor stop ROOT     # stop every service, then the daemon
    python -m edgekit.node.supervisor status ROOT   # JSON: services, pids, restarts

The daemon runs every ROOT/services/<name>.json ({"argv": [...], "env": {...}}) in its own
session with output appended to ROOT/logs/<name>.log (size-capped and rotated by an
edgekit.node.logpipe reader, so no service can fill the disk), restarts a service that exits
(at once if it had run a minute or more, else backoff 1 s doubling to 30 s, like systemd's
Restart=always with RestartSec=100ms and a ramp), restarts it when its file
changes, stops it when its file goes, and writes ROOT/run/supervisor.json. Written here
because the node has nothing else to rely on (no systemd; supervisord/runit are not on
Raspberry Pi OS by default and would need root to install). Stopping kills the whole
process tree (Ray's raylet, GCS and workers), found with psutil before the signal.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from edgekit.node import logpipe

POLL_S = 0.5
STOP_GRACE_S = 15.0
MAX_BACKOFF_S = 30.0
#: a service that ran HEALTHY_S or longer and then died is restarted after FIRST_RESTART_S:
#: a crashed API is an outage for every client (issue 12: back within 5 s, restart included);
#: one that keeps dying young backs off from 1 s so a crash loop cannot spin the CPU
HEALTHY_S = 60.0
FIRST_RESTART_S = 0.1
#: how long `ensure` waits for a running daemon to apply changed service files (each stop
#: may take its grace period)
APPLY_TIMEOUT_S = 3 * STOP_GRACE_S


@dataclass
class Service:
    name: str
    spec_text: str
    proc: subprocess.Popen | None = None
    restarts: int = 0
    backoff_s: float = 1.0
    next_start: float = 0.0
    started: float = 0.0
    last_exit: int | None = None
    tree: list[int] = field(default_factory=list)
    writer: subprocess.Popen | None = None  # the logpipe reader of its output


def _paths(root: Path) -> tuple[Path, Path, Path]:
    return root / "services", root / "run", root / "logs"


def kill_tree(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM a process, its session and every descendant; SIGKILL what is left."""
    try:
        top = psutil.Process(pid)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)


class Supervisor:
    def __init__(self, root: Path):
        self.root = root
        self.services: dict[str, Service] = {}
        self.stopping = False

    def _start(self, svc: Service) -> None:
        spec = json.loads(svc.spec_text)
        _, _, logs = _paths(self.root)
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **{k: str(v) for k, v in spec.get("env", {}).items()}}
        if svc.writer is not None:
            svc.writer.poll()  # reap the last run's reader if it has finished
        svc.writer, out = logpipe.start_reader(logs / f"{svc.name}.log", f"starting {svc.name}")
        try:
            svc.proc = subprocess.Popen(spec["argv"], env=env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT,
                                        cwd=spec.get("cwd") or str(self.root),
                                        start_new_session=True)
        finally:
            os.close(out)  # the service holds the only write end: EOF when it is gone
        svc.started = time.time()

    def _stop(self, svc: Service) -> None:
        if svc.proc is not None and svc.proc.poll() is None:
            kill_tree(svc.proc.pid)
            svc.proc.wait()
        svc.proc = None

    def _last_started_first(self) -> list[str]:
        return sorted(self.services, key=lambda n: self.services[n].started, reverse=True)

    def tick(self) -> None:
        sdir, _, _ = _paths(self.root)
        wanted = {p.stem: p.read_text() for p in sorted(sdir.glob("*.json"))} \
            if sdir.is_dir() else {}
        # the last started first: what started later may depend on what started earlier (the
        # head's API is a Ray driver; with its Ray head gone first, its exit hung until SIGKILL)
        for name in self._last_started_first():
            if name not in wanted or wanted[name] != self.services[name].spec_text:
                self._stop(self.services.pop(name))
        now = time.monotonic()
        for name, text in wanted.items():
            svc = self.services.setdefault(name, Service(name, text))
            if svc.proc is not None and svc.proc.poll() is not None:
                svc.last_exit = svc.proc.returncode
                svc.proc = None
                svc.restarts += 1
                ran_s = time.time() - svc.started
                svc.backoff_s = FIRST_RESTART_S if ran_s >= HEALTHY_S else \
                    min(max(svc.backoff_s * 2, 1.0), MAX_BACKOFF_S)
                svc.next_start = now + svc.backoff_s
            if svc.proc is None and now >= svc.next_start:
                try:
                    self._start(svc)
                except (OSError, ValueError, KeyError) as exc:
                    svc.last_exit = -1
                    svc.next_start = now + MAX_BACKOFF_S
                    _, _, logs = _paths(self.root)
                    logpipe.append(logs / f"{name}.log", f"cannot start {name}: {exc}")
        self._write_status()

    def _write_status(self) -> None:
        _, run, _ = _paths(self.root)
        data = {"pid": os.getpid(), "time": time.time(), "services": {
            n: {"pid": s.proc.pid if s.proc else None, "running": s.proc is not None,
                "restarts": s.restarts, "last_exit": s.last_exit, "since": s.started,
                "spec": spec_digest(s.spec_text)}
            for n, s in self.services.items()}}
        tmp = run / "supervisor.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, run / "supervisor.json")

    def loop(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        while not self.stopping:
            self.tick()
            time.sleep(POLL_S)
        for name in self._last_started_first():
            self._stop(self.services[name])
        self.services.clear()
        self._write_status()


def _pidfile(root: Path) -> Path:
    return root / "run" / "supervisor.pid"


def running_pid(root: Path) -> int | None:
    try:
        pid = int(_pidfile(root).read_text())
        proc = psutil.Process(pid)
        if "edgekit.node.supervisor" in " ".join(proc.cmdline()):
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def run(root: Path) -> None:
    _, rundir, _ = _paths(root)
    rundir.mkdir(parents=True, exist_ok=True)
    lock = os.open(rundir / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another supervisor owns this root
    _pidfile(root).write_text(str(os.getpid()))
    try:
        Supervisor(root).loop()
    finally:
        _pidfile(root).unlink(missing_ok=True)


def spec_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def applied(root: Path) -> bool | None:
    """Whether the daemon's last status shows it running exactly the service files on disk
    (None: a daemon from before status carried spec digests, so it cannot be told)."""
    sdir, run, _ = _paths(root)
    try:
        services = json.loads((run / "supervisor.json").read_text()).get("services", {})
    except (OSError, ValueError):
        return False
    if any("spec" not in svc for svc in services.values()):
        return None
    wanted = {p.stem: spec_digest(p.read_text()) for p in sorted(sdir.glob("*.json"))}
    return {name: svc["spec"] for name, svc in services.items()} == wanted


#: how long a starting daemon may take to write its pid file
START_TIMEOUT_S = 180.0


def ensure(root: Path) -> int:
    """Start the daemon detached (own session, stdio closed) unless it runs; return its pid.

    A running daemon applies changed service files in its next tick; this waits until it
    has (old processes stopped, new ones started), so a deploy never verifies against the
    services it just replaced (a new runtime's Ray worker, say)."""
    pid = running_pid(root)
    if pid:
        deadline = time.monotonic() + APPLY_TIMEOUT_S
        while applied(root) is False and time.monotonic() < deadline:
            time.sleep(0.1)
        return pid
    (root / "run").mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    with logpipe.opened_for_append(root / "logs" / "supervisor.log") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgekit.node.supervisor", "run", str(root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(root),
            start_new_session=True)
    # as long as the daemon is alive it is starting: a loaded Pi 4 core (or an emulated
    # node: 10-30 s) needs a while for Python's imports; a daemon that died fails at once
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        pid = running_pid(root)
        if pid:
            return pid
        time.sleep(0.05)
    why = "exited" if proc.poll() is not None else f"not running after {START_TIMEOUT_S:.0f} s"
    raise SystemExit(f"supervisor did not start ({why}); "
                     f"see {root / 'logs' / 'supervisor.log'}")


def stop(root: Path, timeout_s: float = 60.0) -> bool:
    pid = running_pid(root)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).wait(timeout_s)
    return True


def status(root: Path) -> dict[str, Any]:
    path = root / "run" / "supervisor.json"
    data = json.loads(path.read_text()) if path.exists() else {"services": {}}
    data["running"] = running_pid(root) is not None
    return data


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("run", "ensure", "stop", "status"):
        print("usage: python -m edgekit.node.supervisor run|ensure|stop|status ROOT",
              file=sys.stderr)
        return 2
    action, root = argv[0], Path(argv[1]).expanduser().absolute()
    if action == "run":
        run(root)
    elif action == "ensure":
        print(ensure(root))
    elif action == "stop":
        print("stopped" if stop(root) else "not running")
    else:
        print(json.dumps(status(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
