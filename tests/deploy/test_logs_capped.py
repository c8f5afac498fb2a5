"""Logs edgekit writes for its services stop growing at their cap: the supervisor's (nodes
without systemd, the host's head) and the systemd units' (through logpipe). Real processes,
real daemon; a service that writes ~2 MB/s against a 100 kB cap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.deploy import assets
from edgekit.node import supervisor
from edgekit.node.logpipe import CHUNK, CappedLog

CAP = 100_000
BACKUPS = 2
#: ~20 kB lines, 100 a second: a chatty service, or one logging a flood of bad requests
CHATTY = ["sh", "-c", "while :; do head -c 20000 /dev/zero | tr '\\0' x; echo; sleep 0.01; "
                      "done"]


def sizes(log: Path, at_least: int = 0) -> list[int]:
    """Sizes of the log and its backups. The writer rotating (two renames, microseconds) under
    the listing can make a file vanish before its stat, or a directory scan miss one being
    renamed: then the listing starts again, until it has `at_least` files."""
    found: list[int] = []
    for _ in range(50):
        try:
            found = [p.stat().st_size for p in sorted(log.parent.glob(log.name + "*"))]
        except FileNotFoundError:
            found = []
        if len(found) >= max(1, at_least):
            return found
        time.sleep(0.001)
    return found


def capped_env() -> dict[str, str]:
    return {**os.environ, "EDGEKIT_LOG_MAX_BYTES": str(CAP), "EDGEKIT_LOG_BACKUPS": str(BACKUPS)}


def test_capped_log_rotates_by_size_and_keeps_the_newest_bytes(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "x.log", max_bytes=CHUNK, backups=2)
    stream = b"".join(f"{i:07d}\n".encode() for i in range(200_000))  # 1.6 MB
    for start in range(0, len(stream), 1000):
        log.write(stream[start:start + 1000])
    log.close()
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["x.log", "x.log.1", "x.log.2"]
    assert all(p.stat().st_size <= CHUNK for p in files)
    kept = b"".join(p.read_bytes() for p in (files[2], files[1], files[0]))
    assert stream.endswith(kept) and len(kept) > CHUNK * 2  # the newest bytes, in order


def test_supervised_service_log_stops_growing_at_its_cap(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "services").mkdir(parents=True)
    (root / "services" / "chatty.json").write_text(json.dumps({"argv": CHATTY}))
    log = root / "logs" / "chatty.log"
    subprocess.run([sys.executable, "-m", "edgekit.node.supervisor", "ensure", str(root)],
                   env=capped_env(), check=True, capture_output=True, timeout=60)
    try:
        deadline = time.monotonic() + 60
        while not log.with_name("chatty.log.2").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert log.with_name("chatty.log.2").exists(), sizes(log)  # it did rotate twice
        for _ in range(10):  # keeps writing; the files never pass the cap, nor multiply
            time.sleep(0.3)
            now = sizes(log, at_least=BACKUPS)
            # mid-rotation one file is being renamed (as with logging's RotatingFileHandler):
            # a look then sees one fewer, never more (CI caught that instant once)
            assert BACKUPS <= len(now) <= BACKUPS + 1 and max(now) <= CAP, now
        status = supervisor.status(root)["services"]["chatty"]
        assert status["running"] and status["restarts"] == 0  # the writer did not kill it
    finally:
        subprocess.run([sys.executable, "-m", "edgekit.node.supervisor", "stop", str(root)],
                       check=False, capture_output=True, timeout=120)


def test_unit_command_caps_output_passes_exit_code_and_signals(tmp_path: Path) -> None:
    """The ExecStart of the rendered units, run as systemd would run it."""
    unit = assets.render_unit("agent", python=sys.executable, root=str(tmp_path), node="pi1",
                              token_path="/t")
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    wrapper = exec_start.removeprefix("ExecStart=").split(" -- ")[0].split()
    log = tmp_path / "logs" / "agent.log"
    assert wrapper == [sys.executable, "-m", "edgekit.node.logpipe", str(log)]
    flood = ["sh", "-c", "yes 0123456789abcdef | head -c 3000000; echo done; exit 7"]
    res = subprocess.run([*wrapper, "--", *flood], env=capped_env(), timeout=120, check=False)
    assert res.returncode == 7
    assert len(sizes(log)) == BACKUPS + 1 and max(sizes(log)) <= CAP, sizes(log)
    assert log.read_bytes().endswith(b"done\n")
    proc = subprocess.Popen([*wrapper, "--", "sleep", "60"], env=capped_env())
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)  # systemd stopping the unit: the command goes too
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM


@pytest.mark.parametrize("backups", [0, 1])
def test_no_backup_means_truncate(tmp_path: Path, backups: int) -> None:
    log = CappedLog(tmp_path / "y.log", max_bytes=CHUNK, backups=backups)
    for _ in range(10):
        log.write(b"z" * 30_000)
    log.close()
    assert len(list(tmp_path.iterdir())) == backups + 1
    assert (tmp_path / "y.log").stat().st_size <= CHUNK


def test_thermal_telemetry_is_capped_and_old_runs_are_dropped(tmp_path: Path) -> None:
    from edgekit.thermal.recorder import Recorder, read_telemetry

    base = tmp_path / "telemetry"
    for i in range(5):  # earlier API starts, oldest first
        (base / f"old{i}").mkdir(parents=True)
        (base / f"old{i}" / "telemetry.csv").write_text("t_head_s\n")
        os.utime(base / f"old{i}", (1000 + i, 1000 + i))
    (base / "notes").mkdir()  # not a run: left alone
    rec = Recorder(base / "now", max_bytes=20_000, keep_runs=3)
    for t in range(3000):
        rec.telemetry({"t_head_s": float(t), "node": "pi1", "temp_c": 55.5, "state": "ok"})
        rec.decision({"t_head_s": float(t), "node": "pi1", "state": "ok", "reason": "x" * 40})
    rec.close()
    names = sorted(p.name for p in (base / "now").iterdir())
    assert names == ["decisions.csv", "decisions.csv.1", "telemetry.csv", "telemetry.csv.1"]
    assert all(p.stat().st_size < 21_000 for p in (base / "now").iterdir())
    rows = read_telemetry(base / "now")  # the current file has its header again
    assert rows and rows[-1]["t_head_s"] == 2999.0 and rows[0]["node"] == "pi1"
    assert sorted(p.name for p in base.iterdir()) == ["notes", "now", "old3", "old4"]
