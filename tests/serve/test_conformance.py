"""KServe v2 / Triton conformance against a running `edgekit serve`, read by clients we did not
write: tritonclient, kserve's InferenceRESTClient and Prometheus's text parser.

The server (on the session's Ray cluster, one node) serves models built here: `text` (string
tensors: Identity and StringConcat "!"), `types` (Identity for every fixed-size datatype) and
`ratio` (a / b in FP32, for NaN and +-Infinity outputs). A model with a tensor no datatype can
carry must stop `edgekit serve` at load, never report ready.
"""

from __future__ import annotations

import asyncio
import json
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import _save, start_server
from test_oip_values import BAD, _seq_model

from edgekit.serve.tensors import OIP_TO_NUMPY

_ONNX_TYPE = {"BOOL": 9, "UINT8": 2, "UINT16": 4, "UINT32": 12, "UINT64": 13, "INT8": 3,
              "INT16": 5, "INT32": 6, "INT64": 7, "FP16": 10, "FP32": 1, "FP64": 11}


def text_model(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["t"], ["same"]),
         helper.make_node("StringConcat", ["t", "bang"], ["loud"])],
        "text",
        [helper.make_tensor_value_info("t", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["N"]),
         helper.make_tensor_value_info("loud", TensorProto.STRING, ["N"])],
        [numpy_helper.from_array(np.array(["!"], dtype=object), "bang")],
    )
    return _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]), path)


def types_model(path: Path) -> Path:
    from onnx import helper

    names = [d.lower() for d in _ONNX_TYPE]
    g = helper.make_graph(
        [helper.make_node("Identity", [f"in_{n}"], [f"out_{n}"]) for n in names],
        "types",
        [helper.make_tensor_value_info(f"in_{d.lower()}", t, ["N"]) for d, t in _ONNX_TYPE.items()],
        [helper.make_tensor_value_info(f"out_{d.lower()}", t, ["N"])
         for d, t in _ONNX_TYPE.items()],
    )
    return _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def ratio_model(path: Path) -> Path:
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Div", ["a", "b"], ["q"])], "ratio",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, [4])],
    )
    return _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def conf(ray_cluster, tmp_path_factory):
    d = tmp_path_factory.mktemp("conf")
    models = {"text": text_model(d / "text.onnx"), "types": types_model(d / "types.onnx"),
              "ratio": ratio_model(d / "ratio.onnx")}
    proc = start_server(ray_cluster, tmp_path_factory, ["--nodes", "pi1"], models)
    try:
        yield proc
    finally:
        proc.stop()


