"""Hostile requests against a running edgekit API: what they cost it (issue 12 acceptance).

    .venv/bin/python benchmarks/serve_hostile.py [--rounds 10] [--json F]
    .venv/bin/python benchmarks/serve_hostile.py --url URL --token-file F --pid PID --log FILE

Without --url it starts its own: a token-auth `LocalCluster` (pi1, pi2) and `edgekit serve`
of ppocr-cls (from `edgekit.model.samples`), stderr to a log file. Then, from 8 threads, it
sends `--rounds` x ~30 malformed or abusive requests of every kind issue 12 lists (invalid
UTF-8 in Authorization, no/wrong token, broken and 100,000-deep JSON, shapes of 2**32 and
1e400, data 2**64, a list where a name belongs, binary_data_size as a float, bodies over the
limit, an 8 MB JSON body, garbage HTTP, stalled uploads, slowloris connections) while one
thread times `/v2/health/live` every 50 ms and one samples the API's RSS (its decode process
included). Reported, with pass/fail against the acceptance:

- responses with a 5xx status (must be 0) and the status mix;
- the API's peak RSS (and its decode process's), against its memory budget;
- `/v2/health/live` latency max and p99 during the run (must stay < 100 ms);
- a valid request afterwards, compared with bare ONNX Runtime;
- log bytes per bad request (< 200).

Do not run it while another benchmark runs: it measures latency on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "token")

MODEL = "cls"
X = {"name": "x", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": [0.5] * 12}


def _doc(**change) -> bytes:
    return json.dumps({"inputs": [{**X, **change}]}).encode()


def _binary(size) -> tuple[bytes, str]:
    from edgekit.client import encode

    payload, n = encode({"x": np.zeros((1, 3, 2, 2), np.float32)})
    doc = json.loads(payload[:n])
    doc["inputs"][0]["parameters"]["binary_data_size"] = size
    head = json.dumps(doc).encode()
    return head + payload[n:], str(len(head))


def big_binary() -> tuple[bytes, str]:
    """An 8 MB binary body whose shape does not fit: read whole, then refused."""
    from edgekit.client import encode

    payload, n = encode({"x": np.zeros((1, 3, 700, 1000), np.float32)})
    head = payload[:n].replace(b'"shape": [1, 3, 700, 1000]', b'"shape": [1, 4, 700, 750]')
    return head + payload[n:], str(len(head))


def big_json() -> bytes:
    """~8 MB of valid JSON whose shape does not fit: all the parsing, no inference."""
    return _doc(shape=[1, 3, 800, 1000], data=[0.25] * (2_400_000 - 1)).replace(
        b"0.25", b"0.5", 1)


def requests(token: str) -> list[tuple[str, dict]]:
    """(kind, how to send it) for one round; every one must get a 4xx."""
    bin_float, hl = _binary(48.0)
    bin_bool, _ = _binary(True)
    big_bin, big_hl = big_binary()
    return [
        ("utf8-auth", {"auth": b"Bearer \xff\xfe\xfa"}),
        ("no-token", {"auth": None}),
        ("wrong-token", {"auth": b"Bearer nope"}),
        ("broken-json", {"body": b"{not json"}),
        ("not-utf8", {"body": b"\xff\xfe{}"}),
        ("nested-100000", {"body": b"[" * 100_000 + b"]" * 100_000}),
        ("shape-2**32", {"body": _doc(shape=[4294967296, 4294967296])}),
        ("batch-2**32", {"body": _doc(shape=[4294967296, 3, 2, 2])}),
        ("shape-1e400", {"body": _doc().replace(b"[1, 3, 2, 2]", b"[1e400, 3, 2, 2]")}),
        ("shape-100-dims", {"body": _doc(shape=[1] * 100)}),
        ("data-2**64", {"body": _doc(datatype="INT64", data=[2**64] * 12)}),
        ("data-strings", {"body": _doc(data=["a"] * 12)}),
        ("name-list", {"body": _doc(name=["x"])}),
        ("datatype-list", {"body": _doc(datatype=["FP32"])}),
        ("params-list", {"body": _doc(parameters=[1])}),
        ("outputs-junk", {"body": json.dumps({"inputs": [X], "outputs": [{"name": [1]}]})
                          .encode()}),
        ("id-object", {"body": json.dumps({"inputs": [X], "id": {"a": 1}}).encode()}),
        ("binary-size-float", {"body": bin_float, "hl": hl}),
        ("binary-size-bool", {"body": bin_bool, "hl": hl}),
        ("header-len-junk", {"body": _doc(), "hl": "1e3"}),
        ("header-len-over", {"body": _doc(), "hl": "999999999"}),
        ("long-name", {"body": _doc(name="q" * 100_000)}),
        ("over-limit", {"declare": 1 << 31}),
        ("big-json", {"body": big_json()}),
        ("big-binary", {"body": big_bin, "hl": big_hl}),
        ("garbage-http", {"raw": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 20}),
        ("bad-request-line", {"raw": b"GET /\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n"}),
        ("huge-header", {"raw": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20000 +
                         b"\r\n\r\n"}),
        ("stalled-upload", {"declare": 1000, "stall": True}),
        ("unknown-model", {"path": "/v2/models/" + "m" * 300 + "/infer", "body": _doc()}),
    ]


def send(url: str, token: str, spec: dict, timeout_s: float = 60.0) -> int:
    """One request over a raw socket; its HTTP status (0: closed without an answer)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        if "raw" in spec:
            s.sendall(spec["raw"])
            return _status(s)
        auth = spec.get("auth", f"Bearer {token}".encode())
        body = spec.get("body", b"")
        length = spec.get("declare", len(body))
        head = (f"POST {spec.get('path', f'/v2/models/{MODEL}/infer')} HTTP/1.1\r\nHost: x\r\n"
                f"Connection: close\r\nContent-Length: {length}\r\n").encode()
        if auth is not None:
            head += b"Authorization: " + auth + b"\r\n"
        if "hl" in spec:
            head += f"Inference-Header-Content-Length: {spec['hl']}\r\n".encode()
        s.sendall(head + b"\r\n")
        if spec.get("stall"):
            s.sendall(b'{"inputs": [')
        elif "declare" not in spec:
            with contextlib.suppress(OSError):  # refused before all of it was sent: fine
                s.sendall(body)
        return _status(s)


