"""The direct channel's frames: round trips of every dtype and codec, and frames that do not
add up are refused with FrameError, never read past their buffer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.native import codec
from edgekit.serve import frames


def roundtrip(tensors, kind=frames.REQUEST, ms=1.5):
    parts = frames.encode(kind, 42, tensors, ms)
    raw = b"".join(bytes(p) for p in parts)
    head = frames.Header(raw[: frames.HEADER.size], 1 << 30)
    body = np.frombuffer(raw[frames.HEADER.size :], np.uint8).copy()
    assert (head.kind, head.rid, head.ms, head.count) == (kind, 42, ms, len(tensors))
    return frames.decode(head, body), body


@pytest.mark.parametrize("dtype", sorted(frames.CODE_OF, key=str))
def test_every_dtype_round_trips_as_views(dtype):
    x = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    out, body = roundtrip({"x": x, "empty": np.zeros((0, 5), dtype)})
    np.testing.assert_array_equal(out["x"], x)
    assert out["x"].dtype == x.dtype and out["empty"].shape == (0, 5)
    assert np.shares_memory(out["x"], body)  # a view of the received buffer, not a copy
    assert out["x"].ctypes.data % frames.ALIGN == body.ctypes.data % frames.ALIGN


def test_bytes_q8_and_big_endian():
    words = np.array([["héllo", ""], ["a", "bc"]], dtype=object)
    blob = codec.pack(np.linspace(-1, 1, 64, dtype=np.float32), "q8")
    be = np.arange(6, dtype=">i4")
    out, _ = roundtrip({"w": words, "q": blob, "be": be})
    assert out["w"].tolist() == words.tolist()
    np.testing.assert_allclose(codec.unpack(out["q"]), np.linspace(-1, 1, 64), atol=0.02)
    np.testing.assert_array_equal(out["be"], be)


def test_non_contiguous_input_is_sent_right():
    x = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]
    out, _ = roundtrip({"x": x})
    np.testing.assert_array_equal(out["x"], x)


def test_error_frame_and_bare_frames():
    parts = frames.encode_error(7, "runtime failed: ü", frames.PATH_LOST)
    raw = b"".join(bytes(p) for p in parts)
    head = frames.Header(raw, 1 << 20)
    assert (head.kind, head.rid, head.flags) == (frames.ERROR, 7, frames.PATH_LOST)
    assert frames.error_text(raw[frames.HEADER.size :]) == "runtime failed: ü"
    assert frames.Header(frames.encode_bare(frames.PING, 3), 0).kind == frames.PING


def test_bad_headers_are_refused():
    good = frames.encode_bare(frames.PING)
    with pytest.raises(frames.FrameError, match="magic"):
        frames.Header(b"XXXX" + good[4:], 100)
    big = frames.HEADER.pack(frames.MAGIC, frames.REQUEST, 0, 0, 1, 0.0, 0, 10**9)
    with pytest.raises(frames.FrameError, match="over this channel's limit"):
        frames.Header(big, 1 << 20)
    bad_table = frames.HEADER.pack(frames.MAGIC, frames.REQUEST, 0, 1, 1, 0.0, 50, 10)
    with pytest.raises(frames.FrameError, match="table"):
        frames.Header(bad_table, 1 << 20)


def test_unknown_dtype_is_named():
    with pytest.raises(frames.FrameError, match=r"'c'.*complex"):
        frames.encode(frames.REQUEST, 1, {"c": np.zeros(2, np.complex64)})


def _corrupt(tensors, pos, value):
    parts = frames.encode(frames.REQUEST, 1, tensors)
    raw = bytearray(b"".join(bytes(p) for p in parts))
    raw[pos % len(raw)] = value
    head = frames.Header(raw[: frames.HEADER.size], 1 << 30)
    return head, np.frombuffer(raw[frames.HEADER.size :], np.uint8)


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(0, 400), value=st.integers(0, 255))
def test_corrupted_frames_raise_frame_error_or_decode(pos, value):
    tensors = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "w": np.array(["ab"], object)}
    try:
        head, body = _corrupt(tensors, pos, value)
        out = frames.decode(head, body)
    except frames.FrameError:
        return
    for v in out.values():  # whatever decoded lies inside the body
        if isinstance(v, np.ndarray) and v.dtype != object:
            assert v.nbytes <= len(body)