def _http(conf, path, body=None, method=None, headers=None):
    h = {"Authorization": f"Bearer {conf.token}", **(headers or {})}
    req = urllib.request.Request(conf.url + path, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def _strict(body: bytes):
    """RFC 8259 JSON only: a bare NaN/Infinity token fails the test."""
    def refuse(token):
        raise AssertionError(f"bare {token} token: not JSON")
    return json.loads(body, parse_constant=refuse)


def _json_ok(conf, path, body=None, method=None, status=200):
    code, raw, headers = _http(conf, path, body, method)
    assert code == status, (path, raw[:300])
    assert headers["Content-Type"] == "application/json", path
    return _strict(raw)


def _version(conf, model="text") -> str:
    return _json_ok(conf, f"/v2/models/{model}")["versions"][0]


def _triton(conf):
    import tritonclient.http as th

    return th, th.InferenceServerClient(conf.url.split("://", 1)[1]), {
        "Authorization": f"Bearer {conf.token}"}


def test_health_and_server_metadata(conf):
    assert _json_ok(conf, "/v2/health/live") == {"live": True}
    assert _json_ok(conf, "/v2/health/ready")["ready"] is True
    meta = _json_ok(conf, "/v2")
    assert meta["name"] == "edgekit" and meta["version"]
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(meta["extensions"])


def test_model_metadata_and_readiness_plain_and_versioned(conf):
    v = _version(conf)
    meta = _json_ok(conf, "/v2/models/text")
    assert meta["name"] == "text" and meta["platform"] == "onnxruntime"
    assert meta["inputs"] == [{"name": "t", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "same", "datatype": "BYTES", "shape": [-1]},
                               {"name": "loud", "datatype": "BYTES", "shape": [-1]}]
    assert _json_ok(conf, f"/v2/models/text/versions/{v}") == meta
    for path in ("/v2/models/text/ready", f"/v2/models/text/versions/{v}/ready"):
        assert _json_ok(conf, path)["ready"] is True
    for path in ("/v2/models/text/versions/no-such", "/v2/models/nope",
                 "/v2/models/nope/ready", "/v2/models/text/versions/no-such/ready"):
        assert "error" in _json_ok(conf, path, status=404)
    types = {t["name"]: t["datatype"] for t in _json_ok(conf, "/v2/models/types")["inputs"]}
    assert types == {f"in_{d.lower()}": d for d in _ONNX_TYPE}


def test_triton_extensions_for_string_models(conf):
    _, client, headers = _triton(conf)
    cfg = client.get_model_config("text", headers=headers)
    assert cfg["input"] == [{"name": "t", "data_type": "TYPE_STRING", "dims": [-1]}]
    assert {m["name"] for m in client.get_model_repository_index(headers=headers)} == {
        "text", "types", "ratio"}
    (st,) = client.get_inference_statistics("text", headers=headers)["model_stats"]
    assert st["name"] == "text" and set(st["inference_stats"]) >= {"success", "fail"}


@pytest.mark.parametrize("binary", [False, True])
def test_bytes_in_and_out_with_tritonclient(conf, binary):
    th, client, headers = _triton(conf)
    words = np.array([b"Hello", "çà".encode(), b""], dtype=object)
    inp = th.InferInput("t", [3], "BYTES")
    inp.set_data_from_numpy(words, binary_data=binary)
    outs = [th.InferRequestedOutput(n, binary_data=binary) for n in ("same", "loud")]
    res = client.infer("text", [inp], outputs=outs, headers=headers,
                       model_version=_version(conf))

    def as_bytes(arr):
        return [v if isinstance(v, bytes) else v.encode() for v in arr.tolist()]

    assert as_bytes(res.as_numpy("same")) == [b"Hello", "çà".encode(), b""]
    assert as_bytes(res.as_numpy("loud")) == [b"Hello!", "çà!".encode(), b"!"]


def test_bytes_on_the_wire(conf):
    doc = {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [2], "data": ["a", "é"]}]}
    out = _json_ok(conf, "/v2/models/text/infer", json.dumps(doc).encode())["outputs"]
    assert [(o["name"], o["datatype"], o["data"]) for o in out] == [
        ("same", "BYTES", ["a", "é"]), ("loud", "BYTES", ["a!", "é!"])]
    raw = b"".join(struct.pack("<I", len(e)) + e for e in (b"xy", b"\xff"))
    head = json.dumps({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [2],
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    code, body, headers = _http(conf, "/v2/models/text/infer", head + raw,
                                headers={"Inference-Header-Content-Length": str(len(head))})
    assert code == 400 and headers["Content-Type"] == "application/json"
    assert "input 't': BYTES element 1 is not UTF-8" in json.loads(body)["error"]


@pytest.mark.parametrize(("datatype", "data", "needle"), BAD)
def test_value_out_of_range_for_its_datatype_is_a_400(conf, datatype, data, needle):
    name = f"in_{datatype.lower()}"
    if datatype == "BYTES":  # the types model has no string input: the text model's
        name, model = "t", "text"
    else:
        model = "types"
    doc = {"inputs": [{"name": name, "datatype": datatype, "shape": [len(data)], "data": data}]}
    err = _json_ok(conf, f"/v2/models/{model}/infer", json.dumps(doc).encode(), status=400)
    assert err["error"].startswith(f"input '{name}': ") and needle in err["error"]


def test_every_datatype_round_trips_its_extremes_in_json(conf):
    inputs, want = [], {}
    for d in _ONNX_TYPE:
        dtype = OIP_TO_NUMPY[d]
        if dtype.kind == "b":
            data = [True, False, True]
        elif dtype.kind == "f":
            data = [float(np.finfo(dtype).min), float(np.finfo(dtype).max), "-Infinity"]
        else:
            data = [int(np.iinfo(dtype).min), int(np.iinfo(dtype).max), 7.0]
        inputs.append({"name": f"in_{d.lower()}", "datatype": d, "shape": [3], "data": data})
        want[f"out_{d.lower()}"] = (d, [int(v) if isinstance(v, float) and dtype.kind in "iu"
                                        else v for v in data])
    doc = _json_ok(conf, "/v2/models/types/infer", json.dumps({"inputs": inputs}).encode())
    got = {o["name"]: (o["datatype"], o["data"]) for o in doc["outputs"]}
    assert got == want


@pytest.mark.parametrize("binary", [False, True])
def test_nan_and_infinity_outputs_are_valid_json_for_every_client(conf, binary):
    a, b = np.array([0, 1, -1, 6], np.float32), np.array([0, 0, 0, 3], np.float32)
    doc = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [4], "data": a.tolist()},
                      {"name": "b", "datatype": "FP32", "shape": [4], "data": b.tolist()}]}
    out = _json_ok(conf, "/v2/models/ratio/infer", json.dumps(doc).encode())["outputs"][0]
    assert out["data"] == ["NaN", "Infinity", "-Infinity", 2.0]

    def check(q):
        assert np.isnan(q[0]) and list(q[1:]) == [np.inf, -np.inf, 2.0]

    th, client, headers = _triton(conf)
    ins = [th.InferInput(n, [4], "FP32") for n in "ab"]
    for inp, arr in zip(ins, (a, b), strict=True):
        inp.set_data_from_numpy(arr, binary_data=binary)
    res = client.infer("ratio", ins, outputs=[th.InferRequestedOutput("q", binary_data=binary)],
                       headers=headers)
    check(res.as_numpy("q"))
    check(_kserve(conf, "ratio", {"a": a, "b": b}, binary).outputs[0].as_numpy())