def _status(s: socket.socket) -> int:
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


class Watch:
    """Times /v2/health/live every 50 ms and samples the API's RSS (decode process too)."""

    def __init__(self, url: str, pid: int | None, token: str):
        self.url, self.pid = url, pid
        self.auth = {"Authorization": f"Bearer {token}"}
        self.live_ms: list[float] = []
        self.live_failed = 0
        self.rss_peak = self.child_peak = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._live), threading.Thread(target=self._rss)]

    def __enter__(self) -> Watch:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _live(self) -> None:
        import http.client

        host, port = urlsplit(self.url).hostname, urlsplit(self.url).port
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:  # a new connection each time, as a health checker does
                conn = http.client.HTTPConnection(host, port, timeout=5)
                conn.request("GET", "/v2/health/live", headers=self.auth)
                ok = conn.getresponse().status in (200, 401)
                conn.close()
            except OSError:
                ok = False
            self.live_ms.append((time.perf_counter() - t0) * 1000)
            self.live_failed += not ok
            self.stop.wait(0.05)

    def _rss(self) -> None:
        import psutil

        if self.pid is None:
            return
        proc = psutil.Process(self.pid)
        while not self.stop.is_set():
            try:
                self.rss_peak = max(self.rss_peak, proc.memory_info().rss)
                kids = sum(c.memory_info().rss for c in proc.children(recursive=True))
                self.child_peak = max(self.child_peak, kids)
            except psutil.Error:
                pass
            self.stop.wait(0.05)


