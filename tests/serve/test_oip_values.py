"""JSON values against their datatype, BYTES on the wire, NaN/Infinity out, and runtimes that
refuse at load what they cannot serve: the decoder and encoder alone (no server; the same
cases against a running server are in test_conformance.py)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from edgekit.errors import ModelError
from edgekit.serve.limits import model_io
from edgekit.serve.oip import InferRequest, ProtocolError, encode_response, parse_request
from edgekit.serve.runtime import open_runtime
from edgekit.serve.tensors import OIP_TO_NUMPY, TensorSpec, oip_from_ort


def _io(datatype: str, shape=(-1,)):
    specs = [TensorSpec("v", datatype, shape)]
    return model_io(specs, specs, 64 << 20, 16 << 20, 512 << 20)[0]


def _json(datatype: str, data, shape=None):
    doc = {"inputs": [{"name": "v", "datatype": datatype, "data": data,
                       "shape": shape if shape is not None else [len(data)]}]}
    return parse_request(json.dumps(doc).encode(), None, _io(datatype)).inputs["v"]


def _binary_bytes(raw: bytes, count: int):
    head = json.dumps({"inputs": [{"name": "v", "datatype": "BYTES", "shape": [count],
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return parse_request(head + raw, str(len(head)), _io("BYTES")).inputs["v"]


def _wire(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


BAD = [
    ("INT8", [300], "value 300 at index 0 is out of range for INT8 [-128, 127]"),
    ("INT8", [1, -129], "value -129 at index 1 is out of range for INT8"),
    ("UINT8", [-1], "value -1 at index 0 is out of range for UINT8 [0, 255]"),
    ("UINT16", [70000], "value 70000 at index 0 is out of range for UINT16"),
    ("INT16", [40000.0], "out of range for INT16"),
    ("UINT32", [2**32], "out of range for UINT32"),
    ("INT32", [2**40], "value 1099511627776 at index 0 is out of range for INT32"),
    ("INT64", [2**63], "out of range for INT64"),
    ("INT64", [1.7], "INT64 takes integers, got 1.7 at index 0"),
    ("INT64", [10**400], "out of range for INT64"),
    ("UINT64", [2**64], "out of range for UINT64"),
    ("UINT64", [-1], "out of range for UINT64"),
    ("INT32", [True], "INT32 takes integers, got true"),
    ("INT32", ["7"], "INT32 takes integers, got the string '7'"),
    ("BOOL", ["x"], "BOOL takes true/false, got the string 'x' at index 0"),
    ("BOOL", [1], "BOOL takes true/false, got 1"),
    ("FP16", [1e6], "value 1000000.0 at index 0 is out of range for FP16 (largest 65504.0)"),
    ("FP32", [1e39], "out of range for FP32"),
    ("FP32", ["1.5"], "FP32 takes numbers (or \"NaN\", \"Infinity\", \"-Infinity\"), "
                      "got the string '1.5'"),
    ("FP64", [None], "FP64 takes numbers, got null at index 0"),
    ("FP32", [[1.0], [2.0, 3.0]], "FP32 takes numbers, got a nested list"),
    ("INT8", [{"a": 1}], "INT8 takes integers, got an object"),
    ("BYTES", [1], "BYTES takes strings, got 1 at index 0"),
]


@pytest.mark.parametrize(("datatype", "data", "needle"), BAD)
def test_json_value_that_does_not_fit_is_a_400_naming_input_and_problem(datatype, data, needle):
    with pytest.raises(ProtocolError) as err:
        _json(datatype, data)
    assert err.value.status == 400 and err.value.message.startswith("input 'v': ")
    assert needle in err.value.message


@pytest.mark.parametrize("datatype", sorted(OIP_TO_NUMPY))
def test_every_datatype_takes_its_whole_range(datatype):
    dtype = OIP_TO_NUMPY[datatype]
    if dtype.kind == "b":
        data = [True, False]
    elif dtype.kind == "f":
        data = [float(np.finfo(dtype).min), 0.5, float(np.finfo(dtype).max), "NaN", "-Infinity"]
    else:
        data = [int(np.iinfo(dtype).min), 0, int(np.iinfo(dtype).max), 3.0]
    got = _json(datatype, data)
    assert got.dtype == dtype
    want = np.array([{"NaN": np.nan, "-Infinity": -np.inf}.get(v, v) for v in data],
                    dtype=object).astype(dtype)  # object: exact for 64-bit integers
    np.testing.assert_array_equal(got, want)


def test_nested_json_data_and_bare_nan_tokens_from_pythons_json():
    got = _json("FP32", [[1, 2], [3, 4]], shape=[4])
    np.testing.assert_array_equal(got, [1, 2, 3, 4])
    io = _io("FP32")
    body = b'{"inputs":[{"name":"v","datatype":"FP32","shape":[3],"data":[NaN,Infinity,1]}]}'
    got = parse_request(body, None, io).inputs["v"]  # tritonclient's json.dumps writes these
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == 1


def test_large_valid_json_input_is_exact():
    values = np.random.default_rng(0).integers(-(2**31), 2**31, 200_000)
    np.testing.assert_array_equal(_json("INT32", values.tolist()), values.astype(np.int32))


def test_bytes_json_and_binary_decode_to_text():
    np.testing.assert_array_equal(_json("BYTES", ["héllo", ""]),
                                  np.array(["héllo", ""], dtype=object))
    got = _binary_bytes(_wire(b"ab", b"", "çd".encode()), 3)
    assert got.dtype == object and got.tolist() == ["ab", "", "çd"]
    assert _binary_bytes(b"", 0).shape == (0,)


@pytest.mark.parametrize(("raw", "count", "needle"), [
    (_wire(b"ab", b"cd")[:-1], 2, "BYTES element 1 says 2 bytes, 1 are left"),
    (_wire(b"ab") + b"x", 1, "1 bytes left after 1 BYTES elements"),
    (_wire(b"ab")[:2], 1, "2 bytes cannot hold 1 BYTES elements"),
    (_wire(b"ab") + b"\x01\x00", 2, "BYTES element 1's length is cut off"),
    (_wire(b"\xff\xfe"), 1, "BYTES element 0 is not UTF-8 text"),
    (struct.pack("<I", 2**32 - 1) + b"abcd", 1, "says 4294967295 bytes"),
])
def test_malformed_binary_bytes_is_a_400(raw, count, needle):
    with pytest.raises(ProtocolError) as err:
        _binary_bytes(raw, count)
    assert err.value.status == 400 and needle in err.value.message, err.value.message


def test_bytes_binary_size_is_checked_before_use():
    for size, needle in [(-1, "non-negative integer"), ("8", "non-negative integer"),
                         (1 << 40, "over this input's limit")]:
        head = json.dumps({"inputs": [{"name": "v", "datatype": "BYTES", "shape": [1],
                                       "parameters": {"binary_data_size": size}}]}).encode()
        with pytest.raises(ProtocolError) as err:
            parse_request(head + _wire(b"ab"), str(len(head)), _io("BYTES"))
        assert needle in err.value.message


def _encode(outputs: dict, binary: bool) -> tuple[bytes, int | None]:
    return encode_response("m", "1", InferRequest(None, {}, None, {}, binary), outputs)


def test_nan_and_infinity_outputs_are_strict_json_strings():
    y = np.array([np.nan, np.inf, -np.inf, 1.5], np.float16)
    body, header = _encode({"y": y, "z": y.astype(np.float64)}, binary=False)
    assert header is None

    def refuse(token):
        raise AssertionError(f"bare {token} in the response")

    doc = json.loads(body, parse_constant=refuse)
    for out in doc["outputs"]:
        assert out["data"] == ["NaN", "Infinity", "-Infinity", 1.5]
        back = np.array(out["data"], dtype=np.float32)  # what tritonclient/kserve do
        assert np.isnan(back[0]) and list(back[1:]) == [np.inf, -np.inf, 1.5]


def test_bytes_outputs_json_and_binary():
    s = np.array(["a", "é", ""], dtype=object)
    body, _ = _encode({"s": s}, binary=False)
    out = json.loads(body)["outputs"][0]
    assert out["datatype"] == "BYTES" and out["data"] == ["a", "é", ""]
    body, header = _encode({"s": s}, binary=True)
    out = json.loads(body[:header])["outputs"][0]
    assert body[header:] == _wire(b"a", "é".encode(), b"")
    assert out["parameters"]["binary_data_size"] == len(body) - header


def test_string_tensors_are_bytes_in_metadata():
    assert oip_from_ort("tensor(string)") == "BYTES"


def _seq_model() -> bytes:
    """A valid ONNX model whose output is a sequence (no OIP datatype carries it)."""
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["s"])], "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m.SerializeToString()


def test_a_tensor_type_the_protocol_cannot_carry_is_refused_at_load():
    with pytest.raises(ModelError) as err:
        open_runtime("onnxruntime", _seq_model(), 1, "seqmodel")
    text = str(err.value)
    assert "output 's'" in text and "seq(tensor(float))" in text and "seqmodel" in text
