"""The API end to end: `edgekit serve` subprocess -> Ray workers on pi1/pi2 -> ORT."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.client import Client, ServeError, encode


def _http(url, path, token=None, body=None, headers=None, method=None):
    req = urllib.request.Request(
        url + path,
        data=body,
        method=method,
        headers={**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def test_tritonclient_binary_and_json_match_bare_ort(server, model_files):
    import tritonclient.http as th

    url, token, _ = server
    auth = {"Authorization": f"Bearer {token}"}
    cli = th.InferenceServerClient(url.removeprefix("http://"))
    assert cli.is_server_live(headers=auth) and cli.is_server_ready(headers=auth)
    assert cli.is_model_ready("cls", headers=auth)
    meta = cli.get_model_metadata("cls", headers=auth)
    assert meta["inputs"][0]["name"] == "x" and meta["inputs"][0]["shape"] == [-1, 3, -1, -1]
    assert "binary_tensor_data" in cli.get_server_metadata(headers=auth)["extensions"]
    x = np.random.default_rng(0).random((1, 3, 48, 192), dtype=np.float32)
    want = ort.InferenceSession(str(model_files["cls"])).run(None, {"x": x})[0]
    out_name = meta["outputs"][0]["name"]
    for binary in (True, False):
        inp = th.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [th.InferRequestedOutput(out_name, binary_data=binary)]
        res = cli.infer("cls", [inp], outputs=outs, headers=dict(auth))  # it mutates headers
        np.testing.assert_allclose(res.as_numpy(out_name), want, rtol=1e-4, atol=1e-5)


def test_client_sync_async_and_batching(server):
    url, token, _ = server
    c = Client(url, token=token)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(c.infer("affine", x)["y"], 2 * x + 1)
    assert c.last_node in ("pi1", "pi2", "pi3") and c.last_compute_ms is not None

    async def many():
        outs = await asyncio.gather(*(c.ainfer("affine", {"x": x + i}) for i in range(10)))
        await c.aclose()
        return outs

    for i, out in enumerate(asyncio.run(many())):
        np.testing.assert_array_equal(out["y"], 2 * (x + i) + 1)


def test_pipeline_bundle_runs_across_two_nodes(server):
    url, token, _ = server
    c = Client(url, token=token)
    x = np.ones((1, 4), np.float32)
    # --compress: the carry crosses the cut as int8 blocks, so equal within its error bound
    np.testing.assert_allclose(c.infer("chain", x)["y"], 4 * x + 3, rtol=1e-2)
    assert c.last_node == "pi1+pi2"


@pytest.mark.parametrize(
    ("model", "doc", "status", "needle"),
    [
        ("nope", {"inputs": []}, 404, "unknown model"),
        (
            "affine",
            {"inputs": [{"name": "q", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]},
            400,
            "unknown input 'q'",
        ),
        (
            "affine",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [0] * 4}]},
            400,
            "expected datatype FP32, got FP64",
        ),
        (
            "affine",
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0] * 3}]},
            400,
            "expected shape [-1, 4], got [1, 3]",
        ),
        (
            "boom",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]},
            500,
            "runtime failed",
        ),
    ],
)
def test_bad_requests(server, model, doc, status, needle):
    url, token, _ = server
    code, body, _ = _http(url, f"/v2/models/{model}/infer", token, json.dumps(doc).encode())
    assert code == status and needle in json.loads(body)["error"]
    assert Client(url, token=token).ready()  # still serving


def test_malformed_binary_oversize_and_token(server):
    url, token, _ = server
    code, body, _ = _http(url, "/v2/models/affine/infer", token, b"{not json")
    assert code == 400 and "malformed JSON" in json.loads(body)["error"]
    payload, n = encode({"x": np.zeros((1, 4), np.float32)})
    code, body, _ = _http(
        url,
        "/v2/models/affine/infer",
        token,
        payload[:-2],
        {"Inference-Header-Content-Length": str(n)},
    )
    assert code == 400 and "binary" in json.loads(body)["error"]
    code, body, _ = _http(url, "/v2/models/affine/infer", token, b"0" * (65 * 1024 * 1024))
    assert code == 413 and "limit" in json.loads(body)["error"]
    code, body, _ = _http(url, "/v2/health/ready")
    assert code == 401 and "token" in json.loads(body)["error"]
    with pytest.raises(ServeError) as exc:
        Client(url, token="wrong").metadata("affine")
    assert exc.value.status == 401
    ok = np.ones((3, 4), np.float32)  # boom is fine with 3 rows: failures are per request
    assert Client(url, token=token).infer("boom", ok)["y"].shape == (3, 4)


def test_metrics_and_status(server):
    from prometheus_client.parser import text_string_to_metric_families

    url, token, _ = server
    Client(url, token=token).infer("affine", np.zeros((1, 4), np.float32))
    _code, body, _ = _http(url, "/metrics", token)
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "edgekit_request_duration_seconds",
        "edgekit_node_requests",
        "edgekit_node_compute_seconds",
    } <= names
    _code, body, _ = _http(url, "/edgekit/status", token)
    st = json.loads(body)
    assert set(st["nodes"]) == {"pi1", "pi2", "pi3"} and "affine" in st["models"]
    assert st["readiness"]["ready"] and not st["readiness"]["degraded"]
    # every node's workers say what they compute with: this host's kernels and ORT/LiteRT
    from edgekit import native
    from edgekit.node import stack

    want = stack.describe()
    assert set(st["workers"]) == {"pi1", "pi2", "pi3"}
    for w in st["workers"].values():
        assert w["kernels"] == native.variant() and w["onnxruntime"] == want["onnxruntime"]
        assert w["litert"] == want["litert"] and w["warning"] == stack.warning(want)


def test_cli_infer_and_bench_json(server, tmp_path):
    url, token, cluster = server
    tok = tmp_path / "t"
    tok.write_text(token)
    tok.chmod(0o600)
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).random((1, 3, 48, 192), dtype=np.float32))
    cli = [sys.executable, "-m", "edgekit.cli.main"]
    r = subprocess.run(
        [
            *cli,
            "infer",
            "--url",
            url,
            "--model",
            "cls",
            "--input",
            str(x),
            "--token-file",
            str(tok),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=cluster.env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(next(iter(out["outputs"].values()))["top_k"]) == 2
    r = subprocess.run(
        [
            *cli,
            "bench",
            "--url",
            url,
            "--model",
            "affine",
            "--duration",
            "2",
            "--concurrency",
            "2",
            "--token-file",
            str(tok),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=cluster.env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] > 0 and rep["errors"] == 0 and set(rep["node_share"]) <= {"pi1", "pi2", "pi3"}