def slowloris(url: str, n: int, idle_s: float) -> int:
    """Open `n` connections that send headers a byte at a time; how many the server closed
    within its idle timeout (+2 s)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    socks = [socket.create_connection((host, port)) for _ in range(n)]
    for s in socks:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
    deadline = time.monotonic() + idle_s + 2
    closed: set[int] = set()
    while time.monotonic() < deadline and len(closed) < n:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                s.sendall(b"X")
                s.setblocking(False)
                if s.recv(1) == b"":
                    closed.add(i)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(i)
        time.sleep(0.2)
    for s in socks:
        s.close()
    return len(closed)


def attack(url: str, token: str, rounds: int, pid: int | None, log: Path | None,
           idle_s: float) -> dict:
    kinds = requests(token)
    with Watch(url, pid, token) as quiet:  # the same probes with no attack: this machine's noise
        time.sleep(3.0)
    log_before = log.stat().st_size if log else 0
    statuses: dict[str, dict[int, int]] = {}
    start = time.perf_counter()
    with Watch(url, pid, token) as watch, ThreadPoolExecutor(8) as pool:
        jobs = [(k, pool.submit(send, url, token, spec)) for _ in range(rounds)
                for k, spec in kinds]
        loris = slowloris(url, 32, idle_s)
        for kind, job in jobs:
            code = job.result()
            statuses.setdefault(kind, {}).setdefault(code, 0)
            statuses[kind][code] += 1
    seconds = time.perf_counter() - start
    time.sleep(1.0)  # the last log lines (a "suppressed" summary) are written
    sent = len(jobs) + 32
    log_bytes = (log.stat().st_size - log_before) if log else None
    codes = [c for per in statuses.values() for c, n in per.items() for _ in range(n)]
    lat = sorted(watch.live_ms)
    return {
        "requests": sent, "seconds": round(seconds, 1),
        "status_5xx": sum(c >= 500 for c in codes), "no_answer": codes.count(0),
        "by_kind": {k: {str(c): n for c, n in v.items()} for k, v in statuses.items()},
        "slowloris_closed": f"{loris}/32",
        "rss_before_mib": round(quiet.rss_peak / 2**20, 1) if pid else None,
        "rss_peak_mib": round(watch.rss_peak / 2**20, 1) if pid else None,
        "decode_process_peak_mib": round(watch.child_peak / 2**20, 1) if pid else None,
        "live_checks": len(lat), "live_failed": watch.live_failed,
        "live_ms_max": round(lat[-1], 1) if lat else None,
        "live_ms_p99": round(lat[int(0.99 * (len(lat) - 1))], 1) if lat else None,
        "live_ms_max_without_attack": round(max(quiet.live_ms), 1) if quiet.live_ms else None,
        "load_average": os.getloadavg()[0],
        "log_bytes": log_bytes,
        "log_bytes_per_bad_request": round(log_bytes / sent, 1) if log else None,
    }


def valid_afterwards(url: str, token: str) -> bool:
    import onnxruntime as ort

    from edgekit.client import Client
    from edgekit.model import samples

    x = np.random.default_rng(0).random((1, 3, 48, 192), dtype=np.float32)
    want = ort.InferenceSession(str(samples.path("ppocr-cls"))).run(None, {"x": x})[0]
    got = next(iter(Client(url, token=token).infer(MODEL, x).values()))
    return bool(np.allclose(got, want, rtol=1e-4, atol=1e-5))


def own_server(work: Path, token: str):
    """A LocalCluster (pi1, pi2) and `edgekit serve` of ppocr-cls; (cluster, proc, url, log)."""
    from edgekit.client import Client
    from edgekit.model import samples
    from edgekit.serve.localcluster import LocalCluster, _free_port

    cluster = LocalCluster(nodes=["pi1", "pi2"]).start()
    port = _free_port()
    log = work / "serve.log"
    args = [sys.executable, "-m", "edgekit.cli.main", "serve", "--ray-address",
            cluster.address, "--port", str(port), "--model",
            f"{MODEL}={samples.path('ppocr-cls')}", "--json"]
    env = {**cluster.env(), "EDGEKIT_SERVE_TOKEN": token, "EDGEKIT_HOME": str(work)}
    proc = subprocess.Popen(args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client, deadline = Client(url, token=token, retry_for_s=0), time.monotonic() + 240
    while True:
        try:
            if client.ready():
                return cluster, proc, url, log
        except Exception:  # not listening yet
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            cluster.stop()
            raise SystemExit(f"edgekit serve did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running API (else one is started here)")
    ap.add_argument("--token-file", type=Path)
    ap.add_argument("--pid", type=int, help="the API's process id (for its RSS)")
    ap.add_argument("--log", type=Path, help="the API's log file (for log bytes)")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of ~30 bad requests")
    ap.add_argument("--idle-timeout", type=float, default=15.0, help="the API's --idle-timeout")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    cluster = proc = None
    if a.url:
        url, pid, log = a.url, a.pid, a.log
        token = a.token_file.read_text().strip() if a.token_file else ""
    else:
        token = "hostile-" + os.urandom(6).hex()
        cluster, proc, url, log = own_server(Path(tempfile.mkdtemp(prefix="ek-hostile-")), token)
        pid = proc.pid
    try:
        res = attack(url, token, a.rounds, pid, log, a.idle_timeout)
        res["valid_afterwards"] = valid_afterwards(url, token)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if cluster is not None:
            cluster.stop()
    res["pass"] = {
        "no_5xx": res["status_5xx"] == 0,
        "live_under_100ms": res["live_ms_max"] is not None and res["live_ms_max"] < 100,
        "valid_afterwards": res["valid_afterwards"],
        "log_under_200_bytes_per_request": (res["log_bytes_per_bad_request"] or 0) < 200,
    }
    print(json.dumps(res, indent=1))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