def _kserve(conf, model: str, arrays: dict, binary: bool):
    """One inference with kserve's InferenceRESTClient (JSON or binary both ways)."""
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    inputs = []
    for name, arr in arrays.items():
        inp = InferInput(name, list(arr.shape), "BYTES" if arr.dtype == object else
                         {np.dtype(v): k for k, v in OIP_TO_NUMPY.items()}[arr.dtype])
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    req = InferRequest(model, inputs, parameters={"binary_data_output": binary})

    async def go():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as client:
            return await client.infer(conf.url, req, model_name=model,
                                      headers={"Authorization": f"Bearer {conf.token}"})

    return asyncio.run(go())


def test_kserve_rest_client_health_inference_and_errors(conf):
    import httpx
    from kserve import InferenceRESTClient, RESTConfig

    auth = {"Authorization": f"Bearer {conf.token}"}

    async def health():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as client:
            return (await client.is_server_live(conf.url, headers=auth),
                    await client.is_server_ready(conf.url, headers=auth),
                    await client.is_model_ready(conf.url, "text", headers=auth))

    assert asyncio.run(health()) == (True, True, True)
    for binary in (False, True):
        res = _kserve(conf, "text", {"t": np.array([b"ab", b"c"], dtype=object)}, binary)
        got = {o.name: [v if isinstance(v, bytes) else v.encode() for v in o.as_numpy()]
               for o in res.outputs}
        assert got == {"same": [b"ab", b"c"], "loud": [b"ab!", b"c!"]}
        res = _kserve(conf, "ratio", {"a": np.array([3, -8, 0, 1], np.float32),
                                      "b": np.array([2, 4, 1, 8], np.float32)}, binary)
        np.testing.assert_array_equal(res.outputs[0].as_numpy(), [1.5, -2, 0, 0.125])
    # an error reaches kserve's client with its message (exactly application/json)
    with pytest.raises(httpx.HTTPStatusError) as err:
        _kserve(conf, "types", {"in_int16": np.array([1], np.int16),
                                "in_int8": np.array([5], np.int8)}, False)
    assert "missing inputs" in str(err.value) and "400" in str(err.value)
    with pytest.raises(httpx.HTTPStatusError) as err:
        _kserve(conf, "text", {"t": np.array([1, 2], np.int32)}, False)
    assert "expected datatype BYTES, got INT32" in str(err.value)


