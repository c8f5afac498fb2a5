"""Peers that stall, workers that hang, memory per request, and who may serve (issue 12,
findings 2, 3, 8, 9): a second `edgekit serve` with short timeouts, on pi1 and pi2."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest
from serve_helpers import affine_model, launch, spin_model, start_server

from edgekit.client import Client, ServeError

IDLE_S, BODY_S, DEADLINE_S = 2.0, 2.0, 1.5


@pytest.fixture(scope="module")
def tight(ray_cluster, tmp_path_factory):
    d = tmp_path_factory.mktemp("tight")
    models = {"affine2": affine_model(d / "affine2.onnx"), "spin": spin_model(d / "spin.onnx")}
    options = ["--nodes", "pi1,pi2", "--idle-timeout", str(IDLE_S), "--body-timeout",
               str(BODY_S), "--deadline", f"spin={DEADLINE_S}", "--memory-budget-mb", "64"]
    proc = start_server(ray_cluster, tmp_path_factory, options, models)
    proc.models = models
    try:
        yield proc
    finally:
        proc.stop()


def _addr(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _closed_by_server(s: socket.socket, within_s: float) -> bool:
    s.settimeout(within_s)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_idle_and_slowloris_connections_are_closed(tight):
    """64 idle connections and 16 sending headers one byte at a time: all closed within the
    keep-alive timeout (plus scheduling slack)."""
    idle = [socket.create_connection(_addr(tight.url)) for _ in range(64)]
    slow = [socket.create_connection(_addr(tight.url)) for _ in range(16)]
    start = time.monotonic()
    for s in slow:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    done = threading.Event()

    def drip() -> None:
        while not done.is_set():
            for s in slow:
                with contextlib.suppress(OSError):
                    s.sendall(b"X")
            time.sleep(0.2)

    t = threading.Thread(target=drip, daemon=True)
    t.start()
    try:
        closed = [_closed_by_server(s, IDLE_S + 3) for s in idle + slow]
        elapsed = time.monotonic() - start
    finally:
        done.set()
        t.join(5)
        for s in idle + slow:
            s.close()
    assert all(closed), f"{closed.count(False)} of {len(closed)} still open"
    assert elapsed < IDLE_S + 3
    assert Client(tight.url, token=tight.token).live()


def _post_head(url: str, token: str, length: int, binary: bool = False) -> socket.socket:
    s = socket.create_connection(_addr(url))
    extra = "Inference-Header-Content-Length: 10\r\n" if binary else ""
    s.sendall(f"POST /v2/models/affine2/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
              f"{token}\r\nContent-Length: {length}\r\n{extra}\r\n".encode())
    return s


def _answer(s: socket.socket, timeout_s: float) -> tuple[int, dict]:
    s.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    return int(top.split(b" ")[1]), json.loads(body)


def test_stalled_and_dripping_uploads_are_cut_off(tight):
    s = _post_head(tight.url, tight.token, 1000)
    s.sendall(b'{"inputs": [')
    start = time.monotonic()
    status, body = _answer(s, BODY_S + 5)
    assert status == 408 and "stalled" in body["error"], body
    assert time.monotonic() - start < BODY_S + 3
    assert _closed_by_server(s, 3)
    s.close()
    s = _post_head(tight.url, tight.token, 1000)  # a byte every 0.5 s: never idle, too slow
    start = time.monotonic()
    status = None
    for _ in range(40):
        try:
            s.sendall(b" ")
        except OSError:
            break
        s.settimeout(0.5)
        try:
            status, body = _answer(s, 0.5)
            break
        except TimeoutError:
            continue
    s.close()
    assert status == 408, status
    assert time.monotonic() - start < BODY_S + 4


def test_hung_worker_ends_in_504_and_is_replaced(tight):
    c = Client(tight.url, token=tight.token, retry_for_s=0)
    np.testing.assert_array_equal(c.infer("spin", np.array([3], np.int64))["y"], [3.0])
    start = time.monotonic()
    with pytest.raises(ServeError) as exc:
        c.infer("spin", np.array([10**12], np.int64))  # hours of work
    took = time.monotonic() - start
    assert exc.value.status == 504 and "deadline" in str(exc.value)
    assert DEADLINE_S <= took < DEADLINE_S + 2
    # the other replica serves meanwhile; the hung one is killed after a second deadline
    np.testing.assert_array_equal(c.infer("spin", np.array([5], np.int64))["y"], [5.0])
    deadline = time.monotonic() + 120
    while True:
        st = c.status()
        gens = [r["generations"] for r in st["replicas"] if r["model"] == "spin"]
        if [1] in gens and not st["readiness"]["degraded"]:
            break
        assert time.monotonic() < deadline, (st["replicas"], st["events"])
        time.sleep(0.5)
    for n in (2, 4, 6, 8):  # both replicas answer, the recreated one included
        np.testing.assert_array_equal(c.infer("spin", np.array([n], np.int64))["y"], [n])


def test_body_limit_per_model_from_its_input_spec(tight):
    c = Client(tight.url, token=tight.token, retry_for_s=0)
    limits = c.status()["limits"]
    spin = limits["models"]["spin"]
    # one INT64 value: its exact size plus room for the JSON header, not the 64 MiB cap
    assert spin["binary_body_bytes"] == 8 + 64 * 1024
    assert limits["models"]["affine2"]["binary_body_bytes"] == (64 << 20) // 3
    doc = {"inputs": [{"name": "n", "datatype": "INT64", "shape": [1], "data": [1]}],
           "id": "x" * 200_000}
    status, body, _ = c._request("POST", "/v2/models/spin/infer", json.dumps(doc).encode())
    assert status == 413 and "limit" in json.loads(body)["error"]


def test_memory_budget_answers_503_with_retry_after(tight):
    """Two bodies of 15 MiB announced at once: the first holds 45 MiB of the 64 MiB budget
    while it (never) arrives, the second is refused with 503 + Retry-After at once."""
    first = _post_head(tight.url, tight.token, 15 << 20, binary=True)
    try:
        time.sleep(0.3)
        second = _post_head(tight.url, tight.token, 15 << 20, binary=True)
        status, body = _answer(second, 10)
        second.close()
        assert status == 503 and "memory budget" in body["error"], body
    finally:
        first.close()
    time.sleep(0.5)
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(Client(tight.url, token=tight.token).infer("affine2", x)["y"],
                                  3 * x)
    big = np.zeros(((22 << 20) // 16, 4), np.float32)  # over what the budget could ever hold
    with pytest.raises(ServeError) as exc:
        Client(tight.url, token=tight.token, retry_for_s=0).infer("affine2", big)
    assert exc.value.status == 413


def test_client_retries_a_503_with_retry_after(tight):
    """A stalled upload holds 45 MiB of the 64 MiB budget until it is cut off (408 after
    BODY_S): the client's 12 MiB request is refused with 503 + Retry-After, then retried."""
    first = _post_head(tight.url, tight.token, 15 << 20, binary=True)
    x = np.ones(((12 << 20) // 16, 4), np.float32)
    try:
        time.sleep(0.3)
        with pytest.raises(ServeError) as exc:
            Client(tight.url, token=tight.token, retry_for_s=0).infer("affine2", x)
        assert exc.value.status == 503 and exc.value.retry_after_s == 1
        y = Client(tight.url, token=tight.token, retry_for_s=30).infer("affine2", x)["y"]
    finally:
        first.close()
    np.testing.assert_array_equal(y[:3], 3 * x[:3])


def _serve(cluster, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "edgekit.cli.main", "serve", "--ray-address", cluster.address,
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          env={**cluster.env(), **(env or {})})


def test_second_server_with_the_same_model_name_gets_a_clear_error(tight, ray_cluster):
    from edgekit.serve.localcluster import _free_port

    r = _serve(ray_cluster, "--port", str(_free_port()), "--model",
               f"spin={tight.models['spin']}")
    assert r.returncode != 0
    assert "model 'spin' is already served on this Ray cluster" in r.stderr, r.stderr[-2000:]
    assert "ActorAlreadyExistsError" not in r.stderr and "Traceback" not in r.stderr


def test_off_loopback_without_token_is_refused(tight, ray_cluster):
    r = _serve(ray_cluster, "--host", "0.0.0.0", "--model", f"x={tight.models['spin']}",
               env={"EDGEKIT_SERVE_TOKEN": ""})
    assert r.returncode == 3
    assert "without a bearer token" in r.stderr and "--allow-unauthenticated" in r.stderr


def test_client_and_bench_ride_out_an_api_restart(tight, ray_cluster, tmp_path_factory):
    """Issue 12 (9): the API process killed under load and started again on the same port:
    Client and bench retry across the outage by default; nothing is lost."""
    import asyncio

    from edgekit.serve.loadgen import BenchSettings, run_bench

    x = np.ones((1, 4), np.float32)
    report: dict = {}

    def bench() -> None:
        report["r"] = asyncio.run(run_bench(tight.url, "affine2", {"x": x}, BenchSettings(
            6.0, concurrency=2, token=tight.token, retry_for_s=120)))

    t = threading.Thread(target=bench)
    t.start()
    time.sleep(1.0)
    children = psutil.Process(tight.proc.pid).children(recursive=True)  # the decode process
    assert children
    tight.proc.kill()  # no goodbye: like an OOM kill or a crash
    tight.proc.wait(10)
    killed = time.monotonic()
    client = Client(tight.url, token=tight.token, retry_for_s=120)
    waiter = threading.Thread(target=lambda: report.setdefault(
        "client", client.infer("affine2", x)["y"]))
    waiter.start()
    restarted = launch(ray_cluster, tmp_path_factory, tight.args, tight.log, tight.url,
                       tight.token)
    tight.proc = restarted.proc
    back = time.monotonic() - killed
    waiter.join(60)
    t.join(180)
    np.testing.assert_array_equal(report["client"], 3 * x)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind by the killed API: {alive}"
    rep = report["r"].summary()
    assert rep["errors"] == 0, rep["error_samples"]
    assert rep["retried"] > 0 and rep["ok"] > 0
    print(f"API restart: serving again {back:.1f} s after the kill; bench rode out "
          f"{rep['outage_s']} s")
