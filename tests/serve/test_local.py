"""`edgekit serve --local MODEL_FILE` end to end: it starts its own one-node Ray (token auth, a
private folder), serves the file (equal to bare ONNX Runtime), prints how to call it (that
command works), and on SIGTERM - or when the serve process is SIGKILLed - no process of it
is left. Real processes throughout: `edgekit serve` as a subprocess, Ray, ORT, HTTP."""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from edgekit.client import Client
from edgekit.serve.localcluster import _free_port

START_TIMEOUT_S = 300.0  # Ray start + ORT load on a shared 2-core host


def _env(home: Path) -> dict[str, str]:
    """The caller's environment without any Ray settings: --local must need none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["EDGEKIT_HOME"] = str(home)
    return env


def _start(tmp_path: Path, model: Path, port: int) -> tuple[subprocess.Popen, dict, Path]:
    out = tmp_path / "serve.out"
    err = tmp_path / "serve.err"
    args = [sys.executable, "-m", "edgekit.cli.main", "serve", "--local", str(model),
            "--port", str(port), "--json"]
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(args, env=_env(tmp_path / "home"), stdout=fo, stderr=fe,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            return proc, json.loads(out.read_text()), err
        except ValueError:  # nothing (or half a document) yet
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"serve --local not ready (exit {proc.poll()}): "
                        f"{err.read_text()[-3000:]}")
        time.sleep(0.5)


def _ours(folder: str, pids: set[int]) -> list[psutil.Process]:
    """Live processes among `pids` or naming the local Ray's folder (Ray's own processes)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if p.pid in pids or folder in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:  # gone, or a zombie (raynode's exited port announcer)
        return ""


def _wait_gone(folder: str, pids: set[int], timeout_s: float = 60.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while (left := _ours(folder, pids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.fixture(scope="module")
def cls_model(tmp_path_factory) -> Path:
    """A real model file (PP-OCR's text direction classifier), copied to a folder of ours."""
    from edgekit.model import samples

    dst = tmp_path_factory.mktemp("model") / "textdir.onnx"
    dst.write_bytes(Path(samples.path("ppocr-cls")).read_bytes())
    return dst


def test_local_serves_a_model_file_and_stops_leaving_nothing(tmp_path: Path, cls_model) -> None:
    import onnxruntime as ort

    proc, info, err = _start(tmp_path, cls_model, _free_port())
    try:
        folder = info["local_ray"]["folder"]
        pids = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        assert info["models"] == ["textdir"] and info["url"].startswith("http://127.0.0.1:")
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        token = Path(folder) / "ray-token"
        assert stat.S_IMODE(os.stat(token).st_mode) == 0o600 and len(token.read_text()) >= 32
        cmdlines = [_cmdline(pid) for pid in pids]
        assert any("gcs_server" in c for c in cmdlines)
        assert not any(token.read_text() in c for c in cmdlines)

        x = np.random.default_rng(7).random((1, 3, 48, 192)).astype(np.float32)
        bare = ort.InferenceSession(str(cls_model), providers=["CPUExecutionProvider"])
        want = dict(zip([o.name for o in bare.get_outputs()], bare.run(None, {"x": x}),
                        strict=True))
        client = Client(info["url"], retry_for_s=0)
        got = client.infer("textdir", {"x": x})
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
        assert client.last_node == "local"
        assert "local" in client.status()["nodes"]

        # the printed way to call it works as printed
        np.save(tmp_path / "x.npy", x)
        line = next(t for t in info["try"] if t.startswith("edgekit infer"))
        argv = shlex.split(line.split("   (")[0].replace("INPUT", str(tmp_path / "x.npy")))
        run = subprocess.run([sys.executable, "-m", "edgekit.cli.main", *argv[1:], "--json"],
                             capture_output=True, text=True, timeout=120,
                             env=_env(tmp_path / "home"))
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["node"] == "local"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    assert code == 0, err.read_text()[-2000:]
    assert _wait_gone(folder, pids) == []
    assert not Path(folder).exists()


def test_local_ray_goes_when_serve_is_killed(tmp_path: Path, cls_model) -> None:
    """SIGKILL gives no chance to clean up: the kernel's parent-death signal stops Ray."""
    proc, info, _ = _start(tmp_path, cls_model, _free_port())
    folder = info["local_ray"]["folder"]
    pids = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    proc.kill()
    proc.wait(30)
    left = _wait_gone(folder, pids)
    for p in left:  # do not leave them to other tests, then fail
        p.kill()
    assert left == []
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def test_local_bad_input_is_refused_before_ray_starts(tmp_path: Path, cls_model) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "serve", *args],
                              capture_output=True, text=True, timeout=120,
                              env=_env(tmp_path / "home"))
        done.stderr = " ".join(done.stderr.split())  # as one line, however the terminal wraps
        return done

    missing = serve("--local", str(tmp_path / "nope.onnx"))
    assert missing.returncode == 3 and "nope.onnx: no such model file" in missing.stderr
    assert "one-node Ray" not in missing.stderr
    (tmp_path / "notes.txt").write_text("x")
    wrong = serve("--local", f"m={tmp_path / 'notes.txt'}", "--json")
    assert wrong.returncode == 3
    doc = json.loads(wrong.stdout)["error"]
    assert "not a .onnx or .tflite" in doc["message"] and doc["where"].endswith("notes.txt")
    both = serve("--local", "--ray-address", "127.0.0.1:1", str(cls_model))
    assert both.returncode == 2 and "--local starts its own Ray" in both.stderr
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = serve("--local", str(cls_model), "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 3 and "cannot listen on 127.0.0.1" in busy.stderr
    assert "one-node Ray" not in busy.stderr