def test_metrics_under_tritons_names_with_model_and_version(conf):
    v = _version(conf)
    doc = {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["m"]}]}
    _json_ok(conf, "/v2/models/text/infer", json.dumps(doc).encode())
    bad = {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": [1]}]}
    _json_ok(conf, "/v2/models/text/infer", json.dumps(bad).encode(), status=400)
    code, body, _ = _http(conf, "/metrics")
    assert code == 200
    found: dict[str, list] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            found.setdefault(s.name, []).append(s.labels)
    for name in ("nv_inference_request_success", "nv_inference_request_failure",
                 "nv_inference_count", "nv_inference_exec_count",
                 "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_infer_duration_us"):
        mine = [lab for lab in found.get(name, []) if lab.get("model") == "text"]
        assert mine and all(lab["version"] == v for lab in mine), name
        extra = {"reason"} if name == "nv_inference_request_failure" else set()
        assert all(set(lab) == {"model", "version"} | extra for lab in mine), name


def test_a_model_with_an_unservable_tensor_never_reports_ready(ray_cluster, tmp_path_factory):
    path = tmp_path_factory.mktemp("seq") / "seq.onnx"
    path.write_bytes(_seq_model())
    with pytest.raises(RuntimeError) as err:
        start_server(ray_cluster, tmp_path_factory, ["--nodes", "pi1"], {"seq": path})
    assert "edgekit serve exited" in str(err.value)
    assert "output 's' has type seq(tensor(float))" in str(err.value)


@pytest.mark.parametrize("binary", [False, True])
def test_edgekit_client_speaks_bytes_and_non_finite_floats(conf, binary):
    """Our own client (edgekit infer, bench): BYTES in and out, NaN/Infinity back as floats."""
    from edgekit.client import Client, decode, encode

    client = Client(conf.url, token=conf.token, retry_for_s=0)
    a, b = np.array([0, 1, -1, 6], np.float32), np.array([0, 0, 0, 3], np.float32)
    if binary:
        q = client.infer("ratio", {"a": a, "b": b})["q"]
        words = client.infer("text", {"t": np.array(["pi", "zero"], dtype=object)})
    else:  # the JSON answer through the same decoder
        body = json.dumps({"inputs": [
            {"name": "a", "datatype": "FP32", "shape": [4], "data": a.tolist()},
            {"name": "b", "datatype": "FP32", "shape": [4], "data": b.tolist()}]}).encode()
        q = decode(_http(conf, "/v2/models/ratio/infer", body)[1], None)["q"]
        raw, n = encode({"t": np.array(["pi", "zero"], dtype=object)})
        code, got, headers = _http(conf, "/v2/models/text/infer", raw, headers={
            "Inference-Header-Content-Length": str(n)})
        assert code == 200, got[:300]
        words = decode(got, headers.get("Inference-Header-Content-Length"))
    assert np.isnan(q[0]) and list(q[1:]) == [np.inf, -np.inf, 2.0]
    assert words["same"].tolist() == ["pi", "zero"]
    assert words["loud"].tolist() == ["pi!", "zero!"]
