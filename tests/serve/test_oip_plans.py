"""Binary requests with a header seen before skip json.loads (oip._Plan): the answer must be
exactly what a full parse gives, for every body, and a body that does not fit still fails."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.serve.limits import model_io
from edgekit.serve.oip import ProtocolError, encode_response, parse_request
from edgekit.serve.tensors import TensorSpec

IO = model_io([TensorSpec("x", "FP32", (-1, 4)), TensorSpec("m", "INT64", (2,))],
              [TensorSpec("y", "FP32", (-1, 4))], 1 << 20, 1 << 20, 1 << 30)[0]


def _request(x: np.ndarray, m: np.ndarray, rid: str | None = None) -> tuple[bytes, str]:
    doc = {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": list(x.shape),
         "parameters": {"binary_data_size": x.nbytes}},
        {"name": "m", "datatype": "INT64", "shape": [2],
         "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    if rid is not None:
        doc["id"] = rid
    head = json.dumps(doc).encode()
    return head + x.tobytes() + m.tobytes(), str(len(head))


def test_same_header_new_values_are_decoded_from_each_body():
    rng = np.random.default_rng(1)
    for _ in range(5):  # the first parses fully, the rest reuse its plan
        x = rng.standard_normal((3, 4)).astype(np.float32)
        m = rng.integers(-9, 9, 2)
        body = bytearray(_request(x, m)[0])
        req = parse_request(body, _request(x, m)[1], IO)
        np.testing.assert_array_equal(req.inputs["x"], x)
        np.testing.assert_array_equal(req.inputs["m"], m)
        assert np.shares_memory(req.inputs["x"], np.frombuffer(body, np.uint8))  # a view
        assert req.outputs == ["y"] and req.id is None


def test_a_cut_body_with_a_known_header_is_still_refused():
    x, m = np.ones((2, 4), np.float32), np.arange(2)
    body, hl = _request(x, m)
    parse_request(bytearray(body), hl, IO)
    with pytest.raises(ProtocolError, match="binary data"):
        parse_request(bytearray(body[:-3]), hl, IO)
    with pytest.raises(ProtocolError, match="binary data"):
        parse_request(bytearray(body + b"xyz"), hl, IO)


def test_ids_are_answered_per_request_and_response_headers_match_a_fresh_encode():
    x, m = np.ones((2, 4), np.float32), np.arange(2)
    for rid in ("a", "b"):
        body, hl = _request(x, m, rid)
        assert parse_request(bytearray(body), hl, IO).id == rid
    req = parse_request(bytearray(_request(x, m)[0]), _request(x, m)[1], IO)
    first = encode_response("m", "1", req, {"y": x})
    again = encode_response("m", "1", req, {"y": x * 3})  # the cached JSON header
    assert first[1] == again[1] and first[0][: first[1]] == again[0][: again[1]]
    assert np.frombuffer(again[0][again[1]:], np.float32).tolist() == (x * 3).ravel().tolist()
    other = encode_response("m", "1", req, {"y": np.ones((5, 4), np.float32)})
    assert json.loads(other[0][: other[1]])["outputs"][0]["shape"] == [5, 4]
