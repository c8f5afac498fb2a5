"""Triton conformance against the running `edgekit serve`: /metrics under Triton's exact
names, the model config / statistics / repository index endpoints (read by tritonclient, a
client we did not write) and JSON bodies sent as exactly `application/json`."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgekit.client import Client

TRITON = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
}


def _http(url, path, token=None, body=None, method=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def _triton(url, token):
    import tritonclient.http as th

    return th.InferenceServerClient(url.split("://", 1)[1]), {"Authorization": f"Bearer {token}"}


def _samples(url, token) -> tuple[str, dict]:
    code, body, _ = _http(url, "/metrics", token)
    assert code == 200
    text = body.decode()
    found: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, found


def _value(found, name, labels) -> float:
    return sum(v for (n, lab), v in found.items() if n == name and set(labels) <= set(lab))


def test_metrics_use_tritons_exact_names_and_count_requests(server):
    url, token, _ = server
    c = Client(url, token=token)
    version = c.metadata("affine")["versions"][0]
    labels = {("model", "affine"), ("version", version)}
    c.infer("affine", np.zeros((1, 4), np.float32))  # the family exists before we compare
    _, before = _samples(url, token)
    for _ in range(3):
        c.infer("affine", np.zeros((2, 4), np.float32))
    bad = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0] * 3}]}
    assert _http(url, "/v2/models/affine/infer", token, json.dumps(bad).encode())[0] == 400
    text, after = _samples(url, token)
    # on the wire: `# TYPE <triton name> ...` and samples named exactly so, no _total/_created
    for name in TRITON:
        assert f"# TYPE {name} " in text, name
        assert f"{name}_total" not in text and f"{name}_created" not in text
        assert any(n == name and labels <= set(lab) for n, lab in after), name
    grew = {n: _value(after, n, labels) - _value(before, n, labels) for n in TRITON}
    assert grew["nv_inference_request_success"] == 3 and grew["nv_inference_exec_count"] >= 1
    assert grew["nv_inference_count"] == 6 and grew["nv_inference_request_failure"] == 1
    compute = grew["nv_inference_compute_infer_duration_us"]
    assert grew["nv_inference_request_duration_us"] > compute > 0
    # edgekit's own per-node series are still there
    names = {n for n, _ in after}
    assert {"edgekit_node_requests_total", "edgekit_node_alive", "edgekit_node_weight",
            "edgekit_request_duration_seconds_count"} <= names


def test_model_config_read_by_tritonclient(server):
    url, token, _ = server
    client, headers = _triton(url, token)
    extensions = client.get_server_metadata(headers=headers)["extensions"]
    assert {"model_configuration", "statistics"} <= set(extensions)
    cfg = client.get_model_config("affine", headers=headers)
    assert cfg["name"] == "affine" and cfg["platform"] == "onnxruntime_onnx"
    assert cfg["backend"] == "onnxruntime" and cfg["max_batch_size"] == 8  # --batch affine=8:2
    assert cfg["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]
    assert cfg["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]
    assert cfg["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
    cls = client.get_model_config("cls", headers=headers)
    assert cls["max_batch_size"] == 0 and all(t["data_type"].startswith("TYPE_")
                                              for t in cls["input"] + cls["output"])


def test_model_stats_read_by_tritonclient(server):
    url, token, _ = server
    client, headers = _triton(url, token)
    Client(url, token=token).infer("affine", np.zeros((1, 4), np.float32))
    doc = client.get_inference_statistics("affine", headers=headers)
    (st,) = doc["model_stats"]
    version = Client(url, token=token).metadata("affine")["versions"][0]
    assert st["name"] == "affine" and st["version"] == version
    assert st["inference_count"] >= 1 and st["execution_count"] >= 1 and st["last_inference"] > 0
    inf = st["inference_stats"]
    assert inf["success"]["count"] >= 1 and inf["success"]["ns"] > 0
    assert inf["compute_infer"]["count"] == st["execution_count"] and inf["queue"]["count"] >= 1
    assert set(inf["fail"]) == {"count", "ns"}
    every = client.get_inference_statistics(headers=headers)["model_stats"]
    assert {"affine", "cls", "boom"} <= {m["name"] for m in every}
    code, body, _ = _http(url, f"/v2/models/affine/versions/{version}/stats", token)
    assert code == 200 and json.loads(body)["model_stats"][0]["name"] == "affine"


def test_repository_index_read_by_tritonclient(server):
    url, token, _ = server
    client, headers = _triton(url, token)
    index = client.get_model_repository_index(headers=headers)
    by_name = {m["name"]: m for m in index}
    assert {"affine", "cls", "boom", "chain", "face"} <= set(by_name)
    assert by_name["affine"]["state"] == "READY" and by_name["affine"]["version"]
    code, body, _ = _http(url, "/v2/repository/index", token, b'{"ready": true}', "POST")
    assert code == 200 and {m["state"] for m in json.loads(body)} == {"READY"}
    code, body, _ = _http(url, "/v2/repository/index", token, b"{nope", "POST")
    assert code == 400 and "malformed JSON" in json.loads(body)["error"]


@pytest.mark.parametrize("path", ["/v2/models/nope/config", "/v2/models/nope/stats",
                                  "/v2/models/affine/versions/9/stats"])
def test_unknown_model_is_a_json_404(server, path):
    url, token, _ = server
    code, body, headers = _http(url, path, token)
    assert code == 404 and headers["Content-Type"] == "application/json"
    assert "nope" in json.loads(body)["error"] or "no version" in json.loads(body)["error"]


def test_json_bodies_are_exactly_application_json(server):
    url, token, _ = server
    doc = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}
    for path, body, want in [
        ("/v2/models/affine/infer", json.dumps(doc).encode(), 200),  # an answer
        ("/v2/models/affine/infer", b"{nope", 400),  # an error
        ("/v2/models/affine", None, 200),
        ("/v2/health/ready", None, 200),
        ("/v2/nowhere", None, 404),
    ]:
        code, _, headers = _http(url, path, token, body)
        assert code == want and headers["Content-Type"] == "application/json", path
    code, _, headers = _http(url, "/v2/health/ready")  # no token: 401, JSON
    assert code == 401 and headers["Content-Type"] == "application/json"
