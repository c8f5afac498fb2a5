"""Protocol codec and tensor codec, pure functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.client import decode, encode
from edgekit.serve.oip import ModelIO, ProtocolError, encode_response, parse_request
from edgekit.serve.tensors import TensorSpec
from edgekit.serve.worker import pack, unpack

SPECS = ModelIO((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1, 4)),))


def test_binary_roundtrip():
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, n = encode({"x": x})
    req = parse_request(body, str(n), SPECS)
    np.testing.assert_array_equal(req.inputs["x"], x)
    out, hl = encode_response("m", "1", req, {"y": x * 2})
    np.testing.assert_array_equal(decode(out, str(hl))["y"], x * 2)


def test_json_request_and_response():
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    ).encode()
    req = parse_request(body, None, SPECS)
    out, hl = encode_response("m", "1", req, {"y": req.inputs["x"]})
    assert hl is None and json.loads(out)["outputs"][0]["data"] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (
            {"inputs": [{"name": "z", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]},
            "unknown input",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [0] * 4}]},
            "expected datatype FP32, got INT64",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [0] * 5}]},
            "expected shape [-1, 4], got [1, 5]",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 3}]},
            "3 values",
        ),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"inputs": [{"name": "x", "shape": [2**40, 4], "datatype": "FP32", "data": [0]}]},
         "over this input's limit"),
    ],
)
def test_bad_json_requests(doc, needle):
    with pytest.raises(ProtocolError) as exc:
        parse_request(json.dumps(doc).encode(), None, SPECS)
    assert needle in exc.value.message


def test_binary_size_mismatch_and_malformed():
    body, n = encode({"x": np.zeros((1, 4), np.float32)})
    with pytest.raises(ProtocolError, match="binary"):
        parse_request(body[:-4], str(n), SPECS)
    with pytest.raises(ProtocolError, match="malformed JSON"):
        parse_request(b"{nope", None, SPECS)


def test_int8_block_codec_error_bound():
    x = np.random.default_rng(1).standard_normal((3, 1000)).astype(np.float32)
    packed = pack(x)
    assert isinstance(packed, bytes) and len(packed) < x.nbytes / 3.5
    y = unpack(packed)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.max(np.abs(x - y)) <= np.max(np.abs(x)) / 127.0
    ints = np.arange(5)
    assert pack(ints) is ints and unpack(ints) is ints
