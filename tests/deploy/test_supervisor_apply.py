"""`supervisor ensure` on a running daemon returns only once it runs the service files now on
disk: a deploy that rewrote a service (a new runtime, a new head) must not verify against the
process it replaced. Real daemon, real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from edgekit.node import supervisor


def _spec(root: Path, argv: list[str]) -> None:
    sdir = root / "services"
    sdir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"argv": argv})
    (sdir / "svc.json.tmp").write_text(text)
    (sdir / "svc.json.tmp").replace(sdir / "svc.json")


def _ensure(root: Path) -> int:
    out = subprocess.run([sys.executable, "-m", "edgekit.node.supervisor", "ensure", str(root)],
                         capture_output=True, text=True, timeout=120, check=True)
    return int(out.stdout.strip())


def _service_pid(root: Path) -> int | None:
    status = json.loads((root / "run" / "supervisor.json").read_text())
    return status["services"]["svc"]["pid"]


def test_ensure_waits_until_a_changed_service_is_restarted(tmp_path) -> None:
    root = tmp_path / "root"
    # the first version takes 2 s to stop (as Ray does, in its own way): without the wait,
    # ensure would return while it still runs
    _spec(root, ["sh", "-c", "trap 'sleep 2; exit 0' TERM; sleep 301 & wait"])
    daemon = _ensure(root)
    try:
        deadline = time.monotonic() + 30
        while supervisor.applied(root) is not True and time.monotonic() < deadline:
            time.sleep(0.1)
        old = _service_pid(root)
        assert old and psutil.Process(old).cmdline()[:2] == ["sh", "-c"]
        _spec(root, ["sleep", "302"])
        assert supervisor.applied(root) is False  # the daemon has not seen it yet
        assert _ensure(root) == daemon  # the same daemon, and now:
        assert supervisor.applied(root) is True
        new = _service_pid(root)
        assert new and new != old and psutil.Process(new).cmdline() == ["sleep", "302"]
        assert not psutil.pid_exists(old) or psutil.Process(old).status() == "zombie"
    finally:
        subprocess.run([sys.executable, "-m", "edgekit.node.supervisor", "stop", str(root)],
                       capture_output=True, timeout=120, check=False)


def _restart_delay(root: Path, ran_s: float) -> float:
    """Kill the service after it 'ran' `ran_s`; how long the daemon waits to start it again."""
    for sub in ("run", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    sup = supervisor.Supervisor(root)
    try:
        sup.tick()
        svc = sup.services["svc"]
        svc.started -= ran_s
        svc.proc.kill()
        svc.proc.wait()
        sup.tick()  # sees the exit, schedules the restart
        assert svc.proc is None
        return svc.next_start - time.monotonic()
    finally:
        for s in sup.services.values():
            sup._stop(s)


def test_a_long_running_service_is_restarted_at_once_a_young_one_backs_off(tmp_path) -> None:
    """A crashed API is an outage for every client: after a healthy run it is started again
    within FIRST_RESTART_S; a service that keeps dying young waits 1 s and more (no spin)."""
    root = tmp_path / "root"
    _spec(root, ["sleep", "303"])
    assert _restart_delay(root, supervisor.HEALTHY_S + 1) <= supervisor.FIRST_RESTART_S
    assert _restart_delay(root, 0.5) >= 1.0


def test_services_stop_last_started_first(tmp_path) -> None:
    """The head's API (started after its Ray head, a driver of it) is stopped before the Ray
    head: with Ray gone first its exit hung until SIGKILL. Each service records its SIGTERM."""
    root, log = tmp_path / "root", tmp_path / "stops.log"
    sdir = root / "services"
    sdir.mkdir(parents=True)

    def spec(name: str) -> None:
        argv = ["sh", "-c", f"trap 'echo {name} >> {log}; exit 0' TERM; "
                f"touch {tmp_path / name}; sleep 300 & wait"]
        (sdir / f"{name}.json").write_text(json.dumps({"argv": argv}))
        _ensure(root)
        deadline = time.monotonic() + 30  # its trap is set
        while not (tmp_path / name).exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    spec("b-dependency")
    spec("a-driver")  # started second, though its name sorts first
    assert supervisor.stop(root)
    # the tree gets SIGTERM twice (its group, then each process): a trap may run twice
    assert list(dict.fromkeys(log.read_text().split())) == ["a-driver", "b-dependency"]
