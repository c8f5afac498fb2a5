"""Property-based fuzzing of the OIP decoder (JSON and binary), with hypothesis.

Properties: the decoder only ever returns a request or raises `ProtocolError` (a 4xx); what
it allocates is bounded by the body it was given, never by what the body claims; and the real
server, fed the same kind of bodies, never answers 5xx and still serves a valid request.
Examples are bounded for CI: EDGEKIT_FUZZ_EXAMPLES (default 300 for the decoder, a third of
that over HTTP).
"""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.client import Client, encode
from edgekit.serve.limits import model_io
from edgekit.serve.oip import InferRequest, ProtocolError, parse_request
from edgekit.serve.tensors import OIP_TO_NUMPY, TensorSpec

EXAMPLES = int(os.environ.get("EDGEKIT_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
IO, _ = model_io([TensorSpec("x", "FP32", (-1, 4))], [TensorSpec("y", "FP32", (-1, 4))],
                 64 << 20, 16 << 20, 512 << 20)
FIXED_IO, _ = model_io([TensorSpec("n", "INT64", (1,)), TensorSpec("x", "FP32", (-1, 4))],
                       [TensorSpec("y", "FP32", (1,))], 64 << 20, 16 << 20, 512 << 20)

leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
anything = st.recursive(leaf, lambda kids: st.lists(kids, max_size=4)
                        | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=20)
dims = st.one_of(st.integers(-(2**65), 2**65),
                 st.sampled_from([0, 1, 2, 3, 4, -1, 2**31, 2**32, 2**62, 2**63]))
item = st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.sampled_from(["x", "n", "y"]), anything),
    "datatype": st.one_of(st.sampled_from([*OIP_TO_NUMPY, "BYTES", "FP8"]), anything),
    "shape": st.one_of(st.lists(dims, max_size=5), st.just([1, 4]), anything),
    "data": st.one_of(st.lists(leaf, max_size=12), st.lists(st.lists(leaf, max_size=4),
                                                            max_size=3), anything),
    "parameters": st.one_of(
        st.fixed_dictionaries({}, optional={"binary_data_size": st.one_of(
            st.integers(-16, 2**70), st.sampled_from([0, 16, 32]), anything)}),
        anything),
})
output = st.one_of(st.fixed_dictionaries({"name": st.one_of(st.just("y"), anything)}, optional={
    "parameters": st.one_of(st.fixed_dictionaries({"binary_data": anything}), anything)}),
    anything)
document = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(item, max_size=3), anything)},
    optional={"outputs": st.one_of(st.lists(output, max_size=3), anything),
              "parameters": st.one_of(st.fixed_dictionaries(
                  {"binary_data_output": anything}), anything),
              "id": anything})


@st.composite
def bodies(draw) -> tuple[bytes, str | None]:
    """(body, Inference-Header-Content-Length): JSON, binary, or raw bytes."""
    kind = draw(st.sampled_from(["json", "binary", "raw", "deep"]))
    if kind == "raw":
        return draw(st.binary(max_size=200)), draw(st.one_of(st.none(), st.text(max_size=8)))
    if kind == "deep":
        n = draw(st.integers(1, 200_000))
        return b"[" * n + b"]" * draw(st.integers(0, n)), None
    head = json.dumps(draw(document)).encode()
    if kind == "json":
        return head, None
    blob = draw(st.binary(max_size=64))
    hl = draw(st.one_of(st.just(str(len(head))), st.integers(-5, len(head) + 70).map(str),
                        st.text(max_size=6)))
    return head + blob, hl


def _decode_bounded(body: bytes, hl: str | None, io) -> None:
    tracemalloc.start()  # only around the decoder: hypothesis's own work is not measured
    try:
        req = parse_request(body, hl, io)
    except ProtocolError as exc:
        assert 400 <= exc.status < 500 and len(exc.message) < 600
    else:
        assert isinstance(req, InferRequest)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # never what the body claims (shapes of 2**62): at most a few times what it carries
    assert peak < 64 * len(body) + (1 << 20), (peak, len(body))


@FUZZ
@given(bodies())
def test_decoder_raises_only_protocol_errors_and_allocates_by_the_body(case):
    body, hl = case
    _decode_bounded(body, hl, IO)
    _decode_bounded(body, hl, FIXED_IO)


@FUZZ
@given(st.lists(st.one_of(st.floats(width=32, allow_nan=False), st.integers(-100, 100)),
                min_size=4, max_size=40).filter(lambda v: len(v) % 4 == 0))
def test_decoder_accepts_every_valid_request(values):
    x = np.asarray(values, np.float32).reshape(-1, 4)
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                       "data": values}]}
    np.testing.assert_array_equal(parse_request(json.dumps(doc).encode(), None, IO).inputs["x"], x)
    body, n = encode({"x": x})
    np.testing.assert_array_equal(parse_request(body, str(n), IO).inputs["x"], x)


@settings(max_examples=max(20, EXAMPLES // 3), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bodies())
def test_server_never_answers_5xx(server, case):
    import http.client

    url, token, _ = server
    body, hl = case
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if hl is not None and hl.isprintable() and hl.isascii():
        headers["Inference-Header-Content-Length"] = hl
    try:
        conn.request("POST", "/v2/models/affine/infer", body=body, headers=headers)
        resp = conn.getresponse()
        answer = resp.read()
    finally:
        conn.close()
    assert resp.status < 500, answer[:300]
    if resp.status != 200:
        assert "error" in json.loads(answer)


def test_server_serves_after_the_fuzz(server):
    url, token, _ = server
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(Client(url, token=token).infer("affine", x)["y"], 3 * x)
